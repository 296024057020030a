"""Atomic file output: write beside the target, then rename; never a partial file at the target."""
from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path in ``path``'s folder; on success it replaces ``path`` (mode 0666 & ~umask,
    like a plainly created file); on any error it is removed."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def publish_dir(tmp_dir: str | os.PathLike) -> None:
    """Give a folder made by ``tempfile.mkdtemp`` (mode 0700) the permissions of a plain ``mkdir``."""
    os.chmod(tmp_dir, 0o777 & ~_umask())

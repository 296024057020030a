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


# ----------------------------------------------------------------------------- output folders
#: The file by which a folder says which instcolor command wrote it (and, for some, which files).
OUTPUT_MARKER = ".instcolor-output.json"
#: The package's own folder (it holds the built-in starter weights): never an output folder.
PACKAGE_DIR = Path(__file__).resolve().parent


class OutputFolderError(ValueError):
    """An output folder that must not be written: a file, an input, or someone else's non-empty folder."""


def read_output_marker(path: str | os.PathLike) -> dict | None:
    """The marker of an instcolor output folder (``{"command": ..., "files": [...]}``), or None."""
    import json

    try:
        data = json.loads((Path(path) / OUTPUT_MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("command"), str) else None


def write_output_marker(path: str | os.PathLike, command: str, files=None) -> None:
    """Record (atomically) that ``command`` wrote folder ``path``; ``files``: names it owns there."""
    import json

    data = {"command": command}
    if files is not None:
        data["files"] = sorted(str(f) for f in files)
    with atomic_path(Path(path) / OUTPUT_MARKER) as tmp:
        tmp.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")


def claim_output_dir(path: str | os.PathLike, command: str, *, inputs=(), force: bool = False,
                     resume: bool = False, option: str = "-o", legacy_own=None, create: bool = True) -> dict | None:
    """Check that ``command`` may write into folder ``path``, create it and mark it as its own.

    Refused (:class:`OutputFolderError`, naming the folder): a path that is a file; a folder that is
    one of ``inputs`` (files or folders the command reads), holds an input file, or lies above an
    input folder; a folder inside the installed package (the starter weights live there); a
    non-empty folder that another command or no instcolor command wrote; and the command's own
    earlier output unless ``force`` (replace its files) or ``resume`` (continue it) is given. ``legacy_own(path) -> bool`` recognises own output written before markers existed.
    Returns the earlier marker (``{"command", "files"?}``) when the folder was the command's own,
    else None. ``create=False`` only checks (call it before slow set-up, so a refusal comes first and
    a failed set-up leaves nothing behind). Never deletes anything."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputFolderError(f"{option} {path}: exists and is not a folder")
    target = path.resolve()
    if target == PACKAGE_DIR or target.is_relative_to(PACKAGE_DIR):
        raise OutputFolderError(f"{option} {path}: is inside the installed instcolor package ({PACKAGE_DIR}, e.g. "
                                "the built-in starter weights); choose an output folder outside it")
    for raw in inputs:
        src = Path(raw).resolve()
        folder = src if src.is_dir() else src.parent
        if target == folder or (src.is_dir() and folder.is_relative_to(target)):
            raise OutputFolderError(f"{option} {path}: is (or holds) the input {raw}; choose another output folder")
    previous = None
    if path.is_dir() and any(e.name != OUTPUT_MARKER for e in path.iterdir()):
        marker = read_output_marker(path)
        own = (marker is not None and marker["command"] == command) or (
            marker is None and legacy_own is not None and legacy_own(path))
        if not own:
            by = f"by `instcolor {marker['command']}`" if marker else "by this command"
            raise OutputFolderError(f"{option} {path}: folder is not empty and was not written {by}; "
                                    "give a new or empty folder")
        if not (force or resume):
            raise OutputFolderError(f"{option} {path}: holds an earlier `instcolor {command}` output; "
                                    "pass --force to replace its files")
        previous = marker or {"command": command}
    if not create:
        return previous
    path.mkdir(parents=True, exist_ok=True)
    if read_output_marker(path) is None or previous is None:
        write_output_marker(path, command, (previous or {}).get("files"))
    return previous

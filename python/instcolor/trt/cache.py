"""Engine cache: a key from everything an engine depends on, files written atomically.

Layout: ``<root>/<segment>-<key[:32]>.engine`` (the serialized plan) beside a ``.json`` with the
key's components, for people. ``<root>`` is ``cache_dir()/"tensorrt"`` by default
(:func:`instcolor.backends.cache_dir`).

The key's ``extra`` holds the builder settings an engine depends on beyond its graph and mode
(:func:`builder_settings`: the workspace limit and whether TF32 is allowed).
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from .._fileio import atomic_path
from ..export import FORMAT


def _canonical_profile(profile: dict) -> dict:
    return {name: [list(map(int, shape)) for shape in shapes] for name, shapes in sorted(profile.items())}


def engine_cache_key(*, weights_sha256: str, segment: str, mode: str, trt_version: str, gpu_name: str,
                     compute_capability: tuple[int, int], profile: dict, export_format: str = FORMAT,
                     extra: dict | None = None) -> str:
    """sha256 hex of the engine's identity: the weights (manifest ``weights_sha256``), the segment,
    the build mode (precision, see :func:`instcolor.trt.plan.build_mode`), the TensorRT version, the
    GPU (name and compute capability), the optimization profile ``{input: (min, opt, max)}``, the
    export format and any ``extra`` builder settings (JSON-able). Any change gives another key."""
    payload = dict(weights_sha256=str(weights_sha256), segment=str(segment), mode=str(mode),
                   trt_version=str(trt_version), gpu_name=str(gpu_name),
                   compute_capability=[int(c) for c in compute_capability],
                   profile=_canonical_profile(profile), export_format=str(export_format), extra=extra or {})
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def builder_settings(mode: str, workspace_bytes: int | None) -> dict:
    """Builder settings of an engine, for the cache key's ``extra``: the workspace limit (None =
    TensorRT's default) -- it changes which tactics the builder may pick -- and whether TF32 math
    is allowed (cleared for 'fp32' builds, TensorRT's default otherwise)."""
    return {"workspace_bytes": None if workspace_bytes is None else int(workspace_bytes), "tf32": mode != "fp32"}


def engine_path(root: str | os.PathLike, segment: str, key: str) -> Path:
    return Path(root) / f"{segment}-{key[:32]}.engine"


def write_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` (folders made as needed) through :func:`instcolor._fileio.atomic_path`,
    flushed to disk before the rename: readers see the old file or the complete new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def store_engine(root: str | os.PathLike, segment: str, key: str, plan: bytes, info: dict) -> Path:
    """Write an engine and its description; returns the engine path."""
    path = engine_path(root, segment, key)
    write_atomic(path.with_suffix(".json"), json.dumps(dict(info, key=key), indent=1, sort_keys=True).encode())
    write_atomic(path, plan)
    return path


def load_engine(root: str | os.PathLike, segment: str, key: str) -> bytes | None:
    """The cached plan bytes, or None."""
    path = engine_path(root, segment, key)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None

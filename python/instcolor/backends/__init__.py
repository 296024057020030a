"""Inference backends. Each runs the nets on a :class:`instcolor.pipeline.Batch` and returns ab."""
from __future__ import annotations

import os
from pathlib import Path

from .torch_backend import TorchBackend

BACKENDS = ("torch", "onnxruntime")


def cache_dir() -> Path:
    """Where exports are cached: ``$INSTCOLOR_CACHE`` or ``~/.cache/instcolor``."""
    return Path(os.environ.get("INSTCOLOR_CACHE") or Path.home() / ".cache" / "instcolor")


def make_backend(path, backend: str = "torch", device: str = "cpu"):
    """Build the named backend from a weights directory (or, for onnxruntime, an export directory)."""
    from ..export import MANIFEST
    from ..models import load_nets

    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r} is not available; choose one of {', '.join(BACKENDS)}")
    if backend == "torch":
        return TorchBackend(load_nets(path), device=device)
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        raise ValueError("backend='onnxruntime' needs the onnxruntime package: pip install 'instcolor[onnx]'") from None
    from .onnxruntime_backend import OnnxRuntimeBackend

    if device != "cpu":
        raise ValueError(f"backend='onnxruntime' runs on the CPU here; got device={device!r}")
    if (Path(path) / MANIFEST).is_file():
        return OnnxRuntimeBackend(path)
    from ..export import export_segments, weights_hash

    nets = load_nets(path)
    target = cache_dir() / "onnx" / f"{weights_hash(nets)[:20]}-fp32"
    if not (target / MANIFEST).is_file():
        export_segments(nets, target, precision="fp32")
    return OnnxRuntimeBackend(target)


__all__ = ["BACKENDS", "TorchBackend", "cache_dir", "make_backend"]

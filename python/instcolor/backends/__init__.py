"""Inference backends. Each runs the nets on a :class:`instcolor.pipeline.Batch`:

* ``run(batch) -> ab`` (B, 2, S, S);
* ``run_heads(batch, logits=True, instances=None) -> pipeline.Heads`` (ab and, when asked, the
  class logits (B, 529, S/4, S/4));
* ``run_instances(crop_L) -> pipeline.InstanceState``: the instance net once, reusable by
  ``run_heads(..., instances=state)``;
* ``has_global_hints``: whether ``Batch.global_input`` is accepted (the nets have the branch).
"""
from __future__ import annotations

from pathlib import Path

from .._cachedir import cache_dir
from .torch_backend import TorchBackend

BACKENDS = ("torch", "onnxruntime", "tensorrt")
DEFAULT_BACKEND = "auto"


def onnxruntime_installed() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_backend(backend: str, device: str = "cpu") -> str:
    """The backend ``backend`` stands for. ``"auto"``: ``"onnxruntime"`` when it is installed and the
    nets run on the CPU (``device="cpu"``), else ``"torch"``. TensorRT is never chosen automatically.
    Other names are returned unchanged once checked (ValueError for an unknown one)."""
    if backend == "auto":
        return "onnxruntime" if str(device) == "cpu" and onnxruntime_installed() else "torch"
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r} is not available; choose auto or one of {', '.join(BACKENDS)}")
    return backend


def make_backend(path, backend: str = DEFAULT_BACKEND, device: str = "cpu", **options):
    """Build the named backend from a weights directory (official layout or bundle, see
    :func:`instcolor.models.load_nets`; or, for onnxruntime / tensorrt, an export directory).
    ``backend="auto"`` picks one with :func:`resolve_backend`.

    ``options`` go to the TensorRT backend only (precision='fp32'|'fp16', max_images, cuda_graphs,
    cache_root, workspace_bytes; see :class:`instcolor.backends.tensorrt_backend.TensorRTBackend`).
    """
    from ..export import MANIFEST
    from ..models import load_nets

    if backend == "auto" and options:
        raise ValueError(f"backend options ({', '.join(sorted(options))}) need an explicit backend='tensorrt'")
    backend = resolve_backend(backend, device)
    if options and backend != "tensorrt":
        raise ValueError(f"backend={backend!r} takes no options, got {', '.join(sorted(options))}")
    if backend == "torch":
        return TorchBackend(load_nets(path), device=device)
    if backend == "tensorrt":
        return _make_tensorrt(path, device, **options)
    if not onnxruntime_installed():
        raise ValueError("backend='onnxruntime' needs the onnxruntime package: pip install 'instcolor[onnx]'")
    from .onnxruntime_backend import OnnxRuntimeBackend

    if device != "cpu":
        raise ValueError(f"backend='onnxruntime' runs on the CPU here; got device={device!r}")
    if (Path(path) / MANIFEST).is_file():
        return OnnxRuntimeBackend(path)
    from ..export import export_cache_name, export_segments

    nets = load_nets(path)
    target = cache_dir() / "onnx" / export_cache_name(nets, "fp32")
    if not (target / MANIFEST).is_file():
        export_segments(nets, target, precision="fp32")
    return OnnxRuntimeBackend(target)


def _make_tensorrt(path, device, precision: str = "fp32", **options):
    """TensorRT backend from an export directory (the one its precision builds from, or a folder
    holding ``fp32/`` and ``fp16/`` exports) or a weights directory (exported into the cache)."""
    from ..export import MANIFEST
    from .tensorrt_backend import TensorRTBackend, parse_device, required_export_precision, tensorrt_unavailable_reason

    index = parse_device(device)
    reason = tensorrt_unavailable_reason(index)
    if reason:
        raise ValueError(reason)
    need = required_export_precision(precision)
    path = Path(path)
    if (path / MANIFEST).is_file():
        target = path
    elif (path / need / MANIFEST).is_file():
        target = path / need
    else:
        from ..export import export_cache_name, export_segments
        from ..models import load_nets

        nets = load_nets(path)
        target = cache_dir() / "onnx" / export_cache_name(nets, need)
        if not (target / MANIFEST).is_file():
            export_segments(nets, target, precision=need)
    return TensorRTBackend(target, precision=precision, device=f"cuda:{index}", **options)


__all__ = ["BACKENDS", "DEFAULT_BACKEND", "TorchBackend", "cache_dir", "make_backend", "onnxruntime_installed",
           "resolve_backend"]

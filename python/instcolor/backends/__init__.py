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

BACKENDS = ("torch", "onnxruntime", "tensorrt")
DEFAULT_BACKEND = "auto"


def __getattr__(name: str):
    """``TorchBackend`` on first use (it imports PyTorch; the other backends do not)."""
    if name == "TorchBackend":
        from .torch_backend import TorchBackend

        return TorchBackend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def torch_installed() -> bool:
    """Whether PyTorch is installed (the ``torch`` extra); looked up without importing it."""
    import importlib.util

    try:
        return importlib.util.find_spec("torch") is not None
    except (ImportError, ValueError):
        return False


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

    ``options`` go to the TensorRT backend (precision='fp32'|'fp16'|'int8', max_images, cuda_graphs,
    cache_root, workspace_bytes; see :class:`instcolor.backends.tensorrt_backend.TensorRTBackend`) and,
    of those, ``precision`` ('fp32' | 'int8') to the ONNX Runtime backend. For precision='int8' both
    also take ``calibration`` (a photo folder: ``path`` is then a weights folder, quantized into the
    cache on first use), ``calibration_count`` and ``calibration_detector`` (an ONNX detector for the
    calibration boxes); see :func:`instcolor.quantize.int8_export_for`.
    """
    from ..export import MANIFEST

    if backend == "auto" and options:
        raise ValueError(f"backend options ({', '.join(sorted(options))}) need an explicit backend='tensorrt'")
    backend = resolve_backend(backend, device)
    int8_options = {k: options.pop(k) for k in INT8_OPTIONS if k in options and backend != "torch"}
    if backend == "tensorrt":
        options.update(int8_options)
    ort_precision = options.pop("precision", None) if backend == "onnxruntime" else None
    if options and backend != "tensorrt":
        raise ValueError(f"backend={backend!r} takes no options, got {', '.join(sorted(options))}")
    if backend == "torch":
        if not torch_installed():
            raise ValueError("backend='torch' needs PyTorch, which is not installed: pip install 'instcolor[torch]' "
                             "(backend='onnxruntime' runs without it, on the CPU)")
        from ..models import load_nets
        from .torch_backend import TorchBackend

        return TorchBackend(load_nets(path), device=device)
    if backend == "tensorrt":
        return _make_tensorrt(path, device, **options)
    if not onnxruntime_installed():
        raise ValueError("backend='onnxruntime' needs the onnxruntime package: pip install 'instcolor[onnx]'")
    from .onnxruntime_backend import OnnxRuntimeBackend

    if device != "cpu":
        raise ValueError(f"backend='onnxruntime' runs on the CPU here; got device={device!r}")
    if ort_precision not in (None, "fp32", "int8"):
        raise ValueError(f"backend='onnxruntime' runs precision 'fp32' or 'int8', got {ort_precision!r}")
    if ort_precision == "int8" or int8_options:
        if ort_precision != "int8":
            raise ValueError(f"{', '.join(sorted(int8_options))}: apply to precision='int8' only")
        return OnnxRuntimeBackend(_int8_export(path, device, **int8_options), precision="int8")
    if (Path(path) / MANIFEST).is_file():
        return OnnxRuntimeBackend(path, precision=ort_precision)
    # Weights -> segments with onnx.helper (instcolor.onnx_graphs), on every install: the graphs give
    # bit-identical results to the torch.onnx export (tests/test_torch_free.py), a bundle is read
    # without PyTorch, and building takes well under a second instead of tracing. .pth folders need
    # PyTorch to be read (without it: an error pointing to `instcolor bundle`).
    from ..onnx_graphs import build_segments, export_cache_name_arrays, load_weight_arrays

    states = load_weight_arrays(path)
    target = cache_dir() / "onnx" / export_cache_name_arrays(states, "fp32")
    if not (target / MANIFEST).is_file():
        build_segments(states, target)
    return OnnxRuntimeBackend(target)


#: Options of precision='int8' (ONNX Runtime and TensorRT backends).
INT8_OPTIONS = ("calibration", "calibration_count", "calibration_detector")


def _int8_export(path, device, calibration=None, calibration_count=None, calibration_detector=None):
    """The INT8 export folder for ``path`` (:func:`instcolor.quantize.int8_export_for`); the fp32
    export it quantizes is the one the ONNX Runtime backend builds for these weights."""
    from ..quantize import as_calibration, int8_export_for

    if calibration is None and (calibration_count is not None or calibration_detector is not None):
        raise ValueError("calibration_count / calibration_detector: give calibration=DIR (a folder of photos) too")
    if calibration is not None:
        calibration = as_calibration(calibration, calibration_count, calibration_detector)
    return int8_export_for(path, calibration, fp32_export=lambda: make_backend(path, "onnxruntime", "cpu").export_dir)


def _make_tensorrt(path, device, precision: str = "fp32", **options):
    """TensorRT backend from an export directory (the one its precision builds from, or a folder
    holding ``fp32/`` and ``fp16/`` exports) or a weights directory (exported into the cache)."""
    from ..export import MANIFEST
    from .tensorrt_backend import TensorRTBackend, parse_device, required_export_precision, tensorrt_unavailable_reason

    index = parse_device(device)
    reason = tensorrt_unavailable_reason(index)
    if reason:
        raise ValueError(reason)
    int8_options = {k: options.pop(k) for k in INT8_OPTIONS if k in options}
    if int8_options and precision != "int8":
        raise ValueError(f"{', '.join(sorted(int8_options))}: apply to precision='int8' only")
    need = required_export_precision(precision)
    path = Path(path)
    if need == "int8":  # the QDQ export (explicit quantization)
        target = _int8_export(path, device, **int8_options)
    elif (path / MANIFEST).is_file():
        target = path
    elif (path / need / MANIFEST).is_file():
        target = path / need
    elif need == "fp32":  # built from the weights without PyTorch, the ONNX Runtime backend's export
        from ..onnx_graphs import build_segments, export_cache_name_arrays, load_weight_arrays

        states = load_weight_arrays(path)
        target = cache_dir() / "onnx" / export_cache_name_arrays(states, "fp32")
        if not (target / MANIFEST).is_file():
            build_segments(states, target)
    else:  # fp16 (strongly typed) graphs come from torch.onnx
        from ..export import export_cache_name, export_segments
        from ..models import load_nets

        nets = load_nets(path)
        target = cache_dir() / "onnx" / export_cache_name(nets, need)
        if not (target / MANIFEST).is_file():
            export_segments(nets, target, precision=need)
    return TensorRTBackend(target, precision=precision, device=f"cuda:{index}", **options)


__all__ = ["BACKENDS", "DEFAULT_BACKEND", "TorchBackend", "cache_dir", "make_backend", "onnxruntime_installed",
           "resolve_backend"]

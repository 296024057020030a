"""The TensorRT runtime of :class:`instcolor.detect.OnnxDetector` (``runtime="tensorrt"``).

:class:`TensorRTDetectorRunner` builds (or loads from the engine cache) a TensorRT engine of the
detector's ONNX file for one fixed input shape (min = opt = max), allocates its input and outputs
once on the device, and ``run(feeds)`` uploads the image tensor, enqueues the engine on the
device's stream and returns the outputs as host numpy arrays -- the contract of the ONNX Runtime
runner, so the detector's pre-processing, decoding and post-processing are the same code for both.

Engines are cached like the TensorRT backend's (:mod:`instcolor.trt.cache`, default folder
``cache_dir()/"tensorrt"``): the key covers the ONNX file's sha256, the segment name
:data:`SEGMENT`, the build mode (precision), the TensorRT version, the GPU (name and compute
capability), the profile, :data:`EXPORT_FORMAT` and the builder settings (workspace limit, TF32;
:func:`instcolor.trt.cache.builder_settings`) (:func:`detector_cache_key`).

On ``cuda:N`` the device is selected before the engine is built or deserialized (TensorRT works
on the calling thread's current device) and around every later call (see
:meth:`instcolor.trt.cuda.CudaDevice.activate`).

The helpers above the class are pure (no TensorRT, no CUDA); the class imports ``tensorrt`` and
cuda-python when it is created.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from ..trt.cache import builder_settings, engine_cache_key
from ..trt.plan import build_mode

#: Segment name of detector engines in the engine cache.
SEGMENT = "detector"
#: ``export_format`` of the cache key: bump it when engines of the same file must be rebuilt.
EXPORT_FORMAT = "onnx-detector/1"
PRECISIONS = ("fp32", "fp16")
WHO = "OnnxDetector runtime='tensorrt'"


def parse_cuda_device(device) -> int:
    """``"cuda"`` / ``"cuda:N"`` / ``N`` -> the CUDA device index N; ValueError otherwise."""
    from ..trt.cuda import parse_cuda_device as parse

    return parse(device, WHO)


def tensorrt_unavailable_reason(device_index: int = 0) -> str:
    """'' when a detector can run with TensorRT on CUDA device ``device_index`` (the tensorrt
    package, cuda-python and the device are there), else one line saying why not. Unlike the
    TensorRT backend, detectors need no native CUDA kernels."""
    from ..trt.engine import tensorrt_gpu_reason

    return tensorrt_gpu_reason(device_index, WHO)


def fixed_profile(input_name: str, input_shape: Sequence[int]) -> dict[str, tuple]:
    """The optimization profile of a fixed input: ``{input_name: (shape, shape, shape)}`` (min, opt,
    max), ``shape`` e.g. ``(1, 3, h, w)`` or ``(3, h, w)``. ValueError for a non-positive dim."""
    shape = tuple(int(d) for d in input_shape)
    if not shape or any(d < 1 for d in shape):
        raise ValueError(f"{WHO}: input {input_name} needs a fixed positive shape, got {tuple(input_shape)}")
    return {input_name: (shape, shape, shape)}


def detector_build_mode(precision: str, graph_dtype, trt_version: str, has_fp16_flag: bool) -> str:
    """The engine build mode (:data:`instcolor.trt.plan.BUILD_MODES`) of a detector graph whose
    image input is ``graph_dtype`` (float32 for ordinary exports, float16 for fp16 exports).

    fp32 graph: 'fp32' for precision 'fp32'; 'fp16-flag' for 'fp16' on TensorRT 10 with
    ``BuilderFlag.FP16``; 'fp16' on TensorRT >= 11 is an error (it builds fp16 engines only from
    fp16 graphs, see :func:`instcolor.trt.plan.build_mode`). fp16 graph: 'fp16-strong' (a strongly
    typed network), precision 'fp16' only.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"{WHO}: precision must be one of {PRECISIONS}, got {precision!r}")
    if np.dtype(graph_dtype) == np.float16:
        if precision != "fp16":
            raise ValueError(f"{WHO}: the graph's input is float16; it builds precision='fp16' engines only")
        return "fp16-strong"
    graph_precision, mode = build_mode(precision, trt_version, has_fp16_flag)
    if graph_precision != "fp32":
        raise ValueError(f"{WHO}: precision='fp16' on TensorRT {trt_version} needs an fp16 ONNX graph (float16 "
                         f"input); this graph's input is {np.dtype(graph_dtype)}. Use precision='fp32'.")
    return mode


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 hex of a file's bytes (an ONNX file's external data files are not included)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def detector_cache_key(onnx_sha256: str, mode: str, trt_version: str, gpu_name: str,
                       compute_capability: tuple[int, int], profile: dict, workspace_bytes: int | None = None) -> str:
    """Engine cache key of a detector: :func:`instcolor.trt.cache.engine_cache_key` with the ONNX
    file's sha256 as ``weights_sha256``, segment :data:`SEGMENT`, :data:`EXPORT_FORMAT` and the
    builder settings of ``mode`` and ``workspace_bytes`` (:func:`instcolor.trt.cache.builder_settings`)."""
    return engine_cache_key(weights_sha256=onnx_sha256, segment=SEGMENT, mode=mode, trt_version=trt_version,
                            gpu_name=gpu_name, compute_capability=compute_capability, profile=profile,
                            export_format=EXPORT_FORMAT, extra=builder_settings(mode, workspace_bytes))


class TensorRTDetectorRunner:
    """Runs one detector ONNX file as a TensorRT engine with a fixed input shape.

    Args:
        path: the ``.onnx`` file.
        input_name: the graph's image input.
        input_shape: its fixed shape, e.g. ``(1, 3, h, w)`` or ``(3, h, w)`` (the profile's min =
            opt = max, :func:`fixed_profile`).
        output_names: the graph's outputs, in graph order (the order :meth:`run` returns them in).
        graph_dtype: the graph's input element type (selects the build mode with ``precision``,
            see :func:`detector_build_mode`).
        precision: 'fp32' or 'fp16'.
        device: ``"cuda"`` / ``"cuda:N"`` / ``N`` (a :class:`instcolor.trt.cuda.CudaDevice` is made
            and closed by :meth:`close`), or a device object of :mod:`instcolor.trt.memory` whose
            views have ``.ptr`` (kept open).
        cache_root: engine cache folder (None = ``cache_dir()/"tensorrt"``).
        workspace_bytes: the builder's workspace limit (None = TensorRT's default).

    ValueError (one line) when TensorRT, cuda-python or the CUDA device is missing, and when an
    output's shape depends on the data (TensorRT would need an output allocator; not supported).
    Not thread-safe: one runner drives one stream and one set of buffers.
    """

    def __init__(self, path: str | os.PathLike, input_name: str, input_shape: Sequence[int],
                 output_names: Sequence[str], *, graph_dtype=np.float32, precision: str = "fp32",
                 device="cuda", cache_root: str | os.PathLike | None = None, workspace_bytes: int | None = None):
        self.path = Path(path)
        self.profile = fixed_profile(input_name, input_shape)
        self.input_name, self.input_shape = input_name, self.profile[input_name][0]
        self.output_names = list(output_names)
        index = parse_cuda_device(device) if isinstance(device, (str, int)) else int(getattr(device, "index", 0))
        reason = tensorrt_unavailable_reason(index)
        if reason:
            raise ValueError(reason)
        import tensorrt as trt

        from ..trt.engine import EngineStore

        self.mode = detector_build_mode(precision, graph_dtype, trt.__version__, hasattr(trt.BuilderFlag, "FP16"))
        self._owns_device = isinstance(device, (str, int))
        if self._owns_device:  # first: the engine is built / deserialized on this device
            from ..trt.cuda import CudaDevice

            device = CudaDevice(index)
        self.device = device
        try:
            self.store = EngineStore(self.path.parent, {"weights_sha256": file_sha256(self.path),
                                                        "format": EXPORT_FORMAT},
                                     self.mode, index, cache_root, workspace_bytes)
            self.key = self.store.key(SEGMENT, self.profile)
            engine = self.store.engine({"name": SEGMENT, "file": self.path.name}, self.profile)
            self._setup(engine, input_name)
        except BaseException:
            try:
                self.close()
            except Exception:  # noqa: BLE001 -- the construction error is the one to report
                pass
            raise

    def _setup(self, engine, input_name: str) -> None:
        from ..trt.engine import TensorRTRunner

        device = self.device
        self.engine_runner = TensorRTRunner(engine, f"{WHO} ({self.path.name})", device)
        if self.engine_runner.inputs != [input_name] or sorted(self.engine_runner.outputs) != sorted(self.output_names):
            raise ValueError(f"{WHO}: the engine of {self.path} has tensors {self.engine_runner.inputs} -> "
                             f"{self.engine_runner.outputs}, the graph {[input_name]} -> {self.output_names}")
        shapes = self.engine_runner.output_shapes({input_name: self.input_shape})
        dynamic = {n: s for n, s in shapes.items() if any(d < 0 for d in s)}
        if dynamic:
            raise ValueError(f"{WHO} supports only fixed-shape outputs, but in {self.path} "
                             + ", ".join(f"{n} {list(s)}" for n, s in dynamic.items())
                             + " depend on the data (e.g. NMS inside the graph); use runtime='onnxruntime'")
        self.input = self._alloc(input_name, self.input_shape)
        self.outputs = {n: self._alloc(n, shapes[n]) for n in self.output_names}

    def _alloc(self, name: str, shape: tuple[int, ...]):
        """A device array of ``shape`` and the engine's type for tensor ``name``, in its own buffer."""
        dtype = self.engine_runner.dtypes[name]
        return self.device.view(self.device.alloc(int(np.prod(shape)) * dtype.itemsize), shape, dtype)

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """``{input name: array of the fixed input shape}`` -> the outputs in graph order, host numpy
        (float32, as the device's ``download`` returns them; integer outputs such as labels are
        exact below 2**24). Synchronizes."""
        if set(feeds) != {self.input_name}:
            raise ValueError(f"{WHO}: expected the input {self.input_name!r}, got {sorted(feeds)}")
        x = np.asarray(feeds[self.input_name])
        if x.shape != self.input_shape:
            raise ValueError(f"{WHO}: input {self.input_name} must have the engine's shape {self.input_shape}, "
                             f"got {x.shape}")
        self.device.upload(self.input, x)
        self.engine_runner.run({self.input_name: self.input}, self.outputs, self.device.stream)
        return [self.device.download(self.outputs[n]) for n in self.output_names]

    def close(self) -> None:
        """Free the device memory when this runner made its device (a passed device stays open)."""
        if getattr(self, "_owns_device", False) and getattr(self, "device", None) is not None:
            self.device.close()

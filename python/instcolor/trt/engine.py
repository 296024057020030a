"""TensorRT engines of the exported segments: build (ONNX + one optimization profile), cache, run.

Written against the TensorRT 10 Python API (named I/O tensors, ``execute_async_v3``) and TensorRT 11
(no weak typing: fp16 engines come from the fp16 export as STRONGLY_TYPED networks; see
:func:`instcolor.trt.plan.build_mode`). Nothing here is imported unless the TensorRT backend is used.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Mapping, Protocol

import numpy as np

from .cache import engine_cache_key, load_engine, store_engine
from .plan import BUILD_MODES

log = logging.getLogger(__name__)


class EngineRunner(Protocol):
    """Executes one segment. ``inputs``/``outputs``: ``{tensor name: array}``, arrays of the device in
    use (``.shape``; ``.ptr`` on CUDA), outputs preallocated with their exact shapes. ``run`` sets the
    input shapes, binds every address and enqueues the segment on ``stream`` (asynchronously)."""

    name: str

    def run(self, inputs: Mapping[str, Any], outputs: Mapping[str, Any], stream: int) -> None: ...


def tensorrt_gpu_reason(device_index: int = 0, who: str = "backend='tensorrt'") -> str:
    """'' when the tensorrt package, cuda-python and CUDA device ``device_index`` are there, else one
    line, starting with ``who``, saying what is missing."""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return (f"{who} needs the tensorrt Python package (pip install 'instcolor[tensorrt]'; "
                "on Jetson it comes with JetPack)")
    from .cuda import device_count

    n, why = device_count()
    if n == 0:
        return f"{who} needs a CUDA GPU: {why}"
    if not 0 <= device_index < n:
        return f"{who}: no CUDA device {device_index} ({n} found)"
    return ""


def tensorrt_unavailable_reason(device_index: int = 0) -> str:
    """'' when the TensorRT backend can run on CUDA device ``device_index``, else one line saying why not
    (:func:`tensorrt_gpu_reason`, then the native CUDA kernels the backend also needs)."""
    reason = tensorrt_gpu_reason(device_index)
    if reason:
        return reason
    try:
        from .. import ops
    except ImportError as e:
        return f"backend='tensorrt' needs the native kernels (instcolor._native is not built: {e})"
    if not ops.cuda_available():
        return f"backend='tensorrt' runs the fuse kernel on the GPU, but {ops.cuda_unavailable_reason()}"
    return ""


def _np_dtype(trt, dt) -> np.dtype:
    table = {trt.DataType.FLOAT: np.float32, trt.DataType.HALF: np.float16, trt.DataType.INT32: np.int32}
    if hasattr(trt.DataType, "INT64"):
        table[trt.DataType.INT64] = np.int64
    if dt not in table:
        raise TypeError(f"unsupported TensorRT I/O type {dt}")
    return np.dtype(table[dt])


class _Logger:
    """One TensorRT logger per process (TensorRT wants a single one)."""

    instance = None

    @classmethod
    def get(cls):
        if cls.instance is None:
            import tensorrt as trt

            cls.instance = trt.Logger(trt.Logger.WARNING)
        return cls.instance


def build_engine(onnx_path: str | os.PathLike, profile: Mapping[str, tuple], mode: str,
                 workspace_bytes: int | None = None) -> bytes:
    """Serialized engine of one ONNX segment with one optimization profile ``{input: (min, opt, max)}``.

    ``mode`` (:data:`instcolor.trt.plan.BUILD_MODES`): 'fp32'; 'fp16-flag' (``BuilderFlag.FP16`` on an
    fp32 graph, TensorRT 10); 'fp16-strong' (an fp16 graph as a STRONGLY_TYPED network; the flag is
    accepted and ignored by TensorRT >= 11, where every network is strongly typed).
    """
    import tensorrt as trt

    if mode not in BUILD_MODES:
        raise ValueError(f"unknown build mode {mode!r}; one of {BUILD_MODES}")
    logger = _Logger.get()
    builder = trt.Builder(logger)
    flags = 0
    if mode == "fp16-strong":
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    if workspace_bytes:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_bytes))
    if mode == "fp16-flag":
        if not hasattr(trt.BuilderFlag, "FP16"):
            raise ValueError(f"TensorRT {trt.__version__} has no BuilderFlag.FP16; build fp16 from the fp16 export")
        config.set_flag(trt.BuilderFlag.FP16)
    opt = builder.create_optimization_profile()
    for name, (lo, mid, hi) in profile.items():
        opt.set_shape(name, tuple(lo), tuple(mid), tuple(hi))
    config.add_optimization_profile(opt)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise RuntimeError(f"TensorRT failed to build an engine from {onnx_path} (see its log above)")
    return bytes(plan)


class EngineStore:
    """Loads, or builds and caches, the engines of one export directory for this TensorRT + GPU."""

    def __init__(self, export_dir: str | os.PathLike, manifest: dict, mode: str, device_index: int = 0,
                 cache_root: str | os.PathLike | None = None, workspace_bytes: int | None = None):
        import tensorrt as trt

        from .cuda import device_info

        self.trt = trt
        self.export_dir, self.manifest, self.mode = Path(export_dir), manifest, mode
        if cache_root is None:
            from ..backends import cache_dir

            cache_root = cache_dir() / "tensorrt"
        self.cache_root = Path(cache_root)
        self.workspace_bytes = workspace_bytes
        self.gpu_name, self.compute_capability = device_info(device_index)
        self.runtime = trt.Runtime(_Logger.get())

    def key(self, segment: str, profile: Mapping[str, tuple]) -> str:
        return engine_cache_key(weights_sha256=self.manifest["weights_sha256"], segment=segment, mode=self.mode,
                                trt_version=self.trt.__version__, gpu_name=self.gpu_name,
                                compute_capability=self.compute_capability, profile=dict(profile),
                                export_format=self.manifest["format"])

    def engine(self, segment: dict, profile: Mapping[str, tuple]):
        """The deserialized ICudaEngine of ``segment`` (a manifest entry) for ``profile``."""
        name = segment["name"]
        key = self.key(name, profile)
        plan = load_engine(self.cache_root, name, key)
        if plan is not None:
            engine = self.runtime.deserialize_cuda_engine(plan)
            if engine is not None:
                return engine
            log.warning("cached TensorRT engine for %s (%s) does not load; rebuilding", name, key[:12])
        log.info("building TensorRT engine %s (%s); this takes a while", name, self.mode)
        plan = build_engine(self.export_dir / segment["file"], profile, self.mode, self.workspace_bytes)
        store_engine(self.cache_root, name, key, plan, dict(
            segment=name, mode=self.mode, trt_version=self.trt.__version__, gpu_name=self.gpu_name,
            compute_capability=list(self.compute_capability), weights_sha256=self.manifest["weights_sha256"],
            profile={k: [list(s) for s in v] for k, v in profile.items()}))
        engine = self.runtime.deserialize_cuda_engine(plan)
        if engine is None:
            raise RuntimeError(f"TensorRT could not deserialize the engine it just built for {name}")
        return engine


class TensorRTRunner:
    """:class:`EngineRunner` over one ICudaEngine: named tensors, ``set_input_shape`` +
    ``set_tensor_address`` + ``execute_async_v3``.

    ``device`` (a :class:`instcolor.trt.cuda.CudaDevice`) with ``cuda_graphs=True``: every distinct
    binding (input shapes + addresses) gets its own execution context, run once eagerly (TensorRT
    finishes shape-dependent setup there), then captured into a CUDA graph that later calls with
    the same binding launch instead of enqueuing. One context per binding keeps each graph's context
    state fixed; each context holds its own activation memory. If a capture fails, graphs are
    switched off for this runner (with a warning) and it goes on eagerly.
    """

    def __init__(self, engine, name: str, device=None, cuda_graphs: bool = False):
        import tensorrt as trt

        self.engine, self.name, self.device = engine, name, device
        self.inputs, self.outputs, self.dtypes = [], [], {}
        for i in range(engine.num_io_tensors):
            t = engine.get_tensor_name(i)
            (self.inputs if engine.get_tensor_mode(t) == trt.TensorIOMode.INPUT else self.outputs).append(t)
            self.dtypes[t] = _np_dtype(trt, engine.get_tensor_dtype(t))
        self.context = None  # the eager context, created on first eager use
        self._shapes: dict = {}
        self.graphs: dict | None = {} if (cuda_graphs and device is not None) else None

    def _new_context(self):
        ctx = self.engine.create_execution_context()
        if ctx is None:
            raise RuntimeError(f"{self.name}: TensorRT could not create an execution context (out of GPU memory?)")
        return ctx

    def _set_shape(self, ctx, shapes: dict, name: str, shape: tuple) -> None:
        if shapes.get(name) != shape:
            if not ctx.set_input_shape(name, shape):
                raise ValueError(f"{self.name}: input {name} shape {shape} is outside the engine's profile")
            shapes[name] = shape

    def output_shapes(self, input_shapes: Mapping[str, tuple]) -> dict[str, tuple[int, ...]]:
        """``{output: shape}`` for ``input_shapes`` ``{input: shape}`` (set on the eager context);
        -1 marks a dim that depends on the data. ValueError for a shape outside the profile."""
        if self.context is None:
            self.context = self._new_context()
        for name, shape in input_shapes.items():
            self._set_shape(self.context, self._shapes, name, tuple(int(d) for d in shape))
        return {name: tuple(int(d) for d in self.context.get_tensor_shape(name)) for name in self.outputs}

    def _bind(self, ctx, shapes: dict, inputs: Mapping, outputs: Mapping) -> None:
        if set(inputs) != set(self.inputs) or set(outputs) != set(self.outputs):
            raise ValueError(f"{self.name}: engine tensors are {self.inputs} -> {self.outputs}, "
                             f"got {sorted(inputs)} -> {sorted(outputs)}")
        for name, a in inputs.items():
            if a.dtype != self.dtypes[name]:
                raise TypeError(f"{self.name}: input {name} is {a.dtype}, the engine wants {self.dtypes[name]}")
            self._set_shape(ctx, shapes, name, a.shape)
            if not ctx.set_tensor_address(name, a.ptr):
                raise RuntimeError(f"{self.name}: set_tensor_address({name}) failed")
        for name, a in outputs.items():
            got = tuple(ctx.get_tensor_shape(name))
            if got != a.shape or a.dtype != self.dtypes[name]:
                raise ValueError(f"{self.name}: output {name} is {got} {self.dtypes[name]}, "
                                 f"the buffer view is {a.shape} {a.dtype}")
            if not ctx.set_tensor_address(name, a.ptr):
                raise RuntimeError(f"{self.name}: set_tensor_address({name}) failed")

    def _enqueue(self, ctx, stream: int) -> None:
        if not ctx.execute_async_v3(stream):
            raise RuntimeError(f"{self.name}: execute_async_v3 failed (see the TensorRT log)")

    def run(self, inputs: Mapping, outputs: Mapping, stream: int) -> None:
        if self.graphs is None:
            if self.context is None:
                self.context = self._new_context()
            self._bind(self.context, self._shapes, inputs, outputs)
            self._enqueue(self.context, stream)
            return
        if stream != self.device.stream:
            raise ValueError(f"{self.name}: CUDA graphs run on the device's stream only")
        key = tuple((k, a.shape, a.ptr) for k, a in sorted(inputs.items())) + \
            tuple((k, a.shape, a.ptr) for k, a in sorted(outputs.items()))
        hit = self.graphs.get(key)
        if hit is not None:
            hit[1].launch()
            return
        ctx = self._new_context()
        self._bind(ctx, {}, inputs, outputs)
        self._enqueue(ctx, stream)  # this call's result; also completes TensorRT's per-shape setup
        try:
            self.device.synchronize()
            graph = self.device.capture(lambda: self._enqueue(ctx, stream))
        except Exception as e:  # noqa: BLE001
            log.warning("%s: CUDA graph capture failed (%s); running without graphs", self.name, e)
            self.close_graphs()
            self.graphs = None
            return
        self.graphs[key] = (ctx, graph)

    def close_graphs(self) -> None:
        for _, graph in (self.graphs or {}).values():
            graph.close()
        if self.graphs:
            self.graphs.clear()

"""TensorRT engines of the exported segments: build (ONNX + one optimization profile), cache, run.

Written against the TensorRT 10 Python API (named I/O tensors, ``execute_async_v3``) and TensorRT 11
(no weak typing: fp16 engines come from the fp16 export as STRONGLY_TYPED networks; see
:func:`instcolor.trt.plan.build_mode`). Nothing here is imported unless the TensorRT backend is used.
"""
from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Any, Mapping, Protocol

import numpy as np

from .._cachedir import cache_dir
from .cache import builder_settings, engine_cache_key, load_engine, store_engine
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


#: TensorRT I/O types with a numpy equivalent (by ``trt.DataType`` member name). BF16 is handled
#: apart (numpy has none: :mod:`ml_dtypes` provides it); FP8, INT4 and FP4 I/O are refused.
_NUMPY_TYPES = {"FLOAT": np.float32, "HALF": np.float16, "INT8": np.int8, "UINT8": np.uint8, "BOOL": np.bool_,
                "INT32": np.int32, "INT64": np.int64}


def _np_dtype(trt, dt) -> np.dtype:
    """numpy dtype of TensorRT I/O type ``dt``. BF16 maps to ``ml_dtypes.bfloat16`` when the
    ml_dtypes package is installed (a TypeError saying so otherwise); types without a numpy
    equivalent (FP8, INT4, FP4) are a TypeError."""
    for name, np_type in _NUMPY_TYPES.items():
        if hasattr(trt.DataType, name) and dt == getattr(trt.DataType, name):
            return np.dtype(np_type)
    if hasattr(trt.DataType, "BF16") and dt == trt.DataType.BF16:
        try:
            import ml_dtypes
        except ImportError:
            raise TypeError("the engine has bfloat16 I/O; numpy has no bfloat16 -- pip install ml_dtypes "
                            "(or export the model with float32 / float16 inputs and outputs)") from None
        return np.dtype(ml_dtypes.bfloat16)
    raise TypeError(f"unsupported TensorRT I/O type {dt}: instcolor binds {', '.join(_NUMPY_TYPES)} and BF16")


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

    ``mode`` (:data:`instcolor.trt.plan.BUILD_MODES`): 'fp32' (``BuilderFlag.TF32`` cleared: TensorRT
    enables TF32 by default, which rounds fp32 convolutions and matmuls to a 10-bit mantissa);
    'fp16-flag' (``BuilderFlag.FP16`` on an fp32 graph, TensorRT 10); 'fp16-strong' (an fp16 graph as
    a STRONGLY_TYPED network; the flag is accepted and ignored by TensorRT >= 11, where every network
    is strongly typed); 'int8-strong' (an INT8 QDQ graph as a STRONGLY_TYPED network, no precision
    flag: explicit quantization; unverified on a GPU).
    """
    import tensorrt as trt

    if mode not in BUILD_MODES:
        raise ValueError(f"unknown build mode {mode!r}; one of {BUILD_MODES}")
    logger = _Logger.get()
    builder = trt.Builder(logger)
    flags = 0
    if mode in ("fp16-strong", "int8-strong"):
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    if workspace_bytes:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_bytes))
    if mode == "fp32" and hasattr(trt.BuilderFlag, "TF32"):
        config.clear_flag(trt.BuilderFlag.TF32)
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
    """Loads, or builds and caches, the engines of one export directory for this TensorRT + GPU.

    Engines are built and deserialized with CUDA device ``device_index`` current (TensorRT builds
    for, and loads onto, the calling thread's current device)."""

    def __init__(self, export_dir: str | os.PathLike, manifest: dict, mode: str, device_index: int = 0,
                 cache_root: str | os.PathLike | None = None, workspace_bytes: int | None = None):
        import tensorrt as trt

        from .cuda import device_info

        self.trt = trt
        self.export_dir, self.manifest, self.mode = Path(export_dir), manifest, mode
        self.cache_root = Path(cache_dir() / "tensorrt" if cache_root is None else cache_root)
        self.workspace_bytes = None if workspace_bytes is None else int(workspace_bytes)
        self.device_index = int(device_index)
        self.gpu_name, self.compute_capability = device_info(self.device_index)
        self.runtime = trt.Runtime(_Logger.get())

    def key(self, segment: str, profile: Mapping[str, tuple]) -> str:
        return engine_cache_key(weights_sha256=self.manifest["weights_sha256"], segment=segment, mode=self.mode,
                                trt_version=self.trt.__version__, gpu_name=self.gpu_name,
                                compute_capability=self.compute_capability, profile=dict(profile),
                                export_format=self.manifest["format"],
                                extra=builder_settings(self.mode, self.workspace_bytes))

    def engine(self, segment: dict, profile: Mapping[str, tuple]):
        """The deserialized ICudaEngine of ``segment`` (a manifest entry) for ``profile``, on CUDA
        device ``device_index``."""
        from .cuda import on_device

        name = segment["name"]
        key = self.key(name, profile)
        with on_device(self.device_index):
            plan = load_engine(self.cache_root, name, key)
            if plan is not None:
                engine = self.runtime.deserialize_cuda_engine(plan)
                if engine is not None:
                    return engine
                log.warning("cached TensorRT engine for %s (%s) does not load; rebuilding", name, key[:12])
            log.info("building TensorRT engine %s (%s) on cuda:%d; this takes a while", name, self.mode,
                     self.device_index)
            plan = build_engine(self.export_dir / segment["file"], profile, self.mode, self.workspace_bytes)
            store_engine(self.cache_root, name, key, plan, dict(
                segment=name, mode=self.mode, trt_version=self.trt.__version__, gpu_name=self.gpu_name,
                compute_capability=list(self.compute_capability), weights_sha256=self.manifest["weights_sha256"],
                profile={k: [list(s) for s in v] for k, v in profile.items()},
                builder=builder_settings(self.mode, self.workspace_bytes)))
            engine = self.runtime.deserialize_cuda_engine(plan)
        if engine is None:
            raise RuntimeError(f"TensorRT could not deserialize the engine it just built for {name}")
        return engine


def _engine_memory_size(engine) -> int:
    """Activation memory an execution context of ``engine`` needs (max over its profiles)."""
    size = getattr(engine, "device_memory_size_v2", None)  # TensorRT >= 10.1
    return int(engine.device_memory_size if size is None else size)


class TensorRTRunner:
    """:class:`EngineRunner` over one ICudaEngine: named tensors, ``set_input_shape`` +
    ``set_tensor_address`` + ``execute_async_v3``.

    With a CUDA ``device`` (a :class:`instcolor.trt.cuda.CudaDevice`) everything runs with that
    device current, on its stream only, and the execution contexts take their activation memory
    from the device's :class:`~instcolor.trt.cuda.SharedScratch` (``USER_MANAGED`` allocation): one
    block, the size of the largest engine, serves every context of every engine on that stream,
    which is safe because work on one stream runs one engine at a time.

    ``cuda_graphs=True``: every distinct binding (input shapes + addresses) gets its own execution
    context, run once eagerly (TensorRT finishes shape-dependent setup there; this call's result),
    then captured into a CUDA graph that later calls with the same binding launch instead of
    enqueuing. One context per binding keeps each graph's context state fixed; with the shared
    scratch a context costs no activation memory of its own. When the engine cannot be captured
    (``execute_async_v3`` refuses under capture, or CUDA reports the capture unsupported /
    invalidated: :class:`~instcolor.trt.cuda.CaptureUnsupported`) the runner logs a warning naming
    the segment and the reason and runs eagerly from then on. Any other error -- a CUDA fault in the
    synchronize before the capture, a failed instantiation -- propagates.
    """

    def __init__(self, engine, name: str, device=None, cuda_graphs: bool = False):
        import tensorrt as trt

        self.trt = trt
        self.engine, self.name, self.device = engine, name, device
        self.inputs, self.outputs, self.dtypes = [], [], {}
        for i in range(engine.num_io_tensors):
            t = engine.get_tensor_name(i)
            (self.inputs if engine.get_tensor_mode(t) == trt.TensorIOMode.INPUT else self.outputs).append(t)
            try:
                self.dtypes[t] = _np_dtype(trt, engine.get_tensor_dtype(t))
            except TypeError as e:
                raise TypeError(f"{name}: tensor {t}: {e}") from None
        self.context = None  # the eager context, created on first eager use
        self._shapes: dict = {}
        self.scratch = getattr(device, "scratch", None)
        self.memory_size = 0
        if self.scratch is not None:
            self.memory_size = _engine_memory_size(engine)
            self.scratch.reserve(self.memory_size)
        self.graphs: dict | None = {} if (cuda_graphs and device is not None) else None

    def _current(self):
        activate = getattr(self.device, "activate", None)
        return activate() if activate is not None else contextlib.nullcontext()

    def _new_context(self):
        trt = self.trt
        with self._current():
            if self.scratch is None:
                ctx = self.engine.create_execution_context()
            else:
                strategy = getattr(trt, "ExecutionContextAllocationStrategy", None)
                if strategy is not None:
                    ctx = self.engine.create_execution_context(strategy.USER_MANAGED)
                else:  # TensorRT < 10
                    ctx = self.engine.create_execution_context_without_device_memory()
                if ctx is not None:
                    ptr, size = self.scratch.acquire(self.memory_size)
                    if hasattr(ctx, "set_device_memory"):  # TensorRT >= 10.1
                        ctx.set_device_memory(ptr, size)
                    else:
                        ctx.device_memory = ptr
        if ctx is None:
            raise RuntimeError(f"{self.name}: TensorRT could not create an execution context (see its log)")
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
            self._set_shape(ctx, shapes, name, tuple(a.shape))
            if not ctx.set_tensor_address(name, a.ptr):
                raise RuntimeError(f"{self.name}: set_tensor_address({name}) failed")
        for name, a in outputs.items():
            got = tuple(ctx.get_tensor_shape(name))
            if got != tuple(a.shape) or a.dtype != self.dtypes[name]:
                raise ValueError(f"{self.name}: output {name} is {got} {self.dtypes[name]}, "
                                 f"the buffer view is {a.shape} {a.dtype}")
            if not ctx.set_tensor_address(name, a.ptr):
                raise RuntimeError(f"{self.name}: set_tensor_address({name}) failed")

    def _enqueue(self, ctx, stream: int) -> None:
        if not ctx.execute_async_v3(stream):
            raise RuntimeError(f"{self.name}: execute_async_v3 failed (see the TensorRT log)")

    def run(self, inputs: Mapping, outputs: Mapping, stream: int) -> None:
        if self.scratch is not None and stream != self.device.stream:
            raise ValueError(f"{self.name}: runs on its device's stream only (its contexts share activation "
                             f"memory with every engine on that stream)")
        with self._current():
            if self.graphs is None:
                if self.context is None:
                    self.context = self._new_context()
                self._bind(self.context, self._shapes, inputs, outputs)
                self._enqueue(self.context, stream)
                return
            self._run_graph(inputs, outputs, stream)

    def _run_graph(self, inputs: Mapping, outputs: Mapping, stream: int) -> None:
        from .cuda import CaptureUnsupported

        if stream != self.device.stream:
            raise ValueError(f"{self.name}: CUDA graphs run on the device's stream only")
        key = tuple((k, tuple(a.shape), a.ptr) for k, a in sorted(inputs.items())) + \
            tuple((k, tuple(a.shape), a.ptr) for k, a in sorted(outputs.items()))
        hit = self.graphs.get(key)
        if hit is not None:
            hit[1].launch()
            return
        ctx, shapes = self._new_context(), {}
        self._bind(ctx, shapes, inputs, outputs)
        self._enqueue(ctx, stream)  # this call's result; also completes TensorRT's per-shape setup
        self.device.synchronize()  # a CUDA fault of that run is raised here, not taken for "no graphs"
        try:
            graph = self.device.capture(lambda: bool(ctx.execute_async_v3(stream)))
        except CaptureUnsupported as e:
            log.warning("%s: TensorRT engine cannot be captured into a CUDA graph (%s); running it without "
                        "CUDA graphs", self.name, e.reason)
            self.close_graphs()
            self.graphs = None
            self.context, self._shapes = ctx, shapes  # the eager context from now on
            return
        self.graphs[key] = (ctx, graph)

    def close_graphs(self) -> None:
        for _, graph in (self.graphs or {}).values():
            graph.close()
        if self.graphs:
            self.graphs.clear()

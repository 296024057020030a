"""Simulated cuda-python and TensorRT for tests without a GPU.

The simulation is strict where instcolor's correctness depends on the real semantics, so that code
which only works by luck on a GPU fails here:

:class:`SimCudart` -- the cuda-python runtime calls :mod:`instcolor.trt.cuda` makes, on host memory
(ctypes buffers standing in for device memory):

* **Lazy streams.** Work enqueued on a stream (copies, kernels, engine runs, graph launches) runs
  only when CUDA forces it -- a synchronize of that stream, ``cudaDeviceSynchronize``, an implicit
  device sync (``cudaFree``, ``cudaFreeHost``), a copy that is synchronous with the host -- i.e. at
  the latest moment a GPU may run it. Reading a result without the right synchronization sees
  stale memory. Streams are independent: the legacy stream (handle 0, one per device) is not
  ordered with non-blocking streams, which is what ``cudaStreamNonBlocking`` means.
* **Pageable vs pinned host memory.** ``cudaMemcpyAsync`` host-to-device from pageable memory
  stages the host data at the call (the host may reuse its buffer at once); from pinned memory
  (``cudaMallocHost``) the data is read when the copy runs. Device-to-host into pageable memory is
  synchronous (the stream runs first); into pinned memory asynchronous. ``cudaMemcpy`` is issued
  on the legacy stream: host-to-device from pageable memory returns once the data is staged, the
  device write completes with the legacy stream (CUDA: "the DMA to final destination may not have
  completed").
* **Fresh device memory is 0xFF bytes** (NaN as floats), so reads of never-written memory show.
* **Devices.** The current device is per host thread (``cudaSetDevice`` / ``cudaGetDevice``).
  Allocations, streams and graphs remember their device; a graph launch or a kernel
  (:meth:`SimCudart.launch_kernel`) on a stream of another device than the current one fails with
  ``cudaErrorInvalidResourceHandle`` (copies may cross devices, as in CUDA).
* **Stream capture** (thread-local mode) records the enqueued work; synchronizing the capturing
  stream, ``cudaMemcpy``, ``cudaMalloc`` / ``cudaFree``, and pageable ``cudaMemcpyAsync`` from the
  capturing thread fail with ``cudaErrorStreamCaptureUnsupported`` and invalidate the capture,
  whose end then reports ``cudaErrorStreamCaptureInvalidated``. Graph launches replay the recorded
  work with its fixed arguments.
* **Faults.** :meth:`SimCudart.inject_fault` makes synchronizing calls report a sticky error (e.g.
  ``cudaErrorIllegalAddress``), as an asynchronous kernel fault does.

:func:`sim_tensorrt` -- a ``tensorrt`` module stand-in in a TensorRT 10 or 11 flavour
(``version``): builder, ONNX parser, runtime, engines and execution contexts. Engines
(:class:`SimOnnxEngine`) run the ONNX file with ONNX Runtime on the bound device addresses, as
work on the given stream. Like TensorRT they: build and load on the current device and refuse to
run on another; return None from ``deserialize_cuda_engine`` for a plan they cannot load; resolve
output shapes from the input shapes (-1 only where a dim depends on the data); fail
``execute_async_v3`` (False + an error in the log) for unset shapes or addresses, addresses that
are not device memory of the engine's device, and ``USER_MANAGED`` contexts without device
memory; allocate activation memory per context unless it is user-managed; refuse invalid builder
flag combinations (STRONGLY_TYPED with a precision flag; TensorRT 11 has no ``BuilderFlag.FP16``);
and refuse to be captured when enqueued for the first time with new shapes (the setup TensorRT
does then cannot be captured) or when the engine is marked uncapturable (``trt.sim_capturable``).
The plan is JSON naming the ONNX file and what the builder was told, so tests can check both.

Install with ``monkeypatch.setattr(instcolor.trt.cuda, "cudart", lambda: rt)`` and
``monkeypatch.setitem(sys.modules, "tensorrt", sim_tensorrt(rt))``.
"""
from __future__ import annotations

import ctypes
import enum
import json
import threading
import types

import numpy as np


class cudaError_t(enum.IntEnum):
    cudaSuccess = 0
    cudaErrorInvalidValue = 1
    cudaErrorMemoryAllocation = 2
    cudaErrorInvalidDevice = 101
    cudaErrorInvalidResourceHandle = 400
    cudaErrorIllegalState = 401
    cudaErrorIllegalAddress = 700
    cudaErrorStreamCaptureUnsupported = 900
    cudaErrorStreamCaptureInvalidated = 901
    cudaErrorStreamCaptureWrongThread = 908


E = cudaError_t


class _Alloc:
    __slots__ = ("buf", "ptr", "nbytes", "kind", "device")

    def __init__(self, nbytes: int, kind: str, device: int | None, fill: int):
        self.buf = (ctypes.c_uint8 * max(nbytes, 1))()
        self.ptr, self.nbytes, self.kind, self.device = ctypes.addressof(self.buf), nbytes, kind, device
        ctypes.memset(self.ptr, fill, max(nbytes, 1))


class _Stream:
    def __init__(self, handle: int, device: int, flags: int):
        self.handle, self.device, self.flags = handle, device, flags
        self.queue: list = []
        self.capture: dict | None = None  # {"ops": [...], "thread": id, "invalid": reason | None}


class SimGraph:
    def __init__(self, ops, device):
        self.ops, self.device, self.alive = list(ops), device, True


class SimCudart:
    """cuda-python's runtime (``cuda.bindings.runtime``) as used by instcolor, simulated; see the
    module docstring for the semantics it enforces."""

    cudaError_t = cudaError_t

    class cudaMemcpyKind:
        cudaMemcpyHostToHost, cudaMemcpyHostToDevice, cudaMemcpyDeviceToHost, cudaMemcpyDeviceToDevice = 0, 1, 2, 3

    class cudaStreamCaptureMode:
        cudaStreamCaptureModeGlobal, cudaStreamCaptureModeThreadLocal, cudaStreamCaptureModeRelaxed = 0, 1, 2

    cudaStreamDefault, cudaStreamNonBlocking = 0, 1

    def __init__(self, gpu_name: str = "Sim GPU", compute_capability: tuple[int, int] = (8, 7), devices: int = 1):
        self.gpu_name, self.compute_capability, self.devices = gpu_name, compute_capability, devices
        self.allocs: dict[int, _Alloc] = {}
        self.streams: dict[int, _Stream] = {}
        self.legacy = {d: _Stream(0, d, 0) for d in range(devices)}
        self._tls = threading.local()
        self._next_stream = 0x5000
        self.launches = 0          # graph launches
        self.device_bytes = 0      # cudaMalloc bytes ever allocated
        self.fault: cudaError_t | None = None
        self.internal: dict[int, _Alloc] = {}  # memory TensorRT allocates itself (context activations)

    # ------------------------------------------------------------------ helpers for the sim and tests
    @property
    def mem(self) -> dict:
        """Live cudaMalloc / cudaMallocHost allocations."""
        return self.allocs

    def current_device(self) -> int:
        return getattr(self._tls, "device", 0)

    def live_device_bytes(self, device: int | None = None) -> int:
        """Device memory held now: cudaMalloc allocations + TensorRT's own (context activations)."""
        return sum(a.nbytes for a in list(self.allocs.values()) + list(self.internal.values())
                   if a.kind == "device" and (device is None or a.device == device))

    def find(self, ptr: int, nbytes: int = 1) -> _Alloc | None:
        """The allocation (device, pinned, or TensorRT-internal) holding ``[ptr, ptr + nbytes)``."""
        for a in list(self.allocs.values()) + list(self.internal.values()):
            if a.ptr <= ptr and ptr + max(nbytes, 1) <= a.ptr + max(a.nbytes, 1):
                return a
        return None

    def stream_device(self, handle: int) -> int | None:
        s = self._stream(handle)
        return None if s is None else s.device

    def _stream(self, handle: int) -> _Stream | None:
        handle = int(handle)
        if handle == 0:
            return self.legacy[self.current_device()]
        return self.streams.get(handle)

    def _capture_of_thread(self) -> _Stream | None:
        me = threading.get_ident()
        for s in self.streams.values():
            if s.capture is not None and s.capture["thread"] == me:
                return s
        return None

    def _unsafe(self, what: str):
        """Calls not permitted while this thread captures: invalidate the capture, return the error."""
        s = self._capture_of_thread()
        if s is None:
            return None
        self.invalidate_capture(s.handle, f"{what} while the stream was capturing")
        return (E.cudaErrorStreamCaptureUnsupported,)

    def capturing(self, handle: int) -> bool:
        s = self._stream(handle)
        return s is not None and s.capture is not None

    def invalidate_capture(self, handle: int, reason: str) -> None:
        s = self._stream(handle)
        if s is not None and s.capture is not None and s.capture["invalid"] is None:
            s.capture["invalid"] = reason

    def enqueue(self, handle: int, op) -> cudaError_t:
        """Put ``op`` (a callable) on stream ``handle``: recorded when it captures, else queued."""
        s = self._stream(handle)
        if s is None:
            return E.cudaErrorInvalidResourceHandle
        (s.capture["ops"] if s.capture is not None else s.queue).append(op)
        return E.cudaSuccess

    def launch_kernel(self, handle: int, op) -> cudaError_t:
        """A kernel launch (for fakes of native kernels): the stream must belong to the current device."""
        s = self._stream(handle)
        if s is None or s.device != self.current_device():
            return E.cudaErrorInvalidResourceHandle
        return self.enqueue(handle, op)

    def inject_fault(self, code: cudaError_t = E.cudaErrorIllegalAddress) -> None:
        """An asynchronous fault: synchronizing calls report ``code`` from now on (sticky)."""
        self.fault = code

    @staticmethod
    def _drain(s: _Stream) -> None:
        while s.queue:
            s.queue.pop(0)()

    def _drain_device(self, device: int) -> None:
        self._drain(self.legacy[device])
        for s in list(self.streams.values()):
            if s.device == device:
                self._drain(s)

    def _alloc(self, nbytes: int, kind: str, device: int | None) -> int:
        a = _Alloc(int(nbytes), kind, device, 0xFF if kind == "device" else 0)
        self.allocs[a.ptr] = a
        return a.ptr

    def alloc_internal(self, nbytes: int, device: int) -> int:
        a = _Alloc(int(nbytes), "device", device, 0xFF)
        self.internal[a.ptr] = a
        return a.ptr

    def free_internal(self, ptr: int) -> None:
        self.internal.pop(ptr, None)

    # ------------------------------------------------------------------ device management
    def cudaGetDeviceCount(self):
        return E.cudaSuccess, self.devices

    def cudaGetDevice(self):
        return E.cudaSuccess, self.current_device()

    def cudaSetDevice(self, i):
        if not 0 <= int(i) < self.devices:
            return (E.cudaErrorInvalidDevice,)
        self._tls.device = int(i)
        return (E.cudaSuccess,)

    def cudaGetDeviceProperties(self, i):
        if not 0 <= int(i) < self.devices:
            return E.cudaErrorInvalidDevice, None
        major, minor = self.compute_capability
        return E.cudaSuccess, types.SimpleNamespace(name=self.gpu_name.encode() + b"\0\0", major=major, minor=minor)

    def cudaGetErrorString(self, err):
        return E.cudaSuccess, cudaError_t(int(err)).name.encode()

    def cudaDeviceSynchronize(self):
        bad = self._unsafe("cudaDeviceSynchronize")
        if bad:
            return bad
        self._drain_device(self.current_device())
        return (self.fault or E.cudaSuccess,)

    # ------------------------------------------------------------------ memory
    def cudaMalloc(self, n):
        bad = self._unsafe("cudaMalloc")
        if bad:
            return bad + (None,)
        self.device_bytes += int(n)
        return E.cudaSuccess, self._alloc(n, "device", self.current_device())

    def cudaMallocHost(self, n):
        bad = self._unsafe("cudaMallocHost")
        if bad:
            return bad + (None,)
        return E.cudaSuccess, self._alloc(n, "pinned", None)

    def _free(self, p, kind):
        bad = self._unsafe(f"free of {kind} memory")
        if bad:
            return bad
        a = self.allocs.get(int(p))
        if a is None or a.kind != kind:
            return (E.cudaErrorInvalidValue,)
        # implicit synchronization: outstanding work that may use the memory completes first
        for d in range(self.devices):
            self._drain_device(d)
        del self.allocs[int(p)]
        return (E.cudaSuccess,)

    def cudaFree(self, p):
        return self._free(p, "device")

    def cudaFreeHost(self, p):
        return self._free(p, "pinned")

    def _check_copy(self, dst, src, n, kind):
        """(dst alloc, src alloc) for a copy of ``kind``, or None when the pointers do not fit it."""
        K = self.cudaMemcpyKind
        d, s = self.find(dst, n), self.find(src, n)
        d_dev, s_dev = d is not None and d.kind == "device", s is not None and s.kind == "device"
        want = {K.cudaMemcpyHostToDevice: (True, False), K.cudaMemcpyDeviceToHost: (False, True),
                K.cudaMemcpyDeviceToDevice: (True, True), K.cudaMemcpyHostToHost: (False, False)}.get(int(kind))
        if want is None or (d_dev, s_dev) != want:
            return None
        return d, s

    def cudaMemcpyAsync(self, dst, src, n, kind, stream):
        s = self._stream(stream)
        if s is None:
            return (E.cudaErrorInvalidResourceHandle,)
        pair = self._check_copy(dst, src, n, kind)
        if pair is None:
            return (E.cudaErrorInvalidValue,)
        d, sa = pair
        K = self.cudaMemcpyKind
        if int(kind) == K.cudaMemcpyHostToDevice and (sa is None or sa.kind != "pinned"):
            if s.capture is not None:  # pageable memory cannot be captured
                self.invalidate_capture(stream, "cudaMemcpyAsync from pageable memory")
                return (E.cudaErrorStreamCaptureUnsupported,)
            staged = ctypes.string_at(src, n)  # staged now; the host buffer may be reused at once
            self.enqueue(stream, lambda: ctypes.memmove(dst, staged, n))
            return (E.cudaSuccess,)
        if int(kind) == K.cudaMemcpyDeviceToHost and (d is None or d.kind != "pinned"):
            if s.capture is not None:
                self.invalidate_capture(stream, "cudaMemcpyAsync to pageable memory")
                return (E.cudaErrorStreamCaptureUnsupported,)
            self._drain(s)  # synchronous with the host
            ctypes.memmove(dst, src, n)
            return (self.fault or E.cudaSuccess,)
        self.enqueue(stream, lambda: ctypes.memmove(dst, src, n))
        return (E.cudaSuccess,)

    def cudaMemcpy(self, dst, src, n, kind):
        bad = self._unsafe("cudaMemcpy")
        if bad:
            return bad
        pair = self._check_copy(dst, src, n, kind)
        if pair is None:
            return (E.cudaErrorInvalidValue,)
        d, sa = pair
        legacy = self.legacy[self.current_device()]
        self._drain(legacy)  # the legacy stream's earlier work first (not other, non-blocking streams)
        K = self.cudaMemcpyKind
        if int(kind) == K.cudaMemcpyHostToDevice and (sa is None or sa.kind != "pinned"):
            staged = ctypes.string_at(src, n)  # returns once staged; the DMA completes with the legacy stream
            legacy.queue.append(lambda: ctypes.memmove(dst, staged, n))
        elif int(kind) == K.cudaMemcpyDeviceToDevice:
            legacy.queue.append(lambda: ctypes.memmove(dst, src, n))
        else:
            ctypes.memmove(dst, src, n)
        return (self.fault or E.cudaSuccess,)

    def cudaMemsetAsync(self, ptr, value, n, stream):
        a = self.find(ptr, n)
        if a is None or a.kind != "device":
            return (E.cudaErrorInvalidValue,)
        return (self.enqueue(stream, lambda: ctypes.memset(ptr, int(value) & 0xFF, n)),)

    # ------------------------------------------------------------------ streams
    def cudaStreamCreateWithFlags(self, flags):
        bad = self._unsafe("cudaStreamCreate")
        if bad:
            return bad + (None,)
        self._next_stream += 16
        self.streams[self._next_stream] = _Stream(self._next_stream, self.current_device(), int(flags))
        return E.cudaSuccess, self._next_stream

    def cudaStreamDestroy(self, handle):
        s = self.streams.pop(int(handle), None)
        if s is None:
            return (E.cudaErrorInvalidResourceHandle,)
        self._drain(s)  # outstanding work still completes
        return (E.cudaSuccess,)

    def cudaStreamSynchronize(self, handle):
        s = self._stream(handle)
        if s is None:
            return (E.cudaErrorInvalidResourceHandle,)
        if s.capture is not None:
            self.invalidate_capture(handle, "cudaStreamSynchronize of the capturing stream")
            return (E.cudaErrorStreamCaptureUnsupported,)
        self._drain(s)
        return (self.fault or E.cudaSuccess,)

    # ------------------------------------------------------------------ graphs
    def cudaStreamBeginCapture(self, handle, mode):
        s = self.streams.get(int(handle))  # not the legacy stream
        if s is None or s.capture is not None:
            return (E.cudaErrorStreamCaptureUnsupported if s is None else E.cudaErrorIllegalState,)
        s.capture = {"ops": [], "thread": threading.get_ident(), "invalid": None, "mode": int(mode)}
        return (E.cudaSuccess,)

    def cudaStreamEndCapture(self, handle):
        s = self.streams.get(int(handle))
        if s is None or s.capture is None:
            return E.cudaErrorIllegalState, None
        if s.capture["thread"] != threading.get_ident():
            return E.cudaErrorStreamCaptureWrongThread, None
        cap, s.capture = s.capture, None
        if cap["invalid"] is not None:
            return E.cudaErrorStreamCaptureInvalidated, None
        return E.cudaSuccess, SimGraph(cap["ops"], s.device)

    def cudaGraphInstantiate(self, graph, flags):
        if not isinstance(graph, SimGraph) or not graph.alive:
            return E.cudaErrorInvalidValue, None
        return E.cudaSuccess, SimGraph(graph.ops, graph.device)

    def cudaGraphDestroy(self, g):
        g.alive = False
        return (E.cudaSuccess,)

    cudaGraphExecDestroy = cudaGraphDestroy

    def cudaGraphLaunch(self, exec_, handle):
        s = self._stream(handle)
        if s is None or not exec_.alive or exec_.device != s.device or s.device != self.current_device():
            return (E.cudaErrorInvalidResourceHandle,)
        ops = list(exec_.ops)

        def run():
            for op in ops:
                op()
        self.launches += 1
        return (self.enqueue(handle, run),)


def at_address(ptr: int, shape, dtype) -> np.ndarray:
    """numpy view of ``shape`` / ``dtype`` memory at host address ``ptr`` (a simulated device pointer)."""
    dtype = np.dtype(dtype)
    raw = (ctypes.c_uint8 * (int(np.prod(shape)) * dtype.itemsize)).from_address(ptr)
    return np.ctypeslib.as_array(raw).view(dtype).reshape(shape)


def host_view(a):
    """numpy view of a (simulated) device array (anything with ``__cuda_array_interface__``)."""
    cai = a.__cuda_array_interface__
    return at_address(cai["data"][0], cai["shape"], np.dtype(cai["typestr"]))


# ----------------------------------------------------------------------------- tensorrt stand-in
_DATA_TYPES = ("FLOAT", "HALF", "INT8", "INT32", "BOOL", "UINT8", "FP8", "BF16", "INT64", "INT4")
_ORT_TYPES = {"tensor(float)": "FLOAT", "tensor(float16)": "HALF", "tensor(int32)": "INT32",
              "tensor(int64)": "INT64", "tensor(int8)": "INT8", "tensor(uint8)": "UINT8", "tensor(bool)": "BOOL",
              "tensor(bfloat16)": "BF16"}
_NP = {"FLOAT": np.float32, "HALF": np.float16, "INT32": np.int32, "INT64": np.int64, "INT8": np.int8,
       "UINT8": np.uint8, "BOOL": np.bool_}


def _version(v: str) -> tuple[int, int]:
    parts = (str(v).split(".") + ["0"])[:2]
    return int(parts[0]), int(parts[1])


def _resolve_output_shapes(model, input_shapes: dict) -> dict:
    """Output shapes of ONNX ``model`` for concrete ``input_shapes`` (ONNX shape inference with
    data propagation); -1 where a dim stays unknown (it depends on the data)."""
    import onnx

    m = onnx.ModelProto()
    m.CopyFrom(model)
    for i in m.graph.input:
        if i.name in input_shapes:
            dims = i.type.tensor_type.shape.dim
            for d, v in zip(dims, input_shapes[i.name]):
                d.Clear()
                d.dim_value = int(v)
    for o in m.graph.output:
        o.type.tensor_type.ClearField("shape")
    del m.graph.value_info[:]
    m = onnx.shape_inference.infer_shapes(m, data_prop=True)
    out = {}
    for o in m.graph.output:
        t = o.type.tensor_type
        out[o.name] = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim) \
            if t.HasField("shape") else None
    return out


class SimOnnxEngine:
    """ICudaEngine of a simulated plan: the ONNX file run by ONNX Runtime on the bound addresses,
    on the device that was current when it was deserialized."""

    context_cls = None  # set per TensorRT flavour by sim_tensorrt

    def __init__(self, plan: dict, rt, trt):
        import onnx
        import onnxruntime as ort

        self.plan, self.rt, self.trt, self.contexts = plan, rt, trt, 0
        self.device = rt.current_device() if rt is not None else 0
        self.model = onnx.load(plan["onnx"])
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        self.session = ort.InferenceSession(plan["onnx"], so, providers=["CPUExecutionProvider"])
        self.io = {i.name: ("INPUT", i) for i in self.session.get_inputs()}
        self.io.update({o.name: ("OUTPUT", o) for o in self.session.get_outputs()})
        self.names = list(self.io)
        self.num_io_tensors = len(self.names)
        self._shape_cache: dict = {}
        # activation memory: a deterministic, engine-specific amount
        self._memory = 256 * (1 + sum(int(np.prod(hi)) for _, _, hi in plan["profile"].values()) // 512)
        if _version(trt.__version__) >= (10, 1):
            self.device_memory_size_v2 = self._memory
        if _version(trt.__version__) < (11, 0):
            self.device_memory_size = self._memory  # deprecated in 10.1

    def get_tensor_name(self, i): return self.names[i]
    def get_tensor_mode(self, name): return getattr(self.trt.TensorIOMode, self.io[name][0])
    def get_tensor_dtype(self, name): return getattr(self.trt.DataType, _ORT_TYPES[self.io[name][1].type])

    def get_tensor_shape(self, name):
        return tuple(d if isinstance(d, int) else -1 for d in self.io[name][1].shape)

    def np_dtype(self, name):
        return _NP[_ORT_TYPES[self.io[name][1].type]]

    def resolved_shapes(self, input_shapes: dict) -> dict:
        key = tuple(sorted(input_shapes.items()))
        if key not in self._shape_cache:
            self._shape_cache[key] = _resolve_output_shapes(self.model, input_shapes)
        return self._shape_cache[key]

    def _make_context(self, user_managed: bool):
        if self.rt is not None and self.rt.current_device() != self.device:
            self.trt.error(f"createExecutionContext: the engine lives on device {self.device}, "
                           f"the current device is {self.rt.current_device()}")
            return None
        self.contexts += 1
        return self.context_cls(self, user_managed)

    def create_execution_context(self, strategy=None):
        S = self.trt.ExecutionContextAllocationStrategy
        return self._make_context(strategy is not None and strategy == S.USER_MANAGED)

    def _create_without_memory(self):
        return self._make_context(True)


class SimOnnxContext:
    def __init__(self, engine: SimOnnxEngine, user_managed: bool):
        self.e, self.shapes, self.addr, self.runs = engine, {}, {}, 0
        self.user_managed, self.memory, self.warm = user_managed, None, set()
        if not user_managed and engine.rt is not None:
            self._own = engine.rt.alloc_internal(engine._memory, engine.device)
            self.memory = (self._own, engine._memory)

    def __del__(self):
        own = getattr(self, "_own", None)
        if own is not None and self.e.rt is not None:
            self.e.rt.free_internal(own)

    def _error(self, msg) -> bool:
        self.e.trt.error(msg)
        return False

    def set_input_shape(self, name, shape):
        if self.e.io.get(name, ("",))[0] != "INPUT":
            return self._error(f"setInputShape: {name} is no input tensor")
        lo, _, hi = self.e.plan["profile"][name]
        shape = tuple(int(d) for d in shape)
        if len(shape) != len(lo) or not all(a <= b <= c for a, b, c in zip(lo, shape, hi)):
            return self._error(f"setInputShape: {name} {shape} is outside the profile {lo}..{hi}")
        self.shapes[name] = shape
        return True

    def _inputs(self):
        return [n for n in self.e.names if self.e.io[n][0] == "INPUT"]

    def get_tensor_shape(self, name):
        if self.e.io[name][0] == "INPUT":
            return self.shapes.get(name, self.e.get_tensor_shape(name))
        if not all(n in self.shapes for n in self._inputs()):
            return self.e.get_tensor_shape(name)
        resolved = self.e.resolved_shapes(self.shapes)[name]
        return resolved if resolved is not None else self.e.get_tensor_shape(name)

    def set_tensor_address(self, name, ptr):
        if name not in self.e.io:
            return self._error(f"setTensorAddress: no tensor {name}")
        self.addr[name] = int(ptr)
        return True

    def _set_memory(self, ptr, size):
        need = self.e._memory
        a = self.e.rt.find(int(ptr), need) if self.e.rt is not None else None
        if size < need or a is None or a.kind != "device" or a.device != self.e.device:
            self.e.trt.error(f"setDeviceMemory: {size} bytes at 0x{int(ptr):x} is not {need} bytes of device "
                             f"memory on device {self.e.device}")
            return
        self.memory = (int(ptr), int(size))

    def execute_async_v3(self, stream):
        e, rt = self.e, self.e.rt
        name = e.plan["onnx"]
        if rt is not None:
            if rt.current_device() != e.device:
                return self._error(f"enqueueV3 ({name}): the current device is {rt.current_device()}, "
                                   f"the engine's {e.device}")
            if rt.stream_device(stream) != e.device:
                return self._error(f"enqueueV3 ({name}): stream {stream} is not a stream of device {e.device}")
        if self.memory is None:
            return self._error(f"enqueueV3 ({name}): USER_MANAGED context without device memory")
        missing = [n for n in self._inputs() if n not in self.shapes]
        missing += [f"address of {n}" for n in e.names if n not in self.addr]
        if missing:
            return self._error(f"enqueueV3 ({name}): not set: {', '.join(missing)}")
        shapes = {n: tuple(self.get_tensor_shape(n)) for n in e.names}
        for n, shape in shapes.items():
            if any(d < 0 for d in shape):
                return self._error(f"enqueueV3 ({name}): output {n} has a data-dependent shape {shape}; "
                                   f"it needs an output allocator")
            nbytes = int(np.prod(shape)) * np.dtype(e.np_dtype(n)).itemsize
            a = rt.find(self.addr[n], nbytes) if rt is not None else None
            if rt is not None and (a is None or a.kind != "device" or a.device != e.device):
                return self._error(f"enqueueV3 ({name}): {n} at 0x{self.addr[n]:x} ({nbytes} bytes) is not "
                                   f"device memory of device {e.device}")
        key = tuple(sorted((n, s) for n, s in shapes.items() if e.io[n][0] == "INPUT"))
        if rt is not None and rt.capturing(stream):
            if not e.trt.sim_capturable:
                rt.invalidate_capture(stream, "an operation of the engine is not permitted when stream is capturing")
                return self._error(f"enqueueV3 ({name}): operation not permitted when stream is capturing")
            if key not in self.warm:
                rt.invalidate_capture(stream, "shape setup during capture")
                return self._error(f"enqueueV3 ({name}): first enqueue with new shapes while capturing")
        self.warm.add(key)
        addr = dict(self.addr)  # fixed at enqueue, as in a captured graph
        outs = [n for n in e.names if e.io[n][0] == "OUTPUT"]

        def op():
            feeds = {n: at_address(addr[n], shapes[n], e.np_dtype(n)).copy() for n in self._inputs()}
            for n, r in zip(outs, e.session.run(outs, feeds)):
                if r.shape != shapes[n]:
                    raise AssertionError(f"sim: {n} came out {r.shape}, TensorRT reported {shapes[n]}")
                np.copyto(at_address(addr[n], r.shape, e.np_dtype(n)), r)
            self.runs += 1

        if rt is None:
            op()
        elif rt.enqueue(stream, op) != 0:
            return self._error(f"enqueueV3 ({name}): invalid stream {stream}")
        return True


class _Network:
    def __init__(self, flags):
        self.flags, self.onnx = flags, None


class _Config:
    def __init__(self, trt):
        self.flags = {trt.BuilderFlag.TF32} if hasattr(trt.BuilderFlag, "TF32") else set()  # TensorRT's default
        self.pools, self.profiles = {}, []

    def set_flag(self, flag): self.flags.add(flag)
    def clear_flag(self, flag): self.flags.discard(flag)
    def get_flag(self, flag): return flag in self.flags
    def set_memory_pool_limit(self, pool, n): self.pools[pool] = int(n)
    def add_optimization_profile(self, p): self.profiles.append(p); return len(self.profiles) - 1


class _Profile:
    def __init__(self):
        self.shapes = {}

    def set_shape(self, name, lo, opt, hi): self.shapes[name] = [list(lo), list(opt), list(hi)]


def sim_tensorrt(rt: SimCudart | None = None, version: str = "10.3.0", fp16_flag: bool | None = None):
    """A ``tensorrt`` module stand-in of TensorRT ``version`` (10.x or 11.x flavour). ``fp16_flag``:
    whether ``BuilderFlag.FP16`` exists (default: TensorRT < 11; 11 dropped weak typing). The module
    records each built plan in ``builds`` and each logged error in ``errors``; engines enqueue their
    work on ``rt``'s streams (None = run at once, no device checks). ``sim_capturable = False`` makes
    every engine refuse stream capture."""
    major_minor = _version(version)
    if fp16_flag is None:
        fp16_flag = major_minor[0] < 11
    trt = types.SimpleNamespace(__version__=version, builds=[], errors=[], sim_capturable=True)
    trt.error = trt.errors.append
    trt.TensorIOMode = types.SimpleNamespace(NONE="NONE", INPUT="INPUT", OUTPUT="OUTPUT")
    trt.DataType = types.SimpleNamespace(**{n: f"DataType.{n}" for n in _DATA_TYPES})
    trt.Logger = type("Logger", (), {"WARNING": 2, "ERROR": 1, "__init__": lambda self, level=2: None})
    trt.NetworkDefinitionCreationFlag = types.SimpleNamespace(STRONGLY_TYPED=0)
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE="workspace")
    flags = ["TF32", "BF16", "INT8", "FP8", "REFIT"] + (["FP16"] if fp16_flag else [])
    trt.BuilderFlag = types.SimpleNamespace(**{f: f for f in flags})
    precision_flags = {"FP16", "BF16", "INT8", "FP8"}
    trt.ExecutionContextAllocationStrategy = types.SimpleNamespace(STATIC=0, ON_PROFILE_CHANGE=1, USER_MANAGED=2)

    class Builder:
        def __init__(self, logger): pass
        def create_network(self, flags=0): return _Network(int(flags))
        def create_builder_config(self): return _Config(trt)
        def create_optimization_profile(self): return _Profile()

        def build_serialized_network(self, network, config):
            strongly = bool(network.flags & (1 << trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)) \
                or major_minor[0] >= 11
            bad = sorted(f for f in config.flags if f in precision_flags)
            if strongly and bad:
                trt.error(f"buildSerializedNetwork: precision flags {bad} are not allowed on a strongly typed network")
                return None
            if network.onnx is None or len(config.profiles) != 1:
                trt.error("buildSerializedNetwork: no parsed network or not exactly one optimization profile")
                return None
            import onnx

            model = onnx.load(network.onnx)
            inputs = {i.name: len(i.type.tensor_type.shape.dim) for i in model.graph.input}
            prof = config.profiles[0].shapes
            for name, rank in inputs.items():
                shapes = prof.get(name)
                if shapes is None or any(len(s) != rank for s in shapes) or not all(
                        a <= b <= c for a, b, c in zip(*shapes)):
                    trt.error(f"buildSerializedNetwork: bad or missing profile for input {name}: {shapes}")
                    return None
            plan = dict(onnx=network.onnx, profile=prof, fp16="FP16" in config.flags, tf32="TF32" in config.flags,
                        strongly_typed=strongly, workspace=config.pools.get("workspace"), version=version,
                        device=rt.current_device() if rt is not None else 0)
            trt.builds.append(plan)
            return json.dumps(plan).encode()

    class OnnxParser:
        def __init__(self, network, logger):
            self.network, self.errors = network, []

        @property
        def num_errors(self): return len(self.errors)
        def get_error(self, i): return self.errors[i]

        def parse_from_file(self, path):
            import onnx

            try:
                onnx.load(str(path))
            except Exception as e:  # noqa: BLE001 -- the parser reports, it does not raise
                self.errors.append(f"{path}: {e}")
                return False
            self.network.onnx = str(path)
            return True

    class Runtime:
        def __init__(self, logger): pass

        def deserialize_cuda_engine(self, plan):
            try:
                p = json.loads(bytes(plan))
                assert isinstance(p, dict) and "onnx" in p
            except Exception:  # noqa: BLE001 -- TensorRT logs and returns None
                trt.error("deserializeCudaEngine: invalid plan")
                return None
            if p.get("version") != version:
                trt.error(f"deserializeCudaEngine: plan of TensorRT {p.get('version')}, this is {version}")
                return None
            return Engine(p, rt, trt)

    # the API of this flavour
    ctx_api = {}
    if major_minor >= (10, 1):
        ctx_api["set_device_memory"] = SimOnnxContext._set_memory
    else:
        ctx_api["device_memory"] = property(None, lambda self, ptr: self._set_memory(ptr, self.e._memory))
    engine_api = {"context_cls": type("SimContext", (SimOnnxContext,), ctx_api)}
    if major_minor[0] < 11:  # deprecated in 10, removed in 11
        engine_api["create_execution_context_without_device_memory"] = SimOnnxEngine._create_without_memory
    Engine = type("SimEngine", (SimOnnxEngine,), engine_api)
    trt.Builder, trt.OnnxParser, trt.Runtime = Builder, OnnxParser, Runtime
    return trt

"""Simulated cuda-python and TensorRT for tests without a GPU.

* :class:`SimCudart` -- the cuda-python runtime calls :mod:`instcolor.trt.cuda` makes, on host
  memory (ctypes buffers); stream capture records the enqueued work and graph launches replay it.
* :func:`sim_tensorrt` -- a ``tensorrt`` module stand-in: the enums :class:`instcolor.trt.engine.TensorRTRunner`
  reads, and a builder / runtime whose "engines" (:class:`SimOnnxEngine`) run the ONNX file with
  ONNX Runtime, reading and writing the bound addresses. The plan is JSON naming the ONNX file and
  what the builder was told (profile, flags), so tests can check both.
* :class:`HostPtrDevice` -- :class:`instcolor.trt.memory.HostDevice` whose views also have ``.ptr``
  (their numpy data address), which is what engines bind.

Install with ``monkeypatch.setattr(instcolor.trt.cuda, "cudart", lambda: rt)`` and
``monkeypatch.setitem(sys.modules, "tensorrt", sim_tensorrt(rt))``.
"""
from __future__ import annotations

import ctypes
import json
import types

import numpy as np

from instcolor.trt.memory import HostDevice


class SimCudart:
    """cuda-python's runtime calls used by instcolor.trt.cuda, on host memory; stream capture
    records the enqueued work and graph launches replay it (like a real graph: fixed arguments)."""

    class cudaMemcpyKind:
        cudaMemcpyHostToDevice, cudaMemcpyDeviceToHost = 1, 2

    class cudaStreamCaptureMode:
        cudaStreamCaptureModeThreadLocal = 1

    cudaStreamNonBlocking = 1

    def __init__(self, gpu_name: str = "Sim GPU", compute_capability: tuple[int, int] = (8, 7), devices: int = 1):
        self.mem, self.capturing, self.launches, self.device_bytes = {}, None, 0, 0
        self.gpu_name, self.compute_capability, self.devices = gpu_name, compute_capability, devices

    def _alloc(self, n):
        buf = (ctypes.c_uint8 * n)()
        self.mem[ctypes.addressof(buf)] = buf
        return 0, ctypes.addressof(buf)

    def _issue(self, op):
        if self.capturing is not None:
            self.capturing.append(op)
        else:
            op()

    def cudaGetDeviceCount(self): return 0, self.devices

    def cudaGetDeviceProperties(self, i):
        assert 0 <= i < self.devices
        major, minor = self.compute_capability
        return 0, types.SimpleNamespace(name=self.gpu_name.encode() + b"\0\0", major=major, minor=minor)

    def cudaSetDevice(self, i): return (0,)
    def cudaStreamCreateWithFlags(self, flags): return 0, 1234
    def cudaStreamSynchronize(self, s): return (0,)
    def cudaStreamDestroy(self, s): return (0,)
    def cudaMallocHost(self, n): return self._alloc(n)
    def cudaFree(self, p): self.mem.pop(p); return (0,)
    cudaFreeHost = cudaFree

    def cudaMalloc(self, n):
        self.device_bytes += n
        return self._alloc(n)

    def cudaMemcpyAsync(self, dst, src, n, kind, stream):
        assert stream == 1234
        self._issue(lambda: ctypes.memmove(dst, src, n))
        return (0,)

    def cudaMemcpy(self, dst, src, n, kind):
        assert self.capturing is None
        ctypes.memmove(dst, src, n)
        return (0,)

    def cudaStreamBeginCapture(self, s, mode):
        assert self.capturing is None
        self.capturing = []
        return (0,)

    def cudaStreamEndCapture(self, s):
        graph, self.capturing = self.capturing, None
        return 0, graph

    def cudaGraphInstantiate(self, graph, flags): return 0, list(graph)
    def cudaGraphDestroy(self, g): return (0,)
    def cudaGraphExecDestroy(self, g): return (0,)

    def cudaGraphLaunch(self, exec_, s):
        self.launches += 1
        for op in exec_:
            op()
        return (0,)


def host_view(a):
    """numpy view of a (simulated) device array."""
    cai = a.__cuda_array_interface__
    dt, shape = np.dtype(cai["typestr"]), cai["shape"]
    raw = (ctypes.c_uint8 * (int(np.prod(shape)) * dt.itemsize)).from_address(cai["data"][0])
    return np.ctypeslib.as_array(raw).view(dt).reshape(shape)


def at_address(ptr: int, shape, dtype) -> np.ndarray:
    """numpy view of ``shape`` / ``dtype`` memory at host address ``ptr`` (a simulated device pointer)."""
    dtype = np.dtype(dtype)
    raw = (ctypes.c_uint8 * (int(np.prod(shape)) * dtype.itemsize)).from_address(ptr)
    return np.ctypeslib.as_array(raw).view(dtype).reshape(shape)


class PtrArray(np.ndarray):
    """A numpy array with ``.ptr`` (its data address), as device views have."""

    @property
    def ptr(self) -> int:
        return self.ctypes.data


class HostPtrDevice(HostDevice):
    """HostDevice whose views carry ``.ptr``, so a (simulated) engine can bind them."""

    index = 0

    def view(self, buffer, shape, dtype):
        return super().view(buffer, shape, dtype).view(PtrArray)


# ----------------------------------------------------------------------------- tensorrt stand-in
_ENUMS = dict(TensorIOMode=types.SimpleNamespace(INPUT="input", OUTPUT="output"),
              DataType=types.SimpleNamespace(FLOAT="float", HALF="half", INT32="int32", INT64="int64"))
#: Enough of ``tensorrt`` for TensorRTRunner over hand-made engines.
SIM_TRT = types.SimpleNamespace(**_ENUMS)
_ORT_TYPES = {"tensor(float)": "float", "tensor(float16)": "half", "tensor(int32)": "int32", "tensor(int64)": "int64"}
_NP = {"float": np.float32, "half": np.float16, "int32": np.int32, "int64": np.int64}


class SimOnnxEngine:
    """ICudaEngine of a simulated plan: the ONNX file run by ONNX Runtime on the bound addresses.
    Outputs with a non-static declared dim report -1 there (as data-dependent shapes do)."""

    def __init__(self, plan: dict, rt=None):
        import onnxruntime as ort

        self.plan, self.rt, self.contexts = plan, rt, 0
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        self.session = ort.InferenceSession(plan["onnx"], so, providers=["CPUExecutionProvider"])
        self.io = {i.name: ("input", i) for i in self.session.get_inputs()}
        self.io.update({o.name: ("output", o) for o in self.session.get_outputs()})
        self.names = list(self.io)
        self.num_io_tensors = len(self.names)

    def get_tensor_name(self, i): return self.names[i]
    def get_tensor_mode(self, name): return self.io[name][0]
    def get_tensor_dtype(self, name): return _ORT_TYPES[self.io[name][1].type]

    def create_execution_context(self):
        self.contexts += 1
        return SimOnnxContext(self)


class SimOnnxContext:
    def __init__(self, engine: SimOnnxEngine):
        self.e, self.shapes, self.addr, self.runs = engine, {}, {}, 0

    def set_input_shape(self, name, shape):
        lo, _, hi = self.e.plan["profile"][name]
        if not all(a <= b <= c for a, b, c in zip(lo, shape, hi)) or len(shape) != len(lo):
            return False
        self.shapes[name] = tuple(shape)
        return True

    def set_tensor_address(self, name, ptr):
        self.addr[name] = int(ptr)
        return True

    def get_tensor_shape(self, name):
        if self.e.io[name][0] == "input":
            return self.shapes.get(name, ())
        return tuple(d if isinstance(d, int) else -1 for d in self.e.io[name][1].shape)

    def execute_async_v3(self, stream):
        outs = [n for n in self.e.names if self.e.io[n][0] == "output"]
        types_ = {n: _NP[self.e.get_tensor_dtype(n)] for n in self.e.names}
        shapes, addr = dict(self.shapes), dict(self.addr)  # fixed at enqueue

        def op():
            feeds = {n: at_address(addr[n], s, types_[n]).copy() for n, s in shapes.items()}
            for n, r in zip(outs, self.e.session.run(outs, feeds)):
                np.copyto(at_address(addr[n], r.shape, types_[n]), r)
            self.runs += 1

        if self.e.rt is not None:
            self.e.rt._issue(op)
        else:
            op()
        return True


class _Network:
    def __init__(self, flags):
        self.flags, self.onnx = flags, None


class _Config:
    def __init__(self):
        self.flags, self.pools, self.profiles = set(), {}, []

    def set_flag(self, flag): self.flags.add(flag)
    def set_memory_pool_limit(self, pool, n): self.pools[pool] = n
    def add_optimization_profile(self, p): self.profiles.append(p)


class _Profile:
    def __init__(self):
        self.shapes = {}

    def set_shape(self, name, lo, opt, hi): self.shapes[name] = [list(lo), list(opt), list(hi)]


def sim_tensorrt(rt: SimCudart | None = None, version: str = "10.3.0", fp16_flag: bool = True):
    """A ``tensorrt`` module stand-in. ``builds`` (a list on the module) records each built plan;
    engines enqueue their work on ``rt``'s stream simulation (None = run at once)."""
    trt = types.SimpleNamespace(**_ENUMS, __version__=version, builds=[])
    trt.Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda self, level=2: None})
    trt.NetworkDefinitionCreationFlag = types.SimpleNamespace(STRONGLY_TYPED=0)
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE="workspace")
    trt.BuilderFlag = types.SimpleNamespace(FP16="fp16") if fp16_flag else types.SimpleNamespace()

    class Builder:
        def __init__(self, logger): pass
        def create_network(self, flags): return _Network(flags)
        def create_builder_config(self): return _Config()
        def create_optimization_profile(self): return _Profile()

        def build_serialized_network(self, network, config):
            plan = dict(onnx=network.onnx, profile=config.profiles[0].shapes, fp16="fp16" in config.flags,
                        strongly_typed=bool(network.flags & 1), workspace=config.pools.get("workspace"))
            trt.builds.append(plan)
            return json.dumps(plan).encode()

    class OnnxParser:
        num_errors = 0

        def __init__(self, network, logger): self.network = network

        def parse_from_file(self, path):
            self.network.onnx = str(path)
            return True

    class Runtime:
        def __init__(self, logger): pass
        def deserialize_cuda_engine(self, plan): return SimOnnxEngine(json.loads(bytes(plan)), rt)

    trt.Builder, trt.OnnxParser, trt.Runtime = Builder, OnnxParser, Runtime
    return trt

"""CUDA through cuda-python (no torch): device buffers, pinned staging, one stream, CUDA graphs.

:class:`CudaDevice` implements the device interface of :mod:`instcolor.trt.memory`. Views are
:class:`CudaArray` objects exposing ``__cuda_array_interface__`` (so ``instcolor.ops`` takes them as
they are) and ``.ptr`` (what TensorRT binds). Host <-> device copies go through one pinned host
mirror per buffer, allocated on first use, so they are truly asynchronous on the stream.
"""
from __future__ import annotations

import ctypes
import re

import numpy as np


def parse_cuda_device(device, who: str) -> int:
    """``"cuda"`` / ``"cuda:N"`` / ``N`` -> the CUDA device index N; ValueError naming ``who``
    (e.g. ``"backend='tensorrt'"``) otherwise. Pure: needs no cuda-python."""
    if isinstance(device, int) and not isinstance(device, bool) and device >= 0:
        return device
    m = re.fullmatch(r"cuda(?::(\d+))?", str(device))
    if m is None:
        raise ValueError(f"{who} runs on a CUDA device ('cuda' or 'cuda:N'), got device={device!r}")
    return int(m.group(1) or 0)


def cudart():
    """cuda-python's runtime module (``cuda.bindings.runtime``, or ``cuda.cudart`` before 12.6)."""
    try:
        from cuda.bindings import runtime
    except ImportError:
        from cuda import cudart as runtime
    return runtime


def check(result, what: str):
    """Unpack a cuda-python ``(cudaError_t, *values)`` result; RuntimeError on an error."""
    if not isinstance(result, tuple):
        result = (result,)
    err, values = result[0], result[1:]
    if int(err) != 0:
        rt = cudart()
        try:
            desc = rt.cudaGetErrorString(err)[1].decode()
        except Exception:  # noqa: BLE001
            desc = ""
        raise RuntimeError(f"{what} failed: {getattr(err, 'name', int(err))} {desc}".rstrip())
    if not values:
        return None
    return values[0] if len(values) == 1 else values


def device_count() -> tuple[int, str]:
    """(number of CUDA devices, '' or why there are none)."""
    try:
        rt = cudart()
    except ImportError as e:
        return 0, f"cuda-python is not installed ({e}); pip install 'instcolor[tensorrt]'"
    try:
        n = check(rt.cudaGetDeviceCount(), "cudaGetDeviceCount")
    except RuntimeError as e:
        return 0, str(e)
    return (int(n), "") if n else (0, "no CUDA device found")


def device_info(index: int = 0) -> tuple[str, tuple[int, int]]:
    """(GPU name, compute capability (major, minor)) of device ``index``."""
    prop = check(cudart().cudaGetDeviceProperties(index), "cudaGetDeviceProperties")
    name = prop.name
    if isinstance(name, (bytes, bytearray)):
        name = bytes(name).split(b"\0", 1)[0].decode(errors="replace")
    return str(name).strip(), (int(prop.major), int(prop.minor))


class DeviceBuffer:
    """One cudaMalloc allocation (+ its pinned host mirror once a copy needed it)."""

    __slots__ = ("ptr", "nbytes", "host_ptr", "host", "busy")

    def __init__(self, ptr: int, nbytes: int):
        self.ptr, self.nbytes = int(ptr), int(nbytes)
        self.host_ptr, self.host, self.busy = 0, None, False


class CudaArray:
    """A C-contiguous typed view of (the start of) a device buffer."""

    __slots__ = ("ptr", "shape", "dtype", "buffer")

    def __init__(self, buffer: DeviceBuffer, shape: tuple[int, ...], dtype):
        self.buffer, self.ptr = buffer, buffer.ptr
        self.shape, self.dtype = tuple(int(s) for s in shape), np.dtype(dtype)

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * self.dtype.itemsize

    @property
    def __cuda_array_interface__(self) -> dict:
        return {"shape": self.shape, "typestr": self.dtype.str, "data": (self.ptr if self.nbytes else 0, False),
                "strides": None, "version": 3}

    def __repr__(self) -> str:
        return f"CudaArray(shape={self.shape}, dtype={self.dtype.name}, ptr=0x{self.ptr:x})"


class CudaDevice:
    """Device ``index`` with one non-blocking stream; frees everything it allocated on :meth:`close`."""

    kind = "cuda"

    def __init__(self, index: int = 0):
        self.rt = rt = cudart()
        self.index = int(index)
        check(rt.cudaSetDevice(self.index), f"cudaSetDevice({self.index})")
        self._stream = check(rt.cudaStreamCreateWithFlags(rt.cudaStreamNonBlocking), "cudaStreamCreateWithFlags")
        self.stream = int(self._stream)
        self.buffers: list[DeviceBuffer] = []
        self.allocated = 0

    # ------------------------------------------------------------------ memory
    def alloc(self, nbytes: int) -> DeviceBuffer:
        nbytes = max(int(nbytes), 1)
        buf = DeviceBuffer(check(self.rt.cudaMalloc(nbytes), f"cudaMalloc({nbytes})"), nbytes)
        self.buffers.append(buf)
        self.allocated += nbytes
        return buf

    def view(self, buffer: DeviceBuffer, shape: tuple[int, ...], dtype) -> CudaArray:
        v = CudaArray(buffer, shape, dtype)
        if v.nbytes > buffer.nbytes:
            raise ValueError(f"view of {v.nbytes} bytes {v.shape} exceeds its buffer ({buffer.nbytes} bytes)")
        return v

    def _mirror(self, buf: DeviceBuffer) -> np.ndarray:
        if buf.host is None:
            buf.host_ptr = int(check(self.rt.cudaMallocHost(buf.nbytes), f"cudaMallocHost({buf.nbytes})"))
            buf.host = np.ctypeslib.as_array((ctypes.c_uint8 * buf.nbytes).from_address(buf.host_ptr))
        elif buf.busy:  # an earlier copy may still read/write the mirror
            self.synchronize()
        return buf.host

    def upload(self, view: CudaArray, host: np.ndarray) -> None:
        buf = view.buffer
        staging = self._mirror(buf)[:view.nbytes].view(view.dtype).reshape(view.shape)
        np.copyto(staging, host, casting="same_kind")
        kind = self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        check(self.rt.cudaMemcpyAsync(view.ptr, buf.host_ptr, view.nbytes, kind, self.stream), "cudaMemcpyAsync H2D")
        buf.busy = True

    def download(self, view: CudaArray) -> np.ndarray:
        buf = view.buffer
        mirror = self._mirror(buf)
        kind = self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        check(self.rt.cudaMemcpyAsync(buf.host_ptr, view.ptr, view.nbytes, kind, self.stream), "cudaMemcpyAsync D2H")
        self.synchronize()
        return np.array(mirror[:view.nbytes].view(view.dtype).reshape(view.shape), dtype=np.float32)

    def fill(self, view: CudaArray, value: float) -> None:
        """One-off (setup) fill: a synchronous copy from pageable memory, no pinned mirror kept."""
        host = np.full(view.shape, value, view.dtype)
        self.synchronize()
        kind = self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        check(self.rt.cudaMemcpy(view.ptr, host.ctypes.data, view.nbytes, kind), "cudaMemcpy H2D")

    def synchronize(self) -> None:
        check(self.rt.cudaStreamSynchronize(self.stream), "cudaStreamSynchronize")
        for b in self.buffers:
            b.busy = False

    # ------------------------------------------------------------------ graphs
    def capture(self, issue) -> "CudaGraph":
        """Capture what ``issue()`` enqueues on the stream into an instantiated graph. The work
        is recorded, not run. On failure the capture is ended and the error raised."""
        rt = self.rt
        check(rt.cudaStreamBeginCapture(self.stream, rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal),
              "cudaStreamBeginCapture")
        try:
            issue()
        except BaseException:
            ended = rt.cudaStreamEndCapture(self.stream)  # leave capture mode; drop the partial graph
            if int(ended[0]) == 0 and len(ended) > 1 and ended[1] is not None:
                rt.cudaGraphDestroy(ended[1])
            raise
        graph = check(rt.cudaStreamEndCapture(self.stream), "cudaStreamEndCapture")
        try:
            exec_ = check(rt.cudaGraphInstantiate(graph, 0), "cudaGraphInstantiate")
        except BaseException:
            rt.cudaGraphDestroy(graph)
            raise
        return CudaGraph(self, graph, exec_)

    # ------------------------------------------------------------------ teardown
    def close(self) -> None:
        rt = getattr(self, "rt", None)
        if rt is None or getattr(self, "stream", None) is None:
            return
        try:
            rt.cudaStreamSynchronize(self.stream)
            for b in self.buffers:
                if b.host_ptr:
                    rt.cudaFreeHost(b.host_ptr)
                rt.cudaFree(b.ptr)
            self.buffers = []
            rt.cudaStreamDestroy(self._stream)
        finally:
            self.stream = None

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001
            pass


class CudaGraph:
    """An instantiated CUDA graph, launched on its device's stream."""

    def __init__(self, device: CudaDevice, graph, exec_):
        self.device, self.graph, self.exec = device, graph, exec_

    def launch(self) -> None:
        check(self.device.rt.cudaGraphLaunch(self.exec, self.device.stream), "cudaGraphLaunch")

    def close(self) -> None:
        if self.exec is not None:
            rt = self.device.rt
            rt.cudaGraphExecDestroy(self.exec)
            rt.cudaGraphDestroy(self.graph)
            self.exec = self.graph = None

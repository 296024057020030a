"""CUDA through cuda-python (no torch): device buffers, pinned staging, one stream, CUDA graphs.

:class:`CudaDevice` implements the device interface of :mod:`instcolor.trt.memory`. Views are
:class:`CudaArray` objects exposing ``__cuda_array_interface__`` (so ``instcolor.ops`` takes them as
they are) and ``.ptr`` (what TensorRT binds). Host <-> device copies go through one pinned host
mirror per buffer, allocated on first use, so they are truly asynchronous on the stream; fills go
the same way (stream-ordered, never a pageable copy on the legacy stream).

Device selection: the current CUDA device is per host thread and anything (another backend, a
detector on another GPU, torch) may change it. Every :class:`CudaDevice` method that allocates,
copies, synchronizes or launches runs inside :meth:`CudaDevice.activate`, which makes the device
current and restores the caller's device afterwards; callers that launch their own work on
``device.stream`` (TensorRT, the fuse kernel) wrap it in the same context manager.
"""
from __future__ import annotations

import contextlib
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


class CudaError(RuntimeError):
    """A CUDA runtime error: ``code`` (int) and ``name`` (e.g. ``'cudaErrorIllegalAddress'``)."""

    def __init__(self, message: str, code: int, name: str):
        super().__init__(message)
        self.code, self.name = int(code), str(name)


#: Stream-capture errors that mean "this work cannot be captured" (the capture is invalidated by an
#: operation that is not permitted while capturing); anything else is a real fault.
CAPTURE_UNSUPPORTED = ("cudaErrorStreamCaptureUnsupported", "cudaErrorStreamCaptureInvalidated")


def check(result, what: str):
    """Unpack a cuda-python ``(cudaError_t, *values)`` result; :class:`CudaError` on an error."""
    if not isinstance(result, tuple):
        result = (result,)
    err, values = result[0], result[1:]
    if int(err) != 0:
        rt = cudart()
        try:
            desc = rt.cudaGetErrorString(err)[1]
            desc = desc.decode() if isinstance(desc, (bytes, bytearray)) else str(desc)
        except Exception:  # noqa: BLE001 -- only the message text; the error itself is raised below
            desc = ""
        name = getattr(err, "name", str(int(err)))
        raise CudaError(f"{what} failed: {name} {desc}".rstrip(), int(err), name)
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


@contextlib.contextmanager
def on_device(index: int, rt=None):
    """Make CUDA device ``index`` the calling thread's current device for the ``with`` block, then
    restore the device that was current before. The selection is per host thread and shared with
    every other CUDA user of the process (torch, other backends), so work for a given device is
    wrapped in this rather than relying on an earlier ``cudaSetDevice``."""
    rt = cudart() if rt is None else rt
    index = int(index)
    prev = int(check(rt.cudaGetDevice(), "cudaGetDevice"))
    if prev == index:
        yield
        return
    check(rt.cudaSetDevice(index), f"cudaSetDevice({index})")
    try:
        yield
    except BaseException:
        rt.cudaSetDevice(prev)  # the error in flight is the one to report
        raise
    check(rt.cudaSetDevice(prev), f"cudaSetDevice({prev}) (restoring the caller's device)")


class SharedScratch:
    """Activation ("device") memory shared by TensorRT execution contexts that never run at the
    same time -- all of them enqueue on one stream, so one engine's kernels finish before the next
    engine's start. :meth:`reserve` the size of every engine first; the first :meth:`acquire`
    allocates the largest. A later, larger request allocates a new block for the contexts bound
    after it (earlier contexts keep theirs)."""

    def __init__(self, device: "CudaDevice"):
        self.device, self.need, self.block = device, 0, None

    def reserve(self, nbytes: int) -> None:
        self.need = max(self.need, int(nbytes))

    def acquire(self, nbytes: int) -> tuple[int, int]:
        """``(device pointer, size)`` of a block of at least ``nbytes`` (and of every reservation)."""
        self.reserve(nbytes)
        if self.block is None or self.block.nbytes < self.need:
            self.block = self.device.alloc(self.need)
        return self.block.ptr, self.block.nbytes


class CaptureUnsupported(Exception):
    """Stream capture of some work is not possible (CUDA said the capture is unsupported or was
    invalidated by an operation not permitted while capturing, or the work itself -- TensorRT's
    enqueue -- refused to run while capturing). ``reason``: what was reported."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class DeviceBuffer:
    """One cudaMalloc allocation on device ``device`` (+ its pinned host mirror once a copy needed it)."""

    __slots__ = ("ptr", "nbytes", "device", "host_ptr", "host", "busy")

    def __init__(self, ptr: int, nbytes: int, device: int = 0):
        self.ptr, self.nbytes, self.device = int(ptr), int(nbytes), int(device)
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
    """Device ``index`` with one non-blocking stream; frees everything it allocated on :meth:`close`.

    Every method runs with this device current (:meth:`activate`), whatever device the calling
    thread had selected, and leaves the caller's selection as it was."""

    kind = "cuda"

    def __init__(self, index: int = 0):
        self.rt = cudart()
        self.index = int(index)
        self.stream = None
        self.buffers: list[DeviceBuffer] = []
        self.allocated = 0
        #: activation memory of the TensorRT contexts that run on this device's stream
        self.scratch = SharedScratch(self)
        with self.activate():
            self._stream = check(self.rt.cudaStreamCreateWithFlags(self.rt.cudaStreamNonBlocking),
                                 "cudaStreamCreateWithFlags")
        self.stream = int(self._stream)

    def activate(self):
        """Context manager: this device is the calling thread's current CUDA device inside the
        ``with`` block; the caller's device is restored after it (:func:`on_device`)."""
        return on_device(self.index, self.rt)

    # ------------------------------------------------------------------ memory
    def alloc(self, nbytes: int) -> DeviceBuffer:
        nbytes = max(int(nbytes), 1)
        with self.activate():
            buf = DeviceBuffer(check(self.rt.cudaMalloc(nbytes), f"cudaMalloc({nbytes})"), nbytes, self.index)
        self.buffers.append(buf)
        self.allocated += nbytes
        return buf

    def view(self, buffer: DeviceBuffer, shape: tuple[int, ...], dtype) -> CudaArray:
        if buffer.device != self.index:
            raise ValueError(f"buffer on cuda:{buffer.device} used on cuda:{self.index}")
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
        """``host`` -> ``view`` (cast to its dtype): staged in the buffer's pinned mirror, copied
        asynchronously on the stream (ordered before any work enqueued after it)."""
        buf = view.buffer
        with self.activate():
            staging = self._mirror(buf)[:view.nbytes].view(view.dtype).reshape(view.shape)
            np.copyto(staging, host, casting="same_kind")
            kind = self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice
            check(self.rt.cudaMemcpyAsync(view.ptr, buf.host_ptr, view.nbytes, kind, self.stream),
                  "cudaMemcpyAsync H2D")
            buf.busy = True

    def download(self, view: CudaArray) -> np.ndarray:
        buf = view.buffer
        with self.activate():
            mirror = self._mirror(buf)
            kind = self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
            check(self.rt.cudaMemcpyAsync(buf.host_ptr, view.ptr, view.nbytes, kind, self.stream),
                  "cudaMemcpyAsync D2H")
            buf.busy = True
            self.synchronize()
        return np.array(mirror[:view.nbytes].view(view.dtype).reshape(view.shape), dtype=np.float32)

    def fill(self, view: CudaArray, value: float) -> None:
        """``view[...] = value``, stream-ordered like :meth:`upload` (through the buffer's pinned
        mirror): work enqueued after it on the stream sees the value. (A ``cudaMemcpy`` from pageable
        memory would go to the legacy stream, which the non-blocking stream does not wait for.)"""
        self.upload(view, np.full(view.shape, value, view.dtype))

    def synchronize(self) -> None:
        with self.activate():
            check(self.rt.cudaStreamSynchronize(self.stream), "cudaStreamSynchronize")
        for b in self.buffers:
            b.busy = False

    # ------------------------------------------------------------------ graphs
    def capture(self, issue) -> "CudaGraph":
        """Capture what ``issue()`` enqueues on the stream into an instantiated graph. The work is
        recorded, not run. ``issue()`` returns False when it could not enqueue (TensorRT's
        ``execute_async_v3`` refuses work it cannot run under capture).

        :class:`CaptureUnsupported` when the work cannot be captured: ``issue()`` returned False, or
        ``cudaStreamEndCapture`` reports one of :data:`CAPTURE_UNSUPPORTED`. Any other error
        (:class:`CudaError`, or what ``issue()`` raised) propagates; the capture is ended first."""
        rt = self.rt
        with self.activate():
            check(rt.cudaStreamBeginCapture(self.stream,
                                            rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal),
                  "cudaStreamBeginCapture")
            try:
                ok = issue()
            except BaseException:
                ended = rt.cudaStreamEndCapture(self.stream)  # leave capture mode; drop the partial graph
                if int(ended[0]) == 0 and len(ended) > 1 and ended[1] is not None:
                    rt.cudaGraphDestroy(ended[1])
                raise
            ended = rt.cudaStreamEndCapture(self.stream)
            err, graph = ended[0], (ended[1] if len(ended) > 1 else None)
            name = getattr(err, "name", str(int(err)))
            if int(err) == 0 and ok is False:
                if graph is not None:
                    rt.cudaGraphDestroy(graph)
                raise CaptureUnsupported("the work refused to enqueue while the stream was capturing")
            if int(err) != 0:
                if name in CAPTURE_UNSUPPORTED:
                    raise CaptureUnsupported(("the work refused to enqueue while the stream was capturing; "
                                              if ok is False else "") + f"cudaStreamEndCapture: {name}")
                check((err,), "cudaStreamEndCapture")
            try:
                exec_ = check(rt.cudaGraphInstantiate(graph, 0), "cudaGraphInstantiate")
            except BaseException:
                rt.cudaGraphDestroy(graph)
                raise
        return CudaGraph(self, graph, exec_)

    # ------------------------------------------------------------------ teardown
    def close(self) -> None:
        """Synchronize, free every buffer and mirror, destroy the stream. A CUDA error of the
        final synchronize is raised after the memory was freed."""
        rt = getattr(self, "rt", None)
        if rt is None or getattr(self, "stream", None) is None:
            return
        try:
            with self.activate():
                err = rt.cudaStreamSynchronize(self.stream)
                for b in self.buffers:
                    if b.host_ptr:
                        rt.cudaFreeHost(b.host_ptr)
                    rt.cudaFree(b.ptr)
                self.buffers = []
                rt.cudaStreamDestroy(self._stream)
        finally:
            self.stream = None
        check(err, "cudaStreamSynchronize (close)")

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001 -- nothing can be reported from a finalizer
            pass


class CudaGraph:
    """An instantiated CUDA graph, launched on its device's stream."""

    def __init__(self, device: CudaDevice, graph, exec_):
        self.device, self.graph, self.exec = device, graph, exec_

    def launch(self) -> None:
        with self.device.activate():
            check(self.device.rt.cudaGraphLaunch(self.exec, self.device.stream), "cudaGraphLaunch")

    def close(self) -> None:
        if self.exec is not None:
            rt = self.device.rt
            rt.cudaGraphExecDestroy(self.exec)
            rt.cudaGraphDestroy(self.graph)
            self.exec = self.graph = None

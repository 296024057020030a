"""Where the TensorRT backend keeps its tensors: the device interface and its host stand-in.

A *device* (duck-typed) offers::

    stream                          int CUDA stream handle the work is issued on (0 on the host)
    alloc(nbytes) -> buffer         one allocation, kept for the device's life
    view(buffer, shape, dtype)      an array over the start of ``buffer`` (C-contiguous)
    upload(view, host)              host numpy -> view (cast to the view's dtype), stream-ordered
    download(view) -> np.ndarray    view -> host float32 (synchronizes)
    fill(view, value)               view[...] = value
    synchronize()
    close()

and optionally (CUDA devices)::

    index                           the CUDA device index
    activate()                      context manager: the device is current inside it (see
                                    :func:`instcolor.trt.cuda.on_device`); the backend and the
                                    engine runner wrap their work in it
    scratch                         a :class:`instcolor.trt.cuda.SharedScratch`: activation memory
                                    shared by the TensorRT contexts that run on ``stream``

:class:`HostDevice` implements it with numpy (tests, and running the backend's orchestration and
buffer code with a host engine runner); :class:`instcolor.trt.cuda.CudaDevice` with cuda-python.
"""
from __future__ import annotations

import numpy as np


class HostDevice:
    """The device interface on host memory: buffers are numpy byte arrays, copies are memcpy."""

    kind = "host"
    stream = 0

    def __init__(self):
        self.allocated = 0

    def alloc(self, nbytes: int) -> np.ndarray:
        self.allocated += int(nbytes)
        # NaN-filled so that a read of never-written memory shows up in results
        return np.full(max(int(nbytes), 1), 0xFF, np.uint8)

    def view(self, buffer: np.ndarray, shape: tuple[int, ...], dtype) -> np.ndarray:
        dtype = np.dtype(dtype)
        nbytes = int(np.prod(shape)) * dtype.itemsize
        if nbytes > buffer.nbytes:
            raise ValueError(f"view of {nbytes} bytes {tuple(shape)} exceeds its buffer ({buffer.nbytes} bytes)")
        return buffer[:nbytes].view(dtype).reshape(shape)

    def upload(self, view: np.ndarray, host: np.ndarray) -> None:
        np.copyto(view, host, casting="same_kind")

    def download(self, view: np.ndarray) -> np.ndarray:
        return np.array(view, dtype=np.float32)

    def fill(self, view: np.ndarray, value: float) -> None:
        view[...] = value

    def synchronize(self) -> None:
        pass

    def close(self) -> None:
        pass

"""Native kernels of instcolor (C++/OpenMP on the host, CUDA on the device).

Every op implements the contract of a reference in this package and matches it:

=====================  =======================================================  ==============================
op                     does                                                     reference
=====================  =======================================================  ==============================
:func:`rgb_to_lab`     RGB -> normalised Lab, optional Pillow-exact resize      ``color.rgb_to_lab`` (+ ``prepare.pil_bilinear_resize``)
:func:`lab_to_rgb`     normalised Lab -> sRGB (official clamping)               ``color.lab_to_rgb``
:func:`roi_crop_resize`  boxes -> normalised L of each S x S crop               ``prepare.prepare`` (crop_L)
:func:`fuse_instances` one fusion blend, on the fly                             ``fuse.fuse_instances_reference``
:func:`compose`        ab + the image's own L -> RGB uint8 at full resolution   ``compose.compose_reference``
:func:`compose_processed`  L + ab -> the S x S uint8 picture                    ``compose.compose_processed_reference``
=====================  =======================================================  ==============================

Array families. Inputs may be numpy arrays (or anything ``numpy.asarray`` accepts), torch tensors
(CPU or CUDA), cupy arrays, or other objects exposing ``__cuda_array_interface__`` / ``__dlpack__``.
The result is of the family and device of the *main* input (the first argument; for
:func:`roi_crop_resize` the image(s)): numpy in -> numpy out, torch in -> torch out on the same
device, cupy in -> cupy out. Other arrays are brought to that device's family; feature-sized arrays
must already live on the main input's device (ValueError otherwise), small index arrays (boxes,
box_info, inst_image) may live anywhere (they are read on the host for validation). Non-contiguous
inputs are made contiguous (a copy). Tensors are detached: the ops are not differentiable.
:func:`fuse_instances` also takes ``out=`` (a preallocated result of the main input's family and
device); with it, bare ``__cuda_array_interface__`` objects are used as they are, without torch or
cupy (what the TensorRT backend does with its cuda-python buffers).

CUDA. Device inputs run the CUDA kernels (when compiled: :func:`cuda_compiled`; usable:
:func:`cuda_available`) on ``stream`` -- an ``int`` handle, a ``torch.cuda.Stream`` or a
``cupy.cuda.Stream`` -- or, by default, on the current stream of the input's library
(``torch.cuda.current_stream(device)`` / ``cupy.cuda.get_current_stream()``). Results are produced
asynchronously on that stream, like any torch/cupy op. Each op is one kernel launch per call
(plus, for roi_crop_resize / rgb_to_lab with ``size`` / fuse_instances, one tiny launch that writes
the host-built tables -- resampling coefficients, boxes -- into a stream-ordered allocation from its
kernel parameters: no host-to-device copy, so a call never waits for the stream, and the ops can
be captured in a CUDA graph).

Validation. Everything (dtype, shape, device, box bounds, box_info consistency) is checked before any
kernel runs, in Python and again in C++; bad arguments raise ``TypeError`` (dtype / kind) or
``ValueError`` (shape, value, device) naming the argument. Empty batches (``M = 0``) return empty
results without launching anything.
"""
from __future__ import annotations

import numbers
import os
import sys
from typing import Any

import numpy as np

# Our OpenMP runtime is not torch's (or ONNX Runtime's): threads that spin after each parallel
# region would compete with theirs for the cores. Passive waiting, unless the user chose otherwise.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
from . import _native  # noqa: E402

__all__ = [
    "MAX_INSTANCES", "set_cpu_threads", "cpu_threads", "cuda_compiled", "cuda_available", "cuda_unavailable_reason",
    "rgb_to_lab", "lab_to_rgb", "roi_crop_resize", "fuse_instances", "compose", "compose_processed",
]

#: Instances per image accepted by :func:`fuse_instances` (the official ``box_num``).
MAX_INSTANCES: int = int(_native.max_instances)


def set_cpu_threads(n: int) -> None:
    """Threads of the CPU kernels started from the calling thread (an OpenMP setting of that thread
    alone: a pipeline stage can run its kernels on one core while the nets use the others)."""
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
        raise ValueError(f"set_cpu_threads: n must be an int >= 1, got {n!r}")
    _native.set_cpu_threads(int(n))


def cpu_threads() -> int:
    """Threads the CPU kernels use when started from the calling thread."""
    return int(_native.cpu_threads())


def cuda_compiled() -> bool:
    """True when the CUDA kernels were compiled into ``instcolor._native``."""
    return bool(_native.cuda_compiled)


def cuda_available() -> bool:
    """True when the CUDA kernels are compiled and a GPU is usable (``cudaGetDeviceCount`` > 0).
    Never raises (a missing driver or GPU just gives False)."""
    return cuda_compiled() and _native.cuda_device_count() > 0


def cuda_unavailable_reason() -> str:
    """Why :func:`cuda_available` is False ('' when it is True)."""
    if not cuda_compiled():
        return "instcolor._native was built without CUDA kernels (INSTCOLOR_CUDA=OFF or no CUDA toolkit)"
    return _native.cuda_device_count_error()


# ============================================================================ array families
class _Family:
    """Where the main input lives and how to allocate results like it."""

    __slots__ = ("kind", "cuda", "device", "ref")

    def __init__(self, kind: str, cuda: bool, device=None, ref=None):
        self.kind = kind      # "numpy" | "torch" | "cupy"
        self.cuda = cuda
        self.device = device  # torch.device / cupy device id
        self.ref = ref

    def where(self) -> str:
        return f"cuda:{self._index()}" if self.cuda else "cpu"

    def _index(self):
        if self.kind == "torch":
            return self.device.index if self.device.index is not None else 0
        return self.device if self.device is not None else 0


def _torch():
    return sys.modules.get("torch")


def _is_torch(x) -> bool:
    t = _torch()
    return t is not None and isinstance(x, t.Tensor)


def _is_cupy(x) -> bool:
    return type(x).__module__.split(".")[0] == "cupy"


def _where(x) -> str:
    if _is_torch(x):
        return str(x.device)
    if _is_cupy(x):
        return f"cuda:{x.device.id}"
    if hasattr(x, "__cuda_array_interface__"):
        return "cuda"
    return "cpu"


def _adopt_dlpack(x):
    """Objects only speaking DLPack: host -> numpy, CUDA -> torch (zero copy)."""
    if not (hasattr(x, "__dlpack__") and hasattr(x, "__dlpack_device__")):
        return x
    if isinstance(x, np.ndarray) or _is_torch(x) or _is_cupy(x) or hasattr(x, "__cuda_array_interface__"):
        return x
    dev_type = int(x.__dlpack_device__()[0])
    if dev_type in (1, 3):  # kDLCPU, kDLCUDAHost
        return np.from_dlpack(x)
    if dev_type in (2, 13):  # kDLCUDA, kDLCUDAManaged
        import torch

        return torch.utils.dlpack.from_dlpack(x)
    raise ValueError(f"unsupported DLPack device type {dev_type}")


def _family(x, name: str) -> tuple[_Family, Any]:
    """Family of the main input, and the input normalised (dlpack adopted, lists -> numpy)."""
    x = _adopt_dlpack(x)
    if _is_torch(x):
        return _Family("torch", x.is_cuda, x.device, x), x
    if _is_cupy(x):
        return _Family("cupy", True, x.device.id, x), x
    if hasattr(x, "__cuda_array_interface__"):
        try:
            import cupy
        except ImportError:
            cupy = None
        try:
            if cupy is not None:
                x = cupy.asarray(x)
                return _Family("cupy", True, x.device.id, x), x
            import torch

            x = torch.as_tensor(x, device="cuda")
        except Exception as e:  # noqa: BLE001 - a malformed interface, or no CUDA-capable torch/cupy here
            raise ValueError(f"{name}: cannot use this __cuda_array_interface__ object ({type(x).__name__}; "
                             f"needs cupy or a CUDA build of torch): {type(e).__name__}: {e}") from None
        return _Family("torch", True, x.device, x), x
    if isinstance(x, (str, bytes)) or x is None:
        raise TypeError(f"{name}: expected an array, got {type(x).__name__}")
    try:
        x = np.asarray(x)
    except Exception as e:  # noqa: BLE001
        raise TypeError(f"{name}: cannot be converted to an array ({type(x).__name__}): {e}") from None
    if x.dtype == object:
        raise TypeError(f"{name}: expected a numeric array, got an object array")
    return _Family("numpy", False), x


def _as_array(x, name: str):
    """A secondary argument as-is when it is an array of any family, else ``numpy.asarray(x)``;
    TypeError naming the argument when it cannot be converted (ragged lists, ...)."""
    x = _adopt_dlpack(x)
    if _is_torch(x) or _is_cupy(x) or hasattr(x, "__cuda_array_interface__") or isinstance(x, np.ndarray):
        return x
    if isinstance(x, (str, bytes)) or x is None:
        raise TypeError(f"{name}: expected an array, got {type(x).__name__}")
    try:
        return np.asarray(x)
    except Exception as e:  # noqa: BLE001
        raise TypeError(f"{name}: cannot be converted to an array ({type(x).__name__}): {e}") from None


def _np_dtype(x) -> np.dtype:
    """numpy dtype of any supported array (torch dtypes mapped by name)."""
    if _is_torch(x):
        t = _torch()
        if x.dtype == t.bfloat16:
            return np.dtype("V2")  # not supported anywhere; reported by the callers
        if x.dtype == t.bool:
            return np.dtype(bool)
        return np.dtype(str(x.dtype).replace("torch.", ""))
    return np.dtype(x.dtype)


def _dtype_name(x) -> str:
    return str(x.dtype).replace("torch.", "")


def _contig(x, fam: _Family, name: str, dtype: np.dtype | None = None):
    """``x`` as a C-contiguous array of the main input's family/device (optionally cast)."""
    x = _adopt_dlpack(x)
    if fam.cuda:
        if _is_torch(x):
            if not x.is_cuda:
                raise ValueError(f"{name} is on {x.device} but the main input is on {fam.where()}")
            x = x.detach()
            if dtype is not None and _np_dtype(x) != dtype:
                x = x.to(getattr(_torch(), dtype.name))
            return x.contiguous()
        if _is_cupy(x) or hasattr(x, "__cuda_array_interface__"):
            import cupy

            x = cupy.asarray(x)
            if dtype is not None and x.dtype != dtype:
                x = x.astype(dtype)
            return cupy.ascontiguousarray(x)
        raise ValueError(f"{name} is a host ({type(x).__name__}) array but the main input is on {fam.where()}")
    # host
    if _is_torch(x):
        if x.is_cuda:
            raise ValueError(f"{name} is on {x.device} but the main input is on the CPU")
        x = x.detach()
        if x.dtype == _torch().bfloat16:
            raise TypeError(f"{name}: bfloat16 is not supported")
        x = x.contiguous().numpy()
    elif _is_cupy(x) or hasattr(x, "__cuda_array_interface__"):
        raise ValueError(f"{name} is a CUDA array but the main input is on the CPU")
    else:
        x = np.asarray(x)
    if dtype is not None and x.dtype != dtype:
        x = x.astype(dtype)
    return np.ascontiguousarray(x)


def _host_numpy(x, name: str) -> np.ndarray:
    """Small index arrays: bring to a host numpy array from any family."""
    x = _adopt_dlpack(x)
    if _is_torch(x):
        if x.dtype == _torch().bfloat16:
            x = x.float()
        return x.detach().cpu().numpy()
    if _is_cupy(x):
        return x.get()
    if hasattr(x, "__cuda_array_interface__"):
        try:
            try:
                import cupy
            except ImportError:
                import torch

                return torch.as_tensor(x, device="cuda").cpu().numpy()
            return cupy.asarray(x).get()
        except Exception as e:  # noqa: BLE001 - a malformed interface, or no CUDA-capable torch/cupy here
            raise ValueError(f"{name}: cannot read this __cuda_array_interface__ object ({type(x).__name__}): "
                             f"{type(e).__name__}: {e}") from None
    try:
        a = np.asarray(x)
    except Exception as e:  # noqa: BLE001
        raise TypeError(f"{name}: cannot be converted to an array ({type(x).__name__}): {e}") from None
    if a.dtype == object:
        raise TypeError(f"{name}: expected a numeric array")
    return a


def _empty(fam: _Family, shape: tuple[int, ...], dtype: str):
    """(result in the family, the array handed to the native op)."""
    if fam.kind == "torch":
        t = _torch()
        out = t.empty(shape, dtype=getattr(t, dtype), device=fam.device)
        return out, (out if fam.cuda else out.numpy())
    if fam.kind == "cupy":
        import cupy

        with cupy.cuda.Device(fam.device):
            out = cupy.empty(shape, dtype=dtype)
        return out, out
    out = np.empty(shape, dtype=dtype)
    return out, out


def _stream_handle(fam: _Family, stream) -> int:
    if not fam.cuda:
        return 0
    if stream is not None:
        if isinstance(stream, numbers.Integral):
            return int(stream)
        for attr in ("cuda_stream", "ptr", "handle"):
            if hasattr(stream, attr):
                return int(getattr(stream, attr))
        raise TypeError(f"stream: expected an int handle, torch.cuda.Stream or cupy.cuda.Stream, got {type(stream).__name__}")
    if fam.kind == "torch":
        return int(_torch().cuda.current_stream(fam.device).cuda_stream)
    if fam.kind == "cupy":
        import cupy

        with cupy.cuda.Device(fam.device):
            return int(cupy.cuda.get_current_stream().ptr)
    return 0


def _check_cuda(fam: _Family, op: str):
    if fam.cuda and not cuda_compiled():
        raise ValueError(f"{op}: the input is a CUDA array but {cuda_unavailable_reason()}")


def _check_size(size, name: str = "size") -> int:
    if isinstance(size, bool) or not isinstance(size, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(size).__name__}")
    if size < 1 or size > 65536:
        raise ValueError(f"{name} must be in 1..65536, got {size}")
    return int(size)


def _require_float(x, name: str, allow_half: bool = False):
    dt = _np_dtype(x)
    if dt.kind != "f" or (dt.itemsize == 2 and not allow_half):
        extra = " or float16" if allow_half else ""
        raise TypeError(f"{name} must be a floating array (float32{extra}), got {_dtype_name(x)}")


def _shape(x) -> tuple[int, ...]:
    return tuple(int(s) for s in x.shape)


# ============================================================================ colour
def _planar_f32(kernel, fam: _Family, x, name: str, stream):
    """Run a per-pixel (N, 3, H, W) float32 -> (N, 3, H, W) float32 kernel on (3, H, W) or
    (N, 3, H, W) input (shape already checked); empty input launches nothing."""
    batched = len(_shape(x)) == 4
    x = _contig(x, fam, name, np.dtype(np.float32))
    if not batched:
        x = x[None]
    res, out = _empty(fam, _shape(x), "float32")
    if int(np.prod(_shape(x))):
        kernel(x, out, _stream_handle(fam, stream))
    return res if batched else res[0]


def rgb_to_lab(rgb, size: int | None = None, *, stream=None):
    """RGB -> normalised Lab ``(3, S, S)`` float32: ch0 = (L - 50) / 100, ch1-2 = ab / 110.

    ``rgb``: ``(H, W, 3)`` uint8, or ``(3, H, W)`` float in [0, 1] (float64/16 are cast to float32);
    a leading batch dimension (``(N, H, W, 3)`` / ``(N, 3, H, W)``) gives ``(N, 3, S, S)``.
    ``size`` (uint8 only): first resample to ``size x size`` exactly like Pillow 7-11 BILINEAR
    (== ``prepare.pil_bilinear_resize``, bit-exact uint8), then convert (x / 255). Without ``size``
    the output has the input's H x W. Conversion: the official rgb2lab in float32.
    """
    fam, rgb = _family(rgb, "rgb")
    _check_cuda(fam, "rgb_to_lab")
    dt = _np_dtype(rgb)
    shape = _shape(rgb)
    if dt == np.uint8:
        if len(shape) not in (3, 4) or shape[-1] != 3:
            raise ValueError(f"rgb: uint8 input must have shape (H, W, 3) or (N, H, W, 3), got {shape}")
        if shape[-3] < 1 or shape[-2] < 1:
            raise ValueError(f"rgb: empty image, shape {shape}")
        s = 0 if size is None else _check_size(size)
        x = _contig(rgb, fam, "rgb")
        batched = len(shape) == 4
        if not batched:
            x = x[None]
        n, h, w = _shape(x)[:3]
        oh, ow = (s, s) if s else (h, w)
        res, out = _empty(fam, (n, 3, oh, ow), "float32")
        if n:
            _native.rgb_to_lab_u8(x, s, out, _stream_handle(fam, stream))
        return res if batched else res[0]
    if dt.kind != "f":
        raise TypeError(f"rgb must be uint8 (H, W, 3) or float (3, H, W), got {_dtype_name(rgb)}")
    if size is not None:
        raise ValueError("rgb_to_lab: size is only supported for uint8 input (resampling is defined on 8-bit images)")
    if len(shape) not in (3, 4) or shape[-3] != 3:
        raise ValueError(f"rgb: float input must have shape (3, H, W) or (N, 3, H, W), got {shape}")
    return _planar_f32(_native.rgb_to_lab_f32, fam, rgb, "rgb", stream)


def lab_to_rgb(lab, *, stream=None):
    """Normalised Lab ``(3, H, W)`` (or ``(N, 3, H, W)``) float -> sRGB float32, the official lab2rgb:
    only fz clamped at 0, linear RGB clamped at 0, no upper clamp."""
    fam, lab = _family(lab, "lab")
    _check_cuda(fam, "lab_to_rgb")
    _require_float(lab, "lab")
    shape = _shape(lab)
    if len(shape) not in (3, 4) or shape[-3] != 3:
        raise ValueError(f"lab must have shape (3, H, W) or (N, 3, H, W), got {shape}")
    return _planar_f32(_native.lab_to_rgb, fam, lab, "lab", stream)


# ============================================================================ crops
def _boxes_array(boxes, name: str = "boxes") -> np.ndarray:
    b = _host_numpy(boxes, name)
    if b.dtype.kind not in "iuf":
        raise TypeError(f"{name} must be a numeric (M, 4) array, got dtype {b.dtype}")
    if b.size == 0 and (b.ndim == 1 or b.shape == (0, 4)):  # [] or (0, 4): no boxes; (3, 0) is an error
        b = b.reshape(0, 4)
    if b.ndim != 2 or b.shape[1] != 4:
        raise ValueError(f"{name} must have shape (M, 4) xyxy, got {tuple(b.shape)}")
    return np.ascontiguousarray(b, dtype=np.float64)


def _index_array(x, m: int, name: str, default_zero: bool, what: str) -> np.ndarray:
    if x is None:
        if not default_zero:
            raise ValueError(f"{name} is required {what}")
        return np.zeros(m, np.int64)
    a = _host_numpy(x, name)
    if a.shape == (0,) and m == 0:  # e.g. [] (float64 by default)
        return np.zeros(0, np.int64)
    if a.dtype.kind not in "iu":
        raise TypeError(f"{name} must be an integer array, got dtype {a.dtype}")
    a = a.reshape(-1) if a.ndim == 0 or (a.ndim == 1) else a
    if a.ndim != 1 or a.shape[0] != m:
        raise ValueError(f"{name} must have shape ({m},) (one entry per box), got {tuple(a.shape)}")
    return np.ascontiguousarray(a, dtype=np.int64)


def roi_crop_resize(image, boxes, size: int, *, box_image=None, stream=None):
    """Normalised L of each box's crop, resampled to ``size x size``: ``(M, 1, S, S)`` float32.

    ``image``: one ``(H, W, 3)`` uint8 image, a batch ``(N, H, W, 3)``, or a list/tuple of
    ``(H_k, W_k, 3)`` images of any sizes (all in one family/device). ``boxes``: ``(M, 4)`` xyxy in
    input pixels (any numeric dtype, any device), truncated toward zero like the official int cast;
    each crop ``[x0, x1) x [y0, y1)`` is cut from the ORIGINAL image and resampled exactly like
    ``rgb_to_lab(crop, size)`` (Pillow BILINEAR, bit-exact uint8). ``box_image``: ``(M,)`` image index
    of every box -- required with several images, defaults to 0 with one. A box that is empty after
    truncation, lies (partly) outside its image or has a NaN/inf coordinate raises ValueError.
    ``M = 0`` returns an empty ``(0, 1, S, S)`` array.
    """
    size = _check_size(size)
    if isinstance(image, (list, tuple)):
        if len(image) == 0:
            raise ValueError("image: empty list of images")
        fam, first = _family(image[0], "image[0]")
        imgs = [first] + list(image[1:])
    else:
        fam, first = _family(image, "image")
        imgs = None
    _check_cuda(fam, "roi_crop_resize")
    views = []
    if imgs is None:
        dt, shape = _np_dtype(first), _shape(first)
        if dt != np.uint8:
            raise TypeError(f"image must be uint8, got {_dtype_name(first)}")
        if len(shape) not in (3, 4) or shape[-1] != 3:
            raise ValueError(f"image must have shape (H, W, 3) or (N, H, W, 3), got {shape}")
        x = _contig(first, fam, "image")
        views = list(x) if len(shape) == 4 else [x]
        if not views:
            raise ValueError("image: empty batch of images")
    else:
        for k, im in enumerate(imgs):
            name = f"image[{k}]"
            x = _contig(im, fam, name)
            if _np_dtype(x) != np.uint8:
                raise TypeError(f"{name} must be uint8, got {_dtype_name(x)}")
            if x.ndim != 3 or x.shape[2] != 3:
                raise ValueError(f"{name} must have shape (H, W, 3), got {_shape(x)}")
            views.append(x)
    for k, v in enumerate(views):
        if v.shape[0] < 1 or v.shape[1] < 1:
            raise ValueError(f"image[{k}] is empty, shape {_shape(v)}")
    b = _boxes_array(boxes)
    m = b.shape[0]
    bi = _index_array(box_image, m, "box_image", default_zero=len(views) == 1, what="when several images are given")
    _check_boxes(b, bi, [(int(v.shape[0]), int(v.shape[1])) for v in views])
    res, out = _empty(fam, (m, 1, size, size), "float32")
    if m:
        _native.roi_crop_resize(views, b, bi, size, out, _stream_handle(fam, stream))
    return res


def _check_boxes(b: np.ndarray, bi: np.ndarray, hw: list[tuple[int, int]]):
    """Python-side box validation (the C++ side repeats it); messages name the box."""
    for i in range(b.shape[0]):
        c = b[i]
        if not np.isfinite(c).all():
            raise ValueError(f"boxes[{i}] = {c.tolist()} has a NaN or infinite coordinate")
        k = int(bi[i])
        if k < 0 or k >= len(hw):
            raise ValueError(f"box_image[{i}] = {k} is not a valid image index ({len(hw)} images)")
        x0, y0, x1, y1 = (float(np.trunc(v)) for v in c)
        if x1 <= x0 or y1 <= y0:
            raise ValueError(f"boxes[{i}] = {c.tolist()} has zero or negative area after int truncation "
                             f"({int(x0)}, {int(y0)}, {int(x1)}, {int(y1)})")
        h, w = hw[k]
        if x0 < 0 or y0 < 0 or x1 > w or y1 > h:
            raise ValueError(f"boxes[{i}] = ({int(x0)}, {int(y0)}, {int(x1)}, {int(y1)}) (truncated) lies outside "
                             f"the {w}x{h} image {k}")


# ============================================================================ fusion
def _is_plain_cuda(x) -> bool:
    """An object exposing ``__cuda_array_interface__`` that is neither a torch tensor nor a cupy array."""
    return hasattr(x, "__cuda_array_interface__") and not _is_torch(x) and not _is_cupy(x)


def _cai_meta(x, name: str) -> tuple[tuple[int, ...], np.dtype]:
    """(shape, dtype) of an object's ``__cuda_array_interface__``; ValueError unless C-contiguous."""
    if not hasattr(x, "__cuda_array_interface__"):
        raise ValueError(f"{name} is a host ({type(x).__name__}) array but bg_feat is a CUDA array")
    cai = x.__cuda_array_interface__
    shape = tuple(int(s) for s in cai["shape"])
    try:
        dt = np.dtype(cai["typestr"])
    except TypeError:
        raise TypeError(f"{name}: unsupported __cuda_array_interface__ typestr {cai['typestr']!r}") from None
    strides = cai.get("strides")
    if strides is not None:
        want, step = [], dt.itemsize
        for d in reversed(shape):
            want.append(step)
            step *= d
        if any(d > 1 and int(s) != w for d, s, w in zip(shape, strides, reversed(want))):
            raise ValueError(f"{name} must be C-contiguous (a device array given with out= is used as it is)")
    return shape, dt


def _fuse_check_shapes(shapes: dict, B: int, C: int, H: int, W: int) -> tuple[int, int, int]:
    if shapes["bg_logit"] != (B, 1, H, W):
        raise ValueError(f"bg_logit must have shape {(B, 1, H, W)}, got {shapes['bg_logit']}")
    fi = shapes["inst_feat"]
    if len(fi) != 4 or fi[1] != C:
        raise ValueError(f"inst_feat must have shape (M, {C}, h, w), got {fi}")
    M, _, h, w = fi
    if shapes["inst_logit"] != (M, 1, h, w):
        raise ValueError(f"inst_logit must have shape {(M, 1, h, w)} (matching inst_feat), got {shapes['inst_logit']}")
    return M, h, w


def _fuse_tables(box_info, inst_image, B: int, H: int, W: int, M: int) -> tuple[np.ndarray, np.ndarray]:
    """Validated host copies of box_info (M, 6) and inst_image (M,), both int64."""
    info = _host_numpy(box_info, "box_info")
    if M == 0 and (info.shape == (0,) or (info.shape == (0, 6) and info.dtype.kind == "f")):  # e.g. []
        info = np.zeros((0, 6), np.int64)
    if info.dtype.kind not in "iu":
        raise TypeError(f"box_info must be an integer array, got dtype {info.dtype}")
    if info.ndim != 2 or info.shape != (M, 6):
        raise ValueError(f"box_info must have shape ({M}, 6) (one row per instance), got {tuple(info.shape)}")
    info = np.ascontiguousarray(info, dtype=np.int64)
    img = _index_array(inst_image, M, "inst_image", default_zero=B == 1, what="when B > 1")
    for i, (left, right, top, bottom, width, height) in enumerate(info.tolist()):
        if (width < 1 or height < 1 or min(left, right, top, bottom) < 0 or left + width + right != W
                or top + height + bottom != H):
            raise ValueError(f"box_info[{i}] = {[left, right, top, bottom, width, height]} does not describe a "
                             f"non-empty box inside the {W}x{H} map")
        if not 0 <= img[i] < B:
            raise ValueError(f"inst_image[{i}] = {int(img[i])} is not a valid image index (B = {B})")
    if M:
        counts = np.bincount(img, minlength=B)
        if counts.max() > MAX_INSTANCES:
            raise ValueError(f"inst_image: image {int(counts.argmax())} has {int(counts.max())} instances, "
                             f"at most {MAX_INSTANCES} per image are supported")
    return info, img


def _check_out(out, fam: _Family, shape: tuple[int, ...], dtype: np.dtype):
    """Validate a caller-provided result array: (result to return, array handed to the native op)."""
    want = f"a C-contiguous {dtype.name} array of shape {shape}"
    if fam.kind == "torch":
        if not _is_torch(out):
            raise TypeError(f"out must be a torch tensor like bg_feat, got {type(out).__name__}")
        if out.device != fam.device:
            raise ValueError(f"out is on {out.device} but bg_feat is on {fam.device}")
    elif fam.kind == "cupy":
        if not _is_cupy(out):
            raise TypeError(f"out must be a cupy array like bg_feat, got {type(out).__name__}")
        if out.device.id != fam.device:
            raise ValueError(f"out is on cuda:{out.device.id} but bg_feat is on cuda:{fam.device}")
    elif not isinstance(out, np.ndarray):
        raise TypeError(f"out must be a numpy array like bg_feat, got {type(out).__name__}")
    if _np_dtype(out) != dtype:
        raise TypeError(f"out must be {want}, got dtype {_dtype_name(out)}")
    if _shape(out) != shape:
        raise ValueError(f"out must be {want}, got shape {_shape(out)}")
    if fam.kind == "torch":
        if not out.is_contiguous():
            raise ValueError(f"out must be {want}; it is not contiguous")
        d = out.detach()
        return out, (d if fam.cuda else d.numpy())
    if not out.flags.c_contiguous:
        raise ValueError(f"out must be {want}; it is not C-contiguous")
    if fam.kind == "numpy" and not out.flags.writeable:
        raise ValueError("out is read-only")
    return out, out


def _fuse_plain_cuda(bg_feat, bg_logit, inst_feat, inst_logit, box_info, inst_image, stream, out):
    """fuse_instances on bare ``__cuda_array_interface__`` objects with a given ``out``: no torch or
    cupy involved, the arrays go to the kernel as they are (so they must be C-contiguous)."""
    fam = _Family("cuda", True)
    _check_cuda(fam, "fuse_instances")
    arrays = dict(bg_feat=bg_feat, bg_logit=bg_logit, inst_feat=inst_feat, inst_logit=inst_logit, out=out)
    meta = {name: _cai_meta(a, name) for name, a in arrays.items()}
    dt = meta["bg_feat"][1]
    if dt not in (np.float32, np.float16):
        raise TypeError(f"bg_feat must be float32 or float16, got {dt.name}")
    for name in ("bg_logit", "inst_feat", "inst_logit", "out"):
        if meta[name][1] != dt:
            raise TypeError(f"{name} is {meta[name][1].name} but bg_feat is {dt.name} "
                            "(features, logits and out must share one dtype)")
    shapes = {name: m[0] for name, m in meta.items()}
    if len(shapes["bg_feat"]) != 4:
        raise ValueError(f"bg_feat must have shape (B, C, H, W), got {shapes['bg_feat']}")
    B, C, H, W = shapes["bg_feat"]
    M, _, _ = _fuse_check_shapes(shapes, B, C, H, W)
    if shapes["out"] != (B, C, H, W):
        raise ValueError(f"out must have shape {(B, C, H, W)} like bg_feat, got {shapes['out']}")
    info, img = _fuse_tables(box_info, inst_image, B, H, W, M)
    if B * C * H * W:
        _native.fuse_instances(bg_feat, bg_logit, inst_feat, inst_logit, info, img, out, _stream_handle(fam, stream))
    return out


def fuse_instances(bg_feat, bg_logit, inst_feat, inst_logit, box_info, inst_image=None, *, stream=None, out=None):
    """One instance-fusion blend, ``fuse.fuse_instances_reference`` semantics, computed per output
    pixel without building the padded ``(M, C, H, W)`` tensors.

    ``bg_feat (B, C, H, W)``, ``bg_logit (B, 1, H, W)``, ``inst_feat (M, C, h, w)``,
    ``inst_logit (M, 1, h, w)``: float32 (host or CUDA) or float16 (CUDA only), one dtype, on the
    device of ``bg_feat``. ``box_info (M, 6)`` integer rows [left, right, top, bottom pad, width,
    height] at this level (``left + width + right == W``, ``top + height + bottom == H``);
    ``inst_image (M,)`` image index of each instance (default: all 0, only when B == 1); at most
    :data:`MAX_INSTANCES` instances per image, 0 allowed (that image's output equals ``bg_feat``).
    Returns ``(B, C, H, W)`` of ``bg_feat``'s dtype/family/device.

    ``out``: write the result into this preallocated ``(B, C, H, W)`` array and return it; it must
    be C-contiguous, of ``bg_feat``'s dtype, family and device, and must not overlap the inputs.
    With ``out``, bare ``__cuda_array_interface__`` objects (neither torch nor cupy, e.g. views of
    buffers from cuda-python) are passed to the kernel as they are -- no torch or cupy needed --
    provided every feature array is C-contiguous device memory (ValueError otherwise).
    """
    if out is not None and _is_plain_cuda(bg_feat):
        return _fuse_plain_cuda(bg_feat, bg_logit, inst_feat, inst_logit, box_info, inst_image, stream, out)
    fam, bg_feat = _family(bg_feat, "bg_feat")
    _check_cuda(fam, "fuse_instances")
    _require_float(bg_feat, "bg_feat", allow_half=True)
    dt = _np_dtype(bg_feat)
    if dt not in (np.float32, np.float16):
        raise TypeError(f"bg_feat must be float32 (or float16 on CUDA), got {_dtype_name(bg_feat)}")
    if dt == np.float16 and not fam.cuda:
        raise TypeError("bg_feat: float16 fusion is only implemented on CUDA; use float32 on the host")
    arrays = {"bg_logit": bg_logit, "inst_feat": inst_feat, "inst_logit": inst_logit}
    for name, a in arrays.items():
        a = _as_array(a, name)
        if _np_dtype(a) != dt:
            raise TypeError(f"{name} is {_dtype_name(a)} but bg_feat is {_dtype_name(bg_feat)} "
                            "(features and logits must share one dtype)")
        arrays[name] = a
    f = _contig(bg_feat, fam, "bg_feat")
    bl = _contig(arrays["bg_logit"], fam, "bg_logit")
    fi = _contig(arrays["inst_feat"], fam, "inst_feat")
    li = _contig(arrays["inst_logit"], fam, "inst_logit")
    if f.ndim != 4:
        raise ValueError(f"bg_feat must have shape (B, C, H, W), got {_shape(f)}")
    B, C, H, W = _shape(f)
    M, _, _ = _fuse_check_shapes(dict(bg_logit=_shape(bl), inst_feat=_shape(fi), inst_logit=_shape(li)), B, C, H, W)
    info, img = _fuse_tables(box_info, inst_image, B, H, W, M)
    if out is None:
        res, dst = _empty(fam, (B, C, H, W), "float16" if dt == np.float16 else "float32")
    else:
        res, dst = _check_out(out, fam, (B, C, H, W), np.dtype(dt))
    if B * C * H * W:
        _native.fuse_instances(f, bl, fi, li, info, img, dst, _stream_handle(fam, stream))
    return res


class PresampledInstances:
    """Instance features and blend logits of one fusion level already resampled to their boxes
    (:func:`fuse_sample_instances`), for :func:`fuse_instances_presampled`. ``samples`` (sum_i C *
    height_i * width_i,) and ``logit_samples`` (sum_i height_i * width_i,) float32, instance blocks in
    index order; ``box_info`` (M, 6) int64, ``C``, ``H``, ``W``: what they were sampled for."""

    __slots__ = ("samples", "logit_samples", "box_info", "C", "H", "W")

    def __init__(self, samples: np.ndarray, logit_samples: np.ndarray, box_info: np.ndarray, C: int, H: int, W: int):
        self.samples, self.logit_samples, self.box_info = samples, logit_samples, box_info
        self.C, self.H, self.W = int(C), int(H), int(W)

    @property
    def nbytes(self) -> int:
        return int(self.samples.nbytes + self.logit_samples.nbytes + self.box_info.nbytes)


def _host_float32(x, name: str) -> np.ndarray:
    a = _host_numpy(x, name)
    if a.dtype != np.float32:
        raise TypeError(f"{name} must be float32, got {a.dtype}")
    return a


def fuse_sample_instances(inst_feat, inst_logit, box_info, H: int, W: int) -> PresampledInstances:
    """``inst_feat (M, C, h, w)`` and ``inst_logit (M, 1, h, w)`` float32 (host) resampled to the boxes
    of ``box_info (M, 6)`` on an ``H x W`` map, exactly as :func:`fuse_instances` samples them
    (at most :data:`MAX_INSTANCES`). An edit session that blends the same instances at every edit
    samples them once and then calls :func:`fuse_instances_presampled`. CPU only."""
    fi, li = _host_float32(inst_feat, "inst_feat"), _host_float32(inst_logit, "inst_logit")
    if fi.ndim != 4:
        raise ValueError(f"inst_feat must have shape (M, C, h, w), got {fi.shape}")
    M, C, h, w = fi.shape
    if li.shape != (M, 1, h, w):
        raise ValueError(f"inst_logit must have shape {(M, 1, h, w)} (matching inst_feat), got {li.shape}")
    H, W = _check_size(H, "H"), _check_size(W, "W")
    info, _ = _fuse_tables(box_info, None, 1, H, W, M)
    area = info[:, 4] * info[:, 5]
    samples = np.empty(int(C * area.sum()), np.float32)
    logit_samples = np.empty(int(area.sum()), np.float32)
    _native.fuse_sample_instances(np.ascontiguousarray(fi), np.ascontiguousarray(li), info, H, W, samples,
                                  logit_samples)
    return PresampledInstances(samples, logit_samples, info, C, H, W)


def fuse_instances_presampled(bg_feat, bg_logit, presampled: PresampledInstances, inst_image=None, *, out=None):
    """:func:`fuse_instances` with the instances of ``presampled`` (:func:`fuse_sample_instances`):
    the same result bit for bit, without resampling the crops. ``bg_feat (B, C, H, W)``,
    ``bg_logit (B, 1, H, W)`` host float32 numpy; ``inst_image`` as for fuse_instances. CPU only."""
    if not isinstance(presampled, PresampledInstances):
        raise TypeError(f"presampled must come from fuse_sample_instances, got {type(presampled).__name__}")
    f, bl = _host_float32(bg_feat, "bg_feat"), _host_float32(bg_logit, "bg_logit")
    if f.ndim != 4:
        raise ValueError(f"bg_feat must have shape (B, C, H, W), got {f.shape}")
    B, C, H, W = f.shape
    if (C, H, W) != (presampled.C, presampled.H, presampled.W):
        raise ValueError(f"bg_feat: shape {f.shape} does not match the presampled instances (C, H, W) = "
                         f"{(presampled.C, presampled.H, presampled.W)}")
    if bl.shape != (B, 1, H, W):
        raise ValueError(f"bg_logit must have shape {(B, 1, H, W)}, got {bl.shape}")
    M = len(presampled.box_info)
    _, img = _fuse_tables(presampled.box_info, inst_image, B, H, W, M)
    fam = _Family("numpy", False)
    res, dst = (_empty(fam, (B, C, H, W), "float32") if out is None
                else _check_out(out, fam, (B, C, H, W), np.dtype(np.float32)))
    if B * C * H * W:
        _native.fuse_instances_presampled(np.ascontiguousarray(f), np.ascontiguousarray(bl), presampled.samples,
                                          presampled.logit_samples, presampled.box_info, img, dst)
    return res


# ============================================================================ output
def _squeeze_lead(x, want_ndim: int, name: str, layout: str):
    shape = _shape(x)
    while len(shape) > want_ndim and shape[0] == 1:
        x = x[0]
        shape = shape[1:]
    if len(shape) != want_ndim:
        raise ValueError(f"{name} must have shape {layout}, got {_shape(x)}")
    return x


def compose(image, ab, *, stream=None):
    """Full-resolution output ``(H, W, 3)`` uint8: ``ab`` ``(2, S, S)`` (or ``(1, 2, S, S)``) normalised
    float is bilinearly upsampled (align_corners=False) to the image size, joined with the L of
    ``image`` ``(H, W, 3)`` uint8, converted with lab_to_rgb, clamped to [0, 1] and rounded
    (x * 255, half to even). Same contract as ``compose.compose_reference``."""
    fam, image = _family(image, "image")
    _check_cuda(fam, "compose")
    if _np_dtype(image) != np.uint8:
        raise TypeError(f"image must be uint8, got {_dtype_name(image)}")
    if len(_shape(image)) != 3 or _shape(image)[2] != 3:
        raise ValueError(f"image must have shape (H, W, 3), got {_shape(image)}")
    ab = _as_array(ab, "ab")
    _require_float(ab, "ab", allow_half=True)
    a = _squeeze_lead(_contig(ab, fam, "ab", np.dtype(np.float32)), 3, "ab", "(2, h, w)")
    if a.shape[0] != 2 or a.shape[1] < 1 or a.shape[2] < 1:
        raise ValueError(f"ab must have shape (2, h, w), got {_shape(a)}")
    x = _contig(image, fam, "image")
    res, out = _empty(fam, _shape(x), "uint8")
    if x.shape[0] * x.shape[1]:
        _native.compose(x, a, out, _stream_handle(fam, stream))
    return res


def compose_processed(full_L, ab, *, stream=None):
    """The S x S picture the official test saves: lab2rgb(full_L, ab), clamp, round -> ``(S, S, 3)``
    uint8. ``full_L`` ``(S, S)``, ``(1, S, S)`` or ``(1, 1, S, S)``; ``ab`` ``(2, S, S)`` or
    ``(1, 2, S, S)``, normalised float."""
    fam, full_L = _family(full_L, "full_L")
    _check_cuda(fam, "compose_processed")
    _require_float(full_L, "full_L", allow_half=True)
    ab = _as_array(ab, "ab")
    _require_float(ab, "ab", allow_half=True)
    L = _contig(full_L, fam, "full_L", np.dtype(np.float32))
    if L.ndim == 2:
        L = L[None]
    while L.ndim > 3 and L.shape[0] == 1:
        L = L[0]
    if L.ndim != 3 or L.shape[0] != 1:
        raise ValueError(f"full_L must have shape (S, S), (1, S, S) or (1, 1, S, S), got {_shape(full_L)}")
    a = _squeeze_lead(_contig(ab, fam, "ab", np.dtype(np.float32)), 3, "ab", "(2, S, S)")
    if _shape(a) != (2,) + _shape(L)[1:]:
        raise ValueError(f"ab must have shape {(2,) + _shape(L)[1:]} to match full_L, got {_shape(a)}")
    res, out = _empty(fam, _shape(L)[1:] + (3,), "uint8")
    if L.shape[1] * L.shape[2]:
        _native.compose_processed(L, a, out, _stream_handle(fam, stream))
    return res

"""Step 2 of the pipeline: image, boxes and hints -> network inputs, as the official test does.

Reference implementations (numpy / torch). The native kernels in ``instcolor.ops`` implement
the same contracts; tests compare the two and both against the golden vectors.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from . import color

MAX_BOXES = 8
_PRECISION_BITS = 22  # Pillow: 32 - 8 - 2


# ----------------------------------------------------------------------------- resize
@lru_cache(maxsize=256)
def _pillow_bilinear_coeffs(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Tap indices ``(out, K)`` int64 and fixed-point weights ``(out, K)`` int64 of Pillow's
    BILINEAR filter for one axis (Pillow 7-11 ``precompute_coeffs`` + ``normalize_coeffs_8bpc``)."""
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = 1.0 * filterscale
    ksize = int(math.ceil(support)) * 2 + 1
    idx = np.zeros((out_size, ksize), np.int64)
    wts = np.zeros((out_size, ksize), np.int64)
    ss = 1.0 / filterscale
    for i in range(out_size):
        center = (i + 0.5) * scale
        xmin = max(int(center - support + 0.5), 0)
        xmax = min(int(center + support + 0.5), in_size)
        ws = []
        total = 0.0
        for x in range(xmax - xmin):
            w = abs((x + xmin - center + 0.5) * ss)
            w = 1.0 - w if w < 1.0 else 0.0
            ws.append(w)
            total += w
        for k, w in enumerate(ws):
            if total != 0.0:
                w = w / total
            fixed = w * (1 << _PRECISION_BITS)
            wts[i, k] = int(0.5 + fixed) if w >= 0 else int(-0.5 + fixed)
            idx[i, k] = xmin + k
        idx[i, len(ws):] = xmin  # unused taps: weight 0, any valid index
    return idx, wts


def _resample_axis(img: np.ndarray, out_size: int, axis: int) -> np.ndarray:
    idx, wts = _pillow_bilinear_coeffs(img.shape[axis], out_size)
    acc = np.full(img.shape[:axis] + (out_size,) + img.shape[axis + 1:], 1 << (_PRECISION_BITS - 1), np.int64)
    shape = [1] * img.ndim
    shape[axis] = out_size
    for k in range(idx.shape[1]):
        taps = np.take(img, idx[:, k], axis=axis).astype(np.int64)
        acc += taps * wts[:, k].reshape(shape)
    return np.clip(acc >> _PRECISION_BITS, 0, 255).astype(np.uint8)


def pil_bilinear_resize(img: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resize ``(H, W, C)`` uint8 to ``(height, width, C)`` bit-exactly like Pillow 7-11
    ``Image.resize((width, height), BILINEAR)``: separable triangle filter whose support
    grows with the downscale factor, horizontal pass first, intermediate rounded to uint8."""
    if img.dtype != np.uint8 or img.ndim != 3:
        raise ValueError(f"pil_bilinear_resize expects (H, W, C) uint8, got {img.dtype} {img.shape}")
    out = img
    if width != img.shape[1]:
        out = _resample_axis(out, width, axis=1)
    if height != img.shape[0]:
        out = _resample_axis(out, height, axis=0)
    return out


# ----------------------------------------------------------------------------- images
def as_rgb_uint8(image, name: str = "image") -> np.ndarray:
    """Accept ``(H, W, 3)`` / ``(H, W)`` uint8 arrays, PIL images or file paths -> ``(H, W, 3)`` uint8.

    A grey image becomes three equal channels, as the official dataset opens it. A file path goes
    through :func:`instcolor.imageio.read_image` (upright, sRGB, 8-bit; its pixel limit): a missing
    file raises FileNotFoundError, an unreadable one ImageReadError (a ValueError), both naming it."""
    import os

    if isinstance(image, (str, os.PathLike)):
        from .imageio import read_image

        return read_image(image).rgb
    if hasattr(image, "convert") and hasattr(image, "size"):  # PIL image
        image = np.asarray(image.convert("RGB"))
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        raise TypeError(f"{name}: expected a uint8 array, got dtype {arr.dtype}")
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"{name}: expected shape (H, W, 3) or (H, W), got {arr.shape}")
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError(f"{name}: empty image {arr.shape}")
    arr = np.ascontiguousarray(arr)
    return arr if arr.flags.writeable else arr.copy()


#: Largest processing size accepted. The nets were trained at 256; at 2048 one width-1.0 feature map of
#: the first block alone takes 1 GiB, so larger sizes only end in out-of-memory errors.
MAX_SIZE = 2048


def check_size(size: int) -> int:
    """``size`` as an int when it is a multiple of 8 in [8, :data:`MAX_SIZE`], else ValueError saying why."""
    if not isinstance(size, (int, np.integer)) or isinstance(size, bool) or size < 8 or size % 8:
        raise ValueError(f"size must be a positive multiple of 8 (the net halves it three times), got {size!r}")
    if size > MAX_SIZE:
        raise ValueError(f"size {size} is above the limit of {MAX_SIZE} (the nets were trained at 256; "
                         f"larger sizes need more memory than a machine has and add no detail)")
    return int(size)


# ----------------------------------------------------------------------------- boxes
def selection_order(n: int, scores=None, max_boxes: int = MAX_BOXES) -> np.ndarray:
    """Indices of the detections the nets use, in the order used: all ``n`` in the given order when
    ``n <= max_boxes``; otherwise the ``max_boxes`` highest scores in ascending score order (the
    official argsort rule), or the first ``max_boxes`` without scores. ``(K,)`` int64."""
    if n <= max_boxes:
        return np.arange(n, dtype=np.int64)
    if scores is None:
        return np.arange(max_boxes, dtype=np.int64)
    return np.argsort(np.asarray(scores, np.float64).reshape(-1), kind="stable")[-max_boxes:].astype(np.int64)


def select_boxes(boxes, scores=None, image_hw: tuple[int, int] | None = None,
                 max_boxes: int = MAX_BOXES, name: str = "boxes") -> np.ndarray:
    """Detections -> the int boxes the nets use, in the order used.

    boxes: ``(N, 4)`` float xyxy in image pixels; scores: ``(N,)`` or None.
    Coordinates are truncated toward zero (int32 cast). With more than ``max_boxes``
    detections the highest-scoring ones are kept in ascending score order (the official
    argsort rule; without scores the first ``max_boxes`` are kept); otherwise the given
    order is kept. Returns ``(M, 4)`` int64. Raises ValueError naming the bad box.
    """
    b = np.asarray(boxes if boxes is not None else np.zeros((0, 4)), dtype=np.float64)
    if b.size == 0:
        b = b.reshape(0, 4)
    if b.ndim != 2 or b.shape[1] != 4:
        raise ValueError(f"{name}: expected shape (N, 4) xyxy, got {b.shape}")
    bad = ~np.isfinite(b).all(axis=1)
    if bad.any():
        raise ValueError(f"{name}: box {int(np.argmax(bad))} has a NaN or infinite coordinate: {b[bad][0].tolist()}")
    if scores is not None:
        s = np.asarray(scores, dtype=np.float64).reshape(-1)
        if s.shape[0] != b.shape[0]:
            raise ValueError(f"{name}: {b.shape[0]} boxes but {s.shape[0]} scores")
        if not np.isfinite(s).all():
            raise ValueError(f"{name}: scores contain NaN or infinity")
    order = selection_order(b.shape[0], scores, max_boxes)
    ib = np.trunc(b[order]).astype(np.int64)
    for i, (x0, y0, x1, y1) in zip(order.tolist(), ib.tolist()):
        if x1 <= x0 or y1 <= y0:
            raise ValueError(f"{name}: box {i} {b[i].tolist()} "
                             f"has zero or negative area after int truncation ({x0}, {y0}, {x1}, {y1})")
        if image_hw is not None:
            h, w = image_hw
            if x0 < 0 or y0 < 0 or x1 > w or y1 > h:
                raise ValueError(f"{name}: box {i} ({x0}, {y0}, {x1}, {y1}) lies outside the {w}x{h} image")
    return ib


def box_info(boxes: np.ndarray, image_hw: tuple[int, int], grid: int) -> np.ndarray:
    """Official ``get_box_info``: ``(M, 4)`` int boxes -> ``(M, 6)`` int64 rows
    ``[left pad, right pad, top pad, bottom pad, width, height]`` on a ``grid`` x ``grid`` map."""
    h, w = image_hw
    out = np.zeros((len(boxes), 6), np.int64)
    for i, (x0, y0, x1, y1) in enumerate(np.asarray(boxes).tolist()):
        sx, ex = int(x0 / w * grid), int(x1 / w * grid)
        sy, ey = int(y0 / h * grid), int(y1 / h * grid)
        if ex - sx < 1:
            if grid - ex > 1:
                ex += 1
            else:
                sx -= 1
        if ey - sy < 1:
            if grid - ey > 1:
                ey += 1
            else:
                sy -= 1
        out[i] = (sx, grid - ex, sy, grid - ey, ex - sx, ey - sy)
    return out


def box_info_levels(boxes: np.ndarray, image_hw: tuple[int, int], size: int) -> list[np.ndarray]:
    """box_info on the S, S/2, S/4, S/8 grids (the four levels the fusion net uses)."""
    return [box_info(boxes, image_hw, size // f) for f in (1, 2, 4, 8)]


# ----------------------------------------------------------------------------- hints
@dataclass(frozen=True)
class Hint:
    """A user colour point: (x, y) in input-image pixels, a colour given as ``rgb=(r, g, b)``
    (0-255) or ``ab=(a, b)`` (CIE Lab a*, b* units), painted as a ``size`` x ``size`` square
    patch centred on the point at processing resolution."""

    x: float
    y: float
    rgb: tuple[int, int, int] | None = None
    ab: tuple[float, float] | None = None
    size: int = 1

    def __post_init__(self):
        if (self.rgb is None) == (self.ab is None):
            raise ValueError(f"Hint at ({self.x}, {self.y}): give exactly one of rgb=(r, g, b) or ab=(a, b)")
        if not (math.isfinite(self.x) and math.isfinite(self.y)):
            raise ValueError(f"Hint: coordinates must be finite, got ({self.x}, {self.y})")
        if int(self.size) < 1:
            raise ValueError(f"Hint at ({self.x}, {self.y}): size must be >= 1, got {self.size}")
        if self.rgb is not None and (len(self.rgb) != 3 or not all(0 <= int(c) <= 255 for c in self.rgb)):
            raise ValueError(f"Hint at ({self.x}, {self.y}): rgb must be three values in 0..255, got {self.rgb}")

    def normalized_ab(self) -> tuple[float, float]:
        if self.ab is not None:
            return float(self.ab[0]) / color.AB_NORM, float(self.ab[1]) / color.AB_NORM
        # the numpy twin of the official conversion (no PyTorch on the inference path; see instcolor.color)
        lab = color.lab_of_uint8(np.array(self.rgb, np.uint8).reshape(1, 1, 3))
        return float(lab[0, 1, 0, 0]), float(lab[0, 2, 0, 0])


@dataclass
class HintPlanes:
    """Exact hint input: ``ab`` (2, S, S) normalised ab (Lab ab / 110), ``mask`` (1, S, S) 0/1."""

    ab: np.ndarray
    mask: np.ndarray

    def __post_init__(self):
        self.ab = np.asarray(self.ab, dtype=np.float32)
        self.mask = np.asarray(self.mask, dtype=np.float32)
        if self.ab.ndim != 3 or self.ab.shape[0] != 2:
            raise ValueError(f"HintPlanes.ab must be (2, S, S), got {self.ab.shape}")
        if self.mask.shape != (1,) + self.ab.shape[1:]:
            raise ValueError(f"HintPlanes.mask must be (1, S, S) matching ab {self.ab.shape}, got {self.mask.shape}")
        if not (np.isfinite(self.ab).all() and np.isfinite(self.mask).all()):
            raise ValueError("HintPlanes contain NaN or infinity")


def empty_hints(size: int) -> tuple[np.ndarray, np.ndarray]:
    """No hints: ab planes 0, centred mask -0.5 (the official sample_p = 1 case)."""
    return np.zeros((2, size, size), np.float32), np.full((1, size, size), -0.5, np.float32)


def hint_planes(hints, size: int, image_hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Hints -> (hint ab ``(2, S, S)``, centred mask ``(1, S, S)`` with +0.5 at hints, -0.5 elsewhere).

    ``hints``: a HintPlanes, or a sequence of Hint. Later hints overwrite earlier ones."""
    if isinstance(hints, HintPlanes):
        if hints.ab.shape[1:] != (size, size):
            raise ValueError(f"HintPlanes are {hints.ab.shape[1:]} but the processing size is {size}x{size}")
        return hints.ab.copy(), (hints.mask - 0.5).astype(np.float32)
    ab, mask = np.zeros((2, size, size), np.float32), np.zeros((1, size, size), np.float32)
    h, w = image_hw
    for hint in hints or ():
        if not isinstance(hint, Hint):
            raise TypeError(f"hints must be Hint objects or one HintPlanes, got {type(hint).__name__}")
        if not (0 <= hint.x < w and 0 <= hint.y < h):
            raise ValueError(f"Hint at ({hint.x}, {hint.y}) lies outside the {w}x{h} image")
        p = int(hint.size)
        row = min(max(int(hint.y / h * size) - (p - 1) // 2, 0), max(size - p, 0))
        col = min(max(int(hint.x / w * size) - (p - 1) // 2, 0), max(size - p, 0))
        a, b = hint.normalized_ab()
        ab[0, row:row + p, col:col + p] = a
        ab[1, row:row + p, col:col + p] = b
        mask[0, row:row + p, col:col + p] = 1.0
    return ab, mask - 0.5


def patch_hints(ab: np.ndarray, patches) -> tuple[np.ndarray, np.ndarray]:
    """SIGGRAPH'17 hint simulation from ground-truth ab ``(2, S, S)``: each patch (row, col, P)
    gets the mean ab over rows row..row+P-1 and columns col..col+P-1 (columns first, float32).
    Returns (hint ab, centred mask) like :func:`hint_planes`."""
    import torch  # (training's hint simulation; the training path needs PyTorch anyway)

    ab = np.asarray(ab, np.float32)
    hint = np.zeros_like(ab)
    mask = np.zeros((1,) + ab.shape[1:], np.float32)
    for r, c, p in np.asarray(patches, np.int64).reshape(-1, 3).tolist():
        block = torch.from_numpy(ab[:, r:r + p, c:c + p])
        mean = block.mean(dim=2, keepdim=True).mean(dim=1, keepdim=True)
        hint[:, r:r + p, c:c + p] = mean.numpy()
        mask[:, r:r + p, c:c + p] = 1.0
    return hint, mask - 0.5


# ----------------------------------------------------------------------------- bundle
@dataclass
class Prepared:
    """Network inputs for one image (all numpy float32 unless noted).

    full_L (1, S, S), hint_ab (2, S, S), hint_mask (1, S, S) centred,
    crop_L (M, 1, S, S), boxes (M, 4) int64, box_info: 4 x (M, 6) int64 for S, S/2, S/4, S/8,
    image (H, W, 3) uint8 original, full_rgb_u8 (S, S, 3) uint8 (reference path only, else None)."""

    image: np.ndarray
    size: int
    full_rgb_u8: np.ndarray | None
    full_L: np.ndarray
    hint_ab: np.ndarray
    hint_mask: np.ndarray
    boxes: np.ndarray
    crop_L: np.ndarray
    box_info: list = field(default_factory=list)


def lab_of_uint8(img: np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` or ``(N, H, W, 3)`` uint8 -> normalised Lab ``(N, 3, H, W)`` float32 (x / 255 first)."""
    import torch  # the reference (prepare, training); instcolor.color.lab_of_uint8 is its numpy twin

    with torch.no_grad():
        return color.rgb_to_lab(color.uint8_to_float(img)).numpy()


def prepare(image: np.ndarray, boxes: np.ndarray, hints, size: int) -> Prepared:
    """Reference preparation of one image: ``image`` (H, W, 3) uint8, ``boxes`` (M, 4) int64
    already selected by :func:`select_boxes`."""
    h, w = image.shape[:2]
    full = pil_bilinear_resize(image, size, size)
    full_L = lab_of_uint8(full)[0, :1]
    if len(boxes):
        crops = np.stack([pil_bilinear_resize(image[y0:y1, x0:x1], size, size) for x0, y0, x1, y1 in boxes.tolist()])
        crop_L = lab_of_uint8(crops)[:, :1]
    else:
        crop_L = np.zeros((0, 1, size, size), np.float32)
    hint_ab, hint_mask = hint_planes(hints, size, (h, w))
    return Prepared(image=image, size=size, full_rgb_u8=full, full_L=full_L, hint_ab=hint_ab,
                    hint_mask=hint_mask, boxes=boxes, crop_L=crop_L,
                    box_info=box_info_levels(boxes, (h, w), size))

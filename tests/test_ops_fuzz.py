"""Property-based fuzzing (hypothesis) of every op in instcolor.ops and of the raw _native entry points.

Each example draws shapes, memory layouts (strided, negative strides, Fortran order, read-only,
torch tensors), dtypes, values (NaN, +-inf, the colour-math thresholds) and boxes (NaN, infinite,
negative, inverted, zero-area, far outside the image, beyond int64). The property: the op returns
exactly what the reference implementation (color.py, prepare.py, fuse.py, compose.py) returns, or
raises TypeError / ValueError whose message names the offending argument -- and never crashes,
hangs or reads out of bounds (.ci/sanitize.sh runs this file under ASan + UBSan).

Examples per test: INSTCOLOR_FUZZ_EXAMPLES (default 25; the sanitizer run raises it).
"""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

pytest.importorskip("hypothesis", reason="the fuzz tests need hypothesis (pip install -e '.[test]')")
from hypothesis import HealthCheck, given, note, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from instcolor import _native, color, compose as compose_ref, fuse, ops, prepare  # noqa: E402

EXAMPLES = int(os.environ.get("INSTCOLOR_FUZZ_EXAMPLES", "25"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None, print_blob=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

ATOL = 1e-5
# Values every float input is salted with: non-finite, signed zero, the branch thresholds.
SPECIALS = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1.0, 0.04045, 0.008856, 0.2068966, 0.0031308])
LAYOUTS = ["c", "c", "step", "flip", "fortran", "readonly", "torch", "torch_nc"]
NATIVE_LAYOUTS = ["step", "flip", "fortran"]  # all non-contiguous unless the array is trivially so
NOT_ARRAYS = [None, "abc", 3.5, object(), [[1, 2], [3]]]
BIG = [2**31, 2**40, 2**62, 2**63 - 1, -2**63, -2**31]


# ----------------------------------------------------------------------------- helpers
FINITE_OR_NAN = SPECIALS[~np.isinf(SPECIALS)]


def floats(rng, shape, lo, hi, special_frac, specials=SPECIALS):
    a = rng.uniform(lo, hi, shape)
    if special_frac and a.size:
        m = rng.random(shape) < special_frac
        a[m] = rng.choice(specials, int(m.sum()))
    return a


def relayout(a: np.ndarray, layout: str, axis: int = 0):
    """The same logical array in another memory layout (numpy view or torch tensor)."""
    if layout == "c" or a.ndim == 0:
        return a
    axis %= a.ndim
    if layout == "step":  # every second row of a twice-as-long buffer
        shape = list(a.shape)
        shape[axis] *= 2
        big = np.zeros(shape, a.dtype)
        idx = [slice(None)] * a.ndim
        idx[axis] = slice(None, None, 2)
        big[tuple(idx)] = a
        return big[tuple(idx)]
    if layout == "flip":  # negative strides
        return np.flip(np.ascontiguousarray(np.flip(a, axis)), axis)
    if layout == "fortran":
        return np.asfortranarray(a)
    if layout == "readonly":
        b = a.copy()
        b.setflags(write=False)
        return b
    if layout == "torch":
        return torch.from_numpy(np.ascontiguousarray(a))
    if layout == "torch_nc":
        return torch.from_numpy(np.ascontiguousarray(np.swapaxes(a, 0, -1))).transpose(0, a.ndim - 1)
    raise AssertionError(layout)


def as_numpy(x) -> np.ndarray:
    return x.numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def expect_error(fn, names, exc=(TypeError, ValueError)):
    """``fn()`` raises ``exc`` and the message names one of ``names``."""
    with pytest.raises(exc) as info:
        fn()
    msg = str(info.value)
    assert any(n in msg for n in names), f"error does not name {names}: {type(info.value).__name__}: {msg}"


def ref_lab_u8(img: np.ndarray, size: int | None) -> np.ndarray:
    """(N, H, W, 3) uint8 -> (N, 3, S, S) reference Lab."""
    if size:
        img = np.stack([prepare.pil_bilinear_resize(im, size, size) for im in img]) if len(img) else \
            np.zeros((0, size, size, 3), np.uint8)
    return prepare.lab_of_uint8(img) if len(img) else np.zeros((0, 3) + img.shape[1:3], np.float32)


def ref_crop_L(img: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
    ib = np.trunc(boxes).astype(np.int64)
    crops = np.stack([prepare.pil_bilinear_resize(img[y0:y1, x0:x1], size, size) for x0, y0, x1, y1 in ib.tolist()])
    return prepare.lab_of_uint8(crops)[:, :1]


def ref_u8(rgb: torch.Tensor) -> np.ndarray:
    """color.to_uint8 with the ops' documented NaN rule (NaN -> 0; torch's NaN -> uint8 cast is undefined)."""
    return color.to_uint8(torch.nan_to_num(rgb, nan=0.0, posinf=np.inf, neginf=-np.inf))


def assert_u8_close(got: np.ndarray, want: np.ndarray):
    """Colour results: +-1 level where powf's last ulp crosses a rounding boundary, rarely."""
    assert got.shape == want.shape and got.dtype == np.uint8
    d = np.abs(got.astype(np.int16) - want.astype(np.int16))
    assert d.size == 0 or d.max() <= 1, f"uint8 difference up to {d.max()}"
    assert (d > 0).sum() <= max(2, d.size // 100)


def box_problem(c: np.ndarray, k: int, hw: list[tuple[int, int]]) -> str | None:
    """Why box ``c`` of image ``k`` is invalid (None when valid), the ops' documented rule."""
    if not np.isfinite(c).all():
        return "non-finite"
    if not 0 <= k < len(hw):
        return "box_image"
    x0, y0, x1, y1 = np.trunc(c)
    if x1 <= x0 or y1 <= y0:
        return "area"
    h, w = hw[k]
    if x0 < 0 or y0 < 0 or x1 > w or y1 > h:
        return "outside"
    return None


@st.composite
def weird_boxes(draw, h: int, w: int, m: int):
    """(M, 4) float64 boxes: mostly valid, with NaN / inf / negative / inverted / zero-area /
    outside / enormous coordinates mixed in."""
    rows = []
    for _ in range(m):
        kind = draw(st.sampled_from(["valid", "valid", "valid", "nan", "inf", "negative", "inverted", "zero",
                                     "outside", "huge", "fraction"]))
        x0 = draw(st.floats(0, max(w - 1, 0)))
        y0 = draw(st.floats(0, max(h - 1, 0)))
        x1 = draw(st.floats(np.floor(x0) + 1, w)) if np.floor(x0) + 1 <= w else x0 + 1
        y1 = draw(st.floats(np.floor(y0) + 1, h)) if np.floor(y0) + 1 <= h else y0 + 1
        b = [x0, y0, x1, y1]
        j = draw(st.integers(0, 3))
        if kind == "nan":
            b[j] = np.nan
        elif kind == "inf":
            b[j] = draw(st.sampled_from([np.inf, -np.inf]))
        elif kind == "negative":
            b[j] = -draw(st.floats(0, 1e6))
        elif kind == "inverted":
            b = [b[2], b[3], b[0], b[1]]
        elif kind == "zero":
            b[2], b[3] = (b[0] + 0.5, b[3]) if j % 2 else (b[2], b[1] + 0.9)
        elif kind == "outside":
            b[j] = b[j] + draw(st.sampled_from([w, h, 1e6, 1e300]))
        elif kind == "huge":
            b[j] = draw(st.sampled_from([2.0**63, -2.0**63, 2.0**64, 1e308, -1e308, 2.0**31]))
        elif kind == "fraction":
            b = [v + 0.999 for v in b]
        rows.append(b)
    return np.array(rows, np.float64).reshape(m, 4)


# ============================================================================ public API
@FUZZ
@given(data=st.data())
def test_fuzz_rgb_to_lab_uint8(data):
    batched = data.draw(st.booleans(), label="batched")
    n = data.draw(st.integers(0, 3)) if batched else 1
    h, w = data.draw(st.integers(0, 24), label="h"), data.draw(st.integers(0, 24), label="w")
    size = data.draw(st.one_of(st.none(), st.integers(1, 40), st.sampled_from([0, -1, 65537, 2.5, True, "8"])),
                     label="size")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    img = rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8)
    x = relayout(img if batched else img[0], data.draw(st.sampled_from(LAYOUTS)), data.draw(st.integers(0, 3)))
    note(f"x {type(x).__name__} {tuple(x.shape)} strides {getattr(x, 'strides', None) or x.stride()}")
    if h == 0 or w == 0:
        return expect_error(lambda: ops.rgb_to_lab(x, size), ["rgb"])
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= 65536):
        return expect_error(lambda: ops.rgb_to_lab(x, size), ["size"])
    got = as_numpy(ops.rgb_to_lab(x, size))
    want = ref_lab_u8(img, size)
    np.testing.assert_allclose(got, want if batched else want[0], rtol=0, atol=ATOL)


@FUZZ
@given(data=st.data())
def test_fuzz_rgb_to_lab_wrong_dtype_or_shape(data):
    dtype = data.draw(st.sampled_from([np.int8, np.int16, np.int32, np.int64, np.uint16, np.bool_, np.complex64]))
    shape = data.draw(st.sampled_from([(4, 5, 3), (3, 4, 5), (2, 4, 5, 3), (5,), ()]))
    x = relayout(np.zeros(shape, dtype), data.draw(st.sampled_from(["c", "step", "torch"])) if dtype not in
                 (np.uint16, np.complex64) else "c")
    expect_error(lambda: ops.rgb_to_lab(x), ["rgb"], TypeError)
    bad = data.draw(st.sampled_from([(4, 5, 4), (4, 5), (1, 1, 4, 5, 3)]))
    expect_error(lambda: ops.rgb_to_lab(np.zeros(bad, np.uint8)), ["rgb"], ValueError)
    expect_error(lambda: ops.rgb_to_lab(np.zeros((3, 4, 4), np.float32), 8), ["size"], ValueError)
    expect_error(lambda: ops.rgb_to_lab(data.draw(st.sampled_from(NOT_ARRAYS[:4]))), ["rgb"])


@FUZZ
@given(data=st.data())
def test_fuzz_rgb_to_lab_float(data):
    batched = data.draw(st.booleans())
    shape = (data.draw(st.integers(0, 2)),) if batched else ()
    shape += (3, data.draw(st.integers(0, 16)), data.draw(st.integers(0, 16)))
    dtype = data.draw(st.sampled_from([np.float32, np.float32, np.float64, np.float16]))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    a = floats(rng, shape, -0.5, 1.5, data.draw(st.sampled_from([0.0, 0.05, 0.5]))).astype(dtype)
    x = relayout(a, data.draw(st.sampled_from(LAYOUTS)), data.draw(st.integers(0, 3)))
    got = as_numpy(ops.rgb_to_lab(x))
    a4 = torch.from_numpy(a.astype(np.float32)).reshape((int(np.prod(shape[:-3])),) + shape[-3:])
    want = color.rgb_to_lab(a4).numpy().reshape(shape)
    assert got.shape == shape and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=ATOL, equal_nan=True)


@FUZZ
@given(data=st.data())
def test_fuzz_lab_to_rgb(data):
    batched = data.draw(st.booleans())
    shape = (data.draw(st.integers(0, 2)),) if batched else ()
    shape += (3, data.draw(st.integers(0, 16)), data.draw(st.integers(0, 16)))
    dtype = data.draw(st.sampled_from([np.float32, np.float32, np.float64]))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    a = floats(rng, shape, -1.5, 1.5, data.draw(st.sampled_from([0.0, 0.05, 0.5]))).astype(dtype)
    x = relayout(a, data.draw(st.sampled_from(LAYOUTS)), data.draw(st.integers(0, 3)))
    got = as_numpy(ops.lab_to_rgb(x))
    a4 = torch.from_numpy(a.astype(np.float32)).reshape((int(np.prod(shape[:-3])),) + shape[-3:])
    want = color.lab_to_rgb(a4).numpy().reshape(shape)
    assert got.shape == shape and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=ATOL, equal_nan=True)
    bad_dtype = data.draw(st.sampled_from([np.uint8, np.int32, np.float16, np.bool_]))
    expect_error(lambda: ops.lab_to_rgb(a.astype(bad_dtype)), ["lab"], TypeError)
    bad_shape = data.draw(st.sampled_from([(2, 4, 4), (4, 4, 3), (1, 1, 3, 4, 4), (3,)]))
    expect_error(lambda: ops.lab_to_rgb(np.zeros(bad_shape, np.float32)), ["lab"], ValueError)


@FUZZ
@given(data=st.data())
def test_fuzz_roi_crop_resize(data):
    k_images = data.draw(st.integers(1, 3), label="images")
    hws = [(data.draw(st.integers(1, 20)), data.draw(st.integers(1, 20))) for _ in range(k_images)]
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    imgs = [rng.integers(0, 256, hw + (3,), dtype=np.uint8) for hw in hws]
    m = data.draw(st.integers(0, 5), label="M")
    box_image = np.array([data.draw(st.sampled_from(list(range(k_images)) * 4 + [-1, k_images, 2**40]))
                          for _ in range(m)], np.int64)
    boxes = np.concatenate([data.draw(weird_boxes(*hws[int(k)] if 0 <= k < k_images else (5, 5), 1))
                            for k in box_image]) if m else np.zeros((0, 4))
    size = data.draw(st.integers(1, 24), label="size")
    bdtype = data.draw(st.sampled_from([np.float64, np.float64, np.float32, np.int64, np.int32]))
    b = boxes
    if bdtype != np.float64:
        with np.errstate(invalid="ignore", over="ignore"):
            b = boxes.astype(bdtype)
        boxes = b.astype(np.float64)
    layout = data.draw(st.sampled_from(LAYOUTS))
    imgs_in = [relayout(im, layout, data.draw(st.integers(0, 2))) for im in imgs]
    as_list = k_images > 1 or data.draw(st.booleans())
    image_arg = imgs_in if as_list else imgs_in[0]
    bi_arg = box_image if as_list else (None if (box_image == 0).all() and data.draw(st.booleans()) else box_image)
    b_arg = relayout(b, data.draw(st.sampled_from(LAYOUTS)), 1)
    note(f"boxes {boxes.tolist()} box_image {box_image.tolist()} sizes {hws}")
    problems = [(i, box_problem(boxes[i], int(box_image[i]), hws)) for i in range(m)]
    first = next(((i, p) for i, p in problems if p), None)
    call = lambda: ops.roi_crop_resize(image_arg, b_arg, size, box_image=bi_arg)  # noqa: E731
    if first is not None:
        i, p = first
        return expect_error(call, [f"box_image[{i}]" if p == "box_image" else f"boxes[{i}]"], ValueError)
    got = as_numpy(call())
    assert got.shape == (m, 1, size, size) and got.dtype == np.float32
    for i in range(m):
        np.testing.assert_allclose(got[i:i + 1], ref_crop_L(imgs[box_image[i]], boxes[i:i + 1], size), rtol=0, atol=ATOL)


@FUZZ
@given(data=st.data())
def test_fuzz_roi_crop_resize_bad_arguments(data):
    img = np.zeros((10, 12, 3), np.uint8)
    bad = data.draw(st.sampled_from(["boxes_dtype", "boxes_shape", "box_image_dtype", "box_image_shape",
                                     "image_dtype", "image_shape", "image_empty", "size", "not_array"]))
    boxes, box_image, size, image = np.array([[0, 0, 4, 4.0]]), None, 8, img
    names = {"boxes_dtype": "boxes", "boxes_shape": "boxes", "box_image_dtype": "box_image",
             "box_image_shape": "box_image", "size": "size", "not_array": "image"}.get(bad, "image")
    if bad == "boxes_dtype":
        boxes = data.draw(st.sampled_from([np.array([["a", "b", "c", "d"]]), np.ones((1, 4), bool),
                                           np.ones((1, 4), np.complex64)]))
    elif bad == "boxes_shape":
        boxes = np.zeros(data.draw(st.sampled_from([(1, 3), (1, 5), (2, 2, 4), (3,), (3, 0)])))
    elif bad == "box_image_dtype":
        box_image = np.array([data.draw(st.sampled_from([0.0, 0.5]))])
    elif bad == "box_image_shape":
        box_image = np.zeros(data.draw(st.sampled_from([(2,), (1, 1, 2), (0,)])), np.int64)
    elif bad == "image_dtype":
        image = [img.astype(data.draw(st.sampled_from([np.float32, np.int16, np.bool_])))]
        names = "image[0]"
    elif bad == "image_shape":
        image = np.zeros(data.draw(st.sampled_from([(10, 12, 4), (10, 12), (2, 3, 10, 12, 3)])), np.uint8)
    elif bad == "image_empty":
        image = data.draw(st.sampled_from([np.zeros((0, 5, 3), np.uint8), np.zeros((0, 5, 5, 3), np.uint8),
                                           [np.zeros((5, 0, 3), np.uint8)], []]))
    elif bad == "size":
        size = data.draw(st.sampled_from([0, -1, 65537, 2**40, 8.0, True, None, "8"]))
    elif bad == "not_array":
        image = data.draw(st.sampled_from(NOT_ARRAYS))
    expect_error(lambda: ops.roi_crop_resize(image, boxes, size, box_image=box_image), [names])


def _box_info(rng, W: int, H: int) -> list[int]:
    wd, ht = int(rng.integers(1, W + 1)), int(rng.integers(1, H + 1))
    left, top = int(rng.integers(0, W - wd + 1)), int(rng.integers(0, H - ht + 1))
    return [left, W - left - wd, top, H - top - ht, wd, ht]


@st.composite
def fuse_case(draw, max_per_image: int = 8):
    B, C = draw(st.integers(1, 3), label="B"), draw(st.integers(1, 5), label="C")
    H, W = draw(st.integers(1, 12), label="H"), draw(st.integers(1, 12), label="W")
    h, w = draw(st.integers(1, 12), label="h"), draw(st.integers(1, 12), label="w")
    counts = [draw(st.integers(0, max_per_image)) for _ in range(B)]
    M = sum(counts)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    frac = draw(st.sampled_from([0.0, 0.0, 0.02]))
    scale = draw(st.sampled_from([1.0, 5.0, 100.0]))
    f32 = np.float32
    # No infinities: torch's own bilinear resize is not consistent for them (an infinite tap with
    # weight 0 gives NaN in some output columns and inf in others), so there is nothing to match.
    bg = floats(rng, (B, C, H, W), -scale, scale, frac, FINITE_OR_NAN).astype(f32)
    bl = floats(rng, (B, 1, H, W), -scale, scale, frac, FINITE_OR_NAN).astype(f32)
    fi = floats(rng, (M, C, h, w), -scale, scale, frac, FINITE_OR_NAN).astype(f32)
    li = floats(rng, (M, 1, h, w), 0, scale, frac, FINITE_OR_NAN).astype(f32)
    info = np.array([_box_info(rng, W, H) for _ in range(M)], np.int64).reshape(M, 6)
    img = rng.permutation(np.repeat(np.arange(B), counts)).astype(np.int64)
    return [bg, bl, fi, li, info, img]


def fuse_atol(*arrays) -> float:
    """Float32 sums of products of values up to V (and softmax weights of logits up to V) carry
    rounding errors proportional to V: the tolerance scales with the largest magnitude."""
    v = max([1.0] + [float(np.abs(a[np.isfinite(a)]).max()) for a in arrays if np.isfinite(a).any()])
    return 5 * ATOL * v


def fuse_ref(bg, bl, fi, li, info, img) -> np.ndarray:
    t = [torch.from_numpy(np.ascontiguousarray(a)) for a in (bg, bl, fi, li)]
    return fuse.fuse_instances_reference(*t, torch.from_numpy(info), torch.from_numpy(img)).numpy()


def near_instance_nan(fi, li, info, img, shape) -> np.ndarray:
    """(B, 1, H, W) bool: output pixels within one crop cell of an instance's NaN (feature or logit).
    Where the source position falls exactly on a cell edge (e.g. 1.0 for 3 -> 19), torch's float
    rounding can pick the taps one cell left of ours, so a NaN with weight 0 makes one side NaN and
    not the other: those pixels are not compared."""
    B, _, H, W = shape
    near = np.zeros((B, 1, H, W), bool)
    for i in range(len(info)):
        bad = (~np.isfinite(fi[i])).any(0) | ~np.isfinite(li[i, 0])
        if not bad.any():
            continue
        left, _, top, _, width, height = (int(v) for v in info[i])
        near[img[i], 0, top:top + height, left:left + width] |= near_cells(bad, (height, width))
    return near


def near_cells(bad: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(h, w) bool source cells -> (H, W) bool: the pixels of a bilinear resize to ``size`` whose taps
    may reach a True cell, give or take one cell (the tap-rounding margin of test_fuzz_compose)."""
    margin = torch.nn.functional.max_pool2d(torch.from_numpy(bad.astype(np.float32))[None, None], 3, 1, 1)
    return torch.nn.functional.interpolate(margin, size=size, mode="bilinear", align_corners=False)[0, 0].numpy() > 0


def assert_fuse_close(got, bg, bl, fi, li, info, img):
    """got equals the reference (NaN where it has NaN) away from the instances' NaNs."""
    want = fuse_ref(bg, bl, fi, li, info, img)
    keep = np.broadcast_to(~near_instance_nan(fi, li, info, img, bg.shape), bg.shape)
    np.testing.assert_allclose(got[keep], want[keep], rtol=1e-5, atol=fuse_atol(bg, bl, fi, li), equal_nan=True)


@FUZZ
@given(case=fuse_case(), data=st.data())
def test_fuzz_fuse_instances(case, data):
    bg, bl, fi, li, info, img = case
    layouts = [data.draw(st.sampled_from(["c", "c", "step", "flip", "fortran", "readonly"])) for _ in range(4)]
    torch_in = data.draw(st.booleans())
    args = [relayout(a, lay, data.draw(st.integers(0, 3))) for a, lay in zip((bg, bl, fi, li), layouts)]
    if torch_in:
        args = [torch.from_numpy(np.ascontiguousarray(a)) for a in args]
    B = bg.shape[0]
    use_out = data.draw(st.booleans())
    out = (torch.full(bg.shape, 7.0) if torch_in else np.full(bg.shape, 7.0, np.float32)) if use_out else None
    got = ops.fuse_instances(*args, info, img if (B > 1 or data.draw(st.booleans())) else None, out=out)
    if use_out:
        assert got is out
    got = as_numpy(got)
    assert got.shape == bg.shape and got.dtype == np.float32
    assert_fuse_close(got, bg, bl, fi, li, info, img)


@FUZZ
@given(case=fuse_case(max_per_image=3), data=st.data())
def test_fuzz_fuse_instances_bad_tables(case, data):
    bg, bl, fi, li, info, img = case
    B, _, H, W = bg.shape
    M = len(info)
    bad = data.draw(st.sampled_from(["info_value", "info_huge", "image_index", "too_many", "info_shape",
                                     "info_dtype", "image_dtype", "feat_dtype", "feat_shape"]))
    names = ["box_info"]
    if bad in ("info_value", "info_huge") and M:
        i = data.draw(st.integers(0, M - 1))
        info = info.copy()
        j = data.draw(st.integers(0, 5))
        if bad == "info_value":
            info[i, j] = data.draw(st.sampled_from([-1, -2**40, info[i, j] + 1, 0 if j >= 4 else -1]))
        else:  # sums that overflow int64 if added naively
            info[i, j] = data.draw(st.sampled_from(BIG))
        names = [f"box_info[{i}]"]
    elif bad == "image_index" and M:
        i = data.draw(st.integers(0, M - 1))
        img = img.copy()
        img[i] = data.draw(st.sampled_from([-1, B, 2**40, -2**63]))
        names = [f"inst_image[{i}]"]
    elif bad == "too_many":
        k = 9
        fi, li = np.zeros((k,) + fi.shape[1:], np.float32), np.zeros((k,) + li.shape[1:], np.float32)
        info = np.array([[0, 0, 0, 0, W, H]] * k, np.int64)
        img = np.zeros(k, np.int64)
        names = ["inst_image", "instances"]
    elif bad == "info_shape":
        info = np.zeros(data.draw(st.sampled_from([(M + 1, 6), (M, 5), (M * 6 + 6,)])), np.int64)
    elif bad == "info_dtype":
        # (an empty float table is accepted for M = 0, like [] -- so corrupt a one-row table then)
        info = (info if M else np.zeros((1, 6), np.int64)).astype(
            data.draw(st.sampled_from([np.float32, np.float64, np.bool_])))
    elif bad == "image_dtype":
        img = img.astype(np.float64) + 0.5 if M else np.array([0.5])
        names = ["inst_image"]
    elif bad == "feat_dtype":
        which = data.draw(st.integers(0, 3))
        arrs = [bg, bl, fi, li]
        arrs[which] = arrs[which].astype(data.draw(st.sampled_from([np.float64, np.int32, np.float16])))
        bg, bl, fi, li = arrs
        names = [["bg_feat", "bg_logit", "inst_feat", "inst_logit"][which]] + (["bg_feat"] if which else [])
    elif bad == "feat_shape":
        which = data.draw(st.integers(1, 3))
        arrs = [bg, bl, fi, li]
        arrs[which] = np.zeros(arrs[which].shape[:-1] + (arrs[which].shape[-1] + 1,), np.float32)
        bg, bl, fi, li = arrs
        names = [["bg_feat", "bg_logit", "inst_feat", "inst_logit"][which]]
    else:  # nothing to corrupt with M == 0: a shape error instead
        info = np.zeros((M + 1, 6), np.int64)
    expect_error(lambda: ops.fuse_instances(bg, bl, fi, li, info, img), names)


@FUZZ
@given(data=st.data())
def test_fuzz_compose(data):
    H, W = data.draw(st.integers(0, 24), label="H"), data.draw(st.integers(0, 24), label="W")
    h, w = data.draw(st.integers(1, 16), label="h"), data.draw(st.integers(1, 16), label="w")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    img = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    scale = data.draw(st.sampled_from([0.3, 1.0, 50.0]))
    ab = floats(rng, (2, h, w), -scale, scale, data.draw(st.sampled_from([0.0, 0.05]))).astype(np.float32)
    ab_in = ab[None] if data.draw(st.booleans()) else ab
    ab_in = ab_in.astype(data.draw(st.sampled_from([np.float32, np.float32, np.float64])))
    x = relayout(img, data.draw(st.sampled_from(LAYOUTS)), data.draw(st.integers(0, 2)))
    a = relayout(ab_in, data.draw(st.sampled_from(LAYOUTS)), data.draw(st.integers(0, 2)))
    if isinstance(x, torch.Tensor) != isinstance(a, torch.Tensor) and isinstance(a, torch.Tensor):
        a = a.numpy()  # a host torch ab with a numpy image is fine too, but keep the families simple
    got = as_numpy(ops.compose(x, a))
    assert got.shape == (H, W, 3) and got.dtype == np.uint8
    if H and W:
        ab_t = torch.nn.functional.interpolate(torch.from_numpy(ab)[None], size=(H, W), mode="bilinear",
                                               align_corners=False)
        lab = color.rgb_to_lab(color.uint8_to_float(img))
        want = ref_u8(color.lab_to_rgb(torch.cat((lab[:, :1], ab_t), 1)))[0]
        if scale < 1 and np.isfinite(ab).all():
            np.testing.assert_array_equal(want, compose_ref.compose_reference(img, ab))
        # Pixels whose taps may reach a non-finite ab value are not compared: torch's bilinear resize
        # is not consistent there (an infinite tap with weight 0 gives NaN in some columns, inf in
        # others), and where the source position falls exactly on a cell edge (e.g. 1.0 for 3 -> 19)
        # torch's float rounding can pick the taps one cell to the left of ours, so an infinite value
        # with weight 0 turns our pixel into NaN while torch's stays finite. One cell of margin
        # around each non-finite value covers both; everywhere else the bytes must agree.
        finite = np.isfinite(ab_t[0].numpy()).all(0) & ~near_cells((~np.isfinite(ab)).any(0), (H, W))
        assert_u8_close(got[finite], want[finite])


@FUZZ
@given(data=st.data())
def test_fuzz_compose_bad_arguments(data):
    img = np.zeros((6, 7, 3), np.uint8)
    bad = data.draw(st.sampled_from(["image_dtype", "image_shape", "ab_dtype", "ab_shape", "not_array_image",
                                     "not_array_ab"]))
    image, ab, names = img, np.zeros((2, 4, 4), np.float32), ["image"]
    if bad == "image_dtype":
        image = img.astype(data.draw(st.sampled_from([np.float32, np.int32, np.bool_])))
    elif bad == "image_shape":
        image = np.zeros(data.draw(st.sampled_from([(6, 7, 4), (6, 7), (1, 6, 7, 3)])), np.uint8)
    elif bad == "ab_dtype":
        ab, names = ab.astype(data.draw(st.sampled_from([np.uint8, np.int64, np.bool_]))), ["ab"]
    elif bad == "ab_shape":
        ab = np.zeros(data.draw(st.sampled_from([(3, 4, 4), (2, 0, 4), (2, 4), (2, 2, 4, 4), (1, 1, 2, 4, 0)])),
                      np.float32)
        names = ["ab"]
    elif bad == "not_array_image":
        image = data.draw(st.sampled_from(NOT_ARRAYS))
    else:
        ab, names = data.draw(st.sampled_from(NOT_ARRAYS)), ["ab"]
    expect_error(lambda: ops.compose(image, ab), names)


@FUZZ
@given(data=st.data())
def test_fuzz_compose_processed(data):
    S1, S2 = data.draw(st.integers(0, 20), label="S1"), data.draw(st.integers(0, 20), label="S2")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    frac = data.draw(st.sampled_from([0.0, 0.05]))
    L = floats(rng, (1, S1, S2), -0.6, 0.6, frac).astype(np.float32)
    ab = floats(rng, (2, S1, S2), -1.0, 1.0, frac).astype(np.float32)
    L_in = data.draw(st.sampled_from([L, L[0], L[None]]))
    ab_in = data.draw(st.sampled_from([ab, ab[None]]))
    dt = data.draw(st.sampled_from([np.float32, np.float32, np.float64, np.float16]))
    if dt == np.float16:  # the op casts to float32; the reference must see the same values
        L, ab = L.astype(dt).astype(np.float32), ab.astype(dt).astype(np.float32)
    L_in, ab_in = L_in.astype(dt), ab_in.astype(dt)
    got = as_numpy(ops.compose_processed(relayout(L_in, data.draw(st.sampled_from(LAYOUTS)), -1),
                                         relayout(ab_in, data.draw(st.sampled_from(LAYOUTS)), -1)))
    lab = torch.cat((torch.from_numpy(L), torch.from_numpy(ab)), 0)[None]
    assert_u8_close(got, ref_u8(color.lab_to_rgb(lab))[0])
    if data.draw(st.booleans()):
        bad = data.draw(st.sampled_from([(1, S1, S2), (2, S1, S2 + 1), (3, S1, S2), (2, S1 + 1, S2), (2, S1)]))
        expect_error(lambda: ops.compose_processed(L, np.zeros(bad, np.float32)), ["ab"], ValueError)
    else:
        bad = data.draw(st.sampled_from([(1, S1 + 1, S2), (2, S1, S2), (3, 1, S1, S2), (S1 + 1,)]))
        expect_error(lambda: ops.compose_processed(np.zeros(bad, np.float32), ab), ["full_L", "ab"], ValueError)
    expect_error(lambda: ops.compose_processed(L.astype(np.int32), ab), ["full_L"], TypeError)


# ============================================================================ raw _native entry points
# The C++ validates everything itself (the Python wrapper is not the only caller): each example
# builds valid arguments, optionally corrupts one, and calls the pybind11 function directly.
def corrupt_array(data, a: np.ndarray, name: str, ok_dtypes=(), shape_ok=None):
    """(corrupted value, exception types it must raise) for one array argument ``name``;
    "maybe" for a reshaped array whose new shape ``shape_ok`` accepts (other values, any outcome)."""
    kind = data.draw(st.sampled_from(["dtype", "shape", "layout", "readonly", "not_array"]))
    if kind == "dtype":
        dt = data.draw(st.sampled_from([d for d in (np.uint8, np.int8, np.int16, np.int32, np.int64, np.float16,
                                                    np.float32, np.float64, np.bool_, np.uint64)
                                        if np.dtype(d) != a.dtype and np.dtype(d) not in ok_dtypes]))
        return a.astype(dt), TypeError
    if kind == "shape":
        how = data.draw(st.sampled_from(["extra_dim", "drop_dim", "grow_last", "grow_first"]))
        shape = list(a.shape)
        if how == "extra_dim":
            shape = [1] + shape
        elif how == "drop_dim" and shape:
            shape = shape[1:]
        elif how == "grow_last" and shape:
            shape[-1] += 1
        else:
            shape = [shape[0] + 1] + shape[1:] if shape else [1]
        return np.zeros(shape, a.dtype), ("maybe" if shape_ok and shape_ok(tuple(shape)) else ValueError)
    if kind == "layout":
        v = relayout(a, data.draw(st.sampled_from(NATIVE_LAYOUTS)), data.draw(st.integers(0, max(a.ndim - 1, 0))))
        return v, (ValueError if not v.flags.c_contiguous else None)
    if kind == "readonly":
        v = relayout(a, "readonly")
        return v, (ValueError if name == "out" else None)
    bad = data.draw(st.sampled_from(NOT_ARRAYS + [b"abc", {"x": 1}]))
    return bad, ((TypeError, ValueError) if isinstance(bad, bytes) else TypeError)  # bytes: a 1-D uint8 buffer


def run_native(data, fn, args: dict, corruptible: list[str], expect_ok, ok_dtypes=None, shape_ok=None):
    """Call ``fn(**args)`` with at most one argument corrupted; valid -> ``expect_ok(args)`` checks
    the result, corrupted -> TypeError/ValueError naming that argument (or success where the
    corruption is harmless, e.g. a read-only input)."""
    which = data.draw(st.sampled_from([None, None] + corruptible), label="corrupt")
    exc = None
    if which is not None:
        bad, exc = corrupt_array(data, args[which], which, (ok_dtypes or {}).get(which, ()),
                                 (shape_ok or {}).get(which))
        note(f"{which} -> {type(bad).__name__} {getattr(bad, 'dtype', '')} {getattr(bad, 'shape', '')} "
             f"expect {exc}")
        args = dict(args, **{which: bad})
    if exc == "maybe":  # still a valid call, other values: it must not crash, nothing to compare
        try:
            fn(**args)
        except ValueError as e:
            assert any(n in str(e) for n in args), str(e)
        return
    if exc is not None:
        # A shape is relational: a main input reshaped into another valid shape is reported as
        # the mismatch of the arrays that must agree with it (out, ab, ...), any of them named.
        names = list(args) if exc is ValueError else [which.split("[")[0]]
        return expect_error(lambda: fn(**args), names, exc)
    fn(**args)
    expect_ok(args)


@FUZZ
@given(data=st.data())
def test_fuzz_native_rgb_to_lab(data):
    N, H, W = data.draw(st.integers(0, 2)), data.draw(st.integers(1, 12)), data.draw(st.integers(1, 12))
    size = data.draw(st.integers(0, 16))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    img = rng.integers(0, 256, (N, H, W, 3), dtype=np.uint8)
    out = np.full((N, 3, size or H, size or W), np.nan, np.float32)
    want = ref_lab_u8(img, size or None)
    if data.draw(st.booleans()):
        def ok(a):
            np.testing.assert_allclose(a["out"], want, rtol=0, atol=ATOL)
        return run_native(data, _native.rgb_to_lab_u8, dict(rgb=img, size=size, out=out), ["rgb", "out"], ok)
    bad = data.draw(st.sampled_from([-1, -2**40, 65537, 2**62]))
    expect_error(lambda: _native.rgb_to_lab_u8(img, bad, out), ["size"], ValueError)
    f = rng.random((N, 3, H, W)).astype(np.float32)
    want_f = color.rgb_to_lab(torch.from_numpy(f)).numpy()
    return run_native(data, _native.rgb_to_lab_f32, dict(rgb=f, out=np.empty_like(f)), ["rgb", "out"],
                      lambda a: np.testing.assert_allclose(a["out"], want_f, rtol=0, atol=ATOL))


@FUZZ
@given(data=st.data())
def test_fuzz_native_lab_to_rgb(data):
    shape = (data.draw(st.integers(0, 2)), 3, data.draw(st.integers(0, 12)), data.draw(st.integers(0, 12)))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    lab = floats(rng, shape, -1, 1, 0.05).astype(np.float32)
    want = color.lab_to_rgb(torch.from_numpy(lab)).numpy()
    run_native(data, _native.lab_to_rgb, dict(lab=lab, out=np.empty_like(lab)), ["lab", "out"],
               lambda a: np.testing.assert_allclose(a["out"], want, rtol=1e-5, atol=ATOL, equal_nan=True))


@FUZZ
@given(data=st.data())
def test_fuzz_native_roi_crop_resize(data):
    H, W = data.draw(st.integers(1, 16)), data.draw(st.integers(1, 16))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    img = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    M, size = data.draw(st.integers(0, 4)), data.draw(st.integers(1, 12))
    boxes = data.draw(weird_boxes(H, W, M))
    box_image = np.array([data.draw(st.sampled_from([0, 0, 0, -1, 1, 2**62, -2**63])) for _ in range(M)], np.int64)
    out = np.full((M, 1, size, size), np.nan, np.float32)
    problems = [(i, box_problem(boxes[i], int(box_image[i]), [(H, W)])) for i in range(M)]
    first = next(((i, p) for i, p in problems if p), None)
    if first is not None:
        i, p = first
        name = f"box_image[{i}]" if p == "box_image" else f"boxes[{i}]"
        return expect_error(lambda: _native.roi_crop_resize([img], boxes, box_image, size, out), [name], ValueError)
    if data.draw(st.booleans()):
        bad = data.draw(st.sampled_from([0, -1, 65537, 2**40]))
        return expect_error(lambda: _native.roi_crop_resize([img], boxes, box_image, bad, out), ["size"], ValueError)
    if data.draw(st.booleans()):  # the image list itself
        bad = data.draw(st.sampled_from([img, None, "abc", [img, 5]]))
        return expect_error(lambda: _native.roi_crop_resize(bad, boxes, box_image, size, out), ["image"], TypeError)
    want = ref_crop_L(img, boxes, size) if M else out

    def call(image, boxes, box_image, out):
        return _native.roi_crop_resize([image] if not isinstance(image, list) else image, boxes, box_image, size, out)

    run_native(data, call, dict(image=img, boxes=boxes, box_image=box_image, out=out), ["image", "boxes", "box_image",
                                                                                         "out"],
               lambda a: np.testing.assert_allclose(a["out"], want, rtol=0, atol=ATOL),
               shape_ok={"image": lambda s: len(s) == 3 and s[2] == 3 and min(s[:2]) >= 1})


@FUZZ
@given(case=fuse_case(max_per_image=4), data=st.data())
def test_fuzz_native_fuse_instances(case, data):
    bg, bl, fi, li, info, img = case
    B, _, H, W = bg.shape
    M = len(info)
    out = np.full(bg.shape, np.nan, np.float32)
    if M and data.draw(st.booleans()):  # box_info / inst_image values straight into C++
        i, j = data.draw(st.integers(0, M - 1)), data.draw(st.integers(0, 6))
        info, img = info.copy(), img.copy()
        if j < 6:
            info[i, j] = data.draw(st.sampled_from(BIG + [-1, info[i, j] + 1]))
            name = f"box_info[{i}]"
        else:
            img[i] = data.draw(st.sampled_from([-1, B] + BIG))
            name = f"inst_image[{i}]"
        return expect_error(lambda: _native.fuse_instances(bg, bl, fi, li, info, img, out), [name], ValueError)
    run_native(data, _native.fuse_instances,
               dict(bg_feat=bg, bg_logit=bl, inst_feat=fi, inst_logit=li, box_info=info, inst_image=img, out=out),
               ["bg_feat", "bg_logit", "inst_feat", "inst_logit", "box_info", "inst_image", "out"],
               lambda a: assert_fuse_close(a["out"], bg, bl, fi, li, info, img))


@FUZZ
@given(data=st.data())
def test_fuzz_native_compose(data):
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    if data.draw(st.booleans()):
        H, W = data.draw(st.integers(0, 16)), data.draw(st.integers(0, 16))
        h, w = data.draw(st.integers(1, 12)), data.draw(st.integers(1, 12))
        img = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
        ab = (rng.standard_normal((2, h, w)) * 0.3).astype(np.float32)
        want = ops.compose(img, ab)  # checked against the reference by test_fuzz_compose
        return run_native(data, _native.compose, dict(image=img, ab=ab, out=np.zeros((H, W, 3), np.uint8)),
                          ["image", "ab", "out"], lambda a: np.testing.assert_array_equal(a["out"], want),
                          shape_ok={"ab": lambda s: len(s) == 3 and s[0] == 2 and min(s[1:]) >= 1})
    S1, S2 = data.draw(st.integers(0, 12)), data.draw(st.integers(0, 12))
    L = floats(rng, (1, S1, S2), -0.6, 0.6, 0.05).astype(np.float32)
    ab = floats(rng, (2, S1, S2), -1, 1, 0.05).astype(np.float32)
    want = ref_u8(color.lab_to_rgb(torch.from_numpy(np.concatenate([L, ab]))[None]))[0]
    run_native(data, _native.compose_processed, dict(full_L=L, ab=ab, out=np.zeros((S1, S2, 3), np.uint8)),
               ["full_L", "ab", "out"], lambda a: assert_u8_close(a["out"], want))


# ----------------------------------------------------------------------------- malformed foreign arrays
class FakeCAI:
    """An object claiming to be a CUDA array with a malformed or lying __cuda_array_interface__."""

    def __init__(self, cai):
        self.__cuda_array_interface__ = cai


@FUZZ
@given(data=st.data())
def test_fuzz_native_malformed_cuda_array_interface(data):
    shape = data.draw(st.sampled_from([(2, 3), (-1, 4), (2**62, 2**62), (2**40, 2**40, 2**40), (0, 2**40, 2**40),
                                       (2**64, 1), ("a", 3), None]))
    cai = {"shape": shape, "typestr": data.draw(st.sampled_from(["<f4", "<f", "<fz", "<f99999999999999999999",
                                                                 ">f4", "|u1", "<c8", 5])),
           "data": data.draw(st.sampled_from([(0, False), (2**64 - 1, False), (-1, True), None, (0,)])),
           "version": 3}
    if data.draw(st.booleans()):
        cai["strides"] = data.draw(st.sampled_from([None, (4,), (16, 4), (3, 1), ("x", 1)]))
    if data.draw(st.booleans()):
        del cai[data.draw(st.sampled_from(["shape", "typestr", "data"]))]
    fake = FakeCAI(cai)
    lab = np.zeros((1, 3, 2, 2), np.float32)
    expect_error(lambda: _native.lab_to_rgb(fake, lab), ["lab"])
    expect_error(lambda: _native.lab_to_rgb(lab, fake), ["out"])

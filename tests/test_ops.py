"""instcolor.ops (native CPU kernels) against the reference implementations and the golden vectors."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from instcolor import color, compose as compose_ref, fuse, ops, prepare

GOLDEN = Path(__file__).resolve().parents[2] / "shared" / "golden"
NEEDS_GOLDEN = pytest.mark.skipif(not GOLDEN.is_dir(), reason=f"golden vectors not found at {GOLDEN} (../shared beside the checkout)")
GOLDEN_CASES = sorted(GOLDEN.glob("v*.npz")) if GOLDEN.is_dir() else []

ATOL_LAB = 1e-5
ATOL_FUSE = 1e-5


# ----------------------------------------------------------------------------- helpers
def ref_lab_resized(img: np.ndarray, size: int | None) -> np.ndarray:
    if size is not None:
        img = prepare.pil_bilinear_resize(img, size, size)
    return prepare.lab_of_uint8(img)[0]


def ref_crop_L(img: np.ndarray, boxes, size: int) -> np.ndarray:
    ib = np.trunc(np.asarray(boxes, np.float64)).astype(np.int64).reshape(-1, 4)
    if len(ib) == 0:
        return np.zeros((0, 1, size, size), np.float32)
    crops = np.stack([prepare.pil_bilinear_resize(img[y0:y1, x0:x1], size, size) for x0, y0, x1, y1 in ib.tolist()])
    return prepare.lab_of_uint8(crops)[:, :1]


def u8_of_lab(lab: np.ndarray) -> np.ndarray:
    """Recover the 8-bit RGB a normalised Lab came from (round trip error << 0.5 level): proves
    that the resampled bytes are identical, not just close."""
    rgb = color.lab_to_rgb(torch.from_numpy(np.ascontiguousarray(lab)).reshape(-1, 3, *lab.shape[-2:]))
    return np.round(rgb.numpy() * 255).astype(np.int64)


def assert_u8_close(got: np.ndarray, want: np.ndarray, max_frac: float = 1e-3):
    d = np.abs(got.astype(np.int16) - want.astype(np.int16))
    assert d.max() <= 1, f"uint8 difference up to {d.max()}"
    assert (d > 0).mean() <= max_frac


def random_box_info(rng, W: int, H: int) -> list[int]:
    wd = int(rng.integers(1, W + 1))
    ht = int(rng.integers(1, H + 1))
    left = int(rng.integers(0, W - wd + 1))
    top = int(rng.integers(0, H - ht + 1))
    return [left, W - left - wd, top, H - top - ht, wd, ht]


# ----------------------------------------------------------------------------- build info
def test_cuda_flags_are_bools_and_never_raise():
    assert isinstance(ops.cuda_compiled(), bool)
    assert isinstance(ops.cuda_available(), bool)
    if not ops.cuda_available():
        assert ops.cuda_unavailable_reason()
    assert ops.MAX_INSTANCES == 8


# ----------------------------------------------------------------------------- rgb_to_lab
@pytest.mark.parametrize("hw,size", [
    ((120, 160), 64), ((320, 480), 256), ((296, 300), 128),  # golden-like downscales
    ((300, 17), 32), ((9, 250), 16),                          # tall / wide
    ((5, 3), 24), ((1, 1), 8), ((1, 7), 8),                   # upscaling, 1-pixel
    ((64, 64), 64), ((64, 100), 64), ((37, 41), 13),          # one axis unchanged, odd sizes
])
def test_rgb_to_lab_resize_matches_reference(hw, size):
    rng = np.random.default_rng(hash(hw) % 1000 + size)
    img = rng.integers(0, 256, hw + (3,), dtype=np.uint8)
    got = ops.rgb_to_lab(img, size)
    assert got.shape == (3, size, size) and got.dtype == np.float32
    want = ref_lab_resized(img, size)
    np.testing.assert_allclose(got, want, rtol=0, atol=ATOL_LAB)
    np.testing.assert_array_equal(u8_of_lab(got)[0].transpose(1, 2, 0), prepare.pil_bilinear_resize(img, size, size))


def test_rgb_to_lab_no_resize_and_batch():
    rng = np.random.default_rng(1)
    imgs = rng.integers(0, 256, (3, 21, 34, 3), dtype=np.uint8)
    got = ops.rgb_to_lab(imgs)
    assert got.shape == (3, 3, 21, 34)
    np.testing.assert_allclose(got, prepare.lab_of_uint8(imgs), rtol=0, atol=ATOL_LAB)
    got = ops.rgb_to_lab(imgs, 16)
    for k in range(3):
        np.testing.assert_allclose(got[k], ref_lab_resized(imgs[k], 16), rtol=0, atol=ATOL_LAB)


def test_rgb_to_lab_all_levels_exact_grey_and_colour():
    levels = np.arange(256, dtype=np.uint8)
    img = np.stack(np.meshgrid(levels, levels[::-1], indexing="xy"), -1)
    img = np.concatenate([img, img[..., :1]], -1).astype(np.uint8)  # 256x256, every (r, g) pair
    np.testing.assert_allclose(ops.rgb_to_lab(img), prepare.lab_of_uint8(img)[0], rtol=0, atol=ATOL_LAB)


def test_rgb_to_lab_float_matches_reference():
    rng = np.random.default_rng(2)
    rgb = rng.random((3, 40, 50)).astype(np.float32)
    rgb[:, 0, :10] = np.float32(0.04045)  # the linearisation threshold itself
    want = color.rgb_to_lab(torch.from_numpy(rgb)[None])[0].numpy()
    np.testing.assert_allclose(ops.rgb_to_lab(rgb), want, rtol=0, atol=ATOL_LAB)
    np.testing.assert_allclose(ops.rgb_to_lab(rgb.astype(np.float64)), want, rtol=0, atol=ATOL_LAB)


def test_lab_to_rgb_matches_reference():
    rng = np.random.default_rng(3)
    lab = ((rng.random((2, 3, 30, 40)) - 0.5) * np.array([1.2, 2.5, 2.5])[None, :, None, None]).astype(np.float32)
    want = color.lab_to_rgb(torch.from_numpy(lab)).numpy()
    got = ops.lab_to_rgb(lab)
    assert got.shape == lab.shape
    np.testing.assert_allclose(got, want, rtol=0, atol=ATOL_LAB)
    assert (got > 1).any() and got.min() >= 0  # no upper clamp, clamped at 0
    np.testing.assert_allclose(ops.lab_to_rgb(lab[0]), want[0], rtol=0, atol=ATOL_LAB)


# ----------------------------------------------------------------------------- roi_crop_resize
def _crop_boxes(rng, H, W):
    boxes = [
        [0, 0, W, H],                       # the whole image
        [0, 0, 1, 1],                       # 1-pixel box in the corner
        [W - 1, H - 1, W, H],               # 1-pixel box in the other corner
        [0, 3.9, 1.5, H],                   # 1-pixel-wide, tall, on the left border (floats truncated)
        [2.2, H - 2, W, H - 0.1],           # 1-pixel-high wide strip on the bottom border
        [W / 3, H / 4, W / 3 + 5.7, H / 4 + 4.2],  # small: upscaled
    ]
    for _ in range(6):
        x0, x1 = sorted(rng.uniform(0, W, 2))
        y0, y1 = sorted(rng.uniform(0, H, 2))
        if int(x1) > int(x0) and int(y1) > int(y0):
            boxes.append([x0, y0, x1, y1])
    return np.array(boxes, np.float64)


@pytest.mark.parametrize("hw,size", [((120, 160), 64), ((61, 300), 32), ((400, 90), 48), ((7, 9), 16)])
def test_roi_crop_resize_matches_reference(hw, size):
    rng = np.random.default_rng(size)
    img = rng.integers(0, 256, hw + (3,), dtype=np.uint8)
    boxes = _crop_boxes(rng, *hw)
    got = ops.roi_crop_resize(img, boxes, size)
    assert got.shape == (len(boxes), 1, size, size) and got.dtype == np.float32
    np.testing.assert_allclose(got, ref_crop_L(img, boxes, size), rtol=0, atol=ATOL_LAB)
    # same crops through rgb_to_lab(crop, size): identical L
    ib = np.trunc(boxes).astype(int)
    for m, (x0, y0, x1, y1) in enumerate(ib.tolist()):
        np.testing.assert_array_equal(got[m, 0], ops.rgb_to_lab(np.ascontiguousarray(img[y0:y1, x0:x1]), size)[0])


def test_roi_crop_resize_several_images_and_empty():
    rng = np.random.default_rng(5)
    imgs = [rng.integers(0, 256, s + (3,), dtype=np.uint8) for s in ((50, 70), (33, 20), (90, 90))]
    boxes = np.array([[1, 2, 30, 40], [0, 0, 20, 33], [10.5, 10.5, 89.9, 60], [5, 5, 6, 6]])
    box_image = np.array([0, 1, 2, 1])
    got = ops.roi_crop_resize(imgs, boxes, 24, box_image=box_image)
    for m, k in enumerate(box_image):
        np.testing.assert_allclose(got[m:m + 1], ref_crop_L(imgs[k], boxes[m:m + 1], 24), rtol=0, atol=ATOL_LAB)
    # a (N, H, W, 3) batch of equal-size images
    batch = rng.integers(0, 256, (2, 30, 40, 3), dtype=np.uint8)
    got = ops.roi_crop_resize(batch, [[0, 0, 40, 30], [3, 4, 20, 10]], 16, box_image=[1, 0])
    np.testing.assert_allclose(got[0:1], ref_crop_L(batch[1], [[0, 0, 40, 30]], 16), rtol=0, atol=ATOL_LAB)
    np.testing.assert_allclose(got[1:2], ref_crop_L(batch[0], [[3, 4, 20, 10]], 16), rtol=0, atol=ATOL_LAB)
    # M = 0
    for empty in (np.zeros((0, 4)), [], torch.zeros(0, 4)):
        out = ops.roi_crop_resize(imgs[0], empty, 16)
        assert out.shape == (0, 1, 16, 16) and out.dtype == np.float32
    out = ops.roi_crop_resize(imgs, np.zeros((0, 4)), 16, box_image=np.zeros(0, np.int64))
    assert out.shape == (0, 1, 16, 16)
    assert ops.roi_crop_resize(imgs, [], 16, box_image=[]).shape == (0, 1, 16, 16)


def test_roi_crop_resize_matches_select_boxes_pipeline():
    """Same numbers as prepare.prepare() on detector-like float boxes."""
    rng = np.random.default_rng(6)
    img = rng.integers(0, 256, (97, 131, 3), dtype=np.uint8)
    det = np.array([[3.7, 8.2, 60.9, 90.1], [100.2, 0.0, 131.0, 97.0], [0.5, 0.5, 1.9, 2.1]], np.float32)
    ib = prepare.select_boxes(det, image_hw=img.shape[:2])
    want = prepare.prepare(img, ib, None, 32).crop_L
    np.testing.assert_allclose(ops.roi_crop_resize(img, det, 32), want, rtol=0, atol=ATOL_LAB)
    np.testing.assert_allclose(ops.roi_crop_resize(img, torch.from_numpy(ib), 32), want, rtol=0, atol=ATOL_LAB)


# ----------------------------------------------------------------------------- fuse_instances
def _fuse_case(rng, B, C, H, W, h, w, counts, dtype=np.float32):
    M = int(sum(counts))
    bg = rng.standard_normal((B, C, H, W)).astype(dtype)
    bl = (rng.standard_normal((B, 1, H, W)) * 2).astype(dtype)
    fi = rng.standard_normal((M, C, h, w)).astype(dtype)
    li = (np.abs(rng.standard_normal((M, 1, h, w))) * 3).astype(dtype)  # non-negative, like the ReLU'd logits
    info = np.array([random_box_info(rng, W, H) for _ in range(M)], np.int64).reshape(M, 6)
    img = np.concatenate([np.full(c, b) for b, c in enumerate(counts)]).astype(np.int64) if M else np.zeros(0, np.int64)
    perm = rng.permutation(M)  # instances of one image need not be contiguous
    return bg, bl, fi[perm], li[perm], info[perm], img[perm]


def _fuse_ref(bg, bl, fi, li, info, img):
    t = [torch.from_numpy(np.ascontiguousarray(a)) for a in (bg, bl, fi, li)]
    return fuse.fuse_instances_reference(*t, torch.from_numpy(info), torch.from_numpy(img)).numpy()


@pytest.mark.parametrize("B,C,H,W,h,w,counts", [
    (1, 8, 16, 16, 16, 16, [3]),
    (3, 5, 24, 20, 24, 24, [2, 0, 3]),          # B > 1, different counts, one image without instances
    (2, 4, 32, 32, 8, 8, [1, 8]),               # upscaling features into boxes, 8 instances
    (1, 16, 8, 8, 64, 64, [5]),                 # heavy downscaling (S/8-like grid)
    (1, 3, 13, 29, 11, 7, [4]),                 # odd sizes
    (2, 6, 16, 16, 16, 16, [0, 0]),             # M = 0
])
def test_fuse_instances_matches_reference(B, C, H, W, h, w, counts):
    rng = np.random.default_rng(B * 100 + C)
    args = _fuse_case(rng, B, C, H, W, h, w, counts)
    got = ops.fuse_instances(*args)
    assert got.shape == (B, C, H, W) and got.dtype == np.float32
    np.testing.assert_allclose(got, _fuse_ref(*args), rtol=0, atol=ATOL_FUSE)
    for b, c in enumerate(counts):
        if c == 0:
            np.testing.assert_array_equal(got[b], args[0][b])
    if sum(counts) == 0:  # plain empty lists for the index arrays
        np.testing.assert_array_equal(ops.fuse_instances(*args[:4], [], []), args[0])


@pytest.mark.parametrize("B,C,H,W,h,w,counts", [
    (1, 8, 16, 16, 16, 16, [3]),
    (3, 5, 24, 20, 24, 24, [2, 0, 3]),          # B > 1, one image without instances
    (1, 16, 8, 8, 64, 64, [5]),                 # heavy downscaling
    (1, 3, 13, 29, 11, 7, [8]),                 # odd sizes, 8 instances
    (1, 6, 16, 16, 16, 16, [0]),                # M = 0
])
def test_fuse_instances_presampled_is_bit_identical(B, C, H, W, h, w, counts):
    """An edit session samples its instances once (fuse_sample_instances), then blends with
    fuse_instances_presampled: exactly fuse_instances' floats."""
    bg, bl, fi, li, info, img = _fuse_case(np.random.default_rng(B * 10 + C), B, C, H, W, h, w, counts)
    ps = ops.fuse_sample_instances(fi, li, info, H, W)
    area = int((info[:, 4] * info[:, 5]).sum())
    assert ps.samples.shape == (C * area,) and ps.logit_samples.shape == (area,) and ps.nbytes >= 4 * (C + 1) * area
    np.testing.assert_array_equal(ops.fuse_instances_presampled(bg, bl, ps, img), ops.fuse_instances(bg, bl, fi, li, info, img))
    out = np.full_like(bg, np.nan)
    assert ops.fuse_instances_presampled(bg, bl, ps, img, out=out) is out
    np.testing.assert_array_equal(out, ops.fuse_instances(bg, bl, fi, li, info, img))


def test_fuse_presampled_errors_name_the_argument():
    from instcolor import _native

    bg, bl, fi, li, info, img = _fuse_case(np.random.default_rng(4), 1, 4, 16, 16, 8, 8, [2])
    ps = ops.fuse_sample_instances(fi, li, info, 16, 16)
    with pytest.raises(ValueError, match="bg_feat"):
        ops.fuse_instances_presampled(bg[:, :3], bl, ps)  # other channels than sampled
    with pytest.raises(ValueError, match=r"box_info\[0\]"):
        ops.fuse_sample_instances(fi, li, info + np.array([100, 0, 0, 0, 0, 0]), 16, 16)
    with pytest.raises(TypeError, match="inst_feat"):
        ops.fuse_sample_instances(fi.astype(np.float64), li, info, 16, 16)
    with pytest.raises(ValueError, match="inst_logit"):
        ops.fuse_sample_instances(fi, li[:, :, :4], info, 16, 16)
    with pytest.raises(TypeError, match="presampled"):
        ops.fuse_instances_presampled(bg, bl, (ps.samples, ps.logit_samples))
    # the native entry points check the buffers themselves
    with pytest.raises(ValueError, match="samples"):
        _native.fuse_instances_presampled(bg, bl, ps.samples[:-1], ps.logit_samples, ps.box_info, img, np.empty_like(bg))
    with pytest.raises(ValueError, match="logit_samples"):
        _native.fuse_sample_instances(fi, li, info, 16, 16, np.empty_like(ps.samples), np.empty(3, np.float32))
    with pytest.raises(ValueError, match="map size"):
        _native.fuse_sample_instances(fi, li, info, 0, 16, np.empty_like(ps.samples), np.empty_like(ps.logit_samples))


def test_fuse_instances_edge_boxes():
    """1-pixel boxes, boxes on every border, a full-map box, identical boxes."""
    rng = np.random.default_rng(9)
    B, C, H, W, h, w = 1, 4, 16, 16, 16, 16
    info = np.array([
        [0, 15, 0, 15, 1, 1], [15, 0, 15, 0, 1, 1], [0, 0, 0, 0, 16, 16],
        [0, 15, 3, 5, 1, 8], [4, 4, 0, 15, 8, 1], [4, 4, 0, 15, 8, 1],
    ], np.int64)
    M = len(info)
    bg, bl = rng.standard_normal((B, C, H, W)).astype(np.float32), rng.standard_normal((B, 1, H, W)).astype(np.float32)
    fi, li = rng.standard_normal((M, C, h, w)).astype(np.float32), rng.random((M, 1, h, w)).astype(np.float32) * 4
    img = np.zeros(M, np.int64)
    got = ops.fuse_instances(bg, bl, fi, li, info, img)
    np.testing.assert_allclose(got, _fuse_ref(bg, bl, fi, li, info, img), rtol=0, atol=ATOL_FUSE)
    # outside every box the background weight is exactly 1
    got = ops.fuse_instances(bg, bl, fi[:2], li[:2], info[:2], img[:2])
    mask = np.ones((H, W), bool)
    mask[0, 0] = mask[15, 15] = False
    np.testing.assert_array_equal(got[0][:, mask], bg[0][:, mask])


def test_fuse_instances_thirteen_layer_shapes_small():
    """The fusion net's 13 (C, grid) combinations (channels scaled down), 3 + 2 boxes on 2 images."""
    rng = np.random.default_rng(13)
    S = 32
    chans = [64, 128, 256, 512, 512, 512, 512, 256, 256, 128, 128, 128, 128]
    grids = [S, S // 2, S // 4, S // 8, S // 8, S // 8, S // 8, S // 4, S // 4, S // 2, S // 2, S, S]
    boxes = np.array([[0, 0, 50, 40], [10, 30, 100, 100], [99, 0, 100, 1], [20, 20, 21, 80], [0, 0, 100, 100]])
    img_of = np.array([0, 0, 0, 1, 1])
    for c, g in zip(chans, grids):
        info = np.concatenate([prepare.box_info(boxes[:3], (100, 100), g), prepare.box_info(boxes[3:], (100, 100), g)])
        C = c // 16
        bg = rng.standard_normal((2, C, g, g)).astype(np.float32)
        bl = rng.random((2, 1, g, g)).astype(np.float32)
        fi = rng.standard_normal((5, C, g, g)).astype(np.float32)
        li = rng.random((5, 1, g, g)).astype(np.float32) * 3
        np.testing.assert_allclose(ops.fuse_instances(bg, bl, fi, li, info, img_of),
                                   _fuse_ref(bg, bl, fi, li, info, img_of), rtol=0, atol=ATOL_FUSE)


def test_fuse_instances_torch_family_and_noncontiguous():
    rng = np.random.default_rng(11)
    args = _fuse_case(rng, 2, 6, 12, 12, 12, 12, [2, 1])
    want = _fuse_ref(*args)
    bg, bl, fi, li, info, img = (torch.from_numpy(a) for a in args)
    bg_nc = bg.transpose(2, 3).contiguous().transpose(2, 3)  # same values, non-contiguous
    assert not bg_nc.is_contiguous()
    got = ops.fuse_instances(bg_nc.requires_grad_(True), bl, fi, li, info, img)
    assert isinstance(got, torch.Tensor) and got.dtype == torch.float32 and got.device.type == "cpu"
    np.testing.assert_allclose(got.numpy(), want, rtol=0, atol=ATOL_FUSE)
    # inst_image defaults to 0 when B == 1
    a1 = _fuse_case(rng, 1, 3, 8, 8, 8, 8, [3])
    np.testing.assert_allclose(ops.fuse_instances(*a1[:5]), _fuse_ref(*a1), rtol=0, atol=ATOL_FUSE)


@pytest.mark.parametrize("path", [p for p in GOLDEN_CASES if "nobox" not in p.stem][:3], ids=lambda p: p.stem)
@NEEDS_GOLDEN
def test_fuse_instances_with_golden_box_info(path):
    """box_info of the golden cases (incl. the thin-box branches) at all four levels."""
    z = dict(np.load(path))
    rng = np.random.default_rng(0)
    S = int(z["fine_size"])
    for key, g in (("box_info", S), ("box_info_2x", S // 2), ("box_info_4x", S // 4), ("box_info_8x", S // 8)):
        info = z[key]
        M = len(info)
        bg = rng.standard_normal((1, 4, g, g)).astype(np.float32)
        bl = rng.random((1, 1, g, g)).astype(np.float32)
        fi = rng.standard_normal((M, 4, g, g)).astype(np.float32)
        li = rng.random((M, 1, g, g)).astype(np.float32) * 3
        img = np.zeros(M, np.int64)
        np.testing.assert_allclose(ops.fuse_instances(bg, bl, fi, li, info, img), _fuse_ref(bg, bl, fi, li, info, img),
                                   rtol=0, atol=ATOL_FUSE)


# ----------------------------------------------------------------------------- compose
@pytest.mark.parametrize("hw,S", [((120, 160), 64), ((50, 40), 64), ((1, 1), 8), ((333, 77), 32)])
def test_compose_matches_reference(hw, S):
    rng = np.random.default_rng(S + hw[0])
    img = rng.integers(0, 256, hw + (3,), dtype=np.uint8)
    ab = (rng.standard_normal((2, S, S)) * 0.3).astype(np.float32)
    got = ops.compose(img, ab)
    assert got.shape == img.shape and got.dtype == np.uint8
    assert_u8_close(got, compose_ref.compose_reference(img, ab))
    np.testing.assert_array_equal(ops.compose(img, ab[None]), got)


def test_compose_processed_matches_reference():
    rng = np.random.default_rng(4)
    L = (rng.random((1, 48, 48)) - 0.5).astype(np.float32)
    ab = (rng.standard_normal((2, 48, 48)) * 0.4).astype(np.float32)
    got = ops.compose_processed(L, ab)
    assert got.shape == (48, 48, 3) and got.dtype == np.uint8
    assert_u8_close(got, compose_ref.compose_processed_reference(L, ab))
    np.testing.assert_array_equal(ops.compose_processed(L[None], ab[None]), got)
    np.testing.assert_array_equal(ops.compose_processed(L[0], ab), got)
    t = ops.compose_processed(torch.from_numpy(L), torch.from_numpy(ab))
    assert isinstance(t, torch.Tensor) and t.dtype == torch.uint8
    np.testing.assert_array_equal(t.numpy(), got)


# ----------------------------------------------------------------------------- families
def test_torch_in_torch_out():
    rng = np.random.default_rng(8)
    img = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    t = ops.rgb_to_lab(torch.from_numpy(img), 16)
    assert isinstance(t, torch.Tensor) and t.shape == (3, 16, 16)
    np.testing.assert_array_equal(t.numpy(), ops.rgb_to_lab(img, 16))
    r = ops.roi_crop_resize(torch.from_numpy(img), torch.tensor([[0, 0, 10, 10]]), 8)
    assert isinstance(r, torch.Tensor)
    np.testing.assert_array_equal(r.numpy(), ops.roi_crop_resize(img, [[0, 0, 10, 10]], 8))
    # non-contiguous numpy input (a view with strides)
    big = rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)
    view = big[::2, ::2]
    np.testing.assert_array_equal(ops.rgb_to_lab(view, 16), ops.rgb_to_lab(np.ascontiguousarray(view), 16))


# ----------------------------------------------------------------------------- golden vectors
@NEEDS_GOLDEN
@pytest.mark.parametrize("path", GOLDEN_CASES, ids=[p.stem for p in GOLDEN_CASES])
def test_golden_case(path):
    z = dict(np.load(path))
    S = int(z["fine_size"])
    full = ops.rgb_to_lab(z["image"], S)
    np.testing.assert_allclose(full[:1], z["full_L"][0], rtol=0, atol=1e-5)
    np.testing.assert_array_equal(u8_of_lab(full)[0].transpose(1, 2, 0), z["full_rgb_u8"])
    np.testing.assert_allclose(full[1:], z["full_ab"][0], rtol=0, atol=1e-5)
    crops = ops.roi_crop_resize(z["image"], z["boxes"], S)
    assert crops.shape == z["crop_L"].shape
    np.testing.assert_allclose(crops, z["crop_L"], rtol=0, atol=1e-5)
    for m in range(len(z["boxes"])):
        x0, y0, x1, y1 = z["boxes"][m].tolist()
        lab = ops.rgb_to_lab(np.ascontiguousarray(z["image"][y0:y1, x0:x1]), S)
        np.testing.assert_array_equal(u8_of_lab(lab)[0].transpose(1, 2, 0), z["crops_rgb_u8"][m])
    ab = z["fusion_out_reg"][0] if "fusion_out_reg" in z else z["gcomp_out_reg"][0]
    out = ops.compose_processed(z["full_L"], ab)
    d = np.abs(out.astype(np.int16) - z["out_rgb_u8"].astype(np.int16))
    assert d.max() <= 1 and (d > 0).mean() < 0.005
    assert ops.compose(z["image"], ab).shape == z["image"].shape


@NEEDS_GOLDEN
def test_golden_color_conversion():
    c = np.load(GOLDEN / "color_conversion.npz")
    np.testing.assert_allclose(ops.rgb_to_lab(c["rgb_in"][0]), c["lab_norm_out"][0], rtol=0, atol=1e-5)
    np.testing.assert_allclose(ops.lab_to_rgb(c["lab_norm_in"][0]), c["rgb_out"][0], rtol=0, atol=1e-5)
    np.testing.assert_allclose(ops.rgb_to_lab(torch.from_numpy(c["rgb_in"])).numpy(), c["lab_norm_out"], rtol=0, atol=1e-5)


# ----------------------------------------------------------------------------- errors
IMG = np.zeros((20, 30, 3), np.uint8)


@pytest.mark.parametrize("boxes,match", [
    ([[5, 5, 5.9, 10]], r"boxes\[0\].*zero or negative area"),
    ([[6, 5, 5, 10]], r"boxes\[0\].*zero or negative area"),
    ([[0, 0, 31, 10]], r"boxes\[0\].*outside the 30x20 image"),
    ([[-1, 0, 10, 10]], r"boxes\[0\].*outside"),
    ([[0, 0, 10, 10], [0, 15, 10, 21]], r"boxes\[1\].*outside"),
    ([[np.nan, 0, 10, 10]], r"boxes\[0\].*NaN or infinite"),
    ([[0, 0, np.inf, 10]], r"boxes\[0\].*NaN or infinite"),
    ([[0, 0, 10]], r"boxes must have shape \(M, 4\)"),
])
def test_roi_crop_resize_bad_boxes(boxes, match):
    with pytest.raises(ValueError, match=match):
        ops.roi_crop_resize(IMG, np.array(boxes, np.float64), 8)


def test_roi_crop_resize_bad_arguments():
    with pytest.raises(TypeError, match="image must be uint8"):
        ops.roi_crop_resize(IMG.astype(np.float32), [[0, 0, 1, 1]], 8)
    with pytest.raises(ValueError, match=r"image must have shape"):
        ops.roi_crop_resize(IMG[..., :2], [[0, 0, 1, 1]], 8)
    with pytest.raises(ValueError, match="box_image must have shape"):
        ops.roi_crop_resize(IMG, [[0, 0, 1, 1]], 8, box_image=[0, 0])
    with pytest.raises(ValueError, match="box_image is required"):
        ops.roi_crop_resize([IMG, IMG], [[0, 0, 1, 1]], 8)
    with pytest.raises(ValueError, match=r"box_image\[0\] = 2"):
        ops.roi_crop_resize([IMG, IMG], [[0, 0, 1, 1]], 8, box_image=[2])
    with pytest.raises(TypeError, match="box_image must be an integer"):
        ops.roi_crop_resize(IMG, [[0, 0, 1, 1]], 8, box_image=[0.5])
    with pytest.raises(ValueError, match="size must be"):
        ops.roi_crop_resize(IMG, [[0, 0, 1, 1]], 0)
    with pytest.raises(TypeError, match="size must be an int"):
        ops.roi_crop_resize(IMG, [[0, 0, 1, 1]], 8.0)
    with pytest.raises(TypeError, match="boxes must be a numeric"):
        ops.roi_crop_resize(IMG, np.array([["a", "b", "c", "d"]]), 8)


def test_color_bad_arguments():
    with pytest.raises(TypeError, match="rgb must be uint8"):
        ops.rgb_to_lab(np.zeros((3, 4, 4), np.int32))
    with pytest.raises(ValueError, match=r"rgb: uint8 input must have shape"):
        ops.rgb_to_lab(np.zeros((4, 4, 4), np.uint8))
    with pytest.raises(ValueError, match=r"rgb: float input must have shape"):
        ops.rgb_to_lab(np.zeros((4, 4, 3), np.float32))
    with pytest.raises(ValueError, match="size is only supported for uint8"):
        ops.rgb_to_lab(np.zeros((3, 4, 4), np.float32), 8)
    with pytest.raises(ValueError, match="rgb: empty image"):
        ops.rgb_to_lab(np.zeros((0, 4, 3), np.uint8), 8)
    with pytest.raises(TypeError, match="lab must be a floating"):
        ops.lab_to_rgb(np.zeros((3, 4, 4), np.uint8))
    with pytest.raises(ValueError, match="lab must have shape"):
        ops.lab_to_rgb(np.zeros((2, 4, 4), np.float32))
    with pytest.raises(TypeError, match="image must be uint8"):
        ops.compose(np.zeros((4, 4, 3), np.float32), np.zeros((2, 4, 4), np.float32))
    with pytest.raises(ValueError, match="ab must have shape"):
        ops.compose(np.zeros((4, 4, 3), np.uint8), np.zeros((3, 4, 4), np.float32))
    with pytest.raises(TypeError, match="ab must be a floating"):
        ops.compose(np.zeros((4, 4, 3), np.uint8), np.zeros((2, 4, 4), np.int64))
    with pytest.raises(ValueError, match="ab must have shape"):
        ops.compose_processed(np.zeros((1, 4, 4), np.float32), np.zeros((2, 4, 5), np.float32))
    with pytest.raises(ValueError, match="full_L must have shape"):
        ops.compose_processed(np.zeros((2, 4, 4), np.float32), np.zeros((2, 4, 4), np.float32))
    with pytest.raises(TypeError, match="rgb: expected an array"):
        ops.rgb_to_lab(None)


def _fuse_args(M=1, C=4, H=8, W=8):
    z = np.zeros
    return [z((1, C, H, W), np.float32), z((1, 1, H, W), np.float32), z((M, C, H, W), np.float32),
            z((M, 1, H, W), np.float32), np.array([[0, 0, 0, 0, W, H]] * M, np.int64).reshape(M, 6), np.zeros(M, np.int64)]


@pytest.mark.parametrize("i,value,exc,match", [
    (0, np.zeros((1, 4, 8, 8), np.float64), TypeError, "bg_feat must be float32"),
    (0, np.zeros((1, 4, 8, 8), np.int32), TypeError, "bg_feat must be a floating"),
    (0, np.zeros((1, 4, 8, 8), np.float16), TypeError, "float16 fusion is only implemented on CUDA"),
    (1, np.zeros((1, 1, 8, 8), np.float64), TypeError, "bg_logit is float64 but bg_feat is float32"),
    (1, np.zeros((1, 2, 8, 8), np.float32), ValueError, "bg_logit must have shape"),
    (2, np.zeros((1, 5, 8, 8), np.float32), ValueError, "inst_feat must have shape"),
    (3, np.zeros((2, 1, 8, 8), np.float32), ValueError, "inst_logit must have shape"),
    (4, np.array([[0, 0, 0, 0, 8, 8], [0, 0, 0, 0, 8, 8]]), ValueError, "box_info must have shape"),
    (4, np.array([[0, 0, 0, 1, 8, 8]]), ValueError, r"box_info\[0\].*does not describe"),
    (4, np.array([[0, 8, 0, 0, 0, 8]]), ValueError, r"box_info\[0\].*does not describe"),
    (4, np.array([[-1, 1, 0, 0, 8, 8]]), ValueError, r"box_info\[0\].*does not describe"),
    (4, np.array([[0, 0, 0, 0, 8, 8]], np.float32), TypeError, "box_info must be an integer"),
    (5, np.array([1]), ValueError, r"inst_image\[0\] = 1 is not a valid image index"),
    (5, np.array([0, 0]), ValueError, r"inst_image must have shape \(1,\)"),
])
def test_fuse_instances_bad_arguments(i, value, exc, match):
    args = _fuse_args()
    args[i] = value
    with pytest.raises(exc, match=match):
        ops.fuse_instances(*args)


def test_fuse_instances_too_many_instances_and_b_gt_1_needs_inst_image():
    with pytest.raises(ValueError, match="at most 8 per image"):
        ops.fuse_instances(*_fuse_args(M=9))
    args = _fuse_args()
    args[0] = np.zeros((2, 4, 8, 8), np.float32)
    args[1] = np.zeros((2, 1, 8, 8), np.float32)
    with pytest.raises(ValueError, match="inst_image is required when B > 1"):
        ops.fuse_instances(*args[:5])


def test_native_entry_points_validate_directly():
    """The C++ entry points are safe with bad sizes even without the Python wrapper."""
    from instcolor import _native

    img = np.zeros((1, 20, 30, 3), np.uint8)
    with pytest.raises(ValueError, match=r"rgb_to_lab: out must have shape \(1, 3, 16, 16\)"):
        _native.rgb_to_lab_u8(img, 16, np.zeros((1, 3, 8, 8), np.float32))
    with pytest.raises(ValueError, match="must be C-contiguous"):
        _native.rgb_to_lab_u8(img[:, ::2], 8, np.zeros((1, 3, 8, 8), np.float32))
    with pytest.raises(TypeError, match="out must be float32"):
        _native.rgb_to_lab_u8(img, 8, np.zeros((1, 3, 8, 8), np.float64))
    with pytest.raises(ValueError, match="read-only"):
        ro = np.zeros((1, 3, 8, 8), np.float32)
        ro.setflags(write=False)
        _native.rgb_to_lab_u8(img, 8, ro)
    out = np.zeros((1, 1, 8, 8), np.float32)
    with pytest.raises(ValueError, match=r"boxes\[0\].*outside"):
        _native.roi_crop_resize([img[0]], np.array([[0, 0, 50, 50.0]]), np.array([0]), 8, out)
    with pytest.raises(ValueError, match=r"boxes\[0\].*NaN"):
        _native.roi_crop_resize([img[0]], np.array([[np.nan, 0, 5, 5.0]]), np.array([0]), 8, out)
    with pytest.raises(ValueError, match=r"box_image\[0\] = 3"):
        _native.roi_crop_resize([img[0]], np.array([[0, 0, 5, 5.0]]), np.array([3]), 8, out)
    with pytest.raises(ValueError, match=r"out must have shape \(2, 1, 8, 8\)"):
        _native.roi_crop_resize([img[0]], np.array([[0, 0, 5, 5.0]] * 2), np.array([0, 0]), 8, out)
    with pytest.raises(TypeError, match="boxes must be float64"):
        _native.roi_crop_resize([img[0]], np.array([[0, 0, 5, 5]]), np.array([0]), 8, out)
    f = _fuse_args()
    with pytest.raises(ValueError, match=r"box_info\[0\]"):
        _native.fuse_instances(*f[:4], np.array([[0, 0, 0, 0, 8, 9]]), f[5], np.zeros((1, 4, 8, 8), np.float32))
    with pytest.raises(ValueError, match="out must have shape"):
        _native.fuse_instances(*f, np.zeros((1, 4, 8, 7), np.float32))
    with pytest.raises(ValueError, match="inst_image"):
        _native.fuse_instances(*f[:5], np.array([5]), np.zeros((1, 4, 8, 8), np.float32))
    with pytest.raises(ValueError, match="more than 8 instances"):
        g = _fuse_args(M=9)
        _native.fuse_instances(*g, np.zeros((1, 4, 8, 8), np.float32))
    with pytest.raises(ValueError, match="ab must have shape"):
        _native.compose(img[0], np.zeros((3, 4, 4), np.float32), np.zeros((20, 30, 3), np.uint8))
    with pytest.raises(TypeError, match="ab: expected a numpy array"):
        _native.compose(img[0], "abc", np.zeros((20, 30, 3), np.uint8))
    with pytest.raises(ValueError, match="out must have shape"):
        _native.compose_processed(np.zeros((1, 4, 4), np.float32), np.zeros((2, 4, 4), np.float32),
                                  np.zeros((4, 4, 4), np.uint8))
    # M = 0 straight into C++: nothing runs, no error
    _native.roi_crop_resize([img[0]], np.zeros((0, 4)), np.zeros(0, np.int64), 8, np.zeros((0, 1, 8, 8), np.float32))
    g = _fuse_args(M=0)
    o = np.full((1, 4, 8, 8), 7, np.float32)
    _native.fuse_instances(*g, o)
    np.testing.assert_array_equal(o, g[0])


# ----------------------------------------------------------------------------- no silent native fallback
class _BrokenNativeFinder:
    """A meta path finder that makes ``instcolor._native`` exist but fail to load, the way an
    extension with an ABI / linker problem does (its loader's create_module raises ImportError)."""

    ORIGIN = "/nonexistent/instcolor/_native.cpython-x86_64-linux-gnu.so"

    class _Loader:
        def create_module(self, spec):
            raise ImportError(f"{spec.origin}: undefined symbol: _ZN9instcolor3ops14broken_symbolEv")

        def exec_module(self, module):  # pragma: no cover - create_module always raises
            raise AssertionError("unreachable")

    def find_spec(self, fullname, path=None, target=None):
        import importlib.util

        if fullname == "instcolor._native":
            return importlib.util.spec_from_loader(fullname, self._Loader(), origin=self.ORIGIN)
        return None


@pytest.fixture
def fresh_native_import(monkeypatch):
    """Forget the imported instcolor.ops / instcolor._native (restored afterwards) and the
    once-per-process warning flag, so native_ops() imports again."""
    import sys

    import instcolor
    from instcolor import pipeline

    for mod in ("instcolor.ops", "instcolor._native"):
        monkeypatch.delitem(sys.modules, mod, raising=False)
    for attr in ("ops", "_native"):
        monkeypatch.delattr(instcolor, attr, raising=False)
    monkeypatch.setattr(pipeline, "_native_failure_reported", False)
    monkeypatch.delenv("INSTCOLOR_REQUIRE_NATIVE", raising=False)
    return monkeypatch


def _not_built(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "instcolor._native", None)  # import -> ModuleNotFoundError, find_spec -> None


def _broken(monkeypatch):
    import sys

    monkeypatch.setattr(sys, "meta_path", [_BrokenNativeFinder()] + sys.meta_path)


def test_native_ops_returns_the_module_when_it_loads(fresh_native_import, recwarn):
    from instcolor.pipeline import native_ops

    mod = native_ops()
    assert mod is not None and mod.__name__ == "instcolor.ops" and mod.MAX_INSTANCES == 8
    assert native_ops(require=True) is mod
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]


def test_native_ops_not_built_is_quiet_unless_required(fresh_native_import, recwarn):
    from instcolor.colorizer import Colorizer
    from instcolor.pipeline import NativeUnavailableError, native_ops

    _not_built(fresh_native_import)
    assert native_ops() is None
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]
    assert Colorizer(object()).ops is None  # the default: the reference code, quietly
    with pytest.raises(NativeUnavailableError, match=r"instcolor\._native is not built"):
        native_ops(require=True)
    with pytest.raises(ValueError, match=r"required but instcolor\._native is not built"):
        Colorizer(object(), native=True)
    fresh_native_import.setenv("INSTCOLOR_REQUIRE_NATIVE", "1")
    with pytest.raises(NativeUnavailableError, match="not built"):
        native_ops()
    with pytest.raises(NativeUnavailableError, match="not built"):
        Colorizer(object())
    assert Colorizer(object(), native=False).ops is None  # an explicit "no" wins over the environment
    fresh_native_import.setenv("INSTCOLOR_REQUIRE_NATIVE", "0")
    assert native_ops() is None


def test_native_ops_broken_import_warns_once_with_the_cause(fresh_native_import):
    import warnings

    from instcolor.colorizer import Colorizer
    from instcolor.pipeline import native_ops

    _broken(fresh_native_import)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert native_ops() is None
        assert native_ops() is None
        assert Colorizer(object()).ops is None
    msgs = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(msgs) == 1, msgs  # once per process, not once per call
    assert "failed to load" in msgs[0] and "undefined symbol: _ZN9instcolor3ops14broken_symbolEv" in msgs[0]
    assert _BrokenNativeFinder.ORIGIN in msgs[0] and "INSTCOLOR_REQUIRE_NATIVE=1" in msgs[0]


def test_native_ops_broken_import_is_an_error_when_required(fresh_native_import):
    from instcolor.colorizer import Colorizer
    from instcolor.pipeline import NativeUnavailableError, native_ops

    _broken(fresh_native_import)
    with pytest.raises(NativeUnavailableError, match=r"failed to load: ImportError: .*undefined symbol") as info:
        native_ops(require=True)
    assert isinstance(info.value.__cause__, ImportError) and info.value.name == "instcolor._native"
    with pytest.raises(ValueError, match="undefined symbol"):
        Colorizer(object(), native=True)
    fresh_native_import.setenv("INSTCOLOR_REQUIRE_NATIVE", "yes")
    with pytest.raises(NativeUnavailableError, match="undefined symbol"):
        Colorizer(object())


# ----------------------------------------------------------------------------- fuzz-found regressions
# Each case below was found by tests/test_ops_fuzz.py (and .ci/sanitize.sh); kept deterministic here.
def test_regression_box_info_int64_overflow_is_an_error_not_ub():
    """left + width + right overflowed int64 in the C++ check (UBSan: signed integer overflow)."""
    from instcolor import _native

    f = _fuse_args()
    out = np.zeros((1, 4, 8, 8), np.float32)
    for row in ([2**63 - 1, 0, 0, 0, 1, 8], [0, 2**63 - 1, 0, 0, 8, 8], [0, 0, 2**62, 2**62, 8, 8],
                [0, 0, 0, 0, 2**63 - 1, 8]):
        with pytest.raises(ValueError, match=r"box_info\[0\]"):
            _native.fuse_instances(*f[:4], np.array([row], np.int64), f[5], out)


def test_regression_out_of_domain_colour_values_follow_the_reference():
    """The official piecewise functions blend both branches (a * mask + b * (1 - mask)), so a
    negative RGB, an infinite value or a huge one gives NaN there; the kernels returned numbers."""
    rgb = np.array([-0.5, -0.06, -0.01, 0.0, 0.5, 1.0, np.inf, 1e30, -np.inf], np.float32)
    x = np.stack([rgb, rgb[::-1], np.roll(rgb, 3)])[:, None, :]  # (3, 1, 9)
    want = color.rgb_to_lab(torch.from_numpy(x)[None])[0].numpy()
    assert np.isnan(want).any() and np.isfinite(want).any()
    np.testing.assert_allclose(ops.rgb_to_lab(x), want, rtol=1e-5, atol=ATOL_LAB, equal_nan=True)
    lab = np.stack([np.array([0.2, 1e13, -1e13, np.inf, 0.0, 3e37, -0.9], np.float32)] * 3)[:, None, :]
    lab[1] = lab[1][:, ::-1]
    want = color.lab_to_rgb(torch.from_numpy(lab)[None])[0].numpy()
    np.testing.assert_allclose(ops.lab_to_rgb(lab), want, rtol=1e-5, atol=ATOL_LAB, equal_nan=True)


def test_regression_bilinear_same_size_axis_never_reads_the_neighbour():
    """PyTorch copies an axis whose size does not change (weight 0 on a neighbour is never applied,
    so a NaN there stays out); the kernels multiplied it by 0 and spread NaN."""
    img = np.array([[[95, 130, 194]], [[217, 207, 235]]], np.uint8)  # H = h = 2, W = 1 from w = 2
    ab = np.array([[[-0.14, -0.28], [np.nan, 0.19]], [[1.0, 0.06], [0.14, 0.03]]], np.float32)
    got = ops.compose(img, ab)
    want = compose_ref.compose_reference(img, np.nan_to_num(ab, nan=0.0))  # row 0 never sees the NaN of row 1
    np.testing.assert_array_equal(got[0], want[0])
    bg = np.zeros((1, 1, 2, 2), np.float32)
    fi = np.array([[[[1.5, 2.0], [np.nan, 4.0]]]], np.float32)  # box of the feature's own size: a copy
    got = ops.fuse_instances(bg, bg[:, :1], fi, np.ones((1, 1, 2, 2), np.float32), np.array([[0, 0, 0, 0, 2, 2]]))
    want = _fuse_ref(bg, bg[:, :1], fi, np.ones((1, 1, 2, 2), np.float32), np.array([[0, 0, 0, 0, 2, 2]]),
                     np.zeros(1, np.int64))
    np.testing.assert_allclose(got, want, rtol=0, atol=ATOL_FUSE, equal_nan=True)
    assert np.isfinite(got[0, 0, 0]).all() and np.isnan(got[0, 0, 1, 0])


def test_regression_malformed_inputs_name_the_argument():
    from instcolor import _native

    with pytest.raises(TypeError, match="ab: cannot be converted"):
        ops.compose(np.zeros((4, 4, 3), np.uint8), [[1, 2], [3]])
    with pytest.raises(TypeError, match="inst_feat: cannot be converted"):
        ops.fuse_instances(*_fuse_args()[:2], [[1], [2, 3]], *_fuse_args()[3:])
    with pytest.raises(ValueError, match=r"boxes must have shape \(M, 4\)"):
        ops.roi_crop_resize(IMG, np.zeros((3, 0)), 8)  # was taken for "no boxes"
    with pytest.raises(ValueError, match="box_info must have shape"):
        ops.fuse_instances(*_fuse_args(M=0)[:4], np.zeros((0, 5), np.int64), [])

    class FakeCAI:
        def __init__(self, **cai):
            self.__cuda_array_interface__ = dict(version=3, data=(0, False), **cai)

    lab = np.zeros((1, 3, 2, 2), np.float32)
    for fake, exc in ((FakeCAI(shape=(2**62, 2**62), typestr="<f4"), ValueError),  # stride product overflowed
                      (FakeCAI(shape=(0, 2**40, 2**40), typestr="<f4"), ValueError),
                      (FakeCAI(shape=(-1, 3), typestr="<f4"), ValueError),
                      (FakeCAI(shape=(1, 3), typestr="<fz"), TypeError),  # was a bare std::stoll error
                      (FakeCAI(shape=("a", 3), typestr="<f4"), TypeError)):  # was RuntimeError (cast_error)
        with pytest.raises(exc, match="^out: "):
            _native.lab_to_rgb(lab, fake)
        with pytest.raises(exc, match="^lab: "):
            _native.lab_to_rgb(fake, lab)


def test_cuda_array_interface_wins_over_buffer_protocol():
    """An array exposing both the buffer protocol and ``__cuda_array_interface__`` (cupy >= 14 does)
    is device memory: the native ops must take the CUDA interface, never read it as host memory.
    (Found on an H200: cupy 14's buffer export raised "Accessing a CuPy ndarray on CPU is not
    allowed".) Here the interface points at no device memory, so the op must refuse it by name."""
    from instcolor import _native

    class DeviceLooking(np.ndarray):
        @property
        def __cuda_array_interface__(self):
            return dict(version=3, shape=self.shape, typestr="<f4", data=(0, False), strides=None)

    lab = np.zeros((1, 3, 2, 2), np.float32).view(DeviceLooking)
    out = np.zeros((1, 3, 2, 2), np.float32)
    # with CUDA kernels: "lab: ... not CUDA device memory"; without: "lab is a CUDA array but ..."
    with pytest.raises((ValueError, TypeError), match=r"^lab: |lab is a CUDA array"):
        _native.lab_to_rgb(lab, out)


def test_compose_srgb_quantisation_without_pow_is_exact():
    """The CPU compose turns linear RGB into 8-bit sRGB with 255 precomputed step positions instead
    of a powf per channel. It must equal to_u8(linear_to_srgb(v)) for every float: checked here
    exhaustively over [0.002, 1] (both branches and the switch at 0.0031308; about 80 million
    floats). The whole of [0, 1] (1,065,353,217 floats) gave 0 mismatches too:
    ``_native._srgb_u8_mismatches(0, 0x3f800000)``. Out-of-range values are covered by the compose
    tests against the reference (NaN, negative, > 1, huge)."""
    import struct

    from instcolor import _native

    bits = struct.unpack("<I", struct.pack("<f", 0.002))[0]
    assert _native._srgb_u8_mismatches(bits, 0x3F800000) == 0
    with pytest.raises(ValueError):
        _native._srgb_u8_mismatches(0, 0x3F800001)
    # out of range and special values through compose_processed, against the reference
    from instcolor import compose as compose_ref

    L = np.array([[[0.5, -0.5, 0.0, 0.2, 0.45, np.nan, 0.0, 0.3]]], np.float32)
    ab = np.array([[[0.0, 0.0, 1.5, -1.5, 3.0, 0.0, np.inf, 1e30]],
                   [[0.0, 0.0, -1.5, 1.5, -3.0, 0.0, 0.0, -1e30]]], np.float32)
    got = ops.compose_processed(L, ab)
    want = compose_ref.compose_processed_reference(L, ab)
    np.testing.assert_array_equal(got, want)


def test_fuse_reference_in_half_precision_stays_finite():
    """Mixed-precision training (fp16 autocast on CUDA) runs the reference blend on float16: the
    background's +1e5 outside the boxes overflowed float16 and the softmax gave NaN (the fusion
    stage then stopped with 'loss became nan at step 0'). The weights are now computed in float32."""
    rng = np.random.default_rng(4)
    args = _fuse_case(rng, 2, 4, 16, 16, 16, 16, [2, 1])
    want = _fuse_ref(*args)
    half = [torch.from_numpy(np.ascontiguousarray(a)).half() for a in args[:4]]
    got = fuse.fuse_instances_reference(*half, torch.from_numpy(args[4]), torch.from_numpy(args[5]))
    assert got.dtype == torch.float16 and torch.isfinite(got).all()
    np.testing.assert_allclose(got.float().numpy(), want, rtol=0, atol=2e-2)

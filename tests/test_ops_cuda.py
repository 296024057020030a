"""instcolor.ops CUDA kernels (torch CUDA tensors in, torch CUDA tensors out) against the references
and the CPU kernels. Skipped when the CUDA kernels are not compiled or no GPU is usable."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from instcolor import compose as compose_ref, fuse, ops, prepare

GOLDEN = Path(__file__).resolve().parents[2] / "shared" / "golden"
GOLDEN_CASES = sorted(GOLDEN.glob("v*.npz")) if GOLDEN.is_dir() else []


def _skip_reason() -> str:
    if not ops.cuda_compiled():
        return "CUDA kernels not compiled into instcolor._native (" + ops.cuda_unavailable_reason() + ")"
    if not ops.cuda_available():
        return "no usable GPU: " + ops.cuda_unavailable_reason()
    if not torch.cuda.is_available():
        return "torch has no CUDA support here (the CUDA tests use torch CUDA tensors)"
    return ""


pytestmark = pytest.mark.skipif(bool(_skip_reason()), reason=_skip_reason() or "cuda available")

DEV = "cuda"
ATOL = 1e-5


def cu(a):
    return torch.as_tensor(np.ascontiguousarray(a)).to(DEV)


def host(t) -> np.ndarray:
    torch.cuda.synchronize()
    return t.cpu().numpy()


def ref_crop_L(img, boxes, size):
    ib = np.trunc(np.asarray(boxes, np.float64)).astype(np.int64).reshape(-1, 4)
    crops = np.stack([prepare.pil_bilinear_resize(img[y0:y1, x0:x1], size, size) for x0, y0, x1, y1 in ib.tolist()])
    return prepare.lab_of_uint8(crops)[:, :1]


def assert_u8_close(got, want, max_frac=1e-3):
    d = np.abs(got.astype(np.int16) - want.astype(np.int16))
    assert d.max() <= 1 and (d > 0).mean() <= max_frac


def random_box_info(rng, W, H):
    wd, ht = int(rng.integers(1, W + 1)), int(rng.integers(1, H + 1))
    left, top = int(rng.integers(0, W - wd + 1)), int(rng.integers(0, H - ht + 1))
    return [left, W - left - wd, top, H - top - ht, wd, ht]


# ----------------------------------------------------------------------------- colour
@pytest.mark.parametrize("hw,size", [((120, 160), 64), ((320, 480), 256), ((300, 17), 32), ((5, 3), 24), ((1, 1), 8)])
def test_rgb_to_lab_cuda(hw, size):
    rng = np.random.default_rng(size)
    img = rng.integers(0, 256, hw + (3,), dtype=np.uint8)
    got = ops.rgb_to_lab(cu(img), size)
    assert isinstance(got, torch.Tensor) and got.is_cuda and got.shape == (3, size, size)
    want = prepare.lab_of_uint8(prepare.pil_bilinear_resize(img, size, size))[0]
    np.testing.assert_allclose(host(got), want, rtol=0, atol=ATOL)
    np.testing.assert_allclose(host(ops.rgb_to_lab(cu(img))), prepare.lab_of_uint8(img)[0], rtol=0, atol=ATOL)
    batch = rng.integers(0, 256, (3,) + hw + (3,), dtype=np.uint8)
    np.testing.assert_allclose(host(ops.rgb_to_lab(cu(batch), size)), ops.rgb_to_lab(batch, size), rtol=0, atol=ATOL)


def test_color_float_cuda():
    rng = np.random.default_rng(0)
    rgb = rng.random((2, 3, 40, 50)).astype(np.float32)
    np.testing.assert_allclose(host(ops.rgb_to_lab(cu(rgb))), ops.rgb_to_lab(rgb), rtol=0, atol=ATOL)
    lab = ((rng.random((2, 3, 30, 40)) - 0.5) * 2).astype(np.float32)
    np.testing.assert_allclose(host(ops.lab_to_rgb(cu(lab))), ops.lab_to_rgb(lab), rtol=0, atol=ATOL)
    if GOLDEN.is_dir():
        c = np.load(GOLDEN / "color_conversion.npz")
        np.testing.assert_allclose(host(ops.rgb_to_lab(cu(c["rgb_in"][0]))), c["lab_norm_out"][0], rtol=0, atol=ATOL)
        np.testing.assert_allclose(host(ops.lab_to_rgb(cu(c["lab_norm_in"][0]))), c["rgb_out"][0], rtol=0, atol=ATOL)


# ----------------------------------------------------------------------------- crops
def test_roi_crop_resize_cuda():
    rng = np.random.default_rng(1)
    H, W = 97, 131
    img = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    boxes = np.array([[0, 0, W, H], [0, 0, 1, 1], [W - 1, H - 1, W, H], [0, 3.9, 1.5, H], [2.2, H - 2, W, H - 0.1],
                      [40, 30, 45.7, 34.2], [3.7, 8.2, 60.9, 90.1]])
    for S in (8, 32, 64):
        got = ops.roi_crop_resize(cu(img), boxes, S)
        assert got.is_cuda and got.shape == (len(boxes), 1, S, S)
        np.testing.assert_allclose(host(got), ref_crop_L(img, boxes, S), rtol=0, atol=ATOL)
    # boxes on the GPU, several images of different sizes
    imgs = [rng.integers(0, 256, s + (3,), dtype=np.uint8) for s in ((50, 70), (33, 20))]
    b = np.array([[1, 2, 30, 40], [0, 0, 20, 33], [5, 5, 6, 6]])
    got = ops.roi_crop_resize([cu(i) for i in imgs], cu(b), 16, box_image=cu(np.array([0, 1, 1])))
    for m, k in enumerate([0, 1, 1]):
        np.testing.assert_allclose(host(got[m:m + 1]), ref_crop_L(imgs[k], b[m:m + 1], 16), rtol=0, atol=ATOL)
    empty = ops.roi_crop_resize(cu(img), np.zeros((0, 4)), 16)
    assert empty.is_cuda and empty.shape == (0, 1, 16, 16)
    with pytest.raises(ValueError, match=r"boxes\[0\].*outside"):
        ops.roi_crop_resize(cu(img), [[0, 0, W + 1, 5]], 16)
    with pytest.raises(ValueError, match=r"boxes\[0\].*NaN"):
        ops.roi_crop_resize(cu(img), [[np.nan, 0, 5, 5]], 16)


@pytest.mark.skipif(not GOLDEN_CASES, reason=f"golden vectors not found at {GOLDEN}")
@pytest.mark.parametrize("path", GOLDEN_CASES, ids=[p.stem for p in GOLDEN_CASES])
def test_golden_case_cuda(path):
    z = dict(np.load(path))
    S = int(z["fine_size"])
    img = cu(z["image"])
    np.testing.assert_allclose(host(ops.rgb_to_lab(img, S))[:1], z["full_L"][0], rtol=0, atol=ATOL)
    np.testing.assert_allclose(host(ops.roi_crop_resize(img, z["boxes"], S)), z["crop_L"], rtol=0, atol=ATOL)
    ab = z["fusion_out_reg"][0] if "fusion_out_reg" in z else z["gcomp_out_reg"][0]
    out = host(ops.compose_processed(cu(z["full_L"]), cu(ab)))
    d = np.abs(out.astype(np.int16) - z["out_rgb_u8"].astype(np.int16))
    assert d.max() <= 1 and (d > 0).mean() < 0.005


# ----------------------------------------------------------------------------- fusion
def _fuse_case(rng, B, C, H, W, h, w, counts):
    M = int(sum(counts))
    bg = rng.standard_normal((B, C, H, W)).astype(np.float32)
    bl = (rng.standard_normal((B, 1, H, W)) * 2).astype(np.float32)
    fi = rng.standard_normal((M, C, h, w)).astype(np.float32)
    li = (np.abs(rng.standard_normal((M, 1, h, w))) * 3).astype(np.float32)
    info = np.array([random_box_info(rng, W, H) for _ in range(M)], np.int64).reshape(M, 6)
    img = np.concatenate([np.full(c, b) for b, c in enumerate(counts)]).astype(np.int64) if M else np.zeros(0, np.int64)
    return bg, bl, fi, li, info, img


def _ref(bg, bl, fi, li, info, img):
    t = [torch.from_numpy(a) for a in (bg, bl, fi, li)]
    return fuse.fuse_instances_reference(*t, torch.from_numpy(info), torch.from_numpy(img)).numpy()


@pytest.mark.parametrize("B,C,H,W,h,w,counts", [
    (1, 64, 64, 64, 64, 64, [3]),
    (3, 16, 24, 20, 24, 24, [2, 0, 8]),
    (2, 512, 16, 16, 16, 16, [1, 4]),
    (2, 4, 32, 32, 8, 8, [1, 8]),
    (2, 6, 16, 16, 16, 16, [0, 0]),
])
def test_fuse_instances_cuda_fp32(B, C, H, W, h, w, counts):
    rng = np.random.default_rng(C + B)
    args = _fuse_case(rng, B, C, H, W, h, w, counts)
    got = ops.fuse_instances(*(cu(a) for a in args[:4]), args[4], args[5])
    assert got.is_cuda and got.dtype == torch.float32
    np.testing.assert_allclose(host(got), _ref(*args), rtol=0, atol=ATOL)
    # index arrays on the GPU too
    got2 = ops.fuse_instances(*(cu(a) for a in args))
    np.testing.assert_allclose(host(got2), host(got), rtol=0, atol=0)


def test_fuse_instances_cuda_fp16():
    rng = np.random.default_rng(7)
    args = _fuse_case(rng, 2, 32, 32, 32, 32, 32, [3, 5])
    half = [a.astype(np.float16) for a in args[:4]]
    want = _ref(*(h.astype(np.float32) for h in half), args[4], args[5])
    got = ops.fuse_instances(*(cu(a) for a in half), args[4], args[5])
    assert got.dtype == torch.float16
    np.testing.assert_allclose(host(got).astype(np.float32), want, rtol=2e-3, atol=2e-3)


def test_fuse_instances_cuda_streams_and_devices():
    rng = np.random.default_rng(8)
    args = _fuse_case(rng, 1, 8, 16, 16, 16, 16, [4])
    want = _ref(*args)
    s = torch.cuda.Stream()
    with torch.cuda.stream(s):
        got = ops.fuse_instances(*(cu(a) for a in args[:4]), args[4], args[5])
    s.synchronize()
    np.testing.assert_allclose(got.cpu().numpy(), want, rtol=0, atol=ATOL)
    t = [cu(a) for a in args[:4]]
    torch.cuda.synchronize()
    got = ops.fuse_instances(*t, args[4], args[5], stream=s)
    s.synchronize()
    np.testing.assert_allclose(got.cpu().numpy(), want, rtol=0, atol=ATOL)
    with pytest.raises(ValueError, match="inst_feat is on cpu"):
        ops.fuse_instances(cu(args[0]), cu(args[1]), torch.from_numpy(args[2]), cu(args[3]), args[4], args[5])
    with pytest.raises(ValueError, match=r"box_info\[0\]"):
        bad = args[4].copy()
        bad[0, 4] += 1
        ops.fuse_instances(*(cu(a) for a in args[:4]), bad, args[5])


# ----------------------------------------------------------------------------- compose
@pytest.mark.parametrize("hw,S", [((120, 160), 64), ((50, 40), 64), ((333, 77), 32)])
def test_compose_cuda(hw, S):
    rng = np.random.default_rng(S)
    img = rng.integers(0, 256, hw + (3,), dtype=np.uint8)
    ab = (rng.standard_normal((2, S, S)) * 0.3).astype(np.float32)
    got = ops.compose(cu(img), cu(ab))
    assert got.is_cuda and got.dtype == torch.uint8 and got.shape == img.shape
    assert_u8_close(host(got), compose_ref.compose_reference(img, ab))
    L = (rng.random((1, S, S)) - 0.5).astype(np.float32)
    assert_u8_close(host(ops.compose_processed(cu(L), cu(ab))), compose_ref.compose_processed_reference(L, ab))


def test_cupy_family():
    cupy = pytest.importorskip("cupy")
    rng = np.random.default_rng(3)
    img = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    got = ops.rgb_to_lab(cupy.asarray(img), 16)
    assert isinstance(got, cupy.ndarray)
    np.testing.assert_allclose(cupy.asnumpy(got), ops.rgb_to_lab(img, 16), rtol=0, atol=ATOL)


# ----------------------------------------------------------------------------- host tables, graphs
def test_large_tables_span_several_parameter_chunks():
    """Resampling tables far above one kernel-parameter chunk (~32 KB): every chunk must land."""
    rng = np.random.default_rng(11)
    img = rng.integers(0, 256, (2000, 3000, 3), dtype=np.uint8)  # ~47 KB of coefficients at S = 256
    np.testing.assert_allclose(host(ops.rgb_to_lab(cu(img), 256)), ops.rgb_to_lab(img, 256), rtol=0, atol=ATOL)
    H, W = 300, 400
    small = img[:H, :W].copy()
    x0, y0 = rng.integers(0, W // 2, 600), rng.integers(0, H // 2, 600)
    boxes = np.stack([x0, y0, x0 + rng.integers(1, W // 2, 600), y0 + rng.integers(1, H // 2, 600)], 1)
    np.testing.assert_allclose(host(ops.roi_crop_resize(cu(small), boxes, 32)), ops.roi_crop_resize(small, boxes, 32),
                               rtol=0, atol=ATOL)


def test_ops_capture_in_a_cuda_graph_and_replay():
    """The ops enqueue no host-to-device copy (the tables travel as kernel parameters), so they
    can be captured; a replay after new pixels are written into the static inputs recomputes."""
    rng = np.random.default_rng(12)
    img = rng.integers(0, 256, (90, 120, 3), dtype=np.uint8)
    boxes = np.array([[3, 4, 60, 70], [50, 10, 119, 89], [0, 0, 1, 1]], np.float64)
    args = _fuse_case(rng, 2, 8, 16, 16, 16, 16, [2, 3])
    s_img, feats = cu(img), [cu(a) for a in args[:4]]
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up outside the capture (memory pool, lazy module load)
        ops.rgb_to_lab(s_img, 64), ops.roi_crop_resize(s_img, boxes, 32), ops.fuse_instances(*feats, *args[4:])
    torch.cuda.current_stream().wait_stream(side)
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        full = ops.rgb_to_lab(s_img, 64)
        crops = ops.roi_crop_resize(s_img, boxes, 32)
        fused = ops.fuse_instances(*feats, *args[4:])
    img2 = rng.integers(0, 256, img.shape, dtype=np.uint8)
    new = _fuse_case(rng, 2, 8, 16, 16, 16, 16, [2, 3])
    s_img.copy_(cu(img2))
    for t, a in zip(feats, new[:4]):
        t.copy_(cu(a))
    g.replay()
    g.replay()  # twice: the captured tables must still be valid
    np.testing.assert_allclose(host(full), ops.rgb_to_lab(img2, 64), rtol=0, atol=ATOL)
    np.testing.assert_allclose(host(crops), ops.roi_crop_resize(img2, boxes, 32), rtol=0, atol=ATOL)
    np.testing.assert_allclose(host(fused), _ref(*new[:4], *args[4:]), rtol=0, atol=ATOL)

"""CDC and warping error (instcolor.metrics) against values worked out by hand; flow occlusion."""
from __future__ import annotations

import math

import numpy as np
import pytest

from instcolor import metrics

LN2 = math.log(2.0)


def const(v, h=4, w=6):
    return np.full((h, w, 3), v, np.uint8)


def half(a, b, h=4, w=6):
    img = np.full((h, w, 3), a, np.uint8)
    img[:, : w // 2] = b
    return img


def test_js_divergence_by_hand():
    assert metrics.js_divergence([1, 0], [0, 1]) == pytest.approx(LN2)
    assert metrics.js_divergence([3, 1], [3, 1]) == 0.0
    # p = (1/2, 1/2), q = (1, 0), m = (3/4, 1/4):
    # KL(p||m) = 1/2 ln(2/3) + 1/2 ln 2, KL(q||m) = ln(4/3)
    want = 0.5 * (0.5 * math.log(2 / 3) + 0.5 * math.log(2)) + 0.5 * math.log(4 / 3)
    assert metrics.js_divergence([5, 5], [7, 0]) == pytest.approx(want, rel=1e-12)  # normalised first
    with pytest.raises(ValueError, match="same non-zero length"):
        metrics.js_divergence([1, 0], [1, 0, 0])
    with pytest.raises(ValueError, match="sums to 0"):
        metrics.js_divergence([0, 0], [1, 0])


def test_rgb_histograms_per_channel():
    img = np.zeros((2, 2, 3), np.uint8)
    img[0, 0] = (10, 20, 30)
    h = metrics.rgb_histograms(img)
    assert h.shape == (3, 256) and np.allclose(h.sum(1), 1)
    assert h[0, 10] == h[1, 20] == h[2, 30] == 0.25 and h[0, 0] == 0.75


def test_cdc_alternating_frames_by_hand():
    # A B A B A: at d = 1 every pair differs completely (JS = ln 2 in each channel), at d = 2 and 4 never
    a, b = const(0), const(255)
    cdc = metrics.color_distribution_consistency([a, b, a, b, a])
    assert cdc == pytest.approx(LN2 / 3, rel=1e-12)
    acc = metrics.ColorDistributionConsistency()
    for f in [a, b, a, b, a]:
        acc.add(f)
    assert acc.per_dilation() == pytest.approx({1: LN2, 2: 0.0, 4: 0.0})


def test_cdc_channels_and_dilations_weighted_equally():
    # only the red channel changes, from "all 0" to "half 0 / half 255" at frame 2 (0-based) and back at 4
    f0, f1 = const(0), const(0)
    f1[:, :3, 0] = 255
    frames = [f0, f0, f1, f1, f0, f0]
    jsh = 0.5 * (0.5 * math.log(2 / 3) + 0.5 * math.log(2)) + 0.5 * math.log(4 / 3)  # (1/2,1/2) vs (1,0)
    # d=1: pairs (0,1)..(4,5): changes at (1,2), (3,4): 2 of 5; d=2: (0,2),(1,3),(2,4),(3,5): 4 of 4 change
    # d=4: (0,4),(1,5): none. Red channel only (the others are constant): divide by 3 channels.
    want = (jsh * 2 / 5 + jsh * 4 / 4 + 0.0) / 3 / 3
    assert metrics.color_distribution_consistency(frames) == pytest.approx(want, rel=1e-12)


def test_cdc_needs_enough_frames():
    with pytest.raises(ValueError, match="at least 5 frames"):
        metrics.color_distribution_consistency([const(0)] * 4)
    assert metrics.color_distribution_consistency([const(0)] * 2, dilations=(1,)) == 0.0


def shift_right(img, k=1):
    out = np.zeros_like(img)
    out[:, k:] = img[:, :-k]
    return out


def test_warp_backward_bilinear_and_inside():
    img = np.arange(12, dtype=np.float64).reshape(3, 4)
    flow = np.zeros((3, 4, 2))
    flow[..., 0] = 0.5
    warped, inside = metrics.warp_backward(img, flow)
    assert np.allclose(warped[:, :3], img[:, :3] + 0.5)
    assert inside[:, :3].all() and not inside[:, 3].any() and (warped[:, 3] == 0).all()


def test_flow_occlusion_rules():
    h, w = 8, 10
    zero = np.zeros((h, w, 2))
    assert not metrics.flow_occlusion(zero, zero).any()
    # consistent translation by +2 px: only the pixels whose target leaves the frame (last 2 columns)
    f = np.zeros((h, w, 2))
    f[..., 0] = 2.0
    occ = metrics.flow_occlusion(f, -f)
    assert occ[:, -2:].all() and not occ[:, :-2].any()
    # forward-backward inconsistency: the backward flow says "no motion"
    occ = metrics.flow_occlusion(f, zero)
    assert occ.all()   # |2|^2 = 4 > 0.01 * 4 + 0.5
    # a small inconsistency is tolerated: |0.6|^2 = 0.36 < 0.01 * (...) + 0.5
    small = np.zeros((h, w, 2))
    small[..., 0] = 0.6
    assert not metrics.flow_occlusion(small, zero)[:, :-1].any()
    # motion boundary: a flow that jumps between columns 4 and 5 flags column 4 only
    mb = np.zeros((h, w, 2))
    mb[:, 5:, 1] = 1.0
    occ = metrics.flow_occlusion(mb, -mb)
    assert occ[:-1, 4].all() and not occ[:, :4].any()
    with pytest.raises(ValueError, match=r"flow_ab: expected an \(H, W, 2\)"):
        metrics.flow_occlusion(np.zeros((4, 4)), zero)
    with pytest.raises(ValueError, match="NaN"):
        metrics.flow_occlusion(np.full((h, w, 2), np.nan), zero)


def test_warping_error_by_hand():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 200, (6, 8, 3), dtype=np.uint8)
    b = shift_right(a)                 # frame t+1: everything moved 1 px right
    fw = np.zeros((6, 8, 2))
    fw[..., 0] = 1.0                   # t -> t+1
    bw = -fw                           # t+1 -> t
    assert metrics.warping_error([a, b], [(fw, bw)]) == pytest.approx(0.0, abs=1e-20)
    # +10 levels everywhere in frame t+1: every non-occluded pixel differs by 10/255
    assert metrics.warping_error([a, b + 10], [(fw, bw)]) == pytest.approx((10 / 255) ** 2, rel=1e-12)
    # the occluded last column is left out: a change there costs nothing
    c = b.copy()
    c[:, 0] = 255                       # column 0 of t+1 is sampled by no pixel of t (x + 1 >= 1)
    assert metrics.warping_error([a, c], [(fw, bw)]) == pytest.approx(0.0, abs=1e-20)
    # mean over pairs: pair 1 exact (0), pair 2 off by 10 -> half of (10/255)^2
    assert metrics.warping_error([a, b, shift_right(b) + 10], [(fw, bw), (fw, bw)]) == \
        pytest.approx(0.5 * (10 / 255) ** 2, rel=1e-12)
    with pytest.raises(ValueError, match="need 1 flow pairs"):
        metrics.warping_error([a, b], [])
    # an occlusion mask handed in (eval-video computes it once for both videos) is the one used
    occ = metrics.flow_occlusion(fw, bw)
    acc, given = metrics.WarpingError(), metrics.WarpingError()
    assert acc.add(a, b + 10, fw, bw) == given.add(a, b + 10, fw, bw, occ)
    d = b.astype(np.int64)
    d[:, 1] += 20                       # column 1 of t+1 is where column 0 of t lands
    d = d.astype(np.uint8)
    only_column_0 = np.ones_like(occ)
    only_column_0[:, 0] = False
    assert given.add(a, d, fw, bw, only_column_0) == pytest.approx((20 / 255) ** 2, rel=1e-12)
    assert acc.add(a, d, fw, bw) < 0.5 * (20 / 255) ** 2    # its own mask: column 0 is a small share
    with pytest.raises(ValueError, match="occluded: shape"):
        given.add(a, b, fw, bw, occ[:, :4])


def test_warping_error_skips_pairs_without_valid_pixels():
    a = const(10)
    far = np.zeros((4, 6, 2))
    far[..., 0] = 50.0                  # every pixel leaves the frame
    acc = metrics.WarpingError()
    assert acc.add(a, a, far, -far) is None and acc.skipped == 1
    with pytest.raises(ValueError, match="no frame pair"):
        acc.value()



def test_fast_occlusion_matches_the_reference():
    """The float32 OpenCV occlusion test of the stabiliser equals metrics.flow_occlusion on smooth flows."""
    pytest.importorskip("cv2", reason="OpenCV is not installed (pip install '.[video]')")
    from instcolor.video.flow import occlusion

    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[0:40, 0:48].astype(np.float64)
    for _ in range(5):
        ax, ay, fx, fy = rng.uniform(-3, 3, 4)
        f = np.stack([ax * np.sin(xx / 9 + fx), ay * np.cos(yy / 7 + fy)], -1)
        b = -f + rng.normal(0, 0.4, f.shape)
        f[10:20, 30:40] += 4.0  # a moving block: motion boundaries and fb failures
        ref = metrics.flow_occlusion(f, b)
        fast = occlusion(f.astype(np.float32), b.astype(np.float32))
        assert 0.02 < ref.mean() < 0.98
        assert (ref != fast).mean() < 0.002  # float32 rounding at the thresholds only

"""Colour suggestions (instcolor.suggest, Colorizer.suggest_colors) and the ab gamut (instcolor.color.gamut).

Nothing here depends on trained weights: the mode finding runs on synthetic distributions, the API
end to end on small random nets (torch backend)."""
import numpy as np
import pytest
import torch

from conftest import tiny_nets
from instcolor import Colorizer, Hint
from instcolor import color
from instcolor.backends import TorchBackend
from instcolor.distribution import NUM_BINS, bin_centers
from instcolor.pipeline import Batch, prepare_image
from instcolor.prepare import select_boxes
from instcolor.suggest import (SUGGEST_RADIUS, SUGGEST_TEMPERATURE, find_modes, grid_cell, suggest_at,
                               suggestion_probs)

CENTERS = bin_centers() * 110.0  # (529, 2) Lab units


def _bumps(peaks, sigma=8.0):
    """(529,) distribution: a mixture of Gaussian bumps [(a, b, weight)] on the ab bin centres."""
    p = np.zeros(NUM_BINS)
    for a, b, w in peaks:
        bump = np.exp(-0.5 * ((CENTERS - [a, b]) ** 2).sum(1) / sigma ** 2)
        p += w * bump / bump.sum()
    return p / p.sum()


def _rgb_to_lab(rgb_triples):
    return color.rgb_uint8_to_lab(np.asarray(rgb_triples, np.uint8))


# ----------------------------------------------------------------------------- mode finding
def test_two_peaks_are_both_found_sorted_and_distinct():
    p = _bumps([(40, -30, 0.35), (-50, 60, 0.65)])
    R = 15.0   # a radius that keeps one mode per bump (the default, 12, also lets diagonal neighbours through)
    modes = find_modes(p, k=8, radius=R)
    assert 2 <= len(modes) <= 8
    assert np.linalg.norm(modes[0].ab - [-50, 60]) < 3.0          # the heavier peak first
    assert np.linalg.norm(modes[1].ab - [40, -30]) < 3.0
    probs = [m.probability for m in modes]
    assert probs == sorted(probs, reverse=True)
    assert sum(probs) <= 1.0 + 1e-9
    assert probs[0] > 0.5 and probs[1] > 0.25                     # each peak keeps about its own mass
    ab = np.stack([m.ab for m in modes])
    d = np.sqrt(((ab[:, None] - ab[None]) ** 2).sum(-1))
    assert (d[np.triu_indices(len(modes), 1)] > R - 5.0).all()   # distinct (refined means)
    peaks = [m.peak for m in modes]
    assert len(set(peaks)) == len(peaks)
    assert (np.sqrt(((CENTERS[peaks][:, None] - CENTERS[peaks][None]) ** 2).sum(-1))[np.triu_indices(len(peaks), 1)]
            > R).all()


def test_k_limits_and_one_peak_gives_one_dominant_mode():
    p = _bumps([(10, 70, 1.0)], sigma=4.0)
    modes = find_modes(p, k=3)
    assert len(modes) == 3
    assert np.linalg.norm(modes[0].ab - [10, 70]) < 2.0
    assert modes[0].probability > 0.9
    assert len(find_modes(p, k=1)) == 1
    assert find_modes(p, k=1)[0].probability == pytest.approx(1.0)   # every bin belongs to the only mode


def test_allowed_mask_excludes_bins():
    p = _bumps([(40, -30, 0.6), (-50, 60, 0.4)])
    allowed = np.linalg.norm(CENTERS - [40, -30], axis=1) > 30         # the heavier peak is forbidden
    modes = find_modes(p, k=2, allowed=allowed)
    assert np.linalg.norm(modes[0].ab - [-50, 60]) < 3.0
    assert all(allowed[m.peak] for m in modes)
    assert sum(m.probability for m in modes) == pytest.approx(p[allowed].sum())   # not renormalised here


@pytest.mark.parametrize("bad", [dict(k=0), dict(k=65), dict(k=2.5), dict(k=True), dict(radius=0.0),
                                 dict(probs=np.ones(10)), dict(probs=-np.ones(NUM_BINS)),
                                 dict(probs=np.full(NUM_BINS, np.nan))])
def test_find_modes_rejects_bad_arguments(bad):
    kwargs = dict(probs=np.full(NUM_BINS, 1.0 / NUM_BINS), k=4)
    kwargs.update(bad)
    with pytest.raises(ValueError):
        find_modes(**kwargs)


def test_softening_uses_the_suggestion_temperature():
    """softmax(logits / SUGGEST_TEMPERATURE) (SIGGRAPH'17's GUI uses 5; ours is measured, see suggest.py)."""
    logits = np.zeros(NUM_BINS, np.float32)
    logits[7] = 5.0
    p = suggestion_probs(logits)
    assert p[7] / p[8] == pytest.approx(np.exp(5.0 / SUGGEST_TEMPERATURE), rel=1e-5)
    assert p.sum() == pytest.approx(1.0)
    assert suggestion_probs(logits, 5.0)[7] / suggestion_probs(logits, 5.0)[8] == pytest.approx(np.e, rel=1e-5)


def test_rebalancing_weights_are_undone_before_the_modes():
    """log_weights are taken off the logits: a colour the rebalanced head favours only because it is
    rare drops back."""
    L = 60.0
    p = _bumps([(-40, 35, 0.5), (30, -40, 0.5)], sigma=6.0)
    logits = (SUGGEST_TEMPERATURE * np.log(p + 1e-30)).astype(np.float32)
    log_w = np.zeros(NUM_BINS, np.float32)
    out_plain = suggest_at(logits, L, k=2)
    a_axis = np.arange(23) * 10 - 110
    ia, ib = np.meshgrid(a_axis, a_axis, indexing="ij")
    log_w[((ia - 30) ** 2 + (ib + 40) ** 2).reshape(-1) < 30 ** 2] = np.log(4.0)   # (30, -40) was up-weighted 4x
    out = suggest_at(logits, L, k=2, log_weights=log_w)
    assert out == suggest_at(logits - log_w, L, k=2)
    assert abs(out_plain[0][1] - out_plain[1][1]) < 0.05      # an even split without the weights
    assert out[0][1] > 0.7                                      # with them, (-40, 35) dominates
    assert _rgb_to_lab([out[0][0]])[0, 1] < 0 < _rgb_to_lab([out[0][0]])[0, 2]


def test_suggest_at_two_peaks_at_the_given_lightness():
    L = 60.0
    p = _bumps([(-40, 35, 0.7), (30, -40, 0.3)], sigma=6.0)     # both in gamut at L = 60
    logits = (SUGGEST_TEMPERATURE * np.log(p + 1e-30)).astype(np.float32)   # softened at the suggestion T: p again
    out = suggest_at(logits, L, k=8, radius=15.0)   # one mode per bump (see the test above)
    rgbs = [rgb for rgb, _ in out]
    probs = [q for _, q in out]
    assert all(isinstance(c, int) and 0 <= c <= 255 for rgb in rgbs for c in rgb) and all(len(r) == 3 for r in rgbs)
    assert len(set(rgbs)) == len(rgbs)
    assert probs == sorted(probs, reverse=True) and sum(probs) <= 1.0 + 1e-9
    lab = _rgb_to_lab(rgbs[:2])
    np.testing.assert_allclose(lab[:, 0], L, atol=1.0)                # shown at the pixel's own L
    assert np.linalg.norm(lab[0, 1:] - [-40, 35]) < 4.0
    assert np.linalg.norm(lab[1, 1:] - [30, -40]) < 4.0
    assert probs[0] > 0.6 and probs[1] > 0.25


def test_suggest_at_leaves_out_colours_not_displayable_at_l():
    """At L = 95 a saturated blue (b = -90) cannot be shown: its peak gives no suggestion there."""
    p = _bumps([(20, -90, 0.8), (-10, 40, 0.2)], sigma=5.0)
    logits = (5.0 * np.log(p + 1e-30)).astype(np.float32)
    mask, axis = color.gamut(95.0)
    assert not mask[list(axis).index(20.0), list(axis).index(-90.0)]
    out = suggest_at(logits, 95.0, k=4)
    lab = _rgb_to_lab([rgb for rgb, _ in out])
    assert np.linalg.norm(lab[0, 1:] - [-10, 40]) < 6.0               # the displayable peak comes first
    assert sum(q for _, q in out) == pytest.approx(1.0)                # renormalised over the gamut


def test_grid_cell_uses_the_hint_mapping():
    assert grid_cell(0, 0, (50, 70), 64) == (0, 0)
    assert grid_cell(69.9, 49.9, (50, 70), 64) == (15, 15)
    assert grid_cell(35, 25, (50, 70), 64) == (int(25 / 50 * 64) // 4, int(35 / 70 * 64) // 4)
    for x, y in [(-1, 3), (70, 3), (3, 50), (float("nan"), 1)]:
        with pytest.raises(ValueError, match="outside"):
            grid_cell(x, y, (50, 70), 64)


# ----------------------------------------------------------------------------- gamut
@pytest.mark.parametrize("L", [3.0, 20.0, 37.5, 50.0, 66.0, 85.0, 97.5])
def test_gamut_round_trips_in_gamut_and_clips_the_rest(L):
    mask, axis = color.gamut(L)
    assert mask.shape == (23, 23) and axis.shape == (23,) and mask.dtype == bool
    np.testing.assert_allclose(axis, np.arange(-110, 111, 10))
    a, b = np.meshgrid(axis, axis, indexing="ij")
    lab = np.stack([np.full(a.size, (L - 50) / 100), a.ravel() / 110, b.ravel() / 110]).astype(np.float32)
    rgb = color.lab_to_rgb(torch.from_numpy(lab.reshape(1, 3, 1, -1)))
    back = color.rgb_to_lab(torch.clamp(rgb, 0, 1))[0, :, 0].numpy()
    err = (np.abs(back - lab) * np.array([[100], [110], [110]])).max(0).reshape(mask.shape)
    assert mask[11, 11]                                  # grey is always displayable
    assert err[mask].max() < 0.25                        # in gamut: Lab -> RGB -> Lab round-trips
    assert err[~mask].min() > 0.005                      # out of gamut: the conversion clipped it
    # the analytic mask agrees with the official conversion on a finer grid too
    fine, fine_axis = color.gamut(L, step=2.5)
    assert fine.shape == (89, 89) and fine_axis[0] == -110 and fine_axis[-1] == 110
    assert (fine[::4, ::4] == mask).all()


def test_gamut_extremes_and_errors():
    for L in (0.0, 100.0):
        mask, _ = color.gamut(L)
        assert mask.sum() == 1 and mask[11, 11]          # black and white: grey only
    assert color.gamut(50.0)[0].sum() > 100
    for bad in (dict(L=-1), dict(L=101), dict(L=float("nan")), dict(L="x"), dict(L=50, step=0)):
        with pytest.raises(ValueError, match="gamut"):
            color.gamut(**bad)


# ----------------------------------------------------------------------------- API on random nets
@pytest.fixture(scope="module")
def colorizer():
    return Colorizer(TorchBackend(tiny_nets(seed=3)), default_size=64)


@pytest.fixture(scope="module")
def image():
    return np.random.default_rng(5).integers(0, 256, (50, 70, 3), dtype=np.uint8)


BOXES = [[5, 5, 40, 30], [20, 10, 60, 45]]


def _expected_logits(c, img, boxes, hints=()):
    sel = select_boxes(boxes, None, img.shape[:2])
    p = prepare_image(img, sel, hints, 64, c.ops)
    return c.backend.run_heads(Batch.stack([p]), logits=True).logits[0]


@pytest.mark.parametrize("boxes", [[], BOXES])
def test_suggest_colors_reads_the_distribution_at_the_point(colorizer, image, boxes):
    x, y = 33, 41
    hints = [Hint(10, 10, rgb=(20, 160, 40), size=3)]
    out = colorizer.suggest_colors(image, x, y, k=5, boxes=boxes, hints=hints)
    logits = _expected_logits(colorizer, image, boxes, hints)
    row, col = int(y / 50 * 64) // 4, int(x / 70 * 64) // 4
    L = float(_rgb_to_lab([image[y, x]])[0, 0])
    assert out == suggest_at(logits[:, row, col], L, k=5)
    assert out != suggest_at(logits[:, row, col + 1], L, k=5)     # another cell gives other suggestions
    assert 1 <= len(out) <= 5
    lab = _rgb_to_lab([rgb for rgb, _ in out])
    np.testing.assert_allclose(lab[:, 0], L, atol=1.5)
    probs = [q for _, q in out]
    assert probs == sorted(probs, reverse=True) and sum(probs) <= 1.0 + 1e-9


def test_suggest_colors_bad_arguments(colorizer, image):
    with pytest.raises(ValueError, match="outside"):
        colorizer.suggest_colors(image, 70, 3)
    with pytest.raises(ValueError, match="k"):
        colorizer.suggest_colors(image, 3, 3, k=0)
    with pytest.raises(TypeError, match="GlobalHints"):
        colorizer.suggest_colors(image, 3, 3, global_hints={"saturation": 0.5})


def test_class_log_weights_from_a_run_folder_and_a_bundle_info(tmp_path):
    """A run trained with rebalancing (config rebalance + ab_prior.json) and a bundle whose info has
    class_rebalance give the same log weights; official-style folders give None."""
    import json

    from instcolor import distribution as D
    from instcolor.colorizer import class_log_weights

    counts = np.random.default_rng(0).integers(0, 1000, NUM_BINS).tolist()
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"stage": "fusion", "rebalance": 0.5, "class_weight": 1.0}))
    (run / "ab_prior.json").write_text(json.dumps({"photos": 3, "counts": counts}))
    want = np.log(D.rebalance_weights(D.smoothed_prior(np.asarray(counts, np.float64)), 0.5))
    np.testing.assert_allclose(class_log_weights(run), want, rtol=1e-6)
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "config.json").write_text(json.dumps({"info": {"class_rebalance": {"counts": counts, "mix": 0.5}}}))
    np.testing.assert_allclose(class_log_weights(bundle), want, rtol=1e-6)
    (bundle / "config.json").write_text(json.dumps({"info": {"name": "x"}}))
    assert class_log_weights(bundle) is None
    assert class_log_weights(tmp_path) is None

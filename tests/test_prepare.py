"""Box rules, hints and resize (no golden files needed)."""
import numpy as np
import pytest
import torch

from instcolor import Hint, HintPlanes
from instcolor import prepare as P


def test_select_boxes_truncates_and_keeps_order_up_to_eight():
    b = np.array([[10.9, 5.2, 40.7, 30.99], [0.5, 0.5, 3.5, 2.5]])
    out = P.select_boxes(b, [0.1, 0.9], (50, 50))
    np.testing.assert_array_equal(out, [[10, 5, 40, 30], [0, 0, 3, 2]])
    assert out.dtype == np.int64


def test_select_boxes_top8_ascending_score_order():
    boxes = np.array([[i, i, i + 10, i + 10] for i in range(11)], np.float32)
    scores = np.array([0.5, 0.9, 0.1, 0.8, 0.7, 0.05, 0.6, 0.95, 0.3, 0.4, 0.2])
    out = P.select_boxes(boxes, scores, (100, 100))
    expected = np.argsort(scores)[-8:]
    np.testing.assert_array_equal(out[:, 0], expected)
    assert list(scores[out[:, 0]]) == sorted(scores)[-8:]


def test_select_boxes_without_scores_keeps_first_eight():
    boxes = np.array([[i, 0, i + 5, 5] for i in range(10)], np.float32)
    np.testing.assert_array_equal(P.select_boxes(boxes, None, (10, 20))[:, 0], np.arange(8))


@pytest.mark.parametrize("box, msg", [
    ([[5, 5, 5.9, 10]], "zero or negative area"),
    ([[float("nan"), 0, 3, 3]], "NaN"),
    ([[0, 0, 11, 5]], "outside"),
    ([[-1, 0, 5, 5]], "outside"),
    ([[0, 0, 1]], "shape"),
])
def test_select_boxes_rejects_bad_boxes(box, msg):
    with pytest.raises(ValueError, match=msg):
        P.select_boxes(np.array(box, dtype=np.float64), None, (10, 10), name="my boxes")


def test_select_boxes_empty_and_score_mismatch():
    assert P.select_boxes(np.zeros((0, 4)), np.zeros(0), (5, 5)).shape == (0, 4)
    assert P.select_boxes(None, None, (5, 5)).shape == (0, 4)
    with pytest.raises(ValueError, match="2 boxes but 1 scores"):
        P.select_boxes(np.ones((2, 4)) * [0, 0, 2, 2], [0.5], (5, 5))


def test_box_info_rows_and_thin_box_branches():
    info = P.box_info(np.array([[0, 0, 100, 50], [99, 10, 100, 11], [50, 0, 51, 1]]), (50, 100), 8)
    for row in info:
        assert row[0] + row[4] + row[1] == 8 and row[2] + row[5] + row[3] == 8 and row[4] >= 1 and row[5] >= 1
    np.testing.assert_array_equal(info[0], [0, 0, 0, 0, 8, 8])
    # x-extent 7..8 (end at the grid edge: "not more than one pixel of room" -> grows left)
    np.testing.assert_array_equal(info[1][[0, 4]], [7, 1])
    # zero-width box at 4: room on the right -> end moves right
    np.testing.assert_array_equal(info[2][[0, 4, 2, 5]], [4, 1, 0, 1])


def test_hint_planes_centre_patch_and_colour():
    ab, mask = P.hint_planes([Hint(50, 25, ab=(22.0, -11.0), size=3)], 8, (50, 100))
    r, c = int(25 / 50 * 8) - 1, int(50 / 100 * 8) - 1
    assert mask.shape == (1, 8, 8) and (mask[0, r:r + 3, c:c + 3] == 0.5).all()
    assert (mask == 0.5).sum() == 9 and (mask == -0.5).sum() == 64 - 9
    np.testing.assert_allclose(ab[:, r + 1, c + 1], [0.2, -0.1], rtol=1e-6)
    assert (ab[:, mask[0] < 0] == 0).all()
    # off-centre and x != y (catches swapped axes): x 75 of 100 -> col 12, y 10 of 50 -> row 3 at S = 16;
    # the 3x3 patch is centred there
    ab, mask = P.hint_planes([Hint(75, 10, ab=(22.0, -11.0), size=3)], 16, (50, 100))
    want = np.full((1, 16, 16), -0.5, np.float32)
    want[0, 2:5, 11:14] = 0.5
    np.testing.assert_array_equal(mask, want)
    np.testing.assert_allclose(ab[:, 2:5, 11:14], np.broadcast_to(np.array([0.2, -0.1])[:, None, None], (2, 3, 3)),
                               rtol=1e-6)


def test_hint_rgb_matches_lab_of_that_colour():
    a, b = Hint(0, 0, rgb=(200, 30, 30)).normalized_ab()
    from instcolor import color

    # the numpy twin of the official conversion (no PyTorch on the inference path): exactly its value,
    # and within float32 rounding (about an ulp) of the PyTorch reference
    twin = color.lab_of_uint8(np.array([[[200, 30, 30]]], np.uint8))
    assert (a, b) == (float(twin[0, 1, 0, 0]), float(twin[0, 2, 0, 0])) and a > 0.3
    lab = color.rgb_to_lab(torch.tensor([200, 30, 30], dtype=torch.float32).reshape(1, 3, 1, 1) / 255)
    np.testing.assert_allclose((a, b), (float(lab[0, 1, 0, 0]), float(lab[0, 2, 0, 0])), rtol=0, atol=1e-6)


def test_hint_patch_clipped_at_border_and_outside_rejected():
    ab, mask = P.hint_planes([Hint(99.9, 49.9, rgb=(0, 0, 255), size=5)], 16, (50, 100))
    assert (mask[0, -5:, -5:] == 0.5).all() and (mask == 0.5).sum() == 25
    # clipped on one axis only: right edge, upper part (row 10 / 50 * 16 = 3 -> rows 1..5)
    ab, mask = P.hint_planes([Hint(99.9, 10, rgb=(0, 0, 255), size=5)], 16, (50, 100))
    assert (mask[0, 1:6, -5:] == 0.5).all() and (mask == 0.5).sum() == 25
    with pytest.raises(ValueError, match="outside"):
        P.hint_planes([Hint(100, 0, rgb=(0, 0, 0))], 16, (50, 100))


@pytest.mark.parametrize("kwargs, msg", [(dict(), "exactly one"), (dict(rgb=(1, 2, 3), ab=(1, 1)), "exactly one"),
                                         (dict(rgb=(300, 0, 0)), "0..255"), (dict(rgb=(1, 2, 3), size=0), "size")])
def test_hint_validation(kwargs, msg):
    with pytest.raises(ValueError, match=msg):
        Hint(1, 1, **kwargs)


def test_hintplanes_pass_through_and_validation():
    ab = np.random.default_rng(0).uniform(-1, 1, (2, 16, 16)).astype(np.float32)
    mask = (np.random.default_rng(1).uniform(size=(1, 16, 16)) > 0.8).astype(np.float32)
    got_ab, got_mask = P.hint_planes(HintPlanes(ab, mask), 16, (40, 40))
    np.testing.assert_array_equal(got_ab, ab)
    np.testing.assert_array_equal(got_mask, mask - 0.5)
    with pytest.raises(ValueError, match="processing size"):
        P.hint_planes(HintPlanes(ab, mask), 32, (40, 40))
    with pytest.raises(ValueError, match="mask"):
        HintPlanes(ab, mask[:, :8])


def _pillow_same_order(h, w, oh, ow):
    """Pillow >= 13 runs the vertical pass first for some shapes; compare only where it does not."""
    return not (oh < h and (h - oh) > 2 * max(w - ow, 0))


@pytest.mark.parametrize("shape", [(37, 91, 16, 16), (120, 160, 64, 64), (5, 7, 32, 32), (300, 40, 24, 24), (64, 64, 64, 64)])
def test_pil_bilinear_resize_matches_pillow(shape):
    from PIL import Image

    h, w, oh, ow = shape
    img = np.random.default_rng(h * w).integers(0, 256, (h, w, 3), dtype=np.uint8)
    ours = P.pil_bilinear_resize(img, ow, oh)
    theirs = np.asarray(Image.fromarray(img).resize((ow, oh), Image.BILINEAR))
    import PIL

    if int(PIL.__version__.split(".")[0]) >= 12 and not _pillow_same_order(h, w, oh, ow):
        pytest.skip(f"Pillow {PIL.__version__} uses another pass order for this shape (golden README)")
    np.testing.assert_array_equal(ours, theirs)


def test_check_size():
    assert P.check_size(64) == 64
    for bad in (0, 12, -8, 7.5, "256"):
        with pytest.raises(ValueError, match="multiple of 8"):
            P.check_size(bad)


def test_as_rgb_uint8_inputs(tmp_path):
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4)
    out = P.as_rgb_uint8(grey)
    assert out.shape == (3, 4, 3) and (out[..., 0] == grey).all() and (out[..., 2] == grey).all()
    with pytest.raises(TypeError, match="uint8"):
        P.as_rgb_uint8(np.zeros((4, 4, 3), np.float32))
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        P.as_rgb_uint8(np.zeros((4, 4, 4), np.uint8))
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 this is not a jpeg")
    with pytest.raises(ValueError, match="broken.jpg"):
        P.as_rgb_uint8(bad)
    with pytest.raises(FileNotFoundError, match="nope.png"):
        P.as_rgb_uint8(tmp_path / "nope.png")


def test_bad_box_error_names_the_original_index():
    boxes = np.array([[i, 0, i + 10, 10] for i in range(10)] + [[3, 3, 3.5, 9]], np.float64)
    scores = np.linspace(0.1, 1.0, 11)  # the bad box (index 10) has the top score
    with pytest.raises(ValueError, match=r"box 10 \[3.0, 3.0, 3.5, 9.0\]"):
        P.select_boxes(boxes, scores, (50, 50))

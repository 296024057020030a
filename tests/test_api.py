"""Colorizer API behaviour with small random nets (fast)."""
import numpy as np
import pytest
from PIL import Image

from instcolor import Colorizer, Hint, HintPlanes
from instcolor.detect import Detections


def _img(h=40, w=60, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_result_fields(tiny_colorizer):
    img = _img()
    r = tiny_colorizer.colorize(img, boxes=[[5, 5, 30, 35]], size=32)
    assert r.rgb.shape == (40, 60, 3) and r.rgb.dtype == np.uint8
    assert r.rgb_processed.shape == (32, 32, 3) and r.ab.shape == (2, 32, 32) and r.ab.dtype == np.float32
    np.testing.assert_array_equal(r.boxes, [[5, 5, 30, 35]])
    assert np.abs(r.ab).max() <= 1.0


def test_output_keeps_input_lightness(tiny_colorizer):
    """r.rgb joins the predicted ab with the input's own L: its L equals the input's (up to uint8 rounding)."""
    import torch

    from instcolor import color

    img = _img(seed=4)
    r = tiny_colorizer.colorize(img, size=32)
    L_in = color.rgb_to_lab(color.uint8_to_float(img))[0, 0]
    L_out = color.rgb_to_lab(color.uint8_to_float(r.rgb))[0, 0]
    assert float(torch.abs(L_in - L_out).mean()) < 0.01  # normalised L units (1 Lab unit = 0.01)


def test_inputs_array_grey_pil_and_path_agree(tiny_colorizer, tmp_path):
    img = _img(seed=1)
    path = tmp_path / "x.png"
    Image.fromarray(img).save(path)
    a = tiny_colorizer.colorize(img, size=32).ab
    b = tiny_colorizer.colorize(Image.fromarray(img), size=32).ab
    c = tiny_colorizer.colorize(str(path), size=32).ab
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, c)
    grey = img[..., 0]
    np.testing.assert_array_equal(tiny_colorizer.colorize(grey, size=32).ab,
                                  tiny_colorizer.colorize(np.repeat(grey[..., None], 3, 2), size=32).ab)


def test_boxes_change_the_result_and_empty_boxes_use_full_net(tiny_colorizer):
    img = _img(seed=2)
    plain = tiny_colorizer.colorize(img, size=32)
    empty = tiny_colorizer.colorize(img, boxes=np.zeros((0, 4)), size=32)
    boxed = tiny_colorizer.colorize(img, boxes=[[0, 0, 30, 20]], size=32)
    np.testing.assert_array_equal(plain.ab, empty.ab)
    assert np.abs(plain.ab - boxed.ab).max() > 1e-3
    assert empty.boxes.shape == (0, 4)


def test_hints_change_the_result_locally(tiny_colorizer):
    """A hint changes the prediction around its own place (not elsewhere, not everywhere)."""
    img = _img(seed=3)  # 40 x 60
    base = tiny_colorizer.colorize(img, size=32)
    # input pixel (x 45, y 10) -> processing pixel (row 8, col 24), the centre of its 3x3 patch
    hinted = tiny_colorizer.colorize(img, hints=[Hint(45, 10, rgb=(255, 0, 0), size=3)], size=32)
    change = np.abs(base.ab - hinted.ab).sum(axis=0)
    assert change.max() > 1e-3
    rows, cols = np.mgrid[:32, :32]
    dist = np.hypot(rows - 8, cols - 24)
    peak = np.unravel_index(change.argmax(), change.shape)
    assert dist[peak] <= 2, peak
    assert change[dist <= 4].sum() > 0.5 * change.sum()  # 5% of the pixels hold most of the change
    assert change[dist > 8].mean() < 0.02 * change[dist <= 2].mean()
    ab = np.zeros((2, 32, 32), np.float32)
    mask = np.zeros((1, 32, 32), np.float32)
    planes = tiny_colorizer.colorize(img, hints=HintPlanes(ab, mask), size=32)
    np.testing.assert_array_equal(planes.ab, base.ab)


def test_detector_is_used_when_boxes_none(tiny_weights_dir):
    calls = []

    def detector(image):
        calls.append(image.shape)
        return Detections(boxes=[[2, 2, 20, 20], [10, 5, 50, 30]], scores=[0.9, 0.4], labels=[0, 2])

    c = Colorizer.from_pretrained(tiny_weights_dir, detector=detector)
    r = c.colorize(_img(), size=32)
    assert calls == [(40, 60, 3)]
    np.testing.assert_array_equal(r.boxes, [[2, 2, 20, 20], [10, 5, 50, 30]])
    np.testing.assert_array_equal(r.labels, [0, 2])
    r2 = c.colorize(_img(), boxes=[], size=32)  # explicit boxes bypass the detector
    assert len(calls) == 1 and r2.boxes.shape == (0, 4)


def test_scores_follow_the_top8_selection(tiny_colorizer):
    boxes = np.array([[i, 0, i + 10, 10] for i in range(10)], np.float32)
    scores = np.linspace(0.1, 1.0, 10)[::-1].copy()
    r = tiny_colorizer.colorize(_img(), boxes=boxes, scores=scores, size=32)
    assert len(r.boxes) == 8 and np.all(np.diff(r.scores) > 0)
    np.testing.assert_array_equal(r.boxes[:, 0], np.argsort(scores)[-8:])


@pytest.mark.parametrize("kwargs, exc, msg", [
    (dict(image=np.zeros((8, 8, 3), np.float32)), TypeError, "uint8"),
    (dict(boxes=[[0, 0, 0, 5]]), ValueError, "zero or negative area"),
    (dict(boxes=[[0, 0, 100, 5]]), ValueError, "outside"),
    (dict(boxes=[[0, np.nan, 4, 5]]), ValueError, "NaN"),
    (dict(size=30), ValueError, "multiple of 8"),
    (dict(hints=[Hint(1000, 1, rgb=(1, 1, 1))]), ValueError, "outside"),
    (dict(image="/nonexistent/photo.jpg"), FileNotFoundError, "photo.jpg"),
])
def test_bad_input_raises_clear_errors(tiny_colorizer, kwargs, exc, msg):
    args = dict(image=_img(), size=32)
    args.update(kwargs)
    with pytest.raises(exc, match=msg):
        tiny_colorizer.colorize(**args)


def test_unknown_backend_and_device(tiny_weights_dir):
    with pytest.raises(ValueError, match="backend"):
        Colorizer.from_pretrained(tiny_weights_dir, backend="magic")
    with pytest.raises(ValueError, match="device"):
        Colorizer.from_pretrained(tiny_weights_dir, device="not-a-device")


def test_auto_backend_choice(tiny_weights_dir, monkeypatch):
    """auto = onnxruntime on the CPU when it is installed, torch otherwise; never TensorRT."""
    import instcolor.backends as B

    monkeypatch.setattr(B, "onnxruntime_installed", lambda: True)
    assert B.resolve_backend("auto", "cpu") == "onnxruntime"
    assert B.resolve_backend("auto", "cuda:0") == "torch"
    assert B.resolve_backend("torch", "cpu") == "torch"
    monkeypatch.setattr(B, "onnxruntime_installed", lambda: False)
    assert B.resolve_backend("auto", "cpu") == "torch"
    assert Colorizer.from_pretrained(tiny_weights_dir).backend.name == "torch"
    monkeypatch.undo()
    with pytest.raises(ValueError, match="auto or one of torch, onnxruntime, tensorrt"):
        B.resolve_backend("fast")
    with pytest.raises(ValueError, match="explicit backend='tensorrt'"):
        Colorizer.from_pretrained(tiny_weights_dir, precision="fp16")


def test_default_backend_is_onnxruntime_on_cpu(tiny_weights_dir):
    pytest.importorskip("onnxruntime", reason="onnxruntime not installed")
    c = Colorizer.from_pretrained(tiny_weights_dir)
    assert c.backend.name == "onnxruntime"
    img = _img(seed=3)
    ref = Colorizer.from_pretrained(tiny_weights_dir, backend="torch")
    a, b = c.colorize(img, boxes=[[5, 5, 30, 35]], size=32), ref.colorize(img, boxes=[[5, 5, 30, 35]], size=32)
    np.testing.assert_allclose(a.ab, b.ab, atol=1e-5)


def test_real_detector_drives_the_instance_path(tiny_weights_dir):
    """YOLOX-Nano (shared test model) finds the man and the bicycle; their boxes are used."""
    from conftest import SHARED

    model = SHARED / "models" / "yolox_nano_coco_416.onnx"
    if not model.is_file() or not (SHARED / "golden").is_dir():
        pytest.skip(f"shared detector model or golden images not found under {SHARED}")
    pytest.importorskip("onnxruntime", reason="onnxruntime not installed")
    img = np.load(SHARED / "golden" / "v01_s64_nobox_photoA.npz")["image"]
    c = Colorizer.from_pretrained(tiny_weights_dir, detector=str(model))
    r = c.colorize(img, size=64)
    assert len(r.boxes) >= 2 and {0, 1} <= set(r.labels.tolist())
    plain = Colorizer.from_pretrained(tiny_weights_dir).colorize(img, size=64)
    assert np.abs(plain.ab - r.ab).max() > 1e-3


def test_labels_follow_the_selection_without_scores(tiny_weights_dir):
    def detector(image):
        return Detections(boxes=[[i, 0, i + 10, 10] for i in range(10)], labels=list(range(10)))

    r = Colorizer.from_pretrained(tiny_weights_dir, detector=detector).colorize(_img(), size=32)
    assert r.scores is None
    np.testing.assert_array_equal(r.labels, np.arange(8))
    np.testing.assert_array_equal(r.boxes[:, 0], np.arange(8))


def test_torch_backend_channels_last_same_output():
    """On the CPU the torch backend runs the full-image and instance nets channels-last; the
    output equals the NCHW run within float rounding, with and without instances."""
    import copy

    import torch

    from conftest import tiny_nets
    from instcolor.backends import TorchBackend

    nets = tiny_nets(0.25, seed=5)
    fast = TorchBackend(copy.deepcopy(nets))
    plain = TorchBackend(copy.deepcopy(nets), channels_last=False)
    assert fast.memory_format == torch.channels_last and plain.memory_format == torch.contiguous_format
    assert fast.full.model1[0].weight.is_contiguous(memory_format=torch.channels_last)
    img = _img(48, 64, seed=6)
    for boxes in (None, [[3, 4, 40, 30], [20, 10, 60, 45]]):
        a = Colorizer(fast).colorize(img, boxes=boxes, size=32)
        b = Colorizer(plain).colorize(img, boxes=boxes, size=32)
        np.testing.assert_allclose(a.ab, b.ab, atol=1e-5)


def test_stages_equal_colorize_batch():
    """prepare -> infer -> compose (what the server and video run in separate threads) gives the
    pixels of colorize_batch, with boxes, hints and both decodings; errors name the problem."""
    from instcolor import Colorizer, Hint, PreparedImage

    c = Colorizer.from_pretrained(backend="onnxruntime")  # the starter: it has the classification head
    imgs = [_img(40, 60, 1), _img(52, 44, 2), _img(33, 70, 3)]
    boxes = [np.zeros((0, 4)), np.array([[3, 4, 30, 40], [10, 2, 40, 30]], np.float32), None]
    hints = [(), (Hint(5, 6, rgb=(200, 30, 30), size=3),), ()]
    for decode in ("regression", "distribution"):
        want = c.colorize_batch(imgs, boxes, None, hints, size=64, decode=decode)
        staged = [c.prepare(im, b, None, h, size=64) for im, b, h in zip(imgs, boxes, hints)]
        assert all(isinstance(s, PreparedImage) and s.size == 64 for s in staged)
        abs_ = c.infer(staged, decode=decode)
        assert [a.shape for a in abs_] == [(2, 64, 64)] * 3
        for s, ab, w in zip(staged, abs_, want):
            got = c.compose(s, ab)
            np.testing.assert_array_equal(got.rgb, w.rgb)
            np.testing.assert_array_equal(got.rgb_processed, w.rgb_processed)
            np.testing.assert_array_equal(got.boxes, w.boxes)
            np.testing.assert_array_equal(c.compose(s, ab, processed=False).rgb, w.rgb)
            assert c.compose(s, ab, processed=False).rgb_processed is None
    assert c.infer([]) == []
    with pytest.raises(ValueError, match="one processing size"):
        c.infer([c.prepare(imgs[0], size=64), c.prepare(imgs[0], size=128)])
    with pytest.raises(ValueError, match="2 prepared images but 3 global_hints"):
        c.infer(staged[:2], global_hints=[None] * 3)
    with pytest.raises(ValueError, match="size"):
        c.prepare(imgs[0], size=30)

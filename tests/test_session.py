"""Edit sessions (Colorizer.open_session): the instance net runs once per kept-box set, and every result
equals the uncached Colorizer.colorize / suggest_colors with the same boxes, exactly."""
import numpy as np
import pytest

from conftest import tiny_nets
from instcolor import Colorizer, EditSession, GlobalHints, Hint, HintPlanes
from instcolor.backends import TorchBackend
from instcolor.detect import Detections
from instcolor.session import MAX_CACHED_STATES

S = 64
BOXES = np.array([[5, 5, 40, 30], [20, 10, 60, 45], [0, 20, 35, 49]], np.float32)
SCORES = np.array([0.9, 0.5, 0.7], np.float32)
HINT_SETS = [(), [Hint(12, 30, rgb=(30, 90, 200), size=3)],
             [Hint(12, 30, rgb=(30, 90, 200), size=3), Hint(50, 8, ab=(40.0, -20.0), size=1)]]


class CountingBackend(TorchBackend):
    """Torch backend that counts the instance-net runs and the uncached runs."""

    def __init__(self, nets):
        super().__init__(nets)
        self.instance_runs, self.uncached_runs = [], 0

    def run_instances(self, crop_L):
        self.instance_runs.append(len(crop_L))
        return super().run_instances(crop_L)

    def run(self, batch):
        self.uncached_runs += 1
        return super().run(batch)


@pytest.fixture(scope="module")
def image():
    return np.random.default_rng(7).integers(0, 256, (50, 70, 3), dtype=np.uint8)


@pytest.fixture(params=[True, False], ids=["native", "reference"], scope="module")
def colorizer(request):
    return Colorizer(CountingBackend(tiny_nets(seed=2)), default_size=S, native=None if request.param else False)


def _same(a, b):
    for field in ("rgb", "rgb_processed", "ab", "boxes"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field), err_msg=field)
    for field in ("scores", "labels"):
        x, y = getattr(a, field), getattr(b, field)
        assert (x is None) == (y is None), field
        if x is not None:
            np.testing.assert_array_equal(x, y, err_msg=field)


def test_session_equals_uncached_colorize(colorizer, image):
    s = colorizer.open_session(image, boxes=BOXES, scores=SCORES)
    assert isinstance(s, EditSession) and s.cached and len(s) == 3
    assert s.image.shape == (50, 70, 3) and s.boxes.shape == (3, 4) and s.boxes.dtype == np.int64
    np.testing.assert_array_equal(s.scores, SCORES)
    for hints in HINT_SETS:
        _same(s.colorize(hints=hints), colorizer.colorize(image, boxes=BOXES, scores=SCORES, hints=hints))
    planes = HintPlanes(ab=np.full((2, S, S), 0.2, np.float32), mask=np.zeros((1, S, S), np.float32))
    _same(s.colorize(hints=planes), colorizer.colorize(image, boxes=BOXES, scores=SCORES, hints=planes))
    _same(s.colorize(hints=HINT_SETS[1], decode="distribution", temperature=0.5),
          colorizer.colorize(image, boxes=BOXES, scores=SCORES, hints=HINT_SETS[1], decode="distribution",
                             temperature=0.5))
    for kwargs in ({}, dict(exclude=[1]), dict(decode="mixed", temperature=0.5)):  # the ab alone, nothing composed
        want = s.colorize(hints=HINT_SETS[1], **kwargs).ab
        np.testing.assert_array_equal(s.infer_ab(hints=HINT_SETS[1], **kwargs), want)


def test_instance_net_runs_once_per_kept_box_set(colorizer, image):
    b = colorizer.backend
    b.instance_runs.clear()
    s = colorizer.open_session(image, boxes=BOXES)
    assert b.instance_runs == [3]
    runs = b.uncached_runs
    for hints in HINT_SETS * 2:
        s.colorize(hints=hints)
    s.suggest_colors(10, 10, hints=HINT_SETS[1])
    assert b.instance_runs == [3] and b.uncached_runs == runs      # edits re-run only the fusion net
    s.colorize(exclude=[1])
    s.colorize(hints=HINT_SETS[2], exclude=[1])
    assert b.instance_runs == [3, 2]                               # once for the new set, then cached
    s.colorize(exclude=[0, 1, 2])                                  # nothing kept: the full-image net
    s.colorize()
    assert b.instance_runs == [3, 2]


def test_exclude_equals_colorize_without_those_boxes(colorizer, image):
    s = colorizer.open_session(image, boxes=BOXES, scores=SCORES)
    for exclude in ([1], [0, 2], (2, 2), [0, 1, 2]):
        keep = [i for i in range(3) if i not in exclude]
        want = colorizer.colorize(image, boxes=BOXES[keep], scores=SCORES[keep], hints=HINT_SETS[2])
        got = s.colorize(hints=HINT_SETS[2], exclude=exclude)
        _same(got, want)
        assert len(got.boxes) == len(keep)
    _same(s.colorize(), colorizer.colorize(image, boxes=BOXES, scores=SCORES))   # back to all boxes


def test_state_cache_is_bounded(colorizer, image):
    s = colorizer.open_session(image, boxes=BOXES)
    for exclude in ([0], [1], [2], [0, 1], [0, 2], [1, 2]):
        s.colorize(exclude=exclude)
    assert len(s._states) == MAX_CACHED_STATES


def test_session_suggestions_equal_uncached(colorizer, image):
    s = colorizer.open_session(image, boxes=BOXES)
    for x, y, exclude in ((33, 41, ()), (5, 5, [1]), (69, 0, [0, 1, 2])):
        keep = [i for i in range(3) if i not in exclude]
        want = colorizer.suggest_colors(image, x, y, k=6, boxes=BOXES[keep], hints=HINT_SETS[1])
        assert s.suggest_colors(x, y, k=6, hints=HINT_SETS[1], exclude=exclude) == want


def test_suggestions_reuse_the_logits_of_the_preview_of_the_same_state(colorizer, image):
    """With distribution / mixed decoding a colorization computes the class logits; suggestions for the
    same hints, global hints and boxes then run no net (the editor asks for them right after each
    preview), and equal the uncached ones. Any change of state runs the net again."""
    s = colorizer.open_session(image, boxes=BOXES)
    want = colorizer.suggest_colors(image, 33, 41, k=6, boxes=BOXES[[0, 2]], hints=HINT_SETS[2])
    calls = []
    run_heads = colorizer.backend.run_heads

    def counting(*a, **k):
        calls.append(k.get("logits"))
        return run_heads(*a, **k)

    colorizer.backend.run_heads = counting
    try:
        s.infer_ab(hints=HINT_SETS[2], exclude=[1], decode="mixed")
        assert calls == [True]
        got = s.suggest_colors(33, 41, k=6, hints=HINT_SETS[2], exclude=[1])
        assert calls == [True]  # no second run
        assert got == want
        s.suggest_colors(5, 5, k=6, hints=HINT_SETS[2], exclude=[1])  # another point, same state: free
        assert len(calls) == 1
        for kw in (dict(hints=HINT_SETS[1], exclude=[1]), dict(hints=HINT_SETS[2], exclude=[]),
                   dict(hints=HINT_SETS[2], exclude=[1], global_hints=GlobalHints(saturation=0.5))):
            n = len(calls)
            try:
                s.suggest_colors(33, 41, k=6, **kw)
            except ValueError:  # weights without the global hints branch
                continue
            assert len(calls) == n + 1, kw
        s.infer_ab(hints=HINT_SETS[1], decode="regression")  # no logits: the cache stays as it was
        assert calls[-1] is False
    finally:
        colorizer.backend.run_heads = run_heads


def test_session_runs_the_detector_once(image):
    calls = []

    def detector(rgb):
        calls.append(rgb.shape)
        return Detections(boxes=BOXES, scores=SCORES, labels=np.array([3, 1, 2]))

    c = Colorizer(TorchBackend(tiny_nets(seed=2)), default_size=S, detector=detector)
    s = c.open_session(image)
    assert calls == [(50, 70, 3)]
    np.testing.assert_array_equal(s.labels, [3, 1, 2])
    want = c.colorize(image, hints=HINT_SETS[1])                   # runs the detector again
    _same(s.colorize(hints=HINT_SETS[1]), want)
    r = s.colorize(exclude=[0])
    want = c.colorize(image, boxes=BOXES[1:], scores=SCORES[1:])  # given boxes: no labels there
    np.testing.assert_array_equal(r.rgb, want.rgb)
    np.testing.assert_array_equal(r.ab, want.ab)
    np.testing.assert_array_equal(r.scores, SCORES[1:])
    np.testing.assert_array_equal(r.labels, [1, 2])
    assert len(calls) == 2
    empty = c.open_session(image, boxes=[])                        # given boxes: no detector
    assert len(calls) == 2 and len(empty) == 0
    _same(empty.colorize(hints=HINT_SETS[1]), c.colorize(image, boxes=[], hints=HINT_SETS[1]))


def test_session_with_global_hints(image):
    from test_decode_api import global_nets

    c = Colorizer(TorchBackend(global_nets(seed=5)), default_size=S)
    s = c.open_session(image, boxes=BOXES)
    g = GlobalHints(saturation=0.7)
    _same(s.colorize(hints=HINT_SETS[1], global_hints=g), c.colorize(image, boxes=BOXES, hints=HINT_SETS[1],
                                                                       global_hints=g))
    _same(s.colorize(global_hints=g, exclude=[2]), c.colorize(image, boxes=BOXES[:2], global_hints=g))


def test_backend_without_instance_cache_still_gives_the_same_results(image):
    torch_backend = TorchBackend(tiny_nets(seed=2))

    class RunOnly:
        name = "runonly"

        def run(self, batch):
            return torch_backend.run(batch)

    c = Colorizer(RunOnly(), default_size=S)
    s = c.open_session(image, boxes=BOXES)
    assert not s.cached
    _same(s.colorize(hints=HINT_SETS[2], exclude=[0]), c.colorize(image, boxes=BOXES[1:], hints=HINT_SETS[2]))


@pytest.mark.parametrize("exclude, exc, match", [([3], ValueError, "out of range"), ([-1], ValueError, "out of range"),
                                                 (["a"], TypeError, "box indices"), ([0.5], TypeError, "box indices"),
                                                 (5, TypeError, "sequence")])
def test_bad_exclude(colorizer, image, exclude, exc, match):
    s = colorizer.open_session(image, boxes=BOXES)
    with pytest.raises(exc, match=match):
        s.colorize(exclude=exclude)


def test_bad_session_inputs(colorizer, image, tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.png"):
        colorizer.open_session(tmp_path / "nope.png")
    with pytest.raises(ValueError, match="boxes"):
        colorizer.open_session(image, boxes=[[10, 10, 5, 5]])
    with pytest.raises(ValueError, match="size"):
        colorizer.open_session(image, size=30)
    s = colorizer.open_session(image, boxes=BOXES)
    with pytest.raises(ValueError, match="outside"):
        s.suggest_colors(100, 3)
    with pytest.raises(ValueError, match="outside"):
        s.colorize(hints=[Hint(100, 3, rgb=(1, 2, 3))])
    with pytest.raises(ValueError, match="decode"):
        s.colorize(decode="mean")


def test_onnxruntime_session_equals_uncached(tiny_weights_dir, image, monkeypatch):
    """The same on the ONNX Runtime backend (the CPU default): cached state, exact equality; the
    instances are resampled to their boxes once per state, not at every edit."""
    pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
    c = Colorizer.from_pretrained(tiny_weights_dir, backend="onnxruntime")
    if not hasattr(c.backend, "run_instances"):
        pytest.skip("this ONNX Runtime backend has no run_instances (no cached instance state)")
    s = c.open_session(image, boxes=BOXES, size=S)
    assert s.cached
    for hints, exclude in ((HINT_SETS[1], ()), (HINT_SETS[2], [1]), ((), [0, 1, 2])):
        keep = [i for i in range(3) if i not in exclude]
        _same(s.colorize(hints=hints, exclude=exclude), c.colorize(image, boxes=BOXES[keep], hints=hints, size=S))
    assert s.suggest_colors(20, 30, k=4, exclude=[2]) == c.suggest_colors(image, 20, 30, k=4, boxes=BOXES[:2], size=S)
    from instcolor.pipeline import native_ops

    ops = native_ops()
    if ops is None:
        return
    calls = []
    sample = ops.fuse_sample_instances
    monkeypatch.setattr(ops, "fuse_sample_instances", lambda *a: calls.append(a[0].shape) or sample(*a))
    _same(s.colorize(hints=HINT_SETS[2]), c.colorize(image, boxes=BOXES, hints=HINT_SETS[2], size=S))
    assert calls == []  # the three boxes' state was sampled by the first colorize above
    fresh = c.open_session(image, boxes=BOXES, size=S)
    fresh.colorize(hints=HINT_SETS[1])
    assert len(calls) == len(c.backend.fusion_segments) == 13  # once per fusion level
    fresh.colorize(hints=HINT_SETS[2])
    assert len(calls) == 13

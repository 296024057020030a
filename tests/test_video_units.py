"""instcolor.video pieces on their own: tracker, detection schedule, stabiliser, stage runner, options."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from instcolor.video.options import VideoError, VideoOptions
from instcolor.video.track import BoxTracker, DetectionSchedule, greedy_match, iou_matrix


def const_flow(dx, dy, h=32, w=32):
    f = np.zeros((h, w, 2), np.float32)
    f[..., 0], f[..., 1] = dx, dy
    return f


# ----------------------------------------------------------------------------- tracker
def test_iou_and_greedy_match():
    a = np.array([[0, 0, 10, 10], [20, 20, 30, 30]])
    b = np.array([[21, 21, 31, 31], [0, 0, 10, 5], [100, 100, 110, 110]])
    iou = iou_matrix(a, b)
    assert iou[0, 1] == pytest.approx(0.5) and iou[1, 0] == pytest.approx(81 / 119) and iou[:, 2].max() == 0
    assert sorted(greedy_match(iou, 0.3)) == [(0, 1), (1, 0)]
    assert greedy_match(iou, 0.6) == [(1, 0)]
    # greedy takes the best pair first even when it blocks a row's only other match
    iou2 = np.array([[0.9, 0.8], [0.85, 0.0]])
    assert greedy_match(iou2, 0.3) == [(0, 0)]


def test_tracker_keeps_identity_and_order_and_follows_the_flow():
    t = BoxTracker(iou_threshold=0.3, max_missed=1, detection_weight=0.5)
    hw = (64, 128)   # flow grid 32x32 over a 128x64 frame: 1 grid px = 4 px in x, 2 px in y
    t.correct([[60, 10, 80, 30], [10, 10, 30, 40]], [0.9, 0.8], [1, 2])
    boxes, scores, labels, ids = t.current(hw)
    assert ids.tolist() == [0, 1] and boxes[0].tolist() == [60, 10, 80, 30]
    t.predict(const_flow(1.0, 0.5), hw)   # moves every box by +4 px in x, +1 px in y
    boxes, _, _, ids = t.current(hw)
    assert boxes.tolist() == [[64, 11, 84, 31], [14, 11, 34, 41]] and ids.tolist() == [0, 1]
    # detections in the other order, slightly off: matched by IoU, smoothed halfway, ids and order kept
    # (scores now rank track 1 above track 0: the order stays by id)
    t.correct([[16, 11, 36, 41], [66, 13, 86, 33]], [0.95, 0.7], [2, 1])
    boxes, scores, labels, ids = t.current(hw)
    assert ids.tolist() == [0, 1] and labels.tolist() == [1, 2]
    assert boxes.tolist() == [[65, 12, 85, 32], [15, 11, 35, 41]]
    assert scores.tolist() == pytest.approx([0.7, 0.95])


def test_tracker_class_aware_new_tracks_and_missed():
    t = BoxTracker(max_missed=1)
    t.correct([[0, 0, 20, 20]], [0.9], [3])
    t.correct([[0, 0, 20, 20]], [0.9], [4])   # same place, other class: a new track; old one missed once
    assert [tr.id for tr in t.tracks] == [0, 1] and t.tracks[0].missed == 1
    t.correct([[0, 0, 20, 20]], [0.9], [4])   # old one missed twice -> gone
    assert [tr.id for tr in t.tracks] == [1]
    t.reset()
    t.correct([[0, 0, 20, 20]], None, None)
    assert [tr.id for tr in t.tracks] == [2]  # ids keep counting after a reset


def test_tracker_top_k_by_score_in_id_order_and_boxes_leaving_the_frame():
    t = BoxTracker(max_tracks=2)
    t.correct([[0, 0, 10, 10], [20, 0, 30, 10], [40, 0, 50, 10]], [0.5, 0.9, 0.7])
    boxes, scores, _, ids = t.current((50, 100))
    assert ids.tolist() == [1, 2] and scores.tolist() == pytest.approx([0.9, 0.7])
    t.predict(const_flow(-20, 0), (50, 100))  # -62.5 px: boxes 1 and 2 leave the frame, box 0 too
    boxes, _, _, ids = t.current((50, 100))
    assert len(boxes) == 0


def test_detection_schedule():
    s = DetectionSchedule(3)
    assert [s.due(i, cut=(i == 4)) for i in range(10)] == [True, False, False, True, True, False, False, True,
                                                           False, False]


# ----------------------------------------------------------------------------- stabiliser
def test_stabiliser_blends_along_the_flow_and_keeps_occluded_pixels_fresh():
    pytest.importorskip("cv2", reason="OpenCV is not installed (pip install '.[video]')")
    from instcolor.video.stabilize import FlowStabilizer

    s = FlowStabilizer(blend=0.75)
    S = 24
    grey = np.tile(np.arange(S, dtype=np.uint8) * 8, (S, 1))
    ab0 = np.zeros((2, S, S), np.float32)
    ab0[0, :, 10] = 1.0                             # a line at x = 10
    ab0[1] = 0.3                                    # and a uniform b
    out0 = s.push(ab0, grey, None)
    np.testing.assert_array_equal(out0, ab0)        # first frame: as predicted
    # everything moves 2 px right; the new prediction has the line at x = 12 at half strength
    grey1 = np.roll(grey, 2, axis=1)
    grey1[:, :2] = grey[:, :2]
    fw, bw = const_flow(2, 0, S, S), const_flow(-2, 0, S, S)
    ab1 = np.zeros((2, S, S), np.float32)
    ab1[0, :, 12] = 0.5
    ab1[1] = -0.2
    out1 = s.push(ab1, grey1, (fw, bw))
    # the previous line, warped to x = 12, weighs 0.75: 0.75 * 1 + 0.25 * 0.5
    assert out1[0, 5, 12] == pytest.approx(0.875)
    assert out1[0, 5, 10] == pytest.approx(0.0)     # the old position is not smeared
    assert out1[1, 5, 12] == pytest.approx(0.75 * 0.3 - 0.25 * 0.2)
    # pixels whose flow comes from outside the frame (x < 2) are occluded: the new prediction as is
    np.testing.assert_array_equal(out1[:, :, :2], ab1[:, :, :2])
    # a backward flow that the forward flow contradicts (fb inconsistency) keeps the prediction too
    s2 = FlowStabilizer(blend=0.75)
    s2.push(ab0, grey, None)
    np.testing.assert_array_equal(s2.push(ab1, grey, (const_flow(0, 0, S, S), bw))[:, :, 4:], ab1[:, :, 4:])
    # reset: fresh again
    s.reset()
    np.testing.assert_array_equal(s.push(ab1, grey1, (fw, bw)), ab1)


def test_stabiliser_grey_mismatch_keeps_the_prediction():
    pytest.importorskip("cv2", reason="OpenCV is not installed (pip install '.[video]')")
    from instcolor.video.stabilize import FlowStabilizer

    s = FlowStabilizer(blend=0.9, grey_tolerance=12)
    S = 16
    grey = np.full((S, S), 100, np.uint8)
    s.push(np.ones((2, S, S), np.float32), grey, None)
    grey2 = grey.copy()
    grey2[:, 8:] = 160                              # the right half changed brightness: not the same surface
    zero = const_flow(0, 0, S, S)
    out = s.push(np.zeros((2, S, S), np.float32), grey2, (zero, zero))
    assert np.allclose(out[:, :, :8], 0.9) and np.allclose(out[:, :, 8:], 0.0)


# ----------------------------------------------------------------------------- stage runner
class Item:
    def __init__(self, i):
        self.index = i
        self.is_frame = True


class Double:
    name = "double"

    def __init__(self, fail_at=None, exc=RuntimeError):
        self.busy_s, self.frames, self.fail_at, self.exc, self.pending = 0.0, 0, fail_at, exc, []

    def process(self, item):
        if item.index == self.fail_at:
            raise self.exc("boom")
        self.pending.append(item)
        if len(self.pending) == 3:
            out, self.pending = self.pending, []
            return out
        return []

    def finish(self):
        out, self.pending = self.pending, []
        return out


def test_runner_keeps_order_batches_and_flushes_at_the_end():
    from instcolor.video.pipeline import StageRunner

    r = StageRunner((Item(i) for i in range(10)), [Double(), Double()], queue_size=1)
    assert [it.index for it in r] == list(range(10))
    assert r.stats()["double"]["frames"] == 10 and r.stats()["read"]["frames"] == 10


@pytest.mark.parametrize("where", ["source", "stage"])
def test_runner_reraises_the_first_error_and_stops_every_thread(where):
    from instcolor.video.pipeline import StageRunner

    def source():
        for i in range(1000):
            if where == "source" and i == 5:
                raise VideoError("bad.mp4: frame 5 is damaged")
            yield Item(i)

    stages = [Double(fail_at=7 if where == "stage" else None), Double()]
    before = {t.ident for t in threading.enumerate()}
    with pytest.raises((VideoError, RuntimeError), match="bad.mp4|boom"):
        list(StageRunner(source(), stages, queue_size=1))
    assert not [t for t in threading.enumerate() if t.ident not in before and t.name.startswith("instcolor-video")]


def test_runner_consumer_stopping_early_stops_the_threads():
    from instcolor.video.pipeline import StageRunner

    it = iter(StageRunner((Item(i) for i in range(10 ** 6)), [Double()], queue_size=2))
    assert next(it).index == 0
    it.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("instcolor-video")]


class SlowNets:
    """A stand-in colorizer for NetsStage: infer sleeps a random while (so concurrent batches finish out
    of order) and returns each frame's index as its ab; fails on the frame ``fail_at``."""

    def __init__(self, fail_at=None, seed=0, ops=None):
        self.ops = ops
        self.kernel_threads = set()
        self.rng = np.random.default_rng(seed)
        self.lock = threading.Lock()
        self.fail_at = fail_at
        self.running = self.most_at_once = 0

    def infer(self, prepared):
        import time

        with self.lock:
            delay = float(self.rng.uniform(0.0, 0.01))
            self.running += 1
            if self.ops is not None:
                self.kernel_threads.add(self.ops.cpu_threads())
            self.most_at_once = max(self.most_at_once, self.running)
        try:
            time.sleep(delay)
            idx = [p.prepared for p in prepared]
            if self.fail_at in idx:
                raise RuntimeError(f"nets failed on frame {self.fail_at}")
            return [np.full((2, 1, 1), i, np.float32) for i in idx]
        finally:
            with self.lock:
                self.running -= 1


def nets_items(n, side_every=7):
    from instcolor.video.pipeline import Work
    from instcolor.video.source import FrameItem

    for i in range(n):
        it = FrameItem(index=i, rgb=np.zeros((1, 1, 3), np.uint8))
        it.work = Work(prepared=i, grey=None, flows=None, cut=False)
        yield it
        if i % side_every == side_every - 1:
            yield FrameItem(index=i, rgb=None, side=[f"packet after frame {i}"])


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_nets_workers_keep_the_order_of_frames_and_side_packets(workers):
    """NetsStage with concurrent batches gives every frame its own result, in input order, with side-only
    items where they were; no more than ``workers`` batches run at once; the pool ends with the run."""
    from instcolor.video.pipeline import NetsStage, StageRunner

    fake = SlowNets(seed=workers)
    stage = NetsStage(fake, batch_size=2, workers=workers)
    before = {t.ident for t in threading.enumerate()}
    out = list(StageRunner(nets_items(40), [stage], queue_size=2))
    want = [(it.index, it.is_frame) for it in nets_items(40)]
    assert [(it.index, it.is_frame) for it in out] == want
    assert all(float(it.work.ab[0, 0, 0]) == it.index for it in out if it.is_frame)
    assert [it.side for it in out if not it.is_frame] == [[f"packet after frame {i}"] for i in range(6, 40, 7)]
    assert fake.most_at_once <= workers and (workers == 1 or fake.most_at_once > 1)
    assert not [t for t in threading.enumerate() if t.ident not in before and t.name.startswith("instcolor-video")]


def test_nets_workers_set_the_kernel_threads_of_their_own_threads():
    from instcolor import ops
    from instcolor.pipeline import native_ops
    from instcolor.video.pipeline import NetsStage, StageRunner

    if native_ops() is None:
        pytest.skip("the native kernels are not built")
    before = ops.cpu_threads()
    for workers in (1, 2):
        fake = SlowNets(ops=ops)
        list(StageRunner(nets_items(12), [NetsStage(fake, batch_size=2, workers=workers, cpu_threads=1)]))
        assert fake.kernel_threads == {1}
    assert ops.cpu_threads() == before


def test_nets_worker_error_stops_the_run_and_its_threads():
    from instcolor.video.pipeline import NetsStage, StageRunner

    before = {t.ident for t in threading.enumerate()}
    with pytest.raises(RuntimeError, match="nets failed on frame 13"):
        list(StageRunner(nets_items(200), [NetsStage(SlowNets(fail_at=13), batch_size=2, workers=2)], queue_size=2))
    assert not [t for t in threading.enumerate() if t.ident not in before and t.name.startswith("instcolor-video")]


# ----------------------------------------------------------------------------- options
@pytest.mark.parametrize("kw, msg", [
    ({"size": 60}, "size must be a positive multiple of 8"),
    ({"detect_every": 0}, "detect_every"),
    ({"max_instances": 9}, "max_instances"),
    ({"stabilize": "yes"}, "stabilize must be one of flow, none"),
    ({"blend": 1.5}, "blend"),
    ({"crf": 60}, "crf for libx264 must be an integer in 0..51"),
    ({"codec": "ffv1", "crf": 10}, "crf applies to the encoders"),
    ({"batch_size": 0}, "batch_size"),
    ({"fps": 0}, "fps"),
])
def test_options_are_checked(kw, msg):
    with pytest.raises(VideoError, match=msg):
        VideoOptions(**kw)
    assert VideoOptions().effective_crf == 18 and VideoOptions(codec="ffv1").effective_crf is None


def test_cli_and_package_import_neither_pyav_nor_opencv():
    import subprocess
    import sys

    code = ("import sys, instcolor.cli, instcolor.video; instcolor.cli.build_parser(); "
            "bad = [m for m in ('av', 'cv2') if m in sys.modules]; assert not bad, bad")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_helper_threads_option_sets_the_stage_threads():
    """helper_threads: validated; a helper stage sets its own thread's CPU-kernel threads (not the
    caller's), 0 leaves the default."""
    import threading

    from instcolor import Colorizer, ops
    from instcolor.video.options import VideoError, VideoOptions
    from instcolor.video.pipeline import ComposeStage

    for bad in (-1, 1.5, True, 1000):
        with pytest.raises(VideoError, match="helper_threads"):
            VideoOptions(helper_threads=bad)
    from instcolor._ort import usable_cores

    small = usable_cores() <= VideoOptions.SMALL_MACHINE_CORES
    assert VideoOptions().helper_thread_count == (1 if small else 0)
    assert VideoOptions(helper_threads=3).helper_thread_count == 3
    c = Colorizer.from_pretrained(backend="onnxruntime")
    if c.ops is None:
        pytest.skip("the native kernels are not built")
    before = ops.cpu_threads()
    seen = {}
    for n in (1, 0):
        stage = ComposeStage(c, VideoOptions(helper_threads=n, stabilize="none"))

        def run():
            stage.start()
            seen[n] = ops.cpu_threads()
        t = threading.Thread(target=run)
        t.start()
        t.join()
    assert seen == {1: 1, 0: before} and ops.cpu_threads() == before


def test_nets_threads_option_and_the_backend_it_runs(tiny_weights_dir):
    """nets_threads: validated and resolved; the pipeline's nets run on a second ONNX Runtime backend
    with that many threads, made once per thread count and kept; its results equal the colorizer's own
    bit for bit, instances and fusion included; other backends (no with_threads) are left as they are."""
    import types

    from instcolor import Colorizer
    from instcolor._ort import usable_cores
    from instcolor.video import nets_colorizer

    for bad in (-1, 2.5, True, 1000):
        with pytest.raises(VideoError, match="nets_threads"):
            VideoOptions(nets_threads=bad)
    cores = usable_cores()
    assert VideoOptions().nets_thread_count == (max(1, cores // 2) if cores <= VideoOptions.SMALL_MACHINE_CORES else 0)
    assert VideoOptions(nets_threads=3).nets_thread_count == 3
    for bad in (0, 17, 1.0):
        with pytest.raises(VideoError, match="nets_workers"):
            VideoOptions(nets_workers=bad)
    small = cores <= VideoOptions.SMALL_MACHINE_CORES
    assert VideoOptions().nets_worker_count == (max(1, cores // VideoOptions().nets_thread_count) if small else 1)
    assert VideoOptions(nets_workers=3).nets_worker_count == 3
    for bad in (0, 17, 2.0):
        with pytest.raises(VideoError, match="compose_workers"):
            VideoOptions(compose_workers=bad)
    assert VideoOptions(helper_threads=1).compose_worker_count == min(cores, VideoOptions.MAX_DEFAULT_COMPOSE_WORKERS)
    assert VideoOptions(helper_threads=0).compose_worker_count == 1
    assert VideoOptions(helper_threads=0, compose_workers=2).compose_worker_count == 2
    pytest.importorskip("onnxruntime")
    c = Colorizer.from_pretrained(tiny_weights_dir, backend="onnxruntime")
    own = c.backend
    assert own.with_threads(own.threads) is own
    other = 1 if own.threads != 1 else 2
    variant = own.with_threads(other)
    assert variant is not own and variant.threads == other and own.with_threads(other) is variant
    nets = nets_colorizer(c, VideoOptions(nets_threads=other))
    assert nets is not c and nets.backend is variant and c.backend is own
    assert nets_colorizer(c, VideoOptions(nets_threads=0)) is c
    assert nets_colorizer(c, VideoOptions(nets_threads=own.threads)) is c
    plain = types.SimpleNamespace(backend=object())
    assert nets_colorizer(plain, VideoOptions(nets_threads=1)) is plain
    rng = np.random.default_rng(3)
    img = rng.integers(0, 256, (60, 84, 3), np.uint8)
    boxes = np.array([[4, 6, 50, 40], [30, 20, 80, 58]], np.float32)
    for b in (None, boxes):
        a, z = c.colorize(img, boxes=b, size=64), nets.colorize(img, boxes=b, size=64)
        np.testing.assert_array_equal(a.ab, z.ab)
        np.testing.assert_array_equal(a.rgb, z.rgb)

"""The video pipeline: a reader thread and one thread per stage, joined by bounded queues.

::

    source (decode)  ->  AnalyseStage  ->  NetsStage  ->  ComposeStage  ->  caller (encode / yield)
                  queue            queue          queue             queue

* **AnalyseStage** — lightness at processing size, scene cuts, optical flow, detector every N frames
  + tracker, hints, network inputs (crops, hint planes).
* **NetsStage** — ``batch_size`` frames per pass of the nets (the colorizer's backend, decoded as the
  colorizer decodes: regression, or distribution when the weights recommend it); with ``workers`` > 1
  that many passes run at once in the stage's worker threads, their results kept in order.
* **ComposeStage** — temporal stabilisation of ab, then composition at full resolution with the
  input's own L (the same native op as :meth:`Colorizer.colorize`).

Stages are plain objects (``process(item) -> list``, ``finish() -> list``, ``close()``) driven by
:class:`StageRunner`; they keep their per-video state (tracker, stabiliser, flow) on their one thread,
and only the nets and composition start threads of their own (:class:`WorkerStage`: workers whose
results come back in order, ended in ``close``). Every queue is bounded (``queue_size``), so memory does not grow with the
video's length; end of stream is a sentinel. Every wait has a timeout and checks a stop event: the
first error in any thread (KeyboardInterrupt included) stops all of them, and the caller re-raises
it once the threads are joined.
"""
from __future__ import annotations

import queue
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Iterable

import numpy as np

from .. import prepare as _prepare
from ..pipeline import PreparedImage, compose_result, prepare_image
from .flow import DisFlow, grey_histogram, grey_of_L, scene_distance
from .hints import HintSchedule
from .options import VideoOptions
from .source import FrameItem
from .stabilize import FlowStabilizer
from .track import BoxTracker, DetectionSchedule

_END = object()
POLL_S = 0.1        # how often a blocked put/get looks at the stop event
JOIN_TIMEOUT_S = 30.0


@dataclass
class Work:
    """What AnalyseStage attaches to a frame for the later stages."""

    prepared: _prepare.Prepared
    grey: np.ndarray                     # (S, S) uint8 lightness
    flows: tuple | None                  # (previous -> this, this -> previous) at S x S, or None
    cut: bool                            # this frame starts a scene (or the video)
    scores: np.ndarray | None = None
    labels: np.ndarray | None = None
    track_ids: np.ndarray | None = None
    ab: np.ndarray | None = None


class Stage:
    name = "stage"
    cpu_threads = 0  # threads of the CPU kernels this stage's thread starts (0: leave the default)

    def __init__(self):
        self.busy_s = 0.0
        self.cpu_s = 0.0   # CPU time of the stage's thread and its own workers (not the libraries' worker threads)
        self.frames = 0

    def start(self) -> None:
        """Called once in the stage's own thread before its first item."""
        if self.cpu_threads:
            from .. import ops

            ops.set_cpu_threads(self.cpu_threads)

    def process(self, item: FrameItem) -> list[FrameItem]:
        raise NotImplementedError

    def finish(self) -> list[FrameItem]:
        return []

    def close(self) -> None:
        """Called once in the stage's thread when it ends, whatever the reason (release resources)."""


class AnalyseStage(Stage):
    """Lightness, scene cuts, flow, detection + tracking, hints -> network inputs (see module docstring)."""

    name = "analyse"

    def __init__(self, colorizer, options: VideoOptions, size: int, hints: HintSchedule | None = None):
        super().__init__()
        self.ops = colorizer.ops
        self.detector = colorizer.detector if options.max_instances > 0 else None
        self.options = options
        self.size = size
        self.hints = hints or HintSchedule()
        self.need_flow = options.stabilize == "flow" or self.detector is not None or self.hints.needs_flow
        self.flow = DisFlow(options.flow_preset) if self.need_flow else None
        self.cpu_threads = options.helper_thread_count if self.ops is not None else 0
        self.cv2_threads = options.helper_thread_count
        self.tracker = BoxTracker(max_tracks=options.max_instances) if self.detector is not None else None
        self.schedule = DetectionSchedule(options.detect_every)
        self._prev_grey = None
        self._prev_hist = None
        self.cuts = 0
        self.detections = 0
        self.detect_s = 0.0
        self.flow_s = 0.0

    def start(self) -> None:
        super().start()
        if self.cv2_threads and self.need_flow:
            from .flow import _cv2

            _cv2().setNumThreads(self.cv2_threads)  # OpenCV's setting is global: flow and remap use it

    def _full_L(self, img: np.ndarray) -> np.ndarray:
        if self.ops is not None:
            return self.ops.rgb_to_lab(img, size=self.size)[:1]
        return prepare_image(img, np.zeros((0, 4), np.int64), (), self.size, None).full_L

    def _prepared(self, img, full_L, boxes, hints) -> _prepare.Prepared:
        """What :func:`instcolor.pipeline.prepare_image` gives, reusing the lightness already computed."""
        if self.ops is None:
            return prepare_image(img, boxes, hints, self.size, None)
        h, w = img.shape[:2]
        hint_ab, hint_mask = _prepare.hint_planes(hints, self.size, (h, w))
        return _prepare.Prepared(image=img, size=self.size, full_rgb_u8=None, full_L=full_L, hint_ab=hint_ab,
                                 hint_mask=hint_mask, boxes=boxes,
                                 crop_L=self.ops.roi_crop_resize(img, boxes, self.size),
                                 box_info=_prepare.box_info_levels(boxes, (h, w), self.size))

    def process(self, item: FrameItem) -> list[FrameItem]:
        if not item.is_frame:
            return [item]
        img = item.rgb
        hw = img.shape[:2]
        full_L = self._full_L(img)
        grey = grey_of_L(full_L)
        hist = grey_histogram(grey)
        cut = self._prev_hist is None or scene_distance(self._prev_hist, hist) > self.options.scene_threshold
        if cut and self._prev_hist is not None:
            self.cuts += 1
        flows = None
        if self.flow is not None and not cut:
            t0 = time.perf_counter()
            flows = self.flow.pair(self._prev_grey, grey)
            self.flow_s += time.perf_counter() - t0
        self._prev_grey, self._prev_hist = grey, hist
        fw = flows[0] if flows is not None else None
        scores = labels = ids = None
        if self.tracker is not None:
            if cut:
                self.tracker.reset()
            self.tracker.predict(fw, hw)
            if self.schedule.due(item.index, cut):
                t0 = time.perf_counter()
                det = self.detector(img)
                self.detect_s += time.perf_counter() - t0
                self.detections += 1
                self.tracker.correct(det.boxes, det.scores, det.labels)
            boxes, scores, labels, ids = self.tracker.current(hw)
        else:
            boxes = np.zeros((0, 4), np.float32)
        hints = self.hints.at(item.index, hw, fw)
        sel = _prepare.select_boxes(boxes, None, hw, name=f"frame {item.index}: boxes")
        item.work = Work(self._prepared(img, full_L, sel, hints), grey, flows, cut, scores, labels, ids)
        return [item]


class OrderedWorkers:
    """Runs a stage's per-item (or per-batch) work in ``workers`` threads and hands the results back in
    the order it was submitted. ``workers`` 1: the work runs at once in the caller's thread.

    ``submit(fn, arg)`` queues ``fn(arg)`` (a list of items); ``put(items)`` queues items that need no
    work (side packets), in order after what was submitted before; ``ready()`` returns the items at the
    front that are done, waiting while ``workers`` runs are in flight; ``ready(wait_all=True)`` waits
    for everything. ``cpu_s``: CPU seconds of the worker threads. Each worker thread calls
    ``initializer`` (if any) once."""

    def __init__(self, workers: int, name: str, initializer=None):
        self.workers = max(1, int(workers))
        self.cpu_s = 0.0
        self._order: deque = deque()   # a Future (work in flight) or a list of ready items
        self._lock = threading.Lock()
        self._pool = None
        if self.workers > 1:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix=name, initializer=initializer)

    def _timed(self, fn, arg):
        c0 = time.thread_time()
        try:
            return fn(arg)
        finally:
            with self._lock:
                self.cpu_s += time.thread_time() - c0

    def submit(self, fn, arg) -> None:
        self._order.append(self._pool.submit(self._timed, fn, arg) if self._pool is not None else fn(arg))

    def put(self, items: list) -> None:
        self._order.append(list(items))

    def ready(self, wait_all: bool = False) -> list:
        out: list = []
        while self._order:
            head = self._order[0]
            if isinstance(head, list):
                out.extend(self._order.popleft())
                continue
            in_flight = sum(not isinstance(e, list) for e in self._order)
            if not (head.done() or wait_all or in_flight >= self.workers):
                break
            out.extend(self._order.popleft().result())
        return out

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


class WorkerStage(Stage):
    """A stage whose work runs through an :class:`OrderedWorkers` (``self._work``) of ``self.workers``
    threads, made in :meth:`start` (each worker thread gets the stage's kernel-thread setting) and
    shut down in :meth:`close`, which adds the workers' CPU time to the stage's."""

    workers = 1

    def start(self) -> None:
        super().start()
        self._work = OrderedWorkers(self.workers, f"instcolor-video-{self.name}-worker", lambda: Stage.start(self))

    def close(self) -> None:
        work, self._work = getattr(self, "_work", None), None
        if work is not None:
            work.close()
            self.cpu_s += work.cpu_s


class NetsStage(WorkerStage):
    """Runs the nets on ``batch_size`` frames at a time; a side-only item flushes the batch first.

    ``workers`` > 1: up to that many batches run at once, each in a worker thread of this stage
    (the backend must allow concurrent runs: ONNX Runtime sessions do), and come out in order. On a
    small machine this replaces intra-op threads: two single-threaded runs side by side waste no CPU
    on synchronisation, and the nets stop being one serial step that every frame queues for."""

    name = "nets"

    def __init__(self, colorizer, batch_size: int, workers: int = 1, cpu_threads: int = 0):
        super().__init__()
        self.colorizer = colorizer
        self.batch_size = batch_size
        self.workers = max(1, int(workers))
        # threads of the CPU kernels the nets call (the instance blend), set in every thread that runs them
        self.cpu_threads = cpu_threads if getattr(colorizer, "ops", None) is not None else 0
        self._pending: list[FrameItem] = []

    def _run(self, batch: list[FrameItem]) -> list[FrameItem]:
        # the colorizer's own decoding (regression or distribution), as colorize does
        abs_ = self.colorizer.infer([PreparedImage(it.work.prepared) for it in batch])
        for it, ab in zip(batch, abs_):
            it.work.ab = ab
        return batch

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        if batch:
            self._work.submit(self._run, batch)

    def process(self, item: FrameItem) -> list[FrameItem]:
        if not item.is_frame:
            self._flush()
            self._work.put([item])
        else:
            self._pending.append(item)
            if len(self._pending) >= self.batch_size:
                self._flush()
        return self._work.ready()

    def finish(self) -> list[FrameItem]:
        self._flush()
        return self._work.ready(wait_all=True)


class ComposeStage(WorkerStage):
    """Stabilises ab (``stabilize="flow"``, in order, in the stage's thread) and composes the
    full-resolution frame: in ``workers`` threads of its own when ``options.compose_worker_count`` > 1
    (results in order), so that composition, the heaviest step at large sizes, is not one serial
    step on a machine whose helper stages run one kernel thread each."""

    name = "compose"

    def __init__(self, colorizer, options: VideoOptions):
        super().__init__()
        self.ops = colorizer.ops
        self.cpu_threads = options.helper_thread_count if self.ops is not None else 0
        self.workers = options.compose_worker_count if self.ops is not None else 1
        self.stabilizer = FlowStabilizer(options.blend) if options.stabilize == "flow" else None
        self.stabilize_s = 0.0

    def _compose(self, item: FrameItem) -> list[FrameItem]:
        w = item.work
        item.out = compose_result(w.prepared, w.ab, w.scores, w.labels, ops=self.ops, processed=False).rgb
        item.rgb = None
        item.work = None
        return [item]

    def process(self, item: FrameItem) -> list[FrameItem]:
        if not item.is_frame:
            self._work.put([item])
            return self._work.ready()
        w = item.work
        if self.stabilizer is not None:
            t0 = time.perf_counter()
            if w.cut:
                self.stabilizer.reset()
            w.ab = self.stabilizer.push(w.ab, w.grey, w.flows)
            self.stabilize_s += time.perf_counter() - t0
        self._work.submit(self._compose, item)
        return self._work.ready()

    def finish(self) -> list[FrameItem]:
        return self._work.ready(wait_all=True)


class StageRunner:
    """Runs ``source`` in a reader thread and each stage in its own thread; iterate it for the results
    in order (see the module docstring). ``stats()`` gives the busy seconds of each thread."""

    def __init__(self, source: Iterable[FrameItem], stages: list[Stage], queue_size: int = 4):
        self.source = source
        self.stages = stages
        self.queue_size = queue_size
        self._stop = threading.Event()
        self._errors: list[BaseException] = []
        self.read_s = 0.0
        self.read_cpu_s = 0.0
        self.frames_read = 0

    # ------------------------------------------------------------------ blocking helpers
    def _put(self, q: queue.Queue, item) -> bool:
        while not self._stop.is_set():
            try:
                q.put(item, timeout=POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def _get(self, q: queue.Queue):
        while not self._stop.is_set():
            try:
                return q.get(timeout=POLL_S)
            except queue.Empty:
                continue
        return _END

    def _fail(self, e: BaseException) -> None:
        self._errors.append(e)
        self._stop.set()

    # ------------------------------------------------------------------ threads
    def _read(self, out: queue.Queue) -> None:
        c0 = time.thread_time()
        it = iter(self.source)
        try:
            while not self._stop.is_set():
                t0 = time.perf_counter()
                try:
                    item = next(it)
                except StopIteration:
                    break
                self.read_s += time.perf_counter() - t0
                self.frames_read += item.is_frame
                if not self._put(out, item):
                    return
            self._put(out, _END)
        except BaseException as e:  # noqa: BLE001 - handed to the caller, which re-raises it
            self._fail(e)
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                try:
                    close()
                except Exception:  # noqa: BLE001
                    pass
            self.read_cpu_s = time.thread_time() - c0

    def _run_stage(self, stage: Stage, inq: queue.Queue, out: queue.Queue) -> None:
        c0 = time.thread_time()
        try:
            if hasattr(stage, "start"):  # Stage subclasses; any object with process/finish works
                stage.start()
            while True:
                item = self._get(inq)
                if item is _END:
                    if self._stop.is_set():
                        return
                    t0 = time.perf_counter()
                    rest = stage.finish()
                    stage.busy_s += time.perf_counter() - t0
                    for r in rest:
                        if not self._put(out, r):
                            return
                    self._put(out, _END)
                    return
                t0 = time.perf_counter()
                results = stage.process(item)
                stage.busy_s += time.perf_counter() - t0
                stage.frames += item.is_frame
                for r in results:
                    if not self._put(out, r):
                        return
        except BaseException as e:  # noqa: BLE001 - handed to the caller, which re-raises it
            self._fail(e)
        finally:
            try:
                if hasattr(stage, "close"):
                    stage.close()
            except BaseException as e:  # noqa: BLE001
                self._fail(e)
            stage.cpu_s = getattr(stage, "cpu_s", 0.0) + time.thread_time() - c0

    def __iter__(self):
        queues = [queue.Queue(maxsize=self.queue_size) for _ in range(len(self.stages) + 1)]
        threads = [threading.Thread(target=self._read, args=(queues[0],), name="instcolor-video-read", daemon=True)]
        for i, st in enumerate(self.stages):
            threads.append(threading.Thread(target=self._run_stage, args=(st, queues[i], queues[i + 1]),
                                            name=f"instcolor-video-{st.name}", daemon=True))
        for t in threads:
            t.start()
        finished = False
        try:
            while True:
                item = self._get(queues[-1])
                if item is _END:
                    break
                yield item
            finished = not self._errors
        finally:
            self._stop.set()
            for q in queues:  # unblock producers stuck on a full queue
                try:
                    while True:
                        q.get_nowait()
                except queue.Empty:
                    pass
            deadline = time.monotonic() + JOIN_TIMEOUT_S
            for t in threads:
                t.join(timeout=max(0.0, deadline - time.monotonic()))
        if self._errors:
            raise self._errors[0]
        if not finished:  # pragma: no cover - the loop only ends at _END or by an error
            raise RuntimeError("video pipeline stopped without a result")

    def stats(self) -> dict:
        """Per thread: ``busy_s`` (wall seconds spent working, waits excluded), ``cpu_s`` (the thread's
        CPU seconds; worker threads of the libraries it calls are not counted) and ``frames``."""
        out = {"read": {"busy_s": self.read_s, "cpu_s": self.read_cpu_s, "frames": self.frames_read}}
        for st in self.stages:
            out[st.name] = {"busy_s": st.busy_s, "cpu_s": getattr(st, "cpu_s", 0.0), "frames": st.frames}
        return out

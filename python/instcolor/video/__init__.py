"""Video colorization: decode -> detect/track -> colorize -> stabilise -> encode, over a Colorizer.

* :func:`colorize_file` — a video file (or a folder of numbered frames) to a video file (or a folder
  of PNG frames); what ``instcolor video`` runs.
* :func:`colorize_frames` — a generator: frames in (any iterable of (H, W, 3) / (H, W) uint8 arrays,
  consumed lazily), colorized frames out, in order; :meth:`instcolor.Colorizer.colorize_video`.
* :class:`VideoOptions`, :class:`VideoError`, :class:`VideoHint`, :func:`load_hints`.

PyAV (files) and OpenCV (optical flow) are imported only when a video is processed: install them
with ``pip install 'instcolor[video]'``.
"""
from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Sequence

from .options import VideoError, VideoOptions

__all__ = ["VideoOptions", "VideoError", "VideoHint", "VideoResult", "load_hints", "colorize_file",
           "colorize_frames"]


def __getattr__(name):  # light package import: hints pulls in instcolor.prepare only when asked
    if name in ("VideoHint", "load_hints"):
        from . import hints

        return getattr(hints, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass
class VideoResult:
    """Summary of :func:`colorize_file`: frames written, wall seconds, per-thread busy seconds."""

    output: str
    frames: int
    seconds: float
    stats: dict = field(default_factory=dict)
    scene_cuts: int = 0
    detections: int = 0

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else float("nan")


def _hint_schedule(hints, name="hints"):
    from .hints import HintSchedule, VideoHint, load_hints

    if hints is None:
        return HintSchedule()
    if isinstance(hints, (str, os.PathLike)):
        return HintSchedule(load_hints(hints), name=str(hints))
    hs = list(hints)
    for i, h in enumerate(hs):
        if not isinstance(h, VideoHint):
            raise VideoError(f"hints[{i}]: expected a VideoHint (or give a hints file path), got {type(h).__name__}")
    return HintSchedule(hs, name=name)


def nets_colorizer(colorizer, options: VideoOptions):
    """The colorizer whose nets a video pipeline runs: ``colorizer`` itself, or (``nets_thread_count``
    > 0 and an ONNX Runtime backend with other thread counts) a shallow copy of it on a second backend
    with that many intra-op threads per session (the same export and results)."""
    import copy

    threads = options.nets_thread_count
    make = getattr(colorizer.backend, "with_threads", None)
    backend = make(threads) if threads and make is not None else colorizer.backend
    if backend is colorizer.backend:  # with_threads gives the backend itself when it has that many threads
        return colorizer
    nets = copy.copy(colorizer)
    nets.backend = backend
    return nets


def _stages(colorizer, options: VideoOptions, hints):
    from ..prepare import check_size
    from .pipeline import AnalyseStage, ComposeStage, NetsStage

    try:
        size = check_size(colorizer.default_size if options.size is None else options.size)
    except ValueError as e:
        raise VideoError(f"size: {e}") from None
    analyse = AnalyseStage(colorizer, options, size, _hint_schedule(hints))
    nets = nets_colorizer(colorizer, options)
    # concurrent batches only where the backend allows concurrent runs (ONNX Runtime, with_threads)
    workers = options.nets_worker_count if options.nets_thread_count and hasattr(nets.backend, "with_threads") else 1
    return [analyse, NetsStage(nets, options.batch_size, workers, cpu_threads=options.nets_thread_count),
            ComposeStage(colorizer, options)]


def colorize_frames(frames: Iterable, colorizer, options: VideoOptions | None = None,
                    hints=None) -> Iterator:
    """Colorize a sequence of frames; yields (H, W, 3) uint8 frames in order, as they are done.

    ``frames``: any iterable of (H, W, 3) or (H, W) uint8 arrays of one size, read lazily in a
    background thread (at most about ``4 * options.queue_size`` frames are held at once).
    ``hints``: None, a hints file path or a list of :class:`VideoHint`. With
    ``options.stabilize == "none"`` and no detector every frame equals ``colorizer.colorize(frame).rgb``."""
    from .pipeline import StageRunner
    from .source import ArraySource

    options = options or VideoOptions()
    runner = StageRunner(ArraySource(frames), _stages(colorizer, options, hints), options.queue_size)
    gen = iter(runner)
    try:
        for item in gen:
            if item.is_frame:
                yield item.out
    finally:
        gen.close()


def _check_paths(src, dst) -> None:
    from pathlib import Path

    from .sink import is_folder_target

    s, d = Path(src).resolve(), Path(os.fspath(dst).rstrip("/" + os.sep) or os.fspath(dst)).resolve()
    if s == d:
        raise VideoError(f"{dst}: the output would overwrite the input; choose another output")
    if is_folder_target(dst) and (s.is_relative_to(d) or d.is_relative_to(s)):
        raise VideoError(f"{dst}: the output folder contains or lies inside the input {src}; choose another folder")


def colorize_file(src: str | os.PathLike, dst: str | os.PathLike, colorizer=None,
                  options: VideoOptions | None = None, hints=None, log=None) -> VideoResult:
    """Colorize the video ``src`` (a file FFmpeg decodes, or a folder of numbered frames) into ``dst``:
    a video file (container from the suffix) or, when ``dst`` ends with a path separator or is a
    folder, numbered PNG frames. Frame count, timestamps, size and rotation are kept; audio and
    subtitle streams are copied. ``dst`` appears only when complete (temporary name + rename).
    ``colorizer`` None = the built-in starter weights. Raises :class:`VideoError` naming the file."""
    from .pipeline import StageRunner
    from .sink import FrameFolderSink, VideoFileSink, is_folder_target
    from .source import open_source

    options = options or VideoOptions()
    log = log or (lambda s: print(s, file=sys.stderr))
    _check_paths(src, dst)
    folder_out = is_folder_target(dst)
    if colorizer is None:
        from .. import Colorizer

        colorizer = Colorizer.from_pretrained()
    stages = _stages(colorizer, options, hints)
    source = open_source(src, options)
    try:
        info = source.info
        first_hw = (info.height, info.width) if info.rotation % 180 == 0 else (info.width, info.height)
        sink = FrameFolderSink(dst, info, log=log) if folder_out else VideoFileSink(dst, info, options, first_hw, log=log)
    except BaseException:
        source.close()
        raise
    from tqdm import tqdm

    runner = StageRunner(source, stages, options.queue_size)
    t0 = time.monotonic()
    bar = tqdm(total=info.frame_count, unit="frame", desc="video", disable=not options.progress, file=sys.stderr,
               dynamic_ncols=True, smoothing=0.1)
    gen = iter(runner)
    write_s = write_cpu_s = 0.0
    try:
        with sink:
            for item in gen:
                w0, c0 = time.perf_counter(), time.thread_time()
                sink.write_side(item.side)
                item.side = []
                if item.is_frame:
                    sink.write(item.out, item.pts, item.time_base)
                    bar.update(1)
                write_s += time.perf_counter() - w0
                write_cpu_s += time.thread_time() - c0
    finally:
        gen.close()
        source.close()
        if bar.total != bar.n and not bar.disable:  # the count was an estimate (e.g. from the duration)
            bar.total = bar.n
            bar.refresh()
        bar.close()
    seconds = time.monotonic() - t0
    stats = runner.stats()
    stats["write"] = {"busy_s": write_s, "cpu_s": write_cpu_s, "frames": sink.frames_in}
    analyse = stages[0]
    stats["analyse"].update(flow_s=analyse.flow_s, detect_s=analyse.detect_s)
    stats["compose"]["stabilize_s"] = stages[2].stabilize_s
    return VideoResult(output=os.fspath(dst), frames=sink.frames_in, seconds=seconds, stats=stats,
                       scene_cuts=analyse.cuts, detections=analyse.detections)

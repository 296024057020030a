"""Video inputs: a file FFmpeg decodes (PyAV), a folder of numbered frames, or frames in memory.

Every source yields :class:`FrameItem` in display order: ``rgb`` (H, W, 3) uint8 upright (the
stream's rotation applied, so nets, detector and hints see what a player shows), the frame's
``pts`` in ``time_base`` (carried, never derived from the index, so variable frame rates survive)
and, for files, the packets of the audio/subtitle streams demuxed since the previous frame
(``side``), which the writer copies without decoding. A file is probed when it is opened (its
first frame decoded), so an unreadable file fails before any output exists; truncation and
decoding errors found later raise :class:`VideoError` naming the file.
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from .options import VideoError

COPY_TYPES = ("audio", "subtitle")


@dataclass(frozen=True)
class SidePacket:
    """A demuxed packet of a stream that is copied (audio, subtitles), detached from the input
    container (which the reader may close before the writer muxes it)."""

    stream_index: int
    data: bytes
    pts: int | None
    dts: int | None
    duration: int | None
    time_base: Fraction | None
    keyframe: bool

    @classmethod
    def of(cls, packet) -> "SidePacket":
        return cls(packet.stream.index, bytes(packet), packet.pts, packet.dts, packet.duration or None,
                   packet.time_base, bool(packet.is_keyframe))


@dataclass
class FrameItem:
    """One frame on its way through the pipeline (``rgb`` None: only side packets, at the end)."""

    index: int
    rgb: np.ndarray | None
    pts: int | None = None
    time_base: Fraction | None = None
    duration: int | None = None
    side: list = field(default_factory=list)
    work: Any = None   # what the stages attach (network inputs, ab)
    out: np.ndarray | None = None   # the colorized frame (H, W, 3) uint8, upright

    @property
    def is_frame(self) -> bool:
        return self.rgb is not None or self.out is not None


@dataclass
class VideoInfo:
    """What a source knows before decoding: stored size, rotation, timing, streams to copy."""

    name: str
    kind: str                       # "file", "frames" or "arrays"
    width: int                      # stored (coded) size; the upright frames are rotated by `rotation`
    height: int
    rotation: int = 0               # counter-clockwise degrees (a multiple of 90) applied to get upright frames
    frame_count: int | None = None  # from the header, or estimated from the duration; None when unknown
    time_base: Fraction | None = None
    rate: Fraction | None = None
    copy_streams: list = field(default_factory=list)   # PyAV input streams whose packets are copied
    pix_fmt: str | None = None
    stream: Any = None              # the PyAV video stream (file sources)


def _why(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0][:300]


def _upright(rgb: np.ndarray, k: int) -> np.ndarray:
    return rgb if k == 0 else np.ascontiguousarray(np.rot90(rgb, k))


def _parse_duration_tag(text) -> float | None:
    """Matroska's per-stream ``DURATION`` tag ('00:00:02.600000000') -> seconds."""
    m = re.fullmatch(r"\s*(\d+):(\d{2}):(\d{2}(?:\.\d+)?)\s*", str(text or ""))
    if not m:
        return None
    return int(m.group(1)) * 3600 + int(m.group(2)) * 60 + float(m.group(3))


class FileSource:
    """A video file decoded with PyAV (frame threading on); one thread may iterate it."""

    def __init__(self, path: str | os.PathLike, copy_streams: bool = True, threads: int = 0):
        self._threads = threads  # decoder threads (0: FFmpeg's default)
        try:
            import av
        except ImportError as e:
            raise VideoError("video files need PyAV: pip install 'instcolor[video]' (av) "
                             f"({e})") from None
        self._av = av
        self.path = Path(path)
        name = str(path)
        if not self.path.exists():
            raise VideoError(f"{name}: no such file")
        if not self.path.is_file():
            raise VideoError(f"{name}: not a file")
        if self.path.stat().st_size == 0:
            raise VideoError(f"{name}: empty file")
        try:
            self._c = av.open(name, metadata_errors="replace")
        except Exception as e:  # noqa: BLE001 - untrusted input: every opener failure names the file
            raise VideoError(f"{name}: cannot open as a video: {_why(e)}") from None
        try:
            self._setup(name, copy_streams)
        except BaseException:
            self._c.close()
            raise

    def _setup(self, name: str, copy_streams: bool) -> None:
        c = self._c
        if not c.streams.video:
            raise VideoError(f"{name}: no video stream (streams: "
                             f"{', '.join(s.type for s in c.streams) or 'none'})")
        vs = c.streams.video[0]
        cc = vs.codec_context
        if cc is None or not cc.width or not cc.height:
            raise VideoError(f"{name}: the video stream cannot be decoded (unknown codec or no frame size)")
        vs.thread_type = "AUTO"
        if self._threads:
            vs.thread_count = self._threads
        self._vs = vs
        copy = [s for s in c.streams if s.type in COPY_TYPES and s.codec_context is not None] if copy_streams else []
        count = vs.frames if vs.frames and vs.frames > 0 else None
        rate = vs.average_rate or vs.guessed_rate
        if count is None and rate and vs.duration and vs.time_base:
            count = max(1, round(float(vs.duration * vs.time_base * rate)))
        elif count is None and rate and c.duration:
            count = max(1, round(c.duration / 1_000_000 * float(rate)))
        self.info = VideoInfo(name=name, kind="file", width=cc.width, height=cc.height, frame_count=count,
                              time_base=vs.time_base, rate=rate, copy_streams=copy, pix_fmt=cc.pix_fmt, stream=vs)
        self._header_frames = vs.frames if vs.frames and vs.frames > 0 else None
        self._expected_end = self._stream_end(vs)
        self._gen = self._decode()
        self._first = next(self._gen)
        if self._first[0] is None:
            raise VideoError(f"{name}: no decodable video frame")
        rot = self._first[0].rotation
        k = int(round((rot or 0) / 90.0)) % 4
        self.info.rotation = 90 * k
        self._k = k

    @staticmethod
    def _stream_end(vs) -> float | None:
        """Where the header says the video stream ends (seconds), or None when it does not say."""
        if vs.duration and vs.time_base:
            return float((vs.start_time or 0) * vs.time_base) + float(vs.duration * vs.time_base)
        for key in ("DURATION", "duration"):
            if key in (vs.metadata or {}):
                return _parse_duration_tag(vs.metadata[key])
        return None

    def _decode(self):
        """(av frame, side packets) per decoded frame, then (None, remaining side packets)."""
        av = self._av
        name = self.info.name
        vi = self._vs.index
        side: list = []
        decoded = 0
        last_end = None
        intervals = []
        try:
            for packet in self._c.demux([self._vs] + self.info.copy_streams):
                if packet.stream.index != vi:
                    if packet.size and (packet.dts is not None or packet.pts is not None):
                        side.append(SidePacket.of(packet))  # (size 0: the demuxer's end-of-stream packet)
                    continue
                for frame in packet.decode():
                    if frame.is_corrupt:
                        raise VideoError(f"{name}: frame {decoded} is damaged (the decoder reported errors in "
                                         "its data): the file is corrupt")
                    decoded += 1
                    if frame.pts is not None and frame.time_base is not None:
                        t = float(frame.pts * frame.time_base)
                        if last_end is not None and t > last_end[0]:
                            intervals.append(t - last_end[0])
                        last_end = (t, float(frame.duration * frame.time_base) if frame.duration else None)
                    yield frame, side
                    side = []
        except av.error.FFmpegError as e:
            raise VideoError(f"{name}: cannot decode the video after {decoded} frame(s): {_why(e)} "
                             "(the file is corrupt or truncated)") from None
        if self._header_frames is not None and decoded < self._header_frames:
            raise VideoError(f"{name}: truncated or damaged: its header lists {self._header_frames} frames "
                             f"but only {decoded} could be decoded")
        if self._expected_end is not None and last_end is not None:
            step = float(np.median(intervals)) if intervals else 0.0
            end = last_end[0] + (last_end[1] if last_end[1] else step)
            if end < self._expected_end - max(1.5 * step, 0.02):
                raise VideoError(f"{name}: truncated or damaged: the video stream should last "
                                 f"{self._expected_end:.3f} s but its decodable frames end at {end:.3f} s")
        yield None, side

    def __iter__(self) -> Iterator[FrameItem]:
        index = 0
        pending = [self._first]
        self._first = None
        try:
            while True:
                if pending:
                    frame, side = pending.pop()
                else:
                    try:
                        frame, side = next(self._gen)
                    except StopIteration:
                        return
                if frame is None:
                    if side:
                        yield FrameItem(index=index, rgb=None, side=side)
                    return
                try:
                    rgb = frame.to_ndarray(format="rgb24")
                except Exception as e:  # noqa: BLE001 - a frame PyAV cannot convert names the file
                    raise VideoError(f"{self.info.name}: frame {index}: cannot convert to RGB: {_why(e)}") from None
                tb = frame.time_base or self.info.time_base
                yield FrameItem(index=index, rgb=_upright(rgb, self._k), pts=frame.pts, time_base=tb,
                                duration=frame.duration or None, side=side)
                index += 1
        finally:
            self.close()

    def close(self) -> None:
        try:
            self._gen.close()
        finally:
            self._c.close()


def _natural_key(p: Path):
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", p.name)]


class FolderSource:
    """A folder of numbered frames (image files, ordered by the numbers in their names); frame i has
    ``pts = i`` in ``time_base = 1 / fps``."""

    def __init__(self, folder: str | os.PathLike, fps: float = 25.0):
        from ..imageio import IMAGE_SUFFIXES, read_image

        self.folder = Path(folder)
        files = sorted((f for f in self.folder.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES
                        and not f.name.startswith(".")), key=_natural_key)
        if not files:
            raise VideoError(f"{folder}: no image files (a folder of numbered frames was expected)")
        self.files = files
        self._read = read_image
        first = self._load(files[0])
        h, w = first.shape[:2]
        tb = 1 / Fraction(fps).limit_denominator(1_000_000)
        self.info = VideoInfo(name=str(folder), kind="frames", width=w, height=h, frame_count=len(files),
                              time_base=tb, rate=1 / tb)
        self._first = first

    def _load(self, f: Path) -> np.ndarray:
        from ..imageio import ImageReadError

        try:
            return self._read(f).rgb
        except ImageReadError as e:
            raise VideoError(str(e)) from None

    def __iter__(self) -> Iterator[FrameItem]:
        h, w = self._first.shape[:2]
        for i, f in enumerate(self.files):
            rgb = self._first if i == 0 else self._load(f)
            if rgb.shape[:2] != (h, w):
                raise VideoError(f"{f}: frame is {rgb.shape[1]}x{rgb.shape[0]}, the first frame "
                                 f"({self.files[0].name}) is {w}x{h}; all frames need one size")
            yield FrameItem(index=i, rgb=rgb, pts=i, time_base=self.info.time_base)
        self._first = None

    def close(self) -> None:
        pass


def check_frame(frame, index: int, shape=None) -> np.ndarray:
    """A frame given in memory -> (H, W, 3) uint8 (grey (H, W) is replicated); ValueError naming it."""
    a = np.asarray(frame)
    if a.dtype != np.uint8:
        raise VideoError(f"frame {index}: expected dtype uint8, got {a.dtype}")
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    if a.ndim != 3 or a.shape[2] != 3 or a.shape[0] == 0 or a.shape[1] == 0:
        raise VideoError(f"frame {index}: expected shape (H, W, 3) or (H, W), got {np.asarray(frame).shape}")
    if shape is not None and a.shape != shape:
        raise VideoError(f"frame {index}: shape {a.shape} differs from the first frame's {shape}")
    return np.ascontiguousarray(a)


class ArraySource:
    """Frames from any iterable of arrays (consumed lazily, by the pipeline's reader thread)."""

    def __init__(self, frames: Iterable, name: str = "frames"):
        self._frames = frames
        self.info = VideoInfo(name=name, kind="arrays", width=0, height=0,
                              frame_count=len(frames) if hasattr(frames, "__len__") else None)

    def __iter__(self) -> Iterator[FrameItem]:
        shape = None
        for i, f in enumerate(self._frames):
            a = check_frame(f, i, shape)
            shape = a.shape
            yield FrameItem(index=i, rgb=a)

    def close(self) -> None:
        pass


def open_source(path: str | os.PathLike, options) -> FileSource | FolderSource:
    """A file (any container FFmpeg reads) or a folder of numbered frames."""
    p = Path(path)
    if p.is_dir():
        return FolderSource(p, fps=options.fps)
    return FileSource(p, copy_streams=options.copy_streams, threads=options.helper_thread_count)


def frames_per_second(info: VideoInfo) -> float | None:
    r = info.rate
    try:
        return float(r) if r and math.isfinite(float(r)) and float(r) > 0 else None
    except (TypeError, ZeroDivisionError):
        return None

"""Video outputs, written to a temporary name and renamed only when complete.

* :class:`VideoFileSink`: a video file whose container follows the suffix (PyAV). Frames are encoded
  with their original ``pts`` in the input's time base, the display rotation is written back, audio
  and subtitle packets are copied as they are (streams the container cannot hold are left out with a
  note), the encoder is flushed and the frame count checked before the rename.
* :class:`FrameFolderSink`: a folder of ``frame_000000.png`` ... (upright frames) plus
  ``timestamps.json`` (time base and each frame's pts), filled in a hidden temporary folder and
  renamed to the target at the end.

On an error or Ctrl-C (any exception leaving the ``with`` block) the temporary file or folder is
removed: the target is never left partial, and an existing target is only replaced by a complete one.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from fractions import Fraction
from pathlib import Path

import numpy as np

from .._fileio import OUTPUT_MARKER, _umask, publish_dir, write_output_marker
from .options import VideoError, VideoOptions
from .source import VideoInfo, _why

FOLDER_MARKER = OUTPUT_MARKER  # the marker every instcolor output folder carries (instcolor._fileio)
FRAME_NAME = "frame_{:06d}.png"


def video_encoder(name: str):
    """The PyAV video encoder called ``name``; VideoError when this FFmpeg build has none."""
    import av

    try:
        codec = av.codec.Codec(name, "w")
    except Exception:  # noqa: BLE001 - PyAV raises several types for an unknown codec
        raise VideoError(f"--codec {name}: no such video encoder in this FFmpeg build") from None
    if codec.type != "video":
        raise VideoError(f"--codec {name}: not a video encoder")
    return codec


def _stored(rgb: np.ndarray, rotation: int) -> np.ndarray:
    """Upright frame -> the stored orientation (undo the source's rotation)."""
    k = (rotation // 90) % 4
    return rgb if k == 0 else np.ascontiguousarray(np.rot90(rgb, -k))


# BT.601 limited range (FFmpeg's default for RGB -> yuv420p): rows Cb, Cr over (R, G, B, 1).
_CBCR_BT601 = np.array([[-37.797, -74.203, 112.0, 128 * 255], [112.0, -93.786, -18.214, 128 * 255]], np.float32) / 255


def rgb_to_i420(rgb: np.ndarray) -> np.ndarray | None:
    """(H, W, 3) uint8 RGB, H and W even -> (3H/2, W) uint8 I420 (the layout of a yuv420p frame), BT.601
    limited range; None without OpenCV. Y is OpenCV's RGB -> I420 luma; each chroma sample is the
    BT.601 Cb / Cr of the mean colour of its 2x2 block (area downsampling). At 1280x720 it costs
    2-3 ms against about 5 ms for an RGB frame that the encoder converts, and colorized frames
    decode back 0.1-0.5 dB closer to the RGB written than with FFmpeg's conversion (measured on
    bigbuckbunny / car-detection frames, 2026-12-01)."""
    try:
        import cv2
    except ImportError:  # the video extra has it; without it the encoder converts
        return None
    h, w = rgb.shape[:2]
    out = cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420)
    cbcr = cv2.transform(cv2.resize(rgb, (w // 2, h // 2), interpolation=cv2.INTER_AREA), _CBCR_BT601)
    flat, n = out.reshape(-1), (h // 2) * (w // 2)  # the planes: Y (h x w), then Cb, then Cr (n bytes each)
    flat[h * w:h * w + n] = cbcr[..., 0].reshape(-1)
    flat[h * w + n:] = cbcr[..., 1].reshape(-1)
    return out


def is_folder_target(path: str | os.PathLike) -> bool:
    """``-o DIR/`` (a trailing separator) or an existing folder: numbered PNG frames; else a video file."""
    s = os.fspath(path)
    return s.endswith((os.sep, "/")) or Path(s).is_dir()


class VideoFileSink:
    """Encode frames into a video file (a context manager; see the module docstring)."""

    def __init__(self, path: str | os.PathLike, info: VideoInfo, options: VideoOptions, frame_hw: tuple[int, int],
                 log=None):
        import av

        self._av = av
        self.path = Path(path)
        self.info = info
        self.options = options
        self.log = log or (lambda s: print(s, file=sys.stderr))
        h, w = frame_hw
        if info.rotation % 180:
            h, w = w, h  # stored size of a frame shown rotated by 90 / 270 degrees
        self.size = (w, h)
        self.frames_in = 0
        self.packets_out = 0
        self._last_pts = None
        self._fixed_pts = 0
        self._missing_pts = 0
        self._step = 1
        self._tmp: Path | None = None
        self._out = None

    # ------------------------------------------------------------------ set-up
    def _pix_fmt(self, codec) -> str:
        w, h = self.size
        if self.options.pix_fmt:
            return self.options.pix_fmt
        names = {f.name for f in (codec.video_formats or ())}
        want = "yuv420p" if (w % 2 == 0 and h % 2 == 0) else "yuv444p"
        if not names or want in names:
            return want
        for alt in ("yuv420p", "yuv444p", "rgb24", "bgr0"):
            if alt in names:
                return alt
        return sorted(names)[0]

    def __enter__(self):
        parent = self.path.parent if str(self.path.parent) else Path(".")
        if not parent.is_dir():
            raise VideoError(f"{self.path}: folder {parent} does not exist")
        fd, tmp = tempfile.mkstemp(dir=parent, prefix=f".{self.path.name}.", suffix=f".tmp{self.path.suffix}")
        os.close(fd)
        self._tmp = Path(tmp)
        try:
            self._open()
        except BaseException:
            self._discard()
            raise
        return self

    def _open(self) -> None:
        av = self._av
        o = self.options
        try:
            self._out = av.open(str(self._tmp), "w")
        except Exception as e:  # noqa: BLE001 - e.g. a suffix FFmpeg knows no container for
            raise VideoError(f"{self.path}: cannot write this kind of file (container from the suffix "
                             f"{self.path.suffix or '(none)'}): {_why(e)}") from None
        out = self._out
        codec = video_encoder(o.codec)
        supported = out.supported_codecs
        if supported and codec.name not in supported:
            raise VideoError(f"{self.path}: the {out.format.name} container cannot hold {o.codec} video "
                             "(choose another --codec or output suffix)")
        tb = self.info.time_base or Fraction(1, 25)
        try:
            vs = out.add_stream(o.codec)
        except Exception as e:  # noqa: BLE001
            raise VideoError(f"--codec {o.codec}: cannot create the encoder: {_why(e)}") from None
        vs.width, vs.height = self.size
        vs.pix_fmt = self._pix_fmt(codec)
        vs.time_base = tb
        vs.codec_context.time_base = tb
        if self.info.rate:
            try:
                vs.codec_context.framerate = Fraction(self.info.rate)
                self._step = max(1, round(1 / (Fraction(self.info.rate) * tb)))
            except (TypeError, ValueError, AttributeError, ZeroDivisionError):
                pass
        options = {}
        crf = o.effective_crf
        if crf is not None:
            options["crf"] = str(crf)
        if o.preset and o.codec in ("libx264", "libx264rgb", "libx265"):
            options["preset"] = o.preset
        if o.codec == "libx265":
            options["x265-params"] = "log-level=error"
        threads = o.helper_thread_count
        if threads and o.codec in ("libx264", "libx264rgb"):
            options["threads"] = str(threads)
        elif threads:
            vs.codec_context.thread_count = threads
        options.update({str(k): str(v) for k, v in o.encoder_options.items()})
        vs.options = options
        if self.info.rotation:
            vs.set_display_rotation(self.info.rotation)
        self._vs = vs
        self._map = {}
        for s in self.info.copy_streams:
            cname = s.codec_context.name
            if supported and cname not in supported:
                self.log(f"instcolor: {self.info.name}: {s.type} stream #{s.index} ({cname}) left out: the "
                         f"{out.format.name} container cannot hold it")
                continue
            try:
                self._map[s.index] = out.add_stream_from_template(s)
            except Exception as e:  # noqa: BLE001
                self.log(f"instcolor: {self.info.name}: {s.type} stream #{s.index} ({cname}) left out: {_why(e)}")

    # ------------------------------------------------------------------ per frame
    def write_side(self, packets) -> None:
        """Mux copied packets (:class:`instcolor.video.source.SidePacket`) as they are."""
        av = self._av
        for sp in packets:
            target = self._map.get(sp.stream_index)
            if target is None:
                continue
            p = av.Packet(sp.data)
            p.pts = sp.pts
            p.dts = sp.dts if sp.dts is not None else sp.pts  # Matroska stores no dts for some packets
            if sp.duration:
                p.duration = sp.duration
            p.time_base = sp.time_base
            p.is_keyframe = sp.keyframe
            p.stream = target
            self._out.mux(p)

    def write(self, rgb: np.ndarray, pts: int | None, time_base=None) -> None:
        av = self._av
        stored = _stored(rgb, self.info.rotation)
        if stored.shape[1::-1] != self.size:
            raise VideoError(f"{self.path}: frame {self.frames_in} is {stored.shape[1]}x{stored.shape[0]}, "
                             f"the video is {self.size[0]}x{self.size[1]}")
        frame = self._frame(stored)
        tb = self._vs.codec_context.time_base
        if pts is not None and time_base is not None and Fraction(time_base) != Fraction(tb):
            pts = int(round(pts * Fraction(time_base) / Fraction(tb)))
        if pts is None:  # e.g. a raw H.264 stream: number the frames at the stream's frame rate
            pts = 0 if self._last_pts is None else self._last_pts + self._step
            self._missing_pts += 1
        elif self._last_pts is not None and pts <= self._last_pts:
            pts = self._last_pts + 1
            self._fixed_pts += 1
        self._last_pts = pts
        frame.pts = pts
        frame.time_base = tb
        self._mux(self._vs.encode(frame))
        self.frames_in += 1

    def _frame(self, rgb: np.ndarray):
        """An encoder frame of ``rgb`` (H, W, 3) uint8: :func:`rgb_to_i420` for a yuv420p stream,
        else an RGB frame that PyAV converts to the stream's format (also without OpenCV)."""
        av = self._av
        if self._vs.pix_fmt == "yuv420p":
            yuv = rgb_to_i420(rgb)
            if yuv is not None:
                return av.VideoFrame.from_ndarray(yuv, format="yuv420p")
        return av.VideoFrame.from_ndarray(rgb, format="rgb24")

    def _mux(self, packets) -> None:
        for p in packets:
            self.packets_out += 1
            self._out.mux(p)

    # ------------------------------------------------------------------ end
    def _discard(self) -> None:
        if self._out is not None:
            try:
                self._out.close()
            except Exception:  # noqa: BLE001 - already failing; the file is removed anyway
                pass
            self._out = None
        if self._tmp is not None:
            self._tmp.unlink(missing_ok=True)
            self._tmp = None

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            self._discard()
            return False
        try:
            self._mux(self._vs.encode(None))
            self._out.close()
            self._out = None
        except BaseException as e:
            self._discard()
            if isinstance(e, Exception):
                raise VideoError(f"{self.path}: cannot finish the video: {_why(e)}") from None
            raise
        if self.packets_out != self.frames_in:
            self._discard()
            raise VideoError(f"{self.path}: the encoder returned {self.packets_out} frames for the "
                             f"{self.frames_in} given; nothing written")
        if self._fixed_pts:
            self.log(f"instcolor: {self.info.name}: {self._fixed_pts} frame(s) whose timestamp did not increase "
                     "were given the next free one")
        if self._missing_pts:
            self.log(f"instcolor: {self.info.name}: {self._missing_pts} frame(s) had no timestamp; they were "
                     "numbered at the stream's frame rate")
        os.chmod(self._tmp, 0o666 & ~_umask())
        os.replace(self._tmp, self.path)
        self._tmp = None
        return False


class FrameFolderSink:
    """Numbered PNG frames into a folder (a context manager; see the module docstring)."""

    def __init__(self, path: str | os.PathLike, info: VideoInfo, log=None):
        self.path = Path(os.fspath(path).rstrip("/" + os.sep) or os.fspath(path))
        self.info = info
        self.log = log or (lambda s: print(s, file=sys.stderr))
        self.frames_in = 0
        self._pts: list = []
        self._tmp: Path | None = None

    def __enter__(self):
        p = self.path
        if p.exists() and not p.is_dir():
            raise VideoError(f"{p}: exists and is not a folder")
        if p.is_dir() and any(p.iterdir()) and not (p / FOLDER_MARKER).is_file():
            raise VideoError(f"{p}: folder is not empty and was not written by `instcolor video`; "
                             "choose a new or empty folder")
        parent = p.parent if str(p.parent) else Path(".")
        parent.mkdir(parents=True, exist_ok=True)
        self._tmp = Path(tempfile.mkdtemp(dir=parent, prefix=f".{p.name}.", suffix=".tmp"))
        return self

    def write_side(self, packets) -> None:
        pass  # a folder of frames has no audio

    def write(self, rgb: np.ndarray, pts, time_base=None) -> None:
        from ..imageio import write_image

        write_image(self._tmp / FRAME_NAME.format(self.frames_in), rgb, format="png")
        self._pts.append(None if pts is None else int(pts))
        self._tb = time_base
        self.frames_in += 1

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            return False
        try:
            tb_ = getattr(self, "_tb", None) or self.info.time_base
            meta = {"source": self.info.name, "frames": self.frames_in,
                    "time_base": None if tb_ is None else str(Fraction(tb_)),
                    "pts": self._pts, "rotation_applied": self.info.rotation}
            (self._tmp / "timestamps.json").write_text(json.dumps(meta) + "\n", encoding="utf-8")
            write_output_marker(self._tmp, "video")
            publish_dir(self._tmp)
            old = None
            if self.path.is_dir():
                if any(self.path.iterdir()):
                    old = Path(tempfile.mkdtemp(dir=self._tmp.parent, prefix=f".{self.path.name}.", suffix=".old"))
                    os.rmdir(old)
                    os.replace(self.path, old)
                else:
                    os.rmdir(self.path)
            os.replace(self._tmp, self.path)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        except BaseException:
            shutil.rmtree(self._tmp, ignore_errors=True)
            raise
        self._tmp = None
        return False

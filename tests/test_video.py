"""instcolor.video end to end on tiny generated clips (moving shapes; one with an audio track).

Needs the video extra (PyAV, OpenCV): the module skips with a reason without it.
"""
from __future__ import annotations

import json
import threading
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

av = pytest.importorskip("av", reason="PyAV is not installed (pip install '.[video]')")
cv2 = pytest.importorskip("cv2", reason="OpenCV is not installed (pip install '.[video]')")

from instcolor.video import VideoError, VideoOptions, colorize_file, colorize_frames  # noqa: E402
from instcolor.video.hints import HintSchedule, VideoHint, load_hints  # noqa: E402

SIZE = 64           # processing size of the tests (fast with the tiny nets)
W, H = 64, 48


# ----------------------------------------------------------------------------- clips
def scene(i: int, w: int = W, h: int = H, variant: int = 0) -> np.ndarray:
    """Frame i of a little scene: a red square moving right and a blue disc moving down on a
    gradient; ``variant`` 1 is a different scene (for cuts)."""
    y, x = np.mgrid[0:h, 0:w]
    if variant == 0:
        img = np.stack([40 + 2 * x, 60 + 2 * y, 90 + x + y], -1).clip(0, 255).astype(np.uint8)
        sq = (x >= 4 + 3 * i) & (x < 18 + 3 * i) & (y >= 10) & (y < 24)
        img[sq] = (220, 30, 30)
        img[sq & ((x - 3 * i + y) % 5 == 0)] = (250, 60, 60)  # texture that moves with the square
        disc = (x - 44) ** 2 + (y - 6 - 2 * i) ** 2 < 49
        img[disc] = (20, 40, 210)
    else:
        img = np.stack([230 - 3 * y, 200 - x, 30 + 0 * x], -1).clip(0, 255).astype(np.uint8)
        img[((x + 2 * i) // 8 + y // 8) % 2 == 0] //= 3  # a checkerboard sliding left
    return img


def make_clip(path: Path, n: int = 10, rate: int = 10, audio: bool = False, pts=None, rotation: int = 0,
              cut_at: int | None = None, size=(W, H), faststart: bool = False) -> Path:
    """Encode ``n`` frames of :func:`scene` with libx264 (B-frames on) into ``path``; ``pts`` (ms)
    gives a variable frame rate; ``audio`` adds a mono AAC sine."""
    w, h = size
    c = av.open(str(path), "w", options={"movflags": "faststart"} if faststart else None)
    vs = c.add_stream("libx264", rate=rate)
    vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
    vs.options = {"crf": "12", "preset": "fast"}
    tb = Fraction(1, 1000) if pts is not None else Fraction(1, rate)
    vs.codec_context.time_base = tb
    if rotation:
        vs.set_display_rotation(rotation)
    a_s = None
    if audio:
        a_s = c.add_stream("aac", rate=8000)
        a_s.layout = "mono"
    for i in range(n):
        img = scene(i, w, h, variant=int(cut_at is not None and i >= cut_at))
        f = av.VideoFrame.from_ndarray(img, format="rgb24")
        f.pts = pts[i] if pts is not None else i
        f.time_base = tb
        for p in vs.encode(f):
            c.mux(p)
    for p in vs.encode(None):
        c.mux(p)
    if a_s is not None:
        total = int(8000 * n / rate)
        t = np.arange(total) / 8000.0
        wave = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
        for k in range(0, total, 1024):
            chunk = wave[k:k + 1024]
            if len(chunk) < 1024:
                chunk = np.pad(chunk, (0, 1024 - len(chunk)))
            af = av.AudioFrame.from_ndarray(chunk[None], format="fltp", layout="mono")
            af.sample_rate = 8000
            af.pts = k
            for p in a_s.encode(af):
                c.mux(p)
        for p in a_s.encode(None):
            c.mux(p)
    c.close()
    return path


def decode(path) -> tuple[list[np.ndarray], list[float], int]:
    """(upright-as-stored RGB frames, their times in seconds, rotation) of a video file."""
    c = av.open(str(path))
    frames, times, rot = [], [], 0
    for f in c.decode(video=0):
        frames.append(f.to_ndarray(format="rgb24"))
        times.append(float(f.pts * f.time_base))
        rot = f.rotation
    c.close()
    return frames, times, rot


def packets(path, kind: str) -> list[bytes]:
    c = av.open(str(path))
    out = [bytes(p) for p in c.demux(getattr(c.streams, kind)[0]) if p.dts is not None]
    c.close()
    return out


def read_folder(folder: Path) -> list[np.ndarray]:
    from PIL import Image

    return [np.asarray(Image.open(f).convert("RGB")) for f in sorted(folder.glob("frame_*.png"))]


def no_leftovers(folder: Path, keep=()) -> list[str]:
    """Names in ``folder`` other than ``keep`` (temporary files included: they start with '.')."""
    return sorted(p.name for p in folder.iterdir() if p.name not in keep)


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("clips")


@pytest.fixture(scope="module")
def audio_clip(clip_dir):
    return make_clip(clip_dir / "audio.mp4", n=10, audio=True)


@pytest.fixture(scope="module")
def plain_clip(clip_dir):
    return make_clip(clip_dir / "plain.mkv", n=10)


@pytest.fixture(scope="module")
def opts():
    return VideoOptions(size=SIZE, batch_size=3, queue_size=2)


# ----------------------------------------------------------------------------- files
def test_frame_count_timestamps_size_and_audio_kept(audio_clip, tmp_path, tiny_colorizer, opts):
    out = tmp_path / "out.mp4"
    r = colorize_file(audio_clip, out, tiny_colorizer, opts)
    src_frames, src_t, _ = decode(audio_clip)
    dst_frames, dst_t, _ = decode(out)
    assert r.frames == len(src_frames) == len(dst_frames) == 10
    assert dst_t == pytest.approx(src_t, abs=1e-6)
    assert dst_frames[0].shape == src_frames[0].shape
    # the audio packets are the input's, byte for byte (copied, not re-encoded)
    src_audio, dst_audio = packets(audio_clip, "audio"), packets(out, "audio")
    assert len(src_audio) > 3 and dst_audio == src_audio
    with av.open(str(out)) as c:
        assert c.streams.audio[0].codec_context.name == "aac"
        assert c.streams.video[0].codec_context.name == "h264"
        assert c.streams.video[0].codec_context.pix_fmt == "yuv420p"
    assert no_leftovers(tmp_path) == ["out.mp4"]


def make_subtitled(path: Path, n: int = 8) -> Path:
    """A Matroska clip with a SubRip subtitle stream (two cues)."""
    c = av.open(str(path), "w")
    vs = c.add_stream("libx264", rate=10)
    vs.width, vs.height, vs.pix_fmt = W, H, "yuv420p"
    ss = c.add_mux_stream("subrip")
    ss.time_base = Fraction(1, 1000)
    for i in range(n):
        f = av.VideoFrame.from_ndarray(scene(i), format="rgb24")
        f.pts = i
        for p in vs.encode(f):
            c.mux(p)
        if i in (2, 6):
            p = av.Packet(f"cue {i}".encode())
            p.pts = p.dts = i * 100
            p.duration, p.time_base, p.stream = 150, Fraction(1, 1000), ss
            c.mux(p)
    for p in vs.encode(None):
        c.mux(p)
    c.close()
    return path


def test_subtitles_copied_or_left_out_with_a_note(clip_dir, tmp_path, tiny_colorizer, opts):
    src = make_subtitled(clip_dir / "sub.mkv")
    assert packets(src, "subtitles") == [b"cue 2", b"cue 6"]
    out = tmp_path / "sub_out.mkv"
    colorize_file(src, out, tiny_colorizer, opts)
    assert packets(out, "subtitles") == [b"cue 2", b"cue 6"]
    notes = []
    mp4 = tmp_path / "sub_out.mp4"  # MP4 cannot hold SubRip: the video is written, the stream named as left out
    colorize_file(src, mp4, tiny_colorizer, opts, log=notes.append)
    assert len(decode(mp4)[0]) == 8
    assert len(notes) == 1 and "subtitle stream #1" in notes[0] and "left out" in notes[0] and str(src) in notes[0]


def test_variable_frame_rate_timestamps_survive(clip_dir, tmp_path, tiny_colorizer, opts):
    pts = [0, 40, 50, 130, 140, 300, 310, 320, 500, 540]
    src = make_clip(clip_dir / "vfr.mkv", n=len(pts), pts=pts)
    out = tmp_path / "vfr_out.mkv"
    colorize_file(src, out, tiny_colorizer, opts)
    _, t_in, _ = decode(src)
    _, t_out, _ = decode(out)
    assert t_in == pytest.approx([p / 1000 for p in pts])
    assert t_out == pytest.approx(t_in, abs=1e-6)


def test_rotation_kept_and_frames_processed_upright(clip_dir, tmp_path, tiny_colorizer, opts):
    src = make_clip(clip_dir / "rot.mp4", n=4, rotation=90)
    frames_in, _, rot_in = decode(src)
    assert rot_in == 90
    out = tmp_path / "rot_out.mp4"
    colorize_file(src, out, tiny_colorizer, opts)
    frames_out, _, rot_out = decode(out)
    assert rot_out == 90 and frames_out[0].shape == frames_in[0].shape  # stored 64x48, shown rotated
    # a frame folder holds the frames as shown: rotated by 90 degrees counter-clockwise
    folder = tmp_path / "rot_frames"
    colorize_file(src, str(folder) + "/", tiny_colorizer, VideoOptions(size=SIZE, stabilize="none"))
    shown = read_folder(folder)
    assert shown[0].shape == (W, H, 3)
    expect = tiny_colorizer.colorize(np.ascontiguousarray(np.rot90(frames_in[0], 1)), size=SIZE).rgb
    np.testing.assert_array_equal(shown[0], expect)


def smooth_frame(i: int, w: int = 96, h: int = 64) -> np.ndarray:
    """Colours that vary smoothly, as in colorized output (its ab is a bilinear upsample of an S x S
    map): a 12 x 8 random picture upsampled 8x."""
    import cv2

    small = np.random.default_rng(i).integers(30, 226, (h // 8, w // 8, 3)).astype(np.uint8)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def test_encoder_frames_match_what_was_written(tmp_path, monkeypatch):
    """A yuv420p stream gets sink.rgb_to_i420 (BT.601 limited range as FFmpeg's, chroma of each 2x2
    block's mean colour): decoded back, frames are at least as close to the RGB written as with PyAV's
    own conversion (the path without OpenCV)."""
    import sys

    from instcolor.video.sink import VideoFileSink
    from instcolor.video.source import VideoInfo

    frames = [smooth_frame(i) for i in range(3)] + [scene(i, 96, 64) for i in range(2)]
    info = VideoInfo(name="t", kind="arrays", width=96, height=64, time_base=Fraction(1, 10), rate=Fraction(10))

    def encode(name):
        out = tmp_path / name
        with VideoFileSink(out, info, VideoOptions(crf=0), (64, 96)) as sink:
            for i, f in enumerate(frames):
                sink.write(f, i, Fraction(1, 10))
        with av.open(str(out)) as c:
            assert c.streams.video[0].codec_context.pix_fmt == "yuv420p"
        return decode(out)[0]

    def psnr(a, b):
        return 10 * np.log10(255 ** 2 / np.mean((a.astype(float) - b.astype(float)) ** 2))

    with_cv2 = encode("cv2.mp4")
    monkeypatch.setitem(sys.modules, "cv2", None)  # import cv2 -> ImportError: PyAV converts
    without = encode("pyav.mp4")
    for f, a, b in zip(frames, with_cv2, without, strict=True):
        assert psnr(a, f) > 30 and psnr(a, f) >= psnr(b, f) - 0.05, (psnr(a, f), psnr(b, f))
        assert psnr(a, b) > 30


def test_rgb_to_i420_uses_ffmpegs_matrix_and_range():
    from instcolor.video.sink import rgb_to_i420

    for colour in [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255), (0, 0, 0), (200, 120, 40)]:
        img = np.full((8, 6, 3), colour, np.uint8)
        ours = rgb_to_i420(img).astype(int)
        ffmpeg = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuv420p").to_ndarray().astype(int)
        assert ours.shape == ffmpeg.shape == (12, 6)
        assert np.abs(ours - ffmpeg).max() <= 1, (colour, ours[[0, 8, 10], 0], ffmpeg[[0, 8, 10], 0])
    # each chroma sample is its block's mean colour: one red pixel in a black 2x2 block
    img = np.zeros((2, 2, 3), np.uint8)
    img[1, 1] = (255, 0, 0)
    mean = np.full((2, 2, 3), (64, 0, 0), np.uint8)  # 255 / 4, rounded
    np.testing.assert_allclose(rgb_to_i420(img)[2:].astype(int), rgb_to_i420(mean)[2:].astype(int), atol=1)
    # heights that are 2 mod 4 put the chroma planes across rows (I420 is planar bytes)
    img = scene(0, 10, 6)
    ffmpeg = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuv420p").to_ndarray().astype(int)
    assert np.abs(rgb_to_i420(img).astype(int) - ffmpeg).mean() < 4


def test_stabilize_none_equals_per_frame_colorize(plain_clip, tmp_path, tiny_colorizer):
    frames, _, _ = decode(plain_clip)
    per_frame = [tiny_colorizer.colorize(f, size=SIZE).rgb for f in frames]
    folder = tmp_path / "frames"
    colorize_file(plain_clip, str(folder) + "/", tiny_colorizer,
                  VideoOptions(size=SIZE, stabilize="none", batch_size=4, queue_size=2))
    got = read_folder(folder)
    assert len(got) == len(per_frame) == 10
    for a, b in zip(got, per_frame):
        np.testing.assert_array_equal(a, b)
    meta = json.loads((folder / "timestamps.json").read_text())
    assert meta["frames"] == 10 and meta["pts"] == [100 * i for i in range(10)] and meta["time_base"] == "1/1000"
    # the generator API gives the same frames
    gen = tiny_colorizer.colorize_video(iter(frames), size=SIZE, stabilize="none", batch_size=3)
    for a, b in zip(gen, per_frame, strict=True):
        np.testing.assert_array_equal(a, b)
    # whatever the nets' thread count (the default on this machine was used above)
    for n, w, c in ((0, 1, 1), (3, 1, 1), (1, 3, 3)):
        gen = tiny_colorizer.colorize_video(iter(frames), size=SIZE, stabilize="none", nets_threads=n, nets_workers=w,
                                            compose_workers=c, batch_size=2)
        for a, b in zip(gen, per_frame, strict=True):
            np.testing.assert_array_equal(a, b)
    # and the flow stabiliser does change them (after the first frame), keeping each frame's own L
    stab = list(tiny_colorizer.colorize_video(frames, size=SIZE, stabilize="flow"))
    np.testing.assert_array_equal(stab[0], per_frame[0])
    # composing in several threads changes nothing: the stabiliser still runs in order
    for c in (1, 3):
        for a, b in zip(tiny_colorizer.colorize_video(frames, size=SIZE, stabilize="flow", compose_workers=c), stab,
                        strict=True):
            np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, b) for a, b in zip(stab[1:], per_frame[1:]))
    from instcolor.prepare import lab_of_uint8

    L_in = lab_of_uint8(np.stack(frames))[:, 0]
    L_out = lab_of_uint8(np.stack(stab))[:, 0]
    assert np.abs(L_in - L_out).max() < 0.02  # normalised L; rounding to uint8 RGB only


def test_folder_of_frames_in_video_out(tmp_path, tiny_colorizer, opts):
    from instcolor.imageio import write_image

    src = tmp_path / "in_frames"
    src.mkdir()
    for i in (0, 1, 2, 10, 11):  # natural order: 10 after 2
        write_image(src / f"f{i}.png", scene(i), format="png")
    out = tmp_path / "from_frames.mkv"
    r = colorize_file(src, out, tiny_colorizer, VideoOptions(size=SIZE, fps=20.0))
    frames, times, _ = decode(out)
    assert r.frames == len(frames) == 5
    assert times == pytest.approx([0, 0.05, 0.1, 0.15, 0.2])


def test_greyscale_frames_are_colorized(tiny_colorizer):
    grey = [scene(i)[..., 1] for i in range(3)]  # (H, W) uint8
    out = list(tiny_colorizer.colorize_video(grey, size=SIZE, stabilize="none"))
    assert [o.shape for o in out] == [(H, W, 3)] * 3
    np.testing.assert_array_equal(out[1], tiny_colorizer.colorize(np.repeat(grey[1][..., None], 3, 2), size=SIZE).rgb)


# ----------------------------------------------------------------------------- bounded memory
def test_frames_are_read_lazily_with_bounded_lookahead(tiny_colorizer):
    pulled = []

    def endless():
        i = 0
        while True:
            pulled.append(i)
            yield scene(i % 8)
            i += 1

    o = VideoOptions(size=SIZE, batch_size=2, queue_size=2)
    gen = colorize_frames(endless(), tiny_colorizer, o)
    for _ in range(5):
        next(gen)
    gen.close()
    # 5 delivered + at most: 4 queues of 2, 1 item in each of 4 threads, a batch of 2
    assert 5 <= len(pulled) <= 5 + 4 * 2 + 4 + 2


# ----------------------------------------------------------------------------- detector and tracker
class FakeDetector:
    """Boxes around the red square of :func:`scene` (found by colour), recording the calls."""

    def __init__(self):
        self.calls = 0

    def __call__(self, img):
        from instcolor.detect import Detections

        self.calls += 1
        red = (img[..., 0] > 180) & (img[..., 1] < 90) & (img[..., 2] < 90)
        ys, xs = np.nonzero(red)
        if len(xs) == 0:
            return Detections(np.zeros((0, 4)), np.zeros(0), np.zeros(0, np.int64))
        return Detections([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], [0.9], [0])


def _analyse(colorizer, frames, **kw):
    from instcolor.video.pipeline import AnalyseStage
    from instcolor.video.source import FrameItem

    stage = AnalyseStage(colorizer, VideoOptions(size=SIZE, **kw), SIZE)
    works = []
    stage.detected_at = []
    for i, f in enumerate(frames):
        before = stage.detections
        (item,) = stage.process(FrameItem(index=i, rgb=f))
        works.append(item.work)
        if stage.detections > before:
            stage.detected_at.append(i)
    return stage, works


def test_detector_every_n_frames_and_at_cuts_tracker_between(tiny_weights_dir):
    from instcolor import Colorizer

    det = FakeDetector()
    c = Colorizer.from_pretrained(tiny_weights_dir, detector=det)
    frames = [scene(i, variant=int(i >= 7)) for i in range(12)]  # a hard cut at frame 7
    stage, works = _analyse(c, frames, detect_every=5)
    assert [w.cut for w in works] == [True] + [False] * 6 + [True] + [False] * 4
    assert det.calls == 3 and stage.detected_at == [0, 5, 7]   # 7: the cut; the next would be 12
    # one identity for the square through frames 0..6; its box moves with it between detections
    ids = [w.track_ids.tolist() for w in works[:7]]
    assert ids == [[0]] * 7
    x0 = [int(w.prepared.boxes[0, 0]) for w in works[:7]]
    truth = [4 + 3 * i for i in range(7)]
    assert all(abs(a - b) <= 2 for a, b in zip(x0, truth)), (x0, truth)
    assert x0[1] > x0[0] and x0[4] > x0[2]  # carried by the flow on non-detection frames 1..4
    # after the cut (no red square): the track ends, no boxes
    assert all(len(w.prepared.boxes) == 0 for w in works[7:])


def test_detect_every_counts(tiny_weights_dir):
    from instcolor import Colorizer

    det = FakeDetector()
    c = Colorizer.from_pretrained(tiny_weights_dir, detector=det)
    _analyse(c, [scene(i) for i in range(11)], detect_every=5)
    assert det.calls == 3  # frames 0, 5, 10


def test_pipeline_with_detector_runs_instances(clip_dir, tmp_path, tiny_weights_dir):
    from instcolor import Colorizer

    det = FakeDetector()
    c = Colorizer.from_pretrained(tiny_weights_dir, detector=det)
    src = make_clip(clip_dir / "det.mkv", n=7)
    out = tmp_path / "det_out.mkv"
    r = colorize_file(src, out, c, VideoOptions(size=SIZE, detect_every=3))
    assert r.frames == 7 and r.detections == det.calls == 3


def test_scene_cut_resets_the_stabiliser(tiny_colorizer):
    frames = [scene(i, variant=int(i >= 5)) for i in range(8)]
    per_frame = [tiny_colorizer.colorize(f, size=SIZE).rgb for f in frames]
    stab = list(tiny_colorizer.colorize_video(frames, size=SIZE, stabilize="flow"))
    np.testing.assert_array_equal(stab[5], per_frame[5])      # the first frame of the new scene is fresh
    assert not np.array_equal(stab[6], per_frame[6])          # and blending resumes after it


# ----------------------------------------------------------------------------- hints
def test_hints_apply_on_their_frame_range_only(plain_clip, tmp_path, tiny_colorizer):
    frames, _, _ = decode(plain_clip)
    hints = tmp_path / "hints.json"
    hints.write_text(json.dumps({"hints": [{"x": 50, "y": 40, "rgb": "#00ff00", "size": 9, "frames": [3, 5]}]}))
    o = VideoOptions(size=SIZE, stabilize="none")
    with_h = list(colorize_frames(frames, tiny_colorizer, o, hints=hints))
    plain = list(colorize_frames(frames, tiny_colorizer, o))
    changed = [i for i, (a, b) in enumerate(zip(with_h, plain)) if not np.array_equal(a, b)]
    assert changed == [3, 4, 5]
    from instcolor import Hint

    expect = tiny_colorizer.colorize(frames[4], hints=[Hint(50, 40, rgb=(0, 255, 0), size=9)], size=SIZE).rgb
    np.testing.assert_array_equal(with_h[4], expect)


def test_tracked_hint_follows_the_moving_square(tiny_colorizer):
    from instcolor.video.flow import DisFlow, grey_of_L

    frames = [scene(i) for i in range(6)]
    sched = HintSchedule([VideoHint(__import__("instcolor").Hint(10, 16, rgb=(0, 255, 0)), 0, None, True),
                          VideoHint(__import__("instcolor").Hint(10, 16, rgb=(0, 255, 0)), 0, None, False)])
    flow = DisFlow("medium")
    greys = [grey_of_L(tiny_colorizer.ops.rgb_to_lab(f, size=SIZE)[:1]) for f in frames]
    xs = []
    for i in range(6):
        fw = flow(greys[i - 1], greys[i]) if i else None
        tracked, fixed = sched.at(i, (H, W), fw)
        xs.append(tracked.x)
        assert (fixed.x, fixed.y) == (10, 16)
    # the square moves 3 px per frame: the tracked hint moves with it (+-1 px per frame of slack)
    assert xs[5] - xs[0] == pytest.approx(15, abs=3), xs


def test_hints_file_errors_name_the_file_and_entry(tmp_path):
    cases = {
        "not valid JSON": "{",
        "hint 0: 'y' is missing": [{"x": 1, "rgb": "#000000"}],
        "hint 1: give exactly one of 'rgb'": [{"x": 1, "y": 1, "rgb": "#000000"}, {"x": 1, "y": 1}],
        "unknown key(s) colour": [{"x": 1, "y": 1, "colour": "#000000"}],
        "frames [5, 2]: last is before first": [{"x": 1, "y": 1, "ab": [1, 2], "frames": [5, 2]}],
        "track must be true or false": [{"x": 1, "y": 1, "ab": [1, 2], "track": "yes"}],
    }
    for expect, content in cases.items():
        f = tmp_path / "h.json"
        f.write_text(content if isinstance(content, str) else json.dumps(content))
        with pytest.raises(VideoError) as e:
            load_hints(f)
        assert str(f) in str(e.value) and expect in str(e.value), str(e.value)
    f.write_text(json.dumps([{"x": 1, "y": 2, "rgb": [1, 2, 3], "frames": [2, None], "track": True}]))
    (h,) = load_hints(f)
    assert (h.first, h.last, h.track, h.hint.rgb) == (2, None, True, (1, 2, 3))


def test_hint_outside_the_frame_is_an_error_naming_it(plain_clip, tmp_path, tiny_colorizer):
    hints = tmp_path / "far.json"
    hints.write_text(json.dumps([{"x": 500, "y": 4, "ab": [10, 10]}]))
    with pytest.raises(VideoError, match=r"far\.json: hint 0 at \(500, 4\) lies outside the 64x48 frame"):
        colorize_file(plain_clip, tmp_path / "o.mkv", tiny_colorizer, VideoOptions(size=SIZE), hints=hints)
    assert not (tmp_path / "o.mkv").exists()


# ----------------------------------------------------------------------------- errors, interruptions
@pytest.mark.parametrize("damage", ["truncated_mkv", "truncated_mp4", "truncated_faststart_mp4", "garbage", "empty",
                                    "corrupt_mkv"])
def test_damaged_input_is_one_error_naming_it_and_no_output(clip_dir, tmp_path, tiny_colorizer, opts, damage):
    if "mkv" in damage:
        good = make_clip(clip_dir / "long.mkv", n=30)
    elif "faststart" in damage:  # index first: the header lists 30 frames, the data stops early
        good = make_clip(clip_dir / "long_fs.mp4", n=30, faststart=True)
    else:
        good = make_clip(clip_dir / "long.mp4", n=30)
    data = good.read_bytes()
    bad = tmp_path / f"bad{good.suffix}"
    if damage.startswith("truncated"):
        bad.write_bytes(data[:len(data) * 2 // 3])
    elif damage == "garbage":
        bad.write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    elif damage == "empty":
        bad.write_bytes(b"")
    else:
        d = bytearray(data)
        d[len(d) // 2:len(d) // 2 + 300] = bytes(300)
        bad.write_bytes(bytes(d))
    outdir = tmp_path / "out"
    outdir.mkdir()
    with pytest.raises(VideoError) as e:
        colorize_file(bad, outdir / "x.mp4", tiny_colorizer, opts)
    assert str(bad) in str(e.value)
    assert no_leftovers(outdir) == []


def test_cli_damaged_input_exit_1_one_line(clip_dir, tmp_path, tiny_weights_dir, capsys):
    from instcolor.cli import main

    bad = tmp_path / "bad.mkv"
    bad.write_bytes(make_clip(clip_dir / "long.mkv", n=30).read_bytes()[:3000])
    rc = main(["video", str(bad), "-o", str(tmp_path / "o.mp4"), "--weights", str(tiny_weights_dir),
               "--size", "64", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 1 and str(bad) in err and "Traceback" not in err
    assert not (tmp_path / "o.mp4").exists()


@pytest.mark.parametrize("exc", [KeyboardInterrupt, RuntimeError])
@pytest.mark.parametrize("stage", ["analyse", "nets", "compose", "write"])
def test_interrupt_or_error_in_any_stage_leaves_no_output(plain_clip, tmp_path, tiny_colorizer, opts,
                                                          monkeypatch, exc, stage):
    from instcolor.video import pipeline, sink

    seen = {"n": 0}

    def boom_after(original):
        def wrapped(self, *a, **k):
            seen["n"] += 1
            if seen["n"] == 4:
                raise exc("simulated")
            return original(self, *a, **k)
        return wrapped

    target = {"analyse": (pipeline.AnalyseStage, "process"), "nets": (pipeline.NetsStage, "process"),
              "compose": (pipeline.ComposeStage, "process"), "write": (sink.VideoFileSink, "write")}[stage]
    monkeypatch.setattr(target[0], target[1], boom_after(getattr(*target)))
    out = tmp_path / "o.mp4"
    result = {}

    def run():
        try:
            colorize_file(plain_clip, out, tiny_colorizer, opts)
        except BaseException as e:  # noqa: BLE001
            result["e"] = e

    t = threading.Thread(target=run)
    t.start()
    t.join(timeout=120)
    assert not t.is_alive(), "the pipeline did not stop after the error (deadlock)"
    assert isinstance(result.get("e"), exc)
    assert no_leftovers(tmp_path) == []
    assert not [th for th in threading.enumerate() if th.name.startswith("instcolor-video")]


def test_never_overwrites_the_input(plain_clip, tmp_path, tiny_colorizer, opts):
    before = plain_clip.read_bytes()
    with pytest.raises(VideoError, match="overwrite the input"):
        colorize_file(plain_clip, plain_clip, tiny_colorizer, opts)
    with pytest.raises(VideoError, match="contains or lies inside the input"):
        colorize_file(plain_clip, str(plain_clip.parent) + "/", tiny_colorizer, opts)
    assert plain_clip.read_bytes() == before


def test_foreign_output_folder_is_refused(plain_clip, tmp_path, tiny_colorizer, opts):
    d = tmp_path / "mine"
    d.mkdir()
    (d / "notes.txt").write_text("keep me")
    with pytest.raises(VideoError, match="not empty and was not written by"):
        colorize_file(plain_clip, str(d) + "/", tiny_colorizer, opts)
    assert no_leftovers(d) == ["notes.txt"] and no_leftovers(tmp_path) == ["mine"]
    # an earlier video output folder is replaced by a complete new one
    out = tmp_path / "frames"
    colorize_file(plain_clip, str(out) + "/", tiny_colorizer, opts)
    colorize_file(make_clip(tmp_path / "short.mkv", n=3), str(out) + "/", tiny_colorizer, opts)
    assert len(read_folder(out)) == 3


# ----------------------------------------------------------------------------- CLI
def test_cli_video_and_eval_video(audio_clip, tmp_path, tiny_weights_dir, capsys):
    from instcolor.cli import main

    hints = tmp_path / "h.json"
    hints.write_text(json.dumps([{"x": 20, "y": 20, "rgb": "#ff8800", "frames": [0, 3], "track": True}]))
    out = tmp_path / "cli.mkv"
    rc = main(["video", str(audio_clip), "-o", str(out), "--weights", str(tiny_weights_dir), "--size", "64",
               "--hints", str(hints), "--crf", "23", "--codec", "libx264", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "wrote 10 frame(s)" in err
    assert len(decode(out)[0]) == 10 and len(packets(out, "audio")) == len(packets(audio_clip, "audio"))
    js = tmp_path / "ev.json"
    rc = main(["eval-video", str(out), str(audio_clip), "--json", str(js), "--no-progress"])
    text = capsys.readouterr().out
    assert rc == 0
    data = json.loads(js.read_text())
    assert data["frames"] == 10 and len(data["per_frame"]) == 10
    assert "DIS" in data["flow"] and "DIS" in text
    assert data["cdc"]["ratio"] == pytest.approx(data["cdc"]["pred"] / data["cdc"]["gt"])
    assert data["warp_error"]["ratio"] == pytest.approx(data["warp_error"]["pred"] / data["warp_error"]["gt"])
    # a video against itself: ratios 1
    main(["eval-video", str(audio_clip), str(audio_clip), "--json", str(js), "--no-progress"])
    data = json.loads(js.read_text())
    assert data["cdc"]["ratio"] == 1.0 and data["warp_error"]["ratio"] == 1.0 and data["psnr_identical"] == 10


def test_cli_option_errors(plain_clip, tmp_path, tiny_weights_dir, capsys):
    from instcolor.cli import main

    base = ["video", str(plain_clip), "--weights", str(tiny_weights_dir), "--no-progress"]
    for extra, msg in ((["-o", str(tmp_path / "a.mp4"), "--crf", "99"], "crf for libx264 must be"),
                       (["-o", str(tmp_path / "a.mp4"), "--codec", "nosuchcodec"], "--codec nosuchcodec"),
                       (["-o", str(tmp_path / "a.mp4"), "--codec", "aac"], "not a video encoder"),
                       (["-o", str(tmp_path / "a"), ], "give a file suffix"),
                       (["-o", str(tmp_path / "a.mp4"), "--detect-every", "0"], "--detect-every"),
                       (["-o", str(tmp_path / "a.mp4"), "--max-instances", "9"], "--max-instances")):
        rc = main(base + extra)
        err = capsys.readouterr().err
        assert rc == 2 and msg in err, (extra, err)
    assert no_leftovers(tmp_path) == []


def test_cli_help_documents_every_option():
    from instcolor.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    for name in ("video", "eval-video"):
        for action in sub.choices[name]._actions:
            if action.option_strings and action.dest != "help":
                assert action.help, f"{name} {action.option_strings} has no help"

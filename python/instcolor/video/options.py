"""Settings of a video run (one frozen dataclass) and the errors the video package raises."""
from __future__ import annotations

from dataclasses import dataclass, field

#: x264/x265/VPx/AV1 encoders that take a constant-rate-factor option, with their default CRF
#: ("high quality": visually transparent for x264 at 18) and the valid range.
CRF_CODECS = {"libx264": (18, 0, 51), "libx264rgb": (18, 0, 51), "libx265": (20, 0, 51),
              "libvpx-vp9": (24, 0, 63), "libvpx": (10, 4, 63), "libaom-av1": (24, 0, 63),
              "libsvtav1": (24, 0, 63)}
STABILIZE_MODES = ("flow", "none")
FLOW_PRESETS = ("ultrafast", "fast", "medium")


class VideoError(ValueError):
    """A video that cannot be read or written (unreadable, truncated, corrupt, unsupported), or bad
    video settings; the message names the file or the setting."""


@dataclass(frozen=True)
class VideoOptions:
    """How a video is colorized. Every field has a default; ``VideoOptions(stabilize="none")``.

    Processing
      size            processing size S (None: the colorizer's default, e.g. 128 for the starter weights)
      detect_every    run the detector on every N-th frame and at scene cuts; the tracker carries the
                      boxes in between (only when the colorizer has a detector)
      max_instances   at most this many tracked boxes per frame (0..8)
      stabilize       "flow": blend ab along the optical flow (see :mod:`instcolor.video.stabilize`);
                      "none": every frame exactly as :meth:`Colorizer.colorize` colours it
      blend           weight of the flow-warped previous ab at non-occluded pixels (0..1; 0.97: on the
                      clips of ../shared/videos the encoded output's CDC ratio was 0.70-1.06 with and
                      without the detector, against up to 1.18 with 0.95 and 1.25 with 0.9; PSNR
                      -0.10..+0.28 dB, colourfulness +0.2..-2.6 % of per-frame, README *Video*)
      flow_preset     OpenCV DIS preset for the processing-resolution flow
      scene_threshold grey-histogram distance (0..1, half the L1 distance) above which a frame starts
                      a new scene: stabiliser, tracker and tracked hints restart
      batch_size      frames per pass of the nets
      queue_size      bound of every queue between the stages (frames held at once ~ stages x this)
      helper_threads  threads of each stage other than the nets: the decoder, the encoder, OpenCV's
                      flow and the CPU kernels of analysis and composition; 0: their own defaults
                      (usually all cores); None (default): 1 on a machine with at most 4 usable
                      cores, where the helpers would otherwise fight the nets for them, else 0 (on
                      16 cores one thread per helper made composition the bottleneck: 2-3x slower).
                      ``helper_thread_count`` is the resolved value.
      nets_threads    intra-op threads of each run of the nets while a video runs, for an ONNX
                      Runtime colorizer (the pipeline then runs on a second set of sessions on the same
                      export, made once per thread count and kept; other backends keep theirs); 0: the
                      colorizer's own sessions; None (default): half the usable cores (at least 1) on a
                      machine with at most 4, else 0. ``nets_thread_count`` is the resolved value.
      nets_workers    batches of the nets that run at once, each single-threaded run in its own
                      worker thread (ONNX Runtime only; other backends run one batch at a time);
                      None (default): usable cores / nets_thread_count on a machine with at most 4
                      cores, else 1. ``nets_worker_count`` is the resolved value.
                      Why both: on a small machine the stages already keep the cores busy, and intra-op
                      threads there cost CPU in synchronisation (2 cores, starter weights, 128x128: 33-39
                      ms of CPU per frame with 2 threads against 26-30 ms with 1) and wait for cores the
                      other stages hold; two single-threaded runs side by side waste nothing and keep the
                      nets from being one serial step (README *Video*). The results are the same bit
                      for bit.
      compose_workers frames composed at once at full resolution, each in its own worker thread (the
                      stabiliser still runs in order); None (default): the usable cores (at most 4) when the helper
                      stages run one kernel thread each (``helper_thread_count`` 1), else 1 (the kernels
                      then use the cores themselves). At 1920x1080 on 2 cores one composing thread was
                      the bottleneck (busy ~95 % of the time, 0.80x bare ``colorize``).
                      ``compose_worker_count`` is the resolved value.
    Output (files)
      codec, crf, preset, pix_fmt   video encoder; crf None = the codec's default in CRF_CODECS;
                      pix_fmt None = yuv420p (yuv444p for odd sizes)
      copy_streams    copy audio and subtitle streams (packets as they are)
      fps             frame rate for a folder of frames (their timestamps are index / fps)
      progress        show a progress bar on stderr
    """

    size: int | None = None
    detect_every: int = 5
    max_instances: int = 8
    stabilize: str = "flow"
    blend: float = 0.97
    flow_preset: str = "fast"
    scene_threshold: float = 0.5
    batch_size: int = 4
    queue_size: int = 4
    helper_threads: int | None = None
    nets_threads: int | None = None
    nets_workers: int | None = None
    compose_workers: int | None = None
    codec: str = "libx264"
    crf: int | None = None
    preset: str | None = "ultrafast"
    pix_fmt: str | None = None
    copy_streams: bool = True
    fps: float = 25.0
    progress: bool = False
    encoder_options: dict = field(default_factory=dict)

    SMALL_MACHINE_CORES = 4
    MAX_DEFAULT_COMPOSE_WORKERS = 4   # frames held by composition stay few whatever the core count

    @property
    def helper_thread_count(self) -> int:
        """``helper_threads`` resolved: None -> 1 with at most SMALL_MACHINE_CORES usable cores, else 0."""
        if self.helper_threads is not None:
            return self.helper_threads
        from .._ort import usable_cores

        return 1 if usable_cores() <= self.SMALL_MACHINE_CORES else 0

    @property
    def nets_thread_count(self) -> int:
        """``nets_threads`` resolved: None -> half the usable cores (at least 1) with at most
        SMALL_MACHINE_CORES of them, else 0 (the colorizer's own sessions)."""
        if self.nets_threads is not None:
            return self.nets_threads
        from .._ort import usable_cores

        cores = usable_cores()
        return max(1, cores // 2) if cores <= self.SMALL_MACHINE_CORES else 0

    @property
    def nets_worker_count(self) -> int:
        """``nets_workers`` resolved: None -> the usable cores / nets_thread_count (at least 1) with at
        most SMALL_MACHINE_CORES cores, else 1."""
        if self.nets_workers is not None:
            return self.nets_workers
        from .._ort import usable_cores

        cores = usable_cores()
        threads = self.nets_thread_count
        return max(1, cores // threads) if threads and cores <= self.SMALL_MACHINE_CORES else 1

    @property
    def compose_worker_count(self) -> int:
        """``compose_workers`` resolved: None -> the usable cores (at most MAX_DEFAULT_COMPOSE_WORKERS) with
        ``helper_thread_count`` 1, else 1."""
        if self.compose_workers is not None:
            return self.compose_workers
        from .._ort import usable_cores

        return min(usable_cores(), self.MAX_DEFAULT_COMPOSE_WORKERS) if self.helper_thread_count == 1 else 1

    def __post_init__(self):
        def bad(what):
            raise VideoError(f"VideoOptions: {what}")

        if self.size is not None and (not isinstance(self.size, int) or self.size < 8 or self.size % 8):
            bad(f"size must be a positive multiple of 8, got {self.size!r}")
        if not isinstance(self.detect_every, int) or self.detect_every < 1:
            bad(f"detect_every must be an integer >= 1, got {self.detect_every!r}")
        if not isinstance(self.max_instances, int) or not 0 <= self.max_instances <= 8:
            bad(f"max_instances must be in 0..8, got {self.max_instances!r}")
        if self.stabilize not in STABILIZE_MODES:
            bad(f"stabilize must be one of {', '.join(STABILIZE_MODES)}, got {self.stabilize!r}")
        if not 0.0 <= float(self.blend) <= 1.0:
            bad(f"blend must be in [0, 1], got {self.blend!r}")
        if self.flow_preset not in FLOW_PRESETS:
            bad(f"flow_preset must be one of {', '.join(FLOW_PRESETS)}, got {self.flow_preset!r}")
        if not 0.0 < float(self.scene_threshold) <= 1.0:
            bad(f"scene_threshold must be in (0, 1], got {self.scene_threshold!r}")
        if not isinstance(self.batch_size, int) or not 1 <= self.batch_size <= 64:
            bad(f"batch_size must be in 1..64, got {self.batch_size!r}")
        def count(name, lo, hi):  # None, or an int (not a bool) in lo..hi
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi):
                bad(f"{name} must be in {lo}..{hi}, got {v!r}")

        count("helper_threads", 0, 256)
        count("nets_threads", 0, 256)
        count("nets_workers", 1, 16)
        count("compose_workers", 1, 16)
        if not isinstance(self.queue_size, int) or not 1 <= self.queue_size <= 256:
            bad(f"queue_size must be in 1..256, got {self.queue_size!r}")
        if not (float(self.fps) > 0 and float(self.fps) <= 1000):
            bad(f"fps must be in (0, 1000], got {self.fps!r}")
        if self.crf is not None:
            if self.codec not in CRF_CODECS:
                bad(f"crf applies to the encoders {', '.join(sorted(CRF_CODECS))}, not {self.codec}")
            _, lo, hi = CRF_CODECS[self.codec]
            if not isinstance(self.crf, int) or not lo <= self.crf <= hi:
                bad(f"crf for {self.codec} must be an integer in {lo}..{hi}, got {self.crf!r}")

    @property
    def effective_crf(self) -> int | None:
        if self.crf is not None:
            return self.crf
        entry = CRF_CODECS.get(self.codec)
        return entry[0] if entry else None

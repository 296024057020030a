"""The public face: :class:`Colorizer`."""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from . import prepare as _prepare
from .pipeline import ColorizeResult, compose_result, native_ops, prepare_image, run_batch
from .prepare import Hint, HintPlanes


class Colorizer:
    """Instance-aware colorization of photos.

    >>> c = Colorizer.from_pretrained("checkpoints/coco_finetuned_mask_256")
    >>> r = c.colorize("photo.jpg")
    >>> r.rgb.shape  # (H, W, 3) uint8
    """

    def __init__(self, backend, detector=None, native: bool | None = None, default_size: int = 256):
        """``native``: use the native kernels for preparation, fusion and composition (default:
        when the extension is built); False runs the pure PyTorch/numpy reference code.
        ``default_size``: processing size S when ``colorize`` is given none."""
        self.default_size = _prepare.check_size(default_size)
        self.backend = backend
        self.detector = detector
        # native=True: NativeUnavailableError (a ValueError) naming why the kernels cannot be used;
        # None: native_ops' default (environment INSTCOLOR_REQUIRE_NATIVE).
        self.ops = native_ops(require=True if native else None) if native is not False else None
        if self.ops is not None and hasattr(backend, "set_fuse"):
            backend.set_fuse(self.ops.fuse_instances)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike | None = None, backend: str = "auto", device: str = "cpu",
                        detector=None, native: bool | None = None, **backend_options) -> "Colorizer":
        """Load weights from ``path``, a directory holding either

        * latest_net_G.pth, latest_net_GF.pth and latest_net_GComp.pth (the official layout; keys
          may carry ``module.``), or
        * an instcolor bundle: config.json + model.safetensors (see :func:`instcolor.models.save_bundle`),

        or, for ``backend="onnxruntime"`` / ``"tensorrt"``, an export directory written by
        :func:`instcolor.export.export_segments`. ``path=None`` (the default) uses the built-in
        starter bundle (:func:`instcolor.weights.starter_weights`; a small model, far below the
        paper's quality) and says so once per process on stderr; ``FileNotFoundError`` when the
        package was installed without it.

        backend: 'auto' (the default: 'onnxruntime' when it is installed and ``device`` is the CPU,
        else 'torch'), 'torch' (eager PyTorch on ``device``), 'onnxruntime' (exports the segments
        on first use into the cache folder ``$INSTCOLOR_CACHE`` or ``~/.cache/instcolor``, keyed by
        the weights' hash; a couple of seconds once per set of weights) or 'tensorrt'. detector:
        None, a callable returning :class:`instcolor.detect.Detections`, or a path to an ONNX
        detector. ``backend_options`` go to the TensorRT backend
        (``precision='fp32'|'fp16'``, ``max_images``, ``cuda_graphs``, ``workspace_bytes``,
        ``cache_root``); other backends refuse options. Raises
        :class:`instcolor.models.CheckpointError` when the weight files are missing or do not fit.
        """
        from . import weights as _weights
        from .backends import make_backend
        from .detect import load_detector

        starter = path is None
        if starter:
            path = _weights.starter_weights()
        from .models.checkpoint import DEFAULT_SIZE, trained_size

        colorizer = cls(make_backend(path, backend, device=device, **backend_options), detector=load_detector(detector),
                        native=native, default_size=trained_size(path) or DEFAULT_SIZE)
        if starter:
            _weights.announce_starter(path)
        return colorizer

    # ------------------------------------------------------------------ single image
    def colorize(self, image, boxes=None, scores=None, hints: Sequence[Hint] | HintPlanes = (),
                 size: int | None = None) -> ColorizeResult:
        """Colorize one image.

        image: (H,W,3) or (H,W) uint8 array, a PIL image or a file path.
        boxes: (N,4) float xyxy in input pixels (N may be 0); None = run the configured detector
               (none configured -> the full-image net). scores: (N,) or None.
        hints: Hint(x, y, rgb=... | ab=..., size=P) points in input pixels, or one HintPlanes.
        size: processing size S (multiple of 8); None = ``self.default_size``: the size the weights
              were trained at when they record it (bundles, training run folders), else 256 as
              the official model was trained.
        """
        return self.colorize_batch([image], [boxes], [scores], [hints], size=size)[0]

    # ------------------------------------------------------------------ batch
    def colorize_batch(self, images: Sequence, boxes: Sequence | None = None, scores: Sequence | None = None,
                       hints: Sequence | None = None, size: int | None = None) -> list[ColorizeResult]:
        """Colorize several images in one pass of the nets; per-image ``boxes``/``scores``/``hints``
        lists (or None for all)."""
        size = _prepare.check_size(self.default_size if size is None else size)
        n = len(images)
        boxes = list(boxes) if boxes is not None else [None] * n
        scores = list(scores) if scores is not None else [None] * n
        hints = list(hints) if hints is not None else [()] * n
        if not (len(boxes) == len(scores) == len(hints) == n):
            raise ValueError(f"{n} images but {len(boxes)} boxes, {len(scores)} scores, {len(hints)} hints entries")
        prepared, meta = [], []
        for i, (img, b, s, h) in enumerate(zip(images, boxes, scores, hints)):
            name = f"image {i}" if not isinstance(img, (str, os.PathLike)) else str(img)
            arr = _prepare.as_rgb_uint8(img, name=name)
            labels = None
            if b is None and self.detector is not None:
                det = self.detector(arr)
                b, s, labels = det.boxes, det.scores, det.labels
            sel = _prepare.select_boxes(b, s, arr.shape[:2], name=f"{name}: boxes")
            keep_scores, keep_labels = _selected_extras(b, s, labels)
            prepared.append(prepare_image(arr, sel, h, size, self.ops))
            meta.append((keep_scores, keep_labels))
        abs_ = run_batch(self.backend, prepared)
        return [compose_result(p, ab, *m, ops=self.ops) for p, ab, m in zip(prepared, abs_, meta)]

    # ------------------------------------------------------------------ video
    def colorize_video(self, frames, hints=None, **options):
        """Colorize a sequence of frames: a generator yielding (H, W, 3) uint8 frames in order.

        ``frames``: any iterable of (H, W, 3) or (H, W) uint8 arrays of one size, read lazily.
        ``hints``: None, a hints file or a list of :class:`instcolor.video.VideoHint`. ``options``:
        fields of :class:`instcolor.video.VideoOptions` (``size``, ``detect_every``,
        ``stabilize="flow"|"none"``, ``batch_size``, ...). Needs OpenCV (``pip install 'instcolor[video]'``)
        for the optical flow. See :func:`instcolor.video.colorize_frames`."""
        from .video import VideoOptions, colorize_frames

        return colorize_frames(frames, self, VideoOptions(**options), hints=hints)


def _selected_extras(boxes, scores, labels):
    """Scores / labels in the order :func:`prepare.select_boxes` uses the boxes."""
    n = len(np.asarray(boxes if boxes is not None else np.zeros((0, 4))).reshape(-1, 4))
    order = _prepare.selection_order(n, scores)
    s = None if scores is None else np.asarray(scores, np.float32).reshape(-1)[order]
    lab = None if labels is None else np.asarray(labels, np.int64).reshape(-1)[order]
    return s, lab

"""The public face: :class:`Colorizer`."""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from . import distribution as _distribution
from . import prepare as _prepare
from .global_hints import GlobalHints, stack_vectors
from .pipeline import Batch, ColorizeResult, PreparedImage, compose_result, native_ops, prepare_image, run_batch
from .prepare import Hint, HintPlanes

#: How the ab output is decoded: "regression" (the nets' regression head, the official output),
#: "distribution" (annealed mean of the classification head's 529-bin distribution, Zhang et al. 2016)
#: or "mixed" ((1 - mix) x regression + mix x annealed mean: the colourfulness of the one, most of the
#: fidelity of the other).
DECODES = ("regression", "distribution", "mixed")
#: The one place the default decoding is set (``Colorizer(decode=None)`` / ``from_pretrained``).
DEFAULT_DECODE = "regression"


def check_decode(decode) -> str:
    """``decode`` if it is one of :data:`DECODES`, else ValueError naming it."""
    if not isinstance(decode, str) or decode not in DECODES:
        raise ValueError(f"decode must be one of {', '.join(map(repr, DECODES))}, got {decode!r}")
    return decode


def _check_global_hints(g, name: str = "global_hints"):
    if g is not None and not isinstance(g, GlobalHints):
        raise TypeError(f"{name}: expected an instcolor.GlobalHints or None, got {type(g).__name__} "
                        f"(e.g. GlobalHints.from_image(reference) or GlobalHints(saturation=0.5))")
    return g


def _global_hints_list(global_hints, n: int) -> list:
    """One GlobalHints (or None) for all ``n`` images, or a per-image sequence -> a list (its length
    is the caller's to check)."""
    if global_hints is None or isinstance(global_hints, GlobalHints):
        return [global_hints] * n
    return list(global_hints)


def _check_global_hints_list(global_hints: list) -> None:
    for i, g in enumerate(global_hints):
        _check_global_hints(g, f"global_hints[{i}]")


class Colorizer:
    """Instance-aware colorization of photos.

    >>> c = Colorizer.from_pretrained("checkpoints/coco_finetuned_mask_256")
    >>> r = c.colorize("photo.jpg")
    >>> r.rgb.shape  # (H, W, 3) uint8
    """

    def __init__(self, backend, detector=None, native: bool | None = None, default_size: int = 256,
                 decode: str | None = None, temperature: float | None = None, weights: str | None = None,
                 mix: float | None = None):
        """``native``: use the native kernels for preparation, fusion and composition (default:
        when the extension is built); False runs the pure PyTorch/numpy reference code.
        ``default_size``: processing size S when ``colorize`` is given none. ``decode``: the default
        decoding, ``"regression"``, ``"distribution"`` or ``"mixed"`` (None: :data:`DEFAULT_DECODE`);
        ``temperature``: the annealed-mean temperature of distribution and mixed decoding (None:
        :data:`instcolor.distribution.DEFAULT_TEMPERATURE`, 0.38); ``mix``: the annealed mean's share
        of mixed decoding, in [0, 1] (None: :data:`instcolor.distribution.DEFAULT_MIX`, 0.35).
        ``weights``: a name of the weights for messages (``from_pretrained`` gives the folder)."""
        self.default_size = _prepare.check_size(default_size)
        self.decode = check_decode(DEFAULT_DECODE if decode is None else decode)
        self.temperature = _distribution.check_temperature(
            _distribution.DEFAULT_TEMPERATURE if temperature is None else temperature)
        self.mix = _distribution.check_mix(_distribution.DEFAULT_MIX if mix is None else mix)
        self.weights = weights
        #: log class-rebalancing weights of the head (see :func:`class_log_weights`), undone for suggestions
        self.suggest_log_weights: np.ndarray | None = None
        self.backend = backend
        self.detector = detector
        # native=True: NativeUnavailableError (a ValueError) naming why the kernels cannot be used;
        # None: native_ops' default (environment INSTCOLOR_REQUIRE_NATIVE).
        self.ops = native_ops(require=True if native else None) if native is not False else None
        if self.ops is None:
            from .backends import torch_installed

            if not torch_installed():  # the reference kernels are PyTorch code
                raise ValueError("the reference kernels (native=False, or instcolor._native not built) need PyTorch, "
                                 "which is not installed: pip install 'instcolor[torch]', or use the native kernels "
                                 "(built by pip install .)")
        if self.ops is not None and hasattr(backend, "set_fuse"):
            backend.set_fuse(self.ops.fuse_instances)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike | None = None, backend: str = "auto", device: str = "cpu",
                        detector=None, native: bool | None = None, decode: str | None = None,
                        temperature: float | None = None, mix: float | None = None,
                        **backend_options) -> "Colorizer":
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
        (``precision='fp32'|'fp16'|'int8'``, ``max_images``, ``cuda_graphs``, ``workspace_bytes``,
        ``cache_root``); the ONNX Runtime backend takes ``precision='fp32'|'int8'``; the torch backend
        refuses options. ``precision='int8'`` (onnxruntime, tensorrt) runs an INT8 export: ``path`` is
        one (``instcolor export --precision int8``), or weights plus ``calibration=DIR`` (a folder of
        photos; ``calibration_count``; quantized into the cache on first use, keyed by the weights'
        hash and the calibration's identity; an ``.onnx`` ``detector`` gives the calibration boxes
        too), or ``None`` for the starter's shipped INT8 export (see :mod:`instcolor.quantize`). ``decode`` / ``temperature`` / ``mix``: the
        default decoding of every call (see :meth:`colorize`; None: what the weights recommend in their
        bundle's ``info.decode``, else ``"regression"`` / 0.38 / 0.35), checked here.
        Raises :class:`instcolor.models.CheckpointError` when the weight files are missing or do not fit.
        """
        if decode is not None:  # checked before anything loads
            check_decode(decode)
        if temperature is not None:
            _distribution.check_temperature(temperature)
        if mix is not None:
            _distribution.check_mix(mix)
        from . import weights as _weights
        from .backends import make_backend
        from .detect import load_detector

        starter = path is None
        if starter:
            path = _weights.starter_weights()
        from .models.checkpoint import DEFAULT_SIZE, trained_size

        decode, temperature, mix = recommended_decoding(path, decode, temperature, mix)
        if backend_options.get("calibration") is not None and isinstance(detector, (str, os.PathLike)) \
                and "calibration_detector" not in backend_options:  # calibrate on the boxes it will see
            backend_options["calibration_detector"] = detector
        colorizer = cls(make_backend(path, backend, device=device, **backend_options), detector=load_detector(detector),
                        native=native, default_size=trained_size(path) or DEFAULT_SIZE, decode=decode,
                        temperature=temperature, mix=mix,
                        weights="the built-in starter weights" if starter else f"the weights {str(path)!r}")
        colorizer.suggest_log_weights = class_log_weights(path)
        if starter:
            _weights.announce_starter(path)
        return colorizer

    # ------------------------------------------------------------------ single image
    def colorize(self, image, boxes=None, scores=None, hints: Sequence[Hint] | HintPlanes = (),
                 size: int | None = None, global_hints: GlobalHints | None = None, decode: str | None = None,
                 temperature: float | None = None) -> ColorizeResult:
        """Colorize one image.

        image: (H,W,3) or (H,W) uint8 array, a PIL image or a file path.
        boxes: (N,4) float xyxy in input pixels (N may be 0); None = run the configured detector
               (none configured -> the full-image net). scores: (N,) or None.
        hints: Hint(x, y, rgb=... | ab=..., size=P) points in input pixels, or one HintPlanes.
        size: processing size S (multiple of 8); None = ``self.default_size``: the size the weights
              were trained at when they record it (bundles, training run folders), else 256 as
              the official model was trained.
        global_hints: a :class:`instcolor.GlobalHints` (the colour histogram of a reference photo
              and/or a saturation, SIGGRAPH'17) or None; needs weights with the global hints branch
              (ValueError naming the weights otherwise).
        decode: ``"regression"``, ``"distribution"`` (the annealed mean of the classification
              head's distribution at ``temperature``, upsampled to S and composed like the
              regression ab) or ``"mixed"`` (``(1 - self.mix)`` x regression + ``self.mix`` x that
              annealed mean); None = ``self.decode`` / ``self.temperature``.
        """
        return self.colorize_batch([image], [boxes], [scores], [hints], size=size, global_hints=[global_hints],
                                   decode=decode, temperature=temperature)[0]

    # ------------------------------------------------------------------ batch
    def colorize_batch(self, images: Sequence, boxes: Sequence | None = None, scores: Sequence | None = None,
                       hints: Sequence | None = None, size: int | None = None, global_hints=None,
                       decode: str | None = None, temperature: float | None = None) -> list[ColorizeResult]:
        """Colorize several images in one pass of the nets; per-image ``boxes``/``scores``/``hints``/
        ``global_hints`` lists (or None for all; one GlobalHints applies to every image).
        ``decode``/``temperature`` as in :meth:`colorize`, for the whole batch."""
        decode, temperature = self._decoding(decode, temperature)
        size = _prepare.check_size(self.default_size if size is None else size)
        n = len(images)
        boxes = list(boxes) if boxes is not None else [None] * n
        scores = list(scores) if scores is not None else [None] * n
        hints = list(hints) if hints is not None else [()] * n
        global_hints = _global_hints_list(global_hints, n)
        if not (len(boxes) == len(scores) == len(hints) == len(global_hints) == n):
            raise ValueError(f"{n} images but {len(boxes)} boxes, {len(scores)} scores, {len(hints)} hints, "
                             f"{len(global_hints)} global_hints entries")
        _check_global_hints_list(global_hints)
        staged = [PreparedImage(*self._prepare(img, b, s, h, size, name=_image_name(img, i)))
                  for i, (img, b, s, h) in enumerate(zip(images, boxes, scores, hints))]
        abs_, _ = self._infer([st.prepared for st in staged], global_hints, decode, temperature)
        return [self.compose(st, ab) for st, ab in zip(staged, abs_)]

    # ------------------------------------------------------------------ stages
    # colorize_batch = prepare (each image) -> infer (the batch) -> compose (each image). A pipeline
    # (the server, video) runs the stages in different threads so that the nets never wait for the
    # CPU-side work; the pixels are those of colorize_batch.
    def prepare(self, image, boxes=None, scores=None, hints: Sequence[Hint] | HintPlanes = (),
                size: int | None = None, name: str = "image") -> PreparedImage:
        """Detection (``boxes=None`` with a detector) and preparation of one image for
        :meth:`infer`; arguments as in :meth:`colorize`. Safe to call from several threads."""
        size = _prepare.check_size(self.default_size if size is None else size)
        return PreparedImage(*self._prepare(image, boxes, scores, hints, size, name=name))

    def infer(self, prepared: Sequence[PreparedImage], global_hints=None, decode: str | None = None,
              temperature: float | None = None) -> list[np.ndarray]:
        """The nets on prepared images of one processing size S, in one batch -> the ab of each,
        (2, S, S) float32 normalised (Lab ab / 110), decoded as ``decode``/``temperature`` say
        (None: the colorizer's defaults). ``global_hints``: one GlobalHints for all, or a list."""
        decode, temperature = self._decoding(decode, temperature)
        n = len(prepared)
        global_hints = _global_hints_list(global_hints, n)
        if len(global_hints) != n:
            raise ValueError(f"{n} prepared images but {len(global_hints)} global_hints entries")
        _check_global_hints_list(global_hints)
        if not n:
            return []
        return self._infer([st.prepared for st in prepared], global_hints, decode, temperature)[0]

    def compose(self, prepared: PreparedImage, ab: np.ndarray, processed: bool = True) -> ColorizeResult:
        """The input's own lightness + ``ab`` (2, S, S) from :meth:`infer` -> the result of
        :meth:`colorize`. ``processed=False`` skips ``rgb_processed`` (None then)."""
        return compose_result(prepared.prepared, ab, prepared.scores, prepared.labels, ops=self.ops,
                              processed=processed)

    # ------------------------------------------------------------------ suggestions
    def suggest_colors(self, image, x: float, y: float, k: int = 8, size: int | None = None, boxes=None,
                       hints: Sequence[Hint] | HintPlanes = (), global_hints: GlobalHints | None = None,
                       scores=None) -> list[tuple[tuple[int, int, int], float]]:
        """Colours to suggest at input pixel (x, y): ``[((r, g, b), probability), ...]``, at most ``k``
        (1..64), most probable first, distinct 8-bit colours.

        The source is the 529-bin ab distribution of the classification head at the S/4 grid cell
        holding the pixel (for the image as colorized with ``boxes``/``scores``/``hints``/
        ``global_hints``, which mean what they mean in :meth:`colorize`), softened as SIGGRAPH'17's
        GUI does (temperature 5). Its modes (:func:`instcolor.suggest.find_modes`; bins out of the sRGB
        gamut at the pixel's lightness are left out) are shown at the pixel's own L, from the input
        image. ``probability`` is a mode's share of the softened distribution (the list sums to at
        most 1). Meaningful only with weights whose classification head was trained.
        """
        from .suggest import check_k

        k = check_k(k)
        size = _prepare.check_size(self.default_size if size is None else size)
        _check_global_hints(global_hints)
        p, _, _ = self._prepare(image, boxes, scores, hints, size, name=_image_name(image, 0))
        _, logits = self._infer([p], [global_hints], "regression", self.temperature, want_logits=True)
        return suggest_from_logits(logits[0], p.image, x, y, k, self.suggest_log_weights)

    # ------------------------------------------------------------------ edit session
    def open_session(self, image, boxes=None, scores=None, size: int | None = None):
        """An :class:`instcolor.session.EditSession` for repeated edits of one image: the detector (when
        ``boxes`` is None and one is configured), the preparation and the instance net run once here;
        each ``session.colorize(hints=..., global_hints=..., exclude=...)`` then re-runs only the
        full-image / fusion net. Results equal :meth:`colorize` with the same boxes and hints."""
        from .session import EditSession

        return EditSession(self, image, boxes=boxes, scores=scores, size=size)

    # ------------------------------------------------------------------ capabilities
    @property
    def has_global_hints(self) -> bool | None:
        """True / False: the weights have / lack the global hints branch; None: the backend does not say."""
        return getattr(self.backend, "has_global_hints", None)

    def check_support(self, decode: str | None = None, global_hints: bool = False, suggestions: bool = False) -> None:
        """ValueError (one line, naming the weights or the backend) unless this colorizer can do what is
        asked: ``decode`` (None: the default), ``global_hints`` (any given), ``suggestions``. For
        callers that want to fail before a long job (the CLI); the calls themselves check too."""
        decode = check_decode(self.decode if decode is None else decode)
        if global_hints and self.has_global_hints is False:
            raise ValueError(f"global hints: {self.weights or 'these weights'} have no global hints branch "
                             f"(the nets' global_net, trained by instcolor train --global-hints); colorize "
                             f"without global hints or use weights that have it")
        needs = [what for what, asked in ((f"{decode} decoding", decode in ("distribution", "mixed")),
                                          ("global hints", global_hints), ("colour suggestions", suggestions)) if asked]
        if needs and getattr(self.backend, "run_heads", None) is None:
            name = getattr(self.backend, "name", type(self.backend).__name__)
            raise ValueError(f"{needs[0]}: the {name} backend does not give the classification head or take "
                             f"global hints; use backend='torch'")

    # ------------------------------------------------------------------ internals
    def _decoding(self, decode, temperature) -> tuple[str, float]:
        decode = check_decode(self.decode if decode is None else decode)
        temperature = _distribution.check_temperature(self.temperature if temperature is None else temperature)
        return decode, temperature

    def _select(self, arr: np.ndarray, boxes, scores, name: str):
        """Detector (boxes None) + the official box selection -> (boxes (N,4) int64, scores, labels)."""
        labels = None
        if boxes is None and self.detector is not None:
            det = self.detector(arr)
            boxes, scores, labels = det.boxes, det.scores, det.labels
        sel = _prepare.select_boxes(boxes, scores, arr.shape[:2], name=f"{name}: boxes")
        keep_scores, keep_labels = _selected_extras(boxes, scores, labels)
        return sel, keep_scores, keep_labels

    def _prepare(self, image, boxes, scores, hints, size: int, name: str):
        arr = _prepare.as_rgb_uint8(image, name=name)
        sel, keep_scores, keep_labels = self._select(arr, boxes, scores, name)
        return prepare_image(arr, sel, hints, size, self.ops), keep_scores, keep_labels

    def _infer(self, prepared: list, global_hints, decode: str, temperature: float, want_logits: bool = False,
               instances=None) -> tuple[list[np.ndarray], np.ndarray | None]:
        """The nets on prepared images -> (ab (2,S,S) per image as ``decode`` gives it, class logits
        (B,529,S/4,S/4) or None). ``instances``: an InstanceState for the batch's instances (sessions)."""
        g = stack_vectors(global_hints, len(prepared))
        self.check_support(decode=decode, global_hints=g is not None, suggestions=want_logits)
        logits = want_logits or decode in ("distribution", "mixed")
        if not logits and g is None and instances is None:
            return run_batch(self.backend, prepared), None   # every backend; the official path
        run_heads = self.backend.run_heads
        if len({p.size for p in prepared}) != 1:
            raise ValueError(f"all images of a batch need one processing size, got {sorted({p.size for p in prepared})}")
        heads = run_heads(Batch.stack(prepared, global_input=g), logits=logits, instances=instances)
        ab = heads.ab
        if decode in ("distribution", "mixed"):
            dist = _distribution.upsample_ab(_distribution.annealed_mean(heads.logits, temperature), prepared[0].size)
            ab = dist if decode == "distribution" else ((1.0 - self.mix) * ab + self.mix * dist).astype(np.float32)
        return [ab[i] for i in range(len(prepared))], heads.logits

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


def _image_name(image, index: int) -> str:
    return str(image) if isinstance(image, (str, os.PathLike)) else f"image {index}"


def suggest_from_logits(logits: np.ndarray, image: np.ndarray, x, y, k: int, log_weights=None):
    """Suggestions at input pixel (x, y) of ``image`` (H,W,3) uint8 from its class logits (529,S/4,S/4);
    ``log_weights``: the head's log class-rebalancing weights (:func:`class_log_weights`) or None."""
    from .suggest import grid_cell, pixel_lightness, suggest_at

    size = logits.shape[-1] * 4
    row, col = grid_cell(x, y, image.shape[:2], size)
    return suggest_at(logits[:, row, col], pixel_lightness(image, x, y), k, log_weights=log_weights)


def recommended_decoding(path, decode: str | None = None, temperature: float | None = None,
                         mix: float | None = None) -> tuple[str, float, float]:
    """The decoding ``(decode, temperature, mix)`` to use with the weights at ``path`` when the caller
    leaves it open: a bundle may recommend one in ``info.decode`` ({"decode": "mixed", "temperature": T,
    "mix": m}; the built-in starter does, chosen by measurement, see README). Its temperature and mix
    are used when ``decode`` is None or names the same decoding; otherwise :data:`DEFAULT_DECODE`,
    :data:`instcolor.distribution.DEFAULT_TEMPERATURE` and :data:`instcolor.distribution.DEFAULT_MIX`.
    Official checkpoints recommend nothing (their classification head is untrained): regression."""
    import json
    from pathlib import Path

    rec = None
    try:
        config = json.loads((Path(path) / "config.json").read_text(encoding="utf-8"))
        info = config.get("info") if isinstance(config, dict) else None
        rec = info.get("decode") if isinstance(info, dict) else None
        if isinstance(rec, dict):
            rec = (check_decode(rec.get("decode")),
                   _distribution.check_temperature(rec.get("temperature", _distribution.DEFAULT_TEMPERATURE)),
                   _distribution.check_mix(rec.get("mix", _distribution.DEFAULT_MIX)))
        else:
            rec = None
    except (OSError, ValueError, TypeError, AttributeError):
        rec = None
    if decode is None:
        decode = rec[0] if rec else DEFAULT_DECODE
    decode = check_decode(decode)
    same = rec is not None and rec[0] == decode
    if temperature is None:
        temperature = rec[1] if same else _distribution.DEFAULT_TEMPERATURE
    if mix is None:
        mix = rec[2] if same else _distribution.DEFAULT_MIX
    return decode, _distribution.check_temperature(temperature), _distribution.check_mix(mix)


def class_log_weights(path) -> np.ndarray | None:
    """The log class-rebalancing weights (529,) a weights folder's head was trained with: a bundle's
    ``info.class_rebalance`` ({"counts": [529 training-set ab counts], "mix": lambda, "sigma": s}) or a
    training run's ``ab_prior.json`` with its ``config.json`` ``rebalance``; None when neither says
    (official checkpoints, heads trained without rebalancing)."""
    import json
    from pathlib import Path

    path = Path(path)
    spec = None
    try:
        if (path / "config.json").is_file():
            config = json.loads((path / "config.json").read_text(encoding="utf-8"))
            if isinstance(config, dict) and isinstance(config.get("info"), dict):
                spec = config["info"].get("class_rebalance")
            elif isinstance(config, dict) and (path / "ab_prior.json").is_file() and config.get("rebalance", 0) > 0:
                prior = json.loads((path / "ab_prior.json").read_text(encoding="utf-8"))
                spec = {"counts": prior.get("counts"), "mix": config["rebalance"]}
    except (OSError, ValueError, TypeError):
        return None
    if not isinstance(spec, dict):
        return None
    try:
        counts = np.asarray(spec["counts"], np.float64)
        mix = float(spec.get("mix", _distribution.DEFAULT_REBALANCE_MIX))
        sigma = float(spec.get("sigma", _distribution.DEFAULT_PRIOR_SIGMA))
        if counts.shape != (_distribution.NUM_BINS,) or not np.isfinite(counts).all() or (counts < 0).any():
            return None
        return np.log(_distribution.rebalance_weights(_distribution.smoothed_prior(counts, sigma), mix))
    except (KeyError, TypeError, ValueError):
        return None


def _selected_extras(boxes, scores, labels):
    """Scores / labels in the order :func:`prepare.select_boxes` uses the boxes."""
    n = len(np.asarray(boxes if boxes is not None else np.zeros((0, 4))).reshape(-1, 4))
    order = _prepare.selection_order(n, scores)
    s = None if scores is None else np.asarray(scores, np.float32).reshape(-1)[order]
    lab = None if labels is None else np.asarray(labels, np.int64).reshape(-1)[order]
    return s, lab

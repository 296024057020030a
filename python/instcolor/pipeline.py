"""Backend-agnostic orchestration: detect -> prepare -> nets -> compose, batched over images."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import compose as _compose
from . import prepare as _prepare


@dataclass
class Batch:
    """Network inputs of B images with M instances in all (numpy).

    full_L (B,1,S,S), hint_ab (B,2,S,S), hint_mask (B,1,S,S) centred, crop_L (M,1,S,S),
    inst_image (M,) int64 image index per instance, box_info: 4 x (M,6) int64 for S, S/2, S/4, S/8,
    global_input (B,532,1,1) float32 SIGGRAPH'17 global hints (:mod:`instcolor.global_hints`) or
    None: no global hints for any image (nets with the branch then read zeros)."""

    full_L: np.ndarray
    hint_ab: np.ndarray
    hint_mask: np.ndarray
    crop_L: np.ndarray
    inst_image: np.ndarray
    box_info: list = field(default_factory=list)
    global_input: np.ndarray | None = None

    def split(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(plain, fused, inst_image): indices of the images without / with instances, and each
        instance's index among the ``fused`` images (what the fusion net's batch sees)."""
        B = self.full_L.shape[0]
        counts = np.bincount(self.inst_image, minlength=B) if len(self.inst_image) else np.zeros(B, np.int64)
        plain, fused = np.flatnonzero(counts == 0), np.flatnonzero(counts > 0)
        remap = np.full(B, -1, np.int64)
        remap[fused] = np.arange(len(fused))
        return plain, fused, remap[self.inst_image]

    def checked_global_input(self) -> np.ndarray | None:
        """``global_input`` as a C-contiguous float32 (B, 532, 1, 1) array (None stays None);
        ValueError naming the shape when it is not that."""
        if self.global_input is None:
            return None
        from .models.arch import GLOBAL_INPUT_CHANNELS

        g = np.asarray(self.global_input)
        want = (self.full_L.shape[0], GLOBAL_INPUT_CHANNELS, 1, 1)
        if g.shape != want:
            raise ValueError(f"Batch.global_input: shape {g.shape}, expected {want} (one global hints vector per image)")
        return np.ascontiguousarray(g, np.float32)

    @classmethod
    def stack(cls, prepared: list[_prepare.Prepared], global_input: np.ndarray | None = None) -> "Batch":
        """One batch of ``prepared`` images; ``global_input`` (B, 532, 1, 1) or None (see the class doc)."""
        size = prepared[0].size
        return cls(
            global_input=None if global_input is None else np.asarray(global_input, np.float32),
            full_L=np.stack([p.full_L for p in prepared]),
            hint_ab=np.stack([p.hint_ab for p in prepared]),
            hint_mask=np.stack([p.hint_mask for p in prepared]),
            crop_L=np.concatenate([p.crop_L for p in prepared]) if prepared else np.zeros((0, 1, size, size), np.float32),
            inst_image=np.concatenate([np.full(len(p.boxes), i, np.int64) for i, p in enumerate(prepared)]),
            box_info=[np.concatenate([p.box_info[k] for p in prepared]).reshape(-1, 6) for k in range(4)],
        )


@dataclass
class Heads:
    """What :meth:`run_heads` of a backend returns for a batch of B images at size S.

    ab (B,2,S,S) float32: the regression output (what ``backend.run`` returns); logits
    (B,529,S/4,S/4) float32 or None: the classification head on conv8_3 (after the blend there, for
    images with instances), present only when asked for (:mod:`instcolor.distribution` decodes it)."""

    ab: np.ndarray
    logits: np.ndarray | None = None


class InstanceState:
    """The instance net's results for M crops, computed once by ``backend.run_instances(crop_L)`` and
    reused by ``backend.run_heads(batch, instances=state)`` (an edit session: only the hints change).

    ``features`` / ``logits``: ``{feature point: array (M, ...)}``: the 13 instance features and the
    13 per-instance blend logits, in the backend's own array type (opaque to callers); ``take(array,
    indices)`` selects instances of one array. ``owner``: the backend that made it (a state is only
    valid there); ``size``: the crops' processing size S."""

    MAX_PRESAMPLED = 64  # cached blend inputs per state (13 fusion levels per set of boxes)

    def __init__(self, features: dict, logits: dict, count: int, size: int, owner, take):
        self.features, self.logits = features, logits
        self.count, self.size, self.owner, self._take = int(count), int(size), owner, take
        self._presampled: dict = {}

    def presampled(self, point: str, box_info: np.ndarray, make):
        """What ``make()`` returns for the feature ``point`` blended at the boxes ``box_info``, made once
        and kept in this state (the backend's instances resampled to their boxes: an edit session
        blends the same instances at every edit). At most :attr:`MAX_PRESAMPLED` are kept."""
        key = (point, np.ascontiguousarray(box_info, np.int64).tobytes())
        hit = self._presampled.get(key)
        if hit is None:
            hit = make()
            if len(self._presampled) >= self.MAX_PRESAMPLED:
                self._presampled.pop(next(iter(self._presampled)))
            self._presampled[key] = hit
        return hit

    def __len__(self) -> int:
        return self.count

    def __repr__(self) -> str:
        return f"InstanceState({self.count} instances, size {self.size}, {getattr(self.owner, 'name', '?')} backend)"

    def select(self, indices) -> "InstanceState":
        """The state of the instances ``indices`` (ints in 0..M-1, in that order; e.g. all but an
        excluded box). IndexError naming the index when one is out of range."""
        idx = np.asarray(indices)
        if idx.dtype == bool:
            raise TypeError("InstanceState.select: give instance indices, not a boolean mask (np.flatnonzero(mask))")
        if idx.size == 0:
            idx = np.zeros(0, np.int64)
        if idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer):
            raise TypeError(f"InstanceState.select: indices must be a 1-D sequence of ints, got {indices!r}")
        bad = idx[(idx < 0) | (idx >= self.count)]
        if len(bad):
            raise IndexError(f"InstanceState.select: instance index {int(bad[0])} out of range 0..{self.count - 1}")
        idx = idx.astype(np.int64)
        take = self._take
        return InstanceState({k: take(v, idx) for k, v in self.features.items()},
                             {k: take(v, idx) for k, v in self.logits.items()}, len(idx), self.size, self.owner, take)

    def check(self, owner, batch: "Batch") -> None:
        """ValueError unless this state can stand for ``batch``'s instances on ``owner``."""
        if self.owner is not owner:
            raise ValueError(f"instances: this InstanceState was computed by another backend object "
                             f"({getattr(self.owner, 'name', '?')}); run run_instances on this one")
        M, S = len(batch.inst_image), int(batch.full_L.shape[-1])
        if self.count != M:
            raise ValueError(f"instances: the InstanceState holds {self.count} instances but the batch has "
                             f"{M} (batch.inst_image); select() the ones the batch's boxes stand for")
        if M and self.size != S:
            raise ValueError(f"instances: the InstanceState was computed at size {self.size} but the batch is "
                             f"at size {S}")


@dataclass
class ColorizeResult:
    """rgb (H,W,3) uint8 at input resolution; rgb_processed (S,S,3) uint8 (what the official code
    saves); ab (2,S,S) float32 normalised (Lab ab / 110); boxes (N,4) int64 used, in order;
    scores (N,) float32 or None; labels (N,) int64 or None (detector class indices)."""

    rgb: np.ndarray
    rgb_processed: np.ndarray | None  # None only from compose(..., processed=False)
    ab: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray | None = None
    labels: np.ndarray | None = None


@dataclass
class PreparedImage:
    """One image after detection and preparation, before the nets (what
    :meth:`instcolor.Colorizer.prepare` returns): ``prepared`` the nets' inputs at processing size
    S (:class:`instcolor.prepare.Prepared`; ``prepared.image`` is the (H, W, 3) uint8 input and
    ``prepared.boxes`` the (N, 4) int64 boxes used, in order); ``scores`` (N,) float32 or None;
    ``labels`` (N,) int64 or None (detector class indices)."""

    prepared: _prepare.Prepared
    scores: np.ndarray | None = None
    labels: np.ndarray | None = None

    @property
    def size(self) -> int:
        """The processing size S (images of one :meth:`instcolor.Colorizer.infer` call share it)."""
        return self.prepared.size


class NativeUnavailableError(ImportError, ValueError):
    """The native kernels were required (``Colorizer(native=True)``, ``INSTCOLOR_REQUIRE_NATIVE=1``)
    but cannot be used; the message says why. Also a ValueError (what ``native=True`` raised before)."""


_native_failure_reported = False  # the "built but does not load" warning, once per process


def native_ops(require: bool | None = None):
    """The native kernels module (``instcolor.ops``), or None when it cannot be used.

    * Not built (no ``instcolor._native`` module file): None, quietly; the reference code runs.
    * Built but failing to load (ABI mismatch, missing shared library, ...): None and a
      ``RuntimeWarning`` saying why, once per process; the reference code runs (10-15x slower).
    * ``require`` (default: environment ``INSTCOLOR_REQUIRE_NATIVE`` set to 1/true/yes/on): either
      case raises :class:`NativeUnavailableError` naming the cause instead of returning None.
    """
    import importlib.util
    import os
    import warnings

    global _native_failure_reported
    if require is None:
        require = os.environ.get("INSTCOLOR_REQUIRE_NATIVE", "").strip().lower() in ("1", "true", "yes", "on")
    try:
        from . import ops
        return ops
    except ImportError as e:
        error = e
    name = f"{__package__}._native"
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        if require:
            raise NativeUnavailableError(
                f"the native kernels are required but {name} is not built (install the package with a C++ "
                f"compiler: pip install .; INSTCOLOR_REQUIRE_NATIVE=0 runs the reference code)", name=name) from error
        return None
    reason = f"{name} ({spec.origin}) is built but failed to load: {type(error).__name__}: {error}"
    if require:
        raise NativeUnavailableError(f"the native kernels are required but {reason}", name=name,
                                     path=spec.origin) from error
    if not _native_failure_reported:
        _native_failure_reported = True
        warnings.warn(f"{reason}; running the reference kernels instead (10-15x slower). Rebuild it "
                      f"(pip install .) or set INSTCOLOR_REQUIRE_NATIVE=1 to make this an error.",
                      RuntimeWarning, stacklevel=2)
    return None


def prepare_image(image: np.ndarray, boxes: np.ndarray, hints, size: int, ops=None) -> _prepare.Prepared:
    """Step 2 for one image with the native kernels (``ops``) or, with ``ops=None``, the reference."""
    if ops is None:
        return _prepare.prepare(image, boxes, hints, size)
    h, w = image.shape[:2]
    hint_ab, hint_mask = _prepare.hint_planes(hints, size, (h, w))
    return _prepare.Prepared(image=image, size=size, full_rgb_u8=None, full_L=ops.rgb_to_lab(image, size=size)[:1],
                             hint_ab=hint_ab, hint_mask=hint_mask, boxes=boxes,
                             crop_L=ops.roi_crop_resize(image, boxes, size),
                             box_info=_prepare.box_info_levels(boxes, (h, w), size))


def run_batch(backend, prepared: list[_prepare.Prepared], global_input: np.ndarray | None = None) -> list[np.ndarray]:
    """Run the nets on prepared images -> ab (2,S,S) per image. ``global_input``: (B,532,1,1) global
    hints or None (see :class:`Batch`)."""
    if not prepared:
        return []
    sizes = {p.size for p in prepared}
    if len(sizes) != 1:
        raise ValueError(f"all images of a batch need one processing size, got {sorted(sizes)}")
    ab = backend.run(Batch.stack(prepared, global_input=global_input))
    return [ab[i] for i in range(len(prepared))]


def compose_result(p: _prepare.Prepared, ab: np.ndarray, scores=None, labels=None, ops=None,
                   processed: bool = True) -> ColorizeResult:
    """Step 5 with the native kernels (``ops``) or, with ``ops=None``, the reference.
    ``processed=False`` skips the (S, S, 3) picture (``rgb_processed`` is then None)."""
    if ops is None:
        rgb = _compose.compose_reference(p.image, ab)
        small = _compose.compose_processed_reference(p.full_L, ab) if processed else None
    else:
        ab = np.ascontiguousarray(ab, np.float32)
        rgb = ops.compose(p.image, ab)
        small = ops.compose_processed(p.full_L, ab) if processed else None
    return ColorizeResult(rgb=rgb, rgb_processed=small, ab=ab, boxes=p.boxes, scores=scores, labels=labels)

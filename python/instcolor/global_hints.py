"""SIGGRAPH'17 global hints: a colour histogram and a saturation value for the whole photo.

The nets' optional global hints branch (:class:`instcolor.models.backbone.GlobalHintsNet`) reads
one (532,) vector per image: the 529-bin ab histogram (:mod:`instcolor.distribution`), a flag
saying it is given, the mean HSV saturation in [0, 1], and its flag. A hint that is not given is
all zeros with flag 0, which is what the branch sees for "automatic".
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .distribution import NUM_BINS, ab_histogram

VECTOR_LENGTH = NUM_BINS + 3
HISTOGRAM_SIZE = 64  # processing size of a reference photo's histogram


def mean_saturation(rgb: np.ndarray, max_side: int = 256) -> float:
    """Mean HSV saturation ((max - min) / max per pixel, 0 for black) of (H, W, 3) uint8, on a
    strided subsample of at most ``max_side`` pixels per side."""
    rgb = np.asarray(rgb)
    step = max(1, int(np.ceil(max(rgb.shape[:2]) / max_side)))
    x = rgb[::step, ::step].astype(np.float32)
    hi, lo = x.max(axis=2), x.min(axis=2)
    sat = np.where(hi > 0, (hi - lo) / np.maximum(hi, 1e-6), 0.0)
    return float(sat.mean())


def image_ab(rgb: np.ndarray, size: int = HISTOGRAM_SIZE) -> np.ndarray:
    """(H, W, 3) uint8 -> normalised ab (2, size, size) float32, resized as inference does."""
    from .pipeline import native_ops

    rgb = np.ascontiguousarray(rgb)
    ops = native_ops()
    if ops is not None:
        return ops.rgb_to_lab(rgb, size=size)[1:]
    from .prepare import lab_of_uint8, pil_bilinear_resize

    return lab_of_uint8(pil_bilinear_resize(rgb, size, size))[0, 1:]


@dataclass(frozen=True)
class GlobalHints:
    """Global hints for one image: ``histogram`` (529,) ab distribution (None = not given) and
    ``saturation`` in [0, 1] (None = not given).

    >>> GlobalHints.from_image("reference.jpg")            # the colours of a reference photo
    >>> GlobalHints(saturation=0.6)                         # only a saturation
    >>> GlobalHints.from_image("reference.jpg", saturation=0.6)   # both
    """

    histogram: np.ndarray | None = None
    saturation: float | None = None

    def __post_init__(self):
        if self.histogram is not None:
            h = np.asarray(self.histogram, np.float64).reshape(-1)
            if h.shape != (NUM_BINS,) or not np.all(np.isfinite(h)) or (h < 0).any() or h.sum() <= 0:
                raise ValueError(f"global hints: histogram must be {NUM_BINS} non-negative finite numbers "
                                 f"with a positive sum, got shape {np.asarray(self.histogram).shape}")
            object.__setattr__(self, "histogram", (h / h.sum()).astype(np.float32))
        if self.saturation is not None:
            try:
                s = float(self.saturation)
            except (TypeError, ValueError):
                raise ValueError(f"global hints: saturation must be a number in [0, 1], got {self.saturation!r}") from None
            if not 0.0 <= s <= 1.0:
                raise ValueError(f"global hints: saturation must be a number in [0, 1], got {self.saturation!r}")
            object.__setattr__(self, "saturation", s)

    @classmethod
    def from_image(cls, image, saturation: float | None = None, with_saturation: bool = False) -> "GlobalHints":
        """The ab histogram of ``image`` (array, PIL image or path); ``saturation`` given as well, or
        the image's own mean saturation with ``with_saturation=True``."""
        from .prepare import as_rgb_uint8

        rgb = as_rgb_uint8(image, name="global hints reference")
        if saturation is None and with_saturation:
            saturation = mean_saturation(rgb)
        return cls(histogram=ab_histogram(image_ab(rgb)), saturation=saturation)

    @property
    def empty(self) -> bool:
        return self.histogram is None and self.saturation is None

    def vector(self) -> np.ndarray:
        """(532,) float32: histogram, histogram flag, saturation, saturation flag."""
        v = np.zeros(VECTOR_LENGTH, np.float32)
        if self.histogram is not None:
            v[:NUM_BINS] = self.histogram
            v[NUM_BINS] = 1.0
        if self.saturation is not None:
            v[NUM_BINS + 1] = self.saturation
            v[NUM_BINS + 2] = 1.0
        return v

    def to_json(self) -> dict:
        """{"histogram": [529 floats] | absent, "saturation": s | absent} (the hints-file form)."""
        out: dict = {}
        if self.histogram is not None:
            out["histogram"] = [round(float(x), 6) for x in self.histogram]
        if self.saturation is not None:
            out["saturation"] = self.saturation
        return out

    @classmethod
    def from_json(cls, obj, name: str = "global hints") -> "GlobalHints":
        if not isinstance(obj, dict) or set(obj) - {"histogram", "saturation"}:
            raise ValueError(f"{name}: expected an object with 'histogram' and/or 'saturation'")
        try:
            return cls(histogram=obj.get("histogram"), saturation=obj.get("saturation"))
        except ValueError as e:
            raise ValueError(f"{name}: {e}") from None


def stack_vectors(hints, n: int) -> np.ndarray | None:
    """Per-image GlobalHints (or None) -> (n, 532, 1, 1) float32, or None when no image has any."""
    hints = list(hints) if hints is not None else [None] * n
    if all(h is None or h.empty for h in hints):
        return None
    out = np.zeros((n, VECTOR_LENGTH, 1, 1), np.float32)
    for i, h in enumerate(hints):
        if h is not None:
            out[i, :, 0, 0] = h.vector()
    return out


__all__ = ["GlobalHints", "VECTOR_LENGTH", "image_ab", "mean_saturation", "stack_vectors"]

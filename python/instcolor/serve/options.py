"""Request options (boxes, scores, detect, hints, size, format, quality): parsed and checked in
one place for both APIs; every problem is an :class:`~.errors.InvalidOption` (422) naming the field."""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field

import numpy as np

from ..request_errors import InvalidOption

#: Option names of POST /v1/colorize (query parameters or the JSON ``options`` part).
V1_OPTIONS = ("boxes", "scores", "detect", "hints", "size", "format", "quality")
FORMATS = {"png": "png", "jpeg": "jpg", "jpg": "jpg", "webp": "webp"}
MEDIA_TYPES = {"png": "image/png", "jpg": "image/jpeg", "webp": "image/webp"}


@dataclass
class ColorizeOptions:
    boxes: np.ndarray | None = None     # (N, 4) float64; None = detector (when detect) or none
    scores: np.ndarray | None = None
    detect: bool = False
    hints: list = field(default_factory=list)
    size: int | None = None             # None = the model's default size
    format: str = "png"                 # png | jpg | webp
    quality: int | None = None


def parse_options(raw: dict, *, has_detector: bool, allowed=V1_OPTIONS) -> ColorizeOptions:
    """``raw``: option name -> value: JSON values, or the query-string form (text; boxes, scores
    and hints as JSON text). ``has_detector``: the server's detector, the default of ``detect``."""
    unknown = [k for k in raw if k not in allowed]
    if unknown:
        raise InvalidOption(unknown[0], f"unknown option; the options are {', '.join(allowed)}")
    out = ColorizeOptions(detect=has_detector)
    if "boxes" in raw and raw["boxes"] is not None:
        out.boxes = _boxes(_json(raw["boxes"], "boxes"))
    if "scores" in raw and raw["scores"] is not None:
        scores = _json(raw["scores"], "scores")
        out.scores = _numbers(scores, "scores")
        if out.boxes is None:
            raise InvalidOption("scores", "scores need boxes")
        if len(out.scores) != len(out.boxes):
            raise InvalidOption("scores", f"{len(out.scores)} scores for {len(out.boxes)} boxes")
    if "detect" in raw and raw["detect"] is not None:
        detect = _bool(raw["detect"], "detect")
        if detect and not has_detector:
            raise InvalidOption("detect", "this server has no detector (start it with --detector MODEL.onnx); "
                                          "give boxes instead")
        if detect and out.boxes is not None:
            raise InvalidOption("detect", "give either boxes or detect=true, not both")
        out.detect = detect
    if out.boxes is not None:
        out.detect = False
    if "hints" in raw and raw["hints"] is not None:
        out.hints = _hints(_json(raw["hints"], "hints"))
    if "size" in raw and raw["size"] is not None:
        from ..prepare import check_size

        size = _int(raw["size"], "size")
        try:
            out.size = check_size(size)
        except ValueError as e:
            raise InvalidOption("size", str(e)) from None
    if "format" in raw and raw["format"] is not None:
        fmt = str(raw["format"]).strip().lower()
        if fmt not in FORMATS:
            raise InvalidOption("format", f"expected png, jpeg or webp, got {raw['format']!r}")
        out.format = FORMATS[fmt]
    if "quality" in raw and raw["quality"] is not None:
        q = _int(raw["quality"], "quality")
        if not 1 <= q <= 100:
            raise InvalidOption("quality", f"expected a whole number 1..100, got {q}")
        out.quality = q
    return out


def _json(text, name):
    if not isinstance(text, str):
        return text
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise InvalidOption(name, f"not valid JSON ({e.msg} at character {e.pos})") from None
    except (ValueError, RecursionError) as e:
        raise InvalidOption(name, f"not valid JSON ({type(e).__name__})") from None


def _finite(v, name) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise InvalidOption(name, f"expected a finite number, got {v!r}")
    return float(v)


def _numbers(v, name) -> np.ndarray:
    if not isinstance(v, (list, tuple)):
        raise InvalidOption(name, f"expected a list of numbers, got {type(v).__name__}")
    return np.array([_finite(x, f"{name}[{i}]") for i, x in enumerate(v)], np.float64)


def _boxes(v) -> np.ndarray:
    if isinstance(v, np.ndarray):
        v = v.tolist()
    if not isinstance(v, (list, tuple)):
        raise InvalidOption("boxes", f"expected a list of [x0, y0, x1, y1], got {type(v).__name__}")
    rows = []
    for i, b in enumerate(v):
        if not isinstance(b, (list, tuple)) or len(b) != 4:
            raise InvalidOption(f"boxes[{i}]", f"expected [x0, y0, x1, y1], got {b!r}")
        rows.append([_finite(x, f"boxes[{i}]") for x in b])
    return np.array(rows, np.float64).reshape(-1, 4)


def _bool(v, name) -> bool:
    if isinstance(v, bool):
        return v
    if isinstance(v, str) and v.strip().lower() in ("1", "true", "yes", "on"):
        return True
    if isinstance(v, str) and v.strip().lower() in ("0", "false", "no", "off"):
        return False
    raise InvalidOption(name, f"expected true or false, got {v!r}")


def _int(v, name) -> int:
    if isinstance(v, str):
        try:
            return int(v.strip())
        except ValueError:
            raise InvalidOption(name, f"expected a whole number, got {v!r}") from None
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
        if isinstance(v, float) and v.is_integer():
            return int(v)
        raise InvalidOption(name, f"expected a whole number, got {v!r}")
    return int(v)


def _hints(v) -> list:
    from ..hintset import HintFieldError, parse_hints

    try:
        return list(parse_hints(v))
    except HintFieldError as e:
        raise InvalidOption(e.field, e.detail) from None

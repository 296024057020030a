"""Hint sets: what the editor saves and loads, in the format the API and the CLI already accept.

A hint set is UTF-8 JSON::

    {"hints": [{"x": 120, "y": 80, "rgb": "#3366cc", "size": 3}, ...],
     "global": {"histogram": [529 numbers], "saturation": 0.4}}

* ``hints``: the list that ``POST /v1/colorize`` takes as its ``hints`` option, and the entries
  of an ``instcolor video --hints`` file (x, y in input pixels; ``rgb`` "#RRGGBB" or ``ab``
  [a*, b*]; ``size`` the patch side at processing resolution, default 1).
* ``global`` (optional): :meth:`instcolor.global_hints.GlobalHints.to_json` (either key may be
  absent). Without global hints the file is exactly the video hints-file object.
* A bare list of hints is accepted as well.

Nothing here imports the web stack; every problem is a ValueError naming the field.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field

from .global_hints import GlobalHints

MAX_HINTS = 1024
_HEX = re.compile(r"#?([0-9a-fA-F]{6})")


@dataclass(frozen=True)
class EditState:
    """What one colorization of an open image depends on: ``hints`` (instcolor.Hint tuple),
    ``global_hints`` (GlobalHints or None) and ``exclude`` (sorted box indices left out)."""

    hints: tuple = ()
    global_hints: GlobalHints | None = None
    exclude: tuple[int, ...] = field(default_factory=tuple)

    def key(self) -> str:
        """A canonical text of the state (equal states -> equal keys): the result cache's key."""
        g = None if self.global_hints is None else self.global_hints.to_json()
        return json.dumps({"hints": [hint_to_json(h) for h in self.hints], "global": g,
                           "exclude": list(self.exclude)}, sort_keys=True, separators=(",", ":"))


def hint_to_json(hint) -> dict:
    """instcolor.Hint -> {"x", "y", "rgb": "#rrggbb" | "ab": [a, b], "size"}."""
    out = {"x": _num(hint.x), "y": _num(hint.y)}
    if hint.rgb is not None:
        out["rgb"] = "#" + "".join(f"{int(c):02x}" for c in hint.rgb)
    else:
        out["ab"] = [float(hint.ab[0]), float(hint.ab[1])]
    out["size"] = int(hint.size)
    return out


def _num(v: float):
    v = float(v)
    return int(v) if v.is_integer() else v


class HintFieldError(ValueError):
    """A hint-set field that does not fit: ``field`` names it (``hints[2].rgb``), ``detail`` says why."""

    def __init__(self, field: str, detail: str):
        super().__init__(f"{field}: {detail}")
        self.field, self.detail = field, detail


def _finite(v, name) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise HintFieldError(name, f"expected a finite number, got {v!r}")
    return float(v)


def _whole(v, name) -> int:
    if isinstance(v, str):
        try:
            return int(v.strip())
        except ValueError:
            raise HintFieldError(name, f"expected a whole number, got {v!r}") from None
    if isinstance(v, float) and v.is_integer():
        return int(v)
    if isinstance(v, bool) or not isinstance(v, int):
        raise HintFieldError(name, f"expected a whole number, got {v!r}")
    return int(v)


def hint_from_json(h, name: str = "hint"):
    """One hint object ``{x, y, rgb: "#rrggbb" | ab: [a, b], size}`` -> :class:`instcolor.Hint`."""
    from .prepare import Hint

    if not isinstance(h, dict):
        raise HintFieldError(name, f"expected an object {{x, y, rgb | ab, size}}, got {h!r}")
    extra = sorted(set(h) - {"x", "y", "rgb", "ab", "size"})
    if extra:
        raise HintFieldError(f"{name}.{extra[0]}", "unknown key; a hint has x, y, rgb or ab, size")
    for k in ("x", "y"):
        if k not in h:
            raise HintFieldError(f"{name}.{k}", "missing")
    x, y = _finite(h["x"], f"{name}.x"), _finite(h["y"], f"{name}.y")
    size = _whole(h.get("size", 1), f"{name}.size")
    if not 1 <= size <= 2048:
        raise HintFieldError(f"{name}.size", f"expected a patch size 1..2048, got {size}")
    if ("rgb" in h) == ("ab" in h):
        raise HintFieldError(name, "give exactly one of rgb (\"#rrggbb\") or ab ([a, b])")
    if "rgb" in h:
        m = _HEX.fullmatch(h["rgb"]) if isinstance(h["rgb"], str) else None
        if not m:
            raise HintFieldError(f"{name}.rgb", f"expected \"#rrggbb\", got {h['rgb']!r}")
        return Hint(x, y, rgb=tuple(int(m.group(1)[j:j + 2], 16) for j in (0, 2, 4)), size=size)
    ab = h["ab"]
    if not isinstance(ab, (list, tuple)) or len(ab) != 2:
        raise HintFieldError(f"{name}.ab", f"expected [a, b], got {ab!r}")
    a, b = (_finite(c, f"{name}.ab") for c in ab)
    if abs(a) > 128 or abs(b) > 128:
        raise HintFieldError(f"{name}.ab", f"expected Lab a, b within [-128, 128], got [{a:g}, {b:g}]")
    return Hint(x, y, ab=(a, b), size=size)


def parse_hints(value) -> tuple:
    """A list of hint objects -> tuple of instcolor.Hint (what the HTTP API, the editor and
    ``instcolor colorize --hints FILE`` accept); :class:`HintFieldError` naming the entry."""
    if not isinstance(value, (list, tuple)):
        raise HintFieldError("hints", f"expected a list of {{x, y, rgb | ab, size}}, got {type(value).__name__}")
    if len(value) > MAX_HINTS:
        raise HintFieldError("hints", f"{len(value)} hints, more than {MAX_HINTS}")
    return tuple(hint_from_json(h, f"hints[{i}]") for i, h in enumerate(value))


def parse_global(value, name: str = "global") -> GlobalHints | None:
    """None / {} -> None; {"histogram": [...], "saturation": s} -> GlobalHints."""
    if value is None:
        return None
    g = GlobalHints.from_json(value, name=name)
    return None if g.empty else g


def parse_exclude(value, n_boxes: int | None = None, name: str = "exclude") -> tuple[int, ...]:
    """A list of box indices -> sorted unique tuple; ValueError when one is not an index."""
    if value is None:
        return ()
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"{name}: expected a list of box indices, got {type(value).__name__}")
    out = set()
    for i, v in enumerate(value):
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ValueError(f"{name}[{i}]: expected a box index >= 0, got {v!r}")
        if n_boxes is not None and v >= n_boxes:
            raise ValueError(f"{name}[{i}]: box {v} does not exist (the image has {n_boxes} box(es))")
        out.add(v)
    return tuple(sorted(out))


def parse_hint_set(obj, name: str = "hint set") -> tuple[tuple, GlobalHints | None]:
    """A decoded hint-set file (object or bare list) -> (hints, global hints or None)."""
    if isinstance(obj, list):
        return parse_hints(obj), None
    if not isinstance(obj, dict):
        raise ValueError(f"{name}: expected {{\"hints\": [...], \"global\": {{...}}}} or a list of hints, "
                         f"got {type(obj).__name__}")
    unknown = sorted(set(obj) - {"hints", "global"})
    if unknown:
        raise ValueError(f"{name}: unknown key(s) {', '.join(map(repr, unknown))} (allowed: 'hints', 'global')")
    return parse_hints(obj.get("hints", [])), parse_global(obj.get("global"))


def hint_set_to_json(hints, global_hints: GlobalHints | None = None) -> dict:
    """The file form of a hint set (``global`` only when there are global hints)."""
    out: dict = {"hints": [hint_to_json(h) for h in hints]}
    if global_hints is not None and not global_hints.empty:
        out["global"] = global_hints.to_json()
    return out


def load_hint_set(path) -> tuple[tuple, GlobalHints | None]:
    """Read a hint-set file; ValueError naming the file."""
    from pathlib import Path

    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{path}: hint set not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: cannot read the hint set: {e}") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    try:
        return parse_hint_set(data)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None


__all__ = ["EditState", "HintFieldError", "hint_from_json", "hint_set_to_json", "hint_to_json", "load_hint_set", "parse_exclude", "parse_global",
           "parse_hint_set", "parse_hints"]

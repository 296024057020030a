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
from dataclasses import dataclass, field

from ..global_hints import GlobalHints

MAX_HINTS = 1024


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


def parse_hints(value) -> tuple:
    """A list of hint objects -> tuple of instcolor.Hint (the API's parser: same fields, same
    messages); ValueError naming the entry."""
    from ..serve.errors import InvalidOption
    from ..serve.options import _hints

    if isinstance(value, (list, tuple)) and len(value) > MAX_HINTS:
        raise ValueError(f"hints: {len(value)} hints, more than {MAX_HINTS}")
    try:
        return tuple(_hints(value))
    except InvalidOption as e:
        raise ValueError(e.message) from None


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


__all__ = ["EditState", "hint_set_to_json", "hint_to_json", "load_hint_set", "parse_exclude", "parse_global",
           "parse_hint_set", "parse_hints"]

"""Colour hints on a video: a JSON file of hints, each for a range of frames, optionally tracked.

File format (UTF-8 JSON; either this object or just the list)::

    {"hints": [
      {"x": 120, "y": 80, "rgb": "#3366cc", "size": 3, "frames": [0, 49]},
      {"x": 300, "y": 200, "ab": [20, -35], "frames": [10, null], "track": true}
    ]}

* ``x``, ``y``: the point in frame pixels as the video is shown (after its rotation), on frame
  ``frames[0]``.
* ``rgb`` ("#RRGGBB" or [r, g, b], 0..255) or ``ab`` ([a*, b*] in CIE Lab units): exactly one.
* ``size``: side of the square patch at processing resolution (default 1), as ``--hint`` for images.
* ``frames``: [first, last], frame indices from 0, both included; ``last`` null = to the end.
  Default: every frame.
* ``track``: false (default) = the hint stays at (x, y); true = from its first frame on, the point
  moves with the optical flow of the grey input (so it stays on the object it was put on). At a
  scene cut a tracked hint stops moving and keeps its last position.

Unknown keys are refused (a typo would otherwise silently do nothing).
"""
from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ..prepare import Hint
from .flow import sample_flow
from .options import VideoError

_KEYS = {"x", "y", "rgb", "ab", "size", "frames", "track"}
MAX_HINTS_FILE_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class VideoHint:
    """A :class:`instcolor.Hint` for frames ``first``..``last`` (inclusive; ``last`` None = to the end),
    moving with the flow when ``track``."""

    hint: Hint
    first: int = 0
    last: int | None = None
    track: bool = False

    def __post_init__(self):
        if not isinstance(self.hint, Hint):
            raise TypeError(f"VideoHint.hint must be an instcolor.Hint, got {type(self.hint).__name__}")
        if self.first < 0 or (self.last is not None and self.last < self.first):
            raise ValueError(f"VideoHint frames must satisfy 0 <= first <= last, got [{self.first}, {self.last}]")

    def active(self, index: int) -> bool:
        return index >= self.first and (self.last is None or index <= self.last)


def _number(v, what) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise ValueError(f"{what} must be a finite number, got {v!r}")
    return float(v)


def _frame_index(v, what, allow_none=False):
    if v is None and allow_none:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise ValueError(f"{what} must be a frame index >= 0{' or null' if allow_none else ''}, got {v!r}")
    return v


def parse_hint(entry, where: str = "hint") -> VideoHint:
    """One hints-file entry (a dict) -> VideoHint; ValueError naming ``where`` and the field."""
    if not isinstance(entry, dict):
        raise ValueError(f"{where}: expected an object with x, y and rgb or ab, got {type(entry).__name__}")
    unknown = set(entry) - _KEYS
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(sorted(map(str, unknown)))} "
                         f"(allowed: {', '.join(sorted(_KEYS))})")
    for key in ("x", "y"):
        if key not in entry:
            raise ValueError(f"{where}: '{key}' is missing")
    x, y = _number(entry["x"], f"{where}: x"), _number(entry["y"], f"{where}: y")
    if x < 0 or y < 0:
        raise ValueError(f"{where}: x and y must be >= 0, got ({x}, {y})")
    if ("rgb" in entry) == ("ab" in entry):
        raise ValueError(f"{where}: give exactly one of 'rgb' ('#RRGGBB' or [r, g, b]) or 'ab' ([a, b])")
    rgb = ab = None
    if "rgb" in entry:
        v = entry["rgb"]
        if isinstance(v, str):
            m = re.fullmatch(r"#?([0-9a-fA-F]{6})", v.strip())
            if not m:
                raise ValueError(f"{where}: rgb must be '#RRGGBB', got {v!r}")
            rgb = tuple(int(m.group(1)[i:i + 2], 16) for i in (0, 2, 4))
        elif isinstance(v, list) and len(v) == 3 and all(isinstance(c, int) and not isinstance(c, bool)
                                                         and 0 <= c <= 255 for c in v):
            rgb = tuple(v)
        else:
            raise ValueError(f"{where}: rgb must be '#RRGGBB' or three integers 0..255, got {v!r}")
    else:
        v = entry["ab"]
        if not (isinstance(v, list) and len(v) == 2):
            raise ValueError(f"{where}: ab must be [a, b], got {v!r}")
        ab = (_number(v[0], f"{where}: ab[0]"), _number(v[1], f"{where}: ab[1]"))
    size = entry.get("size", 1)
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= 64:
        raise ValueError(f"{where}: size must be an integer in 1..64, got {size!r}")
    frames = entry.get("frames", [0, None])
    if not (isinstance(frames, list) and len(frames) == 2):
        raise ValueError(f"{where}: frames must be [first, last] (last may be null), got {frames!r}")
    first = _frame_index(frames[0], f"{where}: frames[0]")
    last = _frame_index(frames[1], f"{where}: frames[1]", allow_none=True)
    if last is not None and last < first:
        raise ValueError(f"{where}: frames [{first}, {last}]: last is before first")
    track = entry.get("track", False)
    if not isinstance(track, bool):
        raise ValueError(f"{where}: track must be true or false, got {track!r}")
    return VideoHint(Hint(x, y, rgb=rgb, ab=ab, size=size), first, last, track)


def load_hints(path: str | os.PathLike) -> list[VideoHint]:
    """Read a hints file (see the module docstring); VideoError naming the file and the entry."""
    path = Path(path)
    try:
        if path.stat().st_size > MAX_HINTS_FILE_BYTES:
            raise VideoError(f"{path}: hints file larger than {MAX_HINTS_FILE_BYTES // (1024 * 1024)} MiB")
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise VideoError(f"{path}: hints file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise VideoError(f"{path}: cannot read the hints file: {e}") from None
    except ValueError as e:
        raise VideoError(f"{path}: not valid JSON: {e}") from None
    if isinstance(data, dict):
        if set(data) != {"hints"}:
            raise VideoError(f"{path}: expected {{\"hints\": [...]}} or a list of hints, got keys {sorted(data)}")
        data = data["hints"]
    if not isinstance(data, list):
        raise VideoError(f"{path}: expected a list of hints, got {type(data).__name__}")
    out = []
    for i, entry in enumerate(data):
        try:
            out.append(parse_hint(entry, where=f"hint {i}"))
        except ValueError as e:
            raise VideoError(f"{path}: {e}") from None
    return out


class HintSchedule:
    """The hints of each frame, in frame order (one per video; not thread-safe).

    ``at(index, frame_hw, flow)``: the :class:`Hint` list for frame ``index``; ``flow`` is the
    processing-resolution flow from the previous frame to this one (None at the first frame and after a
    scene cut), which moves the tracked hints."""

    def __init__(self, hints: Sequence[VideoHint] = (), name: str = "hints"):
        self.hints = list(hints)
        for h in self.hints:
            if not isinstance(h, VideoHint):
                raise TypeError(f"{name}: expected VideoHint entries, got {type(h).__name__}")
        self.name = name
        self._pos: dict[int, tuple[float, float]] = {}

    @property
    def needs_flow(self) -> bool:
        return any(h.track for h in self.hints)

    def at(self, index: int, frame_hw: tuple[int, int], flow=None) -> list[Hint]:
        H, W = frame_hw
        out = []
        for i, vh in enumerate(self.hints):
            if vh.track and i in self._pos and flow is not None and vh.active(index) and index > vh.first:
                x, y = self._pos[i]
                gh, gw = flow.shape[:2]
                sx, sy = gw / W, gh / H
                dx, dy = sample_flow(flow, x * sx - 0.5 + 0.5 * sx, y * sy - 0.5 + 0.5 * sy)
                self._pos[i] = (min(max(x + dx / sx, 0.0), W - 1e-3), min(max(y + dy / sy, 0.0), H - 1e-3))
            if not vh.active(index):
                if vh.last is not None and index > vh.last:
                    self._pos.pop(i, None)
                continue
            if index == vh.first or i not in self._pos:
                if not (vh.hint.x < W and vh.hint.y < H):
                    raise VideoError(f"{self.name}: hint {i} at ({vh.hint.x:g}, {vh.hint.y:g}) lies outside the "
                                     f"{W}x{H} frame")
                self._pos[i] = (vh.hint.x, vh.hint.y)
            x, y = self._pos[i] if vh.track else (vh.hint.x, vh.hint.y)
            h = vh.hint
            out.append(Hint(x, y, rgb=h.rgb, ab=h.ab, size=h.size))
        return out

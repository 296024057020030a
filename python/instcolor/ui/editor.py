"""The editor's core: open images as edit sessions, colorize them with hints (the newest edit
wins), colour suggestions, gamut pictures and full-resolution results.

Plain Python (threads and numpy, no web stack): the HTTP routes of :mod:`instcolor.serve.editor`
call it, and tests can too. The heavy calls (:meth:`Editor.open`, :meth:`Editor.preview`,
:meth:`Editor.full`, :meth:`Editor.suggest`) run the nets and belong on the model's thread.

Per opened image an :class:`EditSession` keeps the colorizer's edit session
(``colorizer.open_session``: the detector's boxes and the instance net's features are computed
once, so an edit re-runs only the full-image and fusion nets), a preview-size copy of the input and
the ab of the last few states, so undo, redo and the download need no new model run. Sessions live
in a :class:`SessionStore` bounded by count and bytes, least recently used evicted first.

"The newest edit wins": every preview request takes a number from its session
(:meth:`EditSession.begin`). A request that is no longer the newest when the model thread reaches
it, or when its result is ready, raises :class:`Superseded` (HTTP 409) instead of answering.
"""
from __future__ import annotations

import inspect
import itertools
import math
import secrets
import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from ..request_errors import InvalidOption, ServeError
from ..hintset import EditState

AB_RANGE = 110.0  # the gamut picture spans a*, b* in [-AB_RANGE, AB_RANGE]


# ----------------------------------------------------------------------------- errors
class SessionNotFound(ServeError):
    status = 404


class SessionEvicted(ServeError):
    """The session was closed to make room (least recently used); the client must open the image again."""

    status = 410


class Superseded(ServeError):
    """A newer edit of the same session arrived; this request's result is not wanted any more."""

    status = 409

    def body(self) -> dict:
        return {"status": "superseded", "error": self.message}


class NotSupported(ServeError):
    status = 501


# ----------------------------------------------------------------------------- settings
@dataclass(frozen=True)
class EditorSettings:
    """``max_sessions`` open images kept (least recently used closed first), ``max_mb`` their
    memory in MiB (inputs, previews, cached features and results), ``preview_side`` the longest
    side of the preview pictures in pixels, ``results_per_session`` the states whose result is
    kept per image (undo/redo and the download reuse them)."""

    max_sessions: int = 16
    max_mb: float = 2048.0
    preview_side: int = 768
    results_per_session: int = 8

    def __post_init__(self):
        for name, lo in (("max_sessions", 1), ("preview_side", 16), ("results_per_session", 1)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ValueError(f"{name}: expected a whole number >= {lo}, got {v!r}")
        v = self.max_mb
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
            raise ValueError(f"max_mb: expected a finite number > 0, got {v!r}")

    @property
    def max_bytes(self) -> int:
        return int(self.max_mb * 1024 * 1024)


# ----------------------------------------------------------------------------- colorizer sessions
def _accepts(fn, name: str) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


class BatchSession:
    """The edit-session interface over ``colorizer.colorize_batch`` for colorizers without
    ``open_session`` (the ONNX Runtime and TensorRT backends, wrappers): the boxes are detected
    once, every edit runs all three nets."""

    def __init__(self, colorizer, image: np.ndarray, boxes=None, scores=None, size: int | None = None):
        from .. import prepare as _prepare
        from ..colorizer import _selected_extras

        self.colorizer = colorizer
        self.image = image
        self.size = size
        labels = None
        if boxes is None:
            detector = getattr(colorizer, "detector", None)
            if detector is not None:
                det = detector(image)
                boxes, scores, labels = det.boxes, det.scores, det.labels
            else:
                boxes = np.zeros((0, 4), np.float32)
        self.boxes = _prepare.select_boxes(boxes, scores, image.shape[:2], name="boxes")
        self.scores, self.labels = _selected_extras(boxes, scores, labels)
        self._global_ok = _accepts(colorizer.colorize_batch, "global_hints")

    @property
    def nbytes(self) -> int:
        return 0

    def _kept(self, exclude) -> np.ndarray:
        keep = np.ones(len(self.boxes), bool)
        keep[list(exclude)] = False
        return self.boxes[keep]

    def colorize(self, hints=(), global_hints=None, exclude=(), **_):
        kwargs = {}
        if global_hints is not None and not global_hints.empty:
            if not self._global_ok:
                raise NotSupported("this model's colorizer does not take global hints")
            kwargs["global_hints"] = [global_hints]
        # scores=None: the boxes are already selected and ordered (select_boxes keeps that order)
        return self.colorizer.colorize_batch([self.image], [self._kept(exclude)], [None], [list(hints)],
                                             size=self.size, **kwargs)[0]

    def infer_ab(self, hints=(), global_hints=None, exclude=(), **_):
        """``colorize(...).ab``: a batch colorizer has no cheaper way to the ab alone."""
        return self.colorize(hints=hints, global_hints=global_hints, exclude=exclude).ab

    def suggest_colors(self, x, y, k=8, hints=(), global_hints=None, exclude=()):
        fn = getattr(self.colorizer, "suggest_colors", None)
        if fn is None:
            raise NotSupported("this model's colorizer gives no colour suggestions")
        return fn(self.image, x, y, k=k, size=self.size, boxes=self._kept(exclude))


def open_colorizer_session(colorizer, image, boxes=None, scores=None, size=None):
    """``colorizer.open_session`` when it has one (cached instance features), else a BatchSession."""
    opener = getattr(colorizer, "open_session", None)
    if opener is not None:
        return opener(image, boxes=boxes, scores=scores, size=size)
    return BatchSession(colorizer, image, boxes=boxes, scores=scores, size=size)


def array_bytes(obj, skip=(), depth: int = 4) -> int:
    """Bytes of the numpy arrays and torch tensors that ``obj`` holds (attributes, dataclass fields,
    lists, tuples, dicts; ``depth`` levels), each counted once: what an edit session keeps. Shared
    objects are not walked: torch modules, colorizers (``colorize_batch``) and backends (``run``)."""
    import sys

    seen = {id(x) for x in skip}
    total = 0

    def walk(x, d):
        nonlocal total
        if id(x) in seen or d < 0 or x is None or isinstance(x, (str, bytes, int, float, bool)):
            return
        seen.add(id(x))
        if isinstance(x, np.ndarray):
            total += x.nbytes
            return
        if isinstance(getattr(type(x), "nbytes", None), property):  # objects that count their own arrays
            total += int(x.nbytes)
            return
        torch = sys.modules.get("torch")  # (never imported here: while it is not, no object is a tensor)
        if torch is not None and isinstance(x, torch.Tensor):
            total += x.numel() * x.element_size()
            return
        if torch is not None and isinstance(x, torch.nn.Module):
            return
        if isinstance(x, (list, tuple, set, frozenset)):
            for v in x:
                walk(v, d - 1)
            return
        if isinstance(x, dict):
            for v in x.values():
                walk(v, d - 1)
            return
        if hasattr(x, "colorize_batch") or callable(getattr(x, "run", None)):
            return
        attrs = getattr(x, "__dict__", None)
        if attrs is None and hasattr(x, "__slots__"):
            attrs = {k: getattr(x, k, None) for k in x.__slots__}
        for v in (attrs or {}).values():
            walk(v, d - 1)

    walk(obj, depth)
    return total


# ----------------------------------------------------------------------------- edit sessions
def preview_shape(h: int, w: int, side: int) -> tuple[int, int]:
    """(height, width) of the preview: the longest side at most ``side``, aspect kept."""
    scale = min(1.0, side / max(h, w))
    return max(1, round(h * scale)), max(1, round(w * scale))


def resize_rgb(rgb: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    if rgb.shape[:2] == tuple(hw):
        return rgb
    return np.array(Image.fromarray(rgb).resize((hw[1], hw[0]), Image.Resampling.LANCZOS))


def grey_of(rgb: np.ndarray) -> np.ndarray:
    """The network's view of ``rgb``: its CIE L* shown as neutral grey (R = G = B, the sRGB grey of
    that lightness), (H, W, 3) uint8. The page reads L* back from it."""
    from ..color import lab_of_uint8  # (the numpy twin: no PyTorch)

    L = lab_of_uint8(rgb)[0, 0].astype(np.float64) * 100.0 + 50.0  # (H, W) in 0..100
    fy = (L + 16.0) / 116.0
    Y = np.where(fy > 0.2068966, fy ** 3, (fy - 16.0 / 116.0) / 7.787)
    v = np.where(Y > 0.0031308, 1.055 * np.clip(Y, 0, None) ** (1 / 2.4) - 0.055, 12.92 * Y)
    g = np.round(np.clip(v, 0.0, 1.0) * 255.0).astype(np.uint8)
    return np.repeat(g[..., None], 3, axis=2)


class EditSession:
    """One opened image: the colorizer's session, the preview-size input, recent results, a lock
    and the edit counter."""

    def __init__(self, sid: str, image: np.ndarray, inner, size: int, settings: EditorSettings, ops=None):
        self.id = sid
        self.image = image
        self.inner = inner
        self.size = size
        self.ops = ops
        self.preview_hw = preview_shape(*image.shape[:2], settings.preview_side)
        self.preview_input = resize_rgb(image, self.preview_hw)
        self.grey_preview = grey_of(self.preview_input)
        self.lock = threading.Lock()  # one model run of this session at a time
        self._counter = itertools.count(1)
        self._counter_lock = threading.Lock()
        self._newest = 0
        self._results: OrderedDict[str, np.ndarray] = OrderedDict()
        self._max_results = settings.results_per_session
        self.runs = 0  # model runs (cache misses), for tests and logs

    # -------------------------------------------------------------- facts
    @property
    def boxes(self) -> np.ndarray:
        return np.asarray(self.inner.boxes, np.float64).reshape(-1, 4)

    @property
    def scores(self):
        return getattr(self.inner, "scores", None)

    @property
    def labels(self):
        return getattr(self.inner, "labels", None)

    @property
    def nbytes(self) -> int:
        inner = getattr(self.inner, "nbytes", None)
        if inner is None:
            inner = array_bytes(self.inner, skip=(self.image,))
        return int(self.image.nbytes + self.preview_input.nbytes + self.grey_preview.nbytes
                   + sum(a.nbytes for a in self._results.values()) + int(inner))

    def describe(self) -> dict:
        from ..detect.coco import COCO_CLASSES

        boxes = self.boxes
        scores = self.scores
        labels = self.labels
        inst = []
        for i, b in enumerate(boxes):
            label = None if labels is None else int(labels[i])
            inst.append({"index": i, "box": [round(float(v), 2) for v in b],
                         "score": None if scores is None else round(float(scores[i]), 4),
                         "label": label,
                         "name": COCO_CLASSES[label] if label is not None and 0 <= label < len(COCO_CLASSES) else None})
        h, w = self.image.shape[:2]
        return {"session": self.id, "width": w, "height": h, "size": self.size,
                "preview": {"width": self.preview_hw[1], "height": self.preview_hw[0]}, "instances": inst}

    # -------------------------------------------------------------- newest edit wins
    def begin(self) -> int:
        """A number for a new preview request; it makes every older request superseded."""
        with self._counter_lock:
            n = next(self._counter)
            self._newest = n
            return n

    def is_newest(self, n: int) -> bool:
        return self._newest == n

    def check_newest(self, n: int) -> None:
        if self._newest != n:
            raise Superseded(f"edit {n} of session {self.id} was superseded by edit {self._newest}")

    # -------------------------------------------------------------- results
    def check_state(self, state: EditState) -> None:
        h, w = self.image.shape[:2]
        for i, hint in enumerate(state.hints):
            if not (0 <= hint.x < w and 0 <= hint.y < h):
                raise InvalidOption(f"hints[{i}]", f"({hint.x:g}, {hint.y:g}) lies outside the {w}x{h} image")
        n = len(self.boxes)
        bad = [i for i in state.exclude if i >= n]
        if bad:
            raise InvalidOption("exclude", f"box {bad[0]} does not exist (the image has {n} box(es))")

    def ab(self, state: EditState) -> np.ndarray:
        """The predicted ab (2, S, S) for ``state``: from the recent results, or a model run.
        Call with :attr:`lock` held (the model thread)."""
        key = state.key()
        hit = self._results.get(key)
        if hit is not None:
            self._results.move_to_end(key)
            return hit
        try:
            ab = self.inner.infer_ab(hints=list(state.hints), global_hints=state.global_hints,
                                     exclude=list(state.exclude))
        except ServeError:
            raise
        except (ValueError, TypeError) as e:  # inputs the model refuses (e.g. hints it cannot place)
            msg = str(e)
            field = "global" if msg.startswith("global") else "exclude" if msg.startswith("exclude") else "hints"
            raise InvalidOption(field, msg) from None
        self.runs += 1
        ab = np.ascontiguousarray(ab, np.float32)
        self._results[key] = ab
        while len(self._results) > self._max_results:
            self._results.popitem(last=False)
        return ab

    def compose(self, image: np.ndarray, ab: np.ndarray) -> np.ndarray:
        """``image``'s lightness with ``ab`` upsampled to its size (the colorizer's step 5)."""
        if self.ops is not None:
            return self.ops.compose(np.ascontiguousarray(image), np.ascontiguousarray(ab, np.float32))
        from ..compose import compose_reference

        return compose_reference(image, ab)


# ----------------------------------------------------------------------------- store
class SessionStore:
    """Open sessions by id, bounded by ``max_sessions`` and ``max_bytes`` (least recently used
    closed first; the newest is always kept). Remembers the ids it evicted (up to ``remember``) so
    that a request for one gets 410 and a clear message instead of 404. Thread-safe."""

    def __init__(self, max_sessions: int, max_bytes: int, remember: int = 4096):
        self.max_sessions = max_sessions
        self.max_bytes = max_bytes
        self._items: OrderedDict[str, EditSession] = OrderedDict()
        self._evicted: OrderedDict[str, str] = OrderedDict()
        self._remember = remember
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, sid) -> bool:
        return sid in self._items

    @property
    def nbytes(self) -> int:
        with self._lock:
            return sum(s.nbytes for s in self._items.values())

    def add(self, session: EditSession) -> list[str]:
        """Keep ``session`` (most recently used); -> the ids evicted to make room."""
        with self._lock:
            self._items[session.id] = session
            self._items.move_to_end(session.id)
            return self._shrink(keep=session.id)

    def get(self, sid: str) -> EditSession:
        with self._lock:
            session = self._items.get(sid)
            if session is not None:
                self._items.move_to_end(sid)
                return session
            why = self._evicted.get(sid)
        if why is not None:
            raise SessionEvicted(f"edit session {sid} was closed {why}; open the image again")
        raise SessionNotFound(f"no edit session {sid!r} (closed, or opened before the server restarted); "
                              f"open the image again")

    def refit(self, keep: str) -> list[str]:
        """Evict others after ``keep`` grew (new cached results); -> the ids evicted."""
        with self._lock:
            return self._shrink(keep=keep)

    def remove(self, sid: str) -> bool:
        with self._lock:
            gone = self._items.pop(sid, None) is not None
            if gone:
                self._forget(sid, "by its client")
            return gone

    def _forget(self, sid: str, why: str) -> None:
        self._evicted[sid] = why
        while len(self._evicted) > self._remember:
            self._evicted.popitem(last=False)

    def _shrink(self, keep: str) -> list[str]:
        evicted = []
        total = sum(s.nbytes for s in self._items.values())
        for sid in list(self._items):
            if len(self._items) <= self.max_sessions and total <= self.max_bytes:
                break
            if sid == keep:
                continue
            total -= self._items.pop(sid).nbytes
            reason = (f"to free memory (the server keeps at most {self.max_sessions} open images and "
                      f"{self.max_bytes / 2 ** 20:g} MiB for them; this one was the least recently used)")
            self._forget(sid, reason)
            evicted.append(sid)
        return evicted


# ----------------------------------------------------------------------------- the editor
class Editor:
    """The editor's operations over one colorizer. ``size``: the processing size (default: the
    colorizer's ``default_size``)."""

    def __init__(self, colorizer, settings: EditorSettings | None = None, size: int | None = None):
        from ..prepare import check_size

        self.colorizer = colorizer
        self.settings = settings or EditorSettings()
        self.size = check_size(size or int(getattr(colorizer, "default_size", 256)))
        self.ops = getattr(colorizer, "ops", None)
        self.store = SessionStore(self.settings.max_sessions, self.settings.max_bytes)

    def unsupported(self, global_hints: bool = False, suggestions: bool = False) -> str | None:
        """Why the colorizer cannot take global hints / give suggestions (None: it can)."""
        check = getattr(self.colorizer, "check_support", None)
        if check is not None:
            try:
                check(global_hints=global_hints, suggestions=suggestions)
            except ValueError as e:
                return str(e)
            return None
        if suggestions and not hasattr(self.colorizer, "suggest_colors") and not hasattr(self.colorizer, "open_session"):
            return "this model's colorizer gives no colour suggestions"
        if global_hints and not _accepts(self.colorizer.colorize_batch, "global_hints"):
            return "this model's colorizer does not take global hints"
        return None

    def capabilities(self) -> dict:
        """{"global_hints": None | why not, "suggestions": None | why not} for the page."""
        return {"global_hints": self.unsupported(global_hints=True),
                "suggestions": self.unsupported(suggestions=True)}

    def _check_state(self, state: EditState) -> None:
        if state.global_hints is not None:
            why = self.unsupported(global_hints=True)
            if why:
                raise NotSupported(why, field="global")

    # -------------------------------------------------------------- sessions
    def open(self, image: np.ndarray, size: int | None = None, boxes=None, scores=None) -> EditSession:
        """Open ``image`` (H, W, 3) uint8: detect (when the colorizer has a detector and no boxes
        are given), run the instance net once, keep the session. Model thread."""
        from ..prepare import check_size

        size = self.size if size is None else check_size(size)
        image = np.ascontiguousarray(image, np.uint8)
        try:
            inner = open_colorizer_session(self.colorizer, image, boxes=boxes, scores=scores, size=size)
        except (ValueError, TypeError) as e:  # boxes that do not fit the image, an unusable image
            raise InvalidOption("image", str(e)) from None
        session = EditSession(secrets.token_urlsafe(12), image, inner, size, self.settings, ops=self.ops)
        self.store.add(session)
        return session

    def get(self, sid: str) -> EditSession:
        return self.store.get(sid)

    def close(self, sid: str) -> bool:
        return self.store.remove(sid)

    # -------------------------------------------------------------- colorize
    def preview(self, session: EditSession, n: int, state: EditState) -> np.ndarray:
        """The preview (h, w, 3) uint8 of ``state`` for request number ``n`` (from
        :meth:`EditSession.begin`); Superseded when a newer request came first. Model thread."""
        self._check_state(state)
        session.check_newest(n)
        with session.lock:
            session.check_newest(n)  # a newer edit came while this one waited for the lock
            ab = session.ab(state)
        self.store.refit(session.id)
        session.check_newest(n)  # a newer edit came while this one ran: drop the result
        return session.compose(session.preview_input, ab)

    def full(self, session: EditSession, state: EditState) -> np.ndarray:
        """The full-resolution result (H, W, 3) uint8 of ``state`` (never superseded). Model thread."""
        with session.lock:
            ab = session.ab(state)
        self.store.refit(session.id)
        return session.compose(session.image, ab)

    def suggest(self, session: EditSession, x: float, y: float, k: int, state: EditState) -> list[dict]:
        """Colour suggestions at input pixel (x, y): [{"rgb": "#rrggbb", "p": probability}]."""
        h, w = session.image.shape[:2]
        if not (0 <= x < w and 0 <= y < h):
            raise InvalidOption("x", f"({x:g}, {y:g}) lies outside the {w}x{h} image")
        if not 1 <= k <= 64:
            raise InvalidOption("k", f"expected 1..64 suggestions, got {k}")
        self._check_state(state)
        why = self.unsupported(suggestions=True)
        fn = getattr(session.inner, "suggest_colors", None)
        if why or fn is None:
            raise NotSupported(why or "this model's colorizer gives no colour suggestions")
        with session.lock:
            found = fn(x, y, k=k, hints=list(state.hints), global_hints=state.global_hints,
                       exclude=list(state.exclude))
        out = []
        for rgb, p in found:
            r, g, b = (int(c) for c in rgb)
            out.append({"rgb": f"#{r:02x}{g:02x}{b:02x}", "p": round(float(p), 6)})
        return out

    @staticmethod
    def lightness(session: EditSession, x: float, y: float) -> float:
        """CIE L* (0..100) of the input at pixel (x, y)."""
        from ..color import lab_of_uint8  # (the numpy twin: no PyTorch)

        px = session.image[int(y), int(x)][None, None]
        return round(float(lab_of_uint8(px)[0, 0, 0, 0]) * 100.0 + 50.0, 3)

    # -------------------------------------------------------------- model-free helpers
    @staticmethod
    def reference(rgb: np.ndarray):
        """Global hints from a reference photo: its ab histogram (GlobalHints without saturation)."""
        from ..global_hints import GlobalHints

        return GlobalHints.from_image(rgb)


def gamut_picture(L: float, n: int = 128) -> np.ndarray:
    """An (n, n, 4) uint8 RGBA picture of the a*b* plane at lightness ``L`` (0..100) from
    :func:`instcolor.color.gamut`: column i is a* = -AB_RANGE + i * 2 AB_RANGE / (n - 1), row j is
    b* = +AB_RANGE - j * 2 AB_RANGE / (n - 1) (b* up); each pixel is the sRGB colour of
    (L, a*, b*), alpha 0 where sRGB cannot show it."""
    from .. import color as _color

    if isinstance(L, bool) or not isinstance(L, (int, float)) or not (math.isfinite(L) and 0 <= L <= 100):
        raise InvalidOption("L", f"expected a lightness in [0, 100], got {L!r}")
    if isinstance(n, bool) or not isinstance(n, int) or not 8 <= n <= 512:
        raise InvalidOption("n", f"expected a picture side 8..512, got {n!r}")
    mask, axis = _color.gamut(float(L), step=2 * AB_RANGE / (n - 1), ab_max=AB_RANGE)  # mask[i, j]: a = axis[i], b = axis[j]
    a, b = np.meshgrid(axis, axis[::-1])  # rows: b from +AB_RANGE down; columns: a
    rgb = _color.lab_to_rgb_uint8(float(L), np.stack([a.ravel(), b.ravel()], 1)).reshape(n, n, 3)
    out = np.zeros((n, n, 4), np.uint8)
    out[..., :3] = rgb
    out[..., 3] = np.where(mask[:, ::-1].T, 255, 0)
    return out


__all__ = ["AB_RANGE", "BatchSession", "EditSession", "Editor", "EditorSettings", "NotSupported", "SessionEvicted",
           "SessionNotFound", "SessionStore", "Superseded", "gamut_picture", "open_colorizer_session"]

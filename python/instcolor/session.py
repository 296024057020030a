"""Edit sessions: repeated colorizations of one image whose boxes stay and whose hints change.

Hints (local points and global hints) enter only the full-image / fusion net; the instance net sees
the box crops alone. An :class:`EditSession` therefore runs the detector, the preparation (resize,
Lab, crops, box grids) and the instance net once, keeps the instance net's 13 features and the fusion
net's 13 per-instance blend logits (``backend.run_instances``), and each :meth:`EditSession.colorize`
re-runs only the full-image net (no boxes left) or the fusion net on that cached state. The numbers
are those of an uncached :meth:`instcolor.Colorizer.colorize` with the same boxes and hints.

Excluding boxes: the instance net's numbers depend slightly (~1e-8) on how many crops run in one
batch (oneDNN picks its kernels by batch size), so selecting rows of the all-boxes state
(``InstanceState.select``) would differ from an uncached call with fewer boxes in the last bits. To
stay identical, a session runs the instance net once per distinct set of kept boxes and keeps the
last :data:`MAX_CACHED_STATES` such states (toggling a box back is free; hint edits never re-run it).

Memory: a cached state is the instance features of N <= 8 crops at size S (a few MB per crop at
S = 256 with the starter's width 0.25, 16x that at width 1.0); it lives as long as the session.

Thread-safety: a session is not safe for concurrent calls; callers that share one between threads
(the editor's server) hold one lock per session around ``colorize`` / ``suggest_colors``. Different
sessions of one Colorizer may run at once as far as its backend allows (the torch and ONNX Runtime
backends run concurrent calls; each session owns its cached state). Nothing here mutates the Colorizer.
"""
from __future__ import annotations

import dataclasses
import json
import os
from collections import OrderedDict
from typing import Sequence

import numpy as np

from . import prepare as _prepare
from .global_hints import GlobalHints
from .pipeline import ColorizeResult, compose_result, prepare_image

#: Instance states a session keeps (one per distinct set of kept boxes, least recently used dropped).
MAX_CACHED_STATES = 4


class EditSession:
    """Made by :meth:`instcolor.Colorizer.open_session`; see the module docstring.

    Attributes: ``image`` (H, W, 3) uint8 input; ``size`` S; ``boxes`` (N, 4) int64 the boxes used, in
    the order used (detector output after the official top-8 selection, or the given boxes); ``scores``
    (N,) float32 or None; ``labels`` (N,) int64 or None (detector classes); ``cached``: whether the
    instance state is cached (False when the backend has no ``run_instances``: every call then runs
    the instance net again, with the same results). Box indices (``exclude``) refer to ``boxes``.
    """

    def __init__(self, colorizer, image, boxes=None, scores=None, size: int | None = None):
        self.colorizer = colorizer
        self.size = _prepare.check_size(colorizer.default_size if size is None else size)
        name = str(image) if isinstance(image, (str, os.PathLike)) else "image"
        arr = _prepare.as_rgb_uint8(image, name=name)
        sel, self.scores, self.labels = colorizer._select(arr, boxes, scores, name)
        self._prepared = prepare_image(arr, sel, (), self.size, colorizer.ops)
        backend = colorizer.backend
        run_instances = getattr(backend, "run_instances", None)
        self.cached = run_instances is not None and getattr(backend, "run_heads", None) is not None
        self._states: OrderedDict[tuple[int, ...], object] = OrderedDict()   # kept boxes -> InstanceState
        self._logits = None  # (state key, class logits) of the last run that made them (see _state_key)
        if self.cached and len(sel):
            self._instances(np.arange(len(sel), dtype=np.int64))

    # ------------------------------------------------------------------ attributes
    @property
    def image(self) -> np.ndarray:
        return self._prepared.image

    @property
    def boxes(self) -> np.ndarray:
        return self._prepared.boxes

    def __len__(self) -> int:
        """Number of boxes."""
        return len(self._prepared.boxes)

    def __repr__(self) -> str:
        h, w = self.image.shape[:2]
        return f"EditSession({w}x{h} image, {len(self)} boxes, size {self.size}, cached={self.cached})"

    # ------------------------------------------------------------------ edits
    def colorize(self, hints: Sequence[_prepare.Hint] | _prepare.HintPlanes = (), global_hints: GlobalHints | None = None,
                 exclude: Sequence[int] = (), decode: str | None = None,
                 temperature: float | None = None) -> ColorizeResult:
        """The image colorized with ``hints`` / ``global_hints`` / ``decode`` / ``temperature`` (as in
        :meth:`instcolor.Colorizer.colorize`) and the session's boxes except the indices in
        ``exclude``. ``result.boxes`` / ``scores`` / ``labels`` are those of the boxes used."""
        ab, p, keep = self._ab(hints, global_hints, exclude, decode, temperature)
        return compose_result(p, ab, *self._extras(keep), ops=self.colorizer.ops)

    def infer_ab(self, hints: Sequence[_prepare.Hint] | _prepare.HintPlanes = (), global_hints: GlobalHints | None = None,
                 exclude: Sequence[int] = (), decode: str | None = None,
                 temperature: float | None = None) -> np.ndarray:
        """The predicted ab (2, S, S) float32 normalised (Lab ab / 110) of :meth:`colorize` with the same
        arguments, without composing the full-resolution picture (``colorize(...).ab`` equals it): for
        callers that compose at another size themselves (the editor's previews)."""
        return self._ab(hints, global_hints, exclude, decode, temperature)[0]

    def _ab(self, hints, global_hints, exclude, decode, temperature):
        c = self.colorizer
        decode, temperature = c._decoding(decode, temperature)
        p, keep = self._for(hints, global_hints, exclude)
        abs_, logits = c._infer([p], [global_hints], decode, temperature, instances=self._instances(keep))
        if logits is not None:  # distribution / mixed decoding: suggestions for this state come free
            self._logits = (self._state_key(p, global_hints, keep), logits[0])
        return abs_[0], p, keep

    def suggest_colors(self, x: float, y: float, k: int = 8, hints: Sequence[_prepare.Hint] | _prepare.HintPlanes = (),
                       global_hints: GlobalHints | None = None,
                       exclude: Sequence[int] = ()) -> list[tuple[tuple[int, int, int], float]]:
        """:meth:`instcolor.Colorizer.suggest_colors` at input pixel (x, y) for this image, with the
        session's boxes except ``exclude``."""
        from .colorizer import suggest_from_logits
        from .suggest import check_k

        k = check_k(k)
        c = self.colorizer
        p, keep = self._for(hints, global_hints, exclude)
        key = self._state_key(p, global_hints, keep)
        if self._logits is None or self._logits[0] != key:  # not the state of the last run with logits
            _, out = c._infer([p], [global_hints], "regression", c.temperature, want_logits=True,
                              instances=self._instances(keep))
            self._logits = (key, out[0])
        return suggest_from_logits(self._logits[1], p.image, x, y, k, c.suggest_log_weights)

    # ------------------------------------------------------------------ internals
    def _keep(self, exclude) -> np.ndarray:
        n = len(self)
        try:
            ex = np.asarray(list(exclude) if exclude is not None else [])
        except TypeError:
            raise TypeError(f"exclude: expected a sequence of box indices, got {exclude!r}") from None
        if ex.size and (ex.dtype == bool or not np.issubdtype(ex.dtype, np.integer) or ex.ndim != 1):
            raise TypeError(f"exclude: expected box indices (ints in 0..{n - 1}), got {exclude!r}")
        bad = [int(i) for i in ex.reshape(-1) if not 0 <= int(i) < n]
        if bad:
            raise ValueError(f"exclude: box index {bad[0]} out of range; the session has {n} boxes (0..{n - 1})")
        return np.setdiff1d(np.arange(n, dtype=np.int64), ex.astype(np.int64))

    def _for(self, hints, global_hints, exclude):
        """The prepared image with these hints and the boxes kept -> (Prepared, kept indices)."""
        from .colorizer import _check_global_hints

        _check_global_hints(global_hints)
        keep = self._keep(exclude)
        p = self._prepared
        hint_ab, hint_mask = _prepare.hint_planes(hints, self.size, p.image.shape[:2])
        if len(keep) != len(p.boxes):
            p = dataclasses.replace(p, boxes=p.boxes[keep], crop_L=p.crop_L[keep],
                                    box_info=[level[keep] for level in p.box_info])
        return dataclasses.replace(p, hint_ab=hint_ab, hint_mask=hint_mask), keep

    @staticmethod
    def _state_key(p, global_hints, keep) -> tuple:
        """What the class logits depend on besides the session's image and boxes: the hint planes, the
        global hints and the kept boxes (the editor asks for suggestions right after the preview of
        the same state, and then reuses that run's logits)."""
        g = None if global_hints is None else json.dumps(global_hints.to_json(), sort_keys=True)
        return p.hint_ab.tobytes(), p.hint_mask.tobytes(), g, tuple(int(i) for i in keep)

    def _instances(self, keep: np.ndarray):
        """The instance state of the kept boxes (None: no boxes kept, or not cached)."""
        if not self.cached or len(keep) == 0:
            return None
        key = tuple(int(i) for i in keep)
        state = self._states.pop(key, None)
        if state is None:
            state = self.colorizer.backend.run_instances(self._prepared.crop_L[keep])
        self._states[key] = state
        while len(self._states) > MAX_CACHED_STATES:
            self._states.popitem(last=False)
        return state

    def _extras(self, keep: np.ndarray):
        return (None if self.scores is None else self.scores[keep], None if self.labels is None else self.labels[keep])


__all__ = ["EditSession"]

"""Temporal stabilisation of the predicted ab along the optical flow (no trained network).

Per frame t (all at processing resolution S x S, on the grey input):

* ``B`` = flow t -> t-1 and ``F`` = flow t-1 -> t (OpenCV DIS, :mod:`instcolor.video.flow`);
* the previous *output* ab is warped to t along ``B`` (``prev(x + B(x))``);
* a pixel is *occluded* (Lai et al. 2018: forward-backward inconsistency of B and F, motion
  boundaries of B, or a flow leaving the frame — :func:`instcolor.metrics.flow_occlusion`) or
  *mismatched* (its grey value differs from the warped previous grey by more than
  ``grey_tolerance`` levels, e.g. a lighting change or a flow error); there the new prediction is
  kept as it is (occluded pixels stay fresh);
* elsewhere ``out = blend * warped_prev + (1 - blend) * ab_t``: a recursive average that follows
  each point along its motion.

Only ab is changed (L is always the input's own, joined at composition). The state is reset at
scene cuts (:meth:`FlowStabilizer.reset`). No look-ahead: a frame leaves as soon as it arrives.
"""
from __future__ import annotations

import numpy as np

from .flow import occlusion, remap
from .options import VideoOptions


class FlowStabilizer:
    """Recursive flow-guided blend of ab (see the module docstring). One per video, one thread."""

    def __init__(self, blend: float = VideoOptions.blend, grey_tolerance: float = 12.0):  # one default: VideoOptions
        if not 0.0 <= blend <= 1.0:
            raise ValueError(f"blend must be in [0, 1], got {blend}")
        self.blend = float(blend)
        self.grey_tolerance = float(grey_tolerance)
        self._prev_ab: np.ndarray | None = None
        self._prev_grey: np.ndarray | None = None
        self.last_weight: np.ndarray | None = None  # per-pixel weight of the history in the last frame

    def reset(self) -> None:
        self._prev_ab = None
        self._prev_grey = None

    def push(self, ab: np.ndarray, grey: np.ndarray, flows: tuple[np.ndarray, np.ndarray] | None) -> np.ndarray:
        """``ab`` (2, S, S) float32 prediction of this frame, ``grey`` (S, S) uint8 its lightness,
        ``flows`` = (F: previous -> this at the previous frame's pixels, B: this -> previous at this
        frame's pixels) or None (first frame / after a cut). Returns the stabilised (2, S, S) float32."""
        ab = np.ascontiguousarray(ab, np.float32)
        if self._prev_ab is None or flows is None or self.blend == 0.0:
            out = ab
            self.last_weight = np.zeros(ab.shape[1:], np.float32)
        else:
            fw, bw = flows
            occluded = occlusion(bw, fw)
            prev = np.moveaxis(remap(np.ascontiguousarray(np.moveaxis(self._prev_ab, 0, -1)), bw), -1, 0)
            prev_grey = remap(self._prev_grey.astype(np.float32), bw)
            same = np.abs(prev_grey - grey.astype(np.float32)) <= self.grey_tolerance
            w = np.where(~occluded & same, self.blend, 0.0).astype(np.float32)
            out = (w * prev + (1.0 - w) * ab).astype(np.float32)
            self.last_weight = w
        self._prev_ab = out
        self._prev_grey = grey
        return out

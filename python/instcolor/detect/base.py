from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass
class Detections:
    """boxes (N,4) float32 xyxy in image pixels, scores (N,) float32 or None (order given by the
    caller), labels (N,) int64 or None."""

    boxes: np.ndarray
    scores: np.ndarray | None = None
    labels: np.ndarray | None = None

    def __post_init__(self):
        self.boxes = np.asarray(self.boxes, np.float32).reshape(-1, 4)
        if self.scores is not None:
            self.scores = np.asarray(self.scores, np.float32).reshape(-1)
        if self.labels is not None:
            self.labels = np.asarray(self.labels, np.int64).reshape(-1)
        for what, arr in (("scores", self.scores), ("labels", self.labels)):
            if arr is not None and len(arr) != len(self.boxes):
                raise ValueError(f"Detections: {len(self.boxes)} boxes but {len(arr)} {what}")


class Detector(Protocol):
    def __call__(self, image: np.ndarray) -> Detections: ...

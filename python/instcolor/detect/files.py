"""Boxes given in files, looked up by image name.

* a folder of ``<stem>.npz`` files with arrays ``bbox`` (N,4) and ``scores`` (N,) — the format
  the official ``inference_bbox.py`` writes (``<image dir>_bbox/``);
* one JSON file ``{"<stem or file name>": {"boxes": [[x0, y0, x1, y1], ...], "scores": [...]}, ...}``
  (``"bbox"`` is accepted for ``"boxes"``; a bare list of boxes means no scores).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .base import Detections


class BoxesFile:
    """Look up the boxes of an image by its path: ``source.lookup(path) -> Detections | None``."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._json: dict | None = None
        if self.path.is_dir():
            return
        if not self.path.is_file():
            raise FileNotFoundError(f"boxes: no such file or folder: {self.path}")
        try:
            data = json.loads(self.path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"boxes: {self.path} is not a readable JSON file ({e})") from None
        if not isinstance(data, dict):
            raise ValueError(f"boxes: {self.path} must hold an object keyed by image name")
        self._json = data

    def lookup(self, image_path: str | Path) -> Detections | None:
        image_path = Path(image_path)
        if self._json is None:
            f = self.path / f"{image_path.stem}.npz"
            if not f.is_file():
                return None
            try:
                with np.load(f, allow_pickle=False) as z:
                    if "bbox" not in z:
                        raise ValueError(f"boxes: {f} has no 'bbox' array (keys: {sorted(z.keys())})")
                    boxes = np.asarray(z["bbox"], np.float32).reshape(-1, 4)
                    scores = np.asarray(z["scores"], np.float32) if "scores" in z else None
            except (OSError, ValueError) as e:
                raise ValueError(f"boxes: cannot read {f}: {e}") from None
            return Detections(boxes, scores)
        entry = self._json.get(image_path.name, self._json.get(image_path.stem))
        if entry is None:
            return None
        try:
            if isinstance(entry, list):
                return Detections(np.asarray(entry, np.float32).reshape(-1, 4))
            boxes = np.asarray(entry.get("boxes", entry.get("bbox", [])), np.float32).reshape(-1, 4)
            scores = entry.get("scores")
            return Detections(boxes, scores)
        except (ValueError, TypeError, AttributeError) as e:
            raise ValueError(f"boxes: entry for {image_path.name} in {self.path} is malformed ({e})") from None


def load_boxes_source(path: str | Path) -> BoxesFile:
    return BoxesFile(path)

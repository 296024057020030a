"""Step 1: detectors. Every detector is a callable ``(H, W, 3) uint8 -> Detections``.

Adapters here: boxes read from files (the official per-image npz format, or one JSON file).
"""
from .base import Detections, Detector
from .files import BoxesFile, load_boxes_source

__all__ = ["Detections", "Detector", "BoxesFile", "load_boxes_source"]

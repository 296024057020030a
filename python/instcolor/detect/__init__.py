"""Step 1: detectors. Every detector is a callable ``(H, W, 3) uint8 -> Detections``.

Adapters here: boxes read from files (the official per-image npz format, or one JSON file);
ONNX models run with ONNX Runtime or TensorRT (:class:`OnnxDetector`: YOLOX, YOLOv8,
torchvision-style outputs; ``runtime="onnxruntime"`` or ``"tensorrt"``; the project's detector is
the COCO YOLOX-Nano); torchvision's COCO Mask R-CNN (:class:`TorchvisionMaskRCNN`, only where
torchvision is installed).
"""
from __future__ import annotations

import os
from pathlib import Path

from .base import Detections, Detector
from .coco import COCO_CLASSES, coco91_to_80
from .files import BoxesFile, detect_to_folder, load_boxes_source, write_boxes_npz
from .nms import batched_nms, box_iou, nms
from .onnx_detector import OnnxDetector
from .torchvision_detector import TorchvisionMaskRCNN

__all__ = ["Detections", "Detector", "BoxesFile", "load_boxes_source", "detect_to_folder", "write_boxes_npz", "OnnxDetector", "TorchvisionMaskRCNN",
           "COCO_CLASSES", "coco91_to_80", "nms", "batched_nms", "box_iou", "load_detector"]


def load_detector(spec, **options) -> Detector | None:
    """Make a detector from a spec.

    ``None`` -> None (no detector); a callable -> itself; a ``str`` / path ending in ``.onnx`` ->
    ``OnnxDetector(spec, **options)`` (its defaults without options; e.g. ``runtime="tensorrt"``
    runs it with TensorRT; FileNotFoundError if the file is missing). Anything else, and options
    with a callable, raises ValueError.
    """
    if spec is None:
        return None
    if options and callable(spec):
        raise ValueError(f"detector: options {sorted(options)} apply to .onnx model files, not to a callable")
    if isinstance(spec, (str, os.PathLike)):
        if Path(spec).suffix.lower() == ".onnx":
            return OnnxDetector(spec, **options)
        raise ValueError(f"detector: {str(spec)!r} is not a detector spec; give an .onnx model file "
                         f"(e.g. yolox_nano_coco_416.onnx) or a callable image -> Detections")
    if callable(spec):
        return spec
    raise ValueError(f"detector: expected None, a callable or an .onnx path, got {type(spec).__name__}")

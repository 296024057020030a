"""COCO class names and label-space conversions.

Two label spaces are in use for COCO detectors:

* the **contiguous 80-class order** (index 0..79, 0 = person, no background class), used by
  YOLOX / YOLOv8 and by this project's :class:`~instcolor.detect.Detections` labels;
* the **COCO category ids** 1..90 with 10 gaps (0 = background), which torchvision's COCO
  detectors return as labels (its 91-entry category list).

:func:`coco91_to_80` maps the second onto the first.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np

COCO_CLASSES: tuple[str, ...] = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
    "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant",
    "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
)
"""The 80 COCO class names in contiguous order (index = class index)."""

# COCO category ids that are not used by any of the 80 classes (1..90 range).
_UNUSED_IDS = (12, 26, 29, 30, 45, 66, 68, 69, 71, 83)

COCO_CATEGORY_IDS: tuple[int, ...] = tuple(i for i in range(1, 91) if i not in _UNUSED_IDS)
"""COCO category id of each contiguous class: ``COCO_CATEGORY_IDS[k]`` for class ``k`` (80 ints)."""

_ID_TO_INDEX = np.full(91, -1, np.int64)
_ID_TO_INDEX[list(COCO_CATEGORY_IDS)] = np.arange(80)

assert len(COCO_CLASSES) == 80 and len(COCO_CATEGORY_IDS) == 80


def coco91_to_80(labels: np.ndarray) -> np.ndarray:
    """COCO category ids ``(N,)`` int -> contiguous class indices ``(N,)`` int64.

    Background (0), the unused ids and anything outside 0..90 map to -1.
    """
    labels = np.asarray(labels, np.int64).reshape(-1)
    out = np.full(labels.shape, -1, np.int64)
    ok = (labels >= 0) & (labels <= 90)
    out[ok] = _ID_TO_INDEX[labels[ok]]
    return out


def class_indices(classes: Iterable[int | str] | int | str | None,
                  names: tuple[str, ...] | None = COCO_CLASSES) -> np.ndarray | None:
    """Resolve a class selection to a sorted ``(K,)`` int64 array of class indices.

    ``classes`` holds class indices and/or class names (looked up in ``names``, case-insensitive;
    a single int or str is accepted too). ``None`` means no filtering and returns ``None``.
    Raises ValueError for an unknown name, a name when ``names`` is None, or a negative index.
    """
    if classes is None:
        return None
    if isinstance(classes, (str, int, np.integer)):
        classes = [classes]
    lookup = {n.lower(): i for i, n in enumerate(names)} if names is not None else None
    out = []
    for c in classes:
        if isinstance(c, str):
            if lookup is None:
                raise ValueError(f"classes: the class name {c!r} cannot be resolved, the model's class "
                                 f"names are unknown; give class indices instead")
            key = c.strip().lower()
            if key not in lookup:
                raise ValueError(f"classes: unknown class name {c!r} (known: {', '.join(names)})")
            out.append(lookup[key])
        elif isinstance(c, (int, np.integer)) and not isinstance(c, bool):
            if c < 0:
                raise ValueError(f"classes: class index must be >= 0, got {c}")
            out.append(int(c))
        else:
            raise ValueError(f"classes: expected class indices or names, got {c!r}")
    return np.unique(np.asarray(out, np.int64))

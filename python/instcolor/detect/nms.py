"""Non-maximum suppression in numpy (plain and class-aware)."""
from __future__ import annotations

import numpy as np


def box_area(boxes: np.ndarray) -> np.ndarray:
    """``(N, 4)`` xyxy -> ``(N,)`` float64 area (0 for empty / inverted boxes)."""
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    return np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU: ``(N, 4)`` and ``(M, 4)`` xyxy -> ``(N, M)`` float64 (0 where the union is 0)."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = np.clip(rb - lt, 0, None)
    inter = wh[..., 0] * wh[..., 1]
    union = box_area(a)[:, None] + box_area(b)[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float = 0.45) -> np.ndarray:
    """Greedy NMS, class-agnostic.

    boxes ``(N, 4)`` xyxy, scores ``(N,)``. A box is suppressed when its IoU with an already kept,
    higher-scoring box is **greater than** ``iou``. Returns the kept indices, ``(K,)`` int64, in
    descending score order (ties keep the input order).
    """
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    scores = np.asarray(scores, np.float64).reshape(-1)
    if len(scores) != len(boxes):
        raise ValueError(f"nms: {len(boxes)} boxes but {len(scores)} scores")
    order = np.argsort(-scores, kind="stable")
    areas = box_area(boxes)
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        if not rest.size:
            break
        lt = np.maximum(boxes[i, :2], boxes[rest, :2])
        rb = np.minimum(boxes[i, 2:], boxes[rest, 2:])
        wh = np.clip(rb - lt, 0, None)
        inter = wh[:, 0] * wh[:, 1]
        union = areas[i] + areas[rest] - inter
        ov = np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)
        order = rest[ov <= iou]
    return np.asarray(keep, np.int64)


def batched_nms(boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray | None,
                iou: float = 0.45) -> np.ndarray:
    """Class-aware NMS: boxes only suppress boxes with the same label.

    boxes ``(N, 4)`` xyxy, scores ``(N,)``, labels ``(N,)`` int (None = one class). Returns kept
    indices ``(K,)`` int64 in descending score order (ties keep the input order); ``N = 0`` gives an
    empty array.
    """
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    scores = np.asarray(scores, np.float64).reshape(-1)
    if labels is None:
        return nms(boxes, scores, iou)
    labels = np.asarray(labels).reshape(-1)
    if not (len(boxes) == len(scores) == len(labels)):
        raise ValueError(f"batched_nms: {len(boxes)} boxes, {len(scores)} scores, {len(labels)} labels")
    keep = [idx[nms(boxes[idx], scores[idx], iou)] for idx in
            (np.flatnonzero(labels == c) for c in np.unique(labels))]
    if not keep:
        return np.zeros(0, np.int64)
    keep = np.concatenate(keep)
    # descending score, ties by original index (matches the per-class stable order)
    return keep[np.lexsort((keep, -scores[keep]))].astype(np.int64)

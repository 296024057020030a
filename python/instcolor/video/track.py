"""Boxes between detections: an IoU tracker whose boxes follow the optical flow.

The detector runs on every N-th frame and at scene cuts (:class:`DetectionSchedule`). In between,
each tracked box moves by the median processing-resolution flow inside it, so the instance net sees
a crop that follows its object. On a detection frame the detections are matched to the tracks by
IoU (greedy, highest first, same class): a matched track takes a weighted mean of its carried box and
the detection (this smooths the detector's frame-to-frame jitter); an unmatched detection starts a
new track; a track unmatched for more than ``max_missed`` detection rounds ends. Boxes go to the nets
in the order of the tracks' ids, so each object keeps its place (and its identity) while it is seen.
One tracker per video (``reset()`` at scene cuts); boxes are in frame pixels.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MIN_SIDE = 2.0  # pixels: a carried box thinner than this (it left the frame) is not used


@dataclass
class Track:
    id: int
    box: np.ndarray          # (4,) float64 xyxy, frame pixels
    score: float
    label: int
    missed: int = 0          # detection rounds since it was last matched
    hits: int = 1


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(len(a), len(b)) IoU of xyxy boxes."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    x0 = np.maximum(a[:, None, 0], b[None, :, 0])
    y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 2], b[None, :, 2])
    y1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def greedy_match(iou: np.ndarray, threshold: float) -> list[tuple[int, int]]:
    """Pairs (row, col) taking the highest remaining IoU first, each row and column at most once,
    only pairs with IoU >= threshold."""
    pairs = []
    if iou.size == 0:
        return pairs
    order = np.argsort(-iou, axis=None, kind="stable")
    used_r, used_c = set(), set()
    for flat in order.tolist():
        r, c = divmod(flat, iou.shape[1])
        if iou[r, c] < threshold:
            break
        if r in used_r or c in used_c:
            continue
        used_r.add(r)
        used_c.add(c)
        pairs.append((r, c))
    return pairs


class BoxTracker:
    """IoU tracker with flow-carried boxes (see the module docstring)."""

    def __init__(self, iou_threshold: float = 0.3, max_missed: int = 1, detection_weight: float = 0.5,
                 max_tracks: int = 8):
        if not 0.0 < iou_threshold <= 1.0:
            raise ValueError(f"iou_threshold must be in (0, 1], got {iou_threshold}")
        if not 0.0 < detection_weight <= 1.0:
            raise ValueError(f"detection_weight must be in (0, 1], got {detection_weight}")
        self.iou_threshold = iou_threshold
        self.max_missed = int(max_missed)
        self.detection_weight = float(detection_weight)
        self.max_tracks = int(max_tracks)
        self.tracks: list[Track] = []
        self._next_id = 0

    def reset(self) -> None:
        """Forget every track (a scene cut); ids keep counting up."""
        self.tracks = []

    # ---------------------------------------------------------------- per frame
    def predict(self, flow: np.ndarray | None, frame_hw: tuple[int, int]) -> None:
        """Move every track by the median of ``flow`` (previous -> this frame, on an (h, w) grid
        covering the whole frame, squashed as the processing size is) inside its box."""
        if flow is None or not self.tracks:
            return
        H, W = frame_hw
        gh, gw = flow.shape[:2]
        sx, sy = gw / W, gh / H
        for t in self.tracks:
            x0, y0, x1, y1 = t.box
            gx0 = int(np.clip(np.floor(x0 * sx), 0, gw - 1))
            gy0 = int(np.clip(np.floor(y0 * sy), 0, gh - 1))
            gx1 = int(np.clip(np.ceil(x1 * sx), gx0 + 1, gw))
            gy1 = int(np.clip(np.ceil(y1 * sy), gy0 + 1, gh))
            region = flow[gy0:gy1, gx0:gx1].reshape(-1, 2)
            dx, dy = np.median(region, axis=0)
            t.box = t.box + np.array([dx / sx, dy / sy, dx / sx, dy / sy])

    def correct(self, boxes, scores=None, labels=None) -> None:
        """Match one frame's detections (xyxy frame pixels) to the tracks."""
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        n = len(boxes)
        scores = np.ones(n) if scores is None else np.asarray(scores, np.float64).reshape(-1)
        labels = np.full(n, -1, np.int64) if labels is None else np.asarray(labels, np.int64).reshape(-1)
        iou = iou_matrix(np.array([t.box for t in self.tracks]).reshape(-1, 4), boxes)
        if iou.size:
            same = np.array([[t.label == lab or t.label < 0 or lab < 0 for lab in labels] for t in self.tracks])
            iou = np.where(same, iou, 0.0)
        matched_t, matched_d = set(), set()
        w = self.detection_weight
        for ti, di in greedy_match(iou, self.iou_threshold):
            t = self.tracks[ti]
            t.box = w * boxes[di] + (1.0 - w) * t.box
            t.score, t.label = float(scores[di]), int(labels[di])
            t.missed, t.hits = 0, t.hits + 1
            matched_t.add(ti)
            matched_d.add(di)
        kept = []
        for ti, t in enumerate(self.tracks):
            if ti not in matched_t:
                t.missed += 1
            if t.missed <= self.max_missed:
                kept.append(t)
        for di in range(n):
            if di not in matched_d:
                kept.append(Track(self._next_id, boxes[di].copy(), float(scores[di]), int(labels[di])))
                self._next_id += 1
        self.tracks = kept

    def current(self, frame_hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(boxes (N, 4) float32 clipped to the frame, scores (N,), labels (N,), ids (N,)) of the usable
        tracks: at most ``max_tracks``, the highest-scoring, in the order of their ids."""
        H, W = frame_hw
        usable = []
        for t in self.tracks:
            b = np.array([np.clip(t.box[0], 0, W), np.clip(t.box[1], 0, H), np.clip(t.box[2], 0, W),
                          np.clip(t.box[3], 0, H)])
            if np.trunc(b[2]) - np.trunc(b[0]) >= MIN_SIDE and np.trunc(b[3]) - np.trunc(b[1]) >= MIN_SIDE:
                usable.append((t, b))
        if len(usable) > self.max_tracks:
            usable = sorted(usable, key=lambda tb: (-tb[0].score, tb[0].id))[:self.max_tracks]
        usable.sort(key=lambda tb: tb[0].id)
        boxes = np.array([b for _, b in usable], np.float32).reshape(-1, 4)
        scores = np.array([t.score for t, _ in usable], np.float32)
        labels = np.array([t.label for t, _ in usable], np.int64)
        ids = np.array([t.id for t, _ in usable], np.int64)
        return boxes, scores, labels, ids


class DetectionSchedule:
    """When to run the detector: the first frame, every ``every``-th frame after the last detection,
    and at scene cuts."""

    def __init__(self, every: int):
        self.every = int(every)
        self._last: int | None = None

    def due(self, index: int, cut: bool) -> bool:
        if cut or self._last is None or index - self._last >= self.every:
            self._last = index
            return True
        return False

"""COCO Mask R-CNN from torchvision, as an optional detector.

The official InstColorization detects with a COCO Mask R-CNN (Detectron2) and keeps boxes with
score >= 0.7. This adapter runs torchvision's COCO Mask R-CNN the same way. It is only usable
where torchvision is installed: importing this module never needs torchvision, constructing the
detector raises ImportError without it. Weights are never downloaded: pass a local
``weights=`` file (a torchvision ``state_dict``, e.g. ``maskrcnn_resnet50_fpn_coco-*.pth``).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

import numpy as np

from .base import Detections
from .coco import COCO_CLASSES, class_indices, coco91_to_80
from .onnx_detector import _check_common, check_image, label_names_of, lightness_grey, postprocess

ARCHS = ("maskrcnn_resnet50_fpn", "maskrcnn_resnet50_fpn_v2")


class TorchvisionMaskRCNN:
    """torchvision COCO Mask R-CNN: ``(H, W, 3)`` uint8 RGB -> :class:`Detections`.

    boxes ``(N, 4)`` float32 xyxy in original pixels, scores ``(N,)`` float32 descending,
    labels ``(N,)`` int64 contiguous COCO class indices (torchvision's category ids mapped with
    :func:`~instcolor.detect.coco.coco91_to_80`), ``N <= top_k``.

    Args:
        weights: local ``state_dict`` file for ``arch`` (required; nothing is downloaded). A dict
            holding the state dict under ``"model"`` or ``"state_dict"`` is accepted too.
        score_threshold: keep ``score >= score_threshold`` (0.7, as the official code).
        arch: ``"maskrcnn_resnet50_fpn"`` or ``"maskrcnn_resnet50_fpn_v2"``.
        classes: class indices and/or COCO names to keep (None = all).
        top_k: keep at most this many (None = all); InstColorization uses 8.
        nms_iou: extra class-aware NMS on top of the model's own (None = only the model's).
        grey: detect on the lightness (L copied to 3 channels) like the official code; see
            :func:`~instcolor.detect.onnx_detector.lightness_grey`.
        device: torch device.
    """

    names = COCO_CLASSES

    def __init__(self, weights: str | os.PathLike | None = None, *, score_threshold: float = 0.7,
                 arch: str = "maskrcnn_resnet50_fpn", classes: Iterable[int | str] | None = None,
                 top_k: int | None = 8, nms_iou: float | None = None, grey: bool = True, device: str = "cpu"):
        who = "TorchvisionMaskRCNN"
        if weights is None:
            raise ValueError(f"{who}: pass a local weights= file (a torchvision {arch} COCO state_dict); "
                             f"weights are never downloaded implicitly")
        self.weights = Path(weights)
        if not self.weights.is_file():
            raise FileNotFoundError(f"{who}: weights file not found: {self.weights}")
        if arch not in ARCHS:
            raise ValueError(f"{who}: arch must be one of {ARCHS}, got {arch!r}")
        _check_common(score_threshold, nms_iou, top_k, who)
        try:
            import torchvision.models.detection as tvd
        except Exception as e:
            raise ImportError(f"{who} needs torchvision, which cannot be imported here ({e}); use an ONNX "
                              f"detector (instcolor.detect.OnnxDetector) instead") from None
        import torch

        try:
            state = torch.load(self.weights, map_location="cpu", weights_only=True)
        except Exception as e:
            raise ValueError(f"{who}: cannot read the weights file {self.weights}: {e}") from None
        if isinstance(state, dict):
            for key in ("model", "state_dict"):
                if isinstance(state.get(key), dict):
                    state = state[key]
                    break
        if not isinstance(state, dict):
            raise ValueError(f"{who}: {self.weights} does not hold a state_dict")
        model = getattr(tvd, arch)(weights=None, weights_backbone=None, num_classes=91)
        try:
            model.load_state_dict(state)
        except RuntimeError as e:
            raise ValueError(f"{who}: {self.weights} does not fit {arch} (91 COCO categories): {e}") from None
        self.model = model.eval().to(device)
        self.device = device
        self.arch = arch
        self.score_threshold = float(score_threshold)
        self.classes = class_indices(classes, self.names)
        self.top_k = top_k
        self.nms_iou = nms_iou
        self.grey = bool(grey)

    def label_names(self, labels: Iterable[int]) -> list[str]:
        """COCO names of ``labels`` (``(N,)`` contiguous class indices)."""
        return label_names_of(labels, self.names)

    def __call__(self, image: np.ndarray) -> Detections:
        """``(H, W, 3)`` uint8 RGB -> :class:`Detections` in original-image pixels."""
        import torch

        check_image(image, "TorchvisionMaskRCNN")
        src = lightness_grey(image) if self.grey else image
        x = torch.from_numpy(np.ascontiguousarray(src.transpose(2, 0, 1))).to(self.device, torch.float32) / 255.0
        with torch.no_grad():
            out = self.model([x])[0]
        boxes = out["boxes"].detach().cpu().numpy()
        scores = out["scores"].detach().cpu().numpy()
        labels = coco91_to_80(out["labels"].detach().cpu().numpy())
        return postprocess(boxes, scores, labels, image_hw=image.shape[:2], score_threshold=self.score_threshold,
                           classes=self.classes, nms_iou=self.nms_iou, top_k=self.top_k)

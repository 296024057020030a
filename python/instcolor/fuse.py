"""Step 4's blend: softmax-weighted fusion of instance features into the full-image feature.

``fuse_instances_reference`` is the plain-PyTorch statement of the contract that the native
kernel ``instcolor.ops.fuse_instances`` implements without materialising the padded
``(M, C, H, W)`` tensors. Semantics are the official ``WeightGenerator.forward`` (see the
golden README, "Fusion blocks"), batched over images.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

BACKGROUND_OUTSIDE_BOXES = 100000.0


def _resize_into_box(x: torch.Tensor, info) -> torch.Tensor:
    left, right, top, bottom, width, height = (int(v) for v in info)
    x = F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False)
    return F.pad(x, (left, right, top, bottom), "constant", 0.0)


def fuse_instances_reference(bg_feat: torch.Tensor, bg_logit: torch.Tensor, inst_feat: torch.Tensor,
                             inst_logit: torch.Tensor, box_info: torch.Tensor,
                             inst_image: torch.Tensor) -> torch.Tensor:
    """One blend step.

    bg_feat (B, C, H, W), bg_logit (B, 1, H, W), inst_feat (M, C, h, w), inst_logit (M, 1, h, w),
    box_info (M, 6) int64 [left pad, right pad, top pad, bottom pad, width, height] at this
    level, inst_image (M,) int64: image index of each instance. Returns (B, C, H, W).

    Per image: each instance's feature and logit are resized (bilinear, align_corners=False)
    into its box and zero-padded; the background logit gets +1e5 outside the union of boxes;
    a softmax over [instances..., background] (instances not covering a pixel take part with
    logit 0 and a zero feature) weights the sum.
    """
    out = bg_feat.clone()
    inst_image = torch.as_tensor(inst_image).reshape(-1).tolist()
    box_info = torch.as_tensor(box_info).reshape(-1, 6).tolist()
    for b in range(bg_feat.shape[0]):
        members = [i for i, img in enumerate(inst_image) if img == b]
        if not members:
            continue
        weights = blend_weights_reference(bg_logit[b:b + 1], inst_logit[members], [box_info[i] for i in members])
        feats = [_resize_into_box(inst_feat[i:i + 1], box_info[i]) for i in members] + [bg_feat[b:b + 1]]
        out[b] = (torch.cat(feats, 0) * weights.permute(1, 0, 2, 3).to(bg_feat.dtype)).sum(0)
    return out


def blend_weights_reference(bg_logit: torch.Tensor, inst_logit: torch.Tensor, box_info) -> torch.Tensor:
    """Softmax weights ``(1, M+1, H, W)`` of one image (instances in box order, background last):
    the weighting half of :func:`fuse_instances_reference`, also compared with golden ``fusion_softmax_*``.
    Computed in float32 whatever the inputs' precision: the background's +1e5 outside the boxes
    overflows float16 (largest finite value 65504) and would make the softmax NaN."""
    logits = []
    bg_logit, inst_logit = bg_logit.float(), inst_logit.float()
    union = torch.zeros_like(bg_logit[:1])
    for i, info in enumerate(torch.as_tensor(box_info).reshape(-1, 6).tolist()):
        logits.append(_resize_into_box(inst_logit[i:i + 1], info))
        left, _, top, _, width, height = info
        union[:, :, top:top + height, left:left + width] = 1.0
    logits.append(bg_logit[:1] + (1 - union) * BACKGROUND_OUTSIDE_BOXES)
    return torch.softmax(torch.cat(logits, 1), 1)

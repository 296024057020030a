"""Step 5: predicted ab + lightness -> RGB uint8 (reference implementation)."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from . import color


def compose_reference(image: np.ndarray, ab: np.ndarray | torch.Tensor) -> np.ndarray:
    """Full-resolution output: ``ab`` (2, S, S) normalised, bilinearly upsampled
    (align_corners=False) to the ``image`` size, joined with the L of ``image`` (H, W, 3) uint8,
    converted to RGB and rounded to uint8 (H, W, 3)."""
    h, w = image.shape[:2]
    ab_t = torch.as_tensor(np.asarray(ab, np.float32))[None]
    ab_up = F.interpolate(ab_t, size=(h, w), mode="bilinear", align_corners=False)
    lab = color.rgb_to_lab(color.uint8_to_float(image))
    return color.to_uint8(color.lab_to_rgb(torch.cat((lab[:, :1], ab_up), 1)))[0]


def compose_processed_reference(full_L: np.ndarray, ab: np.ndarray) -> np.ndarray:
    """The S x S picture the official test saves: lab2rgb(full L, ab), clamp, uint8.
    ``full_L`` (1, S, S), ``ab`` (2, S, S) normalised -> (S, S, 3) uint8."""
    lab = torch.cat((torch.as_tensor(np.asarray(full_L, np.float32)), torch.as_tensor(np.asarray(ab, np.float32))), 0)
    return color.to_uint8(color.lab_to_rgb(lab[None]))[0]


def compose_high(high_rgb: np.ndarray, ab: np.ndarray | torch.Tensor) -> np.ndarray:
    """16-bit full-resolution output: like :func:`compose_reference`, but the lightness comes from
    ``high_rgb`` (H, W, 3) float sRGB in [0, 1] (the full-precision pixels of a >8-bit source) and
    the result is rounded to 0..65535 -> (H, W, 3) uint16. ``ab`` (2, S, S) normalised, upsampled
    bilinearly (align_corners=False) to (H, W). Float32 math (the ``instcolor.color`` conversion)."""
    high = np.asarray(high_rgb)
    if high.ndim != 3 or high.shape[2] != 3 or not np.issubdtype(high.dtype, np.floating):
        raise ValueError(f"compose_high: expected (H, W, 3) float sRGB in [0, 1], got {high.dtype} {high.shape}")
    h, w = high.shape[:2]
    ab_t = torch.as_tensor(np.asarray(ab, np.float32))[None]
    ab_up = F.interpolate(ab_t, size=(h, w), mode="bilinear", align_corners=False)
    rgb = torch.from_numpy(np.ascontiguousarray(high, np.float32)).permute(2, 0, 1)[None]
    lab = color.rgb_to_lab(rgb.clamp(0.0, 1.0))
    out = color.lab_to_rgb(torch.cat((lab[:, :1], ab_up), 1))
    x = torch.round(torch.clamp(out, 0.0, 1.0) * 65535.0)
    return x.to(torch.int32)[0].permute(1, 2, 0).numpy().astype(np.uint16)

"""Step 5: predicted ab + lightness -> RGB uint8 (reference implementation).

The reference functions use PyTorch (imported on first use); :func:`compose_high` (16-bit output)
uses the numpy twins of :mod:`instcolor.color` (no PyTorch)."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # (annotations only)
    import torch

from . import color


def compose_reference(image: np.ndarray, ab: np.ndarray | torch.Tensor) -> np.ndarray:
    """Full-resolution output: ``ab`` (2, S, S) normalised, bilinearly upsampled
    (align_corners=False) to the ``image`` size, joined with the L of ``image`` (H, W, 3) uint8,
    converted to RGB and rounded to uint8 (H, W, 3)."""
    import torch
    import torch.nn.functional as F

    h, w = image.shape[:2]
    ab_t = torch.as_tensor(np.asarray(ab, np.float32))[None]
    ab_up = F.interpolate(ab_t, size=(h, w), mode="bilinear", align_corners=False)
    lab = color.rgb_to_lab(color.uint8_to_float(image))
    return color.to_uint8(color.lab_to_rgb(torch.cat((lab[:, :1], ab_up), 1)))[0]


def compose_processed_reference(full_L: np.ndarray, ab: np.ndarray) -> np.ndarray:
    """The S x S picture the official test saves: lab2rgb(full L, ab), clamp, uint8.
    ``full_L`` (1, S, S), ``ab`` (2, S, S) normalised -> (S, S, 3) uint8."""
    import torch

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
    # numpy twins of the reference steps (F.interpolate bilinear, rgb_to_lab, lab_to_rgb), on every
    # install: the 16-bit output never needs PyTorch (within 2 / 65535 of the PyTorch version)
    ab_up = _upsample_bilinear_np(np.asarray(ab, np.float32)[None], h, w)
    rgb = np.ascontiguousarray(high, np.float32).transpose(2, 0, 1)[None]
    lab = color.rgb_to_lab_np(np.clip(rgb, np.float32(0), np.float32(1)))
    out = color.lab_to_rgb_np(np.concatenate((lab[:, :1], ab_up), 1))
    x = np.round(np.clip(out, np.float32(0), np.float32(1)) * np.float32(65535.0))
    return x.astype(np.int32)[0].transpose(1, 2, 0).astype(np.uint16)

def _upsample_bilinear_np(x: np.ndarray, h: int, w: int) -> np.ndarray:
    """(N, C, hi, wi) -> (N, C, h, w) float32: bilinear, align_corners=False (``F.interpolate``'s
    sampling: source = (dst + 0.5) * in / out - 0.5, clamped at 0, right neighbour clamped at the edge)."""
    def axis(n_in: int, n_out: int):
        src = (np.arange(n_out, dtype=np.float32) + np.float32(0.5)) * np.float32(n_in / n_out) - np.float32(0.5)
        src = np.maximum(src, np.float32(0))
        i0 = np.minimum(src.astype(np.int64), n_in - 1)
        i1 = np.minimum(i0 + 1, n_in - 1)
        f = (src - i0.astype(np.float32)).astype(np.float32)
        return i0, i1, f

    y0, y1, fy = axis(x.shape[-2], h)
    x0, x1, fx = axis(x.shape[-1], w)
    rows = x[..., y0, :] * (np.float32(1) - fy)[:, None] + x[..., y1, :] * fy[:, None]
    return (rows[..., x0] * (np.float32(1) - fx) + rows[..., x1] * fx).astype(np.float32)

"""CIE Lab conversion exactly as the official InstColorization / SIGGRAPH'17 code does it.

Reference implementation in float32 PyTorch. The native kernels (``instcolor.ops``) must
match it; the golden vectors (``color_conversion.npz``) check it against the authors' code.

Conventions: D65 sRGB, normalised L = (L - 50) / 100, normalised ab = ab / 110.
All functions take and return ``(N, 3, H, W)`` float32 tensors.
"""
from __future__ import annotations

import numpy as np
import torch

L_CENT = 50.0
L_NORM = 100.0
AB_NORM = 110.0

_WHITE = (0.95047, 1.0, 1.08883)


def _white(ref: torch.Tensor) -> torch.Tensor:
    return torch.tensor(_WHITE, dtype=torch.float32, device=ref.device)[None, :, None, None]


def rgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """sRGB in [0, 1] ``(N, 3, H, W)`` float32 -> normalised Lab ``(N, 3, H, W)`` float32."""
    rgb = rgb.to(torch.float32)
    mask = (rgb > 0.04045).to(torch.float32)
    lin = (((rgb + 0.055) / 1.055) ** 2.4) * mask + rgb / 12.92 * (1 - mask)
    r, g, b = lin[:, 0], lin[:, 1], lin[:, 2]
    x = 0.412453 * r + 0.357580 * g + 0.180423 * b
    y = 0.212671 * r + 0.715160 * g + 0.072169 * b
    z = 0.019334 * r + 0.119193 * g + 0.950227 * b
    xyz = torch.stack((x, y, z), dim=1) / _white(rgb)
    mask = (xyz > 0.008856).to(torch.float32)
    f = xyz ** (1 / 3.0) * mask + (7.787 * xyz + 16.0 / 116.0) * (1 - mask)
    L = 116.0 * f[:, 1] - 16.0
    a = 500.0 * (f[:, 0] - f[:, 1])
    bb = 200.0 * (f[:, 1] - f[:, 2])
    return torch.stack(((L - L_CENT) / L_NORM, a / AB_NORM, bb / AB_NORM), dim=1)


def lab_to_rgb(lab: torch.Tensor) -> torch.Tensor:
    """Normalised Lab ``(N, 3, H, W)`` -> sRGB ``(N, 3, H, W)`` float32.

    Clamped at 0 (as the official code does), not above 1: callers clamp with
    :func:`to_uint8`.
    """
    lab = lab.to(torch.float32)
    L = lab[:, 0] * L_NORM + L_CENT
    a = lab[:, 1] * AB_NORM
    b = lab[:, 2] * AB_NORM
    fy = (L + 16.0) / 116.0
    fx = a / 500.0 + fy
    fz = torch.clamp(fy - b / 200.0, min=0.0)
    f = torch.stack((fx, fy, fz), dim=1)
    mask = (f > 0.2068966).to(torch.float32)
    xyz = (f ** 3.0) * mask + (f - 16.0 / 116.0) / 7.787 * (1 - mask)
    xyz = xyz * _white(lab)
    x, y, z = xyz[:, 0], xyz[:, 1], xyz[:, 2]
    r = 3.24048134 * x - 1.53715152 * y - 0.49853633 * z
    g = -0.96925495 * x + 1.87599 * y + 0.04155593 * z
    bl = 0.05564664 * x - 0.20404134 * y + 1.05731107 * z
    rgb = torch.clamp(torch.stack((r, g, bl), dim=1), min=0.0)
    mask = (rgb > 0.0031308).to(torch.float32)
    return (1.055 * (rgb ** (1.0 / 2.4)) - 0.055) * mask + 12.92 * rgb * (1 - mask)


def to_uint8(rgb: torch.Tensor) -> np.ndarray:
    """``(N, 3, H, W)`` float RGB -> ``(N, H, W, 3)`` uint8: clamp to [0, 1], round(x * 255)
    half to even in float32 (scikit-image ``img_as_ubyte``, as the official code saves)."""
    x = torch.round(torch.clamp(rgb.to(torch.float32), 0.0, 1.0) * 255.0)
    return x.to(torch.uint8).permute(0, 2, 3, 1).contiguous().cpu().numpy()


def uint8_to_float(img: np.ndarray) -> torch.Tensor:
    """``(H, W, 3)`` or ``(N, H, W, 3)`` uint8 -> ``(N, 3, H, W)`` float32 in [0, 1] (x / 255)."""
    t = torch.from_numpy(np.ascontiguousarray(img))
    if t.ndim == 3:
        t = t[None]
    return t.permute(0, 3, 1, 2).to(torch.float32) / 255.0

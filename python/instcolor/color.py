"""CIE Lab conversion exactly as the official InstColorization / SIGGRAPH'17 code does it.

Reference implementation in float32 PyTorch. The native kernels (``instcolor.ops``) must
match it; the golden vectors (``color_conversion.npz``) check it against the authors' code.

Conventions: D65 sRGB, normalised L = (L - 50) / 100, normalised ab = ab / 110.
All functions take and return ``(N, 3, H, W)`` float32 tensors.

PyTorch is imported on first use. The ``*_np`` functions are numpy twins of the reference (same
operations in float32, scalar divisions as multiplications by the float32 reciprocal as PyTorch does
them; PyTorch's vectorised ``pow`` differs from numpy's by about an ulp, so results agree to 1e-6 --
9e-7 at most over all 2^24 8-bit colours -- not bit for bit). The numpy-facing helpers
(:func:`lab_of_uint8`, :func:`lab_to_rgb_uint8`, :func:`rgb_uint8_to_lab`) always use the twins, on
every install, so that results do not depend on whether PyTorch is installed and the inference path
never imports it: the colours of hints, suggestions, the detector's grey input, the editor's
lightness and the 16-bit output. Pictures are converted by the native kernels (``instcolor.ops``);
the PyTorch functions here are the reference those kernels and twins are tested against.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # (annotations only; PyTorch is imported where it is used)
    import torch

L_CENT = 50.0
L_NORM = 100.0
AB_NORM = 110.0

_WHITE = (0.95047, 1.0, 1.08883)


def torch_or_none():
    """The ``torch`` module when PyTorch is installed, else None (the torch-free install)."""
    try:
        import torch
    except ImportError:
        return None
    return torch


def _white(ref: torch.Tensor) -> torch.Tensor:
    import torch

    return torch.tensor(_WHITE, dtype=torch.float32, device=ref.device)[None, :, None, None]


def rgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """sRGB in [0, 1] ``(N, 3, H, W)`` float32 -> normalised Lab ``(N, 3, H, W)`` float32."""
    import torch

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
    import torch

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
    import torch

    x = torch.round(torch.clamp(rgb.to(torch.float32), 0.0, 1.0) * 255.0)
    return x.to(torch.uint8).permute(0, 2, 3, 1).contiguous().cpu().numpy()


def uint8_to_float(img: np.ndarray) -> torch.Tensor:
    """``(H, W, 3)`` or ``(N, H, W, 3)`` uint8 -> ``(N, 3, H, W)`` float32 in [0, 1] (x / 255)."""
    import torch

    t = torch.from_numpy(np.ascontiguousarray(img))
    if t.ndim == 3:
        t = t[None]
    return t.permute(0, 3, 1, 2).to(torch.float32) / 255.0


# ----------------------------------------------------------------------------- numpy twins
_F32 = np.float32


def _div(x: np.ndarray, d: float) -> np.ndarray:
    """``x / d`` for a Python scalar ``d`` as PyTorch's CPU kernel computes it: x * float32(1 / float32(d))."""
    return x * (_F32(1.0) / _F32(d))


def rgb_to_lab_np(rgb: np.ndarray) -> np.ndarray:
    """numpy twin of :func:`rgb_to_lab`: sRGB in [0, 1] ``(N, 3, H, W)`` -> normalised Lab, float32."""
    rgb = np.asarray(rgb, _F32)
    mask = (rgb > _F32(0.04045)).astype(_F32)
    lin = (_div(rgb + _F32(0.055), 1.055) ** _F32(2.4)) * mask + _div(rgb, 12.92) * (_F32(1) - mask)
    r, g, b = lin[:, 0], lin[:, 1], lin[:, 2]
    x = _F32(0.412453) * r + _F32(0.357580) * g + _F32(0.180423) * b
    y = _F32(0.212671) * r + _F32(0.715160) * g + _F32(0.072169) * b
    z = _F32(0.019334) * r + _F32(0.119193) * g + _F32(0.950227) * b
    xyz = np.stack((x, y, z), axis=1) / np.asarray(_WHITE, _F32)[None, :, None, None]
    mask = (xyz > _F32(0.008856)).astype(_F32)
    f = xyz ** _F32(1 / 3.0) * mask + (_F32(7.787) * xyz + _F32(16.0 / 116.0)) * (_F32(1) - mask)
    L = _F32(116.0) * f[:, 1] - _F32(16.0)
    a = _F32(500.0) * (f[:, 0] - f[:, 1])
    bb = _F32(200.0) * (f[:, 1] - f[:, 2])
    return np.stack((_div(L - _F32(L_CENT), L_NORM), _div(a, AB_NORM), _div(bb, AB_NORM)), axis=1)


def lab_to_rgb_np(lab: np.ndarray) -> np.ndarray:
    """numpy twin of :func:`lab_to_rgb`: normalised Lab ``(N, 3, H, W)`` -> sRGB (clamped at 0), float32."""
    lab = np.asarray(lab, _F32)
    L = lab[:, 0] * _F32(L_NORM) + _F32(L_CENT)
    a = lab[:, 1] * _F32(AB_NORM)
    b = lab[:, 2] * _F32(AB_NORM)
    fy = _div(L + _F32(16.0), 116.0)
    fx = _div(a, 500.0) + fy
    fz = np.maximum(fy - _div(b, 200.0), _F32(0))
    f = np.stack((fx, fy, fz), axis=1)
    mask = (f > _F32(0.2068966)).astype(_F32)
    xyz = (f * f * f) * mask + _div(f - _F32(16.0 / 116.0), 7.787) * (_F32(1) - mask)
    xyz = xyz * np.asarray(_WHITE, _F32)[None, :, None, None]
    x, y, z = xyz[:, 0], xyz[:, 1], xyz[:, 2]
    r = _F32(3.24048134) * x - _F32(1.53715152) * y - _F32(0.49853633) * z
    g = _F32(-0.96925495) * x + _F32(1.87599) * y + _F32(0.04155593) * z
    bl = _F32(0.05564664) * x - _F32(0.20404134) * y + _F32(1.05731107) * z
    rgb = np.maximum(np.stack((r, g, bl), axis=1), _F32(0))
    mask = (rgb > _F32(0.0031308)).astype(_F32)
    return (_F32(1.055) * (rgb ** _F32(1.0 / 2.4)) - _F32(0.055)) * mask + _F32(12.92) * rgb * (_F32(1) - mask)


def to_uint8_np(rgb: np.ndarray) -> np.ndarray:
    """numpy twin of :func:`to_uint8`: ``(N, 3, H, W)`` -> ``(N, H, W, 3)`` uint8 (round half to even)."""
    x = np.round(np.clip(np.asarray(rgb, _F32), _F32(0), _F32(1)) * _F32(255.0))
    return np.ascontiguousarray(x.astype(np.uint8).transpose(0, 2, 3, 1))


def uint8_to_float_np(img: np.ndarray) -> np.ndarray:
    """numpy twin of :func:`uint8_to_float`: uint8 ``(H, W, 3)`` / ``(N, H, W, 3)`` -> ``(N, 3, H, W)`` / 255."""
    a = np.asarray(img)
    if a.ndim == 3:
        a = a[None]
    return _div(a.transpose(0, 3, 1, 2).astype(_F32), 255.0)


def lab_of_uint8(img: np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` or ``(N, H, W, 3)`` uint8 -> normalised Lab ``(N, 3, H, W)`` float32 (x / 255 first),
    with the numpy twin (no PyTorch; :func:`instcolor.prepare.lab_of_uint8` is the PyTorch reference)."""
    return rgb_to_lab_np(uint8_to_float_np(img))


# ----------------------------------------------------------------------------- numpy helpers
#: The official conversion's XYZ -> linear sRGB matrix and D65 white (the constants of :func:`lab_to_rgb`).
_XYZ_TO_RGB = np.array([[3.24048134, -1.53715152, -0.49853633],
                        [-0.96925495, 1.87599, 0.04155593],
                        [0.05564664, -0.20404134, 1.05731107]], np.float64)
#: Linear-RGB slack of :func:`gamut`: a channel up to this far outside [0, 1] counts as displayable
#: (float rounding of the official matrix; 1e-4 linear is far below one 8-bit step).
GAMUT_TOLERANCE = 1e-4


def lab_to_rgb_uint8(L, ab) -> np.ndarray:
    """Lab colours -> sRGB uint8 with the official conversion (:func:`lab_to_rgb`, then :func:`to_uint8`;
    their numpy twins).

    ``L``: (n,) lightness in Lab units [0, 100] (or a scalar for all); ``ab``: (n, 2) a*, b* in Lab
    units. Returns (n, 3) uint8. Colours outside the sRGB gamut come out clipped, as in the outputs."""
    ab = np.asarray(ab, np.float32).reshape(-1, 2)
    L = np.broadcast_to(np.asarray(L, np.float32).reshape(-1), (len(ab),))
    lab = np.stack([(L - L_CENT) / L_NORM, ab[:, 0] / AB_NORM, ab[:, 1] / AB_NORM], axis=1)
    if not len(ab):
        return np.zeros((0, 3), np.uint8)
    return to_uint8_np(lab_to_rgb_np(np.ascontiguousarray(lab.T.reshape(1, 3, 1, -1))))[0, 0]


def rgb_uint8_to_lab(rgb) -> np.ndarray:
    """(n, 3) uint8 sRGB -> (n, 3) float32 Lab in Lab units (L 0..100, a*, b*), official conversion (numpy twin)."""
    rgb = np.asarray(rgb, np.uint8).reshape(-1, 3)
    lab = lab_of_uint8(rgb.reshape(1, -1, 3))[0, :, 0].T   # (n, 3) normalised
    return (lab * np.array([L_NORM, AB_NORM, AB_NORM], np.float32) + np.array([L_CENT, 0, 0], np.float32)).astype(np.float32)


def gamut(L: float, step: float = 10.0, ab_max: float = 110.0) -> tuple[np.ndarray, np.ndarray]:
    """The a*b* colours displayable in sRGB at lightness ``L`` (Lab units, 0..100), for drawing an ab picker.

    Returns ``(mask, axis)``: ``axis`` (n,) float32 the a* (and b*) values ``-ab_max, -ab_max + step, ...,
    ab_max`` in Lab units (n = 2 * ab_max / step + 1; the defaults give the 23 x 23 bin centres of the
    classification head, :mod:`instcolor.distribution`), and ``mask`` (n, n) bool with ``mask[i, j]``
    True when (L, a = axis[i], b = axis[j]) converts, with the official constants of :func:`lab_to_rgb`
    and without any clamping, to linear RGB within [0, 1] (up to :data:`GAMUT_TOLERANCE`). Such
    colours survive Lab -> RGB -> Lab; the others are clipped by :func:`lab_to_rgb` / :func:`to_uint8`.
    Computed analytically in float64 (no torch)."""
    try:
        L = float(L)
        step = float(step)
        ab_max = float(ab_max)
    except (TypeError, ValueError):
        raise ValueError(f"gamut: L, step and ab_max must be numbers, got {L!r}, {step!r}, {ab_max!r}") from None
    if not (np.isfinite(L) and 0.0 <= L <= 100.0):
        raise ValueError(f"gamut: L must be in [0, 100] (Lab lightness), got {L!r}")
    if not (np.isfinite(step) and np.isfinite(ab_max) and step > 0 and ab_max >= 0):
        raise ValueError(f"gamut: step must be > 0 and ab_max >= 0, got step={step!r}, ab_max={ab_max!r}")
    n = int(round(2 * ab_max / step)) + 1
    if n > 4096:
        raise ValueError(f"gamut: {n} x {n} grid is too fine (step {step}); use step >= {2 * ab_max / 4095:.3g}")
    axis = np.linspace(-ab_max, ab_max, n)
    a, b = np.meshgrid(axis, axis, indexing="ij")
    fy = (L + 16.0) / 116.0
    f = np.stack([a / 500.0 + fy, np.full_like(a, fy), fy - b / 200.0])
    xyz = np.where(f > 0.2068966, f ** 3, (f - 16.0 / 116.0) / 7.787) * np.asarray(_WHITE)[:, None, None]
    lin = np.einsum("rc,cij->rij", _XYZ_TO_RGB, xyz)
    # fz < 0 is clamped by the official conversion (a different colour comes out): out of gamut.
    mask = (f[2] >= 0) & np.all((lin >= -GAMUT_TOLERANCE) & (lin <= 1.0 + GAMUT_TOLERANCE), axis=0)
    return mask, axis.astype(np.float32)

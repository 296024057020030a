"""Spectral-residual saliency (Hou & Zhang, CVPR 2007) in numpy, for adversarial training.

SCGAN (Zhao et al., TCSVT 2020) gives a second discriminator the colour image multiplied by a
saliency map. Training computes that map here, per sample, from the grey input L (what the
generator sees at inference too), never from the ground truth.

The method runs on the lightness as an intensity, L*/100 in [0, 1]: at a working scale of ``work`` x ``work`` pixels (64 in the paper), take the
log amplitude spectrum ``A`` and the phase ``P`` of the image's 2-D FFT; the *spectral
residual* is ``R = A - h * A`` (``h`` a 3 x 3 mean filter: what is left after removing the
smooth, "expected" part of the log spectrum shared by natural images); the saliency map is
``|IFFT(exp(R + iP))|^2`` smoothed by a Gaussian (sigma ``sigma`` working-scale pixels),
then scaled to [0, 1] and resized back to the input's size.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

WORK_SIZE = 64      # working scale (Hou & Zhang: images down-sampled to 64 px)
SIGMA = 8.0         # Gaussian smoothing of the map, in working-scale pixels (Hou & Zhang: 8)
_FLAT = 1e-6        # an image whose values vary less than this has no salient region


def _resize(x: np.ndarray, h: int, w: int) -> np.ndarray:
    """(H, W) float -> (h, w) float32, bilinear (Pillow, mode F)."""
    if x.shape == (h, w):
        return x.astype(np.float32, copy=False)
    return np.asarray(Image.fromarray(np.ascontiguousarray(x, np.float32), mode="F").resize(
        (w, h), Image.BILINEAR), np.float32)


def _mean3(a: np.ndarray) -> np.ndarray:
    """3 x 3 mean filter of (h, w) ``a`` with edge replication."""
    p = np.pad(a, 1, mode="edge")
    h, w = a.shape
    return sum(p[i:i + h, j:j + w] for i in range(3) for j in range(3)) / 9.0


def gaussian_blur(x: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of (h, w) ``x`` (kernel radius ceil(3 sigma), mirrored borders)
    -> (h, w) float64. ``sigma <= 0`` returns ``x`` unchanged."""
    x = np.asarray(x, np.float64)
    if sigma <= 0:
        return x
    r = int(np.ceil(3 * sigma))
    t = np.arange(-r, r + 1, dtype=np.float64)
    k = np.exp(-0.5 * (t / sigma) ** 2)
    k /= k.sum()
    h, w = x.shape
    p = np.pad(x, ((r, r), (0, 0)), mode="symmetric")
    x = sum(k[i] * p[i:i + h] for i in range(2 * r + 1))
    p = np.pad(x, ((0, 0), (r, r)), mode="symmetric")
    return sum(k[i] * p[:, i:i + w] for i in range(2 * r + 1))


def spectral_residual(L: np.ndarray, work: int = WORK_SIZE, sigma: float = SIGMA) -> np.ndarray:
    """Saliency map of a grey image.

    ``L``: (H, W) or (1, H, W) float, the nets' normalised lightness (L* - 50) / 100 in
    [-0.5, 0.5]; the method runs on the intensity ``L + 0.5`` = L*/100 (the map does not change
    when that intensity is scaled, but it does when it is shifted: the spectrum's DC term is
    part of the residual). Returns (H, W) float32 in [0, 1] with maximum 1 (the same
    leading 1 axis as ``L`` when given one); a flat image (no variation) gives all ones:
    nothing stands out, so every pixel keeps its full weight.
    """
    L = np.asarray(L)
    lead = L.ndim == 3
    if lead:
        if L.shape[0] != 1:
            raise ValueError(f"spectral_residual: expected (H, W) or (1, H, W), got {L.shape}")
        L = L[0]
    if L.ndim != 2 or min(L.shape) < 1:
        raise ValueError(f"spectral_residual: expected (H, W) or (1, H, W), got {L.shape}")
    H, W = L.shape
    x = _resize(L.astype(np.float32) + 0.5, work, work).astype(np.float64)
    if float(x.max() - x.min()) < _FLAT:
        out = np.ones((H, W), np.float32)
        return out[None] if lead else out
    f = np.fft.fft2(x)
    log_amp = np.log(np.abs(f) + 1e-12)
    phase = np.angle(f)
    residual = log_amp - _mean3(log_amp)
    sal = np.abs(np.fft.ifft2(np.exp(residual + 1j * phase))) ** 2
    sal = gaussian_blur(sal, sigma)
    sal -= sal.min()
    top = sal.max()
    sal = sal / top if top > 0 else np.ones_like(sal)
    out = np.clip(_resize(sal.astype(np.float32), H, W), 0.0, 1.0)
    out /= max(float(out.max()), 1e-12)
    return out[None] if lead else out

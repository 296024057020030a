"""The ab colour distribution of the classification head, in numpy (no torch).

The SIGGRAPH'17 head predicts, at every S/4 x S/4 position, logits over ``NUM_BINS`` = 529 ab
bins: a 23 x 23 grid of step 10 over a, b in [-110, 110] (bin ``i`` = ``ia * 23 + ib``). This module
holds everything that reads or builds such distributions:

* :func:`bin_centers`, :func:`ab_to_bins`: the grid;
* :func:`annealed_mean`: Zhang et al. 2016's decoding of a distribution into one colour
  (softmax at temperature T, then the mean; T = 1 is the mean, T -> 0 the mode);
* :func:`ab_histogram`: the 529-bin histogram of an ab image (global hints, the training prior);
* :func:`smoothed_prior`, :func:`rebalance_weights`: class rebalancing (Zhang et al. 2016, Eq. 3-4).

Shapes: ab in normalised units (Lab ab / 110) unless a name says Lab.
"""
from __future__ import annotations

import numpy as np

AB_STEP = 10.0
AB_MAX = 110.0
GRID = int(2 * AB_MAX / AB_STEP + 1)   # 23
NUM_BINS = GRID * GRID                  # 529
DEFAULT_TEMPERATURE = 0.38              # Zhang et al. 2016
DEFAULT_MIX = 0.35                      # share of the annealed mean in mixed decoding (chosen on val, README)
DEFAULT_REBALANCE_MIX = 0.5             # lambda of the uniform mix (Zhang et al. 2016)
DEFAULT_PRIOR_SIGMA = 5.0               # Gaussian smoothing of the prior, Lab units


def bin_centers() -> np.ndarray:
    """(529, 2) float32 bin centres in normalised ab (a, b), bin ``i = ia * 23 + ib``."""
    axis = (np.arange(GRID, dtype=np.float32) * AB_STEP - AB_MAX) / AB_MAX
    a, b = np.meshgrid(axis, axis, indexing="ij")
    return np.stack([a.reshape(-1), b.reshape(-1)], axis=1).astype(np.float32)


def ab_to_bins(ab: np.ndarray) -> np.ndarray:
    """Normalised ab (..., 2, H, W) -> (..., H, W) int64 nearest bin index."""
    ab = np.asarray(ab, np.float32)
    idx = np.clip(np.round((ab * AB_MAX + AB_MAX) / AB_STEP), 0, GRID - 1).astype(np.int64)
    return idx[..., 0, :, :] * GRID + idx[..., 1, :, :]


def softmax(logits: np.ndarray, temperature: float = 1.0, axis: int = -3) -> np.ndarray:
    """Softmax of ``logits / temperature`` along ``axis`` (the 529 bins), float32."""
    z = np.asarray(logits, np.float32) / np.float32(temperature)
    z = z - z.max(axis=axis, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=axis, keepdims=True)
    return z


def check_temperature(temperature) -> float:
    """``temperature`` as a float in (0, 10]; ValueError naming it otherwise."""
    try:
        t = float(temperature)
    except (TypeError, ValueError):
        raise ValueError(f"temperature must be a number in (0, 10], got {temperature!r}") from None
    if not (0.0 < t <= 10.0):
        raise ValueError(f"temperature must be a number in (0, 10], got {temperature!r}")
    return t


def check_mix(mix) -> float:
    """``mix`` as a float in [0, 1] (the annealed mean's share in mixed decoding); ValueError naming it otherwise."""
    try:
        m = float(mix)
    except (TypeError, ValueError):
        raise ValueError(f"mix must be a number in [0, 1], got {mix!r}") from None
    if not (0.0 <= m <= 1.0):
        raise ValueError(f"mix must be in [0, 1] (the annealed mean's share of the ab), got {mix!r}")
    return m


def annealed_mean(logits: np.ndarray, temperature: float = DEFAULT_TEMPERATURE) -> np.ndarray:
    """Class logits (N, 529, h, w) -> normalised ab (N, 2, h, w) float32: the mean of the
    distribution re-sharpened at ``temperature`` (Zhang et al. 2016, Eq. 5).

    Computed as sum_k e_k c_k / sum_k e_k with e = exp((logits - max) / T): one contraction of
    [centres; ones] (3, 529) with e (529, h*w) per image gives both sums, so the probabilities
    are never normalised bin by bin (the same numbers as :func:`softmax` then the weighted sum, up
    to float32 rounding)."""
    logits = np.asarray(logits, np.float32)
    if logits.ndim != 4 or logits.shape[1] != NUM_BINS:
        raise ValueError(f"class logits must be (N, {NUM_BINS}, h, w), got {logits.shape}")
    inv_t = np.float32(1.0 / check_temperature(temperature))
    n, k, h, w = logits.shape
    weights = np.concatenate([bin_centers().T, np.ones((1, k), np.float32)], 0)   # (3, 529)
    out = np.empty((n, 2, h, w), np.float32)
    for i in range(n):
        z = logits[i].reshape(k, h * w)
        e = z - z.max(axis=0, keepdims=True)
        e *= inv_t
        np.exp(e, out=e)
        # einsum's own loops, not BLAS: OpenBLAS's worker threads keep spinning after a call and
        # slow the ONNX Runtime / native kernels that follow (an editor edit took 160 ms, not 115)
        sums = np.einsum("kp,ck->cp", e, weights)                                  # (3, h*w)
        out[i] = (sums[:2] / sums[2:]).reshape(2, h, w)
    return out


def upsample_ab(ab: np.ndarray, size: int) -> np.ndarray:
    """(N, 2, h, w) -> (N, 2, size, size) bilinear (half-pixel centres, edge clamped), float32."""
    ab = np.asarray(ab, np.float32)
    h, w = ab.shape[-2:]

    def weights(n_in, n_out):
        x = (np.arange(n_out, dtype=np.float64) + 0.5) * n_in / n_out - 0.5
        x = np.clip(x, 0, n_in - 1)
        i0 = np.floor(x).astype(np.int64)
        i1 = np.minimum(i0 + 1, n_in - 1)
        f = (x - i0).astype(np.float32)
        return i0, i1, f

    y0, y1, fy = weights(h, size)
    x0, x1, fx = weights(w, size)
    rows = ab[..., y0, :] * (1 - fy)[:, None] + ab[..., y1, :] * fy[:, None]
    return (rows[..., x0] * (1 - fx) + rows[..., x1] * fx).astype(np.float32)


def ab_histogram(ab: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Normalised ab (2, H, W) -> (529,) float32 histogram summing to 1 (of the ``mask`` pixels
    when given; a uniform histogram when no pixel counts)."""
    bins = ab_to_bins(np.asarray(ab, np.float32)[None])[0].reshape(-1)
    weights = None if mask is None else np.asarray(mask, np.float32).reshape(-1)
    hist = np.bincount(bins, weights=weights, minlength=NUM_BINS).astype(np.float64)
    total = hist.sum()
    return (hist / total if total > 0 else np.full(NUM_BINS, 1.0 / NUM_BINS)).astype(np.float32)


def smoothed_prior(counts: np.ndarray, sigma: float = DEFAULT_PRIOR_SIGMA) -> np.ndarray:
    """(529,) bin counts -> (529,) float64 probability, smoothed by a Gaussian of ``sigma`` Lab units
    on the ab grid (Zhang et al. 2016 smooth the empirical distribution with sigma = 5)."""
    p = np.asarray(counts, np.float64).reshape(GRID, GRID)
    p = p / max(p.sum(), 1e-12)
    if sigma > 0:
        r = int(np.ceil(3 * sigma / AB_STEP))
        k = np.exp(-0.5 * ((np.arange(-r, r + 1) * AB_STEP) / sigma) ** 2)
        k /= k.sum()
        pad = np.pad(p, r)
        p = np.stack([np.convolve(row, k, mode="valid") for row in pad])
        p = np.stack([np.convolve(col, k, mode="valid") for col in p.T]).T
    p = p.reshape(-1)
    return p / p.sum()


def rebalance_weights(prior: np.ndarray, mix: float = DEFAULT_REBALANCE_MIX) -> np.ndarray:
    """Class-rebalancing weights (529,) float32: w ∝ 1 / ((1 - mix) p + mix / Q), scaled so that
    the expected weight under ``prior`` is 1 (Zhang et al. 2016, Eq. 4)."""
    if not 0.0 < mix <= 1.0:
        raise ValueError(f"rebalancing mix must be in (0, 1], got {mix}")
    p = np.asarray(prior, np.float64)
    w = 1.0 / ((1.0 - mix) * p + mix / NUM_BINS)
    w /= (p * w).sum()
    return w.astype(np.float32)


__all__ = ["AB_MAX", "AB_STEP", "DEFAULT_MIX", "DEFAULT_TEMPERATURE", "DEFAULT_REBALANCE_MIX", "GRID", "NUM_BINS",
           "ab_histogram", "ab_to_bins", "annealed_mean", "bin_centers", "check_mix", "check_temperature",
           "rebalance_weights", "smoothed_prior", "softmax", "upsample_ab"]

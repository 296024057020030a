"""Colour suggestions for a point: distinct modes of the classification head's ab distribution.

SIGGRAPH'17's interactive GUI (junyanz/interactive-deep-colorization) recommends colours at a clicked
pixel from the distribution of the classification head, *softened*: the softmax of the logits times
0.2 (temperature 5), so that plausible but less likely colours keep some mass; it then samples that
distribution, clusters the samples with k-means and ranks the clusters by their share. We keep the
softening and find the modes deterministically on the 23 x 23 ab grid instead of by sampling:

1. bins whose centre cannot be shown at the pixel's lightness (outside the sRGB gamut,
   :func:`instcolor.color.gamut`) are left out and the rest renormalised (a true colour is always
   displayable, so mass out of gamut is the model's error);
2. greedy peaks: the most probable remaining bin becomes a mode and every bin within ``radius``
   (Lab units) of it is suppressed; repeated until ``k`` modes or no mass is left;
3. every remaining bin is assigned to its nearest mode (ab distance): a mode's probability is the
   mass of its bins (so the probabilities sum to at most 1, the in-gamut mass), and its colour the
   probability-weighted mean of its bins within ``radius`` (the peak refined below the bin step);
4. modes are sorted by probability and shown at the pixel's own L (:func:`instcolor.color.lab_to_rgb_uint8`);
   a mode whose 8-bit colour repeats an earlier one is merged into it.

Shapes: ``probs`` (529,) or (23, 23) over the bins of :mod:`instcolor.distribution` (bin ``i = ia * 23 + ib``);
ab in Lab units unless a name says normalised. numpy only.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import color
from .distribution import AB_MAX, AB_STEP, GRID, NUM_BINS, softmax

#: Softening of the class distribution before its modes are taken. SIGGRAPH'17's GUI uses
#: softmax(0.2 * logits) (temperature 5); with our rebalanced heads, measured on 40 val photos x 20 pixels
#: (README, "Colour suggestions"), temperature 1 after undoing the rebalancing put a suggestion within
#: Delta-E 10 of the true colour more often (89.6 % against 86.0 % at 5).
SUGGEST_TEMPERATURE = 1.0
#: Default suppression radius around a mode, Lab units (measured with the temperature: 12 over 15 and 7).
SUGGEST_RADIUS = 12.0
DEFAULT_K = 8
MAX_K = 64


@dataclass(frozen=True)
class Mode:
    """One mode: ``ab`` (2,) float32 Lab units, ``probability`` (mass of its bins), ``peak`` bin index."""

    ab: np.ndarray
    probability: float
    peak: int


def check_k(k) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= MAX_K:
        raise ValueError(f"k (number of suggestions) must be an integer in 1..{MAX_K}, got {k!r}")
    return int(k)


def find_modes(probs: np.ndarray, k: int = DEFAULT_K, radius: float = SUGGEST_RADIUS,
               allowed: np.ndarray | None = None) -> list[Mode]:
    """Up to ``k`` distinct modes of one ab distribution, most probable first.

    ``probs``: (529,) or (23, 23) non-negative bin probabilities (summing to at most 1; not renormalised).
    ``allowed``: (529,) or (23, 23) bool, the bins that may carry a mode and count towards the
    probabilities (e.g. the in-gamut bins at the pixel's L); None = all. ``radius``: suppression radius
    in Lab units (> 0): modes are more than ``radius`` apart. See the module docstring for the method."""
    k = check_k(k)
    p = np.asarray(probs, np.float64).reshape(-1)
    if p.shape != (NUM_BINS,) or not np.all(np.isfinite(p)) or (p < 0).any():
        raise ValueError(f"probs must be {NUM_BINS} finite non-negative numbers, got shape {np.asarray(probs).shape}")
    if not (np.isfinite(radius) and radius > 0):
        raise ValueError(f"radius must be a positive number of Lab units, got {radius!r}")
    if allowed is not None:
        allowed = np.asarray(allowed, bool).reshape(-1)
        if allowed.shape != (NUM_BINS,):
            raise ValueError(f"allowed must have {NUM_BINS} entries, got shape {allowed.shape}")
        p = np.where(allowed, p, 0.0)
    # (529, 2) bin centres in Lab units, exact (from the integer grid), so that equal distances tie exactly
    centers = np.stack(np.divmod(np.arange(NUM_BINS), GRID), axis=1) * AB_STEP - AB_MAX
    dist = np.sqrt(((centers[:, None, :] - centers[None, :, :]) ** 2).sum(-1))   # (529, 529)

    peaks: list[int] = []
    free = p > 0
    while len(peaks) < k and free.any():
        i = int(np.argmax(np.where(free, p, -1.0)))
        peaks.append(i)
        free &= dist[i] > radius
    if not peaks:
        return []
    # Nearest mode per bin (ties: the earlier, more probable peak, as argmin returns the first).
    owner = np.argmin(dist[:, peaks], axis=1)
    modes = []
    for m, i in enumerate(peaks):
        members = owner == m
        near = members & (dist[i] <= radius)
        w = p[near]
        ab = (w[:, None] * centers[near]).sum(0) / w.sum()
        modes.append(Mode(ab=ab.astype(np.float32), probability=float(p[members].sum()), peak=i))
    modes.sort(key=lambda mode: -mode.probability)
    return modes


def suggestion_probs(logits: np.ndarray, temperature: float = SUGGEST_TEMPERATURE) -> np.ndarray:
    """(529,) class logits of one position -> (529,) float64 softened distribution, softmax(logits / T)."""
    z = np.asarray(logits, np.float32).reshape(NUM_BINS, 1, 1)
    return softmax(z, temperature, axis=0).reshape(-1).astype(np.float64)


def suggest_at(logits: np.ndarray, L: float, k: int = DEFAULT_K, radius: float = SUGGEST_RADIUS,
               temperature: float = SUGGEST_TEMPERATURE,
               log_weights: np.ndarray | None = None) -> list[tuple[tuple[int, int, int], float]]:
    """Suggestions from the (529,) class logits of one position, shown at lightness ``L`` (Lab units):
    a list of ((r, g, b) uint8 ints, probability), most probable first, with distinct colours. The
    probabilities are shares of the softened distribution over the bins displayable at ``L``: every
    such bin belongs to its nearest mode, so they sum to 1 (like the cluster shares of SIGGRAPH'17's
    k-means); with a small ``k`` a share also holds the mass of colours far from its mode.
    ``log_weights`` (529,): the log class-rebalancing weights the head was trained with; they are
    taken off the logits first, so the suggestions follow how often colours occur, not the
    rebalanced loss's preference for rare ones."""
    if log_weights is not None:
        logits = np.asarray(logits, np.float32).reshape(-1) - np.asarray(log_weights, np.float32).reshape(-1)
    allowed = color.gamut(L, step=AB_STEP, ab_max=AB_MAX)[0].reshape(-1)   # always holds the grey bin
    probs = np.where(allowed, suggestion_probs(logits, temperature), 0.0)
    modes = find_modes(probs / probs.sum(), k, radius, allowed=allowed)
    return modes_to_colors(modes, L)


def modes_to_colors(modes: list[Mode], L: float) -> list[tuple[tuple[int, int, int], float]]:
    """Modes -> [((r, g, b), probability)] at lightness ``L``; a repeated 8-bit colour is merged into
    the earlier (more probable) mode, then the list is re-sorted by probability."""
    if not modes:
        return []
    rgb = color.lab_to_rgb_uint8(np.full(len(modes), L, np.float32), np.stack([m.ab for m in modes]))
    merged: dict[tuple[int, int, int], float] = {}
    for triple, mode in zip(map(tuple, rgb.tolist()), modes):
        merged[triple] = merged.get(triple, 0.0) + mode.probability
    return sorted(merged.items(), key=lambda item: -item[1])


def grid_cell(x: float, y: float, image_hw: tuple[int, int], size: int) -> tuple[int, int]:
    """Input pixel (x, y) -> (row, col) on the S/4 grid of the class logits: the processing pixel
    ``int(y / H * S)`` (the mapping the hints use), divided by 4."""
    h, w = image_hw
    try:
        x, y = float(x), float(y)
    except (TypeError, ValueError):
        raise ValueError(f"suggestion point: x and y must be numbers, got ({x!r}, {y!r})") from None
    if not (np.isfinite(x) and np.isfinite(y) and 0 <= x < w and 0 <= y < h):
        raise ValueError(f"suggestion point ({x}, {y}) lies outside the {w}x{h} image")
    cells = size // 4
    return min(int(y / h * size) // 4, cells - 1), min(int(x / w * size) // 4, cells - 1)


def pixel_lightness(image: np.ndarray, x: float, y: float) -> float:
    """Lab L (0..100) of the input pixel at (x, y) of an (H, W, 3) uint8 image, official conversion."""
    return float(color.rgb_uint8_to_lab(image[int(y), int(x)])[0, 0])


__all__ = ["DEFAULT_K", "MAX_K", "Mode", "SUGGEST_RADIUS", "SUGGEST_TEMPERATURE", "check_k", "find_modes",
           "grid_cell", "modes_to_colors", "pixel_lightness", "suggest_at", "suggestion_probs"]

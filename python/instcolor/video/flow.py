"""Optical flow at processing resolution (OpenCV DIS), warping and scene-cut distance.

All functions take grey frames as (h, w) uint8 and flows as (h, w, 2) float32 (dx, dy) in pixels.
OpenCV is imported here, so ``import instcolor.video`` stays light until a video is processed.
"""
from __future__ import annotations

import numpy as np

from .options import VideoError

SCENE_BINS = 64


def _cv2():
    try:
        import cv2
    except ImportError as e:  # pragma: no cover - exercised only without the extra
        raise VideoError("video colorization needs OpenCV for the optical flow: pip install 'instcolor[video]' "
                         f"(opencv-python-headless) ({e})") from None
    return cv2


class DisFlow:
    """OpenCV DIS optical flow (one instance per video and thread: the OpenCV object keeps state)."""

    def __init__(self, preset: str = "fast"):
        cv2 = _cv2()
        presets = {"ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST, "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
                   "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM}
        if preset not in presets:
            raise VideoError(f"flow preset must be one of {', '.join(presets)}, got {preset!r}")
        self.preset = preset
        self._dis = cv2.DISOpticalFlow_create(presets[preset])

    def __call__(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Flow from grey frame ``a`` to ``b`` at ``a``'s pixels: a(x) ~ b(x + flow(x))."""
        return self._dis.calc(np.ascontiguousarray(a), np.ascontiguousarray(b), None)

    def pair(self, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(a -> b at a's pixels, b -> a at b's pixels)."""
        return self(a, b), self(b, a)


_GRIDS: dict = {}


def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    g = _GRIDS.get((h, w))
    if g is None:
        g = _GRIDS[(h, w)] = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    return g


def remap(img: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """``img`` (h, w) or (h, w, C) float32 sampled at ``x + flow(x)`` (bilinear, border replicated)."""
    cv2 = _cv2()
    gx, gy = _grid(*flow.shape[:2])
    return cv2.remap(img, gx + flow[..., 0], gy + flow[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def occlusion(flow_ab: np.ndarray, flow_ba: np.ndarray) -> np.ndarray:
    """The test of :func:`instcolor.metrics.flow_occlusion` (same rules and constants) in float32 with
    OpenCV's remap: (h, w) bool, True where a pixel of frame a is occluded in frame b or leaves the frame."""
    from .. import metrics as m

    cv2 = _cv2()
    f = np.asarray(flow_ab, np.float32)
    h, w = f.shape[:2]
    gx, gy = _grid(h, w)
    x, y = gx + f[..., 0], gy + f[..., 1]
    inside = (x >= 0) & (x <= w - 1) & (y >= 0) & (y <= h - 1)
    b_at = cv2.remap(np.asarray(flow_ba, np.float32), x, y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    f2 = f[..., 0] ** 2 + f[..., 1] ** 2
    s = f + b_at
    fb = s[..., 0] ** 2 + s[..., 1] ** 2
    occluded = fb > m.OCCLUSION_FB_RATIO * (f2 + b_at[..., 0] ** 2 + b_at[..., 1] ** 2) + m.OCCLUSION_FB_BIAS
    grad = np.zeros((h, w), np.float32)
    du = f[:, :-1] - f[:, 1:]
    dv = f[:-1, :] - f[1:, :]
    grad[:, :-1] += du[..., 0] ** 2 + du[..., 1] ** 2
    grad[:-1, :] += dv[..., 0] ** 2 + dv[..., 1] ** 2
    boundary = grad > m.OCCLUSION_MB_RATIO * f2 + m.OCCLUSION_MB_BIAS
    return occluded | boundary | ~inside


def grey_of_L(full_L: np.ndarray) -> np.ndarray:
    """Normalised processing-size L ((L - 50) / 100, shape (1, S, S) or (S, S)) -> (S, S) uint8 lightness
    0..255 (L * 2.55), the grey image the flow and the scene-cut test see."""
    L = np.asarray(full_L, np.float32).reshape(full_L.shape[-2:])
    return np.clip((L * 100.0 + 50.0) * 2.55 + 0.5, 0, 255).astype(np.uint8)


def grey_histogram(grey: np.ndarray) -> np.ndarray:
    """(SCENE_BINS,) float64 histogram of a grey uint8 frame, summing to 1."""
    h = np.bincount((grey.reshape(-1) >> 2).astype(np.int64), minlength=SCENE_BINS).astype(np.float64)
    return h / max(h.sum(), 1.0)


def scene_distance(hist_a: np.ndarray, hist_b: np.ndarray) -> float:
    """Half the L1 distance of two grey histograms: 0 (same) .. 1 (disjoint)."""
    return 0.5 * float(np.abs(hist_a - hist_b).sum())


def sample_flow(flow: np.ndarray, x: float, y: float) -> tuple[float, float]:
    """Bilinear sample of ``flow`` at (x, y) in its pixel grid (clamped to the grid)."""
    h, w = flow.shape[:2]
    x = min(max(x, 0.0), w - 1.0)
    y = min(max(y, 0.0), h - 1.0)
    x0, y0 = min(int(x), max(w - 2, 0)), min(int(y), max(h - 2, 0))
    x1, y1 = min(x0 + 1, w - 1), min(y0 + 1, h - 1)
    fx, fy = x - x0, y - y0
    top = (1 - fx) * flow[y0, x0] + fx * flow[y0, x1]
    bot = (1 - fx) * flow[y1, x0] + fx * flow[y1, x1]
    v = (1 - fy) * top + fy * bot
    return float(v[0]), float(v[1])

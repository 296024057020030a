"""Image-quality metrics for colorization results (numpy, float64 maths).

All image arguments are RGB ``uint8`` arrays of shape (H, W, 3); a prediction and its ground
truth (GT) must have the same shape. Bad inputs raise ValueError naming the argument.

* :func:`psnr` — peak 255, MSE over all pixels and channels; identical images give ``inf``.
* :func:`ssim` — Wang et al. 2004 SSIM: 11x11 Gaussian window (sigma 1.5), K1 0.01, K2 0.03,
  L 255, population (co)variances, per RGB channel then averaged. The mean is taken over the
  "valid" positions only (the full window inside the image), which equals scikit-image's
  ``structural_similarity(gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
  data_range=255, channel_axis=-1)``: it filters the padded image and then crops
  ``(win - 1) // 2 = 5`` pixels from every border, so padding never reaches the averaged values.
  The image needs at least :data:`SSIM_MIN_SIDE` (11) pixels on each side.
* :func:`colorfulness` — Hasler & Süsstrunk 2003, and :func:`colorfulness_in_range` for the
  share of images whose colourfulness lies in [16, 20] (the range SCGAN reports).
* :func:`crop_boxes` / :func:`instance_metrics` — the same metrics on box crops (instance level,
  as the paper's Table 2).
* :func:`lpips_status` / :func:`lpips_available` / :func:`lpips_distance` — LPIPS (AlexNet) only
  where the ``lpips`` package, torchvision and all the network weights are already on disk;
  nothing is ever downloaded.
"""
from __future__ import annotations

import contextlib
import importlib.util
import math
import sys
from pathlib import Path

import numpy as np

PEAK = 255.0
SSIM_SIGMA = 1.5
SSIM_TRUNCATE = 3.5  # as scikit-image with gaussian_weights=True: radius int(3.5 * 1.5 + 0.5) = 5
SSIM_RADIUS = int(SSIM_TRUNCATE * SSIM_SIGMA + 0.5)
SSIM_WIN = 2 * SSIM_RADIUS + 1  # 11
SSIM_MIN_SIDE = SSIM_WIN  # the valid region needs the whole window inside the image
SSIM_K1, SSIM_K2 = 0.01, 0.03

# The AlexNet checkpoint torchvision loads for ``lpips.LPIPS(net="alex")`` (torch hub cache).
LPIPS_ALEX_CHECKPOINT = "alexnet-owt-7be5be79.pth"


# ---------------------------------------------------------------------------------------------
# validation


def _check_rgb(arr, name: str) -> np.ndarray:
    if not isinstance(arr, np.ndarray):
        raise ValueError(f"{name}: expected a numpy array, got {type(arr).__name__}")
    if arr.dtype != np.uint8:
        raise ValueError(f"{name}: expected dtype uint8, got {arr.dtype}")
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"{name}: expected shape (H, W, 3), got {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{name}: empty image {arr.shape}")
    return arr


def _check_pair(pred, gt) -> tuple[np.ndarray, np.ndarray]:
    _check_rgb(pred, "pred")
    _check_rgb(gt, "gt")
    if pred.shape != gt.shape:
        raise ValueError(f"pred and gt differ in shape: pred {pred.shape}, gt {gt.shape}")
    return pred, gt


# ---------------------------------------------------------------------------------------------
# PSNR / SSIM


def psnr(pred: np.ndarray, gt: np.ndarray) -> float:
    """PSNR in dB of ``pred`` (H, W, 3) uint8 against ``gt`` (H, W, 3) uint8.

    ``10 * log10(255**2 / MSE)`` with the MSE over all pixels and channels. Identical images
    (MSE 0) give ``float('inf')``; averages over a data set should skip those and count them
    (as :func:`instcolor.evaluate.evaluate_folders` does) rather than cap them.
    """
    pred, gt = _check_pair(pred, gt)
    mse = float(np.mean((pred.astype(np.float64) - gt.astype(np.float64)) ** 2))
    if mse == 0.0:
        return float("inf")
    return 10.0 * math.log10(PEAK * PEAK / mse)


def gaussian_window_1d(sigma: float = SSIM_SIGMA, radius: int = SSIM_RADIUS) -> np.ndarray:
    """(2 * radius + 1,) float64 Gaussian taps ``exp(-x**2 / (2 sigma**2))``, normalised to sum 1."""
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    w = np.exp(-0.5 * (x / sigma) ** 2)
    return w / w.sum()


def _filter_valid(maps: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Separable 'valid' correlation of (..., H, W) float64 maps with the 1-D window ``w`` along
    H then W -> (..., H - k + 1, W - k + 1)."""
    k = len(w)
    h, wd = maps.shape[-2], maps.shape[-1]
    rows = sum(w[i] * maps[..., i:i + h - k + 1, :] for i in range(k))
    return sum(w[i] * rows[..., :, i:i + wd - k + 1] for i in range(k))


def ssim(pred: np.ndarray, gt: np.ndarray) -> float:
    """Mean SSIM of ``pred`` (H, W, 3) uint8 against ``gt`` (H, W, 3) uint8, in [-1, 1].

    Per channel: local means, population variances and covariance under an 11x11 Gaussian
    window (sigma 1.5) at every position where the window fits inside the image
    ((H - 10) x (W - 10) positions), ``S = (2 mx my + C1)(2 sxy + C2) / ((mx² + my² + C1)(sx² + sy² + C2))``
    with ``C1 = (0.01 * 255)²``, ``C2 = (0.03 * 255)²``; the mean of S over those positions, then
    the mean over the three channels. ValueError if H or W is below :data:`SSIM_MIN_SIDE` (11).
    """
    pred, gt = _check_pair(pred, gt)
    h, w = pred.shape[:2]
    if min(h, w) < SSIM_MIN_SIDE:
        raise ValueError(f"ssim: image {h}x{w} is smaller than the {SSIM_WIN}x{SSIM_WIN} window "
                         f"(needs at least {SSIM_MIN_SIDE} pixels on each side)")
    c1 = (SSIM_K1 * PEAK) ** 2
    c2 = (SSIM_K2 * PEAK) ** 2
    win = gaussian_window_1d()
    scores = []
    for c in range(3):
        x = pred[..., c].astype(np.float64)
        y = gt[..., c].astype(np.float64)
        mx, my, mxx, myy, mxy = _filter_valid(np.stack([x, y, x * x, y * y, x * y]), win)
        vx = mxx - mx * mx
        vy = myy - my * my
        vxy = mxy - mx * my
        s = ((2 * mx * my + c1) * (2 * vxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
        scores.append(float(s.mean()))
    return float(np.mean(scores))


# ---------------------------------------------------------------------------------------------
# colourfulness


def colorfulness(rgb: np.ndarray) -> float:
    """Hasler & Süsstrunk (2003) colourfulness of ``rgb`` (H, W, 3) uint8.

    ``rg = R - G``, ``yb = (R + G) / 2 - B`` (signed, float64);
    ``M = sqrt(std(rg)² + std(yb)²) + 0.3 * sqrt(mean(rg)² + mean(yb)²)`` with population
    standard deviations. A grey image gives 0.
    """
    rgb = _check_rgb(rgb, "rgb").astype(np.float64)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    rg = r - g
    yb = 0.5 * (r + g) - b
    std = math.sqrt(float(rg.var()) + float(yb.var()))
    mean = math.sqrt(float(rg.mean()) ** 2 + float(yb.mean()) ** 2)
    return std + 0.3 * mean


def colorfulness_in_range(values, lo: float = 16.0, hi: float = 20.0) -> float:
    """Share (0..1) of the colourfulness ``values`` (a sequence of N >= 1 finite numbers) lying in
    the closed range [lo, hi]."""
    vals = np.asarray(values, dtype=np.float64).reshape(-1)
    if vals.size == 0:
        raise ValueError("values: empty; need at least one colourfulness value")
    if not np.all(np.isfinite(vals)):
        raise ValueError("values: must all be finite")
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi:
        raise ValueError(f"lo, hi: need finite lo <= hi, got lo={lo}, hi={hi}")
    return float(np.mean((vals >= lo) & (vals <= hi)))


# ---------------------------------------------------------------------------------------------
# instance level


def clip_boxes(boxes, height: int, width: int) -> np.ndarray:
    """(N, 4) xyxy boxes in pixels (floats allowed) -> (N, 4) int64 pixel bounds clipped to the
    image: ``x0 = floor(x0)``, ``x1 = ceil(x1)`` (same for y), then into [0, width] / [0, height].
    A box wholly outside the image, or with x1 <= x0 / y1 <= y0, ends up with zero area."""
    arr = np.asarray(boxes, dtype=np.float64)
    if arr.size == 0:
        return np.zeros((0, 4), np.int64)
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ValueError(f"boxes: expected shape (N, 4) xyxy, got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError("boxes: coordinates must be finite")
    out = np.empty(arr.shape, np.int64)
    out[:, 0] = np.clip(np.floor(arr[:, 0]), 0, width)
    out[:, 1] = np.clip(np.floor(arr[:, 1]), 0, height)
    out[:, 2] = np.clip(np.ceil(arr[:, 2]), 0, width)
    out[:, 3] = np.clip(np.ceil(arr[:, 3]), 0, height)
    out[:, 2] = np.maximum(out[:, 2], out[:, 0])
    out[:, 3] = np.maximum(out[:, 3], out[:, 1])
    return out


def crop_boxes(img: np.ndarray, boxes) -> list[np.ndarray]:
    """Crops (views) of ``img`` (H, W, C) for ``boxes`` (N, 4) xyxy in pixels, clipped with
    :func:`clip_boxes`; one crop per box, in order (a zero-area box gives an empty crop)."""
    if not isinstance(img, np.ndarray) or img.ndim != 3:
        raise ValueError(f"img: expected an (H, W, C) array, got {getattr(img, 'shape', type(img).__name__)}")
    h, w = img.shape[:2]
    return [img[y0:y1, x0:x1] for x0, y0, x1, y1 in clip_boxes(boxes, h, w)]


def instance_metrics(pred: np.ndarray, gt: np.ndarray, boxes) -> list[dict]:
    """PSNR and SSIM on the box crops of ``pred`` and ``gt`` (both (H, W, 3) uint8).

    ``boxes`` (N, 4) xyxy in pixels. Returns one dict per box with a non-empty crop:
    ``{"index": i, "box": [x0, y0, x1, y1] (clipped ints), "psnr": float (inf if identical),
    "ssim": float or None}``; ``ssim`` is None when the crop is under :data:`SSIM_MIN_SIDE` (11)
    pixels on a side (the 11x11 Gaussian window does not fit). Zero-area boxes are left out.
    """
    pred, gt = _check_pair(pred, gt)
    h, w = pred.shape[:2]
    rows = []
    for i, (x0, y0, x1, y1) in enumerate(clip_boxes(boxes, h, w)):
        if x1 <= x0 or y1 <= y0:
            continue
        p, g = pred[y0:y1, x0:x1], gt[y0:y1, x0:x1]
        small = min(y1 - y0, x1 - x0) < SSIM_MIN_SIDE
        rows.append({"index": i, "box": [int(x0), int(y0), int(x1), int(y1)],
                     "psnr": psnr(p, g), "ssim": None if small else ssim(p, g)})
    return rows


# ---------------------------------------------------------------------------------------------
# LPIPS (optional, never downloads)

_LPIPS_MODEL = None


def _lpips_checkpoint() -> Path:
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints" / LPIPS_ALEX_CHECKPOINT


def lpips_status() -> tuple[bool, str]:
    """``(True, "")`` if LPIPS (AlexNet) can run without any download, else ``(False, reason)``.

    Needs: the ``lpips`` and ``torchvision`` packages importable, the package's linear-layer
    weights ``lpips/weights/v0.1/alex.pth`` and the torchvision AlexNet checkpoint in the torch
    hub cache (``<torch.hub.get_dir()>/checkpoints/alexnet-owt-7be5be79.pth``).
    """
    for mod in ("lpips", "torchvision"):
        try:
            spec = importlib.util.find_spec(mod)
        except (ImportError, ValueError):
            spec = None
        if spec is None:
            return False, f"the '{mod}' package is not installed"
    spec = importlib.util.find_spec("lpips")
    locations = list(spec.submodule_search_locations or [])
    if not any((Path(d) / "weights" / "v0.1" / "alex.pth").is_file() for d in locations):
        return False, "the lpips package has no weights/v0.1/alex.pth"
    ckpt = _lpips_checkpoint()
    if not ckpt.is_file():
        return False, f"AlexNet weights not in the torch hub cache ({ckpt}); they are never downloaded"
    return True, ""


def lpips_available() -> bool:
    """True if :func:`lpips_distance` can run without downloading anything (see :func:`lpips_status`)."""
    return lpips_status()[0]


@contextlib.contextmanager
def _no_downloads():
    """Make torch.hub raise instead of downloading while the LPIPS net is built."""
    import torch.hub

    original = torch.hub.download_url_to_file

    def refuse(url, *args, **kwargs):
        raise RuntimeError(f"instcolor.metrics: refusing to download {url}")

    torch.hub.download_url_to_file = refuse
    try:
        yield
    finally:
        torch.hub.download_url_to_file = original


def _lpips_model():
    global _LPIPS_MODEL
    if _LPIPS_MODEL is None:
        ok, reason = lpips_status()
        if not ok:
            raise RuntimeError(f"LPIPS unavailable: {reason}")
        import lpips

        with _no_downloads(), contextlib.redirect_stdout(sys.stderr):
            model = lpips.LPIPS(net="alex")
        _LPIPS_MODEL = model.eval()
    return _LPIPS_MODEL


def lpips_distance(pred: np.ndarray, gt: np.ndarray) -> float:
    """LPIPS v0.1 (AlexNet) distance between ``pred`` and ``gt`` ((H, W, 3) uint8), lower is
    more similar. RuntimeError if :func:`lpips_available` is False."""
    import torch

    pred, gt = _check_pair(pred, gt)
    model = _lpips_model()

    def to_tensor(a):
        return torch.from_numpy(a.astype(np.float32) / 127.5 - 1.0).permute(2, 0, 1)[None]

    with torch.no_grad():
        return float(model(to_tensor(pred), to_tensor(gt)).reshape(-1)[0])


# ---------------------------------------------------------------------------------------------
# video: temporal consistency (CDC, warping error)

#: Frame distances of the colour distribution consistency (TCVC, Liu et al. 2021), weighted equally.
CDC_DILATIONS = (1, 2, 4)
#: Forward-backward consistency and motion-boundary constants of Lai et al. 2018 (after Ruder et al. 2016).
OCCLUSION_FB_RATIO, OCCLUSION_FB_BIAS = 0.01, 0.5
OCCLUSION_MB_RATIO, OCCLUSION_MB_BIAS = 0.01, 0.002


def rgb_histograms(rgb: np.ndarray) -> np.ndarray:
    """(3, 256) float64: the 256-bin histogram of each RGB channel of ``rgb`` (H, W, 3) uint8,
    divided by the pixel count (each row sums to 1)."""
    rgb = _check_rgb(rgb, "rgb")
    n = rgb.shape[0] * rgb.shape[1]
    return np.stack([np.bincount(rgb[..., c].reshape(-1), minlength=256) for c in range(3)]).astype(np.float64) / n


def js_divergence(p, q) -> float:
    """Jensen-Shannon divergence (natural log) of two histograms ``p`` and ``q`` of the same length:
    ``0.5 KL(p || m) + 0.5 KL(q || m)`` with ``m = (p + q) / 2`` after normalising each to sum 1;
    bins where a histogram is 0 add nothing. In [0, ln 2]."""
    p = np.asarray(p, np.float64).reshape(-1)
    q = np.asarray(q, np.float64).reshape(-1)
    if p.shape != q.shape or p.size == 0:
        raise ValueError(f"js_divergence: histograms must have the same non-zero length, got {p.shape} and {q.shape}")
    if (p < 0).any() or (q < 0).any() or not (np.isfinite(p).all() and np.isfinite(q).all()):
        raise ValueError("js_divergence: histograms must be finite and non-negative")
    if p.sum() <= 0 or q.sum() <= 0:
        raise ValueError("js_divergence: a histogram sums to 0")
    p, q = p / p.sum(), q / q.sum()
    m = 0.5 * (p + q)

    def kl(a):
        nz = a > 0
        return float(np.sum(a[nz] * np.log(a[nz] / m[nz])))

    return 0.5 * kl(p) + 0.5 * kl(q)


class ColorDistributionConsistency:
    """Streaming CDC (colour distribution consistency, TCVC: Liu et al. 2021) of one video.

    For each dilation d in ``dilations`` and each channel c of R, G, B: the mean over t of
    ``JS(h_c(t), h_c(t + d))`` of the frames' 256-bin channel histograms (:func:`rgb_histograms`,
    :func:`js_divergence`); CDC = the mean over the three channels of the equally weighted sum over
    the dilations. Lower is more consistent. Keeps only the last ``max(dilations)`` histograms."""

    def __init__(self, dilations=CDC_DILATIONS):
        self.dilations = tuple(int(d) for d in dilations)
        if not self.dilations or min(self.dilations) < 1:
            raise ValueError(f"dilations must be integers >= 1, got {dilations!r}")
        from collections import deque

        self._recent = deque(maxlen=max(self.dilations))
        self._sums = {d: np.zeros(3) for d in self.dilations}
        self._pairs = dict.fromkeys(self.dilations, 0)
        self.frames = 0

    def add(self, rgb: np.ndarray) -> None:
        h = rgb_histograms(rgb)
        for d in self.dilations:
            if len(self._recent) >= d:
                old = self._recent[-d]
                self._sums[d] += [js_divergence(old[c], h[c]) for c in range(3)]
                self._pairs[d] += 1
        self._recent.append(h)
        self.frames += 1

    def per_dilation(self) -> dict[int, float]:
        """{d: mean over channels and pairs of the JS divergence at distance d}."""
        self._need_pairs()
        return {d: float(self._sums[d].mean() / self._pairs[d]) for d in self.dilations}

    def value(self) -> float:
        self._need_pairs()
        w = 1.0 / len(self.dilations)
        per_channel = sum(w * self._sums[d] / self._pairs[d] for d in self.dilations)
        return float(np.mean(per_channel))

    def _need_pairs(self) -> None:
        if any(self._pairs[d] == 0 for d in self.dilations):
            raise ValueError(f"CDC needs at least {max(self.dilations) + 1} frames (dilations "
                             f"{', '.join(map(str, self.dilations))}), got {self.frames}")


def color_distribution_consistency(frames, dilations=CDC_DILATIONS) -> float:
    """CDC of a sequence of (H, W, 3) uint8 frames (see :class:`ColorDistributionConsistency`)."""
    acc = ColorDistributionConsistency(dilations)
    for f in frames:
        acc.add(f)
    return acc.value()


def _check_flow(flow, name: str, hw=None) -> np.ndarray:
    if not isinstance(flow, np.ndarray) or flow.ndim != 3 or flow.shape[2] != 2:
        raise ValueError(f"{name}: expected an (H, W, 2) flow array, got {getattr(flow, 'shape', type(flow).__name__)}")
    if hw is not None and flow.shape[:2] != tuple(hw):
        raise ValueError(f"{name}: flow is {flow.shape[:2]} but the frames are {tuple(hw)}")
    if not np.isfinite(flow).all():
        raise ValueError(f"{name}: flow contains NaN or infinity")
    return flow.astype(np.float64, copy=False)


def warp_backward(img: np.ndarray, flow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sample ``img`` (H, W) or (H, W, C) at ``x + flow(x)`` with bilinear interpolation.

    ``flow`` (H, W, 2): (dx, dy) in pixels, so ``flow`` from frame a to frame b warps b onto a.
    Returns (warped float64 of img's shape, inside (H, W) bool: the sample lies within the image;
    outside, the warped value is 0)."""
    flow = _check_flow(flow, "flow")
    h, w = flow.shape[:2]
    if img.shape[:2] != (h, w):
        raise ValueError(f"img is {img.shape[:2]} but flow is {(h, w)}")
    src = img.astype(np.float64, copy=False)
    if src.ndim == 2:
        src = src[..., None]
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    x = xs + flow[..., 0]
    y = ys + flow[..., 1]
    inside = (x >= 0) & (x <= w - 1) & (y >= 0) & (y <= h - 1)
    x = np.clip(x, 0, w - 1)
    y = np.clip(y, 0, h - 1)
    x0 = np.minimum(np.floor(x).astype(np.int64), max(w - 2, 0))
    y0 = np.minimum(np.floor(y).astype(np.int64), max(h - 2, 0))
    x1 = np.minimum(x0 + 1, w - 1)
    y1 = np.minimum(y0 + 1, h - 1)
    fx = (x - x0)[..., None]
    fy = (y - y0)[..., None]
    out = ((1 - fy) * ((1 - fx) * src[y0, x0] + fx * src[y0, x1])
           + fy * ((1 - fx) * src[y1, x0] + fx * src[y1, x1]))
    out[~inside] = 0.0
    return (out[..., 0] if img.ndim == 2 else out), inside


def flow_occlusion(flow_ab: np.ndarray, flow_ba: np.ndarray) -> np.ndarray:
    """(H, W) bool, True where a pixel of frame a is occluded in frame b (Lai et al. 2018, after
    Ruder et al. 2016), from ``flow_ab`` (a -> b, at a's pixels) and ``flow_ba`` (b -> a, at b's pixels):

    * forward-backward inconsistency: ``|F(x) + B(x + F(x))|² > 0.01 (|F(x)|² + |B(x + F(x))|²) + 0.5``
      with F = flow_ab and B = flow_ba sampled bilinearly at ``x + F(x)``;
    * motion boundary: ``|∂F|² > 0.01 |F|² + 0.002`` with forward differences of F (0 on the last
      row / column);
    * and pixels whose ``x + F(x)`` lies outside the frame.
    """
    f = _check_flow(flow_ab, "flow_ab")
    b = _check_flow(flow_ba, "flow_ba", f.shape[:2])
    b_at, inside = warp_backward(b, f)
    fb = np.sum((f + b_at) ** 2, axis=2)
    occluded = fb > OCCLUSION_FB_RATIO * (np.sum(f ** 2, axis=2) + np.sum(b_at ** 2, axis=2)) + OCCLUSION_FB_BIAS
    du = np.zeros_like(f)
    dv = np.zeros_like(f)
    du[:, :-1] = f[:, :-1] - f[:, 1:]
    dv[:-1, :] = f[:-1, :] - f[1:, :]
    grad = np.sum(du ** 2 + dv ** 2, axis=2)
    boundary = grad > OCCLUSION_MB_RATIO * np.sum(f ** 2, axis=2) + OCCLUSION_MB_BIAS
    return occluded | boundary | ~inside


class WarpingError:
    """Streaming warping error (Lai et al. 2018) of one video.

    For each pair (t, t+1): frame t+1 is warped back to t along ``flow_fw`` (t -> t+1, at t's pixels;
    the flow of the *reference* video, e.g. the grey input or the ground truth, the same for every
    video compared), and the mean squared difference with frame t is taken over the RGB values in
    [0, 1] of the non-occluded pixels (:func:`flow_occlusion` with ``flow_bw``, t+1 -> t). The
    result is the mean over the pairs. A pair without any non-occluded pixel (a scene cut) is
    left out and counted in ``skipped``."""

    def __init__(self):
        self._sum = 0.0
        self.pairs = 0
        self.skipped = 0

    def add(self, frame_t: np.ndarray, frame_t1: np.ndarray, flow_fw: np.ndarray, flow_bw: np.ndarray,
            occluded: np.ndarray | None = None) -> float | None:
        """Add one pair; returns its error (None when it had no non-occluded pixel). ``occluded``:
        ``flow_occlusion(flow_fw, flow_bw)`` when the caller has it already (several videos compared
        with the same flow), else computed here."""
        a, b = _check_pair(frame_t, frame_t1)
        fw = _check_flow(flow_fw, "flow_fw", a.shape[:2])
        if occluded is None:
            occluded = flow_occlusion(fw, flow_bw)
        elif occluded.shape != a.shape[:2]:
            raise ValueError(f"occluded: shape {occluded.shape}, expected {a.shape[:2]}")
        valid = ~occluded
        n = int(valid.sum())
        if n == 0:
            self.skipped += 1
            return None
        warped, _ = warp_backward(b.astype(np.float64) / 255.0, flow_fw)
        diff = warped[valid] - a[valid].astype(np.float64) / 255.0
        err = float(np.mean(diff ** 2))
        self._sum += err
        self.pairs += 1
        return err

    def value(self) -> float:
        if self.pairs == 0:
            raise ValueError("warping error: no frame pair with non-occluded pixels (need at least 2 frames)")
        return self._sum / self.pairs


def warping_error(frames, flows) -> float:
    """Warping error of ``frames`` (a sequence of (H, W, 3) uint8) with ``flows``: for each pair
    (t, t+1) a tuple (forward t -> t+1, backward t+1 -> t) of (H, W, 2) flows (see :class:`WarpingError`)."""
    frames = list(frames)
    flows = list(flows)
    if len(flows) != max(len(frames) - 1, 0):
        raise ValueError(f"warping_error: {len(frames)} frames need {max(len(frames) - 1, 0)} flow pairs, got {len(flows)}")
    acc = WarpingError()
    for t, (fw, bw) in enumerate(flows):
        acc.add(frames[t], frames[t + 1], fw, bw)
    return acc.value()

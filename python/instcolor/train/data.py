"""Training data: photo index, boxes, augmentation and SIGGRAPH'17 hint simulation.

Every random choice of training step ``t`` comes from generators seeded by ``(seed, t, ...)``,
never from global state, so a run resumed at step ``t`` draws exactly what an uninterrupted
run draws (see :mod:`instcolor.train.loop`).

Shapes: a sample's ``L`` is (1, S, S) normalised lightness, ``ab`` (2, S, S) normalised ab
(Lab ab / 110), hint ``ab`` (2, S, S) and centred ``mask`` (1, S, S) as the nets take them.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..imageio import IMAGE_SUFFIXES
from ..prepare import MAX_BOXES, as_rgb_uint8, patch_hints, selection_order

GREY_CHROMA = 3.0       # mean per-pixel (max - min) over R, G, B below this: a greyscale photo
MIN_BOX_SIDE = 8        # boxes smaller than this (input pixels) are not used for training
NUM_GLOBAL = 532  # global hints vector length (instcolor.global_hints.VECTOR_LENGTH)
HINT_PATCH_SIZES = tuple(range(1, 10))  # SIGGRAPH'17: square patches of side 1..9


# ----------------------------------------------------------------------------- photo index
def list_images(folder: str | Path) -> list[Path]:
    """Image files directly in ``folder`` (sorted by name). Raises FileNotFoundError naming it."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"training data: no such folder: {folder}")
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def is_grey(rgb: np.ndarray) -> bool:
    """True for photos without colour (mean channel spread below :data:`GREY_CHROMA` levels)."""
    small = np.asarray(Image.fromarray(rgb).reduce(max(1, min(rgb.shape[:2]) // 64)), np.int16)
    return float((small.max(axis=2) - small.min(axis=2)).mean()) < GREY_CHROMA


@dataclass
class PhotoIndex:
    """The usable photos of a folder: colour photos readable by Pillow, with their sizes."""

    folder: Path
    names: list[str]
    sizes: list[tuple[int, int]]          # (H, W)
    skipped: dict[str, str] = field(default_factory=dict)  # name -> reason (greyscale, unreadable)

    def path(self, i: int) -> Path:
        return self.folder / self.names[i]

    @classmethod
    def build(cls, folder: str | Path, cache: str | Path | None = None, progress: bool = True) -> "PhotoIndex":
        """Scan ``folder`` (one pass; greyscale and unreadable photos are skipped with a reason).
        ``cache``: JSON file to reuse between runs (rebuilt when the folder's file list changed)."""
        from tqdm import tqdm

        folder = Path(folder)
        files = list_images(folder)
        if not files:
            raise FileNotFoundError(f"training data: no image files in {folder}")
        names = [p.name for p in files]
        if cache is not None and Path(cache).is_file():
            data = json.loads(Path(cache).read_text())
            if sorted(list(data["names"]) + list(data["skipped"])) == sorted(names):
                return cls(folder, data["names"], [tuple(s) for s in data["sizes"]], data["skipped"])
        keep, sizes, skipped = [], [], {}
        for p in tqdm(files, desc="scan photos", unit="img", disable=not progress, leave=False):
            try:
                rgb = as_rgb_uint8(p)
            except ValueError as e:
                skipped[p.name] = str(e)
                continue
            if is_grey(rgb):
                skipped[p.name] = "greyscale"
                continue
            keep.append(p.name)
            sizes.append(rgb.shape[:2])
        if not keep:
            raise ValueError(f"training data: no usable colour photos in {folder} ({len(skipped)} skipped)")
        index = cls(folder, keep, sizes, skipped)
        if cache is not None:
            from .._fileio import atomic_path

            with atomic_path(cache) as tmp:
                tmp.write_text(json.dumps({"names": keep, "sizes": sizes, "skipped": skipped}))
        return index


def training_boxes(det_boxes: np.ndarray, scores: np.ndarray | None, image_hw: tuple[int, int]) -> np.ndarray:
    """Detections -> the int boxes used for training (M, 4) int64: clipped to the image, boxes
    under :data:`MIN_BOX_SIDE` pixels dropped, then the inference top-8 rule."""
    h, w = image_hw
    b = np.asarray(det_boxes, np.float64).reshape(-1, 4).copy()
    b[:, [0, 2]] = b[:, [0, 2]].clip(0, w)
    b[:, [1, 3]] = b[:, [1, 3]].clip(0, h)
    b = np.trunc(b).astype(np.int64)
    ok = ((b[:, 2] - b[:, 0]) >= MIN_BOX_SIDE) & ((b[:, 3] - b[:, 1]) >= MIN_BOX_SIDE)
    b = b[ok]
    s = None if scores is None else np.asarray(scores, np.float64).reshape(-1)[ok]
    return b[selection_order(len(b), s, MAX_BOXES)]


def load_index_boxes(index: PhotoIndex, source) -> list[np.ndarray]:
    """Training boxes of every photo of ``index`` from a :class:`instcolor.detect.BoxesFile`;
    photos the source does not list get no boxes."""
    out = []
    for i, name in enumerate(index.names):
        det = source.lookup(index.folder / name)
        out.append(np.zeros((0, 4), np.int64) if det is None else training_boxes(det.boxes, det.scores, index.sizes[i]))
    return out


# ----------------------------------------------------------------------------- samples
def rng_for(seed: int, *keys: int) -> np.random.Generator:
    """A generator determined by ``(seed, *keys)`` only."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, *[int(k) for k in keys]])


def lab_planes(rgb_u8: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(H, W, 3) uint8 -> resized to S x S exactly as inference prepares images (Pillow-7..11
    bilinear), as (L (1, S, S), ab (2, S, S)) normalised float32. Uses the native kernel when
    the extension is built (the torch reference is slow in a worker thread beside training)."""
    from ..pipeline import native_ops
    from ..prepare import lab_of_uint8, pil_bilinear_resize

    rgb_u8 = np.ascontiguousarray(rgb_u8)
    ops = native_ops()
    lab = ops.rgb_to_lab(rgb_u8, size=size) if ops is not None else lab_of_uint8(pil_bilinear_resize(rgb_u8, size, size))[0]
    return lab[:1], lab[1:]


def simulate_hints(ab: np.ndarray, rng: np.random.Generator, p: float = 0.125,
                   patch_sizes=HINT_PATCH_SIZES, uniform: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """SIGGRAPH'17 simulated user points on ground-truth ``ab`` (2, S, S).

    Points are added while a uniform draw is below ``1 - p`` (so their number is geometric,
    mean (1-p)/p; ``p = 1`` gives none: automatic colorization); each is a square patch of a
    side drawn from ``patch_sizes`` at a location normal around the centre (sd = a quarter of
    the free range), filled with the patch's mean ab. ``uniform``: the probability that a point's
    location is uniform over the image instead (spreads training hints to the borders, as the
    hint sweep and users place them). Returns (hint ab, centred mask)."""
    S_h, S_w = ab.shape[1:]
    patches = []
    while rng.random() < 1.0 - p:
        P = int(rng.choice(patch_sizes))
        if uniform > 0 and rng.random() < uniform:
            r, c = int(rng.integers(0, S_h - P + 1)), int(rng.integers(0, S_w - P + 1))
        else:
            r = int(np.clip(rng.normal((S_h - P + 1) / 2.0, (S_h - P + 1) / 4.0), 0, S_h - P))
            c = int(np.clip(rng.normal((S_w - P + 1) / 2.0, (S_w - P + 1) / 4.0), 0, S_w - P))
        patches.append((r, c, P))
    return patch_hints(ab, patches)


def simulate_global_hints(rgb: np.ndarray, ab: np.ndarray, rng: np.random.Generator, reveal: float) -> np.ndarray:
    """SIGGRAPH'17 global hints revealed at random: the ground truth's ab histogram (from ``ab``
    (2, S, S) at S/4) and its mean saturation (from ``rgb``), each given with probability
    ``reveal``, independently. -> (532,) float32 (see :class:`instcolor.global_hints.GlobalHints`)."""
    from ..distribution import ab_histogram
    from ..global_hints import GlobalHints, mean_saturation

    hist = ab_histogram(ab[:, ::4, ::4]) if rng.random() < reveal else None
    sat = mean_saturation(rgb, max_side=64) if rng.random() < reveal else None
    return GlobalHints(histogram=hist, saturation=sat).vector()


def random_crop_box(rng: np.random.Generator, image_hw: tuple[int, int], min_frac: float) -> tuple[int, int, int, int]:
    """A random sub-rectangle (x0, y0, x1, y1) covering ``min_frac``..1 of each side."""
    h, w = image_hw
    ch = max(1, int(round(h * rng.uniform(min_frac, 1.0))))
    cw = max(1, int(round(w * rng.uniform(min_frac, 1.0))))
    y0 = int(rng.integers(0, h - ch + 1))
    x0 = int(rng.integers(0, w - cw + 1))
    return x0, y0, x0 + cw, y0 + ch


def jitter_box(rng: np.random.Generator, box, image_hw: tuple[int, int], amount: float) -> tuple[int, int, int, int]:
    """Move each side of an int box by up to ``amount`` of its size, kept inside the image."""
    h, w = image_hw
    x0, y0, x1, y1 = (int(v) for v in box)
    bw, bh = x1 - x0, y1 - y0
    d = rng.uniform(-amount, amount, size=4) * np.array([bw, bh, bw, bh])
    nx0 = int(np.clip(x0 + d[0], 0, w - 1))
    ny0 = int(np.clip(y0 + d[1], 0, h - 1))
    nx1 = int(np.clip(x1 + d[2], nx0 + 1, w))
    ny1 = int(np.clip(y1 + d[3], ny0 + 1, h))
    return nx0, ny0, nx1, ny1


@dataclass
class Sample:
    """One training example (numpy float32): L (1,S,S), ab (2,S,S), hint_ab (2,S,S), hint_mask (1,S,S);
    fusion stage only: crop_L (M,1,S,S), boxes (M,4) int64 in the (possibly flipped) image's
    pixels, image_hw (H, W)."""

    L: np.ndarray
    ab: np.ndarray
    hint_ab: np.ndarray
    hint_mask: np.ndarray
    crop_L: np.ndarray | None = None
    boxes: np.ndarray | None = None
    image_hw: tuple[int, int] | None = None
    global_input: np.ndarray | None = None  # (532,) global hints vector (training with --global-hints)
    saliency: np.ndarray | None = None      # (1, S, S) in [0, 1] of the grey L (training with --adversarial)


def make_full_sample(rgb: np.ndarray, size: int, rng: np.random.Generator | None, hint_p: float,
                     crop_min: float = 0.8, hint_uniform: float = 0.0, global_reveal: float | None = None) -> Sample:
    """Full-image stage: random crop (each side ``crop_min``..1) and flip, squashed to S x S as
    inference does; ``rng=None`` -> no augmentation and no hints (validation)."""
    if rng is not None:
        x0, y0, x1, y1 = random_crop_box(rng, rgb.shape[:2], crop_min)
        rgb = rgb[y0:y1, x0:x1]
        if rng.random() < 0.5:
            rgb = rgb[:, ::-1]
    L, ab = lab_planes(rgb, size)
    if rng is None or hint_p >= 1.0:
        hint_ab, hint_mask = np.zeros_like(ab), np.full_like(L, -0.5)
    else:
        hint_ab, hint_mask = simulate_hints(ab, rng, hint_p, uniform=hint_uniform)
    s = Sample(L, ab, hint_ab, hint_mask)
    if global_reveal is not None:
        s.global_input = (simulate_global_hints(rgb, ab, rng, global_reveal) if rng is not None
                          else np.zeros(NUM_GLOBAL, np.float32))
    return s


def make_instance_sample(rgb: np.ndarray, box, size: int, rng: np.random.Generator | None,
                         jitter: float = 0.05) -> Sample:
    """Instance stage: the box crop (jittered, flipped) resized to S x S. Crops never get hints
    (the inference pipeline gives the instance net none)."""
    if rng is not None:
        box = jitter_box(rng, box, rgb.shape[:2], jitter)
    x0, y0, x1, y1 = (int(v) for v in box)
    crop = rgb[y0:y1, x0:x1]
    if rng is not None and rng.random() < 0.5:
        crop = crop[:, ::-1]
    L, ab = lab_planes(crop, size)
    return Sample(L, ab, np.zeros_like(ab), np.full_like(L, -0.5))


def make_fusion_sample(rgb: np.ndarray, boxes: np.ndarray, size: int, rng: np.random.Generator | None,
                       hint_p: float, hint_uniform: float = 0.0, global_reveal: float | None = None) -> Sample:
    """Fusion stage: the whole image squashed to S x S (flipped with its boxes) plus its box crops,
    prepared the way inference prepares them. ``boxes`` (M, 4) int64 from :func:`training_boxes`."""
    boxes = np.asarray(boxes, np.int64).reshape(-1, 4).copy()
    h, w = rgb.shape[:2]
    if rng is not None and rng.random() < 0.5:
        rgb = rgb[:, ::-1]
        boxes[:, [0, 2]] = w - boxes[:, [2, 0]]
    rgb = np.ascontiguousarray(rgb)
    s = make_full_sample(rgb, size, None, 1.0)
    if rng is not None and hint_p < 1.0:
        s.hint_ab, s.hint_mask = simulate_hints(s.ab, rng, hint_p, uniform=hint_uniform)
    if global_reveal is not None:
        s.global_input = (simulate_global_hints(rgb, s.ab, rng, global_reveal) if rng is not None
                          else np.zeros(NUM_GLOBAL, np.float32))
    crops = [lab_planes(rgb[y0:y1, x0:x1], size)[0] for x0, y0, x1, y1 in boxes.tolist()]
    s.crop_L = np.stack(crops) if crops else np.zeros((0, 1, size, size), np.float32)
    s.boxes, s.image_hw = boxes, (h, w)
    return s


def add_saliency(sample: Sample) -> Sample:
    """Give ``sample`` its spectral-residual saliency map (1, S, S) float32 in [0, 1], computed
    on the grey input ``L`` (1, S, S), never on the ground truth (adversarial training)."""
    from .saliency import spectral_residual

    sample.saliency = spectral_residual(sample.L)
    return sample


def collate(samples: list[Sample]) -> dict[str, torch.Tensor]:
    """Stack samples -> tensors L (B,1,S,S), ab (B,2,S,S), hint_ab, hint_mask; saliency (B,1,S,S)
    and global_input (B,532,1,1) when the samples have them; with crops also
    crop_L (M,1,S,S), inst_image (M,) and box_info (4 x (M,6)) for the fusion net."""
    out = {k: torch.from_numpy(np.stack([getattr(s, k) for s in samples]))
           for k in ("L", "ab", "hint_ab", "hint_mask")}
    if samples and samples[0].saliency is not None:
        out["saliency"] = torch.from_numpy(np.stack([s.saliency for s in samples]))
    if samples and samples[0].global_input is not None:
        out["global_input"] = torch.from_numpy(np.stack([s.global_input for s in samples]))[:, :, None, None]
    if samples and samples[0].crop_L is not None:
        from ..prepare import box_info_levels

        size = samples[0].L.shape[-1]
        out["crop_L"] = torch.from_numpy(np.concatenate([s.crop_L for s in samples]))
        out["inst_image"] = torch.from_numpy(np.concatenate([np.full(len(s.boxes), i, np.int64)
                                                             for i, s in enumerate(samples)]))
        levels = [box_info_levels(s.boxes, s.image_hw, size) for s in samples]
        out["box_info"] = [torch.from_numpy(np.concatenate([lv[k] for lv in levels]).reshape(-1, 6)) for k in range(4)]
    return out


def ab_counts(index: PhotoIndex, size: int = 32, progress: bool = True) -> np.ndarray:
    """(529,) float64 ab-bin counts over all photos of ``index``, each squashed to ``size`` x
    ``size`` as training does (the empirical prior of class rebalancing, before smoothing)."""
    from tqdm import tqdm

    from ..distribution import NUM_BINS, ab_to_bins

    counts = np.zeros(NUM_BINS, np.float64)
    for i in tqdm(range(len(index.names)), desc="ab prior", unit="photo", disable=not progress):
        _, ab = lab_planes(as_rgb_uint8(index.path(i)), size)
        counts += np.bincount(ab_to_bins(ab[None])[0].reshape(-1), minlength=NUM_BINS)
    return counts

"""How often one of the k = 8 colour suggestions (``Colorizer.suggest_colors``) is the true colour
(issue 16): the share of random pixels where a suggestion lies within Delta-E 10 (CIE76, Lab) of the
photo's own colour there, against a baseline that knows no image: the 8 most frequent ab colours of
the training photos among pixels of the same lightness.

  python benchmarks/suggestion_accuracy.py --out out/suggest      # ../shared/data/val, built-in weights
  python benchmarks/suggestion_accuracy.py --out out/suggest --limit 30 --pixels 10

* Pixels: ``--pixels`` (20) per photo, uniform over the photo's pixels, drawn from a generator seeded
  with (--seed, photo index): --limit keeps the draws of the photos it keeps.
* True colour: the Lab of the photo's own pixel (full resolution, the project's D65 conversion).
* Suggestions: ``suggest_colors(photo, x, y, k=8)`` (boxes with --boxes), as 8-bit RGB shown at the
  pixel's own L; each goes back to Lab for the distance. The nets run once per photo (its first pixel
  is checked against ``suggest_colors`` itself); ``--per-pixel-api`` calls ``suggest_colors`` per pixel.
* Baseline: the training photos (``--train``, greyscale photos skipped, each downscaled to at most
  ``--train-side`` pixels per side) give a histogram of the 529 ab bins of :mod:`instcolor.distribution`
  per lightness band of ``--l-step`` L units. At a pixel, the k most frequent bins of its band, each
  shown like a suggestion: bin centre (a, b) at the pixel's own L, to 8-bit RGB (clipped), back to
  Lab. The histogram is cached in OUT/train_ab_by_L.npz (recomputed when the photos or settings change).
* "Within Delta-E 10" counts a distance <= 10.

Needs weights whose classification head was trained; with an untrained head (still at its random
initialisation, as the first starter) it stops with a message unless --allow-untrained-head.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _vivid_common as common  # noqa: E402

THRESHOLD = 10.0
CACHE_NAME = "train_ab_by_L.npz"


# ----------------------------------------------------------------------------- baseline histogram
def l_band(L, l_step: float) -> np.ndarray:
    """Lightness (0..100) -> band index 0..ceil(100 / l_step) - 1."""
    n = int(np.ceil(100.0 / l_step))
    return np.clip(np.floor(np.asarray(L, np.float64) / l_step).astype(np.int64), 0, n - 1)


def histogram_of(rgb: np.ndarray, l_step: float) -> np.ndarray:
    """(bands, 529) counts of one (H, W, 3) uint8 image's pixels by (L band, ab bin)."""
    from instcolor.distribution import NUM_BINS, ab_to_bins

    lab = common.rgb_to_lab(rgb.reshape(-1, 3))
    bands = l_band(lab[:, 0], l_step)
    ab = (lab[:, 1:] / 110.0).T.reshape(2, 1, -1).astype(np.float32)
    bins = ab_to_bins(ab)[0]
    n_bands = int(np.ceil(100.0 / l_step))
    return np.bincount(bands * NUM_BINS + bins, minlength=n_bands * NUM_BINS).reshape(n_bands, NUM_BINS)


def _small(rgb: np.ndarray, side: int) -> np.ndarray:
    from PIL import Image

    h, w = rgb.shape[:2]
    scale = side / max(h, w)
    if scale >= 1:
        return rgb
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(rgb).resize(size, Image.BILINEAR))


def train_histogram(train: Path, cache: Path, l_step: float, side: int, progress: bool = True) -> np.ndarray:
    """(bands, 529) float64 counts over the colour training photos; read from / written to ``cache``."""
    from tqdm import tqdm

    from instcolor.imageio import ImageReadError
    from instcolor.prepare import as_rgb_uint8
    from instcolor.train.data import is_grey

    files = common.photos(train)
    key = hashlib.sha256(json.dumps([str(train.resolve()), [f.name for f in files], [f.stat().st_size for f in files],
                                     l_step, side]).encode()).hexdigest()
    if cache.is_file():
        with np.load(cache) as z:
            if str(z["key"]) == key:
                return z["counts"].astype(np.float64)
    counts = None
    for f in tqdm(files, desc="train ab by L", unit="img", file=sys.stderr, disable=not progress):
        try:
            rgb = as_rgb_uint8(f)
        except (ImageReadError, FileNotFoundError, ValueError):
            continue
        if is_grey(rgb):
            continue
        h = histogram_of(_small(rgb, side), l_step)
        counts = h if counts is None else counts + h
    if counts is None:
        raise ValueError(f"{train}: no readable colour photo for the baseline histogram")
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_name(cache.name + ".tmp.npz")
    np.savez(tmp, counts=counts, key=np.array(key), l_step=l_step, side=side)
    tmp.replace(cache)
    return counts.astype(np.float64)


def baseline_lab(counts: np.ndarray, L: float, l_step: float, k: int = 8) -> np.ndarray:
    """(k', 3) Lab of the baseline's colours at lightness ``L``: the k most frequent ab bins of L's band
    (ties by bin index; bins never seen are not used), shown at L as 8-bit RGB, back in Lab."""
    from instcolor.distribution import bin_centers

    row = counts[int(l_band(L, l_step))]
    order = np.lexsort((np.arange(len(row)), -row))
    top = [int(i) for i in order[:k] if row[i] > 0]
    ab = bin_centers()[top].astype(np.float64) * 110.0
    lab = np.concatenate([np.full((len(top), 1), float(L)), ab], axis=1)
    return common.rgb_to_lab(common.lab_to_rgb(lab))


# ----------------------------------------------------------------------------- scoring
def within(candidates_lab: np.ndarray, true_lab: np.ndarray, threshold: float = THRESHOLD) -> tuple[bool, float]:
    """(some candidate within ``threshold`` Delta-E 76 of ``true_lab``, the smallest distance)."""
    if len(candidates_lab) == 0:
        return False, float("inf")
    d = common.delta_e76(np.asarray(candidates_lab, np.float64).reshape(-1, 3), np.asarray(true_lab, np.float64))
    return bool(d.min() <= threshold), float(d.min())


def draw_pixels(h: int, w: int, n: int, seed: int, photo_index: int) -> np.ndarray:
    """(n, 2) int64 (x, y) uniform over an h x w photo."""
    rng = np.random.default_rng([seed, photo_index])
    return np.stack([rng.integers(0, w, n), rng.integers(0, h, n)], axis=1).astype(np.int64)


def photo_suggester(colorizer, rgb: np.ndarray, boxes, size, k: int, check_xy=None):
    """A function (x, y) -> suggestions for one photo that runs the nets once instead of once per pixel:
    the photo's class logits through the same internals ``Colorizer.suggest_colors`` uses (the logits do not
    depend on the pixel). ``check_xy``: a pixel where the result is compared with ``suggest_colors``
    itself (RuntimeError when they differ). None when this instcolor's internals differ (the caller then
    calls ``suggest_colors`` per pixel)."""
    try:
        from instcolor.colorizer import suggest_from_logits
        from instcolor.prepare import check_size

        s = check_size(colorizer.default_size if size is None else size)
        p, _, _ = colorizer._prepare(rgb, boxes, None, (), s, name="photo")
        _, logits = colorizer._infer([p], [None], "regression", colorizer.temperature, want_logits=True)
    except (AttributeError, ImportError, TypeError):
        return None

    def suggest(x, y):
        return suggest_from_logits(logits[0], p.image, x, y, k, colorizer.suggest_log_weights)

    if check_xy is not None:
        x, y = check_xy
        fast, api = suggest(x, y), colorizer.suggest_colors(rgb, x, y, k=k, size=size, boxes=boxes)
        if fast != api:
            raise RuntimeError(f"the one-pass suggestions differ from Colorizer.suggest_colors at ({x}, {y}): "
                               f"{fast} vs {api}; run with --per-pixel-api")
    return suggest


def measure(colorizer, files, counts, l_step: float, pixels: int, k: int, seed: int, size=None, boxes_source=None,
            progress: bool = True, per_pixel_api: bool = False) -> dict:
    from tqdm import tqdm

    from instcolor.prepare import as_rgb_uint8

    rows = []
    for i, f in enumerate(tqdm(files, desc="suggest", unit="img", file=sys.stderr, disable=not progress)):
        rgb = as_rgb_uint8(f)
        boxes = None
        if boxes_source is not None:
            det = boxes_source.lookup(f)
            boxes = np.zeros((0, 4)) if det is None else det.boxes
        else:
            boxes = np.zeros((0, 4))
        xy = draw_pixels(rgb.shape[0], rgb.shape[1], pixels, seed, i)
        true = common.rgb_to_lab(rgb[xy[:, 1], xy[:, 0]])
        fast = None if per_pixel_api else photo_suggester(colorizer, rgb, boxes, size, k, check_xy=tuple(xy[0]))
        for (x, y), t in zip(xy.tolist(), true):
            sugg = fast(x, y) if fast is not None else colorizer.suggest_colors(rgb, x, y, k=k, size=size, boxes=boxes)
            s_lab = common.rgb_to_lab(np.array([c for c, _ in sugg], np.uint8).reshape(-1, 3))
            s_hit, s_d = within(s_lab, t)
            top1_hit, _ = within(s_lab[:1], t)
            b_lab = baseline_lab(counts, t[0], l_step, k)
            b_hit, b_d = within(b_lab, t)
            b1_hit, _ = within(b_lab[:1], t)
            rows.append({"photo": f.name, "x": x, "y": y, "lab": t.tolist(), "n_suggestions": len(sugg),
                         "suggest_hit": s_hit, "suggest_top1_hit": top1_hit, "suggest_min_de": s_d,
                         "baseline_hit": b_hit, "baseline_top1_hit": b1_hit, "baseline_min_de": b_d})
    return {"pixels": rows}


def summary(rows: list[dict]) -> dict:
    def share(key):
        return float(np.mean([r[key] for r in rows]))

    return {"count": len(rows), "suggest": share("suggest_hit"), "suggest_top1": share("suggest_top1_hit"),
            "baseline": share("baseline_hit"), "baseline_top1": share("baseline_top1_hit"),
            "suggest_median_min_de": float(np.median([r["suggest_min_de"] for r in rows])),
            "baseline_median_min_de": float(np.median([r["baseline_min_de"] for r in rows]))}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--val", type=Path, default=common.DEFAULT_VAL, help="photos (default ../shared/data/val)")
    ap.add_argument("--train", type=Path, default=common.DEFAULT_TRAIN, help="training photos for the baseline")
    ap.add_argument("--out", type=Path, default=Path("out/suggestion_accuracy"),
                    help="folder for the baseline cache and result.json (default out/suggestion_accuracy)")
    ap.add_argument("--weights", type=Path, default=None, help="weights folder (default: the built-in starter)")
    ap.add_argument("--size", type=int, default=None, help="processing size (default: the weights' own)")
    ap.add_argument("--boxes", type=Path, default=None, help="instance boxes (<stem>.npz folder or JSON); default none")
    ap.add_argument("--limit", type=int, default=None, help="only the first N photos (by name)")
    ap.add_argument("--pixels", type=int, default=20, help="random pixels per photo (default 20)")
    ap.add_argument("-k", type=int, default=8, help="suggestions per pixel (default 8)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--l-step", type=float, default=5.0, help="lightness band of the baseline, L units (default 5)")
    ap.add_argument("--train-side", type=int, default=64, help="training photos downscaled to this side (default 64)")
    ap.add_argument("--backend", choices=("torch", "onnxruntime", "auto"), default="torch")
    ap.add_argument("--per-pixel-api", action="store_true",
                    help="call suggest_colors for every pixel (slow: the nets run per pixel) instead of once per photo "
                         "(whose first pixel is checked against suggest_colors)")
    ap.add_argument("--allow-untrained-head", action="store_true",
                    help="measure even when the classification head looks untrained (numbers then mean nothing)")
    args = ap.parse_args(argv)

    try:
        if args.pixels < 1 or not 1 <= args.k <= 64 or not 0 < args.l_step <= 100 or args.train_side < 8:
            raise ValueError("--pixels >= 1, -k in 1..64, --l-step in (0, 100], --train-side >= 8")
        files = common.photos(args.val, args.limit)
        if not args.train.is_dir():
            raise ValueError(f"--train {args.train}: no such folder")
        boxes_source = None
        if args.boxes is not None:
            from instcolor.detect import BoxesFile

            try:
                boxes_source = BoxesFile(args.boxes)
            except FileNotFoundError as e:
                raise ValueError(f"--boxes: {e}") from None
        if not args.allow_untrained_head:
            common.require_trained_head(args.weights)
        colorizer = common.load_colorizer(args.weights, backend=args.backend)
        if not hasattr(colorizer, "suggest_colors"):
            raise common.MissingCapability("this instcolor has no Colorizer.suggest_colors (issue 16); update instcolor")
    except (ValueError, common.MissingCapability) as e:
        return common.fail(str(e))

    counts = train_histogram(args.train, args.out / CACHE_NAME, args.l_step, args.train_side)
    res = measure(colorizer, files, counts, args.l_step, args.pixels, args.k, args.seed, size=args.size,
                  boxes_source=boxes_source, per_pixel_api=args.per_pixel_api)
    s = summary(res["pixels"])
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "result.json").write_text(json.dumps({"summary": s, **res}, indent=1))
    print(f"Colour suggestions: {s['count']} pixels ({args.pixels} per photo, seed {args.seed}) of {len(files)} photos "
          f"of {args.val}, k = {args.k}, weights {common.weights_dir(args.weights)}\n")
    print(common.markdown_table(
        ["Colours offered", f"share within ΔE {THRESHOLD:g} (any of {args.k})", "share within ΔE 10 (first)",
         "median smallest ΔE"],
        [[f"suggest_colors (k = {args.k})", f"{100 * s['suggest']:.1f}%", f"{100 * s['suggest_top1']:.1f}%",
          f"{s['suggest_median_min_de']:.1f}"],
         [f"{args.k} most frequent training colours at the pixel's L", f"{100 * s['baseline']:.1f}%",
          f"{100 * s['baseline_top1']:.1f}%", f"{s['baseline_median_min_de']:.1f}"]]))
    return 0


if __name__ == "__main__":
    sys.exit(main())

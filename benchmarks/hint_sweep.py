"""SIGGRAPH'17 hint sweep (richzhang/colorization-pytorch ``test_sweep.py``): PSNR against the number
of revealed ground-truth colour points.

  python benchmarks/hint_sweep.py                       # ../shared/data/val, the built-in weights
  python benchmarks/hint_sweep.py --limit 30 --points 0,1,10,100

Protocol, as ``test_sweep.py`` / ``util.add_color_patches_rand_gt`` do it, at our processing size S:

* each photo is processed at S x S (the official sweep resizes to 256 x 256); the ground truth is
  the photo's Lab at S x S, as the nets see it;
* N points for each N in the list (the official list is ``unique(round(10 ** arange(-0.1, 2.8, 0.1)))``
  with 0 first: 0, 1, 2, 3, 4, 5, 6, 8, 10, ..., 501, ``--points official``; the default here is the
  subset 0, 1, 2, 5, 10, 20, 50, 100); every N gets its own independent draw;
* a point is a P x P patch (the official ``sample_Ps = [6]`` at 256, scaled with S: P = round(6 S / 256),
  3 at S = 128) whose top-left corner (h, w) is drawn like the official ``samp='normal'``:
  ``int(clip(normal((S - P + 1) / 2, (S - P + 1) / 4), 0, S - P))`` for each axis (not uniform: the
  points cluster around the centre); the patch holds the mean of the ground-truth ab over the patch
  (``use_avg``), a later patch overwriting an earlier one where they overlap; mask 1 on the patches;
* PSNR (peak 255, uint8 RGB) between the processing-size output (the photo's own L at S with the
  predicted ab, what the official code compares) and the ground truth at S through the same Lab -> RGB;
* the mean over photos and its standard error; the gain is over N = 0 (automatic).

The hints enter through ``Colorizer.colorize(..., hints=HintPlanes(ab, mask))``, exactly these planes.
The random draws depend only on (--seed, photo index, N), so --limit does not change the draws of the
photos it keeps. The full-image net runs (no boxes) unless --boxes is given.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _vivid_common as common  # noqa: E402

DEFAULT_POINTS = (0, 1, 2, 5, 10, 20, 50, 100)
OFFICIAL_PATCH_AT_256 = 6


def official_points() -> list[int]:
    """The N values of the official sweep: 0, 1, 2, 3, 4, 5, 6, 8, 10, 13, ..., 398, 501."""
    n = np.round(10 ** np.arange(-0.1, 2.8, 0.1))
    n[0] = 0
    return [int(x) for x in np.unique(n.astype(int))]


def patch_size(size: int) -> int:
    """The official 6 x 6 patch at 256, scaled with S (at least 1)."""
    return max(1, int(round(OFFICIAL_PATCH_AT_256 * size / 256)))


def draw_patches(n: int, size: int, p: int, rng: np.random.Generator) -> np.ndarray:
    """(n, 3) int64 rows (h, w, p): top-left corners drawn as the official ``samp='normal'``."""
    span = size - p + 1
    out = np.zeros((n, 3), np.int64)
    for i in range(n):
        h = int(np.clip(rng.normal(span / 2.0, span / 4.0), 0, size - p))
        w = int(np.clip(rng.normal(span / 2.0, span / 4.0), 0, size - p))
        out[i] = (h, w, p)
    return out


def reveal(gt_ab: np.ndarray, patches: np.ndarray):
    """Ground-truth ab (2, S, S) normalised + patches (n, 3) -> HintPlanes: each patch holds the mean
    ab over it (later patches overwrite earlier ones), mask 1 on the patches."""
    from instcolor import HintPlanes
    from instcolor.prepare import patch_hints

    hint_ab, centred = patch_hints(gt_ab, patches)
    return HintPlanes(ab=hint_ab, mask=centred + 0.5)


def point_rng(seed: int, photo_index: int, n: int) -> np.random.Generator:
    return np.random.default_rng([seed, photo_index, n])


def ground_truth(image: np.ndarray, size: int, ops):
    """(full_L (1, S, S), gt ab (2, S, S), gt RGB (S, S, 3) uint8) of a photo at processing size S:
    the nets' own resize and Lab, and the RGB of that Lab composed like the output."""
    if ops is not None:
        lab = ops.rgb_to_lab(image, size=size)
    else:
        from instcolor.prepare import lab_of_uint8, pil_bilinear_resize

        lab = lab_of_uint8(pil_bilinear_resize(image, size, size))[0]
    full_L = np.ascontiguousarray(lab[:1], np.float32)
    gt_ab = np.ascontiguousarray(lab[1:], np.float32)
    if ops is not None:
        gt_rgb = ops.compose_processed(full_L, gt_ab)
    else:
        from instcolor.compose import compose_processed_reference

        gt_rgb = compose_processed_reference(full_L, gt_ab)
    return full_L, gt_ab, gt_rgb


def sweep(colorizer, files, points, size: int, p: int, seed: int, boxes_source=None, progress: bool = True) -> dict:
    """PSNR (photos x len(points)) of the sweep; see the module docstring."""
    from tqdm import tqdm

    from instcolor import metrics
    from instcolor.prepare import as_rgb_uint8

    psnrs = np.zeros((len(files), len(points)), np.float64)
    for i, path in enumerate(tqdm(files, desc="sweep", unit="img", file=sys.stderr, disable=not progress)):
        image = as_rgb_uint8(path)
        _, gt_ab, gt_rgb = ground_truth(image, size, colorizer.ops)
        boxes = np.zeros((0, 4))
        if boxes_source is not None:
            det = boxes_source.lookup(path)
            boxes = boxes if det is None else det.boxes
        planes = [reveal(gt_ab, draw_patches(n, size, p, point_rng(seed, i, n))) for n in points]
        results = colorizer.colorize_batch([image] * len(points), boxes=[boxes] * len(points),
                                           hints=planes, size=size)
        for j, r in enumerate(results):
            v = metrics.psnr(r.rgb_processed, gt_rgb)
            psnrs[i, j] = v if math.isfinite(v) else 100.0
    return {"psnr": psnrs}


def table(points, psnrs: np.ndarray) -> tuple[str, list[dict]]:
    mean = psnrs.mean(axis=0)
    sem = psnrs.std(axis=0) / math.sqrt(psnrs.shape[0])
    auto = points.index(0) if 0 in points else None
    rows, out = [], []
    for j, n in enumerate(points):
        gain = None if auto is None else float(mean[j] - mean[auto])
        rows.append([str(n) if n else "0 (automatic)", f"{mean[j]:.2f}", f"±{sem[j]:.2f}",
                     "n/a" if gain is None else f"{gain:+.2f}"])
        out.append({"points": n, "psnr": float(mean[j]), "sem": float(sem[j]), "gain_db": gain})
    return common.markdown_table(["Points N", "PSNR (dB)", "s.e.", "Gain over automatic (dB)"], rows), out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--val", type=Path, default=common.DEFAULT_VAL, help="photos (default ../shared/data/val)")
    ap.add_argument("--weights", type=Path, default=None, help="weights folder (default: the built-in starter)")
    ap.add_argument("--size", type=int, default=None, help="processing size S (default: the weights' own)")
    ap.add_argument("--points", default=",".join(map(str, DEFAULT_POINTS)),
                    help="comma-separated N values, or 'official' for the full official list "
                         f"(default {','.join(map(str, DEFAULT_POINTS))})")
    ap.add_argument("--patch", type=int, default=None, help="patch side P (default round(6 S / 256))")
    ap.add_argument("--limit", type=int, default=None, help="only the first N photos (by name)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--boxes", type=Path, default=None, help="instance boxes (<stem>.npz folder or JSON); default none")
    ap.add_argument("--backend", choices=("torch", "onnxruntime", "auto"), default="torch")
    ap.add_argument("--decode", choices=("regression", "distribution", "mixed"), default=None,
                    help="decoding (default: what the weights recommend; the starter: mixed, T 0.38, mix 0.35)")
    ap.add_argument("--temperature", type=float, default=None, help="annealed-mean temperature of distribution decoding")
    ap.add_argument("--json", type=Path, default=None, help="also write the result (per-photo PSNRs) as JSON")
    args = ap.parse_args(argv)

    try:
        try:
            points = official_points() if args.points.strip() == "official" else \
                [int(x) for x in args.points.split(",") if x.strip()]
        except ValueError:
            points = []
        if not points or any(n < 0 for n in points) or len(set(points)) != len(points):
            raise ValueError(f"--points: need distinct non-negative integers, got {args.points!r}")
        files = common.photos(args.val, args.limit)
        boxes_source = None
        if args.boxes is not None:
            from instcolor.detect import BoxesFile

            try:
                boxes_source = BoxesFile(args.boxes)
            except FileNotFoundError as e:
                raise ValueError(f"--boxes: {e}") from None
        colorizer = common.load_colorizer(args.weights, backend=args.backend, decode=args.decode,
                                          temperature=args.temperature)
        from instcolor.prepare import check_size

        size = check_size(args.size if args.size is not None else colorizer.default_size)
        p = args.patch if args.patch is not None else patch_size(size)
        if not 1 <= p <= size:
            raise ValueError(f"--patch must be in 1..{size}, got {p}")
    except (ValueError, common.MissingCapability) as e:
        return common.fail(str(e))

    res = sweep(colorizer, files, points, size, p, args.seed, boxes_source)
    text, rows = table(points, res["psnr"])
    print(f"Hint sweep (SIGGRAPH'17 protocol): {len(files)} photos of {args.val}, S = {size}, {p}x{p} patches, "
          f"seed {args.seed}, weights {common.weights_dir(args.weights)}, decode {colorizer.decode}"
          + (f" T={colorizer.temperature:g}" if colorizer.decode == "distribution" else "") + "\n")
    print(text)
    if args.json is not None:
        args.json.write_text(json.dumps({"size": size, "patch": p, "seed": args.seed, "photos": [f.name for f in files],
                                         "rows": rows, "psnr": res["psnr"].tolist()}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

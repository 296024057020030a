"""PSNR gain of SIGGRAPH'17 global hints (issue 16): each photo colorized automatically and with
global hints taken from its own ground truth.

  python benchmarks/global_hints_gain.py                 # ../shared/data/val, the built-in weights
  python benchmarks/global_hints_gain.py --limit 50 --weights runs/global

Rows: automatic (no global hints); the ground truth's ab histogram
(``GlobalHints.from_image(gt)``); its mean saturation only (``GlobalHints(saturation=...)``); both.
PSNR (peak 255, uint8 RGB) at full resolution against the photo, as ``instcolor eval`` measures, and at
the processing size S against the photo's own Lab at S (as the SIGGRAPH'17 sweeps). The gain is over
automatic; the issue's target is >= 1 dB with the histogram revealed.

Weights without the global hints branch (e.g. the first built-in starter) make it stop with a message
and exit status 2: there is nothing to measure.
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
from hint_sweep import ground_truth  # noqa: E402

TARGET_DB = 1.0
SETTINGS = ("automatic", "histogram", "saturation", "histogram + saturation")


def hints_for(setting: str, gt: np.ndarray):
    """The GlobalHints of ``setting`` for ground truth ``gt`` (H, W, 3) uint8 (None for automatic)."""
    from instcolor import GlobalHints
    from instcolor.global_hints import mean_saturation

    if setting == "automatic":
        return None
    if setting == "histogram":
        return GlobalHints.from_image(gt)
    if setting == "saturation":
        return GlobalHints(saturation=mean_saturation(gt))
    if setting == "histogram + saturation":
        return GlobalHints.from_image(gt, with_saturation=True)
    raise ValueError(setting)


def measure(colorizer, files, size: int, boxes_source=None, progress: bool = True) -> dict:
    """{setting: (photos, 2) PSNR at full resolution and at S}."""
    from tqdm import tqdm

    from instcolor import metrics
    from instcolor.prepare import as_rgb_uint8

    out = {s: np.zeros((len(files), 2), np.float64) for s in SETTINGS}
    for i, f in enumerate(tqdm(files, desc="global hints", unit="img", file=sys.stderr, disable=not progress)):
        gt = as_rgb_uint8(f)
        _, _, gt_small = ground_truth(gt, size, colorizer.ops)
        boxes = np.zeros((0, 4))
        if boxes_source is not None:
            det = boxes_source.lookup(f)
            boxes = boxes if det is None else det.boxes
        for s in SETTINGS:
            try:
                r = colorizer.colorize(gt, boxes=boxes, size=size, global_hints=hints_for(s, gt))
            except TypeError as e:
                raise common.MissingCapability(f"this instcolor's colorize does not take global_hints (issue 16): {e}")
            full, small = metrics.psnr(r.rgb, gt), metrics.psnr(r.rgb_processed, gt_small)
            out[s][i] = [v if math.isfinite(v) else 100.0 for v in (full, small)]
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--val", type=Path, default=common.DEFAULT_VAL, help="photos (default ../shared/data/val)")
    ap.add_argument("--weights", type=Path, default=None, help="weights folder (default: the built-in starter)")
    ap.add_argument("--size", type=int, default=None, help="processing size (default: the weights' own)")
    ap.add_argument("--boxes", type=Path, default=None, help="instance boxes (<stem>.npz folder or JSON); default none")
    ap.add_argument("--limit", type=int, default=None, help="only the first N photos (by name)")
    ap.add_argument("--backend", choices=("torch", "onnxruntime", "auto"), default="torch")
    ap.add_argument("--decode", choices=("regression", "distribution", "mixed"), default=None,
                    help="decoding (default: what the weights recommend; the starter: mixed, T 0.38, mix 0.35)")
    ap.add_argument("--temperature", type=float, default=None, help="annealed-mean temperature of distribution decoding")
    ap.add_argument("--json", type=Path, default=None, help="also write the per-photo PSNRs as JSON")
    args = ap.parse_args(argv)

    try:
        files = common.photos(args.val, args.limit)
        boxes_source = None
        if args.boxes is not None:
            from instcolor.detect import BoxesFile

            try:
                boxes_source = BoxesFile(args.boxes)
            except FileNotFoundError as e:
                raise ValueError(f"--boxes: {e}") from None
        try:
            from instcolor import GlobalHints  # noqa: F401
        except ImportError:
            raise common.MissingCapability("this instcolor has no GlobalHints (issue 16); update instcolor") from None
        common.require_global_branch(args.weights)
        colorizer = common.load_colorizer(args.weights, backend=args.backend, decode=args.decode,
                                          temperature=args.temperature)
        from instcolor.prepare import check_size

        size = check_size(args.size if args.size is not None else colorizer.default_size)
        res = measure(colorizer, files, size, boxes_source)
    except (ValueError, common.MissingCapability) as e:
        return common.fail(str(e))

    auto = res["automatic"].mean(axis=0)
    rows = []
    for s in SETTINGS:
        m = res[s].mean(axis=0)
        rows.append([s, f"{m[0]:.2f}", "" if s == "automatic" else f"{m[0] - auto[0]:+.2f}",
                     f"{m[1]:.2f}", "" if s == "automatic" else f"{m[1] - auto[1]:+.2f}"])
    print(f"Global hints from the ground truth: {len(files)} photos of {args.val}, S = {size}, "
          f"weights {common.weights_dir(args.weights)}, decode {colorizer.decode}"
          + (f" T={colorizer.temperature:g}" if colorizer.decode == "distribution" else "") + "\n")
    print(common.markdown_table(["Global hints", "PSNR (dB)", "gain (dB)", f"PSNR at S={size} (dB)", "gain at S (dB)"],
                                rows))
    gain = float(res["histogram"].mean(axis=0)[0] - auto[0])
    print(f"\nHistogram revealed: {gain:+.2f} dB over automatic at full resolution "
          f"(target >= {TARGET_DB:g} dB: {'met' if gain >= TARGET_DB else 'not met'}).")
    if args.json is not None:
        args.json.write_text(json.dumps({"size": size, "photos": [f.name for f in files],
                                         "psnr_full_and_processing": {s: v.tolist() for s, v in res.items()}}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

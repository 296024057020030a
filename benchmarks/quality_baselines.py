"""Write the trivial baselines of the quality table as image folders for ``instcolor eval``.

  grey/  ab = 0 everywhere (the input itself, as RGB)
  tint/  one constant ab for every pixel: the median a*, b* of the training photos

Both are composed like the colorizer's output (the input's own lightness at full resolution,
the ab plane upsampled from S x S), so the table compares like with like.

  python benchmarks/quality_baselines.py --train ../shared/data/train --val ../shared/data/val -o out/quality
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from instcolor.imageio import write_image
from instcolor.pipeline import native_ops
from instcolor.prepare import as_rgb_uint8
from instcolor.train.data import PhotoIndex, list_images


def median_ab(train_dir: Path, stride: int = 4) -> tuple[float, float]:
    """Median normalised (a, b) over every ``stride``-th pixel of the colour training photos."""
    ops = native_ops()
    index = PhotoIndex.build(train_dir, progress=True)
    a_all, b_all = [], []
    for i in tqdm(range(len(index.names)), desc="median ab", unit="img"):
        lab = ops.rgb_to_lab(as_rgb_uint8(index.path(i)))
        a_all.append(lab[1, ::stride, ::stride].ravel())
        b_all.append(lab[2, ::stride, ::stride].ravel())
    return float(np.median(np.concatenate(a_all))), float(np.median(np.concatenate(b_all)))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", required=True, type=Path, help="training photos (for the median ab)")
    ap.add_argument("--val", required=True, type=Path, help="photos to 'colorize'")
    ap.add_argument("-o", "--output-dir", required=True, type=Path)
    ap.add_argument("--size", type=int, default=256, help="S of the ab plane (as the colorizer; default 256)")
    args = ap.parse_args(argv)
    ops = native_ops()
    if ops is None:
        sys.exit("quality_baselines: needs the native extension (pip install the package)")
    a, b = median_ab(args.train)
    print(f"median ab of {args.train}: a* {a * 110:.2f}, b* {b * 110:.2f}", file=sys.stderr)
    tints = {"grey": (0.0, 0.0), "tint": (a, b)}
    for name in tints:
        (args.output_dir / name).mkdir(parents=True, exist_ok=True)
    for path in tqdm(list_images(args.val), desc="baselines", unit="img"):
        image = as_rgb_uint8(path)
        for name, (ta, tb) in tints.items():
            ab = np.empty((2, args.size, args.size), np.float32)
            ab[0], ab[1] = ta, tb
            write_image(args.output_dir / name / f"{path.stem}.png", ops.compose(image, ab), format="png")
    (args.output_dir / "tint.json").write_text(json.dumps({"median_ab_normalised": [a, b],
                                                           "median_ab_lab": [a * 110, b * 110]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

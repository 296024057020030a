"""Shrink a training set so it travels: photos to a shorter side of at most N px, boxes scaled with them.

The GPU machine takes at most 64 MiB of files with a command; the 3,532 training photos
(~384x256 px each, 101 MB) do not fit, and training at S = 128 never looks at more than a
shorter side of ~160 px anyway (random crops of 80-100 % of each side, squashed to S x S).
This writes one JPEG per colour photo (same stem; photos already small enough are copied
byte for byte) and, with ``--boxes``, one JSON boxes file (the format ``instcolor train
--boxes`` takes) with every box scaled by its photo's factor.

    python benchmarks/shrink_photos.py ../shared/data/train ../shared/data/val -o .gpucarry/data \\
        --short-side 160 --boxes ../runs/boxes

writes ``.gpucarry/data/train/``, ``.gpucarry/data/val/`` and ``.gpucarry/data/boxes.json``.
The output folder must not exist or be empty: nothing is overwritten.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from PIL import Image

from instcolor.detect import BoxesFile
from instcolor.train.data import list_images


def shrink(src: Path, dst: Path, short_side: int, quality: int) -> tuple[float, float]:
    """Write ``src`` shrunk into ``dst``; returns the (x, y) scale factors of its coordinates."""
    with Image.open(src) as im:
        w, h = im.size
        f = min(1.0, short_side / min(w, h))
        if f >= 1.0 and src.suffix.lower() in (".jpg", ".jpeg"):
            shutil.copyfile(src, dst)
            return 1.0, 1.0
        size = (max(1, round(w * f)), max(1, round(h * f)))
        im.convert("RGB").resize(size, Image.BICUBIC).save(dst, "JPEG", quality=quality)
        return size[0] / w, size[1] / h


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folders", nargs="+", type=Path, help="photo folders (each becomes OUT/<folder name>/)")
    ap.add_argument("-o", "--out", type=Path, required=True, help="output folder (absent or empty)")
    ap.add_argument("--short-side", type=int, default=160, help="largest shorter side in px (default 160)")
    ap.add_argument("--quality", type=int, default=90, help="JPEG quality of shrunk photos (default 90)")
    ap.add_argument("--boxes", type=Path, help="boxes of the photos (folder of <stem>.npz or JSON) to scale")
    args = ap.parse_args(argv)
    if args.short_side < 8:
        ap.error(f"--short-side must be at least 8, got {args.short_side}")
    if args.out.exists() and any(args.out.iterdir()):
        ap.error(f"{args.out} exists and is not empty")
    names = [f.name for f in args.folders]
    if len(set(names)) != len(names):
        ap.error(f"two folders share a name: {names}")
    boxes_in = BoxesFile(args.boxes) if args.boxes else None
    boxes_out = {}
    total = 0
    for folder in args.folders:
        out = args.out / folder.name
        out.mkdir(parents=True)
        for p in map(Path, list_images(folder)):
            dst = out / (p.stem + (p.suffix if p.suffix.lower() in (".jpg", ".jpeg") else ".jpg"))
            fx, fy = shrink(p, dst, args.short_side, args.quality)
            total += dst.stat().st_size
            det = boxes_in.lookup(p) if boxes_in else None
            if det is not None:
                b = det.boxes.astype(float) * [fx, fy, fx, fy]
                entry = {"boxes": [[round(v, 2) for v in row] for row in b.tolist()]}
                if det.scores is not None:
                    entry["scores"] = [round(float(s), 4) for s in det.scores]
                boxes_out[p.stem] = entry
    if boxes_in is not None:
        (args.out / "boxes.json").write_text(json.dumps(boxes_out))
    print(f"{args.out}: {total / 2**20:.1f} MiB of photos; boxes for {len(boxes_out)} photos", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

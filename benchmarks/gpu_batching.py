"""Where batching pays: Colorizer.colorize_batch images/s at several batch sizes on one device.

    python benchmarks/gpu_batching.py --device cuda [--widths 0.25 1.0] [--size 256] [--boxes 0 4]
                                      [--batches 1 8 32] [--repeats 5] [--json OUT.json]

Untrained nets of each width (weights values do not change the speed; ``instcolor init-weights``),
the torch backend on ``--device``, synthetic 640x480 photos with N boxes each, regression decoding.
Each row: the median over --repeats calls of colorize_batch on B images (after 2 warm-up calls),
as images/s, and the gain over batch 1 measured in the same run. The same script runs on the CPU
(``--device cpu``) for comparison. Prints a Markdown table; --json writes the rows.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def photos(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:480, 0:640]
    base = np.stack([x / 3, y / 2, (x + y) / 5], -1)
    return [np.clip(base + rng.normal(0, 8, base.shape), 0, 255).astype(np.uint8) for _ in range(n)]


def boxes_for(n_boxes: int) -> np.ndarray:
    return np.array([[40 + 60 * k, 60 + 20 * k, 200 + 60 * k, 300 + 20 * k] for k in range(n_boxes)], np.float32)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--widths", type=float, nargs="+", default=[0.25, 1.0])
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--boxes", type=int, nargs="+", default=[0, 4])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    import torch

    from instcolor import Colorizer

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(f"gpu_batching: no CUDA device (torch {torch.__version__}); use --device cpu", file=sys.stderr)
        return 3
    rows = []
    imgs = photos(max(args.batches))
    with tempfile.TemporaryDirectory() as tmp:
        for width in args.widths:
            wdir = Path(tmp) / f"w{width:g}"
            subprocess.run([sys.executable, "-m", "instcolor", "init-weights", str(wdir), "--width", f"{width:g}", "--seed", "0"],
                           check=True, stdout=subprocess.DEVNULL)
            c = Colorizer.from_pretrained(str(wdir), backend="torch", device=args.device, decode="regression")
            for n_boxes in args.boxes:
                base = None
                for b in args.batches:
                    batch, bx = imgs[:b], [boxes_for(n_boxes)] * b
                    times = []
                    for r in range(args.repeats + 2):
                        if args.device.startswith("cuda"):
                            torch.cuda.synchronize()
                        t0 = time.perf_counter()
                        c.colorize_batch(batch, bx, size=args.size)
                        if args.device.startswith("cuda"):
                            torch.cuda.synchronize()
                        if r >= 2:
                            times.append(time.perf_counter() - t0)
                    ips = b / float(np.median(times))
                    base = base or ips
                    row = {"width": width, "boxes": n_boxes, "batch": b, "images_per_s": round(ips, 2),
                           "gain_vs_batch_1": round(ips / base, 2), "device": args.device}
                    rows.append(row)
                    print(json.dumps(row), file=sys.stderr, flush=True)
    dev = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else "cpu"
    print(f"\n# colorize_batch on {dev}, torch {torch.__version__}, S = {args.size}, 640x480 photos, "
          f"median of {args.repeats}\n")
    print("| width | boxes per image | batch | images/s | × batch 1 |")
    print("|---|---|---|---:|---:|")
    for r in rows:
        print(f"| {r['width']:g} | {r['boxes']} | {r['batch']} | {r['images_per_s']:.1f} | {r['gain_vs_batch_1']:.2f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

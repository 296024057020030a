"""Eager-torch backend on the CPU: NCHW vs channels-last nets, interleaved A/B on the same image.

    python benchmarks/bench_torch_layout.py [--size 256] [--boxes 0 8] [--width 1.0] [--repeats 3]

Both backends get their own copy of the same random nets and the native fuse kernel (as
``Colorizer`` sets it); runs alternate A, B, A, B ... after one untimed run each. Prints every
timed run in seconds and the max |Δab| between the two layouts.
"""
from __future__ import annotations

import argparse
import copy
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python"))

from bench_pipeline import make_image, make_nets  # noqa: E402
from instcolor import prepare as P  # noqa: E402
from instcolor.backends import TorchBackend  # noqa: E402
from instcolor.pipeline import Batch, native_ops, prepare_image  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--boxes", type=int, nargs="+", default=[0, 8])
    ap.add_argument("--width", type=float, default=1.0)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    torch.set_num_threads(os.cpu_count())
    ops = native_ops()
    nets = make_nets(args.width)
    backends = {"nchw": TorchBackend(copy.deepcopy(nets), channels_last=False),
                "channels_last": TorchBackend(copy.deepcopy(nets), channels_last=True)}
    if ops is not None:
        for be in backends.values():
            be.set_fuse(ops.fuse_instances)
    for n in args.boxes:
        img, boxes = make_image(n)
        batch = Batch.stack([prepare_image(img, P.select_boxes(boxes, None, img.shape[:2]), (), args.size, ops=ops)])
        out = {name: be.run(batch) for name, be in backends.items()}  # untimed
        times = {name: [] for name in backends}
        for _ in range(args.repeats):
            for name, be in backends.items():
                t = time.perf_counter()
                be.run(batch)
                times[name].append(time.perf_counter() - t)
        diff = float(np.abs(out["nchw"] - out["channels_last"]).max())
        print(f"width {args.width:g} S={args.size} N={n}: " + "  ".join(
            f"{name} {[round(t, 2) for t in ts]} s" for name, ts in times.items()) + f"  max|dab| {diff:.1e}", flush=True)


if __name__ == "__main__":
    main()

"""Folder-job throughput of `instcolor colorize`: reading/decoding and writing overlapped with the nets
(--prefetch 2, the default) against strictly one image after another (--prefetch 0).

    python benchmarks/bench_folder_job.py ../shared/data/val --repeats 3 [--upscale 4]

Runs alternate (0, 2, 0, 2, ...) in fresh subprocesses, so drift on a shared machine hits both sides;
prints each run's images/s and the median ratio. ``--upscale K`` first writes every photo K times
larger (Pillow BICUBIC, JPEG q95) into a temporary folder: big photos are where decoding and encoding,
not the small starter nets, dominate. Take figures on a quiet machine (no training beside it).
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path


def upscale(src: Path, dst: Path, k: int, limit: int | None) -> Path:
    from PIL import Image

    dst.mkdir(parents=True, exist_ok=True)
    files = sorted(p for p in src.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[:limit]
    for p in files:
        with Image.open(p) as im:
            im = im.convert("RGB")
            im.resize((im.width * k, im.height * k), Image.BICUBIC).save(dst / f"{p.stem}.jpg", quality=95)
    return dst


def run(folder: Path, prefetch: int, extra: list[str]) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "r.json"
        cmd = [sys.executable, "-m", "instcolor", "colorize", str(folder), "-o", str(Path(tmp) / "out"),
               "--prefetch", str(prefetch), "--report", str(report), *extra]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode not in (0, 1):
            raise SystemExit(proc.stderr[-2000:])
        data = json.loads(report.read_text())
        return data["written"] / data["seconds"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--upscale", type=int, default=1, help="enlarge the photos K times first (default 1: as they are)")
    ap.add_argument("--limit", type=int, default=None, help="use the first N photos")
    ap.add_argument("extra", nargs="*", help="more colorize options, after --")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.folder
        if args.upscale > 1 or args.limit:
            folder = upscale(args.folder, Path(tmp) / "in", args.upscale, args.limit)
        rows = {0: [], 2: []}
        for r in range(args.repeats):
            for prefetch in (0, 2):
                rows[prefetch].append(run(folder, prefetch, args.extra))
                print(f"run {r + 1} --prefetch {prefetch}: {rows[prefetch][-1]:.2f} images/s", flush=True)
        a, b = statistics.median(rows[0]), statistics.median(rows[2])
        print(f"median: --prefetch 0 {a:.2f} images/s, --prefetch 2 {b:.2f} images/s, ratio {b / a:.2f}x")


if __name__ == "__main__":
    main()

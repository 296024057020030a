"""INT8 against fp32 on ONNX Runtime (issue 14): speed at the official width, quality with the starter.

    python benchmarks/bench_int8.py [--part speed|quality|both] [--json OUT.json]
        speed:   [--width 1.0] [--size 256] [--boxes 8] [--repeats 7] [--warmup 2] [--threads N]
                 [--calibration ../shared/data/train] [--calibration-count 2] [--calibration-size 128]
                 [--work /tmp/instcolor-bench-int8]
        quality: [--val ../shared/data/val] [--limit N] [--detector ../shared/models/yolox_nano_coco_416.onnx]

Speed: random weights of ``--width`` (``instcolor init-weights``; same topology and cost as trained
ones) are exported fp32 and INT8 (calibrated on ``--calibration-count`` photos of ``--calibration``
at S = ``--calibration-size``, with the detector's boxes; the weights and both exports are kept in
``--work`` and reused by the next run: only the first run pays the calibration); one photo with
``--boxes`` boxes at S = ``--size`` is colorized
(``Colorizer.colorize``: preparation, nets, blend, composition) by the two backends alternately,
``--warmup`` untimed then ``--repeats`` timed calls each, interleaved so that load changes hit both;
images/s from the median and their ratio. The INT8 export's accuracy guard may keep segments in
fp32 (listed in the output; the ratio counts them as they are).

Quality: the built-in starter weights, fp32 (``backend="onnxruntime"``) and INT8 (its shipped INT8
export, ``precision="int8"``), on the photos of ``--val`` (first ``--limit`` in sorted order) with the
detector's boxes: PSNR against the ground truth (the colour photo itself) for both and its drop
(target <= 0.1 dB), mean colourfulness (Hasler-Suesstrunk) for both and its relative drop (target
<= 3 %), and the PSNR of the INT8 output against the fp32 output.

Do not run the speed part on a busy machine: the figures would be meaningless.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "python"))

from instcolor import Colorizer  # noqa: E402
from instcolor.metrics import colorfulness, psnr  # noqa: E402
from instcolor.prepare import as_rgb_uint8  # noqa: E402

SHARED = ROOT.parent / "shared"
DETECTOR = SHARED / "models" / "yolox_nano_coco_416.onnx"


def _photo_files(folder: Path, limit: int | None) -> list[Path]:
    from instcolor.imageio import IMAGE_SUFFIXES

    files = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise SystemExit(f"{folder}: no photos")
    return files[:limit] if limit else files


def _boxes(hw, n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    h, w = hw
    out = []
    for _ in range(n):
        bw, bh = rng.uniform(0.2, 0.6) * w, rng.uniform(0.2, 0.6) * h
        x0, y0 = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
        out.append([x0, y0, x0 + bw, y0 + bh])
    return np.asarray(out, np.float32).reshape(-1, 4)


def speed(args) -> dict:
    if args.work is not None:
        return _speed(args, Path(args.work))
    work = Path(tempfile.mkdtemp(prefix="bench_int8."))
    try:
        return _speed(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _exports(args, work: Path):
    """(fp32 export folder, INT8 export folder, INT8 manifest) of untrained width-``args.width`` weights
    under ``work``: made on the first run (``instcolor init-weights``, the ONNX Runtime backend's fp32
    export, :func:`quantize_export_dir` on ``--calibration-count`` photos at S = ``--calibration-size``),
    reused on later runs while the calibration settings and the quantization recipe are the same."""
    from instcolor.backends import make_backend
    from instcolor.export import MANIFEST, read_manifest
    from instcolor.quantize import RECIPE, Calibration, quantize_export_dir

    work.mkdir(parents=True, exist_ok=True)
    weights = work / f"weights-w{args.width:g}"
    if not weights.is_dir():
        from instcolor.cli import main as cli

        if cli(["init-weights", "--width", str(args.width), str(weights)]) not in (0, None):
            raise SystemExit(f"{weights}: init-weights failed")
    os.environ["INSTCOLOR_CACHE"] = str(work / "cache")  # (the fp32 export lives here between runs)
    fp32_dir = make_backend(weights, "onnxruntime").export_dir
    det = str(DETECTOR) if DETECTOR.is_file() else None
    cal = Calibration(args.calibration, args.calibration_count, size=args.calibration_size, detector=det)
    int8_dir = work / f"int8-w{args.width:g}-{cal.identity()[:12]}"
    if (int8_dir / MANIFEST).is_file() and read_manifest(int8_dir).get("int8", {}).get("recipe") == RECIPE:
        print(f"speed: reusing {int8_dir}")
        return fp32_dir, int8_dir, read_manifest(int8_dir)
    t = time.perf_counter()
    m8 = quantize_export_dir(fp32_dir, int8_dir, cal, threads=args.threads)
    print(f"speed: quantized width {args.width:g} in {time.perf_counter() - t:.0f} s -> {int8_dir}")
    return fp32_dir, int8_dir, m8


def _speed(args, work: Path) -> dict:
    from instcolor.backends.onnxruntime_backend import OnnxRuntimeBackend

    fp32_dir, int8_dir, m8 = _exports(args, work)
    c32 = Colorizer(OnnxRuntimeBackend(fp32_dir, threads=args.threads))
    c8 = Colorizer(OnnxRuntimeBackend(int8_dir, threads=args.threads))
    img = as_rgb_uint8(_photo_files(args.val, 1)[0])
    boxes = _boxes(img.shape[:2], args.boxes)
    times = {"fp32": [], "int8": []}
    for i in range(args.warmup + args.repeats):
        for name, c in (("fp32", c32), ("int8", c8)) if i % 2 == 0 else (("int8", c8), ("fp32", c32)):
            t = time.perf_counter()
            c.colorize(img, boxes=boxes, size=args.size)
            if i >= args.warmup:
                times[name].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}
    res = dict(width=args.width, size=args.size, boxes=args.boxes, repeats=args.repeats, threads=args.threads,
               seconds_median=med, images_per_s={k: 1.0 / v for k, v in med.items()},
               ratio=med["fp32"] / med["int8"], float_segments=m8["int8"].get("float_segments", {}),
               calibration_ab_psnr_db=m8["int8"].get("ab_psnr_db"))
    print(f"speed: width {args.width}, S = {args.size}, N = {args.boxes}: fp32 {res['images_per_s']['fp32']:.3f} img/s, "
          f"int8 {res['images_per_s']['int8']:.3f} img/s, ratio {res['ratio']:.2f}x (target >= 2x); "
          f"segments kept fp32 by the guard: {sorted(res['float_segments']) or 'none'}")
    return res


def quality(args) -> dict:
    from instcolor.detect import load_detector

    det = load_detector(str(args.detector)) if args.detector else None
    c32 = Colorizer.from_pretrained(backend="onnxruntime")
    c8 = Colorizer.from_pretrained(backend="onnxruntime", precision="int8")
    rows = []
    for p in _photo_files(args.val, args.limit):
        img = as_rgb_uint8(p)
        d = det(img) if det is not None else None
        kw = dict(boxes=None if d is None else d.boxes, scores=None if d is None else d.scores)
        r32, r8 = c32.colorize(img, **kw).rgb, c8.colorize(img, **kw).rgb
        rows.append(dict(photo=p.name, psnr_fp32=psnr(r32, img), psnr_int8=psnr(r8, img),
                         psnr_int8_vs_fp32=psnr(r8, r32), colorfulness_fp32=colorfulness(r32),
                         colorfulness_int8=colorfulness(r8)))
    mean = {k: float(np.mean([r[k] for r in rows])) for k in rows[0] if k != "photo"}
    finite = [r["psnr_int8_vs_fp32"] for r in rows if np.isfinite(r["psnr_int8_vs_fp32"])]
    res = dict(photos=len(rows), mean=mean, psnr_drop_db=mean["psnr_fp32"] - mean["psnr_int8"],
               colorfulness_drop_pct=100.0 * (1 - mean["colorfulness_int8"] / mean["colorfulness_fp32"]),
               psnr_int8_vs_fp32_db=float(np.mean(finite)) if finite else float("inf"),
               float_segments=c8.backend.manifest.get("int8", {}).get("float_segments", {}))
    print(f"quality ({len(rows)} photos of {args.val}, starter weights): PSNR vs ground truth fp32 "
          f"{mean['psnr_fp32']:.3f} dB, int8 {mean['psnr_int8']:.3f} dB, drop {res['psnr_drop_db']:.3f} dB "
          f"(target <= 0.1); colourfulness fp32 {mean['colorfulness_fp32']:.2f}, int8 {mean['colorfulness_int8']:.2f}, "
          f"drop {res['colorfulness_drop_pct']:.2f} % (target <= 3 %); PSNR int8 vs fp32 "
          f"{res['psnr_int8_vs_fp32_db']:.2f} dB")
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--part", choices=("speed", "quality", "both"), default="both")
    ap.add_argument("--width", type=float, default=1.0)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--boxes", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--calibration", type=Path, default=SHARED / "data" / "train")
    ap.add_argument("--calibration-count", type=int, default=2)
    ap.add_argument("--calibration-size", type=int, default=128,
                    help="processing size S of the speed part's calibration run (its ranges, not the timing)")
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "instcolor-bench-int8",
                    help="keeps the speed part's weights and exports between runs ('' for a temporary folder)")
    ap.add_argument("--val", type=Path, default=SHARED / "data" / "val")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--detector", default=str(DETECTOR) if DETECTOR.is_file() else "")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.work is not None and str(args.work) in ("", "."):
        args.work = None
    out = dict(machine=dict(platform=platform.platform(), processor=platform.processor(), cpus=os.cpu_count()))
    if args.part in ("speed", "both"):
        out["speed"] = speed(args)
    if args.part in ("quality", "both"):
        out["quality"] = quality(args)
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""(Re)make the built-in starter's INT8 export: python/instcolor/weights/starter/int8/.

    python benchmarks/make_starter_int8.py [--calibration ../shared/data/train] [--count 32]
                                           [--detector ../shared/models/yolox_nano_coco_416.onnx]

Run it whenever the starter weights change (``Colorizer.from_pretrained(backend="onnxruntime",
precision="int8")`` refuses a shipped INT8 export whose weights hash is not the starter's). The fp32
segments are the ones the ONNX Runtime backend builds for the starter; they are quantized with
:func:`instcolor.quantize.quantize_export_dir` on ``--count`` photos of ``--calibration`` (the training
photos by default: the validation photos stay unseen for bench_int8.py), with the detector's boxes.
The segments its accuracy guard keeps in fp32 are not shipped (the backend builds them from the
weights). Prints the files' total size and the starter folder's size (the package keeps the
starter < 20 MB).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "python"))

from instcolor.backends import make_backend  # noqa: E402
from instcolor.export import MANIFEST, read_manifest  # noqa: E402
from instcolor.quantize import SHIPPED_DIR, Calibration, quantize_export_dir  # noqa: E402
from instcolor.weights import STARTER_DIR  # noqa: E402

STARTER_LIMIT = 20 * 1024 * 1024


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calibration", default=str(ROOT.parent / "shared" / "data" / "train"), metavar="DIR")
    ap.add_argument("--count", type=int, default=32, metavar="N")
    ap.add_argument("--detector", default=str(ROOT.parent / "shared" / "models" / "yolox_nano_coco_416.onnx"),
                    metavar="MODEL.onnx", help="'' for none (seeded random boxes)")
    ap.add_argument("--out", default=str(STARTER_DIR / SHIPPED_DIR), metavar="DIR")
    args = ap.parse_args(argv)
    out = Path(args.out)
    owned = set()
    if (out / MANIFEST).is_file():
        owned = {s["file"] for s in read_manifest(out)["segments"]} | {MANIFEST}
    fp32 = make_backend(STARTER_DIR, "onnxruntime").export_dir
    cal = Calibration(args.calibration, args.count, detector=args.detector or None)
    m = quantize_export_dir(fp32, out, cal, owned=owned)
    # the segments the accuracy guard kept in fp32 are not shipped: they are the fp32 segments, which
    # the backend builds from the weights (instcolor.quantize._complete_shipped)
    for seg in m["segments"]:
        if seg["name"] in m["int8"]["float_segments"]:
            (out / seg["file"]).unlink()
    size = sum(f.stat().st_size for f in out.iterdir() if f.is_file())
    starter = sum(f.stat().st_size for f in STARTER_DIR.rglob("*") if f.is_file())
    print(f"wrote {len(m['segments'])} INT8 segments to {out}: {size / 2**20:.1f} MiB; starter folder "
          f"{starter / 2**20:.1f} MiB (limit {STARTER_LIMIT / 2**20:.0f} MiB); calibration {m['int8']['calibration']}")
    return 0 if starter < STARTER_LIMIT else 1


if __name__ == "__main__":
    sys.exit(main())

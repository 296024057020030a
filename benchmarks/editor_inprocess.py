"""The editor's model work without a browser or HTTP: ``Editor.open`` on bench_editor's scene (three
instances), then ``Editor.preview`` once per edit, each edit adding one random hint, as the page does.

    python benchmarks/editor_inprocess.py --edits 20 --size 256 --backend onnxruntime

Prints the median and p95 ms of ``Editor.preview`` (the ``model`` part of the server's Server-Timing)
and the split per edit: ONNX Runtime segments, native blends, the rest. Compare with
``bench_editor.py``, which measures the same work through the server and headless Chromium.
"""
from __future__ import annotations

import argparse
import collections
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--edits", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--backend", default="onnxruntime")
    ap.add_argument("--weights", default=None, help="weights folder (default: the built-in starter weights)")
    ap.add_argument("--no-presampled", action="store_true",
                    help="blend from the crops at every edit (fuse_instances), as before the presampled blend")
    args = ap.parse_args(argv)

    from bench_editor import SCENE_BOXES, scene
    from instcolor import Colorizer, Hint
    from instcolor.detect import Detections
    from instcolor.hintset import EditState
    from instcolor.serve.malloc import keep_freed_blocks
    from instcolor.ui.editor import Editor

    keep_freed_blocks()  # as instcolor serve does
    boxes = np.array(SCENE_BOXES, np.float32)

    def detector(img):
        return Detections(boxes, np.array([0.9, 0.85, 0.8], np.float32), np.array([0, 2, 16]))

    colorizer = Colorizer.from_pretrained(args.weights, backend=args.backend, detector=detector)
    editor = Editor(colorizer, size=args.size)
    session = editor.open(scene())
    rng = np.random.default_rng(0)
    hints = []

    def edit():
        hints.append(Hint(int(rng.integers(0, 640)), int(rng.integers(0, 480)),
                          rgb=tuple(int(v) for v in rng.integers(0, 256, 3)), size=3))
        return editor.preview(session, session.begin(), EditState(hints=tuple(hints)))

    split = collections.Counter()
    backend = colorizer.backend
    if args.no_presampled:
        backend._fuse_cached = lambda *a: None
    for name in ("_run", "_fuse", "_fuse_cached"):
        if hasattr(backend, name):
            inner = getattr(backend, name)

            def timed(*a, _inner=inner, _name=name):
                t = time.perf_counter()
                try:
                    return _inner(*a)
                finally:
                    split[_name] += time.perf_counter() - t
            setattr(backend, name, timed)
    for _ in range(args.warmup):
        edit()
    split.clear()
    times = []
    for _ in range(args.edits):
        t = time.perf_counter()
        edit()
        times.append((time.perf_counter() - t) * 1e3)
    n = args.edits
    out = {"edits": n, "size": args.size, "backend": args.backend, "presampled": not args.no_presampled,
           "median_ms": round(float(np.median(times)), 1), "p95_ms": round(float(np.percentile(times, 95)), 1),
           "segments_ms": round(split["_run"] / n * 1e3, 1),
           "blends_ms": round((split["_fuse"] + split["_fuse_cached"]) / n * 1e3, 1)}
    out["rest_ms"] = round(float(np.mean(times)) - out["segments_ms"] - out["blends_ms"], 1)
    print(f"Editor.preview ({'crops sampled at every edit' if args.no_presampled else 'presampled blends'}): median {out['median_ms']} ms, p95 {out['p95_ms']} ms over {n} edits; per edit "
          f"{out['segments_ms']} ms in ONNX Runtime segments, {out['blends_ms']} ms in the blends, "
          f"{out['rest_ms']} ms the rest")
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

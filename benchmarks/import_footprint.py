"""Import time and peak memory of the torch-free install against an install with PyTorch.

Each measurement is a fresh interpreter (a subprocess) that

* ``import``: imports instcolor, and reports the wall time of the import, whether PyTorch got
  loaded and the peak resident memory (``VmHWM`` of /proc/self/status);
* ``colorize``: imports instcolor, loads ``Colorizer.from_pretrained()`` (the built-in starter
  weights, the default backend: ONNX Runtime on the CPU) and colorizes one 640x480 photo (the
  golden photo A resized), reporting the import, load and colorize times and the peak RSS.

A warm-up run per interpreter fills its own export cache first (``INSTCOLOR_CACHE`` in a temporary
folder), so the measured runs load cached segments, as every run after a user's first does.

Each ``--env LABEL=PYTHON[:SOURCE]`` is one setting: ``PYTHON`` the interpreter (a venv's
bin/python), ``SOURCE`` an optional folder whose ``instcolor`` package is imported instead of the
installed one (for an older checkout: ``git archive <commit> python | tar -x -C DIR`` and copy the
built ``instcolor/_native*.so`` into ``DIR/python/instcolor``; pass ``DIR/python``).

    python benchmarks/import_footprint.py \\
        --env torch-free=.venv-ci-notorch/bin/python --env torch-installed=.venv/bin/python \\
        --runs 5 --out footprint.json

Memory does not depend on machine load; times do (the CPU is shared), so the script reports the
median and the range of ``--runs`` runs and the load average at the start.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PHOTO = ROOT.parent / "shared" / "golden" / "images" / "000000050145.jpg"

_PRELUDE = """
import sys, time, json
source = {source!r}
if source:  # import instcolor from SOURCE: drop an editable install's finder, put SOURCE first
    sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in type(f).__module__]
    sys.path.insert(0, source)

def peak_rss_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")
"""

_IMPORT = """
t0 = time.perf_counter()
import instcolor
t1 = time.perf_counter()
print(json.dumps(dict(import_s=t1 - t0, torch_loaded="torch" in sys.modules, peak_rss_mb=peak_rss_mb(),
                      instcolor=instcolor.__file__)))
"""

_COLORIZE = """
t0 = time.perf_counter()
import instcolor
t1 = time.perf_counter()
c = instcolor.Colorizer.from_pretrained()
t2 = time.perf_counter()
r = c.colorize({photo!r})
t3 = time.perf_counter()
assert r.rgb.shape == (480, 640, 3)
print(json.dumps(dict(import_s=t1 - t0, load_s=t2 - t1, colorize_s=t3 - t2, total_s=t3 - t0,
                      backend=c.backend.name, torch_loaded="torch" in sys.modules, peak_rss_mb=peak_rss_mb())))
"""


def run(python: str, code: str, env: dict) -> dict:
    p = subprocess.run([python, "-c", code], capture_output=True, text=True, env=env, timeout=900, cwd="/")
    if p.returncode != 0:
        raise SystemExit(f"{python}: measurement failed (exit {p.returncode}):\n{p.stderr[-2000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def summarise(rows: list[dict]) -> dict:
    out = {}
    for k, v in rows[0].items():
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            values = {r[k] for r in rows}
            out[k] = values.pop() if len(values) == 1 else sorted(values)
        else:
            xs = [r[k] for r in rows]
            out[k] = dict(median=statistics.median(xs), min=min(xs), max=max(xs))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--env", action="append", required=True, metavar="LABEL=PYTHON[:SOURCE]",
                    help="a setting to measure (repeatable)")
    ap.add_argument("--photo", default=str(DEFAULT_PHOTO), help="photo, resized to 640x480 (default: golden photo A)")
    ap.add_argument("--runs", type=int, default=5, help="measured runs of each kind per setting (default 5)")
    ap.add_argument("--out", help="write the results as JSON here")
    args = ap.parse_args(argv)

    from PIL import Image

    tmp = Path(tempfile.mkdtemp(prefix="instcolor-footprint-"))
    photo = tmp / "photo_640x480.png"
    Image.open(args.photo).convert("RGB").resize((640, 480), Image.BILINEAR).save(photo)
    results = dict(photo=str(args.photo), size="640x480", runs=args.runs, loadavg_at_start=os.getloadavg(),
                   cpus=os.cpu_count(), settings={})
    for spec in args.env:
        label, _, rest = spec.partition("=")
        python, _, source = rest.partition(":")
        if not label or not python:
            raise SystemExit(f"--env {spec!r}: expected LABEL=PYTHON[:SOURCE]")
        python = os.path.abspath(python)  # (not resolved: a venv's python is a symlink that must stay one)
        env = dict(os.environ, INSTCOLOR_CACHE=str(tmp / f"cache-{label}"))
        env.pop("PYTHONPATH", None)
        prelude = _PRELUDE.format(source=str(Path(source).resolve()) if source else "")
        colorize = prelude + _COLORIZE.format(photo=str(photo))
        run(python, colorize, env)  # warm-up: fills this setting's export cache
        imports = [run(python, prelude + _IMPORT, env) for _ in range(args.runs)]
        colorizes = [run(python, colorize, env) for _ in range(args.runs)]
        results["settings"][label] = dict(python=python, source=source or None,
                                          import_only=summarise(imports), colorize=summarise(colorizes))
        s = results["settings"][label]
        print(f"{label:>18}: import {s['import_only']['import_s']['median']:.2f} s "
              f"(torch loaded: {s['import_only']['torch_loaded']}), peak RSS after import "
              f"{s['import_only']['peak_rss_mb']['median']:.0f} MiB; import+load+colorize 640x480 "
              f"{s['colorize']['total_s']['median']:.2f} s, peak RSS {s['colorize']['peak_rss_mb']['median']:.0f} MiB "
              f"({s['colorize']['backend']}, torch loaded: {s['colorize']['torch_loaded']})", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The issue-13 quality table: grey, constant tint, today's starter and the new starter with
regression and distribution decoding (each with and without the detector's boxes), and a
temperature sweep of distribution decoding, every row made by the real command line:
``instcolor colorize`` into a folder, then ``instcolor eval`` of that folder against the photos.

  python benchmarks/vivid_table.py --out out/vivid --old-weights /work/runs/starter_v1 \\
      --boxes /work/runs/boxes            # boxes precomputed with instcolor detect
  python benchmarks/vivid_table.py --out out/vivid_quick --limit 20   # a quick look

Prints one markdown table (the columns of ``instcolor eval``: PSNR, SSIM, colourfulness and its
percentage of the ground truth's, the share of images with colourfulness (CCI) in [16, 20],
per-instance PSNR/SSIM on the boxes) followed by every command that made it, in order. The same
goes to OUT/table.md; each row's full result is OUT/<row>.json (written by ``instcolor eval --json``).

* "with the detector" rows use the boxes of ../shared/models/yolox_nano_coco_416.onnx: ``--boxes``
  when given (e.g. the folder ``instcolor detect`` wrote), else ``instcolor detect`` runs once into
  OUT/boxes (files already there are kept). The same boxes give every row's instance columns.
* grey and tint come from ``benchmarks/quality_baselines.py`` (the median ab of --train), run once into
  OUT/baselines and reused while its output is complete (``--redo-baselines`` runs it again).
* ``--limit N`` copies the first N photos (by name) of --val into OUT/gt_firstN and measures those.
* Colorize runs one at a time (it uses the cores itself); each eval runs in the background while the
  next colorize runs (``--jobs 1``: strictly one command at a time).
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _vivid_common as common  # noqa: E402

DEFAULT_TEMPERATURES = (0.2, 0.3, 0.38, 0.5, 0.7, 1.0)


def _here(path: Path) -> Path:
    """``path`` relative to the working folder when it can be (shorter commands to show)."""
    try:
        return Path(os.path.relpath(path))
    except ValueError:
        return path


@dataclass
class Row:
    """One table row: ``name`` (the table's Method cell), ``key`` (its folder / JSON name under OUT),
    ``colorize`` (the instcolor arguments that write the folder; None for the baselines)."""

    name: str
    key: str
    colorize: list[str] | None = None
    options: dict = field(default_factory=dict)


def _t(x: float) -> str:
    return f"{x:g}"


def plan_rows(args, gt: Path, out: Path, boxes: Path, default_t: float) -> list[Row]:
    """Every row of the table in order, with its colorize arguments."""
    rows = [Row("grey", "baselines/grey"), Row("constant tint", "baselines/tint")]

    def colorize(key: str, weights, decode: str | None, t: float | None, det: bool) -> list[str]:
        argv = ["colorize", str(gt), "-o", str(out / key), "--format", "png", "--force"]
        if weights is not None:
            argv += ["--weights", str(weights)]
        if decode is not None:
            argv += ["--decode", decode]
        if t is not None:
            argv += ["--temperature", _t(t)]
        if det:
            argv += ["--boxes", str(boxes)]
        if args.size is not None:
            argv += ["--size", str(args.size)]
        if args.backend is not None:
            argv += ["--backend", args.backend]
        return argv

    if args.old_weights is not None:
        for det in (False, True):
            key = "old_det" if det else "old"
            rows.append(Row(f"today's starter{' + det' if det else ''}", key,
                            colorize(key, args.old_weights, "regression", None, det)))
    new = args.weights  # None = the built-in weights
    for det in (False, True):
        key = "reg_det" if det else "reg"
        rows.append(Row(f"new, regression{' + det' if det else ''}", key, colorize(key, new, "regression", None, det)))
    for det in (False, True):
        key = f"dist_T{_t(default_t)}" + ("_det" if det else "")
        rows.append(Row(f"new, distribution T={_t(default_t)}{' + det' if det else ''}", key,
                        colorize(key, new, "distribution", default_t, det)))
    for t in args.temperatures:
        if t == default_t:
            continue
        det = args.sweep_detector
        key = f"dist_T{_t(t)}" + ("_det" if det else "")
        rows.append(Row(f"new, distribution T={_t(t)}{' + det' if det else ''}", key,
                        colorize(key, new, "distribution", t, det)))
    return rows


def eval_argv(row: Row, gt: Path, out: Path, boxes: Path) -> list[str]:
    return ["eval", str(out / row.key), str(gt), "--boxes", str(boxes), "--name", row.name,
            "--json", str(out / f"{row.key.replace('/', '_')}.json")]


class Runner:
    """Runs instcolor commands and records each as the ``instcolor ...`` line a reader would type.

    By default each runs as ``python -m instcolor ...`` of this interpreter (a fresh process, as typed);
    ``in_process`` calls :func:`instcolor.cli.main` with the same arguments instead (the same code
    without a process start per command: for tests)."""

    def __init__(self, quiet: bool = False, in_process: bool = False):
        self.commands: list[str] = []
        self.quiet = quiet
        self.in_process = in_process

    def record(self, display: list[str]) -> None:
        line = shlex.join(display)
        self.commands.append(line)
        if not self.quiet:
            print(f"$ {line}", file=sys.stderr, flush=True)

    def run(self, argv: list[str], display: list[str] | None = None, script: bool = False, record: bool = True) -> None:
        """Run ``instcolor argv`` (or, ``script``, the Python script ``argv[0]`` with ``argv[1:]``).
        SystemExit with the command's last lines of output when it fails."""
        if record:
            self.record(display or (["python", *argv] if script else ["instcolor", *argv]))
        if self.in_process:
            import contextlib
            import io
            import runpy

            buf = io.StringIO()
            with contextlib.redirect_stdout(buf):
                if script:
                    old = sys.argv
                    sys.argv = list(argv)
                    try:
                        code = runpy.run_path(argv[0], run_name="__vivid_table__")["main"](argv[1:])
                    finally:
                        sys.argv = old
                else:
                    from instcolor.cli import main as cli_main

                    code = cli_main(list(argv))
            if code:
                raise SystemExit(f"vivid_table: command failed (exit {code}): {shlex.join(argv)}\n{buf.getvalue()[-2000:]}")
            return
        cmd = [sys.executable, *argv] if script else [sys.executable, "-m", "instcolor", *argv]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, PYTHONUNBUFFERED="1"))
        if proc.returncode != 0:
            tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-8:])
            raise SystemExit(f"vivid_table: command failed (exit {proc.returncode}): {shlex.join(cmd)}\n{tail}")


def colorize_help(in_process: bool = False) -> str:
    """``instcolor colorize --help`` of the instcolor that will run the rows."""
    if in_process:
        from instcolor.cli import build_parser

        parser = build_parser()
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        return sub.choices["colorize"].format_help()
    proc = subprocess.run([sys.executable, "-m", "instcolor", "colorize", "--help"], capture_output=True, text=True)
    return proc.stdout


def subset_folder(val: Path, limit: int | None, out: Path) -> Path:
    """``val`` itself, or OUT/gt_first<limit> holding copies of its first ``limit`` photos (by name)."""
    files = common.photos(val, limit)
    if limit is None:
        return val
    gt = out / f"gt_first{limit}"
    gt.mkdir(parents=True, exist_ok=True)
    want = {f.name for f in files}
    for f in gt.iterdir():
        if f.is_file() and f.name not in want:
            f.unlink()
    for f in files:
        dst = gt / f.name
        if not dst.is_file() or dst.stat().st_size != f.stat().st_size:
            shutil.copyfile(f, dst)
    return gt


def baselines_complete(base: Path, gt: Path) -> bool:
    stems = {f.stem for f in common.photos(gt)}
    return (base / "tint.json").is_file() and all(
        {p.stem for p in (base / name).glob("*.png")} >= stems for name in ("grey", "tint"))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--val", type=Path, default=_here(common.DEFAULT_VAL), help="photos (default ../shared/data/val)")
    ap.add_argument("--train", type=Path, default=_here(common.DEFAULT_TRAIN),
                    help="training photos, for the constant tint's median ab (default ../shared/data/train)")
    ap.add_argument("--out", type=Path, required=True, help="folder for the outputs, JSON results and table.md")
    ap.add_argument("--weights", type=Path, default=None, help="the new weights (default: the built-in starter)")
    ap.add_argument("--old-weights", type=Path, default=None,
                    help="today's starter (e.g. /work/runs/starter_v1); its rows are left out without it")
    ap.add_argument("--boxes", type=Path, default=None,
                    help="the detector's boxes for the photos (<stem>.npz folder or JSON); default: run "
                         "instcolor detect with --detector into OUT/boxes")
    ap.add_argument("--detector", type=Path, default=_here(common.DEFAULT_DETECTOR), help="ONNX detector (without --boxes)")
    ap.add_argument("--temperatures", type=lambda s: [float(x) for x in s.split(",") if x.strip()],
                    default=list(DEFAULT_TEMPERATURES), help="distribution-decoding sweep, comma-separated "
                    f"(default {','.join(map(_t, DEFAULT_TEMPERATURES))})")
    ap.add_argument("--default-temperature", type=float, default=None,
                    help="T of the distribution rows with and without the detector (default: instcolor's default)")
    ap.add_argument("--sweep-detector", action="store_true", help="the sweep rows with the detector's boxes too")
    ap.add_argument("--size", type=int, default=None, help="processing size (default: the weights' own)")
    ap.add_argument("--backend", choices=("auto", "torch", "onnxruntime"), default=None,
                    help="colorize backend (default: instcolor's default)")
    ap.add_argument("--limit", type=int, default=None, help="only the first N photos (by name)")
    ap.add_argument("--jobs", type=int, choices=(1, 2), default=2,
                    help="2 (default): each eval runs while the next colorize runs; 1: one command at a time")
    ap.add_argument("--redo-baselines", action="store_true", help="run quality_baselines.py even when its output is there")
    ap.add_argument("--quiet", action="store_true", help="do not echo the commands while they run")
    ap.add_argument("--in-process", action="store_true",
                    help="run the commands through instcolor.cli.main in this process (same code, no process start "
                         "per command; one at a time) instead of as separate processes")
    args = ap.parse_args(argv)

    from instcolor.distribution import DEFAULT_TEMPERATURE, check_temperature
    from instcolor.evaluate import format_table

    try:
        for t in args.temperatures:
            check_temperature(t)
        default_t = check_temperature(DEFAULT_TEMPERATURE if args.default_temperature is None else args.default_temperature)
        if not args.temperatures:
            raise ValueError("--temperatures: give at least one value")
        common.photos(args.val, args.limit)
        for what, p in (("--weights", args.weights), ("--old-weights", args.old_weights)):
            if p is not None and not p.is_dir():
                raise ValueError(f"{what} {p}: no such folder")
        if args.boxes is not None and not args.boxes.exists():
            raise ValueError(f"--boxes {args.boxes}: not found")
        if args.boxes is None and not args.detector.is_file():
            raise ValueError(f"--detector {args.detector}: not found (or give --boxes)")
        if not args.train.is_dir():
            raise ValueError(f"--train {args.train}: no such folder (the constant tint needs the training photos)")
    except ValueError as e:
        return common.fail(str(e))
    help_text = colorize_help(args.in_process)
    missing = [o for o in ("--decode", "--temperature") if o not in help_text]
    if missing:
        return common.fail(f"this instcolor's colorize has no {' / '.join(missing)} option (distribution decoding, "
                           "issue 13); update instcolor")

    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    gt = subset_folder(args.val, args.limit, out)
    runner = Runner(quiet=args.quiet, in_process=args.in_process)
    t0 = time.monotonic()

    boxes = args.boxes
    if boxes is None:
        boxes = out / "boxes"
        runner.run(["detect", str(gt), "-o", str(boxes), "--detector", str(args.detector)])

    base = out / "baselines"
    bl_argv = [str(Path(__file__).resolve().parent / "quality_baselines.py"), "--train", str(args.train),
               "--val", str(gt), "-o", str(base), "--size", str(args.size or 128)]
    bl_display = ["python", "benchmarks/quality_baselines.py", *bl_argv[1:]]
    if args.redo_baselines or not baselines_complete(base, gt):
        runner.run(bl_argv, display=bl_display, script=True)
    else:
        runner.record(bl_display + ["# (output already there: reused)"])

    rows = plan_rows(args, gt, out, boxes, default_t)
    pool = ThreadPoolExecutor(max_workers=1) if args.jobs == 2 and not args.in_process else None
    pending = []
    for row in rows:
        if row.colorize is not None:
            runner.run(row.colorize)
        ev = eval_argv(row, gt, out, boxes)
        if pool is None:
            runner.run(ev)
        else:
            runner.record(["instcolor", *ev])
            pending.append(pool.submit(runner.run, ev, record=False))
    for f in pending:
        f.result()
    if pool is not None:
        pool.shutdown()

    results = []
    for row in rows:
        data = json.loads((out / f"{row.key.replace('/', '_')}.json").read_text())
        results.append((row.name, data))
    table = format_table(results)
    decode_note = (f"Distribution rows decode by annealed mean at temperature T; the rows with and without the detector "
                   f"use T = {_t(default_t)}; '+ det' = the YOLOX-Nano boxes ({boxes}).")
    text = (f"{table}\n\n{decode_note}\n{len(common.photos(gt))} photos of {args.val}"
            f"{f' (the first {args.limit})' if args.limit else ''}; made in {time.monotonic() - t0:.0f} s by:\n\n"
            "```bash\n" + "\n".join(runner.commands) + "\n```\n")
    (out / "table.md").write_text(text, encoding="utf-8")
    print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())

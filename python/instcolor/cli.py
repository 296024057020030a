"""Command line: ``instcolor colorize INPUT... -o OUTDIR [--weights DIR] [--boxes PATH] [--size N] [--hint ...]``."""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from .errors import UsageError
from .imageio import IMAGE_SUFFIXES


def parse_hint(text: str):
    """``X,Y,#RRGGBB[,P]`` -> Hint (X, Y in input pixels, P the patch size, default 1)."""
    from .prepare import Hint

    m = re.fullmatch(r"\s*([0-9.]+)\s*,\s*([0-9.]+)\s*,\s*#?([0-9a-fA-F]{6})\s*(?:,\s*([0-9]+)\s*)?", text)
    if not m:
        raise argparse.ArgumentTypeError(f"bad hint {text!r}: expected X,Y,#RRGGBB[,P] e.g. 120,80,#3366cc,3")
    x, y, hexcol, p = m.groups()
    rgb = tuple(int(hexcol[i:i + 2], 16) for i in (0, 2, 4))
    try:
        return Hint(float(x), float(y), rgb=rgb, size=int(p) if p else 1)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def collect_inputs(inputs: list[str]) -> tuple[list[Path], list[tuple[str, str]]]:
    """Files and folders (their image files, sorted, not recursive) -> (paths, [(name, error)])."""
    paths, errors = [], []
    for raw in inputs:
        p = Path(raw)
        if p.is_dir():
            paths += sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        elif p.is_file():
            paths.append(p)
        else:
            errors.append((raw, "no such file or folder"))
    return paths, errors


def write_png_atomic(rgb, path: Path) -> None:
    """Write to a temporary file in the same folder, then rename: never a partial file at ``path``."""
    from PIL import Image

    from ._fileio import atomic_path

    with atomic_path(path) as tmp:
        Image.fromarray(rgb).save(tmp, format="PNG")


def _load_colorizer(args):
    from . import Colorizer
    from .models import CheckpointError

    try:  # no --weights: the built-in starter weights (from_pretrained prints a one-line notice)
        options = {}
        if args.precision is not None:
            if args.backend != "tensorrt":
                raise UsageError("--precision applies to --backend tensorrt only")
            options["precision"] = args.precision
        from .detect import load_detector

        detector = load_detector(args.detector, runtime=args.detector_runtime)
        return Colorizer.from_pretrained(args.weights or None, backend=args.backend, device=args.device,
                                         detector=detector, **options)
    except (CheckpointError, ValueError, FileNotFoundError) as e:
        raise UsageError(str(e)) from None


def cmd_colorize(args) -> int:
    from tqdm import tqdm

    from .prepare import check_size

    try:
        if args.size is not None:
            check_size(args.size)
    except ValueError as e:
        raise UsageError(f"--size: {e}") from None
    boxes_source = None
    if args.boxes:
        from .detect import BoxesFile

        try:
            boxes_source = BoxesFile(args.boxes)
        except (FileNotFoundError, ValueError) as e:
            raise UsageError(str(e)) from None
    outdir = Path(args.output_dir)
    if outdir.exists() and not outdir.is_dir():
        raise UsageError(f"-o {outdir}: exists and is not a folder")
    paths, failures = collect_inputs(args.inputs)
    for name, why in failures:
        print(f"instcolor: {name}: {why}", file=sys.stderr)
    if not paths and failures:
        return 1
    if not paths:
        raise UsageError("no image files found in the given inputs")
    colorizer = _load_colorizer(args)
    outdir.mkdir(parents=True, exist_ok=True)

    input_set = {p.resolve() for p in paths}
    used: dict[Path, Path] = {}
    failed = len(failures)
    bar = tqdm(paths, desc="colorize", unit="img", disable=len(paths) < 2, file=sys.stderr)
    for path in bar:
        out = (outdir / f"{path.stem}.png")
        try:
            if out.resolve() in input_set:
                raise ValueError(f"output {out} would overwrite an input; choose another -o folder")
            if out.resolve() in used:
                raise ValueError(f"output {out} is already written for {used[out.resolve()]} (same file stem)")
            boxes = scores = None
            if boxes_source is not None:
                det = boxes_source.lookup(path)
                if det is not None:
                    boxes, scores = det.boxes, det.scores
                elif colorizer.detector is None:  # (with a detector, it runs for images not in the file)
                    bar.write(f"instcolor: {path}: no boxes in {args.boxes}; using the full-image net", file=sys.stderr)
                    boxes = []
            result = colorizer.colorize(path, boxes=boxes, scores=scores, hints=args.hint, size=args.size)
            write_png_atomic(result.rgb, out)
            used[out.resolve()] = path
        except (ValueError, TypeError, FileNotFoundError, OSError) as e:
            failed += 1
            msg = str(e)
            bar.write(f"instcolor: {path}: {msg}" if str(path) not in msg else f"instcolor: {msg}", file=sys.stderr)
    done = len(paths) - (failed - len(failures))
    print(f"instcolor: wrote {done} image(s) to {outdir}" + (f", {failed} failed" if failed else ""), file=sys.stderr)
    return 1 if failed else 0


def cmd_init_weights(args) -> int:
    import torch

    from .models import FusionNet, InstanceNet, SIGGRAPHBackbone, save_official

    if not (0 < args.width <= 1):
        raise UsageError(f"--width must be in (0, 1], got {args.width}")
    out = Path(args.output_dir)
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out}: exists and is not a folder")
    torch.manual_seed(args.seed)
    nets = {"full": SIGGRAPHBackbone(args.width), "instance": InstanceNet(args.width), "fusion": FusionNet(args.width)}
    save_official(out, nets)
    print(f"instcolor: wrote untrained width-{args.width:g} weights (seed {args.seed}) to {out}; "
          "they colorize nothing sensible, use them for smoke tests only", file=sys.stderr)
    return 0


def cmd_export(args) -> int:
    from .export import export_segments
    from .models import CheckpointError, load_nets

    try:
        nets = load_nets(args.weights)
    except CheckpointError as e:
        raise UsageError(str(e)) from None
    precisions = ("fp32", "fp16") if args.precision == "both" else (args.precision,)
    out = Path(args.output_dir)
    for p in precisions:
        target = out / p if len(precisions) > 1 else out
        m = export_segments(nets, target, precision=p, size=args.size)
        print(f"instcolor: exported {len(m['segments'])} {p} segments to {target}", file=sys.stderr)
    return 0


def cmd_detect(args) -> int:
    from .detect import detect_to_folder

    paths, failures = collect_inputs(args.inputs)
    for name, why in failures:
        print(f"instcolor: {name}: {why}", file=sys.stderr)
    if not paths:
        raise UsageError("no image files found in the given inputs")
    out = Path(args.output_dir)
    if out.exists() and not out.is_dir():
        raise UsageError(f"-o {out}: exists and is not a folder")
    try:
        detector = _make_detector(args)
    except (ValueError, FileNotFoundError) as e:
        raise UsageError(str(e)) from None
    errors = detect_to_folder(paths, detector, out)
    for name, why in errors.items():
        print(f"instcolor: {name}: {why}", file=sys.stderr)
    print(f"instcolor: boxes of {len(paths) - len(errors)} image(s) in {out}", file=sys.stderr)
    return 1 if errors or failures else 0


def _add_detector_runtime(p) -> None:
    p.add_argument("--detector-runtime", choices=("onnxruntime", "tensorrt"), default="onnxruntime",
                   help="what runs the --detector model (default onnxruntime; tensorrt builds and caches an "
                        "engine on the first CUDA GPU)")


def _make_detector(args):
    from .detect import OnnxDetector

    if not str(args.detector).lower().endswith(".onnx"):
        raise ValueError(f"--detector: expected an .onnx model file, got {args.detector}")
    return OnnxDetector(args.detector, score_threshold=args.score_threshold,
                        runtime=getattr(args, "detector_runtime", "onnxruntime"))


def cmd_train(args) -> int:
    from .train import TrainConfig, TrainError, train

    out = Path(args.out)
    boxes = args.boxes
    if args.detector:
        if boxes:
            raise UsageError("give either --boxes or --detector, not both")
        from .detect import detect_to_folder
        from .train.data import list_images

        try:
            detector = _make_detector(args)
            paths = list_images(args.data) + (list_images(args.val) if args.val else [])
        except (ValueError, FileNotFoundError) as e:
            raise UsageError(str(e)) from None
        boxes = str(out / "boxes")
        detect_to_folder(paths, detector, boxes)
    cfg = TrainConfig(stage=args.stage, data=args.data, out=args.out, boxes=boxes, init=args.init,
                      width=args.width, size=args.size, batch_size=args.batch_size, lr=args.lr, steps=args.steps,
                      hint_p=1.0 if args.automatic else args.hint_p, class_weight=args.class_weight,
                      max_instances=args.max_instances, seed=args.seed, device=args.device, amp=args.amp,
                      threads=args.threads, checkpoint_seconds=args.checkpoint_seconds, val=args.val,
                      bn_batches=args.bn_batches,
                      val_every=args.val_every, val_images=args.val_images)
    try:
        last = train(cfg)
    except (TrainError, FileNotFoundError) as e:
        raise UsageError(str(e)) from None
    print(f"instcolor: {args.stage} stage at step {last.get('step')}; weights in {out} "
          f"(latest_net_GComp.pth, latest_net_G.pth, latest_net_GF.pth)", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="instcolor", description="Instance-aware image colorization.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("colorize", help="colorize image files or folders of images",
                       description="Colorize images; writes OUTDIR/<stem>.png at each input's resolution.")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders of images")
    p.add_argument("-o", "--output-dir", required=True, metavar="OUTDIR", help="folder for the PNG results")
    p.add_argument("--weights", metavar="DIR",
                   help="weights folder: official layout (latest_net_G.pth, latest_net_GF.pth, latest_net_GComp.pth), "
                        "a training run folder or a bundle (config.json + model.safetensors); default: the "
                        "built-in starter weights")
    p.add_argument("--boxes", metavar="PATH", help="instance boxes: a folder of <stem>.npz (bbox, scores) or one JSON file")
    p.add_argument("--detector", metavar="MODEL.onnx",
                   help="ONNX object detector (YOLOX, YOLOv8 or torchvision-style outputs) for images without --boxes")
    _add_detector_runtime(p)
    p.add_argument("--size", type=int, default=None, metavar="N",
                   help="processing size, a multiple of 8 (default: the size the weights were trained at "
                        "when they record it, else 256)")
    p.add_argument("--hint", action="append", type=parse_hint, default=[], metavar="X,Y,#RRGGBB[,P]",
                   help="a colour hint at input pixel (X, Y), patch size P (default 1); repeatable")
    p.add_argument("--backend", choices=("auto", "torch", "onnxruntime", "tensorrt"), default="auto",
                   help="inference backend (default auto: onnxruntime on the CPU when it is installed, else torch; "
                        "onnxruntime and tensorrt export the nets on first use and cache them)")
    p.add_argument("--device", default="cpu", help="torch device for the nets (default cpu; tensorrt: cuda[:N])")
    p.add_argument("--precision", choices=("fp32", "fp16"), default=None,
                   help="TensorRT engine precision (--backend tensorrt only; default fp32)")
    p.set_defaults(func=cmd_colorize)

    p = sub.add_parser("export", help="export the nets as ONNX segments (+ manifest.json)",
                       description="Export the three nets as ordered ONNX segments for ONNX Runtime / TensorRT.")
    p.add_argument("--weights", required=True, metavar="DIR", help="folder with the three checkpoint files")
    p.add_argument("-o", "--output-dir", required=True, metavar="OUTDIR")
    p.add_argument("--precision", choices=("fp32", "fp16", "both"), default="fp32",
                   help="fp32 (default), fp16 (strongly typed, for TensorRT >= 11) or both (OUTDIR/fp32, OUTDIR/fp16)")
    p.add_argument("--size", type=int, default=256, help="size of the tracing inputs (all dims stay dynamic)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("init-weights", help="write untrained (random) weights in the official layout",
                       description="Write randomly initialised nets as latest_net_{G,GF,GComp}.pth: "
                                   "for smoke tests and benchmarks when no trained checkpoint is at hand.")
    p.add_argument("output_dir", metavar="DIR")
    p.add_argument("--width", type=float, default=1.0, help="channel width multiplier (1.0 = official)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_init_weights)

    p = sub.add_parser("detect", help="detect instance boxes and write <stem>.npz per image",
                       description="Run an ONNX detector on images; writes OUTDIR/<stem>.npz (bbox, scores, "
                                   "labels), the official boxes format that --boxes and `train --boxes` read. "
                                   "Images whose file exists are skipped (an interrupted run resumes).")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders of images")
    p.add_argument("-o", "--output-dir", required=True, metavar="OUTDIR")
    p.add_argument("--detector", required=True, metavar="MODEL.onnx", help="ONNX detector (YOLOX, YOLOv8, torchvision-style)")
    p.add_argument("--score-threshold", type=float, default=0.3, help="minimum detection score (default 0.3)")
    _add_detector_runtime(p)
    p.set_defaults(func=cmd_detect)

    p = sub.add_parser("train", help="train one stage (full, instance, fusion); resumable",
                       description="Train one of the paper's three stages into a run folder that is also a "
                                   "weights folder (official layout). Run the same command again to resume.")
    p.add_argument("--stage", required=True, choices=("full", "instance", "fusion"))
    p.add_argument("--data", required=True, metavar="DIR", help="folder of colour photos (greyscale ones are skipped)")
    p.add_argument("--out", required=True, metavar="RUN_DIR", help="run folder (weights, state.pt, log, samples)")
    p.add_argument("--init", metavar="DIR", help="weights to start from: the previous stage's run folder "
                                                 "(required for instance and fusion)")
    p.add_argument("--boxes", metavar="PATH", help="boxes per photo: folder of <stem>.npz or a JSON file")
    p.add_argument("--detector", metavar="MODEL.onnx", help="compute the boxes with this detector into RUN_DIR/boxes")
    p.add_argument("--score-threshold", type=float, default=0.3, help="detector score threshold (default 0.3)")
    p.add_argument("--width", type=float, default=1.0, help="channel width multiplier, full stage (default 1.0)")
    p.add_argument("--size", type=int, default=256, help="training resolution S (default 256)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-4, help="Adam learning rate (default 1e-4, as official)")
    p.add_argument("--steps", type=int, default=10000, help="train until this step (default 10000)")
    p.add_argument("--hint-p", type=float, default=0.125,
                   help="simulated hints: stop probability of the geometric point count (default 1/8, SIGGRAPH'17)")
    p.add_argument("--automatic", action="store_true", help="no simulated hints (same as --hint-p 1)")
    p.add_argument("--class-weight", type=float, default=0.0, help="weight of the ab classification loss (default 0: off)")
    p.add_argument("--max-instances", type=int, default=8, help="fusion stage: boxes per photo (default 8)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--amp", choices=("auto", "off", "bf16", "fp16"), default="auto",
                   help="mixed precision: auto = fp16 on CUDA, bf16 on CPUs with native bf16, else off")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--val", metavar="DIR", help="validation photos (default: 16 training photos)")
    p.add_argument("--val-every", type=int, default=500, help="validate and write samples/latest.png every N steps")
    p.add_argument("--val-images", type=int, default=16)
    p.add_argument("--bn-batches", type=int, default=50,
                   help="full/instance stage: at the end, BatchNorm statistics averaged over this many batches (default 50; 0 = off)")
    p.add_argument("--checkpoint-seconds", type=float, default=300.0, help="checkpoint at least this often (default 300)")
    p.set_defaults(func=cmd_train)

    from .evaluate import add_eval_parser
    from .models.bundle_cli import add_bundle_parser

    add_eval_parser(sub)
    add_bundle_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except UsageError as e:
        print(f"instcolor: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("instcolor: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

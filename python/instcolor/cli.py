"""Command line: ``instcolor colorize INPUT... -o OUTDIR [--weights DIR] [--boxes PATH] [--size N] [--hint ...]``."""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from .errors import UsageError


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


def _load_colorizer(args):
    from . import Colorizer
    from .models import CheckpointError

    try:  # no --weights: the built-in starter weights (from_pretrained prints a one-line notice)
        options = {}
        if args.precision is not None:
            if args.backend != "tensorrt" and not (args.backend == "onnxruntime" and args.precision in ("fp32", "int8")):
                raise UsageError("--precision applies to --backend tensorrt (fp32, fp16, int8) and --backend "
                                 "onnxruntime (fp32, int8) only")
            options["precision"] = args.precision
        if args.calibration is not None or args.calibration_count is not None:
            if args.precision != "int8":
                raise UsageError("--calibration / --calibration-count apply to --precision int8")
            if args.calibration is None:
                raise UsageError("--calibration-count needs --calibration DIR")
            options.update(calibration=args.calibration, calibration_count=args.calibration_count)
        if getattr(args, "mix", None) is not None:
            options["mix"] = args.mix
        return Colorizer.from_pretrained(args.weights or None, backend=args.backend, device=_device(args),
                                         detector=_make_detector(args), **options)
    except (CheckpointError, ValueError, FileNotFoundError) as e:
        raise UsageError(str(e)) from None


def _device(args) -> str:
    """``--device``, defaulting to what the backend needs: ``cuda`` for tensorrt, else ``cpu``."""
    if args.device is not None:
        return args.device
    return "cuda" if getattr(args, "backend", None) == "tensorrt" else "cpu"


def _output_suffix(args, f) -> str:
    from .imageio import SUFFIX_FOR_FORMAT

    if args.format:
        return SUFFIX_FOR_FORMAT[args.format]
    return ".jpg" if f.path.suffix.lower() in JPEG_SUFFIXES else ".png"


JPEG_SUFFIXES = frozenset({".jpg", ".jpeg", ".jpe", ".jfif"})


def _check_colorize_options(args) -> None:
    from .prepare import check_size

    try:
        if args.size is not None:
            check_size(args.size)
    except ValueError as e:
        raise UsageError(f"--size: {e}") from None
    if args.detector_runtime is not None and not args.detector:
        raise UsageError("--detector-runtime applies to --detector; give the detector model too")
    if not 0 <= args.max_instances <= 8:
        raise UsageError(f"--max-instances must be in 0..8 (the nets take at most 8 boxes), got {args.max_instances}")
    if not 0.0 <= args.score_threshold <= 1.0:
        raise UsageError(f"--score-threshold must be in [0, 1], got {args.score_threshold}")
    if args.quality is not None and not 1 <= args.quality <= 100:
        raise UsageError(f"--quality must be in 1..100, got {args.quality}")
    if args.bit_depth == 16 and args.format not in (None, "png"):
        raise UsageError(f"--bit-depth 16 writes 16-bit PNG; --format {args.format} is 8-bit only")
    if args.force and args.skip_existing:
        raise UsageError("give either --force (redo every output) or --skip-existing (keep finished ones), not both")
    if args.max_pixels is not None:
        from .imageio import max_pixels_limit

        try:
            max_pixels_limit(args.max_pixels)
        except ValueError as e:
            raise UsageError(f"--max-pixels: {e}") from None
    if args.temperature is not None:
        from .distribution import check_temperature

        try:
            check_temperature(args.temperature)
        except ValueError as e:
            raise UsageError(f"--temperature: {e}") from None
    if getattr(args, "mix", None) is not None:
        from .distribution import check_mix

        try:
            check_mix(args.mix)
        except ValueError as e:
            raise UsageError(f"--mix: {e}") from None
    if args.saturation is not None and not 0.0 <= args.saturation <= 1.0:
        raise UsageError(f"--saturation must be in [0, 1] (mean HSV saturation), got {args.saturation}")


def _hint_set(args):
    """``--hints FILE`` (a hint set as the editor saves it) -> (hints, GlobalHints or None);
    ((), None) without it. Its hints come before any ``--hint`` points."""
    if not args.hints:
        return (), None
    from .hintset import load_hint_set

    try:
        return load_hint_set(args.hints)
    except ValueError as e:
        raise UsageError(f"--hints {e}") from None


def _colorize_global_hints(args, from_file=None):
    """``--reference`` / ``--saturation`` (or the hint set's global hints) -> one GlobalHints for
    every image, or None."""
    if from_file is not None:
        if args.reference is not None or args.saturation is not None:
            raise UsageError("--hints FILE holds global hints; give --reference / --saturation or those, not both")
        return from_file
    if args.reference is None and args.saturation is None:
        return None
    from .global_hints import GlobalHints

    if args.reference is None:
        return GlobalHints(saturation=args.saturation)
    try:
        return GlobalHints.from_image(args.reference, saturation=args.saturation)
    except (OSError, ValueError) as e:
        raise UsageError(f"--reference: {e}") from None


def cmd_colorize(args) -> int:
    import numpy as np

    from ._fileio import OutputFolderError, claim_output_dir
    from .jobs import JobReport, collect_inputs, output_names, run_job

    _check_colorize_options(args)
    boxes_source = None
    if args.boxes:
        from .detect import BoxesFile

        try:
            boxes_source = BoxesFile(args.boxes)
        except (FileNotFoundError, ValueError) as e:
            raise UsageError(str(e)) from None
    outdir = Path(args.output_dir)
    files, failures = collect_inputs(args.inputs, recursive=args.recursive, exclude=[outdir])
    for name, why in failures:
        print(f"instcolor: {name}: {why}", file=sys.stderr)
    if not files and failures:
        return 1
    if not files:
        raise UsageError("no image files found in the given inputs" + ("" if args.recursive else " (sub-folders need -r)"))
    claim = dict(inputs=args.inputs, force=args.force, resume=args.skip_existing)
    try:
        claim_output_dir(outdir, "colorize", create=False, **claim)
    except OutputFolderError as e:
        raise UsageError(str(e)) from None
    names = output_names(files, lambda f: _output_suffix(args, f))
    inputs = {f.path.resolve() for f in files}
    report = JobReport("colorize", str(outdir), failed=[(name, f"{name}: {why}") for name, why in failures])
    items = []
    for f, name in zip(files, names):
        out = outdir / name
        if out.resolve() in inputs:
            report.failed.append((str(f.path), f"{f.path}: output {out} would overwrite an input; choose another -o folder"))
            print(f"instcolor: {report.failed[-1][1]}", file=sys.stderr)
        elif args.skip_existing and out.is_file():
            report.skipped.append(str(f.path))
        else:
            items.append((f, out, name.with_suffix("")))
    if not items:
        return _finish_colorize(report, args)

    file_hints, file_global = _hint_set(args)
    hints = tuple(file_hints) + tuple(args.hint)
    global_hints = _colorize_global_hints(args, file_global)
    colorizer = _load_colorizer(args)
    try:
        colorizer.check_support(decode=args.decode, global_hints=global_hints is not None)
    except ValueError as e:
        raise UsageError(str(e)) from None
    claim_output_dir(outdir, "colorize", **claim)
    from .imageio import read_image, write_image
    from .prepare import selection_order

    def load(item):
        f, _, key = item
        decoded = read_image(f.path, max_pixels=args.max_pixels)
        det = boxes_source.lookup(f.path, key=key) if boxes_source is not None else None
        return decoded, det

    def process(item, loaded):
        f, _, _ = item
        decoded, det = loaded
        for note in decoded.notes:
            print(f"instcolor: {f.path}: {note}", file=sys.stderr)
        if det is None and colorizer.detector is not None and args.max_instances > 0:
            det = colorizer.detector(decoded.rgb)
        if det is None or args.max_instances == 0:
            boxes, scores = [], None
        else:
            boxes = np.asarray(det.boxes, np.float32).reshape(-1, 4)
            scores = None if det.scores is None else np.asarray(det.scores, np.float32).reshape(-1)
            keep = selection_order(len(boxes), scores, max_boxes=args.max_instances)
            boxes, scores = boxes[keep], (None if scores is None else scores[keep])
        result = colorizer.colorize(decoded.rgb, boxes=boxes, scores=scores, hints=hints, size=args.size,
                                    global_hints=global_hints, decode=args.decode, temperature=args.temperature)
        if args.bit_depth == 16:
            from .compose import compose_high

            high = decoded.high if decoded.high is not None else decoded.rgb.astype(np.float32) / 255.0
            return decoded, compose_high(high, result.ab)
        return decoded, result.rgb

    def save(item, done):
        _, out, _ = item
        decoded, rgb = done
        out.parent.mkdir(parents=True, exist_ok=True)
        fmt = out.suffix[1:]  # the suffix came from imageio.SUFFIX_FOR_FORMAT
        alpha = decoded.alpha
        if alpha is not None and rgb.dtype == np.uint16 and alpha.dtype == np.uint8:
            alpha = alpha.astype(np.uint16) * 257
        elif alpha is not None and rgb.dtype == np.uint8 and alpha.dtype != np.uint8:
            alpha = (alpha.astype(np.uint32) // 257).astype(np.uint8)
        write_image(out, rgb, format=fmt, quality=args.quality, exif=decoded.exif, alpha=alpha)
        return out

    run_job(items, name=lambda item: str(item[0].path), load=load, process=process, save=save, report=report,
            desc="colorize", prefetch=args.prefetch)
    return _finish_colorize(report, args)


def _finish_colorize(report, args) -> int:
    """Summary on stderr, ``--report`` JSON, exit status (130 interrupted, 1 any failure, else 0)."""
    from .jobs import print_summary

    print_summary(report, "image(s)")
    if args.report:
        report.write_json(args.report)
    if report.interrupted:
        return 130
    return 1 if report.failed else 0


def cmd_init_weights(args) -> int:
    import torch

    from ._fileio import OutputFolderError, claim_output_dir, write_output_marker
    from .models import OFFICIAL_FILES, FusionNet, InstanceNet, SIGGRAPHBackbone, save_official
    from .models.checkpoint import is_untrained_official

    if not (0 < args.width <= 1):
        raise UsageError(f"--width must be in (0, 1], got {args.width}")
    out = Path(args.output_dir)
    try:  # new, empty, or (with --force) an earlier init-weights output; never trained weights
        claim_output_dir(out, "init-weights", force=args.force, option="DIR", legacy_own=is_untrained_official)
    except OutputFolderError as e:
        raise UsageError(str(e)) from None
    torch.manual_seed(args.seed)
    nets = {"full": SIGGRAPHBackbone(args.width), "instance": InstanceNet(args.width), "fusion": FusionNet(args.width)}
    save_official(out, nets)
    write_output_marker(out, "init-weights", OFFICIAL_FILES.values())
    print(f"instcolor: wrote untrained width-{args.width:g} weights (seed {args.seed}) to {out}; "
          "they colorize nothing sensible, use them for smoke tests only", file=sys.stderr)
    return 0


def cmd_export(args) -> int:
    from ._fileio import OutputFolderError, claim_output_dir
    from .export import export_files, export_to_folder, is_export_output
    from .models import CheckpointError, load_nets

    try:
        nets = load_nets(args.weights)
    except CheckpointError as e:
        raise UsageError(str(e)) from None
    precisions = ("fp32", "fp16") if args.precision == "both" else (args.precision,)
    calibration = None
    if args.precision == "int8":
        from .quantize import Calibration, CalibrationError

        if not args.calibration:
            raise UsageError("--precision int8 needs --calibration DIR (a folder of photos)")
        if args.detector and args.boxes:
            raise UsageError("give either --detector or --boxes for the calibration boxes, not both")
        try:
            calibration = Calibration(args.calibration, 32 if args.calibration_count is None else args.calibration_count,
                                      detector=args.detector, boxes=args.boxes)
            calibration.photos()  # a bad folder fails before the export
        except (CalibrationError, ValueError) as e:
            raise UsageError(str(e)) from None
    elif args.calibration or args.calibration_count is not None or args.detector or args.boxes:
        raise UsageError("--calibration, --calibration-count, --detector and --boxes apply to --precision int8")
    out = Path(args.output_dir)
    try:  # new, empty, or (with --force) an earlier export, whose files alone are replaced
        previous = claim_output_dir(out, "export", inputs=(args.weights,), force=args.force,
                                    legacy_own=is_export_output)
        earlier = (previous.get("files") or export_files(out)) if previous else ()
        results = export_to_folder(nets, out, precisions, size=args.size, earlier=earlier, calibration=calibration)
    except (OutputFolderError, FileExistsError, ValueError) as e:
        raise UsageError(str(e)) from None
    for target, m in results:
        print(f"instcolor: exported {len(m['segments'])} {m['precision']} segments to {target}", file=sys.stderr)
    return 0


def cmd_detect(args) -> int:
    from ._fileio import claim_output_dir
    from .detect import detect_to_folder
    from .jobs import collect_inputs

    out = Path(args.output_dir)
    files, failures = collect_inputs(args.inputs, recursive=args.recursive, exclude=[out])
    for name, why in failures:
        print(f"instcolor: {name}: {why}", file=sys.stderr)
    if not files:
        if failures:
            return 1
        raise UsageError("no image files found in the given inputs" + ("" if args.recursive else " (sub-folders need -r)"))
    if args.detector_runtime is not None and not args.detector:
        raise UsageError("--detector-runtime applies to --detector; give the detector model too")
    try:
        claim_output_dir(out, "detect", inputs=args.inputs, resume=True, create=False)
        detector = _make_detector(args)
        claim_output_dir(out, "detect", inputs=args.inputs, resume=True)
    except (ValueError, FileNotFoundError) as e:
        raise UsageError(str(e)) from None
    errors = detect_to_folder(files, detector, out)
    print(f"instcolor: boxes of {len(files) - len(errors)} image(s) in {out}"
          + (f", {len(errors) + len(failures)} failed" if errors or failures else ""), file=sys.stderr)
    return 1 if errors or failures else 0


def _add_detector_options(p, required: bool = False) -> None:
    """The detector options every subcommand that runs a detector shares (one spelling, one factory)."""
    p.add_argument("--detector", required=required, metavar="MODEL.onnx",
                   help="ONNX object detector (YOLOX, YOLOv8 or torchvision-style outputs)"
                        + ("" if required else "; default: none (boxes only from --boxes, else the full-image net)"))
    p.add_argument("--detector-runtime", choices=("onnxruntime", "tensorrt"), default=None,
                   help="what runs the --detector model: onnxruntime, or tensorrt (builds and caches an engine on "
                        "the first CUDA GPU) (default: onnxruntime)")
    p.add_argument("--score-threshold", type=float, default=0.3, metavar="T", help="minimum detection score")


def _make_detector(args):
    """The one detector factory of the CLI: ``--detector`` (+ runtime, threshold) through
    :func:`instcolor.detect.load_detector`; None without ``--detector``."""
    from .detect import load_detector

    if not args.detector:
        return None
    if Path(args.detector).suffix.lower() != ".onnx":
        raise ValueError(f"--detector: expected an .onnx model file, got {args.detector}")
    return load_detector(args.detector, score_threshold=args.score_threshold,
                         runtime=getattr(args, "detector_runtime", None) or "onnxruntime")


def cmd_train(args) -> int:
    from .train import TrainConfig, TrainError, train
    from .train.loop import claim_run_folder

    out = Path(args.out)
    boxes = args.boxes
    if args.detector_runtime is not None and not args.detector:
        raise UsageError("--detector-runtime applies to --detector; give the detector model too")
    try:  # a new or empty folder, or the run to resume (before --detector writes RUN_DIR/boxes)
        claim_run_folder(out, (args.data, args.val, args.init, boxes), option="--out")
    except TrainError as e:
        raise UsageError(str(e)) from None
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
                      rebalance=args.rebalance, global_hints=args.global_hints, global_reveal=args.global_reveal,
                      hint_uniform=args.hint_uniform, keep_blend=args.keep_blend, adversarial=args.adversarial, adv_weight=args.adv_weight,
                      warmup_steps=args.warmup_steps, d_lr=args.d_lr,
                      max_instances=args.max_instances, seed=args.seed, device=args.device, amp=args.amp,
                      threads=args.threads, checkpoint_seconds=args.checkpoint_seconds, val=args.val,
                      bn_batches=args.bn_batches, workers=args.workers, time_limit=args.time_limit,
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
    _add_version(parser)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("colorize", help="colorize image files or folders of images",
                       description="Colorize images; writes OUTDIR/<name> at each input's resolution: JPEG inputs "
                                   "give JPEG, others PNG (--format changes it). Sub-folders (-r) are mirrored.")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders of images")
    p.add_argument("-o", "--output-dir", required=True, metavar="OUTDIR",
                   help="folder for the results (new, empty, or an earlier colorize output with --force / --skip-existing)")
    _add_version(p)
    p.add_argument("-r", "--recursive", action="store_true", help="also colorize the images in sub-folders, "
                                                                  "mirroring them under OUTDIR")
    p.add_argument("--weights", metavar="DIR",
                   help="weights folder: official layout (latest_net_G.pth, latest_net_GF.pth, latest_net_GComp.pth), "
                        "a training run folder or a bundle (config.json + model.safetensors); default: the "
                        "built-in starter weights")
    p.add_argument("--boxes", metavar="PATH", help="instance boxes: a folder of <stem>.npz (bbox, scores) or one JSON "
                                                   "file; default: none (the detector's, else the full-image net)")
    _add_detector_options(p)
    p.add_argument("--max-instances", type=int, default=8, metavar="K",
                   help="use at most K boxes per image, the highest-scoring (0..8; 0 = full-image net only)")
    p.add_argument("--size", type=int, default=None, metavar="N",
                   help="processing size, a multiple of 8 up to 2048 (default: the size the weights were trained at "
                        "when they record it, else 256)")
    p.add_argument("--hint", action="append", type=parse_hint, default=[], metavar="X,Y,#RRGGBB[,P]",
                   help="a colour hint at input pixel (X, Y), patch size P (default 1); repeatable (default: none)")
    p.add_argument("--hints", metavar="FILE",
                   help="a hint set: JSON {\"hints\": [{x, y, rgb | ab, size}, ...], \"global\": {...}} as the editor "
                        "saves it (also the serve API's hints list and a video hints file); with --hint both apply")
    p.add_argument("--decode", choices=("regression", "distribution", "mixed"), default=None,
                   help="ab output: 'regression' (the nets' regression head, the official output), 'distribution' "
                        "(annealed mean of the classification head's ab distribution) or 'mixed' (the two blended, "
                        "--mix of the annealed mean); default: what the weights recommend (the built-in starter: "
                        "mixed, T 0.38, mix 0.35), else regression")
    p.add_argument("--temperature", type=float, default=None, metavar="T",
                   help="annealed-mean temperature of --decode distribution / mixed, in (0, 10] (default: the "
                        "weights' recommendation, else 0.38; lower = more saturated, 1 = the plain mean)")
    p.add_argument("--mix", type=float, default=None, metavar="M",
                   help="--decode mixed: the annealed mean's share of the ab, in [0, 1] (default: the weights' "
                        "recommendation, else 0.35)")
    p.add_argument("--reference", metavar="PHOTO",
                   help="global hint: take the colour histogram of this reference photo (SIGGRAPH'17 global hints; "
                        "needs weights with the global hints branch)")
    p.add_argument("--saturation", type=float, default=None, metavar="S",
                   help="global hint: mean saturation of the result in [0, 1] (HSV; needs weights with the global "
                        "hints branch)")
    p.add_argument("--backend", choices=("auto", "torch", "onnxruntime", "tensorrt"), default="auto",
                   help="inference backend (auto: onnxruntime on the CPU when it is installed, else torch; "
                        "onnxruntime and tensorrt export the nets on first use and cache them)")
    p.add_argument("--device", default=None,
                   help="device for the nets: cpu, cuda or cuda:N (default: cuda for --backend tensorrt, else cpu)")
    p.add_argument("--precision", choices=("fp32", "fp16", "int8"), default=None,
                   help="precision of the nets: --backend tensorrt (fp32, fp16, int8) or onnxruntime (fp32, int8); "
                        "int8 runs an INT8 export: --weights is one (instcolor export --precision int8), or weights "
                        "with --calibration DIR, or none (the built-in starter's) (default: fp32)")
    p.add_argument("--calibration", metavar="DIR", default=None,
                   help="--precision int8 with --weights of fp32 weights: quantize them with the photos in DIR "
                        "(once; cached, keyed by the weights and the photos; --detector gives the boxes)")
    p.add_argument("--calibration-count", type=int, default=None, metavar="N",
                   help="at most N calibration photos, spread over DIR (default: 32)")
    p.add_argument("--format", choices=("png", "jpg", "webp"), default=None,
                   help="output format (default: jpg for JPEG inputs, png for the others)")
    p.add_argument("--quality", type=int, default=None, metavar="Q",
                   help="JPEG / WebP quality 1..100 (default: 95 for JPEG, 90 for WebP)")
    p.add_argument("--bit-depth", type=int, choices=(8, 16), default=8,
                   help="16: write 16-bit PNG whose lightness is the input's own full precision (16-bit scans)")
    p.add_argument("--max-pixels", type=int, default=None, metavar="N",
                   help="refuse images with more pixels than N, checked before decoding (default: "
                        "$INSTCOLOR_MAX_PIXELS, else 100000000)")
    p.add_argument("--skip-existing", action="store_true",
                   help="keep outputs that already exist (resume an interrupted run)")
    p.add_argument("--force", action="store_true", help="replace the outputs of an earlier run in OUTDIR")
    p.add_argument("--report", metavar="FILE.json", help="also write the summary (written, skipped, failed and why) "
                                                         "as JSON (default: none)")
    p.add_argument("--prefetch", type=int, default=2, metavar="N",
                   help="images read and decoded ahead of the nets")
    p.set_defaults(func=cmd_colorize)

    p = sub.add_parser("export", help="export the nets as ONNX segments (+ manifest.json)",
                       description="Export the three nets as ordered ONNX segments for ONNX Runtime / TensorRT.")
    p.add_argument("--weights", required=True, metavar="DIR", help="folder with the three checkpoint files")
    p.add_argument("-o", "--output-dir", required=True, metavar="OUTDIR",
                   help="folder for the segments and manifest.json (new, empty, or an earlier export with --force)")
    p.add_argument("--precision", choices=("fp32", "fp16", "both", "int8"), default="fp32",
                   help="fp32 (default), fp16 (strongly typed, for TensorRT >= 11), both (OUTDIR/fp32, OUTDIR/fp16) "
                        "or int8 (QDQ segments, static post-training quantization; needs --calibration)")
    p.add_argument("--calibration", metavar="DIR", default=None,
                   help="--precision int8: folder of photos the segments are calibrated on")
    p.add_argument("--calibration-count", type=int, default=None, metavar="N",
                   help="--precision int8: at most N calibration photos, spread over DIR (default: 32)")
    p.add_argument("--detector", metavar="MODEL.onnx", default=None,
                   help="--precision int8: ONNX detector giving the calibration photos' instance boxes (photos "
                        "without boxes get seeded random ones)")
    p.add_argument("--boxes", metavar="PATH", default=None,
                   help="--precision int8: the calibration photos' boxes, a folder of <stem>.npz or one JSON file")
    p.add_argument("--size", type=int, default=256, help="size of the tracing inputs (all dims stay dynamic)")
    p.add_argument("--force", action="store_true",
                   help="replace an earlier export in OUTDIR (only its own files; other files stay)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("init-weights", help="write untrained (random) weights in the official layout",
                       description="Write randomly initialised nets as latest_net_{G,GF,GComp}.pth: "
                                   "for smoke tests and benchmarks when no trained checkpoint is at hand.")
    p.add_argument("output_dir", metavar="DIR")
    p.add_argument("--width", type=float, default=1.0, help="channel width multiplier (1.0 = official)")
    p.add_argument("--seed", type=int, default=0, help="random seed (same seed, same result)")
    p.add_argument("--force", action="store_true",
                   help="replace untrained weights that init-weights wrote to DIR before (never other files)")
    p.set_defaults(func=cmd_init_weights)

    p = sub.add_parser("detect", help="detect instance boxes and write <stem>.npz per image",
                       description="Run an ONNX detector on images; writes OUTDIR/<stem>.npz (bbox, scores, "
                                   "labels), the official boxes format that --boxes and `train --boxes` read. "
                                   "Images whose file exists are skipped (an interrupted run resumes).")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders of images")
    p.add_argument("-o", "--output-dir", required=True, metavar="OUTDIR", help="folder for the .npz files")
    p.add_argument("-r", "--recursive", action="store_true", help="also the images in sub-folders, mirrored under OUTDIR")
    _add_detector_options(p, required=True)
    p.set_defaults(func=cmd_detect)

    p = sub.add_parser("train", help="train one stage (full, instance, fusion); resumable",
                       description="Train one of the paper's three stages into a run folder that is also a "
                                   "weights folder (official layout). Run the same command again to resume.")
    p.add_argument("--stage", required=True, choices=("full", "instance", "fusion"),
                   help="full: the full-image net from scratch; instance: the instance net on box crops; "
                        "fusion: the 13 blend blocks")
    p.add_argument("--data", required=True, metavar="DIR", help="folder of colour photos (greyscale ones are skipped)")
    p.add_argument("--out", required=True, metavar="RUN_DIR", help="run folder (weights, state.pt, log, samples)")
    p.add_argument("--init", metavar="DIR", help="weights to start from: the previous stage's run folder "
                                                 "(required for instance and fusion; full stage: fine-tune these)")
    p.add_argument("--boxes", metavar="PATH", help="boxes per photo: folder of <stem>.npz or a JSON file")
    _add_detector_options(p)  # train: --detector computes the boxes into RUN_DIR/boxes
    p.add_argument("--width", type=float, default=1.0, help="channel width multiplier, full stage (default 1.0)")
    p.add_argument("--size", type=int, default=256, help="training resolution S (default 256)")
    p.add_argument("--batch-size", type=int, default=16, help="images (or crops) per step")
    p.add_argument("--lr", type=float, default=1e-4, help="Adam learning rate (default 1e-4, as official)")
    p.add_argument("--steps", type=int, default=10000, help="train until this step (default 10000)")
    p.add_argument("--hint-p", type=float, default=0.125,
                   help="simulated hints: stop probability of the geometric point count (default 1/8, SIGGRAPH'17)")
    p.add_argument("--automatic", action="store_true", help="no simulated hints (same as --hint-p 1)")
    p.add_argument("--class-weight", type=float, default=0.0,
                   help="weight of the ab classification head's loss, class-rebalanced (default 0: off)")
    p.add_argument("--rebalance", type=float, default=0.5, metavar="LAMBDA",
                   help="class rebalancing: mix of the training set's smoothed ab prior with a uniform prior "
                        "(default 0.5 as Zhang et al.; 0 = plain cross-entropy)")
    p.add_argument("--global-hints", action="store_true",
                   help="train the SIGGRAPH'17 global hints branch (histogram, saturation); full and fusion stages")
    p.add_argument("--global-reveal", type=float, default=0.5,
                   help="with --global-hints: probability of revealing each global hint per photo (default 0.5)")
    p.add_argument("--hint-uniform", type=float, default=0.0,
                   help="probability that a simulated hint is placed uniformly instead of near the centre (default 0)")
    p.add_argument("--adversarial", action="store_true",
                   help="SCGAN-style adversarial training: WGAN-GP PatchGAN critics on (L, ab) and on the "
                        "saliency-weighted image (spectral-residual saliency of the grey input); any stage, size >= 32")
    p.add_argument("--adv-weight", type=float, default=0.01,
                   help="with --adversarial: weight of the generator's adversarial loss (default 0.01)")
    p.add_argument("--warmup-steps", type=int, default=1000,
                   help="with --adversarial: steps of reconstruction loss only before the adversarial loss is added "
                        "(counted from step 0 of the run; the critics train from the start; default 1000)")
    p.add_argument("--d-lr", type=float, default=1e-4,
                   help="with --adversarial: Adam learning rate of the critics (default 1e-4)")
    p.add_argument("--max-instances", type=int, default=8, help="fusion stage: boxes per photo (default 8)")
    p.add_argument("--keep-blend", action="store_true",
                   help="fusion stage: fine-tune the blend blocks of --init's fusion net instead of starting them "
                        "fresh (after fine-tuning the full-image net)")
    p.add_argument("--seed", type=int, default=0, help="random seed (same seed, same result)")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--amp", choices=("auto", "off", "bf16", "fp16"), default="auto",
                   help="mixed precision: auto = fp16 on CUDA, bf16 on CPUs with native bf16, else off")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--val", metavar="DIR", help="validation photos (default: 16 training photos)")
    p.add_argument("--val-every", type=int, default=500, help="validate and write samples/latest.png every N steps")
    p.add_argument("--val-images", type=int, default=16, help="validation photos used for the loss and samples")
    p.add_argument("--bn-batches", type=int, default=50,
                   help="full/instance stage: at the end, BatchNorm statistics averaged over this many batches (default 50; 0 = off)")
    p.add_argument("--checkpoint-seconds", type=float, default=300.0, help="checkpoint at least this often (default 300)")
    p.add_argument("--workers", type=int, default=0,
                   help="processes that read photos and make samples ahead of the GPU (default 0: one background "
                        "thread); the samples do not depend on it")
    p.add_argument("--time-limit", type=float, default=0.0, metavar="SECONDS",
                   help="train for at most this long in this invocation, then finish as if --steps were reached "
                        "(final validation, BatchNorm statistics, checkpoint); raise --steps to continue (default 0: none)")
    p.set_defaults(func=cmd_train)

    from .evaluate import add_eval_parser
    from .models.bundle_cli import add_bundle_parser
    from .serve.cli import add_serve_parser
    from .video.cli import add_video_parsers

    add_eval_parser(sub)
    add_video_parsers(sub)
    add_serve_parser(sub)
    add_bundle_parser(sub)
    for p in sub.choices.values():
        p.formatter_class = HelpFormatter
    return parser


class HelpFormatter(argparse.HelpFormatter):
    """Shows every option's default, unless its help already says it (or it has none to show)."""

    def _get_help_string(self, action):
        text = action.help or ""
        if ("default" in text or action.default in (None, False, argparse.SUPPRESS, [])
                or not action.option_strings or isinstance(action, argparse._VersionAction)):
            return text
        return f"{text} (default: %(default)s)"


def _add_version(p) -> None:
    from . import __version__

    p.add_argument("--version", action="version", version=f"instcolor {__version__}", help="print the version and exit")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except UsageError as e:
        print(f"instcolor: error: {e}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as e:
        if (e.name or "").split(".")[0] != "torch":
            raise
        print(f"instcolor: error: 'instcolor {args.command}' needs PyTorch, which is not installed here: "
              f"pip install 'instcolor[torch]' (colorize, detect, serve, the editor and video run without it)",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("instcolor: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

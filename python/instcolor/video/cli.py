"""``instcolor video`` and ``instcolor eval-video`` (registered by :func:`add_video_parsers`).

Nothing heavy is imported here: PyAV, OpenCV, the nets and the detector load inside the commands.
"""
from __future__ import annotations

import sys
from pathlib import Path


def add_video_parsers(subparsers) -> None:
    """Register ``video`` and ``eval-video`` on an argparse subparsers object."""
    p = subparsers.add_parser(
        "video", help="colorize a video file or a folder of numbered frames",
        description="Colorize a video: frame count, timestamps (VFR too), size and rotation are kept, audio and "
                    "subtitle streams are copied as they are, only the input's lightness is used. OUTPUT is a "
                    "video file (container from the suffix) or, ending in '/', a folder of numbered PNG frames. "
                    "It appears only when complete. Needs the video extra: pip install 'instcolor[video]'.")
    p.add_argument("input", metavar="INPUT", help="a video file FFmpeg can decode, or a folder of numbered frames")
    p.add_argument("-o", "--output", required=True, metavar="OUTPUT",
                   help="output video file (e.g. out.mp4, out.mkv) or folder for PNG frames (ends with '/')")
    p.add_argument("--weights", metavar="DIR",
                   help="weights folder (official layout, training run folder or bundle); default: the built-in "
                        "starter weights")
    p.add_argument("--backend", choices=("auto", "torch", "onnxruntime", "tensorrt"), default="auto",
                   help="inference backend (auto: onnxruntime on the CPU when it is installed, else torch)")
    p.add_argument("--device", default=None,
                   help="device for the nets: cpu, cuda or cuda:N (default: cuda for --backend tensorrt, else cpu)")
    p.add_argument("--size", type=int, default=None, metavar="S",
                   help="processing size, a multiple of 8 (default: the size the weights were trained at, else 256)")
    p.add_argument("--detector", metavar="MODEL.onnx",
                   help="ONNX object detector for the instance boxes; default: none (full-image net only)")
    p.add_argument("--score-threshold", type=float, default=0.3, metavar="T", help="minimum detection score")
    p.add_argument("--detect-every", type=int, default=5, metavar="N",
                   help="run the detector on every N-th frame and at scene cuts; a tracker carries the boxes between")
    p.add_argument("--max-instances", type=int, default=8, metavar="K",
                   help="at most K tracked boxes per frame (0..8)")
    p.add_argument("--stabilize", choices=("flow", "none"), default="flow",
                   help="flow: blend the colours along the optical flow (steadier colours); none: every frame "
                        "exactly as the image colorizer colours it")
    p.add_argument("--hints", metavar="FILE.json",
                   help="colour hints with frame ranges, optionally tracked (see README, 'Video'); default: none")
    p.add_argument("--codec", default="libx264", metavar="NAME",
                   help="video encoder, e.g. libx264, libx265, libvpx-vp9, ffv1 (lossless)")
    p.add_argument("--crf", type=int, default=None, metavar="Q",
                   help="constant rate factor of x264/x265/VPx/AV1, lower = better (default: 18 for libx264, "
                        "20 for libx265, 24 for libvpx-vp9 and AV1)")
    p.add_argument("--preset", default="ultrafast", metavar="P",
                   help="x264/x265 speed preset (ultrafast .. veryslow): at a given --crf the quality is about the "
                        "same, slower presets give smaller files (veryfast: about half the size, 3x the encoding time)")
    p.add_argument("--batch-size", type=int, default=4, metavar="N", help="frames per pass of the nets")
    p.add_argument("--helper-threads", type=int, default=None, metavar="N",
                   help="threads of each stage besides the nets: decoder, encoder, flow, CPU kernels "
                        "(0: the libraries' defaults; default: 1 on machines with at most 4 cores, "
                        "so that they leave the cores to the nets, else 0)")
    p.add_argument("--nets-threads", type=int, default=None, metavar="N",
                   help="intra-op threads of each run of the nets (ONNX Runtime; 0: the colorizer's own sessions; "
                        "default: half the cores, at least 1, on machines with at most 4 cores, else 0)")
    p.add_argument("--nets-workers", type=int, default=None, metavar="N",
                   help="batches of the nets run at once (ONNX Runtime; default: cores / --nets-threads on "
                        "machines with at most 4 cores, else 1)")
    p.add_argument("--fps", type=float, default=25.0, metavar="F",
                   help="frame rate of a folder of frames (video files keep their own timestamps)")
    p.add_argument("--no-audio", action="store_true", help="leave out the audio and subtitle streams")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_video)

    p = subparsers.add_parser(
        "eval-video", help="temporal consistency (CDC, warping error) and PSNR/SSIM/colourfulness of a video",
        description="Compare a colorized video with its colour original, frame by frame (same frame count and "
                    "size): CDC and warping error of both and their ratios, mean PSNR, SSIM and colourfulness. "
                    "Prints a markdown table; --json writes everything, per frame too.")
    p.add_argument("pred", metavar="PRED", help="colorized video (file or folder of numbered frames)")
    p.add_argument("gt", metavar="GT", help="ground-truth colour video (file or folder of numbered frames)")
    p.add_argument("--json", metavar="OUT.json", help="also write the full result as JSON (default: none)")
    p.add_argument("--flow-preset", choices=("ultrafast", "fast", "medium"), default="medium",
                   help="OpenCV DIS preset of the ground truth's flow used by the warping error")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_eval_video)


def _options(args):
    from .options import VideoError, VideoOptions

    from ..errors import UsageError

    if not 0 <= args.max_instances <= 8:
        raise UsageError(f"--max-instances must be in 0..8, got {args.max_instances}")
    if args.detect_every < 1:
        raise UsageError(f"--detect-every must be >= 1, got {args.detect_every}")
    if not 0.0 <= args.score_threshold <= 1.0:
        raise UsageError(f"--score-threshold must be in [0, 1], got {args.score_threshold}")
    try:
        return VideoOptions(size=args.size, detect_every=args.detect_every, max_instances=args.max_instances,
                            stabilize=args.stabilize, batch_size=args.batch_size,
                            helper_threads=args.helper_threads, nets_threads=args.nets_threads,
                            nets_workers=args.nets_workers, codec=args.codec, crf=args.crf,
                            preset=args.preset, fps=args.fps, copy_streams=not args.no_audio,
                            progress=not args.no_progress)
    except VideoError as e:
        raise UsageError(str(e).replace("VideoOptions: ", "--").replace("_", "-", 1)) from None


def _check_encoder(args) -> None:
    """--codec / the output suffix, checked before the nets load."""
    from ..errors import UsageError
    from .sink import is_folder_target

    if is_folder_target(args.output):
        return
    try:
        import av  # noqa: F401 - only: is PyAV installed?
    except ImportError as e:
        raise UsageError(f"video files need PyAV: pip install 'instcolor[video]' ({e})") from None
    from .options import VideoError
    from .sink import video_encoder

    try:
        video_encoder(args.codec)
    except VideoError as e:
        raise UsageError(str(e)) from None
    if not Path(args.output).suffix:
        raise UsageError(f"-o {args.output}: give a file suffix (.mp4, .mkv, .mov, ...) for the container, or end "
                         "the path with '/' for a folder of PNG frames")


def cmd_video(args) -> int:
    from ..errors import UsageError
    from .options import VideoError

    options = _options(args)
    _check_encoder(args)
    inp = Path(args.input)
    if not inp.exists():
        raise UsageError(f"{args.input}: no such file or folder")
    hints = None
    if args.hints:
        from .hints import load_hints

        try:
            hints = load_hints(args.hints)
        except VideoError as e:
            raise UsageError(str(e)) from None
    from . import colorize_file

    colorizer = _load_colorizer(args)
    try:
        result = colorize_file(args.input, args.output, colorizer, options, hints=hints)
    except VideoError as e:
        print(f"instcolor: error: {e}", file=sys.stderr)
        return 1
    print(f"instcolor: wrote {result.frames} frame(s) to {args.output} in {result.seconds:.1f} s "
          f"({result.fps:.1f} frames/s)", file=sys.stderr)
    return 0


def _load_colorizer(args):
    from .. import Colorizer
    from ..errors import UsageError
    from ..models import CheckpointError

    detector = None
    try:
        if args.detector:
            from ..detect import load_detector

            if Path(args.detector).suffix.lower() != ".onnx":
                raise ValueError(f"--detector: expected an .onnx model file, got {args.detector}")
            detector = load_detector(args.detector, score_threshold=args.score_threshold)
        device = args.device or ("cuda" if args.backend == "tensorrt" else "cpu")
        return Colorizer.from_pretrained(args.weights or None, backend=args.backend, device=device, detector=detector)
    except (CheckpointError, ValueError, FileNotFoundError) as e:
        raise UsageError(str(e)) from None


def cmd_eval_video(args) -> int:
    import json

    from .._fileio import atomic_path
    from ..errors import UsageError
    from .evaluate import evaluate_videos, format_report
    from .options import VideoError

    json_out = Path(args.json) if args.json else None
    if json_out is not None and (json_out.is_dir() or not json_out.parent.is_dir()):
        raise UsageError(f"--json {json_out}: " + ("is a folder" if json_out.is_dir()
                                                   else f"folder {json_out.parent} does not exist"))
    for what, p in (("PRED", args.pred), ("GT", args.gt)):
        if not Path(p).exists():
            raise UsageError(f"{what} {p}: no such file or folder")
    try:
        result = evaluate_videos(args.pred, args.gt, flow_preset=args.flow_preset, progress=not args.no_progress)
    except VideoError as e:
        print(f"instcolor: error: {e}", file=sys.stderr)
        return 1
    print(format_report(result))
    if json_out is not None:
        with atomic_path(json_out) as tmp:
            tmp.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    return 0

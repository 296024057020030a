"""End-to-end video colorization benchmark: `instcolor video` throughput, per-stage times, quality.

For each clip (the first --frames frames, cut losslessly by copying packets in decode order):

* **reference**: the bare per-frame rate of ``Colorizer.colorize`` on the same decoded frames, in
  memory (no decoding, encoding or flow), measured in the same run; with a detector also the rate of
  ``colorize`` running the detector on every frame (and serially on every 5th);
* **rounds** (``--rounds``, default 3): each round measures bare ``colorize`` again and then runs every
  configuration, so each ratio pairs runs taken close together (this shared machine's speed drifts by
  tens of per cent within minutes); the table gives the median ratio and its range;
* **end to end**: ``instcolor.video.colorize_file`` on the cut clip (decode -> ... -> H.264 encode,
  audio copied) for per-frame (``--stabilize none``) and stabilised (``flow``), without and with the
  detector (``--detect-every 5``): frames/s, ratio to the reference, CPU and busy seconds per thread,
  RSS;
* **quality** (unless --no-quality): ``instcolor eval-video`` of each output against the colour
  original: CDC ratio, warping-error ratio, mean PSNR, mean colourfulness.

    python benchmarks/bench_video.py --frames 120 --json out/bench_video.json
    python benchmarks/bench_video.py --clips bottle-detection.mp4 --frames 0 --configs flow --rounds 1 \
        --no-quality --detector ''   # RSS over a whole clip
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SHARED = HERE.parents[1] / "shared"


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


class RssSampler:
    def __init__(self, every_s: float = 0.25):
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, args=(every_s,), daemon=True)

    def _run(self, every_s):
        t0 = time.monotonic()
        while not self._stop.is_set():
            self.samples.append((time.monotonic() - t0, rss_mib()))
            self._stop.wait(every_s)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()


def cut_clip(src: Path, dst: Path, frames: int) -> int:
    """Copy the first ``frames`` video packets (decode order, so every frame stays decodable) and the
    audio up to the same time into ``dst`` (Matroska). 0 = the whole clip. Returns the frame count."""
    import av

    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        vs = inp.streams.video[0]
        streams = [vs] + list(inp.streams.audio)
        omap = {s.index: out.add_stream_from_template(s) for s in streams}
        n, end = 0, None
        for p in inp.demux(streams):
            if not p.size:  # the demuxer's end-of-stream packets (Matroska stores no dts for some real ones)
                continue
            if p.stream.index == vs.index:
                if frames and n >= frames:
                    continue
                n += 1
                if p.pts is not None:
                    t = float(p.pts * p.time_base)
                    end = t if end is None else max(end, t)
            elif (frames and end is not None and n >= frames
                  and float((p.dts if p.dts is not None else p.pts) * p.time_base) > end):
                continue
            p.stream = omap[p.stream.index]
            out.mux(p)
    with av.open(str(dst)) as c:
        return sum(1 for _ in c.decode(video=0))


def decode_all(path: Path) -> list[np.ndarray]:
    import av

    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def bare_rate(colorizer, frames, detector=None) -> float:
    """Frames/s of Colorizer.colorize on in-memory frames (one warm-up call first)."""
    c = colorizer
    saved = c.detector
    c.detector = detector
    try:
        c.colorize(frames[0])
        t0 = time.perf_counter()
        for f in frames:
            c.colorize(f)
        return len(frames) / (time.perf_counter() - t0)
    finally:
        c.detector = saved


def bare_rate_every(colorizer, frames, detector, every: int) -> float:
    """Frames/s of the same work done serially: the detector on every ``every``-th frame (its boxes
    held until the next detection), ``Colorizer.colorize`` with those boxes on every frame: the nets
    and the detector of ``--detect-every N``, without decoding, encoding, tracking or flow."""
    c = colorizer
    saved = c.detector
    c.detector = None
    try:
        det = detector(frames[0])
        c.colorize(frames[0], boxes=det.boxes, scores=det.scores)
        t0 = time.perf_counter()
        for i, f in enumerate(frames):
            if i % every == 0:
                det = detector(f)
            c.colorize(f, boxes=det.boxes, scores=det.scores)
        return len(frames) / (time.perf_counter() - t0)
    finally:
        c.detector = saved


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos", default=str(SHARED / "videos"), help="folder of clips")
    ap.add_argument("--clips", nargs="*", default=None, help="clip file names (default: every clip in --videos)")
    ap.add_argument("--frames", type=int, default=120, help="first N frames of each clip (0 = all)")
    ap.add_argument("--weights", default=None, help="weights folder (default: the built-in starter weights)")
    ap.add_argument("--detector", default=str(SHARED / "models" / "yolox_nano_coco_416.onnx"),
                    help="ONNX detector for the 'with detector' rows ('' = skip them)")
    ap.add_argument("--configs", nargs="*", default=["none", "flow", "none+det", "flow+det"],
                    help="end-to-end configurations: none | flow, optionally +det")
    ap.add_argument("--batch-size", type=int, default=4, help="frames per pass of the nets")
    ap.add_argument("--helper-threads", type=int, nargs="+", default=[1],
                    help="VideoOptions.helper_threads values to run each config with (default 1; e.g. 1 0 "
                         "compares one thread per helper stage with the libraries' defaults)")
    ap.add_argument("--nets-threads", type=int, nargs="+", default=[None],
                    help="VideoOptions.nets_threads values to run each config with (default: the option's "
                         "default; 0 = the colorizer's own sessions)")
    ap.add_argument("--rounds", type=int, default=3,
                    help="rounds per clip: each re-measures bare colorize and then runs every config, so each "
                         "ratio pairs runs taken minutes apart at most; the table gives the median ratio and "
                         "its range (this shared machine's speed drifts by +-20 %% within minutes)")
    ap.add_argument("--backend", default="auto", help="colorizer backend (default auto: ONNX Runtime on the CPU)")
    ap.add_argument("--device", default="cpu", help="device of the nets (cuda with --backend torch)")
    ap.add_argument("--no-quality", action="store_true", help="skip eval-video of the outputs")
    ap.add_argument("--json", default=None, help="write all results as JSON")
    args = ap.parse_args(argv)

    from instcolor import Colorizer
    from instcolor.detect import load_detector
    from instcolor.video import VideoOptions, colorize_file
    from instcolor.video.evaluate import evaluate_videos

    videos = Path(args.videos)
    clips = args.clips or sorted(p.name for p in videos.iterdir() if p.suffix.lower() in (".mp4", ".mkv", ".mov"))
    colorizer = Colorizer.from_pretrained(args.weights, backend=args.backend, device=args.device)
    detector = load_detector(args.detector) if args.detector and any("+det" in c for c in args.configs) else None
    results = []
    tmp = Path(tempfile.mkdtemp(prefix="bench_video_"))
    print(f"# bench_video: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the start; backend "
          f"{args.backend} on {args.device}", file=sys.stderr)
    for clip in clips:
        src = tmp / f"{Path(clip).stem}_cut.mkv"
        n = cut_clip(videos / clip, src, args.frames)
        frames = decode_all(src)
        h, w = frames[0].shape[:2]
        ref = bare_rate(colorizer, frames)
        ref_det = bare_rate(colorizer, frames, detector) if detector is not None else None
        ref_every = bare_rate_every(colorizer, frames, detector, 5) if detector is not None else None
        row = {"clip": clip, "frames": n, "size": f"{w}x{h}", "bare_colorize_fps": ref, "bare_rounds": [ref],
               "bare_colorize_detector_fps": ref_det,
               "bare_colorize_detect_every_5_fps": ref_every, "runs": {}}
        print(f"{clip}: {n} frames {w}x{h}; bare colorize {ref:.2f} fps"
              + (f", with detector on every frame {ref_det:.2f} fps, on every 5th {ref_every:.2f} fps"
                 if ref_det else ""), file=sys.stderr)
        plan = [(c, t, nt) for c in args.configs for t in args.helper_threads for nt in args.nets_threads]
        # Warm-up, as bare colorize has one: a short cut of the clip through each thread setting, so the
        # pipeline's nets sessions (VideoOptions.nets_threads) exist and have run once before timing.
        warm = tmp / f"{Path(clip).stem}_warm.mkv"
        cut_clip(videos / clip, warm, 8)
        for t, nt in sorted({(t, nt) for _, t, nt in plan}, key=str):
            colorize_file(warm, tmp / "warm.mp4", colorizer, VideoOptions(stabilize="none", helper_threads=t,
                                                                          nets_threads=nt))
        warm.unlink(missing_ok=True)
        (tmp / "warm.mp4").unlink(missing_ok=True)
        for rnd in range(max(1, args.rounds)):
            if rnd:
                ref = bare_rate(colorizer, frames)
                row["bare_rounds"].append(ref)
                print(f"  round {rnd + 1}: bare colorize {ref:.2f} fps", file=sys.stderr)
            for cfg, threads, nets_threads in plan:
                stab, _, det = cfg.partition("+")
                if det and detector is None:
                    continue
                colorizer.detector = detector if det else None
                opts = VideoOptions(stabilize=stab, detect_every=5, batch_size=args.batch_size, helper_threads=threads,
                                    nets_threads=nets_threads)
                if len(args.helper_threads) > 1:
                    cfg = f"{cfg} t{threads}"
                if len(args.nets_threads) > 1:
                    cfg = f"{cfg} n{opts.nets_thread_count}"
                out = tmp / f"{Path(clip).stem}_{cfg.replace(' ', '_')}.mp4"
                with RssSampler() as rss:
                    r = colorize_file(src, out, colorizer, opts)
                colorizer.detector = None
                if cfg in row["runs"]:  # a later round: its paired ratio (the first round's record is kept)
                    run = row["runs"][cfg]
                    run["fps_rounds"].append(r.fps)
                    run["ratio_rounds"].append(r.fps / ref)
                    print(f"  {cfg:9s} {r.fps:6.2f} fps ({r.fps / ref:.2f}x this round's bare)", file=sys.stderr)
                    out.unlink(missing_ok=True)
                    continue
                run = {"fps": r.fps, "ratio_to_bare": r.fps / ref, "seconds": r.seconds,
                       "fps_rounds": [r.fps], "ratio_rounds": [r.fps / ref],
                       "ratio_to_bare_detector": (r.fps / ref_det) if (det and ref_det) else None,
                       "ratio_to_bare_every_5": (r.fps / ref_every) if (det and ref_every) else None,
                       "busy_s": {k: round(v.get("busy_s", 0.0), 3) for k, v in r.stats.items()},
                       "cpu_s": {k: round(v.get("cpu_s", 0.0), 3) for k, v in r.stats.items()},
                       "flow_s": r.stats["analyse"].get("flow_s"), "detect_s": r.stats["analyse"].get("detect_s"),
                       "stabilize_s": r.stats["compose"].get("stabilize_s"), "detections": r.detections,
                       "scene_cuts": r.scene_cuts, "rss_mib_max": max(v for _, v in rss.samples),
                       "rss_mib_quartiles": [round(rss.samples[min(len(rss.samples) - 1, int(q * len(rss.samples)))][1])
                                             for q in (0.1, 0.25, 0.5, 0.75, 0.999)]}
                if not args.no_quality:
                    q = evaluate_videos(out, src, flow_preset="fast")
                    run.update(cdc_ratio=(q["cdc"] or {}).get("ratio"), warp_ratio=(q["warp_error"] or {}).get("ratio"),
                               psnr=q["psnr"], colorfulness=q["colorfulness_pred"], colorfulness_gt=q["colorfulness_gt"],
                               flow=q["flow"])
                row["runs"][cfg] = run
                vs_det = (f", {run['ratio_to_bare_detector']:.2f}x bare with the detector on every frame, "
                          f"{run['ratio_to_bare_every_5']:.2f}x bare with it on every 5th"
                          if run["ratio_to_bare_detector"] else "")
                print(f"  {cfg:9s} {r.fps:6.2f} fps ({run['ratio_to_bare']:.2f}x bare{vs_det})  busy s {run['busy_s']}  "
                      f"RSS MiB at 10/25/50/75/100 % of the run {run['rss_mib_quartiles']}"
                      + ("" if args.no_quality else f"  CDC ratio {run['cdc_ratio']:.3f}  PSNR {run['psnr']:.2f}  "
                                                    f"CF {run['colorfulness']:.2f}"), file=sys.stderr)
                out.unlink(missing_ok=True)
        del frames
        for run in row["runs"].values():
            run["fps_median"] = float(np.median(run["fps_rounds"]))
            run["ratio_median"] = float(np.median(run["ratio_rounds"]))
        row["bare_median"] = float(np.median(row["bare_rounds"]))
        results.append(row)
        src.unlink(missing_ok=True)

    # markdown
    print("| clip | frames | size | bare colorize fps, median of rounds (detector on every frame; on every 5th) | "
          "config | end-to-end fps, median | × bare, median (range) | × bare, detector on every frame | "
          "× bare, detector on every 5th | decode | analyse | nets | compose | encode | CDC ratio | PSNR | colourfulness |")
    print("|---|---:|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in results:
        for cfg, run in row["runs"].items():
            b, c = run["busy_s"], run["cpu_s"]
            n = row["frames"]

            def ms(k):
                return f"{1000 * c.get(k, 0) / n:.1f} / {1000 * b.get(k, 0) / n:.1f}"

            q = ("| n/a | n/a | n/a |" if args.no_quality else
                 f"| {run['cdc_ratio']:.3f} | {run['psnr']:.2f} | {run['colorfulness']:.2f} |")
            bare = f"{row['bare_median']:.2f}" + (
                f" ({row['bare_colorize_detector_fps']:.2f}; {row['bare_colorize_detect_every_5_fps']:.2f})"
                if row["bare_colorize_detector_fps"] else "")
            rr = run["ratio_rounds"]
            ratio = f"{run['ratio_median']:.2f}" + (f" ({min(rr):.2f}–{max(rr):.2f})" if len(rr) > 1 else "")
            xdet = f"{run['ratio_to_bare_detector']:.2f}" if run.get("ratio_to_bare_detector") else "—"
            xevery = f"{run['ratio_to_bare_every_5']:.2f}" if run.get("ratio_to_bare_every_5") else "—"
            print(f"| {row['clip']} | {n} | {row['size']} | {bare} | {cfg} | {run['fps_median']:.2f} | "
                  f"{ratio} | {xdet} | {xevery} | {ms('read')} | {ms('analyse')} | {ms('nets')} | {ms('compose')} | "
                  f"{ms('write')} {q}")
    print("\nratio columns: each round pairs a fresh bare measurement with the runs right after it; the detector "
          "references are measured once, in the first round\nper-stage columns (first round): CPU / busy ms per frame "
          "of each stage (CPU: its thread's, and its nets workers', without library worker threads such as ONNX "
          "Runtime's intra-op pool; busy: wall time its thread spent working; the stages overlap)")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

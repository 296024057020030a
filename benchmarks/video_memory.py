"""Resident memory of `instcolor video` over a long clip: is it flat?

    python benchmarks/video_memory.py [--clip ../shared/videos/bottle-detection.mp4] [--minutes 10]
                                      [--every 1.0] [--json OUT.json] [-- extra instcolor video options]

Makes a clip of about ``--minutes`` minutes by repeating the packets of ``--clip`` (stream copy, the
timestamps shifted by the clip's duration at each repeat, so nothing is re-encoded; every repeat
starts with a scene cut), runs ``instcolor video LONG.mkv -o OUT.mp4`` in a child process (the
starter weights, default options, any extra options after ``--``) and samples the child's resident
set size (``VmRSS`` of /proc/PID/status) every ``--every`` seconds.

Prints the RSS at 1, 10, 25, 50, 75, 90 and 100 % of the run, the mean of the first and last tenth
(after the first minute, which holds the start-up) and the slope of a least-squares line through the
samples after the first minute, in MiB per minute of video; ``--json`` writes every sample.
Linux only (/proc). The output file and the long clip live in a temporary folder, removed at the end.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SHARED = HERE.parents[1] / "shared"


def repeat_clip(src: Path, dst: Path, minutes: float) -> tuple[int, float]:
    """Write ``src``'s video packets (and its audio) again and again into ``dst`` until it lasts
    ``minutes``; returns (video frames, seconds)."""
    import av

    with av.open(str(src)) as inp:
        vs = inp.streams.video[0]
        packets = [p for p in inp.demux(vs) if p.size]
        tb = vs.time_base
        pts = [p.pts for p in packets if p.pts is not None]
        step = (max(pts) - min(pts)) / max(1, len(pts) - 1)
        span = max(pts) - min(pts) + step          # one repeat, in the stream's time base
        repeats = max(1, int(np.ceil(minutes * 60 / float(span * tb))))
        with av.open(str(dst), "w") as out:
            ovs = out.add_stream_from_template(vs)
            n = 0
            for k in range(repeats):
                shift = int(round(k * span))
                for p in packets:
                    q = av.Packet(bytes(p))
                    q.pts = None if p.pts is None else p.pts + shift
                    q.dts = None if p.dts is None else p.dts + shift
                    q.is_keyframe = p.is_keyframe
                    q.time_base = tb
                    q.stream = ovs
                    out.mux(q)
                    n += 1
    return n, float(repeats * span * tb)


def rss_mib(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clip", default=str(SHARED / "videos" / "bottle-detection.mp4"), help="clip to repeat")
    ap.add_argument("--minutes", type=float, default=10.0, help="length of the long clip")
    ap.add_argument("--every", type=float, default=1.0, help="seconds between RSS samples")
    ap.add_argument("--json", default=None, help="write every sample as JSON")
    ap.add_argument("extra", nargs="*", help="options for instcolor video (after --)")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="video_memory_") as tmp:
        long_clip = Path(tmp) / "long.mkv"
        frames, seconds = repeat_clip(Path(args.clip), long_clip, args.minutes)
        print(f"# {Path(args.clip).name} repeated into {frames} frames, {seconds / 60:.1f} min of video",
              file=sys.stderr)
        cmd = [sys.executable, "-m", "instcolor", "video", str(long_clip), "-o", str(Path(tmp) / "out.mp4"),
               "--no-progress", *args.extra]
        t0 = time.monotonic()
        child = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
        samples = []
        while child.poll() is None:
            r = rss_mib(child.pid)
            if r:  # None / 0: the child has not exec'd yet or has just ended
                samples.append((time.monotonic() - t0, r))
            time.sleep(args.every)
        err = child.stderr.read()
        wall = time.monotonic() - t0
    if child.returncode != 0 or len(samples) < 10:
        print(err, file=sys.stderr)
        print(f"instcolor video failed (exit {child.returncode}) or ran too briefly", file=sys.stderr)
        return 1
    t = np.array([s[0] for s in samples])
    r = np.array([s[1] for s in samples])
    pick = {q: float(r[min(len(r) - 1, int(q / 100 * len(r)))]) for q in (1, 10, 25, 50, 75, 90, 100)}
    late = t > 60.0
    tl, rl = (t[late], r[late]) if late.sum() >= 10 else (t, r)
    part = "after the first minute" if late.sum() >= 10 else "over the whole run (shorter than a minute + 10 samples)"
    tenth = max(1, len(rl) // 10)
    slope = float(np.polyfit(tl, rl, 1)[0]) * 60.0 * (wall / seconds)  # MiB per wall minute -> per video minute
    result = {"clip": Path(args.clip).name, "frames": frames, "video_seconds": seconds, "wall_seconds": wall,
              "fps": frames / wall, "options": args.extra, "rss_mib_at_percent": pick,
              "rss_mib_peak": float(r.max()),
              "rss_mib_mean_first_tenth_after_1_min": float(rl[:tenth].mean()),
              "rss_mib_mean_last_tenth": float(rl[-tenth:].mean()),
              "slope_mib_per_video_minute": slope, "stderr": err.strip().splitlines()[-1:]}
    print(f"{frames} frames ({seconds / 60:.1f} min of video) in {wall / 60:.1f} min ({frames / wall:.1f} fps); "
          f"options {args.extra or 'default'}")
    print("RSS MiB at " + ", ".join(f"{q} %: {v:.0f}" for q, v in pick.items()) + f"; peak {r.max():.0f}")
    print(f"{part}: mean of the first tenth {result['rss_mib_mean_first_tenth_after_1_min']:.0f}, "
          f"of the last tenth {result['rss_mib_mean_last_tenth']:.0f} MiB; slope {slope:+.2f} MiB per minute of video")
    if args.json:
        Path(args.json).write_text(json.dumps({**result, "samples": samples}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

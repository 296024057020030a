"""Latency of the hint editor in the browser: from the click that adds a point to the load event
of the updated preview, measured in headless Chromium (Debian's chromium, driven by Playwright).

    python benchmarks/bench_editor.py                       # starter weights, S = 256, 3 instances, 40 edits
    python benchmarks/bench_editor.py --edits 10 --size 256 --image photo.jpg --detector model.onnx
    python benchmarks/bench_editor.py --edits 5 --screenshots docs   # also writes docs/editor*.png

The server runs in a child process (``instcolor serve``'s app on 127.0.0.1, a free port) with the
given weights and backend. Without --detector the photo is a generated scene and a fixed detector
reports three boxes on it, so every edit runs the fusion net with 3 instances. Each edit clicks a
new point on the picture; the next edit starts once every request of the previous one (the
preview, then the suggestions for the new point) has finished, so each figure is one edit's own
latency on an otherwise idle server. Prints each edit's milliseconds, then p50 / p95 / mean / max.

Needs ``pip install '.[serve,ui-test]'`` and ``apt-get install chromium``; never downloads a browser.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

LAUNCH_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
SCENE_W, SCENE_H = 640, 480
SCENE_BOXES = [[60, 170, 230, 440], [300, 220, 420, 430], [440, 120, 610, 400]]


# ----------------------------------------------------------------------------- the scene
def scene(w: int = SCENE_W, h: int = SCENE_H) -> np.ndarray:
    """A generated outdoor-like picture (sky, hills, sun, three objects where SCENE_BOXES are)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.zeros((h, w, 3), np.float32)
    sky = yy < h * 0.55 + 25 * np.sin(xx / 70.0)
    t = (yy / h)[..., None]
    img[:] = np.where(sky[..., None], (1 - t) * np.array([70, 130, 220]) + t * np.array([200, 220, 240]),
                      (0.4 + 0.6 * t) * np.array([60, 140, 50]))
    sun = (xx - 520) ** 2 + (yy - 70) ** 2 < 40 ** 2
    img[sun] = [255, 220, 120]
    colours = ([200, 60, 50], [240, 200, 40], [90, 60, 160])
    for (x0, y0, x1, y1), c in zip(SCENE_BOXES, colours):
        cx, cy, rx, ry = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2
        body = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 < 1
        img[body] = np.array(c) * (0.75 + 0.25 * np.cos((yy[body] - cy) / ry * 2))[:, None]
    rng = np.random.default_rng(0)
    return np.clip(img + rng.normal(0, 3, img.shape), 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------- the server (child)
def serve(args) -> int:
    import socket

    import uvicorn

    from instcolor import Colorizer
    from instcolor.detect import Detections
    from instcolor.serve import ServeSettings, build_app
    from instcolor.serve.malloc import keep_freed_blocks

    keep_freed_blocks()  # as `instcolor serve` does in its process (instcolor/serve/malloc.py)
    if args.detector:
        detector = args.detector
    else:
        boxes = np.array(SCENE_BOXES, np.float32)

        def detector(img):  # three instances on the generated scene
            return Detections(boxes, np.array([0.9, 0.85, 0.8], np.float32), np.array([0, 2, 16]))
    colorizer = Colorizer.from_pretrained(args.weights, backend=args.backend, detector=detector, decode=args.decode)
    if args.no_presampled:
        colorizer.backend._fuse_cached = lambda *a: None
    app = build_app(ServeSettings(backend=args.backend, warmup=True, timeout_s=120, decode=args.decode),
                    colorizer=colorizer)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on"))
    print(f"PORT {sock.getsockname()[1]}", flush=True)
    server.run(sockets=[sock])
    return 0


def start_server(args, timeout_s: float = 300.0):
    cmd = [sys.executable, __file__, "--serve-only", "--backend", args.backend]
    if args.weights:
        cmd += ["--weights", args.weights]
    if args.detector:
        cmd += ["--detector", args.detector]
    if args.decode:
        cmd += ["--decode", args.decode]
    if args.no_presampled:
        cmd += ["--no-presampled"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    deadline = time.monotonic() + timeout_s
    import selectors

    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"bench_editor: the server exited with status {proc.returncode}")
        if sel.select(timeout=min(1.0, deadline - time.monotonic())):
            line = proc.stdout.readline()
            if line.startswith("PORT "):
                return proc, int(line.split()[1])
    proc.terminate()
    raise SystemExit(f"bench_editor: the server did not start within {timeout_s:g} s")


def wait_ready(url: str, timeout_s: float = 300.0) -> None:
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/v2/health/ready", timeout=5) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    raise SystemExit(f"bench_editor: the server was not ready within {timeout_s:g} s")


# ----------------------------------------------------------------------------- the browser
POLL_MS = 20  # how often the waits look at the page (see run())
INSTRUMENT = """() => {
  const ed = window.instcolorEditor;
  const overlay = document.getElementById('overlay-input');
  const result = document.getElementById('result');
  const b = window.__bench = {t0: 0, seq0: 0, times: [], inflight: 0};
  const fetch0 = window.fetch;
  window.fetch = async (...a) => { b.inflight++; try { return await fetch0(...a); } finally { b.inflight--; } };
  overlay.addEventListener('pointerdown', () => { b.t0 = performance.now(); b.seq0 = ed.preview.seq; }, {capture: true});
  result.addEventListener('load', () => {
    if (b.t0 && ed.preview.seq > b.seq0 && result.src === ed.preview.url) {
      b.times.push(performance.now() - b.t0);
      b.t0 = 0;
    }
  });
}"""


def percentile(xs, q):
    return float(np.percentile(np.asarray(xs, np.float64), q))


def run(args) -> int:
    from playwright.sync_api import sync_playwright

    chromium = args.chromium or shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        raise SystemExit("bench_editor: Debian's chromium not found (apt-get install chromium) or give --chromium")
    tmp = Path(tempfile.mkdtemp(prefix="bench_editor_"))
    if args.image:
        photo = Path(args.image)
    else:
        from instcolor.imageio import encode_image

        photo = tmp / "scene.png"
        photo.write_bytes(encode_image(scene()))
    proc, port = start_server(args)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=LAUNCH_ARGS, timeout=60_000)
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.set_default_timeout(120_000)
            page.goto(f"{url}/?size={args.size}")
            page.set_input_files("#open-file", str(photo))
            page.wait_for_function("window.instcolorEditor.preview.shown >= 1 && "
                                   "window.instcolorEditor.preview.shown === window.instcolorEditor.preview.seq")
            info = page.evaluate("window.instcolorEditor.store.state.session")
            print(f"bench_editor: {info['width']}x{info['height']} photo, S = {info['size']}, "
                  f"{len(info['instances'])} instance(s), preview {info['preview']['width']}x"
                  f"{info['preview']['height']}, weights {args.weights or 'built-in starter'}, backend {args.backend}")
            page.evaluate(INSTRUMENT)
            server = []  # the Server-Timing of every preview response, in order

            def on_response(r):
                if r.url.endswith("/preview") and r.status == 200:
                    server.append(parse_server_timing(r.headers.get("server-timing", "")))

            page.on("response", on_response)
            box = page.locator("#overlay-input").bounding_box()
            rng = np.random.default_rng(1)
            for i in range(args.warmup + args.edits):
                fx, fy = rng.uniform(0.05, 0.95, 2)
                page.mouse.click(box["x"] + fx * box["width"], box["y"] + fy * box["height"])
                # Poll on a timer, not Playwright's default requestAnimationFrame: rAF polling makes the
                # page render frames non-stop while it waits, which took CPU from the server on this
                # 2-core machine. The times are taken inside the page and do not depend on the polling.
                page.wait_for_function("(n) => window.__bench.times.length >= n", arg=i + 1, polling=POLL_MS)
                page.wait_for_function("window.__bench.inflight === 0", polling=POLL_MS)  # the new point's suggestions too
                page.wait_for_timeout(args.gap_ms)
            times = page.evaluate("window.__bench.times")[args.warmup:]
            server = server[args.warmup:]
            if args.screenshots:
                shots = Path(args.screenshots)
                shots.mkdir(parents=True, exist_ok=True)
                n_hints = page.locator("#hint-list button").count()
                for k in range(n_hints):  # give each point a suggested colour, as a user would
                    page.locator("#hint-list button").nth(k).click()
                    page.wait_for_function("window.__bench.inflight === 0")
                    swatches = page.locator("#suggestions .swatch")
                    if swatches.count():
                        swatches.nth(k % swatches.count()).click()
                        page.wait_for_function("window.__bench.inflight === 0")
                page.locator("#hint-list button").nth(0).click()
                page.wait_for_function("window.__bench.inflight === 0")
                page.wait_for_timeout(300)
                page.screenshot(path=str(shots / "editor.png"))
                page.check('input[name="view"][value="slider"]')
                page.fill("#compare-pos", "45")
                page.dispatch_event("#compare-pos", "input")
                page.wait_for_timeout(200)
                page.screenshot(path=str(shots / "editor-slider.png"))
                print(f"bench_editor: screenshots {shots / 'editor.png'}, {shots / 'editor-slider.png'}")
            browser.close()
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
    print("edit ms: " + " ".join(f"{t:.0f}" for t in times))
    summary = {"edits": len(times), "p50_ms": round(percentile(times, 50), 1), "p95_ms": round(percentile(times, 95), 1),
               "mean_ms": round(float(np.mean(times)), 1), "max_ms": round(float(np.max(times)), 1),
               "size": args.size, "cpus": os.cpu_count(), "presampled": not args.no_presampled}
    print(f"hint -> preview: p50 {summary['p50_ms']} ms, p95 {summary['p95_ms']} ms, mean {summary['mean_ms']} ms, "
          f"max {summary['max_ms']} ms over {summary['edits']} edits")
    if server and all(server):
        for key in ("read", "queue", "model", "encode", "total"):
            vals = [t.get(key, 0.0) for t in server]
            summary[f"server_{key}_p50_ms"] = round(percentile(vals, 50), 1)
        print(f"server side (Server-Timing, p50 over {len(server)} previews): " + ", ".join(
            f"{k} {summary[f'server_{k}_p50_ms']} ms" for k in ("read", "queue", "model", "encode", "total"))
            + f"; the rest (browser, HTTP, page) ~{summary['p50_ms'] - summary['server_total_p50_ms']:.0f} ms")
    print(json.dumps(summary))
    return 0


def parse_server_timing(header: str) -> dict:
    """``"model;dur=80.1, encode;dur=2.0"`` -> {"model": 80.1, "encode": 2.0}."""
    out = {}
    for part in header.split(","):
        name, _, rest = part.strip().partition(";")
        for field in rest.split(";"):
            k, _, v = field.strip().partition("=")
            if k == "dur" and name:
                try:
                    out[name] = float(v)
                except ValueError:
                    pass
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--weights", help="weights folder (default: the built-in starter weights)")
    ap.add_argument("--backend", default="torch", help="Colorizer backend (default torch: cached instance features)")
    ap.add_argument("--size", type=int, default=256, help="processing size S (default 256)")
    ap.add_argument("--decode", choices=("regression", "distribution", "mixed"), default=None,
                    help="the server's decoding, as instcolor serve --decode (default: what the weights recommend)")
    ap.add_argument("--edits", type=int, default=40, help="timed edits (default 40)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed edits first (default 3)")
    ap.add_argument("--gap-ms", type=int, default=50, help="idle time between edits (default 50)")
    ap.add_argument("--image", help="photo to open (default: a generated scene with three fixed boxes)")
    ap.add_argument("--detector", help="ONNX detector for --image (default: the three fixed boxes)")
    ap.add_argument("--chromium", help="Chromium executable (default: chromium on PATH)")
    ap.add_argument("--screenshots", metavar="DIR", help="also save editor.png and editor-slider.png there")
    ap.add_argument("--no-presampled", action="store_true",
                    help="the server blends from the crops at every edit (fuse_instances), as before the "
                         "presampled blend: for A/B runs")
    ap.add_argument("--serve-only", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.serve_only:
        return serve(args)
    if args.edits < 1:
        ap.error("--edits must be >= 1")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())

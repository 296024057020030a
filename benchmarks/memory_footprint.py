"""Peak memory of colorizing one photo, by backend, width, processing size S and box count N.

    python benchmarks/memory_footprint.py [--backends torch onnxruntime [torch-cuda] [tensorrt]]
                                          [--widths 0.25 1.0] [--sizes 128 256 512] [--boxes 0 8]
                                          [--photo PHOTO] [--json OUT.json] [--work DIR]

Every configuration runs in a fresh Python process (one at a time) that imports instcolor, loads
the model, colorizes one photo once (a 640x480 JPEG made by this script unless ``--photo`` is
given; N synthetic boxes, no detector) and reports

* host memory: peak resident set size of the whole process (``VmHWM`` from /proc/self/status,
  ``ru_maxrss`` where /proc is absent), and the resident size after ``import instcolor`` and after
  loading the model;
* device memory (CUDA backends only): ``torch.cuda.max_memory_allocated`` (tensors allocated through
  PyTorch's caching allocator) and, when NVML (``nvidia-ml-py``) is importable, the peak of the GPU's
  used memory sampled every 2 ms while the process runs, minus the figure before the process made
  its CUDA context: that includes the CUDA context, cuDNN/cuBLAS workspaces, TensorRT's own
  allocations and anything else on the GPU at the time (so run it on an otherwise idle GPU).

Weights values do not change memory: ``instcolor init-weights --width W`` writes untrained nets of
each width (0.25 = the built-in starter's width, 1.0 = the official architecture) into ``--work``
(default: a temporary folder); the ONNX Runtime and TensorRT rows load an ``instcolor export`` of
them made beforehand in its own process, so the export's cost is not counted.

A first row measures ``import instcolor`` alone: wall time, CPU time (the figure to compare on a
busy machine) and resident size after the import, and which heavy modules the import loaded. Output: a Markdown table on stdout; ``--json`` also writes
every measurement. Backends that cannot run here (no GPU, no TensorRT) are listed with the reason
instead of figures.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HEAVY_MODULES = ("torch", "onnxruntime", "onnx", "tensorrt", "cv2", "av")
BACKENDS = ("torch", "onnxruntime", "torch-cuda", "tensorrt")


# ----------------------------------------------------------------------------- in the worker process
def _status_kib(field: str) -> int | None:
    """A ``Vm*`` field of /proc/self/status in KiB (None where /proc is not available)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def rss_mib() -> float | None:
    kib = _status_kib("VmRSS")
    return None if kib is None else kib / 1024.0


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far (VmHWM; ru_maxrss as the fallback)."""
    kib = _status_kib("VmHWM")
    if kib is None:
        import resource

        r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        kib = r / 1024 if sys.platform == "darwin" else r  # bytes on macOS, KiB on Linux
    return kib / 1024.0


class PeakSampler:
    """Polls ``read()`` (bytes in use) on a thread every ``interval`` s and keeps the maximum."""

    def __init__(self, read, interval: float = 0.002):
        self.read, self.interval = read, interval
        self.peak = self.start = read()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.read())
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.read())

    @property
    def increase(self) -> int:
        return self.peak - self.start


def nvml_used_reader(device_index: int = 0):
    """A function returning the GPU's used memory in bytes (NVML), or (None, why not)."""
    try:
        import pynvml
    except ImportError:
        return None, "NVML not importable (pip install nvidia-ml-py)"
    try:
        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(device_index)
        pynvml.nvmlDeviceGetMemoryInfo(handle)
    except Exception as e:  # pynvml raises NVMLError subclasses
        return None, f"NVML failed: {e}"
    return (lambda: int(pynvml.nvmlDeviceGetMemoryInfo(handle).used)), ""


def make_boxes(n: int, hw=(480, 640)) -> list[list[float]]:
    """``n`` deterministic, overlapping boxes of different sizes inside an ``hw`` image."""
    h, w = hw
    out = []
    for i in range(n):
        x0, y0 = (37 * i) % (w // 2), (29 * i) % (h // 2)
        out.append([float(x0), float(y0), float(min(w, x0 + 80 + 23 * i)), float(min(h, y0 + 60 + 17 * i))])
    return out


def worker_import() -> dict:
    before = rss_mib()
    t0, c0 = time.perf_counter(), time.process_time()
    import instcolor  # noqa: F401

    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"kind": "import", "import_s": dt, "import_cpu_s": cpu, "rss_before_import_mib": before,
            "rss_after_import_mib": rss_mib(),
            "peak_rss_mib": peak_rss_mib(),
            "modules_loaded": [m for m in HEAVY_MODULES if m in sys.modules]}


def worker_colorize(cfg: dict) -> dict:
    backend, size, n_boxes = cfg["backend"], cfg["size"], cfg["boxes"]
    cuda = backend in ("torch-cuda", "tensorrt")
    rec = {"kind": "colorize", **cfg, "rss_before_import_mib": rss_mib()}
    nvml_read = None
    if cuda:
        nvml_read, why = nvml_used_reader(0)
        rec["nvml"] = why or "ok"
    sampler = PeakSampler(nvml_read) if nvml_read is not None else None
    if sampler is not None:
        sampler.__enter__()
    try:
        t0 = time.perf_counter()
        from instcolor import Colorizer

        rec["import_s"] = time.perf_counter() - t0
        rec["rss_after_import_mib"] = rss_mib()
        if backend == "torch":
            c = Colorizer.from_pretrained(cfg["weights"], backend="torch", device="cpu")
        elif backend == "torch-cuda":
            c = Colorizer.from_pretrained(cfg["weights"], backend="torch", device="cuda")
        elif backend == "onnxruntime":
            c = Colorizer.from_pretrained(cfg["export"], backend="onnxruntime", device="cpu")
        elif backend == "tensorrt":
            c = Colorizer.from_pretrained(cfg["export"], backend="tensorrt", device="cuda:0", precision="fp32")
        else:
            raise ValueError(f"unknown backend {backend!r}")
        rec["rss_after_load_mib"] = rss_mib()
        r = c.colorize(cfg["photo"], boxes=make_boxes(n_boxes), size=size)
        if r.rgb.shape[:2] != (480, 640) and cfg.get("check_shape", True):
            raise RuntimeError(f"unexpected output shape {r.rgb.shape}")
        if backend == "torch-cuda":
            import torch

            torch.cuda.synchronize()
            rec["torch_max_allocated_mib"] = torch.cuda.max_memory_allocated() / 2**20
            rec["torch_max_reserved_mib"] = torch.cuda.max_memory_reserved() / 2**20
    finally:
        if sampler is not None:
            sampler.__exit__(None, None, None)
    if sampler is not None:
        rec["nvml_peak_increase_mib"] = sampler.increase / 2**20
    rec["peak_rss_mib"] = peak_rss_mib()
    rec["modules_loaded"] = [m for m in HEAVY_MODULES if m in sys.modules]
    return rec


def worker_main(spec: str) -> None:
    cfg = json.loads(spec)
    rec = worker_import() if cfg["kind"] == "import" else worker_colorize(cfg)
    print("MEMORY_FOOTPRINT " + json.dumps(rec), flush=True)


# ----------------------------------------------------------------------------- in the parent process
def unavailable_reason(backend: str) -> str:
    """'' when ``backend`` can run here, else why not (checked in a subprocess: keeps the parent light)."""
    if backend in ("torch", "onnxruntime"):
        code = "import onnxruntime" if backend == "onnxruntime" else "import torch"
    elif backend == "torch-cuda":
        code = ("import torch, sys\n"
                "sys.exit(0 if torch.cuda.is_available() else 'PyTorch sees no CUDA GPU "
                "(torch ' + torch.__version__ + ')')")
    else:
        code = ("import sys\n"
                "from instcolor.backends.tensorrt_backend import tensorrt_unavailable_reason as r\n"
                "why = r(0)\nsys.exit(why or 0)")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env())
    if p.returncode == 0:
        return ""
    lines = (p.stderr.strip() or p.stdout.strip() or f"exit status {p.returncode}").splitlines()
    return lines[-1]


def _env() -> dict:
    """The workers' environment: the installed instcolor (with its compiled extension); the
    checkout's python/ folder only where instcolor is not installed."""
    import importlib.util

    env = dict(os.environ)
    if importlib.util.find_spec("instcolor") is None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / "python"), env.get("PYTHONPATH")]))
    return env


def run_worker(spec: dict, timeout: float) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=_env())
    except subprocess.TimeoutExpired:
        return {**spec, "error": f"timed out after {timeout:.0f} s"}
    for line in p.stdout.splitlines():
        if line.startswith("MEMORY_FOOTPRINT "):
            return json.loads(line[len("MEMORY_FOOTPRINT "):])
    tail = (p.stderr.strip().splitlines() or [f"exit status {p.returncode}, no output"])[-1]
    return {**spec, "error": tail}


def _run_cli(args: list[str], timeout: float) -> None:
    p = subprocess.run([sys.executable, "-m", "instcolor", *args], capture_output=True, text=True, timeout=timeout,
                       env=_env())
    if p.returncode != 0:
        raise SystemExit(f"instcolor {' '.join(args)} failed: {p.stderr.strip() or p.stdout.strip()}")


def make_photo(path: Path) -> Path:
    """A 640x480 colour JPEG with smooth gradients and a few shapes (content does not change memory)."""
    import numpy as np
    from PIL import Image

    y, x = np.mgrid[0:480, 0:640].astype(np.float32)
    img = np.stack([x / 640 * 255, y / 480 * 255, (x + y) / 1120 * 255], -1)
    img[100:300, 200:420] = (200, 60, 40)
    Image.fromarray(img.astype(np.uint8)).save(path, quality=92)
    return path


def prepare_models(work: Path, widths, need_export: bool, timeout: float) -> dict:
    """Untrained weights (and their fp32 export) per width in ``work``; made once, reused after."""
    out = {}
    for w in widths:
        wd = work / f"weights-w{w:g}"
        if not (wd / "latest_net_GF.pth").is_file():
            _run_cli(["init-weights", str(wd), "--width", str(w), "--seed", "0"], timeout)
        ed = work / f"export-w{w:g}"
        if need_export and not (ed / "manifest.json").is_file():
            _run_cli(["export", "--weights", str(wd), "-o", str(ed)], timeout)
        out[w] = {"weights": str(wd), "export": str(ed)}
    return out


def _fmt(v, digits=0):
    return "—" if v is None else f"{v:.{digits}f}"


def markdown(records: list[dict]) -> str:
    lines = ["| backend | width | S | N | peak RSS MiB | RSS after import MiB | RSS after load MiB | "
             "device: torch max allocated MiB | device: NVML peak MiB | modules loaded |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    skipped_backends = set()
    for r in records:
        if "skipped" in r:  # one line per backend that cannot run here
            if r["backend"] not in skipped_backends:
                skipped_backends.add(r["backend"])
                lines.append(f"| {r['backend']} | all | all | all | not measured: {r['skipped']} | | | | | |")
            continue
        if r.get("kind") == "import":
            if "error" in r:
                lines.append(f"| `import instcolor` | — | — | — | not measured: {r['error']} | | | | | |")
                continue
            cpu = f", {r['import_cpu_s']:.2f} s CPU" if "import_cpu_s" in r else ""
            lines.append(f"| `import instcolor` ({r['import_s']:.2f} s{cpu}) | — | — | — | {_fmt(r['peak_rss_mib'])} | "
                         f"{_fmt(r['rss_after_import_mib'])} | — | — | — | {', '.join(r['modules_loaded']) or 'none'} |")
            continue
        head = f"| {r['backend']} | {r['width']:g} | {r['size']} | {r['boxes']} |"
        if "error" in r:
            lines.append(f"{head} failed: {r['error']} | | | | | |")
            continue
        nv = r.get("nvml_peak_increase_mib")
        nv_txt = _fmt(nv) if nv is not None else ("—" if "nvml" not in r else f"n/a ({r['nvml']})")
        lines.append(f"{head} {_fmt(r['peak_rss_mib'])} | {_fmt(r['rss_after_import_mib'])} | "
                     f"{_fmt(r['rss_after_load_mib'])} | {_fmt(r.get('torch_max_allocated_mib'))} | {nv_txt} | "
                     f"{', '.join(r['modules_loaded'])} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=BACKENDS,
                    help="default: all four; those that cannot run here are listed with the reason")
    ap.add_argument("--widths", type=float, nargs="+", default=[0.25, 1.0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[128, 256, 512])
    ap.add_argument("--boxes", type=int, nargs="+", default=[0, 8])
    ap.add_argument("--photo", type=Path, help="photo to colorize (default: a generated 640x480 JPEG)")
    ap.add_argument("--work", type=Path, help="folder for the untrained weights and exports (default: a temp folder)")
    ap.add_argument("--timeout", type=float, default=900, help="seconds allowed per configuration (default 900)")
    ap.add_argument("--json", type=Path, help="also write every measurement here")
    args = ap.parse_args(argv)
    if args.worker:
        worker_main(args.worker)
        return 0
    for n in args.boxes:
        if not 0 <= n <= 8:
            ap.error(f"--boxes: {n} is not in 0..8")
    for w in args.widths:
        if not 0 < w <= 4:
            ap.error(f"--widths: {w:g} is not in (0, 4]")
    work = args.work or Path(tempfile.mkdtemp(prefix="instcolor-memory-"))
    work.mkdir(parents=True, exist_ok=True)
    photo = args.photo if args.photo is not None else make_photo(work / "photo_640x480.jpg")
    if not photo.is_file():
        ap.error(f"--photo: {photo} is not a file")

    reasons = {b: unavailable_reason(b) for b in args.backends}
    for b, why in reasons.items():
        if why:
            print(f"{b}: not measured ({why})", flush=True)
    runnable = [b for b in args.backends if not reasons[b]]
    models = prepare_models(work, args.widths, any(b in ("onnxruntime", "tensorrt") for b in runnable), args.timeout)

    print(f"# memory_footprint: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"photo {photo.name}", flush=True)
    records = [run_worker({"kind": "import"}, args.timeout)]
    print(f"import instcolor: {json.dumps(records[0])}", flush=True)
    for backend in args.backends:
        for w in args.widths:
            for s in args.sizes:
                for n in args.boxes:
                    spec = {"kind": "colorize", "backend": backend, "width": w, "size": s, "boxes": n,
                            "photo": str(photo), **models[w]}
                    if reasons[backend]:
                        rec = {**spec, "skipped": reasons[backend]}
                    else:
                        rec = run_worker(spec, args.timeout)
                    records.append(rec)
                    shown = rec.get("skipped") or rec.get("error") or f"peak RSS {rec['peak_rss_mib']:.0f} MiB"
                    print(f"{backend} width {w:g} S={s} N={n}: {shown}", flush=True)
    print()
    print(markdown(records))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        meta = {"machine": platform.machine(), "processor": platform.processor(), "cpu_count": os.cpu_count(),
                "python": platform.python_version(), "photo": str(photo), "unavailable": reasons}
        args.json.write_text(json.dumps({"meta": meta, "records": records}, indent=1))
    failed = [r for r in records if "error" in r]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

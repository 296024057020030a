"""The torch backend's nets on a GPU, eager against replayed CUDA graphs (torch.cuda.CUDAGraph).

    python benchmarks/gpu_cuda_graphs.py [--device cuda] [--width 1.0] [--size 256] [--boxes 0 8]
                                         [--warmup 3] [--repeats 20] [--json OUT.json]

``bench_pipeline.py``'s torch-cuda rows run ``TorchBackend`` eagerly (it has no CUDA-graph mode; only
the TensorRT backend has ``cuda_graphs=True``). This script measures what capturing the nets would
give: for one prepared 640x480 image with N synthetic boxes it times, per image,

* ``eager``: the nets as ``TorchBackend.run`` calls them (full-image net for N = 0; instance net then
  fusion net with its 13 blends for N > 0), inputs already on the device, outputs left there;
* ``graph (reference blend)``: the same calls captured once into a CUDA graph and replayed, with the
  pure-PyTorch blend (its box geometry is read on the host while capturing, so the graph is only
  valid for this image's boxes -- enough to measure launch overhead);
* ``graph (native blend)``: the same with the native CUDA blend kernel; the capture fails when the
  kernel's host-side box tables are copied with a synchronizing copy, which is then the recorded
  reason.

Each graph's output is compared with the eager output (max |Δ|; the blends differ in summation order
only). Timing: ``--warmup`` untimed calls, then ``--repeats`` calls each followed by a device
synchronize, median. On a CPU device only the eager column runs (the graphs are skipped with the
reason), which is what ``gpu_check.sh --dry-run`` uses. Weights are random (same cost as trained).
Output: a Markdown table, and with ``--json`` every figure plus ``status`` (pass: every capture that
ran matched eager within 1e-3; fail: a mismatch or an error; skip: no capture could be attempted).
"""
from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
if importlib.util.find_spec("instcolor") is None:  # prefer the installed package (it has the compiled extension)
    sys.path.insert(0, str(REPO / "python"))

from instcolor import prepare as P  # noqa: E402
from instcolor.backends import TorchBackend  # noqa: E402
from instcolor.fuse import fuse_instances_reference  # noqa: E402
from instcolor.models import FusionNet, InstanceNet, SIGGRAPHBackbone  # noqa: E402
from instcolor.pipeline import Batch, native_ops, prepare_image  # noqa: E402

MATCH_ATOL = 1e-3


def make_nets(width: float, seed: int = 0) -> dict:
    torch.manual_seed(seed)
    nets = {"full": SIGGRAPHBackbone(width), "instance": InstanceNet(width), "fusion": FusionNet(width)}
    for net in nets.values():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_var.uniform_(0.5, 2.0)
                m.running_mean.uniform_(-0.1, 0.1)
        net.eval()
    return nets


def make_batch(n_boxes: int, size: int, ops) -> Batch:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
    boxes = [[40.0 * i, 30.0 * i, 40.0 * i + 120 + 9 * i, 30.0 * i + 90 + 7 * i] for i in range(n_boxes)]
    sel = P.select_boxes(np.array(boxes, np.float32).reshape(-1, 4), None, img.shape[:2])
    return Batch.stack([prepare_image(img, sel, (), size, ops=ops)])


def nets_call(be: TorchBackend, batch: Batch):
    """The device-side work of ``TorchBackend.run`` with the inputs staged on the device once:
    returns a function running the nets (output stays on the device)."""
    A, B, M = (be._t4(x) for x in (batch.full_L, batch.hint_ab, batch.hint_mask))
    if len(batch.crop_L) == 0:
        return lambda: be.full(A, B, M)
    crop = be._t4(batch.crop_L)
    S, m = crop.shape[-1], crop.shape[0]
    zeros, half = be._filled((m, 2, S, S), 0.0), be._filled((m, 1, S, S), -0.5)
    Af, Bf, Mf = (be._t(x) for x in (batch.full_L, batch.hint_ab, batch.hint_mask))
    levels = [torch.as_tensor(b) for b in batch.box_info]
    inst_image = torch.zeros(m, dtype=torch.int64)

    def run():
        _, feats = be.instance(crop, zeros, half)
        return be.fusion(Af, Bf, Mf, feats, levels, inst_image)

    return run


def timed(fn, device, warmup: int, repeats: int) -> float:
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def capture(fn, warmup: int):
    """(graph, static output) of ``fn`` captured on a side stream, as torch's docs prescribe."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(max(warmup, 3)):
            fn()
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        out = fn()
    return g, out


@torch.inference_mode()
def run_case(nets, device, size, n, warmup, repeats, ops) -> list[dict]:
    be = TorchBackend(copy.deepcopy(nets), device=device)
    batch = make_batch(n, size, ops)
    rows = []
    fuses = [("reference blend", fuse_instances_reference)]
    if ops is not None:
        fuses.insert(0, ("native blend", ops.fuse_instances))
    be.set_fuse(fuses[0][1])
    eager_fn = nets_call(be, batch)
    eager_out = eager_fn().float()
    rows.append({"boxes": n, "mode": "eager", "blend": fuses[0][0], "ms": 1e3 * timed(eager_fn, device, warmup, repeats),
                 "status": "pass"})
    # the reference capture first: a failed native capture must not disturb it
    for label, fuse in reversed(fuses) if n else [("no blend (N = 0)", None)]:
        row = {"boxes": n, "mode": "graph", "blend": label}
        if device.type != "cuda":
            rows.append({**row, "status": "skip", "reason": "CUDA graphs need a CUDA device"})
            continue
        if fuse is not None:
            be.set_fuse(fuse)
        try:
            g, out = capture(nets_call(be, batch), warmup)
        except Exception as e:  # capture refused: recorded, the other rows still run
            torch.cuda.synchronize()
            rows.append({**row, "status": "skip", "reason": f"capture failed: {type(e).__name__}: {str(e)[:300]}"})
            continue
        g.replay()
        torch.cuda.synchronize()
        diff = float((out.float() - eager_out).abs().max())
        ms = 1e3 * timed(g.replay, device, warmup, repeats)
        ok = diff <= MATCH_ATOL
        rows.append({**row, "ms": ms, "max_abs_vs_eager": diff, "status": "pass" if ok else "fail",
                     **({} if ok else {"reason": f"graph output differs from eager by {diff:.3g} > {MATCH_ATOL:g}"})})
        del g, out
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--width", type=float, default=1.0)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--boxes", type=int, nargs="+", default=[0, 8])
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    res = {"device": str(device), "width": args.width, "size": args.size, "torch": torch.__version__, "rows": []}
    if device.type == "cuda" and not torch.cuda.is_available():
        res.update(status="skip", reason=f"PyTorch sees no CUDA GPU (torch {torch.__version__})")
    else:
        if device.type == "cuda":
            res["gpu"] = torch.cuda.get_device_name(device)
        ops = native_ops()
        if ops is not None and device.type == "cuda" and not (ops.cuda_compiled() and ops.cuda_available()):
            print(f"native blend not used: {ops.cuda_unavailable_reason()}")
            ops = None
        nets = make_nets(args.width)
        for n in args.boxes:
            try:
                res["rows"] += run_case(nets, device, args.size, n, args.warmup, args.repeats, ops)
            except Exception as e:
                res["rows"].append({"boxes": n, "mode": "eager", "status": "fail", "reason": f"{type(e).__name__}: {e}"})
        st = [r["status"] for r in res["rows"]]
        graphs = [r for r in res["rows"] if r["mode"] == "graph"]
        if "fail" in st:
            res.update(status="fail", reason="; ".join(r["reason"] for r in res["rows"] if r["status"] == "fail"))
        elif not any(r["status"] == "pass" for r in graphs):
            res.update(status="skip", reason=graphs[0]["reason"] if graphs else "no graph row")
        else:
            res["status"] = "pass"
    print(f"| N | mode | blend | ms per image | max abs Δ vs eager | status |\n|---|---|---|---|---|---|")
    for r in res["rows"]:
        ms = f"{r['ms']:.2f}" if "ms" in r else "—"
        d = f"{r['max_abs_vs_eager']:.1e}" if "max_abs_vs_eager" in r else "—"
        print(f"| {r['boxes']} | {r['mode']} | {r.get('blend', '')} | {ms} | {d} | {r['status']} "
              f"{r.get('reason', '')} |")
    print(f"cuda graphs on {device}: {res['status']}" + (f" -- {res['reason']}" if res.get("reason") else ""))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=1))
    return {"pass": 0, "fail": 1, "skip": 3}[res["status"]]


if __name__ == "__main__":
    sys.exit(main())

"""Pipeline throughput and per-stage latency, side by side with an official-style eager run.

    python benchmarks/bench_pipeline.py [--size 256] [--boxes 0 1 4 8] [--widths 1.0 0.5 0.25]
                                        [--backends official torch onnxruntime [torch-cuda] [tensorrt]]
                                        [--warmup 2] [--repeats 3] [--detector MODEL.onnx | --no-detector]

"official" reproduces how the authors' test code executes (one image at a time; GComp when no
boxes, otherwise G on the crops then GF; every blend block loops over instances in Python,
runs the instance logit convs one crop at a time, resizes and pads each instance's feature
and logit to the full map, concatenates, softmaxes, multiplies and sums; the unused
classification head runs as in the official forward; preparation and composition with the
numpy/PyTorch reference). Our backends run as ``Colorizer`` runs them: native kernels for
preparation, the blend and composition when the extension is built. "torch-cuda" (eager torch
on the GPU, the measurable stand-in for TensorRT) and "tensorrt" are added when asked for and
skipped, with the reason printed, where no GPU / TensorRT is available; their per-stage
columns stay empty (GPU work is asynchronous). Weights are random (same topology and
cost as trained ones). Every timed run also runs the detector on the image (default: the
YOLOX-Nano of ../shared/models when present; the same detector and time for every backend);
its boxes are not used -- N is set by the synthetic boxes. Each backend first runs ``--warmup`` times on the same input (ONNX
Runtime plans its memory on the first call of a shape and reuses it from the third call on;
the first-call latency is printed separately), then ``--repeats`` timed runs; the table shows
the median. Output: a Markdown table, plus max |Δab| of each backend against "official" on
the same inputs.
"""
from __future__ import annotations

import argparse
import copy
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python"))

from instcolor import Colorizer  # noqa: E402
from instcolor import prepare as P  # noqa: E402
from instcolor.backends import TorchBackend  # noqa: E402
from instcolor.models import FusionNet, InstanceNet, SIGGRAPHBackbone  # noqa: E402
from instcolor.models.backbone import FEATURE_LEVELS  # noqa: E402
from instcolor.pipeline import Batch, compose_result, native_ops, prepare_image  # noqa: E402


# ----------------------------------------------------------------------------- official-style
def official_blend(block, inst_feat, bg_feat, box_info):
    """The official WeightGenerator.forward, per instance in Python, padded to full size."""
    mask_list, feats = [], []
    union = torch.zeros_like(bg_feat)[:1, :1]
    for i in range(inst_feat.shape[0]):
        crop = inst_feat[i:i + 1]
        logit = block.simple_instance_conv(crop)
        l, r, t, b, w, h = (int(v) for v in box_info[i])
        mask_list.append(F.pad(F.interpolate(logit, size=(h, w), mode="bilinear"), (l, r, t, b)))
        feats.append(F.pad(F.interpolate(crop, size=(h, w), mode="bilinear"), (l, r, t, b)))
        m = torch.zeros_like(bg_feat)[:1, :1]
        m[0, 0, t:t + h, l:l + w] = 1.0
        union = torch.clamp(union + m, 0.0, 1.0)
    mask_list.append(block.simple_bg_conv(bg_feat) + (1 - union) * 100000.0)
    weights = torch.softmax(torch.cat(mask_list, 1), 1)
    feats.append(bg_feat)
    return torch.sum(torch.cat(feats, 0) * weights.permute(1, 0, 2, 3).contiguous(), 0, keepdim=True)


class OfficialStyle:
    name = "official"

    def __init__(self, nets):
        self.full, self.instance, self.fusion = nets["full"], nets["instance"], nets["fusion"]

    @torch.inference_mode()
    def run_one(self, p):
        S = p.size
        A, Bh, mask = (torch.from_numpy(x)[None] for x in (p.full_L, p.hint_ab, p.hint_mask))
        if len(p.boxes) == 0:
            self.full.model_class(torch.zeros(1, self.full.model_class[0].in_channels, S // 4, S // 4))  # out_class
            return self.full(A, Bh, mask)[0].numpy()
        M = len(p.boxes)
        _, feats = self.instance(torch.from_numpy(p.crop_L), torch.zeros(M, 2, S, S), torch.full((M, 1, S, S), -0.5))
        infos = [torch.from_numpy(b) for b in p.box_info]
        out = self.fusion.run(A, Bh, mask, lambda n, bg: official_blend(self.fusion.block(n), feats[n], bg, infos[FEATURE_LEVELS[n]]))
        return out[0].numpy()


# ----------------------------------------------------------------------------- instrumentation
class StageTimer:
    def __init__(self):
        self.t = {}

    def add(self, key, dt):
        self.t[key] = self.t.get(key, 0.0) + dt

    def wrap(self, key, fn):
        def timed(*a, **k):
            t0 = time.perf_counter()
            r = fn(*a, **k)
            self.add(key, time.perf_counter() - t0)
            return r
        return timed


def instrument(backend, timer):
    """Per-stage timing hooks for our backends (bench only)."""
    if backend.name == "torch":
        backend.instance.forward = timer.wrap("instance net", backend.instance.forward)
        backend.full.forward = timer.wrap("full-image net", backend.full.forward)
        fuse = backend.fusion.fuse_fn
        backend.set_fuse(timer.wrap("fuse", fuse))
        backend.fusion.stage = timer.wrap("fusion segments", backend.fusion.stage)  # blends are timed as "fuse"
    elif backend.name == "onnxruntime":
        run = backend._run

        def seg_run(segment, feeds):
            key = {"full": "full-image net", "instance": "instance net"}.get(segment, "fusion segments")
            return timer.wrap(key, run)(segment, feeds)

        backend._run = seg_run
        backend.set_fuse(timer.wrap("fuse", backend.fuse))


def flops_per_image(nets, size, n_boxes):
    """Multiply-adds x 2 of all convs for one image with ``n_boxes`` boxes."""
    total = [0]

    def hook(mod, inp, out):
        k = mod.kernel_size[0] * mod.kernel_size[1]
        cin = mod.in_channels // mod.groups
        if isinstance(mod, torch.nn.ConvTranspose2d):
            total[0] += 2 * inp[0].numel() * mod.out_channels * k  # every input element feeds Cout x k outputs
        else:
            total[0] += 2 * out.numel() * cin * k

    handles = [m.register_forward_hook(hook) for net in nets.values() for m in net.modules()
               if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))]
    try:
        img = np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)
        boxes = [[0, 0, size // 2, size // 2]] * n_boxes
        Colorizer(TorchBackend(nets)).colorize(img, boxes=boxes, size=size)
    finally:
        for h in handles:
            h.remove()
    return total[0]


DEFAULT_DETECTOR = Path(__file__).resolve().parents[2] / "shared" / "models" / "yolox_nano_coco_416.onnx"


def make_nets(width, seed=0):
    torch.manual_seed(seed)
    nets = {"full": SIGGRAPHBackbone(width), "instance": InstanceNet(width), "fusion": FusionNet(width)}
    for net in nets.values():  # realistic BN statistics, not identity
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_var.uniform_(0.5, 2.0)
                m.running_mean.uniform_(-0.1, 0.1)
        net.eval()
    return nets


def make_image(n_boxes, seed=0, hw=(480, 640)):
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, hw + (3,), dtype=np.uint8)
    h, w = hw
    boxes = []
    for _ in range(n_boxes):
        x0, y0 = rng.integers(0, w // 2), rng.integers(0, h // 2)
        boxes.append([x0, y0, x0 + rng.integers(40, w // 2), y0 + rng.integers(40, h // 2)])
    return img, np.array(boxes, np.float32).reshape(-1, 4)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--boxes", type=int, nargs="+", default=[0, 1, 4, 8])
    ap.add_argument("--widths", type=float, nargs="+", default=[1.0])
    ap.add_argument("--backends", nargs="+", default=["official", "torch", "onnxruntime"])
    ap.add_argument("--warmup", type=int, default=2, help="untimed runs before the timed ones (default 2)")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs; the median is reported (default 3)")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--detector", type=Path, default=DEFAULT_DETECTOR if DEFAULT_DETECTOR.is_file() else None,
                    help="ONNX detector timed on each image (default: ../shared/models/yolox_nano_coco_416.onnx "
                         "when present)")
    ap.add_argument("--no-detector", action="store_true", help="do not time a detector")
    args = ap.parse_args(argv)
    detector = None
    if args.detector is not None and not args.no_detector:
        from instcolor.detect import OnnxDetector

        detector = OnnxDetector(args.detector, intra_op_threads=args.threads)
    torch.set_num_threads(args.threads)
    print(f"# bench_pipeline: S={args.size}, {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"torch {torch.__version__}, threads {args.threads}, warm-up {args.warmup}, repeats {args.repeats} (median), "
          f"detector {detector.path.name if detector else 'none'}\n")
    rows = []
    for width in args.widths:
        nets = make_nets(width)
        backends = {}
        if "official" in args.backends:
            backends["official"] = OfficialStyle(nets)
        if "torch" in args.backends:
            backends["torch"] = TorchBackend(copy.deepcopy(nets))  # converts its nets to channels-last
        if "torch-cuda" in args.backends:
            if torch.cuda.is_available():
                backends["torch-cuda"] = TorchBackend(copy.deepcopy(nets), device="cuda")
            else:
                print("torch-cuda: skipped (PyTorch sees no CUDA GPU)")
        if "tensorrt" in args.backends:
            from instcolor.backends.tensorrt_backend import tensorrt_unavailable_reason

            reason = tensorrt_unavailable_reason(0)
            if reason:
                print(f"tensorrt: skipped ({reason})")
            else:
                from instcolor.backends.tensorrt_backend import TensorRTBackend
                from instcolor.export import export_segments

                d = Path(tempfile.mkdtemp(prefix="instcolor-bench-")) / "fp32"
                export_segments(nets, d)
                backends["tensorrt"] = TensorRTBackend(d, precision="fp32", device="cuda:0")
        if "onnxruntime" in args.backends:
            from instcolor.backends.onnxruntime_backend import OnnxRuntimeBackend
            from instcolor.export import export_segments

            d = Path(tempfile.mkdtemp(prefix="instcolor-bench-")) / "fp32"
            export_segments(nets, d)
            backends["onnxruntime"] = OnnxRuntimeBackend(d, threads=args.threads)
        for n in args.boxes:
            img, boxes = make_image(n)
            gflops = flops_per_image(copy.deepcopy(nets), args.size, n) / 1e9
            ref_ab = None
            for name, be in backends.items():
                timer = StageTimer()
                ops = None if name == "official" else native_ops()
                if ops is not None and hasattr(be, "set_fuse"):
                    be.set_fuse(ops.fuse_instances)  # as Colorizer does
                if name in ("torch", "onnxruntime"):
                    instrument(be, timer)
                times, ab, first = [], None, None
                for r in range(args.warmup + args.repeats):
                    timer.t.clear()
                    t0 = time.perf_counter()
                    if detector is not None:
                        detector(img)  # timed, boxes unused (N comes from the synthetic boxes)
                    t_det = time.perf_counter() - t0
                    tp = time.perf_counter()
                    sel = P.select_boxes(boxes, None, img.shape[:2])
                    p = prepare_image(img, sel, (), args.size, ops=ops)
                    t_prep = time.perf_counter() - tp
                    ab = be.run_one(p) if name == "official" else be.run(Batch.stack([p]))[0]
                    tc = time.perf_counter()
                    compose_result(p, ab, ops=ops)
                    t_comp = time.perf_counter() - tc
                    total = time.perf_counter() - t0
                    if r == 0:
                        first = total
                    if r >= args.warmup:
                        times.append((total, t_det, t_prep, t_comp, dict(timer.t)))
                times.sort(key=lambda x: x[0])
                total, t_det, t_prep, t_comp, stages = times[(len(times) - 1) // 2]  # median (lower one if even)
                if name == "official":
                    ref_ab = ab
                diff = float(np.abs(ab - ref_ab).max()) if ref_ab is not None else float("nan")
                rows.append((width, n, name, 1.0 / total, total * 1e3, t_det * 1e3, t_prep * 1e3, t_comp * 1e3, stages,
                             gflops, diff))
                print(f"width {width:g} N={n} {name:12s} {1 / total:7.3f} img/s  {total * 1e3:9.1f} ms  "
                      f"(first call {first * 1e3:.0f} ms)  max|dab| vs official "
                      f"{'(official not run)' if ref_ab is None else f'{diff:.2e}'}", flush=True)
    print("\n| width | N | backend | images/s | total ms | detector ms | prepare ms | instance net ms | fusion/full net ms | fuse ms | compose ms | GFLOP/img | max abs Δab vs official |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for width, n, name, ips, tot, det, prep, comp, st, gf, diff in rows:
        inst = st.get("instance net")
        fus = st.get("fusion segments", 0.0) + st.get("full-image net", 0.0)
        fz = st.get("fuse")
        fmt = lambda v: "—" if v is None else f"{v * 1e3:.1f}"
        print(f"| {width:g} | {n} | {name} | {ips:.3f} | {tot:.0f} | {det:.1f} | {prep:.1f} | {fmt(inst)} | "
              f"{fmt(fus) if name != 'official' else '—'} | {fmt(fz)} | {comp:.1f} | {gf:.1f} | {'—' if diff != diff else f'{diff:.1e}'} |")
    base = {(w, n): ips for w, n, name, ips, *_ in rows if name == "official"}
    for w, n, name, ips, *_ in rows:
        if name != "official" and (w, n) in base:
            print(f"speed-up {name} vs official, width {w:g}, N={n}: {ips / base[(w, n)]:.2f}x")


if __name__ == "__main__":
    main()

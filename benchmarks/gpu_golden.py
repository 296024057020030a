"""The golden cases (the authors' code, deterministic weights) through the torch backend on a device.

    python benchmarks/gpu_golden.py [--device cuda] [--precision fp32|tf32|fp16] [--golden DIR]
                                    [--max-size S] [--json OUT.json]

Same inputs and weights as ``tests/test_golden.py`` (the golden README's weights rule with the seeds
each case file records), run through :class:`instcolor.Colorizer` with the torch backend on
``--device``, twice per case: with the native kernels (preparation, the 13 blends and composition;
on a GPU the blends run the CUDA kernel) and with the pure PyTorch/numpy reference. The predicted
ab is compared with the golden ``fusion_out_reg`` / ``gcomp_out_reg``; the boxes must be identical.

Precisions and their tolerances (max |Δab| over the S×S×2 output, ab in the nets' normalised units):

* ``fp32``: float32 with TF32 off (``torch.backends.cudnn.allow_tf32 = False``, the same for
  matmul): 1e-4, as ``tests/test_golden.py``; ``rgb_processed`` within one level too.
* ``tf32``: float32 nets with PyTorch's default on CUDA (TF32 for cuDNN convolutions) -- what
  ``Colorizer(..., device="cuda")`` runs by default: 5e-2 max, 5e-3 mean. CUDA only.
* ``fp16``: nets and activations in float16 (``net.half()``; the blends in float16 with the
  native CUDA kernel, in float32 with the reference, which needs it: the reference adds 1e5 to the
  background logit outside the boxes, above float16's range): 5e-2 max, 5e-3 mean. The float16
  tolerance is not a GPU measurement: on the CPU (``--device cpu --precision fp16``, reference
  blend) the 10 cases gave a max |Δab| of at most 3.1e-3 and a mean of at most 3.3e-4
  (2026-11-30); the bounds are about 15x that, since GPU convolution algorithms accumulate in other
  orders. The TF32 bounds are the same (TF32 keeps 10 mantissa bits, as float16 does).

Output: one line per case and path, a summary, and with ``--json`` a file holding every figure and
``status``: ``pass``, ``fail`` or ``skip`` (with ``reason``: no GPU, no golden folder, ...).
Exit status 0 pass, 1 fail, 3 skip.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
if importlib.util.find_spec("instcolor") is None:  # prefer the installed package (it has the compiled extension)
    sys.path.insert(0, str(REPO / "python"))
sys.path.insert(0, str(REPO / "tests"))  # weights_rule: the golden README's weights rule

from instcolor import Colorizer, HintPlanes  # noqa: E402
from instcolor.backends import TorchBackend  # noqa: E402
from instcolor.fuse import fuse_instances_reference  # noqa: E402
from instcolor.pipeline import native_ops  # noqa: E402
from instcolor.models import FusionNet, InstanceNet, SIGGRAPHBackbone, load_state_dict_strict  # noqa: E402
from weights_rule import rule_state_dict  # noqa: E402

DEFAULT_GOLDEN = REPO.parent / "shared" / "golden"
# precision -> (max |dab|, mean |dab| or None)
TOLERANCE = {"fp32": (1e-4, None), "tf32": (5e-2, 5e-3), "fp16": (5e-2, 5e-3)}
EXIT = {"pass": 0, "fail": 1, "skip": 3}


class HalfTorchBackend(TorchBackend):
    """TorchBackend with the nets and every floating-point input in ``dtype`` (float16)."""

    def __init__(self, nets: dict, device, dtype=torch.float16):
        super().__init__(nets, device=device, channels_last=False)
        self.dtype = dtype
        for net in (self.full, self.instance, self.fusion):
            net.to(dtype)

    def _t(self, a) -> torch.Tensor:
        t = super()._t(a)
        return t.to(self.dtype) if t.is_floating_point() else t

    def _filled(self, shape, value) -> torch.Tensor:
        return torch.full(shape, value, device=self.device, dtype=self.dtype)


def reference_fuse_fp32(bg, bg_logit, inst_feat, inst_logit, box_info, inst_image):
    """The reference blend computed in float32 (result in the input's dtype)."""
    f = fuse_instances_reference(bg.float(), bg_logit.float(), inst_feat.float(), inst_logit.float(), box_info,
                                 inst_image)
    return f.to(bg.dtype)


def rule_nets(seeds: dict) -> dict:
    nets = {"full": SIGGRAPHBackbone(), "instance": InstanceNet(), "fusion": FusionNet()}
    for kind, net in nets.items():
        shapes = {k: tuple(v.shape) for k, v in net.state_dict().items()}
        state = {k: torch.from_numpy(v) for k, v in rule_state_dict(shapes, seeds[kind]).items()}
        load_state_dict_strict(net, state, f"golden weights rule ({kind})")
        net.eval()
    return nets


def case_seeds(z: dict) -> dict:
    return {"full": int(z["seed_gcomp"]), "instance": int(z["seed_g"]), "fusion": int(z["seed_gf"])}


def make_colorizer(nets: dict, device: str, precision: str, native: bool) -> Colorizer:
    import copy

    nets = copy.deepcopy(nets)
    if precision == "fp16":
        backend = HalfTorchBackend(nets, device)
        c = Colorizer(backend, native=native)
        if not native:
            backend.set_fuse(reference_fuse_fp32)
        return c
    return Colorizer(TorchBackend(nets, device=device), native=native)


def set_tf32(enabled: bool) -> None:
    torch.backends.cudnn.allow_tf32 = enabled
    torch.backends.cuda.matmul.allow_tf32 = enabled


def skip_reason(device: str, precision: str, golden: Path) -> str:
    if not golden.is_dir() or not sorted(golden.glob("v*.npz")):
        return f"golden vectors not found at {golden} (pass --golden DIR)"
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        return f"PyTorch sees no CUDA GPU (torch {torch.__version__})"
    if precision == "tf32" and dev.type != "cuda":
        return "tf32 exists on CUDA only"
    return ""


def path_skip_reason(device: str, precision: str, native: bool) -> str:
    """Why one path (native / reference) cannot run on ``device`` at ``precision``, or ''."""
    if not native:
        return ""
    ops = native_ops()
    if ops is None:
        return "instcolor._native is not built or does not load"
    if torch.device(device).type == "cuda":
        if not ops.cuda_compiled() or not ops.cuda_available():
            return "native CUDA kernels unusable: " + ops.cuda_unavailable_reason()
    elif precision == "fp16":
        return "the native float16 blend exists on CUDA only"
    return ""


def run(device: str, precision: str, golden: Path, max_size: int | None, limit: int | None = None,
        cases: list[str] | None = None) -> dict:
    tol_max, tol_mean = TOLERANCE[precision]
    res = {"device": device, "precision": precision, "tolerance_max_abs": tol_max, "tolerance_mean_abs": tol_mean,
           "golden": str(golden), "torch": torch.__version__, "cases": []}
    why = skip_reason(device, precision, golden)
    if why:
        return {**res, "status": "skip", "reason": why}
    if torch.device(device).type == "cuda":
        set_tf32(precision == "tf32")
        res["gpu"] = torch.cuda.get_device_name(torch.device(device))
    paths = sorted(golden.glob("v*.npz"))
    if cases:
        paths = [p for p in paths if p.stem.startswith(tuple(cases))]
    if max_size is not None:
        paths = [p for p in paths if int(np.load(p)["fine_size"]) <= max_size]
    paths = paths[:limit] if limit is not None else paths
    nets, seeds, colorizers = None, None, {}
    for path in paths:
        z = dict(np.load(path))
        size = int(z["fine_size"])
        if case_seeds(z) != seeds:
            seeds, nets = case_seeds(z), rule_nets(case_seeds(z))
            colorizers = {}
        want = (z["fusion_out_reg"] if "fusion_out_reg" in z else z["gcomp_out_reg"])[0]
        hints = HintPlanes(ab=z["hint_B"][0], mask=z["mask_B"][0] + 0.5)
        for native in (True, False):
            entry = {"case": path.stem, "size": size, "path": "native" if native else "reference"}
            skip = path_skip_reason(device, precision, native)
            if skip:
                res["cases"].append({**entry, "status": "skip", "reason": skip})
                continue
            try:
                if native not in colorizers:
                    colorizers[native] = make_colorizer(nets, device, precision, native)
                t0 = time.perf_counter()
                r = colorizers[native].colorize(z["image"], boxes=z["det_boxes"], scores=z["det_scores"], hints=hints,
                                                size=size)
                entry["seconds"] = time.perf_counter() - t0
            except Exception as e:  # recorded, the other cases still run
                res["cases"].append({**entry, "status": "fail", "reason": f"{type(e).__name__}: {e}"})
                continue
            d = np.abs(r.ab.astype(np.float64) - want)
            entry.update(max_abs=float(d.max()), mean_abs=float(d.mean()), finite=bool(np.isfinite(r.ab).all()),
                         boxes_equal=bool(np.array_equal(r.boxes, z["boxes"])))
            problems = []
            if not entry["finite"]:
                problems.append("non-finite ab")
            if not entry["boxes_equal"]:
                problems.append("boxes differ")
            if not d.max() <= tol_max:
                problems.append(f"max |dab| {d.max():.3g} > {tol_max:g}")
            if tol_mean is not None and not d.mean() <= tol_mean:
                problems.append(f"mean |dab| {d.mean():.3g} > {tol_mean:g}")
            if precision == "fp32":
                px = np.abs(r.rgb_processed.astype(np.int16) - z["out_rgb_u8"].astype(np.int16))
                entry["rgb_processed_max_levels"] = int(px.max())
                if px.max() > 1 or (px > 0).mean() >= 0.005:
                    problems.append(f"rgb_processed off by up to {int(px.max())} levels")
            entry["status"] = "fail" if problems else "pass"
            if problems:
                entry["reason"] = "; ".join(problems)
            res["cases"].append(entry)
    statuses = [c["status"] for c in res["cases"]]
    if not statuses:
        return {**res, "status": "fail", "reason": f"no golden case selected (--max-size {max_size}, --cases {cases})"}
    if "fail" in statuses:
        res["status"], res["reason"] = "fail", f"{statuses.count('fail')} of {len(statuses)} case runs failed"
    elif "pass" not in statuses:
        res["status"], res["reason"] = "skip", "every case run skipped: " + res["cases"][0]["reason"]
    else:
        res["status"] = "pass"
        skipped = statuses.count("skip")
        if skipped:
            res["reason"] = f"{skipped} case runs skipped: " + next(c["reason"] for c in res["cases"] if c["status"] == "skip")
    ran = [c for c in res["cases"] if "max_abs" in c]
    if ran:
        res["max_abs"] = max(c["max_abs"] for c in ran)
        res["mean_abs_max"] = max(c["mean_abs"] for c in ran)
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--precision", choices=sorted(TOLERANCE), default="fp32")
    ap.add_argument("--golden", type=Path, default=DEFAULT_GOLDEN, help=f"golden folder (default {DEFAULT_GOLDEN})")
    ap.add_argument("--max-size", type=int, help="only the cases with S <= this (quick runs)")
    ap.add_argument("--limit", type=int, help="only the first LIMIT cases (after --max-size)")
    ap.add_argument("--cases", nargs="+", metavar="PREFIX", help="only the cases whose name starts with one of these")
    ap.add_argument("--json", type=Path, help="write the results here")
    args = ap.parse_args(argv)
    try:
        torch.device(args.device)
    except (RuntimeError, TypeError) as e:
        ap.error(f"--device: {e}")
    res = run(args.device, args.precision, args.golden, args.max_size, args.limit, args.cases)
    for c in res["cases"]:
        figs = f"max |dab| {c['max_abs']:.2e}  mean {c['mean_abs']:.2e}" if "max_abs" in c else ""
        print(f"{c['case']:28s} {c['path']:9s} {c['status']:4s} {figs} {c.get('reason', '')}".rstrip())
    tol = f"max {res['tolerance_max_abs']:g}" + (f", mean {res['tolerance_mean_abs']:g}" if res["tolerance_mean_abs"] else "")
    summary = f"golden {args.precision} on {args.device}: {res['status']}"
    if "max_abs" in res:
        summary += f" (max |dab| {res['max_abs']:.2e}, largest mean {res['mean_abs_max']:.2e}; tolerance {tol})"
    if res.get("reason"):
        summary += f" -- {res['reason']}"
    print(summary)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=1))
    return EXIT[res["status"]]


if __name__ == "__main__":
    sys.exit(main())

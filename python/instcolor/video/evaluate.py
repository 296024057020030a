"""``instcolor eval-video PRED GT``: temporal consistency and per-frame quality of a colorized video.

Both videos (files or folders of numbered frames) are read frame by frame, paired by index (they
must have the same frame count and size). Reported for the prediction and for the ground truth:

* CDC (:class:`instcolor.metrics.ColorDistributionConsistency`, TCVC, d in {1, 2, 4});
* warping error (:class:`instcolor.metrics.WarpingError`, Lai et al. 2018) with the flow of the
  ground truth's grey frames (OpenCV DIS, see ``FLOW_NAME``), the same flow for both videos;
* their ratios prediction / ground truth (1.0 = as consistent as the original);
* per-frame PSNR, SSIM and colourfulness (:mod:`instcolor.metrics`), as means and in the JSON per frame.

Memory stays flat: only the last five frames' histograms and one previous frame are kept.
"""
from __future__ import annotations

import math
import sys

import numpy as np

from .. import metrics
from .options import VideoError, VideoOptions

FLOW_NAME = ("OpenCV DIS optical flow, {preset} preset, on the ground truth's grey frames (BT.601 luma) "
             "at full resolution, forward and backward")


def _grey(rgb: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)


def _open(path, what: str):
    from .source import open_source

    try:
        return open_source(path, VideoOptions(copy_streams=False))
    except VideoError as e:
        raise VideoError(f"{what}: {e}") from None


def evaluate_videos(pred, gt, flow_preset: str = "medium", progress: bool = False) -> dict:
    """Compare video ``pred`` with ``gt`` (see the module docstring). Returns a JSON-able dict:
    ``pred``/``gt`` (paths), ``frames``, ``flow`` (how the flow was computed), ``cdc``, ``warp_error``
    (each {"pred", "gt", "ratio"}), ``cdc_per_dilation``, ``psnr``, ``psnr_identical``, ``ssim``,
    ``colorfulness_pred``, ``colorfulness_gt``, ``per_frame`` (index, psnr, ssim, colourfulness).
    VideoError when a video cannot be read or the two differ in frame count or size."""
    from tqdm import tqdm

    from .flow import DisFlow

    ps, gs = _open(pred, "PRED"), _open(gt, "GT")
    flow = DisFlow(flow_preset)
    cdc_p, cdc_g = metrics.ColorDistributionConsistency(), metrics.ColorDistributionConsistency()
    we_p, we_g = metrics.WarpingError(), metrics.WarpingError()
    rows = []
    prev = None
    n = 0
    bar = tqdm(total=gs.info.frame_count, unit="frame", desc="eval-video", disable=not progress, file=sys.stderr)
    pi, gi = iter(ps), iter(gs)
    try:
        while True:
            p = next(pi, None)
            g = next(gi, None)
            if p is not None and not p.is_frame:
                p = next(pi, None)
            if g is not None and not g.is_frame:
                g = next(gi, None)
            if p is None or g is None:
                if p is not None or g is not None:
                    longer = "PRED" if p is not None else "GT"
                    raise VideoError(f"{pred} and {gt} differ in length: {longer} has more than {n} frames")
                break
            a, b = p.rgb, g.rgb
            if a.shape != b.shape:
                raise VideoError(f"frame {n}: PRED {pred} is {a.shape[1]}x{a.shape[0]}, GT {gt} is "
                                 f"{b.shape[1]}x{b.shape[0]}")
            grey = _grey(b)
            if prev is not None:
                pa, pb, pgrey = prev
                fw, bw = flow.pair(pgrey, grey)
                occluded = metrics.flow_occlusion(fw, bw)  # the same flow for both videos: once
                we_p.add(pa, a, fw, bw, occluded)
                we_g.add(pb, b, fw, bw, occluded)
            cdc_p.add(a)
            cdc_g.add(b)
            ps_ = metrics.psnr(a, b)
            ss = metrics.ssim(a, b) if min(a.shape[:2]) >= metrics.SSIM_MIN_SIDE else None
            rows.append({"index": n, "psnr": None if math.isinf(ps_) else ps_, "ssim": ss,
                         "colorfulness_pred": metrics.colorfulness(a), "colorfulness_gt": metrics.colorfulness(b)})
            prev = (a, b, grey)
            n += 1
            bar.update(1)
    finally:
        bar.close()
        for s in (ps, gs):
            s.close()
    if n < 2:
        raise VideoError(f"{gt}: need at least 2 frames for the temporal metrics, got {n}")

    def ratio(x, y):
        return None if y == 0 else x / y

    out = {"pred": str(pred), "gt": str(gt), "frames": n, "flow": FLOW_NAME.format(preset=flow_preset)}
    try:
        c_p, c_g = cdc_p.value(), cdc_g.value()
        out["cdc"] = {"pred": c_p, "gt": c_g, "ratio": ratio(c_p, c_g)}
        out["cdc_per_dilation"] = {"pred": cdc_p.per_dilation(), "gt": cdc_g.per_dilation()}
    except ValueError as e:
        out["cdc"] = None
        out["cdc_note"] = str(e)
    try:
        w_p, w_g = we_p.value(), we_g.value()
        out["warp_error"] = {"pred": w_p, "gt": w_g, "ratio": ratio(w_p, w_g), "pairs": we_p.pairs,
                             "pairs_without_valid_pixels": we_p.skipped}
    except ValueError as e:
        out["warp_error"] = None
        out["warp_error_note"] = str(e)
    finite = [r["psnr"] for r in rows if r["psnr"] is not None]
    out["psnr"] = float(np.mean(finite)) if finite else None
    out["psnr_identical"] = sum(r["psnr"] is None for r in rows)
    ss = [r["ssim"] for r in rows if r["ssim"] is not None]
    out["ssim"] = float(np.mean(ss)) if ss else None
    out["colorfulness_pred"] = float(np.mean([r["colorfulness_pred"] for r in rows]))
    out["colorfulness_gt"] = float(np.mean([r["colorfulness_gt"] for r in rows]))
    out["per_frame"] = rows
    return out


def _f(v, fmt="{:.4f}") -> str:
    return "n/a" if v is None else fmt.format(v)


def format_report(r: dict) -> str:
    """Markdown: one row for the prediction, one for the ground truth, then the flow used."""
    cdc, we = r.get("cdc") or {}, r.get("warp_error") or {}
    lines = ["| video | frames | CDC ↓ | CDC ratio | warp error ↓ | WE ratio | PSNR ↑ | SSIM ↑ | colourfulness |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
             f"| PRED {r['pred']} | {r['frames']} | {_f(cdc.get('pred'), '{:.5f}')} | {_f(cdc.get('ratio'), '{:.3f}')} | "
             f"{_f(we.get('pred'), '{:.6f}')} | {_f(we.get('ratio'), '{:.3f}')} | {_f(r['psnr'], '{:.2f}')} | "
             f"{_f(r['ssim'])} | {r['colorfulness_pred']:.2f} |",
             f"| GT {r['gt']} | {r['frames']} | {_f(cdc.get('gt'), '{:.5f}')} | 1.000 | {_f(we.get('gt'), '{:.6f}')} | "
             f"1.000 | — | — | {r['colorfulness_gt']:.2f} |",
             "", f"flow: {r['flow']}"]
    for key in ("cdc_note", "warp_error_note"):
        if key in r:
            lines.append(f"note: {r[key]}")
    return "\n".join(lines)

"""Evaluate a folder of colorized images against a folder of ground-truth colour images.

``instcolor eval PRED GT [--boxes PATH] [--json OUT.json] [--name NAME]`` prints a table row per
method (markdown, ready for the README) and optionally writes the full result as JSON.

Images are paired by file stem (``PRED/x.png`` with ``GT/x.jpg``), both read through
:func:`instcolor.imageio.read_image` (upright, sRGB, 8-bit RGB). Every GT image needs a
prediction of the same size; predictions without a GT are counted and otherwise ignored. A pair
with an unreadable file is left out and reported (``errors``; the command then exits with 1).
"""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np

from . import metrics
from .imageio import IMAGE_SUFFIXES, ImageReadError
from .prepare import as_rgb_uint8

CF_RANGE = (16.0, 20.0)  # colourfulness range whose share SCGAN reports
_MAX_NAMES = 5


def _images_by_stem(folder: Path, what: str) -> dict[str, Path]:
    if not folder.is_dir():
        raise ValueError(f"{what} folder {folder}: no such folder")
    suffixes = IMAGE_SUFFIXES
    out: dict[str, Path] = {}
    for f in sorted(folder.iterdir()):
        if not (f.is_file() and f.suffix.lower() in suffixes):
            continue
        if f.stem in out:
            raise ValueError(f"{what} folder {folder}: two images with the stem {f.stem!r} "
                             f"({out[f.stem].name}, {f.name}); cannot pair them by name")
        out[f.stem] = f
    return out


def _names(items) -> str:
    items = sorted(items)
    more = f" and {len(items) - _MAX_NAMES} more" if len(items) > _MAX_NAMES else ""
    return ", ".join(items[:_MAX_NAMES]) + more


def _finite_mean(values) -> tuple[float | None, int]:
    """(mean of the finite values or None, number of infinite values)."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    n_inf = sum(1 for v in values if v is not None and math.isinf(v))
    return (float(np.mean(finite)) if finite else None), n_inf


def _mean(values) -> float | None:
    vals = [v for v in values if v is not None]
    return float(np.mean(vals)) if vals else None


def _json_psnr(v: float) -> float | None:
    return None if math.isinf(v) else v


def evaluate_folders(pred_dir, gt_dir, boxes=None, progress: bool = True) -> dict:
    """Compare the images of ``pred_dir`` with those of ``gt_dir`` (paired by file stem).

    ``boxes``: optional boxes source for :class:`instcolor.detect.BoxesFile` (a folder of
    ``<stem>.npz`` with ``bbox``, or a JSON file), looked up by the GT file's name; boxes are in
    GT pixels. Adds instance-level PSNR / SSIM on the box crops.

    ValueError (naming the files) if a folder is missing or has no images, if GT images have no
    prediction, if a pair differs in size or no pair can be read. A pair with an unreadable image is
    left out; ``errors`` lists one message per such file (each naming the file).

    Returns a JSON-able dict (no NaN / inf). PSNR of identical images is infinite: such images
    get ``"psnr": null, "identical": true`` in their row, the mean PSNR is over the others and
    ``psnr_identical`` counts them (``psnr`` is null when all are identical). Keys: ``pred_dir``,
    ``gt_dir``, ``boxes``, ``count``, ``extra_predictions``, ``psnr``, ``psnr_identical``,
    ``ssim``, ``ssim_count``, ``colorfulness_pred``, ``colorfulness_gt``, ``colorfulness_ratio``,
    ``colorfulness_range``, ``colorfulness_in_range_pred``, ``colorfulness_in_range_gt``,
    ``lpips``, ``lpips_reason``, ``instance`` (null without ``boxes``; else ``count``, ``psnr``,
    ``psnr_identical``, ``ssim``, ``ssim_count``, ``ssim_skipped_small``,
    ``images_without_boxes``) and ``images`` (one row per pair: ``name``, ``pred``, ``gt``,
    ``width``, ``height``, ``psnr``, ``identical``, ``ssim``, ``colorfulness_pred``,
    ``colorfulness_gt``, ``lpips``, and with boxes ``instances``: the rows of
    :func:`instcolor.metrics.instance_metrics` with infinite PSNR as null).
    """
    from tqdm import tqdm

    pred_dir, gt_dir = Path(pred_dir), Path(gt_dir)
    preds = _images_by_stem(pred_dir, "prediction")
    gts = _images_by_stem(gt_dir, "ground-truth")
    if not gts:
        raise ValueError(f"ground-truth folder {gt_dir}: no image files")
    missing = set(gts) - set(preds)
    if missing:
        raise ValueError(f"{len(missing)} of {len(gts)} ground-truth image(s) have no prediction in "
                         f"{pred_dir}: {_names(gts[s].name for s in missing)}")
    box_source = None
    if boxes is not None:
        from .detect import BoxesFile

        try:
            box_source = BoxesFile(boxes)
        except FileNotFoundError as e:
            raise ValueError(str(e)) from None

    use_lpips, lpips_reason = metrics.lpips_status()
    rows = []
    errors = []
    inst_rows = []
    images_without_boxes = 0
    stems = sorted(gts)
    for stem in tqdm(stems, desc="eval", unit="img", file=sys.stderr, disable=not progress):
        gt_path, pred_path = gts[stem], preds[stem]
        try:
            gt = as_rgb_uint8(gt_path, str(gt_path))
            pred = as_rgb_uint8(pred_path, str(pred_path))
        except ImageReadError as e:
            errors.append(str(e))
            continue
        if pred.shape != gt.shape:
            raise ValueError(f"{pred_path}: size {pred.shape[1]}x{pred.shape[0]} differs from the "
                             f"ground truth {gt_path} ({gt.shape[1]}x{gt.shape[0]})")
        h, w = gt.shape[:2]
        p = metrics.psnr(pred, gt)
        row = {"name": stem, "pred": pred_path.name, "gt": gt_path.name, "width": w, "height": h,
               "psnr": _json_psnr(p), "identical": math.isinf(p),
               "ssim": metrics.ssim(pred, gt) if min(h, w) >= metrics.SSIM_MIN_SIDE else None,
               "colorfulness_pred": metrics.colorfulness(pred),
               "colorfulness_gt": metrics.colorfulness(gt),
               "lpips": metrics.lpips_distance(pred, gt) if use_lpips else None}
        if box_source is not None:
            det = box_source.lookup(gt_path)
            if det is None:
                images_without_boxes += 1
                inst = []
            else:
                inst = metrics.instance_metrics(pred, gt, det.boxes)
            inst_rows += inst
            row["instances"] = [{**r, "psnr": _json_psnr(r["psnr"])} for r in inst]
        rows.append(row)
    if not rows:
        raise ValueError(f"no image pair could be read: {'; '.join(errors)}")

    psnr_mean, n_identical = _finite_mean([math.inf if r["identical"] else r["psnr"] for r in rows])
    cf_pred = [r["colorfulness_pred"] for r in rows]
    cf_gt = [r["colorfulness_gt"] for r in rows]
    cf_pred_mean, cf_gt_mean = float(np.mean(cf_pred)), float(np.mean(cf_gt))
    result = {
        "pred_dir": str(pred_dir),
        "gt_dir": str(gt_dir),
        "boxes": None if boxes is None else str(boxes),
        "count": len(rows),
        "extra_predictions": len(set(preds) - set(gts)),
        "psnr": psnr_mean,
        "psnr_identical": n_identical,
        "ssim": _mean(r["ssim"] for r in rows),
        "ssim_count": sum(r["ssim"] is not None for r in rows),
        "colorfulness_pred": cf_pred_mean,
        "colorfulness_gt": cf_gt_mean,
        "colorfulness_ratio": cf_pred_mean / cf_gt_mean if cf_gt_mean > 0 else None,
        "colorfulness_range": list(CF_RANGE),
        "colorfulness_in_range_pred": metrics.colorfulness_in_range(cf_pred, *CF_RANGE),
        "colorfulness_in_range_gt": metrics.colorfulness_in_range(cf_gt, *CF_RANGE),
        "lpips": _mean(r["lpips"] for r in rows) if use_lpips else None,
        "lpips_reason": None if use_lpips else lpips_reason,
        "instance": None,
        "images": rows,
        "errors": errors,
    }
    if box_source is not None:
        inst_psnr, inst_identical = _finite_mean([r["psnr"] for r in inst_rows])
        ssims = [r["ssim"] for r in inst_rows if r["ssim"] is not None]
        result["instance"] = {
            "count": len(inst_rows),
            "psnr": inst_psnr,
            "psnr_identical": inst_identical,
            "ssim": _mean(ssims),
            "ssim_count": len(ssims),
            "ssim_skipped_small": len(inst_rows) - len(ssims),
            "images_without_boxes": images_without_boxes,
        }
    return result


# ---------------------------------------------------------------------------------------------
# table


def _fmt(v, digits: int, none: str = "n/a") -> str:
    return none if v is None else f"{v:.{digits}f}"


def format_table(results) -> str:
    """A markdown table, one row per method.

    ``results``: one result dict of :func:`evaluate_folders` or a list of ``(name, result)``.
    A bare dict is named by its ``"name"`` key, else by its prediction folder's name. Columns:
    PSNR, SSIM, LPIPS, mean colourfulness of the predictions (of the GT), the predictions' mean
    colourfulness as a percentage of the GT's (``colorfulness_ratio``), the share of images whose
    colourfulness (SCGAN's CCI) lies in [16, 20] (of the GT images); instance columns appear when
    any result has instance metrics. Missing values print as ``n/a``; a PSNR
    mean that is null because every image was identical prints as ``inf``.
    """
    if isinstance(results, dict):
        results = [(results.get("name") or Path(results.get("pred_dir", "?")).name, results)]
    results = list(results)
    if not results:
        raise ValueError("results: nothing to tabulate")
    lo, hi = CF_RANGE
    with_inst = any(r.get("instance") for _, r in results)
    head = ["Method", "N", "PSNR ↑", "SSIM ↑", "LPIPS ↓", "Colourfulness (GT)", "CF % of GT",
            f"CF in [{lo:g},{hi:g}] (GT)"]
    if with_inst:
        head += ["Inst. N", "Inst. PSNR ↑", "Inst. SSIM ↑"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" if i == 0 else "---:" for i in range(len(head))) + "|"]
    for name, r in results:
        psnr_txt = _fmt(r.get("psnr"), 2, "inf" if r.get("count") and r.get("psnr_identical") == r.get("count") else "n/a")
        share = (lambda v: "n/a" if v is None else f"{100 * v:.1f}%")
        cells = [str(name).replace("|", "\\|"), str(r.get("count", "n/a")), psnr_txt, _fmt(r.get("ssim"), 4),
                 _fmt(r.get("lpips"), 4),
                 f"{_fmt(r.get('colorfulness_pred'), 2)} ({_fmt(r.get('colorfulness_gt'), 2)})",
                 share(r.get("colorfulness_ratio")),
                 f"{share(r.get('colorfulness_in_range_pred'))} ({share(r.get('colorfulness_in_range_gt'))})"]
        if with_inst:
            inst = r.get("instance") or {}
            ipsnr = _fmt(inst.get("psnr"), 2, "inf" if inst.get("count") and inst.get("psnr_identical") == inst.get("count") else "n/a")
            cells += [str(inst.get("count", "n/a")), ipsnr, _fmt(inst.get("ssim"), 4)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# command line


def add_eval_parser(subparsers):
    """Register ``eval PRED GT [--boxes PATH] [--json OUT.json] [--name NAME]``; returns its parser."""
    p = subparsers.add_parser(
        "eval", help="compare colorized images with ground-truth colour images (PSNR, SSIM, colourfulness)",
        description="Pair PRED/<stem>.* with GT/<stem>.* and report PSNR, SSIM, colourfulness, LPIPS "
                    "(only when the lpips package and its weights are already installed) and, with --boxes, "
                    "the same on instance crops. Prints a markdown table.")
    p.add_argument("pred", metavar="PRED", help="folder of colorized images")
    p.add_argument("gt", metavar="GT", help="folder of ground-truth colour images (same stems and sizes)")
    p.add_argument("--boxes", metavar="PATH",
                   help="instance boxes in GT pixels: a folder of <stem>.npz (bbox) or one JSON file")
    p.add_argument("--json", metavar="OUT.json", help="also write the full result (with per-image rows) as JSON")
    p.add_argument("--name", metavar="NAME", help="method name for the table row (default: PRED's folder name)")
    p.set_defaults(func=cmd_eval)
    return p


def cmd_eval(args) -> int:
    from ._fileio import atomic_path
    from .errors import UsageError

    for what, folder in (("PRED", args.pred), ("GT", args.gt)):
        if not Path(folder).is_dir():
            raise UsageError(f"{what} {folder}: no such folder")
    json_out = Path(args.json) if args.json else None
    if json_out is not None:
        if json_out.is_dir():
            raise UsageError(f"--json {json_out}: is a folder")
        if not json_out.parent.is_dir():
            raise UsageError(f"--json {json_out}: folder {json_out.parent} does not exist")
    try:
        result = evaluate_folders(args.pred, args.gt, boxes=args.boxes, progress=sys.stderr.isatty())
    except ValueError as e:
        raise UsageError(str(e)) from None
    for message in result["errors"]:
        print(f"instcolor: skipped: {message}", file=sys.stderr)
    name = args.name or Path(args.pred).resolve().name
    result = {"name": name, **result}
    print(format_table([(name, result)]))
    if result["lpips"] is None:
        print(f"instcolor: LPIPS n/a: {result['lpips_reason']}", file=sys.stderr)
    if result["psnr_identical"]:
        print(f"instcolor: {result['psnr_identical']} image(s) identical to the ground truth "
              "(infinite PSNR, left out of the PSNR mean)", file=sys.stderr)
    if result["extra_predictions"]:
        print(f"instcolor: {result['extra_predictions']} prediction(s) without a ground truth ignored",
              file=sys.stderr)
    if json_out is not None:
        text = json.dumps(result, indent=2, allow_nan=False, ensure_ascii=False) + "\n"
        with atomic_path(json_out) as tmp:
            tmp.write_text(text, encoding="utf-8")
        print(f"instcolor: wrote {json_out}", file=sys.stderr)
    return 1 if result["errors"] else 0

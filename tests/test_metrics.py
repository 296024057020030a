"""Metrics (instcolor.metrics) and the eval command (instcolor.evaluate)."""
import argparse
import json
import math

import numpy as np
import pytest
from PIL import Image

from instcolor import metrics
from instcolor.evaluate import add_eval_parser, cmd_eval, evaluate_folders, format_table


def rand_rgb(h, w, seed):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def ssim_reference(x, y):
    """Straightforward SSIM: explicit 2-D Gaussian window, a loop over every valid position."""
    sigma, r = 1.5, 5
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    win = np.exp(-(xx ** 2 + yy ** 2) / (2 * sigma ** 2))
    win /= win.sum()
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    per_channel = []
    for c in range(3):
        a, b = x[..., c].astype(np.float64), y[..., c].astype(np.float64)
        vals = []
        for i in range(a.shape[0] - 2 * r):
            for j in range(a.shape[1] - 2 * r):
                pa, pb = a[i:i + 2 * r + 1, j:j + 2 * r + 1], b[i:i + 2 * r + 1, j:j + 2 * r + 1]
                ma, mb = (win * pa).sum(), (win * pb).sum()
                va = (win * (pa - ma) ** 2).sum()
                vb = (win * (pb - mb) ** 2).sum()
                cov = (win * (pa - ma) * (pb - mb)).sum()
                vals.append((2 * ma * mb + c1) * (2 * cov + c2) / ((ma ** 2 + mb ** 2 + c1) * (va + vb + c2)))
        per_channel.append(np.mean(vals))
    return float(np.mean(per_channel))


# --------------------------------------------------------------------------- PSNR


def test_psnr_constant_offset():
    gt = np.full((8, 9, 3), 100, np.uint8)
    pred = gt + np.uint8(5)
    assert metrics.psnr(pred, gt) == pytest.approx(10 * math.log10(255 ** 2 / 25), abs=1e-12)
    # offset on one channel only: MSE = 25 / 3
    pred = gt.copy()
    pred[..., 1] += 5
    assert metrics.psnr(pred, gt) == pytest.approx(10 * math.log10(255 ** 2 / (25 / 3)), abs=1e-12)


def test_psnr_no_uint8_wraparound():
    gt = np.zeros((4, 4, 3), np.uint8)
    pred = np.full((4, 4, 3), 255, np.uint8)
    assert metrics.psnr(pred, gt) == pytest.approx(0.0, abs=1e-12)
    assert metrics.psnr(gt, pred) == pytest.approx(0.0, abs=1e-12)


def test_psnr_identical_is_inf():
    x = rand_rgb(5, 6, 0)
    assert metrics.psnr(x, x.copy()) == float("inf")


@pytest.mark.parametrize("pred, gt, word", [
    (np.zeros((4, 4, 3), np.float32), np.zeros((4, 4, 3), np.uint8), "pred"),
    (np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4), np.uint8), "gt"),
    (np.zeros((4, 4, 3), np.uint8), np.zeros((4, 5, 3), np.uint8), "shape"),
    ([[0]], np.zeros((4, 4, 3), np.uint8), "pred"),
])
def test_metric_validation(pred, gt, word):
    for fn in (metrics.psnr, metrics.ssim):
        with pytest.raises(ValueError, match=word):
            fn(pred, gt)


# --------------------------------------------------------------------------- SSIM


def test_ssim_identical_is_one():
    x = rand_rgb(20, 17, 1)
    assert metrics.ssim(x, x.copy()) == pytest.approx(1.0, abs=1e-12)


def test_ssim_matches_direct_reference():
    gt = rand_rgb(16, 14, 2)
    noise = np.random.default_rng(3).integers(-40, 41, gt.shape)
    pred = np.clip(gt.astype(int) + noise, 0, 255).astype(np.uint8)
    got = metrics.ssim(pred, gt)
    assert 0.2 < got < 0.99
    assert got == pytest.approx(ssim_reference(pred, gt), abs=1e-10)
    # unrelated images: low SSIM, still the same as the reference
    other = rand_rgb(16, 14, 4)
    assert metrics.ssim(other, gt) == pytest.approx(ssim_reference(other, gt), abs=1e-10)


def test_ssim_constant_images_closed_form():
    a, b = 60, 200
    x = np.full((12, 13, 3), a, np.uint8)
    y = np.full((12, 13, 3), b, np.uint8)
    c1 = (0.01 * 255) ** 2
    assert metrics.ssim(x, y) == pytest.approx((2 * a * b + c1) / (a * a + b * b + c1), abs=1e-12)


def test_ssim_smallest_image_single_window():
    """An 11x11 image has exactly one valid window position (no padding enters the mean)."""
    gt = rand_rgb(11, 11, 5)
    pred = rand_rgb(11, 11, 6)
    assert metrics.ssim(pred, gt) == pytest.approx(ssim_reference(pred, gt), abs=1e-10)


def test_ssim_too_small():
    x = rand_rgb(10, 30, 7)
    with pytest.raises(ValueError, match="smaller than"):
        metrics.ssim(x, x)


# --------------------------------------------------------------------------- colourfulness


def test_colorfulness_half_red_half_black():
    img = np.zeros((4, 6, 3), np.uint8)
    img[:2, :, 0] = 255
    # rg: 255 / 0 -> mean 127.5, std 127.5; yb: 127.5 / 0 -> mean 63.75, std 63.75
    expected = math.hypot(127.5, 63.75) + 0.3 * math.hypot(127.5, 63.75)
    assert metrics.colorfulness(img) == pytest.approx(expected, abs=1e-9)
    assert expected == pytest.approx(185.31, abs=0.01)


def test_colorfulness_signed_blue_and_grey():
    assert metrics.colorfulness(np.full((3, 3, 3), 77, np.uint8)) == 0.0
    blue = np.zeros((2, 2, 3), np.uint8)
    blue[..., 2] = 200  # rg 0, yb -200 everywhere: no spread, mean magnitude 200
    assert metrics.colorfulness(blue) == pytest.approx(0.3 * 200, abs=1e-12)


def test_colorfulness_in_range():
    assert metrics.colorfulness_in_range([15.9, 16, 18, 20, 20.1]) == pytest.approx(3 / 5)
    assert metrics.colorfulness_in_range([1.0, 2.0], lo=0, hi=1.5) == 0.5
    with pytest.raises(ValueError, match="values"):
        metrics.colorfulness_in_range([])
    with pytest.raises(ValueError, match="lo"):
        metrics.colorfulness_in_range([1.0], lo=3, hi=2)


# --------------------------------------------------------------------------- instances


def test_crop_boxes_clip_and_round():
    img = rand_rgb(10, 12, 8)
    crops = metrics.crop_boxes(img, [[-5, 2.5, 4.2, 20], [3, 3, 3, 8], [20, 0, 30, 5]])
    assert crops[0].shape == (8, 5, 3)  # x 0..5, y 2..10
    np.testing.assert_array_equal(crops[0], img[2:10, 0:5])
    assert crops[1].size == 0 and crops[2].size == 0
    with pytest.raises(ValueError, match="boxes"):
        metrics.crop_boxes(img, [[1, 2, 3]])


def test_instance_metrics():
    gt = rand_rgb(30, 40, 9)
    pred = gt.copy()
    pred[0:20, 0:20] = np.clip(pred[0:20, 0:20].astype(int) + 3, 0, 255).astype(np.uint8)
    rows = metrics.instance_metrics(pred, gt, [[0, 0, 20, 20], [25, 5, 37, 25], [30, 20, 36, 26], [50, 0, 60, 5]])
    assert [r["index"] for r in rows] == [0, 1, 2]  # the box outside the image is left out
    crop_p, crop_g = pred[0:20, 0:20], gt[0:20, 0:20]
    assert rows[0]["psnr"] == pytest.approx(metrics.psnr(crop_p, crop_g))
    assert rows[0]["ssim"] == pytest.approx(metrics.ssim(crop_p, crop_g))
    assert rows[1]["psnr"] == float("inf") and rows[1]["ssim"] == pytest.approx(1.0)
    assert rows[2]["box"] == [30, 20, 36, 26] and rows[2]["ssim"] is None  # 6 px: window does not fit


# --------------------------------------------------------------------------- LPIPS


def test_lpips_reported_unavailable_with_reason():
    ok, reason = metrics.lpips_status()
    if ok:
        pytest.skip("LPIPS is installed with its weights here")
    assert reason and metrics.lpips_available() is False
    x = rand_rgb(32, 32, 10)
    with pytest.raises(RuntimeError, match="unavailable"):
        metrics.lpips_distance(x, x)


# --------------------------------------------------------------------------- folders / CLI


def make_pairs(tmp_path, n=3):
    pred_dir, gt_dir = tmp_path / "pred", tmp_path / "gt"
    pred_dir.mkdir()
    gt_dir.mkdir()
    gts, preds = {}, {}
    for i in range(n):
        gt = rand_rgb(24, 20, 100 + i)
        pred = np.clip(gt.astype(int) + (i + 1) * 2, 0, 255).astype(np.uint8)
        Image.fromarray(gt).save(gt_dir / f"im{i}.png")
        Image.fromarray(pred).save(pred_dir / f"im{i}.png")
        gts[f"im{i}"], preds[f"im{i}"] = gt, pred
    return pred_dir, gt_dir, preds, gts


def test_evaluate_folders(tmp_path):
    pred_dir, gt_dir, preds, gts = make_pairs(tmp_path)
    # one JPEG ground truth paired with a PNG prediction of the same stem
    jpg = rand_rgb(16, 16, 200)
    Image.fromarray(jpg).save(gt_dir / "photo.jpg", quality=95)
    jpg_read = np.asarray(Image.open(gt_dir / "photo.jpg").convert("RGB"))
    Image.fromarray(jpg_read).save(pred_dir / "photo.png")  # identical -> infinite PSNR
    gts["photo"], preds["photo"] = jpg_read, jpg_read
    Image.fromarray(rand_rgb(5, 5, 1)).save(pred_dir / "extra.png")
    (gt_dir / "notes.txt").write_text("not an image")

    res = evaluate_folders(pred_dir, gt_dir, progress=False)
    json.dumps(res, allow_nan=False)
    assert res["count"] == 4 and res["extra_predictions"] == 1
    names = [r["name"] for r in res["images"]]
    assert names == ["im0", "im1", "im2", "photo"]
    finite = [metrics.psnr(preds[s], gts[s]) for s in ["im0", "im1", "im2"]]
    assert res["psnr"] == pytest.approx(np.mean(finite))
    assert res["psnr_identical"] == 1
    row = res["images"][3]
    assert row["psnr"] is None and row["identical"] is True and row["pred"] == "photo.png" and row["gt"] == "photo.jpg"
    assert res["ssim"] == pytest.approx(np.mean([metrics.ssim(preds[s], gts[s]) for s in names]))
    cf_p = [metrics.colorfulness(preds[s]) for s in names]
    cf_g = [metrics.colorfulness(gts[s]) for s in names]
    assert res["colorfulness_pred"] == pytest.approx(np.mean(cf_p))
    assert res["colorfulness_gt"] == pytest.approx(np.mean(cf_g))
    assert res["colorfulness_ratio"] == pytest.approx(np.mean(cf_p) / np.mean(cf_g))
    assert res["colorfulness_in_range_gt"] == metrics.colorfulness_in_range(cf_g)
    assert res["instance"] is None
    if not metrics.lpips_available():
        assert res["lpips"] is None and res["lpips_reason"]


def test_evaluate_folders_with_boxes(tmp_path):
    pred_dir, gt_dir, preds, gts = make_pairs(tmp_path, n=2)
    boxes = tmp_path / "boxes"
    boxes.mkdir()
    np.savez(boxes / "im0.npz", bbox=np.array([[0, 0, 12, 12], [2, 2, 8, 8]], np.float32))
    res = evaluate_folders(pred_dir, gt_dir, boxes=boxes, progress=False)
    inst = res["instance"]
    assert inst["count"] == 2 and inst["ssim_count"] == 1 and inst["ssim_skipped_small"] == 1
    assert inst["images_without_boxes"] == 1
    p0, g0 = preds["im0"], gts["im0"]
    assert inst["psnr"] == pytest.approx(np.mean([metrics.psnr(p0[:12, :12], g0[:12, :12]),
                                                  metrics.psnr(p0[2:8, 2:8], g0[2:8, 2:8])]))
    assert inst["ssim"] == pytest.approx(metrics.ssim(p0[:12, :12], g0[:12, :12]))
    assert len(res["images"][0]["instances"]) == 2 and res["images"][1]["instances"] == []
    table = format_table([("ours", res), ("other", {**res, "instance": None})])
    assert "Inst. PSNR" in table and table.count("\n") == 3


def test_evaluate_folders_errors(tmp_path):
    pred_dir, gt_dir, _, _ = make_pairs(tmp_path, n=2)
    Image.fromarray(rand_rgb(24, 20, 0)).save(gt_dir / "lonely.jpg")
    with pytest.raises(ValueError, match="lonely.jpg"):
        evaluate_folders(pred_dir, gt_dir, progress=False)
    (gt_dir / "lonely.jpg").unlink()
    Image.fromarray(rand_rgb(24, 21, 0)).save(pred_dir / "im1.png")
    with pytest.raises(ValueError, match=r"im1\.png.*21x24.*20x24"):
        evaluate_folders(pred_dir, gt_dir, progress=False)
    with pytest.raises(ValueError, match="no such folder"):
        evaluate_folders(tmp_path / "nope", gt_dir, progress=False)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no image files"):
        evaluate_folders(pred_dir, empty, progress=False)


def test_format_table_values():
    res = {"pred_dir": "/x/runA", "count": 2, "psnr": 24.3456, "psnr_identical": 0, "ssim": 0.91234,
           "lpips": None, "colorfulness_pred": 20.0, "colorfulness_gt": 25.0, "colorfulness_ratio": 0.8,
           "colorfulness_in_range_pred": 0.5, "colorfulness_in_range_gt": 0.25, "instance": None}
    lines = format_table(res).splitlines()
    assert len(lines) == 3 and lines[0].startswith("| Method")
    cells = [c.strip() for c in lines[2].strip("|").split("|")]
    assert cells == ["runA", "2", "24.35", "0.9123", "n/a", "20.00 (25.00)", "80.0%", "50.0% (25.0%)"]
    assert "CF % of GT" in lines[0] and "CF in [16,20] (GT)" in lines[0]


def eval_args(argv):
    parser = argparse.ArgumentParser(prog="instcolor")
    add_eval_parser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["eval", *argv])


def test_cmd_eval(tmp_path, capsys):
    pred_dir, gt_dir, _, _ = make_pairs(tmp_path, n=2)
    out = tmp_path / "res.json"
    args = eval_args([str(pred_dir), str(gt_dir), "--json", str(out), "--name", "my method"])
    assert args.func is cmd_eval
    assert args.func(args) == 0
    captured = capsys.readouterr()
    assert "| my method | 2 |" in captured.out
    data = json.loads(out.read_text())
    assert data["name"] == "my method" and data["count"] == 2 and len(data["images"]) == 2
    assert not list(tmp_path.glob(".res.json.*"))  # no temp file left behind
    if data["lpips"] is None:
        assert "LPIPS n/a" in captured.err


def test_cmd_eval_usage_errors(tmp_path):
    from instcolor.cli import UsageError

    pred_dir, gt_dir, _, _ = make_pairs(tmp_path, n=1)
    with pytest.raises(UsageError, match="no such folder"):
        cmd_eval(eval_args([str(tmp_path / "missing"), str(gt_dir)]))
    with pytest.raises(UsageError, match="does not exist"):
        cmd_eval(eval_args([str(pred_dir), str(gt_dir), "--json", str(tmp_path / "no" / "r.json")]))
    with pytest.raises(UsageError, match="boxes"):
        cmd_eval(eval_args([str(pred_dir), str(gt_dir), "--boxes", str(tmp_path / "nobox.json")]))
    (pred_dir / "im0.png").unlink()
    with pytest.raises(UsageError, match="no prediction"):
        cmd_eval(eval_args([str(pred_dir), str(gt_dir)]))

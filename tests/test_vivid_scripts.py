"""The issue-13/16 measurement scripts in benchmarks/: vivid_table, hint_sweep, suggestion_accuracy,
global_hints_gain, contact_sheet. Each runs end to end on a few photos with small random nets; the
protocol pieces are checked against hand-computed values."""
from __future__ import annotations

import json
import math
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import SHARED, tiny_nets

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

import _vivid_common as common  # noqa: E402
import contact_sheet  # noqa: E402
import global_hints_gain  # noqa: E402
import hint_sweep  # noqa: E402
import suggestion_accuracy  # noqa: E402
import vivid_table  # noqa: E402

VAL = SHARED / "data" / "val"
SIZE = 64


@pytest.fixture(scope="module")
def photos_dir(tmp_path_factory):
    """Three photos of ../shared/data/val (the smallest files) copied to a temporary folder."""
    if not VAL.is_dir():
        pytest.skip(f"photos not found at {VAL}")
    d = tmp_path_factory.mktemp("photos")
    for f in sorted(VAL.iterdir(), key=lambda p: (p.stat().st_size, p.name))[:3]:
        shutil.copyfile(f, d / f.name)
    return d


@pytest.fixture(scope="module")
def boxes_dir(photos_dir, tmp_path_factory):
    """<stem>.npz boxes: one box in the first photo, none in the others."""
    d = tmp_path_factory.mktemp("boxes")
    for i, f in enumerate(sorted(photos_dir.iterdir())):
        w, h = Image.open(f).size
        bbox = np.array([[w * 0.2, h * 0.25, w * 0.7, h * 0.8]], np.float32) if i == 0 else np.zeros((0, 4), np.float32)
        np.savez(d / f"{f.stem}.npz", bbox=bbox, scores=np.ones(len(bbox), np.float32))
    return d


def _save(nets, d: Path) -> Path:
    from instcolor.models import save_official

    d.mkdir(parents=True, exist_ok=True)
    save_official(d, nets)
    return d


@pytest.fixture(scope="module")
def weights_pair(tmp_path_factory):
    """Two different sets of small random nets (the 'old' and the 'new' weights)."""
    base = tmp_path_factory.mktemp("w")
    return _save(tiny_nets(seed=1), base / "old"), _save(tiny_nets(seed=2), base / "new")


def _global_nets(seed: int, perturb: bool):
    from instcolor.models import FusionNet, InstanceNet, SIGGRAPHBackbone

    torch.manual_seed(seed)
    nets = {"full": SIGGRAPHBackbone(0.125, global_hints=True).eval(), "instance": InstanceNet(0.125).eval(),
            "fusion": FusionNet(0.125, global_hints=True).eval()}
    if perturb:  # the branch's last layer starts at zero; give it weights so the hints change something
        for k in ("full", "fusion"):
            with torch.no_grad():
                for p in nets[k].global_net.parameters():
                    p.copy_(torch.randn_like(p) * 0.5)
    return nets


# ============================================================================ common
def test_delta_e76_hand_computed():
    assert common.delta_e76([50, 0, 0], [50, 6, 8]) == pytest.approx(10.0, abs=1e-12)
    # pure sRGB red (53.24, 80.09, 67.20) against white (100, 0, 0)
    red, white = common.rgb_to_lab(np.array([[255, 0, 0], [255, 255, 255]], np.uint8))
    assert red == pytest.approx([53.24, 80.09, 67.20], abs=0.02)
    assert white == pytest.approx([100, 0, 0], abs=0.01)
    assert common.delta_e76(red, white) == pytest.approx(math.sqrt(46.76 ** 2 + 80.09 ** 2 + 67.20 ** 2), abs=0.05)
    assert common.lab_to_rgb(red[None])[0].tolist() == [255, 0, 0]


def test_head_check_tells_untrained_from_trained():
    nets = tiny_nets(seed=3)
    assert common.head_looks_untrained(nets["full"])  # PyTorch's default init
    with torch.no_grad():
        nets["full"].model_class[0].bias[7] = 2.5  # what training the head does
    assert not common.head_looks_untrained(nets["full"])


# ============================================================================ vivid_table
def test_vivid_table_rows_commands_and_values(photos_dir, boxes_dir, weights_pair, tmp_path, capsys):
    from instcolor import Colorizer, metrics

    old, new = weights_pair
    out = tmp_path / "vivid"
    code = vivid_table.main(["--val", str(photos_dir), "--train", str(photos_dir), "--out", str(out),
                             "--weights", str(new), "--old-weights", str(old), "--boxes", str(boxes_dir),
                             "--temperatures", "0.38,1", "--size", str(SIZE), "--backend", "torch", "--limit", "2",
                             "--in-process", "--quiet"])
    assert code == 0
    text = capsys.readouterr().out
    assert text == (out / "table.md").read_text()
    lines = text.splitlines()
    head = lines[0]
    for col in ("PSNR", "SSIM", "Colourfulness (GT)", "CF % of GT", "CF in [16,20] (GT)", "Inst. PSNR"):
        assert col in head
    names = [ln.split("|")[1].strip() for ln in lines[2:] if ln.startswith("| ")]
    assert names == ["grey", "constant tint", "today's starter", "today's starter + det", "new, regression",
                     "new, regression + det", "new, distribution T=0.38", "new, distribution T=0.38 + det",
                     "new, distribution T=1"]
    commands = text.split("```bash\n")[1].split("```")[0].strip().splitlines()
    colorize = [c for c in commands if c.startswith("instcolor colorize")]
    evals = [c for c in commands if c.startswith("instcolor eval")]
    assert commands[0].startswith("python benchmarks/quality_baselines.py --train")
    assert len(colorize) == 7 and len(evals) == 9
    assert all(f"--boxes {boxes_dir}" in c for c in evals)
    assert [("--boxes" in c) for c in colorize] == [False, True, False, True, False, True, False]
    assert [f"--weights {old}" in c for c in colorize] == [True, True] + [False] * 5
    assert all(f"--weights {new}" in c for c in colorize[2:])
    assert sum("--decode distribution --temperature 0.38" in c for c in colorize) == 2
    assert sum("--decode distribution --temperature 1 " in c + " " for c in colorize) == 1

    rows = {json.loads(p.read_text())["name"]: json.loads(p.read_text()) for p in out.glob("*.json")}
    assert all(r["count"] == 2 and r["instance"]["count"] == 1 for r in rows.values())
    assert rows["grey"]["colorfulness_pred"] < 0.5
    # the regression row is what the API gives for these photos
    c = Colorizer.from_pretrained(str(new), backend="torch")
    gt = sorted(photos_dir.iterdir())[:2]
    want = np.mean([metrics.psnr(c.colorize(f, boxes=np.zeros((0, 4)), size=SIZE, decode="regression").rgb,
                                 np.asarray(Image.open(f).convert("RGB"))) for f in gt])
    assert rows["new, regression"]["psnr"] == pytest.approx(want, abs=1e-9)
    # distinct settings give distinct pictures
    psnrs = [rows[n]["psnr"] for n in ("today's starter", "new, regression", "new, distribution T=0.38",
                                       "new, distribution T=1")]
    assert len(set(psnrs)) == 4
    assert rows["new, regression + det"]["psnr"] != rows["new, regression"]["psnr"]


def test_vivid_table_refusals(photos_dir, tmp_path, capsys):
    base = ["--val", str(photos_dir), "--train", str(photos_dir), "--out", str(tmp_path / "o"), "--in-process"]
    assert vivid_table.main(base + ["--old-weights", str(tmp_path / "nope")]) == 2
    assert "--old-weights" in capsys.readouterr().err
    assert vivid_table.main(base + ["--temperatures", "0"]) == 2
    assert "temperature" in capsys.readouterr().err
    assert vivid_table.main(base + ["--boxes", str(tmp_path / "nobox")]) == 2
    assert "--boxes" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


# ============================================================================ hint_sweep
def test_sweep_protocol_constants():
    assert hint_sweep.official_points() == [0, 1, 2, 3, 4, 5, 6, 8, 10, 13, 16, 20, 25, 32, 40, 50, 63, 79, 100, 126,
                                            158, 200, 251, 316, 398, 501]
    assert hint_sweep.patch_size(256) == 6 and hint_sweep.patch_size(128) == 3 and hint_sweep.patch_size(16) == 1


def test_sweep_reveals_ground_truth_patch_means():
    rng = np.random.default_rng(5)
    gt = rng.uniform(-0.5, 0.5, (2, 32, 32)).astype(np.float32)
    patches = np.array([[0, 0, 3], [10, 20, 3], [29, 29, 3], [11, 21, 3]])  # the last overlaps the second
    planes = hint_sweep.reveal(gt, patches)
    covered = np.zeros((32, 32), bool)
    for h, w, p in patches:
        covered[h:h + p, w:w + p] = True
    assert np.array_equal(planes.mask[0] == 1, covered) and set(np.unique(planes.mask)) == {0.0, 1.0}
    assert np.all(planes.ab[:, ~covered] == 0)
    for h, w, p in patches[[0, 2, 3]]:  # patches nothing overwrote: their own ground-truth mean
        want = gt[:, h:h + p, w:w + p].astype(np.float64).mean(axis=(1, 2))
        np.testing.assert_allclose(planes.ab[:, h:h + p, w:w + p], np.broadcast_to(want[:, None, None], (2, p, p)),
                                   atol=1e-6)
    # the overwritten patch keeps its mean only where the later one did not reach
    np.testing.assert_allclose(planes.ab[:, 10, 20], gt[:, 10:13, 20:23].astype(np.float64).mean(axis=(1, 2)), atol=1e-6)


def test_sweep_draws_positions_like_the_official_normal_sampling():
    size, p = 128, 3
    pos = hint_sweep.draw_patches(20000, size, p, np.random.default_rng(0))
    assert pos[:, 2].tolist() == [p] * 20000
    assert pos[:, :2].min() >= 0 and pos[:, :2].max() <= size - p
    span = size - p + 1
    # int(clip(N(span/2, span/4))): centred (int truncation lowers the mean by ~0.5), clipped tails
    assert pos[:, :2].mean() == pytest.approx(span / 2 - 0.5, abs=0.6)
    assert 0.21 * span < pos[:, 0].std() < 0.25 * span  # a uniform draw would give 0.29 span
    assert np.array_equal(hint_sweep.draw_patches(5, size, p, hint_sweep.point_rng(0, 3, 5)),
                          hint_sweep.draw_patches(5, size, p, hint_sweep.point_rng(0, 3, 5)))


def test_hint_sweep_end_to_end(photos_dir, weights_pair, tmp_path, capsys):
    from instcolor import Colorizer, metrics

    _, new = weights_pair
    out = tmp_path / "sweep.json"
    code = hint_sweep.main(["--val", str(photos_dir), "--weights", str(new), "--size", str(SIZE), "--limit", "2",
                            "--points", "0,1,5,100", "--json", str(out)])
    assert code == 0
    text = capsys.readouterr().out
    assert "| 0 (automatic) |" in text and "| 100 |" in text and "+0.00" in text
    data = json.loads(out.read_text())
    assert data["patch"] == hint_sweep.patch_size(SIZE) == 2 and [r["points"] for r in data["rows"]] == [0, 1, 5, 100]
    assert data["rows"][0]["gain_db"] == 0.0
    # N = 0 is plain automatic colorization, scored at the processing size
    c = Colorizer.from_pretrained(str(new), backend="torch")
    auto = []
    for f in sorted(photos_dir.iterdir())[:2]:
        img = np.asarray(Image.open(f).convert("RGB"))
        _, _, gt_small = hint_sweep.ground_truth(img, SIZE, c.ops)
        auto.append(metrics.psnr(c.colorize(img, boxes=np.zeros((0, 4)), size=SIZE).rgb_processed, gt_small))
    assert data["rows"][0]["psnr"] == pytest.approx(np.mean(auto), abs=1e-9)
    assert data["rows"][3]["psnr"] != data["rows"][0]["psnr"]  # 100 revealed patches change the picture


# ============================================================================ suggestion_accuracy
def test_within_threshold_is_inclusive():
    hit, d = suggestion_accuracy.within(np.array([[50, 30, 30], [50, 6, 8]]), np.array([50, 0, 0]))
    assert hit and d == pytest.approx(10.0)
    hit, d = suggestion_accuracy.within(np.array([[50, 6, 8.01]]), np.array([50, 0, 0]))
    assert not hit and d > 10
    assert suggestion_accuracy.within(np.zeros((0, 3)), np.array([50, 0, 0])) == (False, math.inf)


def test_baseline_colours_are_the_most_frequent_bins_at_the_pixel_lightness():
    from instcolor.distribution import GRID

    def bin_of(a, b):
        return int(round((a + 110) / 10)) * GRID + int(round((b + 110) / 10))

    counts = np.zeros((20, 529))
    counts[11, bin_of(20, -10)] = 50   # L band 55..60
    counts[11, bin_of(0, 0)] = 30
    counts[11, bin_of(-30, 40)] = 10
    counts[3, bin_of(60, 60)] = 1000   # another band: must not be used
    lab = suggestion_accuracy.baseline_lab(counts, 57.0, 5.0, k=8)
    assert len(lab) == 3  # bins never seen are not offered
    np.testing.assert_allclose(lab[:, 0], 57.0, atol=0.6)
    np.testing.assert_allclose(lab[:, 1:], [[20, -10], [0, 0], [-30, 40]], atol=1.0)
    assert len(suggestion_accuracy.baseline_lab(counts, 57.0, 5.0, k=2)) == 2


def test_training_histogram_counts_and_cache(tmp_path):
    train = tmp_path / "train"
    train.mkdir()
    Image.fromarray(np.full((40, 30, 3), (200, 40, 40), np.uint8)).save(train / "a.png")
    Image.fromarray(np.full((20, 20, 3), (40, 200, 40), np.uint8)).save(train / "b.png")
    Image.fromarray(np.full((20, 20, 3), 128, np.uint8)).save(train / "grey.png")  # skipped: no colour
    cache = tmp_path / "out" / "cache.npz"
    counts = suggestion_accuracy.train_histogram(train, cache, 5.0, 64, progress=False)
    assert counts.sum() == 40 * 30 + 20 * 20 and np.count_nonzero(counts) == 2
    lab = common.rgb_to_lab(np.array([[200, 40, 40]], np.uint8))[0]
    band = int(suggestion_accuracy.l_band(lab[0], 5.0))
    from instcolor.distribution import ab_to_bins

    assert counts[band, int(ab_to_bins((lab[1:] / 110).reshape(1, 2, 1, 1).astype(np.float32))[0, 0, 0])] == 1200
    with np.load(cache) as z:
        np.savez(cache, counts=z["counts"] * 2, key=z["key"])
    assert suggestion_accuracy.train_histogram(train, cache, 5.0, 64, progress=False).sum() == 2 * 1600  # cached
    Image.fromarray(np.full((10, 10, 3), (40, 40, 200), np.uint8)).save(train / "c.png")
    assert suggestion_accuracy.train_histogram(train, cache, 5.0, 64, progress=False).sum() == 1700  # redone


def test_suggestion_accuracy_end_to_end(photos_dir, weights_pair, tmp_path, capsys):
    _, new = weights_pair
    args = ["--val", str(photos_dir), "--train", str(photos_dir), "--out", str(tmp_path / "s"), "--weights", str(new),
            "--size", str(SIZE), "--limit", "2", "--pixels", "4"]
    assert suggestion_accuracy.main(args) == 2
    assert "classification head" in capsys.readouterr().err and not (tmp_path / "s" / "result.json").exists()
    assert suggestion_accuracy.main(args + ["--allow-untrained-head"]) == 0
    text = capsys.readouterr().out
    assert "| suggest_colors (k = 8) |" in text and "most frequent training colours" in text
    res = json.loads((tmp_path / "s" / "result.json").read_text())
    assert res["summary"]["count"] == 8 and 0 <= res["summary"]["suggest"] <= 1
    assert (tmp_path / "s" / suggestion_accuracy.CACHE_NAME).is_file()
    # the one-pass suggestions are suggest_colors' own (checked at every photo's first pixel; here all)
    from instcolor import Colorizer

    c = Colorizer.from_pretrained(str(new), backend="torch")
    img = np.asarray(Image.open(sorted(photos_dir.iterdir())[0]).convert("RGB"))
    fast = suggestion_accuracy.photo_suggester(c, img, np.zeros((0, 4)), SIZE, 8)
    for x, y in [(0, 0), (100, 37), (255, 255)]:
        assert fast(x, y) == c.suggest_colors(img, x, y, k=8, size=SIZE, boxes=np.zeros((0, 4)))


# ============================================================================ global_hints_gain
def test_global_hints_gain_refuses_weights_without_the_branch(photos_dir, weights_pair, capsys):
    _, new = weights_pair
    assert global_hints_gain.main(["--val", str(photos_dir), "--weights", str(new), "--limit", "1"]) == 2
    err = capsys.readouterr().err
    assert "no SIGGRAPH'17 global hints branch" in err


def test_global_hints_gain_end_to_end(photos_dir, tmp_path, capsys):
    zero = _save(_global_nets(4, perturb=False), tmp_path / "zero")
    args = ["--val", str(photos_dir), "--size", str(SIZE), "--limit", "1"]
    assert global_hints_gain.main(args + ["--weights", str(zero), "--json", str(tmp_path / "z.json")]) == 0
    text = capsys.readouterr().out
    # a branch whose last layer is still zero adds nothing: every gain is exactly 0
    assert "Histogram revealed: +0.00 dB" in text and "not met" in text
    z = json.loads((tmp_path / "z.json").read_text())["psnr_full_and_processing"]
    assert set(z) == set(global_hints_gain.SETTINGS)
    assert all(z[s] == z["automatic"] for s in z)
    trained = _save(_global_nets(4, perturb=True), tmp_path / "perturbed")
    assert global_hints_gain.main(args + ["--weights", str(trained), "--json", str(tmp_path / "p.json")]) == 0
    capsys.readouterr()
    p = json.loads((tmp_path / "p.json").read_text())["psnr_full_and_processing"]
    assert p["histogram"] != p["automatic"] and p["saturation"] != p["automatic"]
    assert p["histogram"] != p["saturation"]


# ============================================================================ contact_sheet
def test_contact_sheet(photos_dir, weights_pair, tmp_path, capsys):
    _, new = weights_pair
    out = tmp_path / "sheet.png"
    code = contact_sheet.main([str(photos_dir), "-o", str(out), "--weights", str(new), "--size", str(SIZE),
                               "--limit", "2", "--height", "64", "--decode", "distribution"])
    assert code == 0
    sheet = np.asarray(Image.open(out).convert("RGB"))
    g = contact_sheet.GUTTER
    assert sheet.shape[0] == contact_sheet.HEADER + 2 * (64 + g) + g
    assert sheet.shape[1] == 3 * 64 + 4 * g  # the photos are square
    y0 = contact_sheet.HEADER
    grey = sheet[y0:y0 + 64, g:g + 64].astype(int)
    assert np.abs(grey.max(axis=2) - grey.min(axis=2)).max() <= 2
    first = sorted(photos_dir.iterdir())[0]
    original = np.asarray(Image.open(first).convert("RGB").resize((64, 64), Image.LANCZOS))
    np.testing.assert_array_equal(sheet[y0:y0 + 64, 2 * 64 + 3 * g:3 * 64 + 3 * g], original)
    ours = sheet[y0:y0 + 64, 64 + 2 * g:2 * 64 + 2 * g]
    assert not np.array_equal(ours, original) and not np.array_equal(ours, sheet[y0:y0 + 64, g:g + 64])
    assert contact_sheet.main([str(photos_dir), "-o", str(tmp_path / "no" / "s.png")]) == 2
    assert "does not exist" in capsys.readouterr().err

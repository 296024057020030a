"""Training path: data, hint simulation, the three stages, resume equivalence, CLI."""
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from instcolor.train import TrainConfig, TrainError, Trainer, simulate_hints, train
from instcolor.train import data as D
from instcolor.train.loop import ab_classes, huber_loss


def _photos(folder, n=10, seed=0, grey=0):
    """Generated colour photos: a coloured background with a differently coloured square, plus
    ``grey`` greyscale photos. Returns {stem: box of the square} for the colour ones."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    boxes = {}
    for i in range(n):
        h, w = int(rng.integers(40, 64)), int(rng.integers(40, 64))
        img = np.empty((h, w, 3), np.uint8)
        img[:] = rng.integers(0, 256, 3)
        y0, x0 = int(rng.integers(0, h // 2)), int(rng.integers(0, w // 2))
        y1, x1 = y0 + int(rng.integers(12, h // 2)), x0 + int(rng.integers(12, w // 2))
        img[y0:y1, x0:x1] = rng.integers(0, 256, 3)
        Image.fromarray(img).save(folder / f"p{i:02d}.png")
        boxes[f"p{i:02d}"] = [x0, y0, x1, y1]
    for i in range(grey):
        g = rng.integers(0, 256, (48, 48), dtype=np.uint8)
        Image.fromarray(np.stack([g] * 3, -1)).save(folder / f"grey{i}.png")
    return boxes


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    root = tmp_path_factory.mktemp("train_data")
    boxes = _photos(root / "photos", n=10, grey=2)
    (root / "boxes.json").write_text(json.dumps({k: {"boxes": [b], "scores": [0.9]} for k, b in boxes.items()}))
    return root


def _cfg(photos, out, **kw):
    base = dict(stage="full", data=str(photos / "photos"), out=str(out), width=0.125, size=32, batch_size=4,
                lr=1e-3, steps=4, amp="off", val_every=1000, val_images=4, checkpoint_seconds=1e9, seed=3,
                bn_batches=2)
    base.update(kw)
    return TrainConfig(**base)


# ----------------------------------------------------------------------------- data
def test_photo_index_skips_greyscale(photos, tmp_path):
    index = D.PhotoIndex.build(photos / "photos", cache=tmp_path / "idx.json", progress=False)
    assert len(index.names) == 10 and sorted(index.skipped) == ["grey0.png", "grey1.png"]
    assert all(v == "greyscale" for v in index.skipped.values())
    again = D.PhotoIndex.build(photos / "photos", cache=tmp_path / "idx.json", progress=False)
    assert again.names == index.names and again.sizes == index.sizes


def test_simulated_hints_follow_siggraph_rule():
    rng = np.random.default_rng(0)
    ab = rng.uniform(-0.5, 0.5, (2, 64, 64)).astype(np.float32)
    hint, mask = simulate_hints(ab, D.rng_for(1, 2), p=1.0)
    assert not hint.any() and (mask == -0.5).all()          # p = 1: automatic, no points
    counts = []
    for k in range(400):
        hint, mask = simulate_hints(ab, D.rng_for(5, k), p=0.125)
        counts.append((mask > 0).sum())
        # every hinted pixel holds the mean ab of a square patch, and only hinted pixels are set
        assert not hint[:, mask[0] < 0].any()
    # number of points is geometric with mean (1 - p) / p = 7: with 400 draws, some have none
    nonzero = np.array(counts) > 0
    assert 0.05 < 1 - nonzero.mean() < 0.22
    r, c, P = 10, 20, 5
    h2, m2 = D.patch_hints(ab, [(r, c, P)])
    np.testing.assert_allclose(h2[:, r, c], ab[:, r:r + P, c:c + P].mean(axis=(1, 2)), rtol=1e-5)
    assert (m2 > 0).sum() == P * P


def _clipped_normal_pmf(n, mu, sd):
    """P(int(clip(x, 0, n - 1)) == k), x ~ N(mu, sd), for k = 0..n-1 (the SIGGRAPH'17 location rule)."""
    cdf = np.array([0.5 * (1 + math.erf((k - mu) / (sd * math.sqrt(2)))) for k in range(1, n)])
    return np.diff(np.concatenate([[0.0], cdf, [1.0]]))


def _chi2_critical_999(df):
    """Upper 0.1% point of the chi-square distribution (Wilson-Hilferty; 82.7 for df 47)."""
    z = 3.0902  # the standard normal's upper 0.1% point
    return df * (1 - 2 / (9 * df) + z * math.sqrt(2 / (9 * df))) ** 3


def test_hint_locations_centre_weighted():
    """Hint locations follow SIGGRAPH'17: normal around the centre with sd = a quarter of the free
    range, per axis (here 48 rows, 80 columns), clipped into the image; not uniform."""
    H, W = 48, 80
    ab = np.random.default_rng(7).uniform(-0.5, 0.5, (2, H, W)).astype(np.float32)
    rows, cols = [], []
    for k in range(300):
        hint, mask = simulate_hints(ab, D.rng_for(11, k), p=0.125, patch_sizes=(1,))  # 1x1 patches: exact locations
        ys, xs = np.nonzero(mask[0] > 0)
        np.testing.assert_array_equal(hint[:, ys, xs], ab[:, ys, xs])  # a 1x1 patch holds that pixel's ab
        rows += ys.tolist()
        cols += xs.tolist()
    assert len(rows) > 1500  # about 7 points per draw
    for got, n in ((np.array(rows), H), (np.array(cols), W)):
        mu, sd = n / 2.0, n / 4.0  # (S - P + 1) / 2 and (S - P + 1) / 4 with P = 1
        # about 68% within one sd of the centre (uniform placement: 50%)
        assert 0.63 < np.mean(np.abs(got + 0.5 - mu) < sd) < 0.73
        # and the whole histogram fits the clipped normal (chi-square, df = n - 1, p < 0.001 fails)
        expected = len(got) * _clipped_normal_pmf(n, mu, sd)
        chi2 = float((((np.bincount(got, minlength=n) - expected) ** 2) / expected).sum())
        assert chi2 < _chi2_critical_999(n - 1), (n, chi2)


def test_training_boxes_clip_filter_and_top8():
    det = np.array([[-5, -5, 30, 30], [0, 0, 4, 40], [10, 10, 50, 50]] + [[i, i, i + 20, i + 20] for i in range(8)], np.float32)
    scores = np.arange(len(det), dtype=np.float32)
    b = D.training_boxes(det, scores, (48, 48))
    assert len(b) == 8 and b.min() >= 0 and b[:, 2].max() <= 48 and b[:, 3].max() <= 48
    assert not any((x1 - x0) < D.MIN_BOX_SIDE for x0, _, x1, _ in b.tolist())


def test_fusion_sample_flip_moves_boxes():
    rgb = np.zeros((40, 60, 3), np.uint8)
    rgb[5:25, 0:20] = (255, 0, 0)
    boxes = np.array([[0, 5, 20, 25]])
    for k in range(20):
        s = D.make_fusion_sample(rgb, boxes, 32, D.rng_for(0, k), hint_p=1.0)
        x0, y0, x1, y1 = s.boxes[0].tolist()
        assert (x0, x1) in ((0, 20), (40, 60)) and (y0, y1) == (5, 25)
        # the red square is where the (possibly flipped) box says: crop ab is strongly red
        assert s.crop_L.shape == (1, 1, 32, 32) and np.isfinite(s.crop_L).all()
        col = 8 if x0 == 0 else 24
        assert s.ab[0, 10, col] > 0.3  # a* of red


def test_losses():
    pred = torch.zeros(1, 2, 2, 2)
    target = torch.full((1, 2, 2, 2), 0.5)
    # smooth-L1 (delta 1/110) per channel, summed over channels, mean over pixels, times 10
    d = 1 / 110
    assert huber_loss(pred, target).item() == pytest.approx(10 * 2 * (0.5 - 0.5 * d), rel=1e-6)
    small = torch.full((1, 2, 2, 2), 0.002)
    assert huber_loss(pred, small).item() == pytest.approx(10 * 2 * 0.5 * 0.002 ** 2 / d, rel=1e-5)
    ab = torch.tensor([-1.0, 0.0]).reshape(1, 2, 1, 1)
    assert ab_classes(ab).item() == 0 * 23 + 11
    assert ab_classes(torch.ones(1, 2, 1, 1)).item() == 22 * 23 + 22


# ----------------------------------------------------------------------------- stages
def test_full_stage_lowers_loss_and_loads_into_colorizer(photos, tmp_path):
    from instcolor import Colorizer

    cfg = _cfg(photos, tmp_path / "full", steps=40, val_every=40)
    t = Trainer(cfg, progress=False)
    batch = t.make_batch(0)
    with torch.no_grad():
        before, _ = t.forward(batch, train=True)
    last = t.run()
    sd = {k: v.clone() for k, v in t.nets["full"].state_dict().items()}  # as saved
    with torch.no_grad():
        after, _ = t.forward(batch, train=True)
    assert after.item() < 0.7 * before.item(), (before.item(), after.item())
    assert last["step"] == 40 and "val_loss" in last
    assert (tmp_path / "full" / "samples" / "latest.png").is_file()
    log = [json.loads(x) for x in (tmp_path / "full" / "log.jsonl").read_text().splitlines()]
    assert log[-1]["step"] == 40
    c = Colorizer.from_pretrained(tmp_path / "full", backend="torch")
    assert c.backend.width == 0.125
    for k, v in c.backend.full.state_dict().items():
        assert torch.equal(v, sd[k].cpu()), k
    img = np.asarray(Image.open(photos / "photos" / "p00.png"))
    assert c.default_size == 32  # a run folder records its training size; colorize uses it by default
    r = c.colorize(img)
    assert r.rgb.shape == img.shape and r.rgb_processed.shape == (32, 32, 3)
    from instcolor.models import save_bundle

    save_bundle(tmp_path / "bundle", {k: getattr(c.backend, k) for k in ("full", "instance", "fusion")},
                info={"size": 40})
    assert Colorizer.from_pretrained(tmp_path / "bundle").default_size == 40
    save_bundle(tmp_path / "bundle2", {k: getattr(c.backend, k) for k in ("full", "instance", "fusion")})
    assert Colorizer.from_pretrained(tmp_path / "bundle2").default_size == 256
    # the instance file of a full-stage run is the full-image net (the next stage's starting point)
    for k, v in c.backend.instance.state_dict().items():
        assert torch.equal(v, sd[k].cpu()), k


def test_resume_equals_uninterrupted(photos, tmp_path):
    straight = Trainer(_cfg(photos, tmp_path / "a", steps=6), progress=False)
    straight.run()
    first = Trainer(_cfg(photos, tmp_path / "b", steps=3), progress=False)
    first.run()
    resumed = Trainer(_cfg(photos, tmp_path / "b", steps=6), progress=False)
    assert resumed.step == 3
    resumed.run()
    a, b = straight.nets["full"].state_dict(), resumed.nets["full"].state_dict()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert resumed.step == 6


def test_resume_refuses_other_settings(photos, tmp_path):
    Trainer(_cfg(photos, tmp_path / "r", steps=1), progress=False).run()
    with pytest.raises(TrainError, match="size"):
        Trainer(_cfg(photos, tmp_path / "r", steps=2, size=48), progress=False)


def test_instance_and_fusion_stages(photos, tmp_path):
    boxes = str(photos / "boxes.json")
    train(_cfg(photos, tmp_path / "full", steps=2), progress=False)
    with pytest.raises(TrainError, match="init"):
        Trainer(_cfg(photos, tmp_path / "inst", stage="instance", boxes=boxes), progress=False)
    inst = Trainer(_cfg(photos, tmp_path / "inst", stage="instance", boxes=boxes, init=str(tmp_path / "full"),
                        steps=3), progress=False)
    assert len(inst.items) == 10  # one box per photo; greyscale photos skipped
    full_before = {k: v.clone() for k, v in inst.nets["full"].state_dict().items()}
    start = {k: v.clone() for k, v in inst.nets["instance"].state_dict().items()}
    for k, v in start.items():  # the instance net starts from the full-image net
        assert torch.equal(v, full_before[k]), k
    inst.run()
    changed = [k for k, v in inst.nets["instance"].state_dict().items() if not torch.equal(v, start[k])]
    assert changed and all(torch.equal(v, full_before[k]) for k, v in inst.nets["full"].state_dict().items())

    fus = Trainer(_cfg(photos, tmp_path / "fus", stage="fusion", boxes=boxes, init=str(tmp_path / "inst"),
                       steps=3), progress=False)
    before = {k: v.clone() for k, v in fus.nets["fusion"].state_dict().items()}
    inst_before = {k: v.clone() for k, v in fus.nets["instance"].state_dict().items()}
    fus.run()
    after = fus.nets["fusion"].state_dict()
    moved = {k for k in after if not torch.equal(after[k], before[k])}
    assert moved and all(k.startswith("weight_layer") for k in moved)  # only the blend blocks train
    assert not any(k.startswith("weight_layerout") for k in moved)
    full_sd = fus.nets["full"].state_dict()
    for k, v in full_sd.items():  # the fusion backbone is the full-image net
        assert torch.equal(after[k], v), k
    assert all(torch.equal(v, inst_before[k]) for k, v in fus.nets["instance"].state_dict().items())

    from instcolor import Colorizer

    c = Colorizer.from_pretrained(tmp_path / "fus")
    img = np.asarray(Image.open(photos / "photos" / "p01.png"))
    r = c.colorize(img, boxes=[json.loads((photos / "boxes.json").read_text())["p01"]["boxes"][0]], size=32)
    assert r.rgb.shape == img.shape and len(r.boxes) == 1


def test_bad_settings_raise(photos, tmp_path):
    with pytest.raises(TrainError, match="stage"):
        Trainer(_cfg(photos, tmp_path / "x", stage="bogus"), progress=False)
    with pytest.raises(TrainError, match="multiple of 8"):
        Trainer(_cfg(photos, tmp_path / "x", size=30), progress=False)
    with pytest.raises(FileNotFoundError, match="no such folder"):
        Trainer(_cfg(photos, tmp_path / "x", data=str(tmp_path / "nowhere")), progress=False)


def test_cli_train_and_detect_boxes(photos, tmp_path, capsys):
    from instcolor.cli import main

    rc = main(["train", "--stage", "full", "--data", str(photos / "photos"), "--out", str(tmp_path / "run"),
               "--width", "0.125", "--size", "32", "--batch-size", "2", "--steps", "2", "--amp", "off"])
    assert rc == 0
    assert {"latest_net_G.pth", "latest_net_GF.pth", "latest_net_GComp.pth", "state.pt"} <= {
        p.name for p in (tmp_path / "run").iterdir()}
    # the options reached the run: width, training size, number of steps
    from instcolor import Colorizer

    c = Colorizer.from_pretrained(tmp_path / "run", backend="torch")
    assert c.backend.width == 0.125 and c.default_size == 32
    log = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert log[-1]["step"] == 2
    rc = main(["train", "--stage", "instance", "--data", str(photos / "photos"), "--out", str(tmp_path / "i")])
    assert rc == 2 and "init" in capsys.readouterr().err


def test_classification_head_loss_trains_the_head(photos, tmp_path):
    plain = Trainer(_cfg(photos, tmp_path / "p", steps=2), progress=False)
    head0 = {k: v.clone() for k, v in plain.nets["full"].model_class.state_dict().items()}
    plain.run()
    assert all(torch.equal(v, head0[k]) for k, v in plain.nets["full"].model_class.state_dict().items())
    t = Trainer(_cfg(photos, tmp_path / "c", steps=2, class_weight=1.0), progress=False)
    batch = t.make_batch(0)
    with torch.no_grad():
        with_ce, _ = t.forward(batch, train=True)
        t.cfg.class_weight = 0.0
        without, _ = t.forward(batch, train=True)
        t.cfg.class_weight = 1.0
    # cross-entropy over 529 bins of an untrained head is about ln(529) = 6.3
    assert 3.0 < with_ce.item() - without.item() < 12.0
    t.run()
    assert any(not torch.equal(v, head0[k]) for k, v in t.nets["full"].model_class.state_dict().items())


def test_final_batchnorm_statistics(photos, tmp_path):
    t = Trainer(_cfg(photos, tmp_path / "bn", steps=3, bn_batches=0), progress=False)
    t.run()
    bn = t.nets["full"].model1[-1]
    trained = bn.running_mean.clone()
    assert not any("bn_recalibrated" in e for e in t.history)
    # the same run asked for the statistics afterwards: no training step, the statistics replaced
    again = Trainer(_cfg(photos, tmp_path / "bn", steps=3, bn_batches=4), progress=False)
    last = again.run()
    assert again.step == 3 and last["bn_recalibrated"] == 4 and "val_loss" in last
    bn2 = again.nets["full"].model1[-1]
    calibrated = bn2.running_mean.clone()
    assert not torch.allclose(calibrated, trained)
    # = the plain mean over the 4 batches' per-batch means of that layer's input
    feats = []
    again.nets["full"].train()
    hook = bn2.register_forward_hook(lambda m, i, o: feats.append(i[0].mean(dim=(0, 2, 3))))
    with torch.no_grad():
        for k in range(4):
            again.forward(again.make_batch(3 + k), train=True)
    hook.remove()
    torch.testing.assert_close(calibrated, torch.stack(feats[:4]).mean(0), rtol=1e-4, atol=1e-6)
    assert Trainer(_cfg(photos, tmp_path / "bn", steps=3, bn_batches=4), progress=False).bn_calibrated


def _blend_state(fusion):
    return {k: v.clone() for k, v in fusion.state_dict().items() if k.startswith("weight_layer")}


def test_fusion_stage_keep_blend_starts_from_init_blocks(tmp_path):
    """--keep-blend: the fusion stage starts from init's blend blocks (on init's full-image backbone);
    without it the blocks start fresh."""
    from instcolor.models import load_nets, save_official
    from instcolor.models.fusion import FusionNet
    from instcolor.models.backbone import SIGGRAPHBackbone
    from instcolor.models.backbone import InstanceNet
    from instcolor.train.loop import build_nets

    torch.manual_seed(1)
    full, fusion = SIGGRAPHBackbone(0.25), FusionNet(0.25)
    nets = {"full": full, "instance": InstanceNet(0.25), "fusion": fusion}
    save_official(tmp_path / "init", nets)
    init_blend = _blend_state(load_nets(tmp_path / "init")["fusion"])
    cfg = dict(stage="fusion", data=str(tmp_path), out=str(tmp_path / "out"), boxes="x", init=str(tmp_path / "init"))
    kept = build_nets(TrainConfig(**cfg, keep_blend=True))
    fresh = build_nets(TrainConfig(**cfg))
    for k, v in init_blend.items():
        assert torch.equal(_blend_state(kept["fusion"])[k], v), k
    assert any(not torch.equal(_blend_state(fresh["fusion"])[k], v) for k, v in init_blend.items())
    # the backbone is the full-image net's in both cases
    for k, v in full.state_dict().items():
        assert torch.equal(kept["fusion"].state_dict()[k], v), k


def test_worker_processes_make_the_same_samples_and_weights(photos, tmp_path):
    from instcolor.train.loop import SampleFeeder

    t = Trainer(_cfg(photos, tmp_path / "w0", steps=5, global_hints=True, global_reveal=0.5, adversarial=True,
                     warmup_steps=1), progress=False)
    feeder = SampleFeeder(t, workers=2, ahead=2)
    try:
        for step in (0, 3, 1):  # any order, including steps queued ahead
            a, b = t.make_batch(step), feeder.get(step, 5)
            assert set(a) == set(b)
            for k in a:
                if isinstance(a[k], torch.Tensor):
                    assert torch.equal(a[k], b[k]), (step, k)
    finally:
        feeder.close()
    straight = Trainer(_cfg(photos, tmp_path / "t0", steps=4), progress=False)
    straight.run()
    forked = Trainer(_cfg(photos, tmp_path / "t2", steps=4, workers=2), progress=False)
    forked.run()
    for k, v in straight.nets["full"].state_dict().items():
        assert torch.equal(v, forked.nets["full"].state_dict()[k]), k
    with pytest.raises(TrainError, match="workers"):
        Trainer(_cfg(photos, tmp_path / "bad", workers=-1), progress=False)


def test_sample_workers_end_even_when_the_parent_handles_sigterm(photos, tmp_path):
    """Pool.terminate() ends workers with SIGTERM. A parent with a Python SIGTERM handler (Ray's
    driver installs one) must not hand it to the forked workers, or close() waits forever."""
    import os
    import signal
    import threading

    from instcolor.train.loop import SampleFeeder

    old = signal.signal(signal.SIGTERM, lambda *a: None)  # a handler that does not exit
    try:
        t = Trainer(_cfg(photos, tmp_path / "w", steps=2), progress=False)
        feeder = SampleFeeder(t, workers=1, ahead=1)
        feeder.get(0, 2)
        workers = [p.pid for p in feeder.pool._pool]
        closed = threading.Event()
        threading.Thread(target=lambda: (feeder.close(), closed.set()), daemon=True).start()
        ok = closed.wait(30)
        if not ok:
            for pid in workers:  # do not leave them behind
                os.kill(pid, signal.SIGKILL)
        assert ok, "SampleFeeder.close() hung: a worker kept the parent's SIGTERM handler"
    finally:
        signal.signal(signal.SIGTERM, old)


def test_time_limit_finishes_the_run_and_it_can_go_on(photos, tmp_path, monkeypatch):
    import instcolor.train.loop as loop

    clock = iter(range(0, 10**6, 10))  # every reading of the clock is 10 s after the one before
    monkeypatch.setattr(loop.time, "monotonic", lambda: float(next(clock)))
    t = Trainer(_cfg(photos, tmp_path / "tl", steps=50, time_limit=25, bn_batches=2), progress=False)
    last = t.run()
    assert 1 <= t.step < 50 and t.cfg.steps == t.step and t.bn_calibrated
    log = [json.loads(line) for line in (tmp_path / "tl" / "log.jsonl").read_text().splitlines()]
    assert {"time_limit_s": 25, "steps_from": 50}.items() <= log[0].items()
    assert "val_loss" in last  # finished like --steps: BatchNorm statistics, validation, checkpoint
    monkeypatch.undo()
    stopped = t.step
    more = Trainer(_cfg(photos, tmp_path / "tl", steps=stopped + 2), progress=False)
    assert more.step == stopped
    more.run()
    assert more.step == stopped + 2
    with pytest.raises(TrainError, match="time_limit"):
        Trainer(_cfg(photos, tmp_path / "bad2", time_limit=-1), progress=False)

"""Adversarial training (SCGAN-style, WGAN-GP): saliency, gradient penalty, critics in the trainer."""
import json

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image

from instcolor.train import TrainConfig, TrainError, Trainer
from instcolor.train import data as D
from instcolor.train.adversarial import (GP_LAMBDA, Adversary, PatchDiscriminator, critic_inputs, critic_score,
                                         gradient_penalty)
from instcolor.train.saliency import gaussian_blur, spectral_residual


def _striped_with_blob(h, w, centre, radius, seed=0):
    """Grey image (H, W) in [-0.5, 0.5]: a bright striped, slightly noisy background and one dark
    disc (the odd one out). -> (image, disc mask)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    img = 0.3 + 0.1 * np.sin(xx * 2 * np.pi / 8) + 0.02 * rng.standard_normal((h, w))
    disc = (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 < radius ** 2
    img[disc] = 0.0
    return img.astype(np.float32), disc


def _photos(folder, n=8, seed=0):
    """Colour photos with texture and a differently coloured disc."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        h, w = int(rng.integers(48, 80)), int(rng.integers(48, 80))
        yy, xx = np.mgrid[:h, :w]
        img = np.empty((h, w, 3), np.float64)
        img[:] = rng.integers(40, 216, 3)
        img += 30 * np.sin(xx * 2 * np.pi / rng.integers(5, 12))[..., None]
        disc = (yy - rng.integers(h // 4, 3 * h // 4)) ** 2 + (xx - rng.integers(w // 4, 3 * w // 4)) ** 2 < (h // 6) ** 2
        img[disc] = rng.integers(0, 256, 3)
        Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(folder / f"p{i:02d}.png")
    return folder


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return _photos(tmp_path_factory.mktemp("adv_data") / "photos")


def _cfg(photos, out, **kw):
    base = dict(stage="full", data=str(photos), out=str(out), width=0.25, size=32, batch_size=4, lr=1e-3,
                steps=3, amp="off", val_every=1000, val_images=2, checkpoint_seconds=1e9, seed=5, bn_batches=0,
                adversarial=True, adv_weight=0.5, warmup_steps=0, d_lr=1e-3)
    base.update(kw)
    return TrainConfig(**base)


def _clone(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _changed(before, module):
    return [k for k, v in module.state_dict().items() if not torch.equal(v, before[k])]


# ----------------------------------------------------------------------------- saliency
def test_saliency_shape_range_and_salient_blob():
    img, disc = _striped_with_blob(64, 64, (40, 20), 7)
    sal = spectral_residual(img[None])
    assert sal.shape == (1, 64, 64) and sal.dtype == np.float32
    assert sal.min() >= 0.0 and sal.max() == pytest.approx(1.0)
    sal = sal[0]
    # the odd disc stands out of the repeated stripes (and is darker: a map that follows the
    # image's own energy instead of the spectral residual would be low there)
    assert sal[disc].mean() > 3 * sal[~disc].mean()
    r, c = np.unravel_index(np.argmax(sal), sal.shape)
    assert (r - 40) ** 2 + (c - 20) ** 2 < 12 ** 2
    # a region map, smoothed (unsmoothed the step-to-step change is about twice this)
    assert np.abs(np.diff(sal, axis=0)).mean() < 0.016 and np.abs(np.diff(sal, axis=1)).mean() < 0.016
    # other sizes and shapes keep theirs; scaling the intensity L + 0.5 does not matter
    img2, disc2 = _striped_with_blob(48, 80, (12, 60), 6, seed=1)
    sal2 = spectral_residual(img2)
    assert sal2.shape == (48, 80) and sal2[disc2].mean() > 3 * sal2[~disc2].mean()
    np.testing.assert_allclose(spectral_residual(3 * (img2 + 0.5) - 0.5), sal2, atol=1e-4)


def test_gaussian_blur_impulse_response():
    x = np.zeros((41, 41))
    x[20, 20] = 1.0
    y = gaussian_blur(x, 3.0)
    t = np.arange(41) - 20.0
    assert y.sum() == pytest.approx(1.0) and y.argmax() == 20 * 41 + 20
    assert (y.sum(0) * t ** 2).sum() == pytest.approx(9.0, rel=0.03)  # variance sigma^2
    np.testing.assert_allclose(y, y.T, atol=1e-15)
    edge = np.zeros((9, 9))
    edge[0, 4] = 1.0  # mirrored borders keep the mass
    assert gaussian_blur(edge, 1.0).sum() == pytest.approx(1.0)
    np.testing.assert_array_equal(gaussian_blur(x, 0), x)


def test_saliency_flat_and_bad_input():
    np.testing.assert_array_equal(spectral_residual(np.full((32, 40), 0.2, np.float32)), np.ones((32, 40)))
    with pytest.raises(ValueError, match=r"\(2, 8, 8\)"):
        spectral_residual(np.zeros((2, 8, 8)))
    with pytest.raises(ValueError, match="expected"):
        spectral_residual(np.zeros(8))


# ----------------------------------------------------------------------------- gradient penalty
class _Linear(nn.Module):
    """score map = w . x + b per pixel (a 1 x 1 convolution)."""

    def __init__(self, w):
        super().__init__()
        self.conv = nn.Conv2d(3, 1, 1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor(w, dtype=torch.float32).reshape(1, 3, 1, 1))
            self.conv.bias.fill_(0.7)

    def forward(self, x):
        return self.conv(x)


def test_gradient_penalty_linear_critic_by_hand():
    # score(x) = mean over the H*W pixels of w . x + b: gradient w / (H W) at every pixel,
    # norm |w| / sqrt(H W) = 5 / 4 for w = (3, 4, 0), H = W = 4 -> 10 * (1.25 - 1)^2 = 0.625
    torch.manual_seed(0)
    real, fake = torch.randn(3, 3, 4, 4), torch.randn(3, 3, 4, 4)
    gp = gradient_penalty(_Linear([3.0, 4.0, 0.0]), real, fake, torch.tensor([0.1, 0.5, 0.9]))
    assert float(gp.detach()) == pytest.approx(GP_LAMBDA * (5 / 4 - 1) ** 2, rel=1e-5)
    assert GP_LAMBDA == 10.0
    gp = gradient_penalty(_Linear([1.0, 2.0, 2.0]), real, fake, torch.tensor([0.3, 0.3, 0.3]))
    assert float(gp.detach()) == pytest.approx(10 * (3 / 4 - 1) ** 2, rel=1e-5)


class _Square(nn.Module):
    def forward(self, x):
        return x.pow(2).sum(dim=1, keepdim=True)


def test_gradient_penalty_at_the_interpolates():
    # score(x) = mean_p |x_p|^2 -> gradient 2 x / P, so the penalty depends on where the
    # interpolate eps * real + (1 - eps) * fake lies; computed by hand in float64
    rng = np.random.default_rng(1)
    real, fake = rng.standard_normal((2, 3, 4, 6)), rng.standard_normal((2, 3, 4, 6))
    eps = np.array([0.2, 0.75])
    x = eps[:, None, None, None] * real + (1 - eps[:, None, None, None]) * fake
    norms = np.sqrt(((2 * x / 24) ** 2).reshape(2, -1).sum(1))
    want = 10 * ((norms - 1) ** 2).mean()
    gp = gradient_penalty(_Square(), torch.tensor(real), torch.tensor(fake), torch.tensor(eps))
    assert float(gp.detach()) == pytest.approx(want, rel=1e-9)
    # and it trains the critic: the graph is kept
    lin = _Linear([3.0, 4.0, 0.0])
    gradient_penalty(lin, torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4), torch.tensor([0.5, 0.5])).backward()
    assert lin.conv.weight.grad is not None and lin.conv.weight.grad.abs().sum() > 0


def test_critic_shapes_and_inputs():
    d = PatchDiscriminator(0.25)
    assert d(torch.zeros(2, 3, 32, 32)).shape == (2, 1, 2, 2)
    assert d(torch.zeros(1, 3, 64, 48)).shape == (1, 1, 6, 4)
    assert critic_score(d, torch.zeros(2, 3, 32, 32)).shape == (2,)
    small, big = (sum(p.numel() for p in PatchDiscriminator(w).parameters()) for w in (0.25, 1.0))
    assert small < big / 8  # channels scale with the width
    L, ab, sal = torch.rand(2, 1, 8, 8), torch.rand(2, 2, 8, 8), torch.rand(2, 1, 8, 8)
    whole, salient = critic_inputs(L, ab, sal)
    assert torch.equal(whole, torch.cat([L, ab], 1)) and torch.equal(salient, torch.cat([L, ab], 1) * sal)


# ----------------------------------------------------------------------------- trainer
def test_saliency_in_training_batches_is_of_the_grey_input(photos, tmp_path):
    t = Trainer(_cfg(photos, tmp_path / "r"), progress=False)
    batch = t.make_batch(0)
    assert batch["saliency"].shape == (4, 1, 32, 32)
    for i in range(4):
        np.testing.assert_array_equal(batch["saliency"][i].numpy(), spectral_residual(batch["L"][i].numpy()))
    plain = Trainer(_cfg(photos, tmp_path / "p", adversarial=False), progress=False)
    assert "saliency" not in plain.make_batch(0)


def test_adversarial_steps_train_critics_and_generator(photos, tmp_path):
    t = Trainer(_cfg(photos, tmp_path / "r", steps=3, val_every=3), progress=False)
    g0, d0 = _clone(t.nets["full"]), _clone(t.adversary.critics)
    last = t.run()
    assert _changed(g0, t.nets["full"]) and _changed(d0, t.adversary.critics)
    assert all(k in _changed(d0, t.adversary.critics) for k in d0)  # both critics, every layer
    for k in ("adv_d_loss", "adv_g_loss", "adv_wdist_whole", "adv_wdist_salient", "adv_gp_whole", "adv_gp_salient"):
        assert np.isfinite(last[k]), k
    state = torch.load(tmp_path / "r" / "state.pt", weights_only=True)
    assert set(state["adversary"]) == {"critics", "opt", "stats"} and state["adversary"]["opt"]["state"]
    # the critics are not part of the shipped weights
    from instcolor.models import load_nets

    nets = load_nets(tmp_path / "r")
    for k, v in nets["full"].state_dict().items():
        assert torch.equal(v, t.nets["full"].state_dict()[k].cpu()), k
    saved = torch.load(tmp_path / "r" / "latest_net_GComp.pth", weights_only=True)
    assert not any("critic" in k or k.startswith(("whole.", "salient.")) for k in saved)


def test_adversarial_resume_equals_uninterrupted(photos, tmp_path):
    kw = dict(warmup_steps=2)
    straight = Trainer(_cfg(photos, tmp_path / "a", steps=4, **kw), progress=False)
    straight.run()
    Trainer(_cfg(photos, tmp_path / "b", steps=2, **kw), progress=False).run()
    resumed = Trainer(_cfg(photos, tmp_path / "b", steps=4, **kw), progress=False)
    assert resumed.step == 2
    resumed.run()
    for a, b in ((straight.nets["full"], resumed.nets["full"]), (straight.adversary.critics, resumed.adversary.critics)):
        sa, sb = a.state_dict(), b.state_dict()
        for k in sa:
            assert torch.equal(sa[k], sb[k]), k
    oa, ob = straight.adversary.opt.state_dict()["state"], resumed.adversary.opt.state_dict()["state"]
    assert oa.keys() == ob.keys()
    for k in oa:
        assert torch.equal(oa[k]["exp_avg_sq"], ob[k]["exp_avg_sq"]), k


def test_warmup_uses_the_reconstruction_loss_only(photos, tmp_path):
    plain = Trainer(_cfg(photos, tmp_path / "plain", adversarial=False), progress=False)
    plain.run()
    warm = Trainer(_cfg(photos, tmp_path / "warm", warmup_steps=3), progress=False)
    d0 = _clone(warm.adversary.critics)
    warm.run()
    for k, v in plain.nets["full"].state_dict().items():
        assert torch.equal(v, warm.nets["full"].state_dict()[k]), k
    assert _changed(d0, warm.adversary.critics)  # the critics train during the warm-up
    # control: with the warm-up over after one step, the adversarial loss moves the generator
    early = Trainer(_cfg(photos, tmp_path / "early", warmup_steps=2), progress=False)
    early.run()
    assert _changed(plain.nets["full"].state_dict(), early.nets["full"])


def test_fusion_stage_adversarial_trains_blend_blocks_only(photos, tmp_path):
    boxes = {f"p{i:02d}": {"boxes": [[4, 4, 40, 40]], "scores": [0.9]} for i in range(8)}
    (tmp_path / "boxes.json").write_text(json.dumps(boxes))
    Trainer(_cfg(photos, tmp_path / "full", steps=1, adversarial=False), progress=False).run()
    fus = Trainer(_cfg(photos, tmp_path / "fus", stage="fusion", boxes=str(tmp_path / "boxes.json"),
                       init=str(tmp_path / "full"), steps=2, batch_size=2), progress=False)
    before, d0 = _clone(fus.nets["fusion"]), _clone(fus.adversary.critics)
    fus.run()
    changed = _changed(before, fus.nets["fusion"])
    assert changed and all(k.startswith("weight_layer") for k in changed)
    assert _changed(d0, fus.adversary.critics)


def test_adversarial_settings(photos, tmp_path):
    with pytest.raises(TrainError, match="size >= 32"):
        Trainer(_cfg(photos, tmp_path / "s", size=16), progress=False)
    with pytest.raises(TrainError, match="d_lr"):
        Trainer(_cfg(photos, tmp_path / "s", d_lr=0.0), progress=False)
    with pytest.raises(TrainError, match="warmup_steps"):
        Trainer(_cfg(photos, tmp_path / "s", warmup_steps=-1), progress=False)
    Trainer(_cfg(photos, tmp_path / "r", steps=1), progress=False).run()
    with pytest.raises(TrainError, match="adversarial"):
        Trainer(_cfg(photos, tmp_path / "r", steps=2, adversarial=False), progress=False)
    with pytest.raises(TrainError, match="adv_weight"):
        Trainer(_cfg(photos, tmp_path / "r", steps=2, adv_weight=0.1), progress=False)


def test_resume_of_a_run_from_before_the_option(photos, tmp_path):
    """A run folder whose config.json predates --adversarial resumes as a non-adversarial run."""
    Trainer(_cfg(photos, tmp_path / "old", steps=1, adversarial=False), progress=False).run()
    f = tmp_path / "old" / "config.json"
    cfg = json.loads(f.read_text())
    for k in ("adversarial", "adv_weight", "warmup_steps", "d_lr"):
        del cfg[k]
    f.write_text(json.dumps(cfg))
    t = Trainer(_cfg(photos, tmp_path / "old", steps=2, adversarial=False), progress=False)
    assert t.step == 1
    with pytest.raises(TrainError, match="adversarial"):
        Trainer(_cfg(photos, tmp_path / "old", steps=2), progress=False)


def test_cli_adversarial_options(photos, tmp_path):
    from instcolor.cli import main

    out = tmp_path / "cli"
    rc = main(["train", "--stage", "full", "--data", str(photos), "--out", str(out), "--width", "0.25", "--size", "32",
               "--batch-size", "2", "--steps", "2", "--amp", "off", "--bn-batches", "0", "--val-images", "2",
               "--adversarial", "--adv-weight", "0.2", "--warmup-steps", "1", "--d-lr", "2e-4"])
    assert rc == 0
    cfg = json.loads((out / "config.json").read_text())
    assert (cfg["adversarial"], cfg["adv_weight"], cfg["warmup_steps"], cfg["d_lr"]) == (True, 0.2, 1, 2e-4)
    state = torch.load(out / "state.pt", weights_only=True)
    assert state["adversary"]["opt"]["param_groups"][0]["lr"] == 2e-4


def test_adversary_keeps_global_rng():
    torch.manual_seed(123)
    want = torch.rand(3)
    torch.manual_seed(123)
    Adversary(0.25, 1e-4, seed=0)
    assert torch.equal(torch.rand(3), want)


def test_critics_learn_to_prefer_real_and_generator_loss_follows():
    """Critic steps raise the critics' score of real over fake colours; the generator's loss is
    then lower for real colours than for fake ones (so minimising it moves towards real)."""
    torch.manual_seed(0)
    adv = Adversary(0.25, 1e-3, seed=1)
    L, sal = torch.rand(2, 1, 32, 32) - 0.5, torch.rand(2, 1, 32, 32)
    real, fake = torch.full((2, 2, 32, 32), 0.3), torch.zeros(2, 2, 32, 32)
    eps = torch.full((2,), 0.5)
    first = adv.critic_step(L, real, fake, sal, eps)
    for _ in range(15):
        last = adv.critic_step(L, real, fake, sal, eps)
    for name in ("whole", "salient"):
        assert last[f"adv_wdist_{name}"] > max(first[f"adv_wdist_{name}"], 0.0) + 0.05, name
    g_fake, g_real = adv.generator_loss(L, fake, sal), adv.generator_loss(L, real, sal)
    assert float(g_real) < float(g_fake)
    whole, salient = critic_inputs(L, fake, sal)
    want = -(critic_score(adv.critics["whole"], whole).mean() + critic_score(adv.critics["salient"], salient).mean())
    assert float(g_fake) == pytest.approx(float(want), rel=1e-6)
    ab = fake.clone().requires_grad_(True)
    adv.opt.zero_grad(set_to_none=True)
    adv.generator_loss(L, ab, sal).backward()
    assert ab.grad.abs().sum() > 0 and all(p.grad is None or not p.grad.abs().sum() for p in adv.critics.parameters())

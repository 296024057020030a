"""Saliency-guided adversarial training (SCGAN, Zhao et al., TCSVT 2020) with WGAN-GP.

Two PatchGAN critics judge the colorization: one sees the whole image as the nets see it, the
(L, ab) planes (N, 3, S, S); the other the *saliency-weighted* image, the same planes multiplied
by a saliency map (N, 1, S, S) of the grey input (:mod:`instcolor.train.saliency`). Both are
trained as Wasserstein critics with the gradient penalty of Gulrajani et al. 2017 (lambda 10);
the generator adds ``-(mean critic score)`` of both, weighted, to its reconstruction loss once
its warm-up is over (the trainer decides when; see :class:`instcolor.train.loop.Trainer`).

Real samples pair the input L with the ground truth's ab, fake ones with the prediction's, so
the critics judge colour given the lightness. The critics are training-only: they live in the
run's ``state.pt`` (with their optimizer), never in the weights files or bundles.

Critic score of a sample: the mean of its patch map (N, 1, h, w) -> (N,). The penalty asks that
score's gradient with respect to the (N, 3, S, S) input to have norm 1 at random interpolates
of real and fake samples, so it does not depend on how many patches the resolution gives.
"""
from __future__ import annotations

import torch
import torch.nn as nn

GP_LAMBDA = 10.0            # WGAN-GP penalty weight (Gulrajani et al. 2017; SCGAN)
BETAS = (0.5, 0.9)          # Adam betas for WGAN-GP critics (Gulrajani et al. 2017 use 0.5/0 and 0.9)
MIN_SIZE = 32               # the critics halve the resolution three times and end with two 4 x 4 convs
IN_CHANNELS = 3             # (L, ab)


def critic_channels(width: float) -> list[int]:
    """Channels of the four feature convolutions at ``width`` (official-width nets: 64..512, as
    pix2pix's 70 x 70 PatchGAN); at least 8."""
    base = max(8, int(round(64 * width)))
    return [base, 2 * base, 4 * base, 8 * base]


class PatchDiscriminator(nn.Module):
    """PatchGAN critic: (N, 3, S, S) -> (N, 1, S/8 - 2, S/8 - 2) scores, one per overlapping patch.

    4 x 4 convolutions with strides 2, 2, 2, 1, 1 and LeakyReLU(0.2); no normalisation layers
    (batch norm couples the samples of a batch, which the per-sample gradient penalty assumes
    they are not). Channels scale with ``width`` (:func:`critic_channels`)."""

    def __init__(self, width: float = 1.0, in_channels: int = IN_CHANNELS):
        super().__init__()
        c = critic_channels(width)
        layers, cin = [], in_channels
        for cout, stride in zip(c, (2, 2, 2, 1)):
            layers += [nn.Conv2d(cin, cout, 4, stride, 1), nn.LeakyReLU(0.2, inplace=True)]
            cin = cout
        layers.append(nn.Conv2d(cin, 1, 4, 1, 1, bias=False))  # a constant offset is no part of a Wasserstein critic
        self.model = nn.Sequential(*layers)
        self.width = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def critic_score(critic, x: torch.Tensor) -> torch.Tensor:
    """Per-sample score: the mean of the critic's patch map. x (N, C, S, S) -> (N,)."""
    return critic(x).flatten(1).mean(dim=1)


def gradient_penalty(critic, real: torch.Tensor, fake: torch.Tensor, eps: torch.Tensor,
                     weight: float = GP_LAMBDA) -> torch.Tensor:
    """WGAN-GP term ``weight * mean_n (||d score(x_n) / d x_n||_2 - 1)^2`` at the interpolates
    ``x = eps * real + (1 - eps) * fake``. real, fake (N, C, S, S); eps (N,) in [0, 1].
    The graph is kept (create_graph) so the penalty trains the critic."""
    e = eps.to(real.dtype).reshape(-1, *([1] * (real.ndim - 1)))
    x = (e * real.detach() + (1 - e) * fake.detach()).requires_grad_(True)
    score = critic_score(critic, x)
    (grad,) = torch.autograd.grad(score.sum(), x, create_graph=True)
    norm = grad.flatten(1).norm(dim=1)
    return weight * ((norm - 1.0) ** 2).mean()


def critic_inputs(L: torch.Tensor, ab: torch.Tensor, saliency: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(whole, salient) critic inputs: (L, ab) stacked (N, 3, S, S), and the same multiplied by the
    saliency map (N, 1, S, S). L (N, 1, S, S) and ab (N, 2, S, S) normalised as the nets take them."""
    whole = torch.cat([L.float(), ab.float()], dim=1)
    return whole, whole * saliency.float()


class Adversary:
    """The two critics and their optimizer, trained one step per generator step.

    >>> adv = Adversary(width=0.25, lr=1e-4, seed=0)
    >>> stats = adv.critic_step(L, ab_true, ab_pred.detach(), saliency, eps)   # eps (N,) in [0, 1]
    >>> g_loss = adv.generator_loss(L, ab_pred, saliency)                       # add it, weighted
    """

    STAT_DECAY = 0.98
    NAMES = ("whole", "salient")

    def __init__(self, width: float, lr: float, seed: int = 0, device="cpu"):
        with torch.random.fork_rng(devices=[]):  # leave the global RNG where the generator's set-up left it
            torch.manual_seed(int(seed) + 7919)
            self.critics = nn.ModuleDict({n: PatchDiscriminator(width) for n in self.NAMES}).to(device)
        self.opt = torch.optim.Adam(self.critics.parameters(), lr=lr, betas=BETAS)
        self.stats: dict[str, float] = {}

    def _trainable(self, on: bool) -> None:
        self.critics.requires_grad_(on)

    def _record(self, **values: float) -> None:
        for k, v in values.items():
            old = self.stats.get(k)
            self.stats[k] = v if old is None else self.STAT_DECAY * old + (1 - self.STAT_DECAY) * v

    def critic_step(self, L, ab_real, ab_fake, saliency, eps) -> dict[str, float]:
        """One Adam step of both critics on ``E[D(fake)] - E[D(real)] + GP`` (fp32, autocast off).
        L (N,1,S,S); ab_real, ab_fake (N,2,S,S) (the prediction, detached); saliency (N,1,S,S);
        eps (N,) interpolation weights of the penalty. Returns this step's values."""
        self._trainable(True)
        self.critics.train()
        self.opt.zero_grad(set_to_none=True)
        dev = L.device
        with torch.autocast(dev.type, enabled=False):
            real = critic_inputs(L, ab_real, saliency)
            fake = critic_inputs(L, ab_fake.detach(), saliency)
            total, out = 0.0, {}
            for name, r, f in zip(self.NAMES, real, fake):
                critic = self.critics[name]
                wdist = critic_score(critic, r).mean() - critic_score(critic, f).mean()
                gp = gradient_penalty(critic, r, f, eps.to(dev))
                total = total + (gp - wdist)
                out[f"adv_wdist_{name}"], out[f"adv_gp_{name}"] = float(wdist.detach()), float(gp.detach())
        out["adv_d_loss"] = float(total.detach())
        if not torch.isfinite(total.detach()):
            self._trainable(False)
            return out
        total.backward()
        self.opt.step()
        self._trainable(False)  # the generator's loss must not build graphs into the critics
        self._record(**out)
        return out

    def generator_loss(self, L, ab_fake, saliency) -> torch.Tensor:
        """``-(E[D_whole(fake)] + E[D_salient(fake)])`` with gradients to ``ab_fake`` only (the
        critics are frozen). Returns a scalar fp32 tensor."""
        self._trainable(False)
        with torch.autocast(L.device.type, enabled=False):
            whole, salient = critic_inputs(L, ab_fake, saliency)
            loss = -(critic_score(self.critics["whole"], whole).mean()
                     + critic_score(self.critics["salient"], salient).mean())
        self._record(adv_g_loss=float(loss.detach()))
        return loss

    def state_dict(self) -> dict:
        return {"critics": {k: v.detach().cpu() for k, v in self.critics.state_dict().items()},
                "opt": self.opt.state_dict(), "stats": dict(self.stats)}

    def load_state_dict(self, state: dict, source: str = "state") -> None:
        from ..models import load_state_dict_strict

        load_state_dict_strict(self.critics, state["critics"], source)
        self.opt.load_state_dict(state["opt"])
        self.stats = {str(k): float(v) for k, v in dict(state.get("stats", {})).items()}

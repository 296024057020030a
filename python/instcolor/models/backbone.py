"""SIGGRAPH'17 user-guided colorization backbone as InstColorization uses it.

State-dict names, shapes and dtypes are those of the official ``SIGGRAPHGenerator`` /
``InstanceGenerator`` (norm = batch, input_nc = 4, output_nc = 2, tanh output, no
classification loss), so official checkpoints load strictly. ``width`` scales every channel
count (1.0 = official; 0.5 / 0.25 are the embedded variants of the same topology).

The 13 feature points (``FEATURE_NAMES``) are where the fusion net blends instance features.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

# The architecture as plain data lives in .arch (no PyTorch there); re-exported here.
from .arch import (FEATURE_LEVELS, FEATURE_NAMES, GLOBAL_INPUT_CHANNELS, NUM_CLASSES, RELU_FOLLOWED,  # noqa: F401
                   STAGE_INPUTS, channels)
from .arch import DOWN_BLOCKS as _DOWN
from .arch import feature_channels
from .arch import SAME_BLOCKS as _SAME
from .arch import UP_BLOCKS as _UP


def _conv(cin: int, cout: int, dilation: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=3, stride=1, padding=dilation, dilation=dilation, bias=True)


class GlobalHintsNet(nn.Module):
    """SIGGRAPH'17 global hints branch: four 1x1 convolutions of ``channels`` (512 x width) on the
    (N, 532, 1, 1) global input; the result is added (tiled) to conv4_3 after its normalisation.
    The last convolution starts at zero, so an untrained branch changes nothing."""

    def __init__(self, channels: int):
        super().__init__()
        self.model = nn.Sequential(
            nn.Conv2d(GLOBAL_INPUT_CHANNELS, channels, 1), nn.ReLU(),
            nn.Conv2d(channels, channels, 1), nn.ReLU(),
            nn.Conv2d(channels, channels, 1), nn.ReLU(),
            nn.Conv2d(channels, channels, 1))
        nn.init.zeros_(self.model[-1].weight)
        nn.init.zeros_(self.model[-1].bias)

    def forward(self, g: torch.Tensor) -> torch.Tensor:
        """(N, 532, 1, 1) -> (N, channels, 1, 1)."""
        return self.model(g)


class SIGGRAPHBackbone(nn.Module):
    """The full-image colorization net (official ``SIGGRAPHGenerator``; file latest_net_GComp.pth).

    forward(A (N,1,S,S) normalised L, B (N,2,S,S) hint ab, mask (N,1,S,S) centred) -> (N,2,S,S) tanh ab.

    ``global_hints=True`` adds the SIGGRAPH'17 global hints branch (``global_net``, state-dict keys
    ``global_net.*``, absent from official checkpoints); ``run(..., global_input=g)`` feeds it.
    """

    def __init__(self, width: float = 1.0, input_nc: int = 4, output_nc: int = 2, global_hints: bool = False):
        super().__init__()
        self.width = float(width)
        c = channels(width)
        c64, c128, c256, c512 = c[64], c[128], c[256], c[512]

        def seq(cin, cout, n, dilation=1, bn=True):
            layers: list[nn.Module] = []
            for i in range(n):
                layers += [_conv(cin if i == 0 else cout, cout, dilation), nn.ReLU()]
            if bn:
                layers.append(nn.BatchNorm2d(cout))
            return nn.Sequential(*layers)

        def up_block(cin, cout, n, last_bn=True):  # official: ReLU first, then n convs
            layers: list[nn.Module] = [nn.ReLU()]
            for i in range(n):
                layers += [_conv(cin if i == 0 else cout, cout)]
                layers += [nn.ReLU()] if (i < n - 1 or last_bn) else [nn.LeakyReLU(0.2)]
            if last_bn:
                layers.append(nn.BatchNorm2d(cout))
            return nn.Sequential(*layers)

        self.model1 = seq(input_nc, c64, 2)
        self.model2 = seq(c64, c128, 2)
        self.model3 = seq(c128, c256, 3)
        self.model4 = seq(c256, c512, 3)
        self.model5 = seq(c512, c512, 3, dilation=2)
        self.model6 = seq(c512, c512, 3, dilation=2)
        self.model7 = seq(c512, c512, 3)
        self.model8up = nn.Sequential(nn.ConvTranspose2d(c512, c256, kernel_size=4, stride=2, padding=1, bias=True))
        self.model8 = up_block(c256, c256, 2)
        self.model9up = nn.Sequential(nn.ConvTranspose2d(c256, c128, kernel_size=4, stride=2, padding=1, bias=True))
        self.model9 = up_block(c128, c128, 1)
        self.model10up = nn.Sequential(nn.ConvTranspose2d(c128, c128, kernel_size=4, stride=2, padding=1, bias=True))
        self.model10 = up_block(c128, c128, 1, last_bn=False)
        self.model3short8 = nn.Sequential(_conv(c256, c256))
        self.model2short9 = nn.Sequential(_conv(c128, c128))
        self.model1short10 = nn.Sequential(_conv(c64, c128))
        # Classification head: present in the official state dict, unused for the regression output.
        self.model_class = nn.Sequential(nn.Conv2d(c256, NUM_CLASSES, kernel_size=1, bias=True))
        self.model_out = nn.Sequential(nn.Conv2d(c128, output_nc, kernel_size=1, bias=True), nn.Tanh())
        self.global_net = GlobalHintsNet(c512) if global_hints else None

    @property
    def has_global_hints(self) -> bool:
        return self.global_net is not None

    @property
    def feature_channels(self) -> dict[str, int]:
        return feature_channels(self.width)

    def stage(self, name: str, *inputs: torch.Tensor) -> torch.Tensor:
        """One step of the forward pass: the (pre-blend) feature ``name`` from its ``STAGE_INPUTS``."""
        if name == "conv1_2":
            A, B, mask = inputs
            return self.model1(torch.cat((A, B, mask), dim=1))
        if name in _DOWN:
            return getattr(self, _DOWN[name])(inputs[0][:, :, ::2, ::2])
        if name in _SAME:
            return getattr(self, _SAME[name])(inputs[0])
        if name in _UP:
            up, short = _UP[name]
            return getattr(self, up)(inputs[0]) + getattr(self, short)(inputs[1])
        if name == "out":
            return self.model_out(inputs[0])
        raise KeyError(name)

    def run(self, A: torch.Tensor, B: torch.Tensor, mask: torch.Tensor,
            at: Callable[[str, torch.Tensor], torch.Tensor] | None = None,
            global_input: torch.Tensor | None = None) -> torch.Tensor:
        """Forward pass; ``at(name, feature)`` is called at each of the 13 feature points and its
        return value replaces the feature (the fusion net blends there). ``global_input``
        (N, 532, 1, 1): global hints, used when the net has the branch (ignored otherwise); a net
        with the branch given none reads zeros (no hint given, as in training)."""
        return self.heads(A, B, mask, at, global_input, with_class=False)[0]

    def heads(self, A: torch.Tensor, B: torch.Tensor, mask: torch.Tensor,
              at: Callable[[str, torch.Tensor], torch.Tensor] | None = None,
              global_input: torch.Tensor | None = None, with_class: bool = True):
        """Forward pass -> (ab (N,2,S,S) tanh, class logits (N,529,S/4,S/4) or None). The
        classification head reads conv8_3 after any blend there (the fusion net's head sees the
        fused features)."""
        at = at or (lambda name, x: x)
        values = {"A": A, "B": B, "mask": mask}
        for name in FEATURE_NAMES:
            x = self.stage(name, *(values[k] for k in STAGE_INPUTS[name]))
            if name == "conv4_3" and self.global_net is not None:
                g = global_input if global_input is not None else x.new_zeros((x.shape[0], GLOBAL_INPUT_CHANNELS, 1, 1))
                x = x + self.global_net(g.to(x.dtype))
            values[name] = at(name, x)
        logits = self.model_class(values["conv8_3"]) if with_class else None
        return self.stage("out", values["conv10_2"]), logits

    def forward(self, A: torch.Tensor, B: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.run(A, B, mask)


class InstanceNet(SIGGRAPHBackbone):
    """The instance net (official ``InstanceGenerator``; file latest_net_G.pth), run on crops.

    forward(A, B, mask) -> (out_reg (M,2,S,S), features {name: (M,C,s,s)}). The three ``*_up``
    features are returned after ReLU: in the official net the next block's in-place ReLU
    overwrites them before the fusion net reads them (golden README, "In-place ReLU quirk").
    """

    def forward(self, A, B, mask):
        feats: dict[str, torch.Tensor] = {}
        # (crops never get global hints)

        def record(name, x):
            feats[name] = F.relu(x) if name in RELU_FOLLOWED else x
            return x

        out = self.run(A, B, mask, record)
        return out, feats

"""The fusion net (official ``FusionGenerator``; file latest_net_GF.pth).

The SIGGRAPH'17 backbone on the full image with a blend block (``WeightGenerator``) after each
of the 13 feature points. Each block scores the full-image feature and every instance feature
(one non-negative logit per pixel, instance logits at crop resolution); the blend itself is
:func:`instcolor.fuse.fuse_instances_reference` or the native ``fuse_instances`` kernel.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn as nn

from ..fuse import fuse_instances_reference
from .arch import BLOCK_NAMES  # noqa: F401  (official attribute name of the blend block at each point)
from .backbone import FEATURE_LEVELS, FEATURE_NAMES, SIGGRAPHBackbone

FuseFn = Callable[..., torch.Tensor]


def _logit_stack(cin: int, inner: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, inner, 3, 1, 1), nn.ReLU(),
        nn.Conv2d(inner, inner, 3, 1, 1), nn.ReLU(),
        nn.Conv2d(inner, 1, 3, 1, 1), nn.ReLU(),
    )


class WeightGenerator(nn.Module):
    """Blend block: logit convs for instance features and for the full-image feature."""

    def __init__(self, input_ch: int, inner_ch: int = 16):
        super().__init__()
        self.simple_instance_conv = _logit_stack(input_ch, inner_ch)
        self.simple_bg_conv = _logit_stack(input_ch, inner_ch)

    def instance_logits(self, inst_feat: torch.Tensor) -> torch.Tensor:
        """(M, C, s, s) -> (M, 1, s, s), computed at crop resolution."""
        return self.simple_instance_conv(inst_feat)

    def background_logits(self, bg_feat: torch.Tensor) -> torch.Tensor:
        return self.simple_bg_conv(bg_feat)


class FusionNet(SIGGRAPHBackbone):
    """forward(A, B, mask, inst_features, box_info_levels, inst_image) -> (N, 2, S, S) tanh ab.

    inst_features: {name: (M, C, s, s)} from :class:`InstanceNet` (all images' instances
    concatenated), box_info_levels: 4 tensors (M, 6) int64 for grids S, S/2, S/4, S/8,
    inst_image: (M,) int64 image index of each instance.
    """

    def __init__(self, width: float = 1.0, input_nc: int = 4, output_nc: int = 2, global_hints: bool = False):
        super().__init__(width, input_nc, output_nc, global_hints=global_hints)
        inner = 16  # the blend convs are tiny; kept at 16 channels at every width
        for name in FEATURE_NAMES:
            setattr(self, BLOCK_NAMES[name], WeightGenerator(self.feature_channels[name], inner))
        # Present in the official state dict; never used for the regression output.
        self.weight_layerout = WeightGenerator(output_nc, inner)
        # Official registration order: the blend blocks come first in the state dict.
        first = [BLOCK_NAMES[n] for n in FEATURE_NAMES] + ["weight_layerout"]
        self._modules = {**{k: self._modules[k] for k in first},
                         **{k: v for k, v in self._modules.items() if k not in first}}
        self.fuse_fn: FuseFn = fuse_instances_reference

    def block(self, name: str) -> WeightGenerator:
        return getattr(self, BLOCK_NAMES[name])

    def instance_logits(self, inst_features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Per-instance blend logits of all 13 blocks (they depend only on the instance net)."""
        return {n: self.block(n).instance_logits(inst_features[n]) for n in FEATURE_NAMES}

    def forward(self, A, B, mask, inst_features: dict[str, torch.Tensor],
                box_info_levels: Sequence[torch.Tensor], inst_image: torch.Tensor,
                inst_logits: dict[str, torch.Tensor] | None = None,
                global_input: torch.Tensor | None = None) -> torch.Tensor:
        return self.fused_heads(A, B, mask, inst_features, box_info_levels, inst_image, inst_logits,
                                global_input, with_class=False)[0]

    def fused_heads(self, A, B, mask, inst_features: dict[str, torch.Tensor],
                    box_info_levels: Sequence[torch.Tensor], inst_image: torch.Tensor,
                    inst_logits: dict[str, torch.Tensor] | None = None,
                    global_input: torch.Tensor | None = None, with_class: bool = True):
        """-> (ab (N,2,S,S), class logits (N,529,S/4,S/4) of the fused conv8_3, or None).
        ``inst_logits``: the instance logits of all 13 blocks when already computed (they depend
        only on the instance features, so an edit session computes them once)."""
        inst_logits = inst_logits if inst_logits is not None else self.instance_logits(inst_features)

        def blend(name, bg):
            return self.fuse_fn(bg, self.block(name).background_logits(bg), inst_features[name],
                                inst_logits[name], box_info_levels[FEATURE_LEVELS[name]], inst_image)

        return self.heads(A, B, mask, blend, global_input, with_class=with_class)

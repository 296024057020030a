"""The PyTorch side of :mod:`instcolor.export`: the segment modules that ``torch.onnx`` traces.

Kept apart so that :mod:`instcolor.export` (manifest, layout, reading exports) imports without
PyTorch; :mod:`instcolor.onnx_graphs` builds the same segments without PyTorch.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .export import FORMAT, _input_channels, _level_of_input, global_input_segments, segment_layout
from .models.arch import FEATURE_NAMES, RELU_FOLLOWED


class FullSegment(nn.Module):
    """(A, B, mask[, global_input]) -> (ab, conv8_3)."""

    def __init__(self, full):
        super().__init__()
        self.net = full

    def forward(self, A, B, mask, global_input=None):
        seen = {}

        def record(name, x):
            if name == "conv8_3":
                seen[name] = x
            return x

        ab = self.net.run(A, B, mask, record, global_input=global_input)
        return ab, seen["conv8_3"]


class InstanceSegment(nn.Module):
    """(A, B, mask) of M crops -> 13 features then 13 blend logits."""

    def __init__(self, instance, fusion):
        super().__init__()
        self.net, self.fusion = instance, fusion

    def forward(self, A, B, mask):
        feats = {}

        def record(name, x):
            feats[name] = torch.relu(x) if name in RELU_FOLLOWED else x
            return x

        self.net.run(A, B, mask, record)
        logits = [self.fusion.block(n).instance_logits(feats[n]) for n in FEATURE_NAMES]
        return tuple(feats[n] for n in FEATURE_NAMES) + tuple(logits)


class FusionStageSegment(nn.Module):
    """One backbone step of the fusion net + its block's background logit."""

    def __init__(self, fusion, name):
        super().__init__()
        self.net, self.name = fusion, name

    def forward(self, *inputs):
        if self.name == "conv4_3" and self.net.global_net is not None:  # (..., global_input) last
            *inputs, g = inputs
            feat = self.net.stage(self.name, *inputs)
            feat = feat + self.net.global_net(g)  # as SIGGRAPHBackbone.heads does after conv4_3
        else:
            feat = self.net.stage(self.name, *inputs)
        return feat, self.net.block(self.name).background_logits(feat)


class FusionOutSegment(nn.Module):
    def __init__(self, fusion):
        super().__init__()
        self.net = fusion

    def forward(self, x):
        return self.net.stage("out", x)


class ClassHeadSegment(nn.Module):
    """conv8_3 (n, C, S/4, S/4) -> class logits (n, 529, S/4, S/4): the net's ``model_class``."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, conv8_3):
        return self.net.model_class(conv8_3)


def segment_specs(nets: dict) -> list[dict]:
    """Ordered segments: name, module, input names, output names, and which batch dim each uses."""
    full, inst, fusion = nets["full"], nets["instance"], nets["fusion"]
    modules = {"full": FullSegment(full), "instance": InstanceSegment(inst, fusion), "fusion.out": FusionOutSegment(fusion),
               "head.full": ClassHeadSegment(full), "head.fusion": ClassHeadSegment(fusion)}
    modules.update({f"fusion.{n}": FusionStageSegment(fusion, n) for n in FEATURE_NAMES})
    return [dict(spec, module=modules[spec["name"]]) for spec in segment_layout(FORMAT, global_input_segments(nets))]


def _example_inputs(spec: dict, channels: dict, size: int, dtype) -> tuple:
    out = []
    for name in spec["inputs"]:
        level = _level_of_input(name)
        s = 1 if level is None else size >> level
        out.append(torch.randn(2, _input_channels(name, channels), s, s, dtype=dtype))
    return tuple(out)



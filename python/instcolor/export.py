"""ONNX export of the nets as ordered segments (../shared/DESIGN.md, "Segments").

* ``full``: the full-image net (GComp), (A, B, mask) -> ab.
* ``instance``: the instance net on crops, (A, B, mask) -> 13 feature maps + the 13 per-instance
  blend logits of the fusion net's blocks (they depend only on the instance features).
* ``fusion.<point>`` for each of the 13 feature points: the backbone step that produces that
  feature from its inputs, plus the block's background-logit convs -> (feature, bg_logit). The
  native ``fuse_instances`` kernel runs between these segments.
* ``fusion.out``: the final 1x1 conv + tanh on the blended conv10_2.

A ``manifest.json`` lists the segments in execution order with their tensor names and shapes
and the hash of the weights they came from. Batch / instance / spatial dimensions are dynamic.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import torch
import torch.nn as nn

from ._fileio import publish_dir
from .models.backbone import FEATURE_LEVELS, FEATURE_NAMES, RELU_FOLLOWED, STAGE_INPUTS

MANIFEST = "manifest.json"
FORMAT = "instcolor-segments/1"
OPSET = 17  # TensorRT 10 and ONNX Runtime >= 1.14 support it
_LEVEL_DIM = ("S", "S_2", "S_4", "S_8")


class FullSegment(nn.Module):
    def __init__(self, full):
        super().__init__()
        self.net = full

    def forward(self, A, B, mask):
        return self.net(A, B, mask)


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
        feat = self.net.stage(self.name, *inputs)
        return feat, self.net.block(self.name).background_logits(feat)


class FusionOutSegment(nn.Module):
    def __init__(self, fusion):
        super().__init__()
        self.net = fusion

    def forward(self, x):
        return self.net.stage("out", x)


def _level_of_input(name: str) -> int:
    return 0 if name in ("A", "B", "mask") else FEATURE_LEVELS[name]


def segment_specs(nets: dict) -> list[dict]:
    """Ordered segments: name, module, input names, output names, and which batch dim each uses."""
    full, inst, fusion = nets["full"], nets["instance"], nets["fusion"]
    specs = [dict(name="full", module=FullSegment(full), inputs=["A", "B", "mask"], outputs=["ab"], batch="n"),
             dict(name="instance", module=InstanceSegment(inst, fusion), inputs=["A", "B", "mask"],
                  outputs=[f"feat.{n}" for n in FEATURE_NAMES] + [f"logit.{n}" for n in FEATURE_NAMES], batch="m")]
    for n in FEATURE_NAMES:
        specs.append(dict(name=f"fusion.{n}", module=FusionStageSegment(fusion, n), inputs=list(STAGE_INPUTS[n]),
                          outputs=[n, f"bg_logit.{n}"], batch="n"))
    specs.append(dict(name="fusion.out", module=FusionOutSegment(fusion), inputs=["conv10_2"], outputs=["ab"], batch="n"))
    return specs


def _example_inputs(spec: dict, channels: dict, size: int, dtype) -> tuple:
    out = []
    for name in spec["inputs"]:
        c = {"A": 1, "B": 2, "mask": 1}.get(name) or channels[name]
        s = size >> _level_of_input(name)
        out.append(torch.randn(2, c, s, s, dtype=dtype))
    return tuple(out)


def _dynamic_axes(spec: dict) -> dict:
    axes = {}
    for name in spec["inputs"]:
        d = _LEVEL_DIM[_level_of_input(name)]
        axes[name] = {0: spec["batch"], 2: d, 3: d}
    for name in spec["outputs"]:
        point = name.split(".")[-1]
        d = _LEVEL_DIM[FEATURE_LEVELS[point]] if point in FEATURE_LEVELS else _LEVEL_DIM[0]
        axes[name] = {0: spec["batch"], 2: d, 3: d}
    return axes


def _drop_intermediate_shapes(path: Path) -> None:
    """The tracer annotates intermediate tensors with symbolic dims that do not hold after the
    stride-2 slices (ONNX Runtime then plans buffers wrongly); keep only input/output shapes."""
    import onnx

    model = onnx.load(str(path))
    del model.graph.value_info[:]
    onnx.save(model, str(path))


def weights_hash(nets: dict) -> str:
    """sha256 over the three nets' state dicts (key names and fp32 bytes, sorted keys)."""
    h = hashlib.sha256()
    for kind in ("full", "instance", "fusion"):
        for k, v in sorted(nets[kind].state_dict().items()):
            h.update(f"{kind}.{k}".encode())
            h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def export_segments(nets: dict, out_dir: str | os.PathLike, precision: str = "fp32", size: int = 64,
                    check: bool = True) -> dict:
    """Export ``nets`` ({'full', 'instance', 'fusion'}) to ``out_dir`` as ONNX segments + manifest.

    ``precision``: 'fp32' or 'fp16' (weights and tensors in float16: the strongly typed graphs
    TensorRT >= 11 wants; TensorRT 10 can also build fp16 engines from the fp32 graphs with its
    FP16 flag). ``size`` only sizes the tracing inputs; all dims are dynamic. With ``check``
    every segment is validated with ``onnx.checker``. Written to a temporary folder first and
    moved into place, so a failed export leaves nothing behind. Returns the manifest.
    """
    import onnx

    if precision not in ("fp32", "fp16"):
        raise ValueError(f"precision must be 'fp32' or 'fp16', got {precision!r}")
    out_dir = Path(out_dir)
    dtype = torch.float16 if precision == "fp16" else torch.float32
    channels = nets["fusion"].feature_channels
    manifest = dict(format=FORMAT, opset=OPSET, precision=precision, width=nets["full"].width,
                    weights_sha256=weights_hash(nets), feature_names=list(FEATURE_NAMES),
                    feature_levels={n: FEATURE_LEVELS[n] for n in FEATURE_NAMES},
                    feature_channels=dict(channels), segments=[])
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        for spec in segment_specs(nets):
            module = spec["module"].to(dtype).eval()
            fname = f"{spec['name']}.onnx"
            args = _example_inputs(spec, channels, size, dtype)
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")
                torch.onnx.export(module, args, str(tmp / fname), dynamo=False, opset_version=OPSET,
                                  input_names=spec["inputs"], output_names=spec["outputs"],
                                  dynamic_axes=_dynamic_axes(spec), do_constant_folding=True)
            _drop_intermediate_shapes(tmp / fname)
            if check:
                onnx.checker.check_model(str(tmp / fname))
            manifest["segments"].append(dict(
                name=spec["name"], file=fname, batch_dim=spec["batch"],
                inputs=[dict(name=n, channels=int(a.shape[1]), level=_level_of_input(n)) for n, a in zip(spec["inputs"], args)],
                outputs=spec["outputs"]))
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
        publish_dir(tmp)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        for net in nets.values():  # the segment modules share the nets: leave them in fp32
            net.float()
    return manifest


def read_manifest(export_dir: str | os.PathLike) -> dict:
    path = Path(export_dir) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{export_dir}: no {MANIFEST}; not an instcolor export directory")
    manifest = json.loads(path.read_text())
    if manifest.get("format") != FORMAT:
        raise ValueError(f"{path}: format {manifest.get('format')!r}, expected {FORMAT!r}")
    return manifest

"""ONNX Runtime backend: runs the exported segments; the blend runs between them."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..export import read_manifest


def default_fuse():
    """The native fuse kernel when the extension provides it, else the PyTorch reference."""
    from ..pipeline import native_ops

    ops = native_ops()
    if ops is not None:
        return ops.fuse_instances
    import torch

    from ..fuse import fuse_instances_reference

    def fuse(bg, bg_logit, inst_feat, inst_logit, info, inst_image):
        t = torch.from_numpy
        return fuse_instances_reference(t(bg), t(bg_logit), t(inst_feat), t(inst_logit), t(info), t(inst_image)).numpy()

    return fuse


class OnnxRuntimeBackend:
    """Runs an export directory (see :mod:`instcolor.export`) with ONNX Runtime sessions."""

    name = "onnxruntime"

    def __init__(self, export_dir: str | os.PathLike, providers=None, threads: int | None = None, fuse=None):
        import onnxruntime as ort

        self.export_dir = Path(export_dir)
        self.manifest = read_manifest(export_dir)
        if self.manifest["precision"] != "fp32":
            raise ValueError(f"{export_dir}: the onnxruntime backend runs fp32 exports, this one is {self.manifest['precision']}")
        self.width = self.manifest["width"]
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.intra_op_num_threads = threads or os.cpu_count() or 1
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.enable_mem_pattern = True
        so.enable_cpu_mem_arena = True
        providers = providers or ["CPUExecutionProvider"]
        self.sessions = {s["name"]: ort.InferenceSession(str(self.export_dir / s["file"]), so, providers=providers)
                         for s in self.manifest["segments"]}
        self.fuse = fuse or default_fuse()
        self.feature_names = self.manifest["feature_names"]
        self.levels = self.manifest["feature_levels"]

    def set_fuse(self, fuse_fn) -> None:
        self.fuse = fuse_fn

    def _run(self, segment: str, feeds: dict) -> list[np.ndarray]:
        return self.sessions[segment].run(None, {k: np.ascontiguousarray(v, np.float32) for k, v in feeds.items()})

    def run(self, batch) -> np.ndarray:
        B, S = batch.full_L.shape[0], batch.full_L.shape[-1]
        out = np.zeros((B, 2, S, S), np.float32)
        counts = np.bincount(batch.inst_image, minlength=B) if len(batch.inst_image) else np.zeros(B, np.int64)
        plain, fused = np.flatnonzero(counts == 0), np.flatnonzero(counts > 0)
        if len(plain):
            out[plain] = self._run("full", dict(A=batch.full_L[plain], B=batch.hint_ab[plain], mask=batch.hint_mask[plain]))[0]
        if len(fused):
            M = batch.crop_L.shape[0]
            inst = self._run("instance", dict(A=batch.crop_L, B=np.zeros((M, 2, S, S), np.float32),
                                              mask=np.full((M, 1, S, S), -0.5, np.float32)))
            n = len(self.feature_names)
            feats, logits = dict(zip(self.feature_names, inst[:n])), dict(zip(self.feature_names, inst[n:]))
            remap = np.full(B, -1, np.int64)
            remap[fused] = np.arange(len(fused))
            inst_image = remap[batch.inst_image]
            values = dict(A=batch.full_L[fused], B=batch.hint_ab[fused], mask=batch.hint_mask[fused])
            for seg in self.manifest["segments"][2:-1]:
                name = seg["outputs"][0]
                feat, bg_logit = self._run(seg["name"], {i["name"]: values[i["name"]] for i in seg["inputs"]})
                values[name] = self.fuse(feat, bg_logit, feats[name], logits[name],
                                         np.ascontiguousarray(batch.box_info[self.levels[name]], np.int64), inst_image)
            out[fused] = self._run("fusion.out", dict(conv10_2=values["conv10_2"]))[0]
        return out

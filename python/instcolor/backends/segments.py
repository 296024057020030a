"""The segment-running loop shared by the backends that execute an export (ONNX Runtime, TensorRT).

:class:`SegmentBackend.run` turns a :class:`instcolor.pipeline.Batch` into ab with the manifest's
segments (see :mod:`instcolor.export`):

* images without instances: ``full`` (GComp) on those images;
* images with instances: ``instance`` on all crops (-> 13 features + 13 logits), then the 13
  ``fusion.<point>`` segments with the fuse kernel after each, then ``fusion.out``.

Where arrays live (host numpy, device buffers) is up to the subclass, through five hooks:
``_feed`` (a host input of a segment), ``_constant`` (the instance net's constant hint planes),
``_run`` (one segment), ``_fuse`` (one blend) and ``_fetch`` (a result back to the host). Every
``_fetch`` happens after all segments were issued, so an asynchronous backend syncs once per batch.
"""
from __future__ import annotations

import numpy as np

from ..pipeline import Batch

HOST_INPUTS = ("A", "B", "mask")


class SegmentBackend:
    """Base of the export-running backends. Subclasses call :meth:`_init_segments` with the manifest
    and implement the hooks; arrays are opaque here except for ``.shape``."""

    def _init_segments(self, manifest: dict) -> None:
        self.manifest = manifest
        self.width = manifest["width"]
        self.feature_names = manifest["feature_names"]
        self.levels = manifest["feature_levels"]
        names = [s["name"] for s in manifest["segments"]]
        if names[:2] != ["full", "instance"] or names[-1] != "fusion.out":
            raise ValueError(f"unexpected segment order in the manifest: {names}")
        self.fusion_segments = manifest["segments"][2:-1]

    # ------------------------------------------------------------------ hooks
    def _feed(self, segment: str, name: str, host: np.ndarray):
        """Host input ``name`` (float32, (batch, C, H, W)) of ``segment`` -> the array ``_run`` takes."""
        raise NotImplementedError

    def _constant(self, segment: str, name: str, shape: tuple[int, ...], value: float):
        """An input of ``shape`` filled with ``value`` (the instance net's B = 0, mask = -0.5)."""
        raise NotImplementedError

    def _run(self, segment: str, feeds: dict) -> list:
        """Run ``segment`` on ``feeds`` ({input name: array}) -> its outputs in manifest order."""
        raise NotImplementedError

    def _fuse(self, point: str, feat, bg_logit, inst_feat, inst_logit, box_info: np.ndarray, inst_image: np.ndarray):
        """One blend at feature ``point``: feat (n, C, H, W), bg_logit (n, 1, H, W), inst_feat (m, C, h, w),
        inst_logit (m, 1, h, w), box_info (m, 6) int64 host, inst_image (m,) int64 host -> (n, C, H, W)."""
        raise NotImplementedError

    def _fetch(self, array) -> np.ndarray:
        """A segment output -> host float32 numpy."""
        raise NotImplementedError

    # ------------------------------------------------------------------ the loop
    def run(self, batch: Batch) -> np.ndarray:
        """``batch``: :class:`instcolor.pipeline.Batch` (B images, M instances) -> ab (B, 2, S, S) float32."""
        B, S = batch.full_L.shape[0], batch.full_L.shape[-1]
        plain, fused, inst_image = batch.split()
        pending = []
        if len(plain):
            host = dict(A=batch.full_L[plain], B=batch.hint_ab[plain], mask=batch.hint_mask[plain])
            ab = self._run("full", {k: self._feed("full", k, v) for k, v in host.items()})[0]
            pending.append((plain, ab))
        if len(fused):
            M = batch.crop_L.shape[0]
            inst = self._run("instance", dict(A=self._feed("instance", "A", batch.crop_L),
                                              B=self._constant("instance", "B", (M, 2, S, S), 0.0),
                                              mask=self._constant("instance", "mask", (M, 1, S, S), -0.5)))
            n = len(self.feature_names)
            feats, logits = dict(zip(self.feature_names, inst[:n])), dict(zip(self.feature_names, inst[n:]))
            host = dict(A=batch.full_L[fused], B=batch.hint_ab[fused], mask=batch.hint_mask[fused])
            values = {}
            for seg in self.fusion_segments:
                name = seg["outputs"][0]
                feeds = {}
                for i in seg["inputs"]:
                    k = i["name"]
                    feeds[k] = values[k] if k in values else self._feed(seg["name"], k, host[k])
                feat, bg_logit = self._run(seg["name"], feeds)
                values[name] = self._fuse(name, feat, bg_logit, feats[name], logits[name],
                                          np.ascontiguousarray(batch.box_info[self.levels[name]], np.int64), inst_image)
            pending.append((fused, self._run("fusion.out", dict(conv10_2=values["conv10_2"]))[0]))
        out = np.zeros((B, 2, S, S), np.float32)
        for index, ab in pending:
            out[index] = self._fetch(ab)
        return out


def split_batch(batch: Batch, max_images: int) -> list[Batch]:
    """``batch`` as consecutive batches of at most ``max_images`` images (instances follow their image;
    ``inst_image`` renumbered). One batch that fits is returned as it is."""
    B = batch.full_L.shape[0]
    if B <= max_images:
        return [batch]
    parts = []
    for start in range(0, B, max_images):
        stop = min(B, start + max_images)
        sel = (batch.inst_image >= start) & (batch.inst_image < stop)
        parts.append(Batch(full_L=batch.full_L[start:stop], hint_ab=batch.hint_ab[start:stop],
                           hint_mask=batch.hint_mask[start:stop], crop_L=batch.crop_L[sel],
                           inst_image=batch.inst_image[sel] - start,
                           box_info=[np.asarray(b)[sel] for b in batch.box_info]))
    return parts

"""The segment-running loop shared by the backends that execute an export (ONNX Runtime, TensorRT).

:class:`SegmentBackend.run_heads` turns a :class:`instcolor.pipeline.Batch` into ab (and, when
asked, the class logits) with the manifest's segments (see :mod:`instcolor.export`):

* images without instances: ``full`` (GComp) on those images (-> ab, conv8_3; ``head.full`` on
  conv8_3 when the logits are asked for);
* images with instances: ``instance`` on all crops (-> 13 features + 13 logits; or a cached
  :class:`instcolor.pipeline.InstanceState` from :meth:`SegmentBackend.run_instances`), then the 13
  ``fusion.<point>`` segments with the fuse kernel after each, then ``fusion.out`` (and
  ``head.fusion`` on the blended conv8_3 when asked).

Segments listed in the manifest's ``global_input_segments`` also get ``global_input`` (the batch's
global hints, or zeros when it has none).

Where arrays live (host numpy, device buffers) is up to the subclass, through five hooks:
``_feed`` (a host input of a segment), ``_constant`` (constant inputs: the instance net's hint
planes, absent global hints), ``_run`` (one segment), ``_fuse`` (one blend) and ``_fetch`` (a result
back to the host). Every ``_fetch`` happens after all segments were issued, so an asynchronous
backend syncs once per batch. An :class:`~instcolor.pipeline.InstanceState` holds host float32 arrays
(fetched once); a batch run with it feeds them back with ``_feed``.
"""
from __future__ import annotations

import numpy as np

from ..export import FORMAT, GLOBAL_INPUT
from ..models.arch import GLOBAL_INPUT_CHANNELS, NUM_CLASSES
from ..pipeline import Batch, Heads, InstanceState

HOST_INPUTS = ("A", "B", "mask")


def _take_host(a: np.ndarray, idx: np.ndarray) -> np.ndarray:
    return a[idx]


def check_crops(crop_L) -> np.ndarray:
    """``crop_L`` as float32 (M, 1, S, S); ValueError naming the shape otherwise."""
    a = np.asarray(crop_L)
    if a.ndim != 4 or a.shape[1] != 1 or a.shape[2] != a.shape[3]:
        raise ValueError(f"crop_L: expected (M, 1, S, S) lightness crops, got shape {a.shape}")
    return np.ascontiguousarray(a, np.float32)


class SegmentBackend:
    """Base of the export-running backends. Subclasses call :meth:`_init_segments` with the manifest
    and implement the hooks; arrays are opaque here except for ``.shape``."""

    def _init_segments(self, manifest: dict) -> None:
        self.manifest = manifest
        self.width = manifest["width"]
        self.feature_names = manifest["feature_names"]
        self.levels = manifest["feature_levels"]
        names = [s["name"] for s in manifest["segments"]]
        if names[:2] != ["full", "instance"] or "fusion.out" not in names:
            raise ValueError(f"unexpected segment order in the manifest: {names}")
        out = names.index("fusion.out")
        self.fusion_segments = manifest["segments"][2:out]
        self.segment_inputs = {s["name"]: [i["name"] for i in s["inputs"]] for s in manifest["segments"]}
        self.has_class_head = {"head.full", "head.fusion"} <= set(names)
        self.has_global_hints = {"full", "fusion.conv4_3"} <= set(manifest.get("global_input_segments", []))

    def _where(self) -> str:
        return str(getattr(self, "export_dir", "this export"))

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

    def _fuse_cached(self, point: str, feat, bg_logit, instances: InstanceState, box_info: np.ndarray,
                     inst_image: np.ndarray):
        """One blend with a cached :class:`InstanceState`'s instances, reusing work kept in the state
        across calls; None (the default) when this backend has no such path: then ``_fuse`` runs."""
        return None

    # ------------------------------------------------------------------ the loop
    def run(self, batch: Batch) -> np.ndarray:
        """``batch``: :class:`instcolor.pipeline.Batch` (B images, M instances) -> ab (B, 2, S, S) float32."""
        return self.run_heads(batch, logits=False).ab

    def _check_request(self, batch: Batch, logits: bool) -> np.ndarray | None:
        """The batch's checked global input; ValueError for what this export cannot do."""
        if logits and not self.has_class_head:
            raise ValueError(f"{self._where()}: this export has no classification head (written before the "
                             f"{FORMAT} format); export the weights again (instcolor export) to get class logits")
        g = batch.checked_global_input()
        if g is not None and not self.has_global_hints:
            raise ValueError(f"Batch.global_input: {self._where()} has no global hints input: these weights have no "
                             "global hints branch (global_net; weights trained with instcolor train --global-hints "
                             "have it), or they were exported before global hints existed (export them again)")
        return g

    def _global_feed(self, segment: str, g: np.ndarray | None, index: np.ndarray, feeds: dict) -> None:
        """Add ``global_input`` to ``feeds`` when ``segment`` takes it: the batch's (rows ``index``) or zeros."""
        if GLOBAL_INPUT not in self.segment_inputs[segment]:
            return
        if g is None:
            feeds[GLOBAL_INPUT] = self._constant(segment, GLOBAL_INPUT, (len(index), GLOBAL_INPUT_CHANNELS, 1, 1), 0.0)
        else:
            feeds[GLOBAL_INPUT] = self._feed(segment, GLOBAL_INPUT, g[index])

    def _instance_outputs(self, crop_L: np.ndarray) -> list:
        M, S = crop_L.shape[0], crop_L.shape[-1]
        return self._run("instance", dict(A=self._feed("instance", "A", crop_L),
                                          B=self._constant("instance", "B", (M, 2, S, S), 0.0),
                                          mask=self._constant("instance", "mask", (M, 1, S, S), -0.5)))

    def run_instances(self, crop_L: np.ndarray) -> InstanceState:
        """The instance segment on crops (M, 1, S, S) once -> :class:`instcolor.pipeline.InstanceState`
        (host float32 copies of its 13 features and 13 blend logits) for ``run_heads(instances=...)``."""
        crop_L = check_crops(crop_L)
        M, S = crop_L.shape[0], crop_L.shape[-1]
        if M == 0:
            return InstanceState({}, {}, 0, S, self, _take_host)
        outs = self._instance_outputs(crop_L)
        n = len(self.feature_names)
        feats = {k: self._fetch(v) for k, v in zip(self.feature_names, outs[:n])}
        logits = {k: self._fetch(v) for k, v in zip(self.feature_names, outs[n:])}
        return InstanceState(feats, logits, M, S, self, _take_host)

    def run_heads(self, batch: Batch, logits: bool = True, instances: InstanceState | None = None) -> Heads:
        """``batch`` (B images, M instances) -> :class:`instcolor.pipeline.Heads`: ab (B, 2, S, S) and, with
        ``logits``, the class logits (B, 529, S/4, S/4) (ValueError for an export without the head).
        ``instances``: a :meth:`run_instances` state standing for the batch's M instances (``crop_L`` unread)."""
        g = self._check_request(batch, logits)
        if instances is not None:
            instances.check(self, batch)
        B, S = batch.full_L.shape[0], batch.full_L.shape[-1]
        plain, fused, inst_image = batch.split()
        pending = []  # (image indices, ab, class logits or None), fetched at the end
        if len(plain):
            feeds = dict(A=batch.full_L[plain], B=batch.hint_ab[plain], mask=batch.hint_mask[plain])
            feeds = {k: self._feed("full", k, v) for k, v in feeds.items()}
            self._global_feed("full", g, plain, feeds)
            outs = self._run("full", feeds)
            head = self._run("head.full", dict(conv8_3=outs[1]))[0] if logits else None
            pending.append((plain, outs[0], head))
        if len(fused):
            n = len(self.feature_names)
            if instances is None:
                inst = self._instance_outputs(check_crops(batch.crop_L))
                feats, inst_logits = dict(zip(self.feature_names, inst[:n])), dict(zip(self.feature_names, inst[n:]))
            else:
                feats = {k: self._feed("instance", f"feat.{k}", v) for k, v in instances.features.items()}
                inst_logits = {k: self._feed("instance", f"logit.{k}", v) for k, v in instances.logits.items()}
            host = dict(A=batch.full_L[fused], B=batch.hint_ab[fused], mask=batch.hint_mask[fused])
            values = {}
            for seg in self.fusion_segments:
                name = seg["outputs"][0]
                feeds = {}
                for k in self.segment_inputs[seg["name"]]:
                    if k in values:
                        feeds[k] = values[k]
                    elif k in host:
                        feeds[k] = self._feed(seg["name"], k, host[k])
                self._global_feed(seg["name"], g, fused, feeds)
                feat, bg_logit = self._run(seg["name"], feeds)
                info = np.ascontiguousarray(batch.box_info[self.levels[name]], np.int64)
                fused_value = None
                if instances is not None:  # an edit session: the instances' sampling is cached in the state
                    fused_value = self._fuse_cached(name, feat, bg_logit, instances, info, inst_image)
                if fused_value is None:
                    fused_value = self._fuse(name, feat, bg_logit, feats[name], inst_logits[name], info, inst_image)
                values[name] = fused_value
            ab = self._run("fusion.out", dict(conv10_2=values["conv10_2"]))[0]
            head = self._run("head.fusion", dict(conv8_3=values["conv8_3"]))[0] if logits else None
            pending.append((fused, ab, head))
        out = np.zeros((B, 2, S, S), np.float32)
        class_logits = np.zeros((B, NUM_CLASSES, S // 4, S // 4), np.float32) if logits else None
        for index, ab, head in pending:
            out[index] = self._fetch(ab)
            if logits:
                class_logits[index] = self._fetch(head)
        return Heads(ab=out, logits=class_logits)


def split_batch(batch: Batch, max_images: int) -> list[Batch]:
    """``batch`` as consecutive batches of at most ``max_images`` images (instances follow their image;
    ``inst_image`` renumbered; ``global_input`` sliced). One batch that fits is returned as it is."""
    return [part for part, _ in split_batch_indices(batch, max_images)]


def split_batch_indices(batch: Batch, max_images: int) -> list[tuple[Batch, np.ndarray]]:
    """:func:`split_batch` with, for each part, the indices of its instances in ``batch`` (what
    ``InstanceState.select`` takes to split a state the same way)."""
    B = batch.full_L.shape[0]
    if B <= max_images:
        return [(batch, np.arange(len(batch.inst_image)))]
    parts = []
    for start in range(0, B, max_images):
        stop = min(B, start + max_images)
        sel = np.flatnonzero((batch.inst_image >= start) & (batch.inst_image < stop))
        g = None if batch.global_input is None else batch.global_input[start:stop]
        parts.append((Batch(full_L=batch.full_L[start:stop], hint_ab=batch.hint_ab[start:stop],
                            hint_mask=batch.hint_mask[start:stop], crop_L=batch.crop_L[sel] if len(batch.crop_L) == len(batch.inst_image) else batch.crop_L,
                            inst_image=batch.inst_image[sel] - start,
                            box_info=[np.asarray(b)[sel] for b in batch.box_info], global_input=g), sel))
    return parts

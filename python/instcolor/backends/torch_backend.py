"""PyTorch backend: the reference nets in eager mode (CPU or CUDA)."""
from __future__ import annotations

import numpy as np
import torch

from ..models.backbone import FEATURE_NAMES, NUM_CLASSES
from ..pipeline import Heads, InstanceState
from .segments import check_crops


NO_GLOBAL_BRANCH = ("Batch.global_input: these weights have no global hints branch (global_net; weights "
                    "trained with instcolor train --global-hints have it); leave the global hints out")


def _take_torch(t: torch.Tensor, idx: np.ndarray) -> torch.Tensor:
    return t.index_select(0, torch.as_tensor(idx, device=t.device))


class TorchBackend:
    """Runs the three nets. ``nets``: {'full', 'instance', 'fusion'} modules (see models.load_nets);
    they are moved to ``device`` (and converted to ``memory_format``) in place.

    ``channels_last``: run the full-image and instance nets in channels-last memory format (None =
    on the CPU only, where oneDNN's convolutions prefer it). The fusion net stays NCHW: the blend
    kernel between its blocks reads NCHW, so the instance features are made NCHW once each. Values
    are the same within float rounding.
    """

    name = "torch"

    def __init__(self, nets: dict, device: str | torch.device = "cpu", channels_last: bool | None = None):
        try:
            self.device = torch.device(device)
        except (RuntimeError, TypeError) as e:
            raise ValueError(f"device: not a torch device: {device!r} ({e})") from None
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device={device!r} but PyTorch sees no CUDA GPU")
        self.full = nets["full"].to(self.device).eval()
        self.instance = nets["instance"].to(self.device).eval()
        self.fusion = nets["fusion"].to(self.device).eval()
        self.width = self.full.width
        if channels_last is None:
            channels_last = self.device.type == "cpu"
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        for net in (self.full, self.instance):
            net.to(memory_format=self.memory_format)

    def set_fuse(self, fuse_fn) -> None:
        """Blend implementation used between fusion-net blocks (reference or native kernel)."""
        self.fusion.fuse_fn = fuse_fn

    def _t(self, a) -> torch.Tensor:
        return torch.as_tensor(np.asarray(a)).to(self.device)

    def _t4(self, a) -> torch.Tensor:
        """A (N, C, H, W) input of the full-image or instance net, in their memory format."""
        return self._t(a).contiguous(memory_format=self.memory_format)

    def _filled(self, shape: tuple[int, ...], value: float) -> torch.Tensor:
        """A constant net input made on the device, in the nets' memory format."""
        return torch.empty(shape, device=self.device, memory_format=self.memory_format).fill_(value)

    def _instance(self, crop_L: np.ndarray):
        """Instance net on crops; crops never get hints (ab planes 0, centred mask -0.5)."""
        M, S = crop_L.shape[0], crop_L.shape[-1]
        return self.instance(self._t4(crop_L), self._filled((M, 2, S, S), 0.0), self._filled((M, 1, S, S), -0.5))

    @property
    def has_global_hints(self) -> bool:
        """True when the full-image and fusion nets have the SIGGRAPH'17 global hints branch."""
        return self.full.global_net is not None and self.fusion.global_net is not None

    def run(self, batch) -> np.ndarray:
        """``batch``: :class:`instcolor.pipeline.Batch` -> ab (B, 2, S, S) float32 numpy."""
        return self.run_heads(batch, logits=False).ab

    @torch.inference_mode()
    def run_instances(self, crop_L: np.ndarray) -> InstanceState:
        """The instance net on crops (M, 1, S, S) once: the 13 features and the fusion net's 13
        per-instance blend logits, for :meth:`run_heads` ``(instances=...)``."""
        crop_L = check_crops(crop_L)
        M, S = crop_L.shape[0], crop_L.shape[-1]
        if M == 0:
            return InstanceState({}, {}, 0, S, self, _take_torch)
        _, feats = self._instance(crop_L)
        feats = {n: feats[n] for n in FEATURE_NAMES}
        logits = self.fusion.instance_logits(feats)
        # NCHW for the blend (it would make a contiguous copy at every call otherwise); same values
        feats = {n: f.contiguous() for n, f in feats.items()}
        return InstanceState(feats, logits, M, S, self, _take_torch)

    @torch.inference_mode()
    def run_heads(self, batch, logits: bool = True, instances: InstanceState | None = None) -> Heads:
        """``batch`` -> :class:`instcolor.pipeline.Heads`: ab (B, 2, S, S) and, with ``logits``, the class
        logits (B, 529, S/4, S/4) of conv8_3 (fused for images with instances). ``instances``: a
        :meth:`run_instances` result standing for the batch's M instances (``batch.crop_L`` is then not
        read); the same numbers as computing it here."""
        B, S = batch.full_L.shape[0], batch.full_L.shape[-1]
        g = batch.checked_global_input()
        if g is not None and not self.has_global_hints:
            raise ValueError(NO_GLOBAL_BRANCH)
        if instances is not None:
            instances.check(self, batch)
        ab = np.zeros((B, 2, S, S), np.float32)
        class_logits = np.zeros((B, NUM_CLASSES, S // 4, S // 4), np.float32) if logits else None
        plain, fused, inst_image = batch.split()
        if len(plain):
            a, lg = self.full.heads(self._t4(batch.full_L[plain]), self._t4(batch.hint_ab[plain]),
                                    self._t4(batch.hint_mask[plain]),
                                    global_input=None if g is None else self._t(g[plain]), with_class=logits)
            ab[plain] = a.float().cpu().numpy()
            if logits:
                class_logits[plain] = lg.float().cpu().numpy()
        if len(fused):
            state = instances if instances is not None else self.run_instances(batch.crop_L)
            levels = [torch.as_tensor(b) for b in batch.box_info]
            a, lg = self.fusion.fused_heads(self._t(batch.full_L[fused]), self._t(batch.hint_ab[fused]),
                                            self._t(batch.hint_mask[fused]), state.features, levels,
                                            torch.as_tensor(inst_image), inst_logits=state.logits,
                                            global_input=None if g is None else self._t(g[fused]), with_class=logits)
            ab[fused] = a.float().cpu().numpy()
            if logits:
                class_logits[fused] = lg.float().cpu().numpy()
        return Heads(ab=ab, logits=class_logits)

    @torch.inference_mode()
    def instance_outputs(self, crop_L: np.ndarray) -> tuple[np.ndarray, dict]:
        """Instance net on crops (no hints): (out_reg (M,2,S,S), features). For inspection/tests."""
        out, feats = self._instance(crop_L)
        return out.cpu().numpy(), {n: feats[n] for n in FEATURE_NAMES}

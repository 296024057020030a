"""PyTorch backend: the reference nets in eager mode (CPU or CUDA)."""
from __future__ import annotations

import numpy as np
import torch

from ..models.backbone import FEATURE_NAMES


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

    @torch.inference_mode()
    def run(self, batch) -> np.ndarray:
        """``batch``: :class:`instcolor.pipeline.Batch` -> ab (B, 2, S, S) float32 numpy."""
        B, S = batch.full_L.shape[0], batch.full_L.shape[-1]
        out = np.zeros((B, 2, S, S), np.float32)
        plain, fused, inst_image = batch.split()
        if len(plain):
            out[plain] = self.full(self._t4(batch.full_L[plain]), self._t4(batch.hint_ab[plain]),
                                   self._t4(batch.hint_mask[plain])).float().cpu().numpy()
        if len(fused):
            _, feats = self._instance(batch.crop_L)
            levels = [torch.as_tensor(b) for b in batch.box_info]
            out[fused] = self.fusion(self._t(batch.full_L[fused]), self._t(batch.hint_ab[fused]),
                                     self._t(batch.hint_mask[fused]), feats, levels,
                                     torch.as_tensor(inst_image)).float().cpu().numpy()
        return out

    @torch.inference_mode()
    def instance_outputs(self, crop_L: np.ndarray) -> tuple[np.ndarray, dict]:
        """Instance net on crops (no hints): (out_reg (M,2,S,S), features). For inspection/tests."""
        out, feats = self._instance(crop_L)
        return out.cpu().numpy(), {n: feats[n] for n in FEATURE_NAMES}

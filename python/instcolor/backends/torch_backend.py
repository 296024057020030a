"""PyTorch backend: the reference nets in eager mode (CPU or CUDA)."""
from __future__ import annotations

import numpy as np
import torch

from ..models.backbone import FEATURE_NAMES


class TorchBackend:
    """Runs the three nets. ``nets``: {'full', 'instance', 'fusion'} modules (see models.load_nets)."""

    name = "torch"

    def __init__(self, nets: dict, device: str | torch.device = "cpu"):
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

    def set_fuse(self, fuse_fn) -> None:
        """Blend implementation used between fusion-net blocks (reference or native kernel)."""
        self.fusion.fuse_fn = fuse_fn

    def _t(self, a) -> torch.Tensor:
        return torch.as_tensor(np.asarray(a)).to(self.device)

    def _instance(self, crop_L: np.ndarray):
        """Instance net on crops; crops never get hints (ab planes 0, centred mask -0.5)."""
        M, S = crop_L.shape[0], crop_L.shape[-1]
        return self.instance(self._t(crop_L), torch.zeros((M, 2, S, S), device=self.device),
                             torch.full((M, 1, S, S), -0.5, device=self.device))

    @torch.inference_mode()
    def run(self, batch) -> np.ndarray:
        """``batch``: :class:`instcolor.pipeline.Batch` -> ab (B, 2, S, S) float32 numpy."""
        B, S = batch.full_L.shape[0], batch.full_L.shape[-1]
        out = np.zeros((B, 2, S, S), np.float32)
        plain, fused, inst_image = batch.split()
        if len(plain):
            out[plain] = self.full(self._t(batch.full_L[plain]), self._t(batch.hint_ab[plain]),
                                   self._t(batch.hint_mask[plain])).float().cpu().numpy()
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

"""Helpers shared by the issue-13/16 measurement scripts (vivid_table, hint_sweep, suggestion_accuracy,
global_hints_gain, contact_sheet). Not a public API.

* photo lists (sorted by name, ``--limit`` takes the first N, as ``instcolor.train.data.list_images``);
* checks that the weights hold what a measurement needs: a *trained* classification head, the
  global hints branch; each failing check is one clear message (:class:`MissingCapability`), never
  a silent measurement of something untrained;
* CIE Lab in CIE units for uint8 RGB (the project's own conversion, :mod:`instcolor.color`) and
  CIE76 Delta-E.
"""
from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
DEFAULT_VAL = SHARED / "data" / "val"
DEFAULT_TRAIN = SHARED / "data" / "train"
DEFAULT_DETECTOR = SHARED / "models" / "yolox_nano_coco_416.onnx"


class MissingCapability(RuntimeError):
    """The weights or this instcolor lack what a measurement needs; the message says what and why."""


def fail(message: str, code: int = 2) -> int:
    print(f"{Path(sys.argv[0]).name}: {message}", file=sys.stderr)
    return code


# ----------------------------------------------------------------------------- photos
def photos(folder, limit: int | None = None) -> list[Path]:
    """The image files directly in ``folder``, sorted by name; the first ``limit`` when given.
    ValueError naming the folder when it is missing or holds no image."""
    from instcolor.train.data import list_images

    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{folder}: no such folder")
    files = list_images(folder)
    if limit is not None:
        if limit < 1:
            raise ValueError(f"--limit must be >= 1, got {limit}")
        files = files[:limit]
    if not files:
        raise ValueError(f"{folder}: no image files")
    return files


# ----------------------------------------------------------------------------- weights
def weights_dir(path) -> Path:
    """The folder ``path`` names, or the built-in starter weights for None."""
    if path is None:
        from instcolor.weights import starter_weights

        return Path(starter_weights())
    return Path(path)


def load_torch_nets(path) -> dict:
    """{'full', 'instance', 'fusion'} torch nets of a weights folder (official layout, run folder or
    bundle; None = the built-in starter). MissingCapability for an ONNX export folder."""
    from instcolor.models import CheckpointError
    from instcolor.models.checkpoint import load_nets

    d = weights_dir(path)
    try:
        return load_nets(d)
    except CheckpointError as e:
        raise MissingCapability(f"weights {d}: {e}") from None


def head_looks_untrained(net) -> bool:
    """True when every weight and bias of ``net.model_class`` (the 529-bin ab classification head,
    a 1x1 conv) lies within +-1/sqrt(fan_in): the support of PyTorch's default initialisation, which
    training with a classification loss leaves (the starter trained without one is exactly there)."""
    conv = net.model_class[0]
    bound = 1.0 / math.sqrt(conv.weight.shape[1] * conv.weight.shape[2] * conv.weight.shape[3])
    tol = bound * 1e-3 + 1e-6  # fp16 storage rounds the bound itself
    w = float(conv.weight.detach().abs().max())
    b = float(conv.bias.detach().abs().max()) if conv.bias is not None else 0.0
    return w <= bound + tol and b <= bound + tol


def require_trained_head(path) -> None:
    """MissingCapability unless the full-image and fusion nets' classification heads look trained."""
    nets = load_torch_nets(path)
    untrained = [k for k in ("full", "fusion") if head_looks_untrained(nets[k])]
    if untrained:
        raise MissingCapability(
            f"weights {weights_dir(path)}: the ab classification head of the {' and '.join(untrained)} net(s) is "
            "still at its random initialisation (every value within +-1/sqrt(fan_in)): these weights were trained "
            "without --class-weight, so their colour distribution means nothing. Use weights whose head was trained "
            "(instcolor train --class-weight W), or pass --allow-untrained-head to measure anyway")


def require_global_branch(path) -> None:
    """MissingCapability unless the full-image and fusion nets have the global hints branch."""
    nets = load_torch_nets(path)
    lacking = [k for k in ("full", "fusion") if getattr(nets[k], "global_net", None) is None]
    if lacking:
        raise MissingCapability(
            f"weights {weights_dir(path)}: the {' and '.join(lacking)} net(s) have no SIGGRAPH'17 global hints "
            "branch (global_net): global hints cannot be measured with them. Train one with "
            "instcolor train --global-hints")


def load_colorizer(path, backend: str = "torch", **options):
    """Colorizer.from_pretrained(path, backend, **options) where ``options`` are the decode options
    (decode=..., temperature=...) of the issue-13 API; MissingCapability when this instcolor lacks
    them or the weights do not load."""
    from instcolor import Colorizer
    from instcolor.models import CheckpointError

    options = {k: v for k, v in options.items() if v is not None}
    try:
        return Colorizer.from_pretrained(None if path is None else str(path), backend=backend, **options)
    except TypeError as e:
        raise MissingCapability(f"this instcolor's Colorizer.from_pretrained does not take {sorted(options)} "
                                f"(the distribution-decoding API of issue 13): {e}") from None
    except (CheckpointError, FileNotFoundError, ValueError) as e:
        raise MissingCapability(f"weights {weights_dir(path)}: {e}") from None


# ----------------------------------------------------------------------------- colour
def rgb_to_lab(rgb) -> np.ndarray:
    """(..., 3) uint8 RGB -> (..., 3) float64 CIE Lab (L in 0..100, a, b in CIE units), with the
    project's conversion (D65 sRGB, as the nets see colours)."""
    import torch

    from instcolor import color

    arr = np.asarray(rgb, np.uint8)
    shape = arr.shape
    flat = torch.from_numpy(arr.reshape(1, -1, 1, 3).astype(np.float32) / 255.0).permute(0, 3, 1, 2)
    lab = color.rgb_to_lab(flat)[0, :, :, 0].T.double().numpy()  # (n, 3) normalised
    out = np.empty_like(lab)
    out[:, 0] = lab[:, 0] * color.L_NORM + color.L_CENT
    out[:, 1:] = lab[:, 1:] * color.AB_NORM
    return out.reshape(shape[:-1] + (3,))


def lab_to_rgb(lab) -> np.ndarray:
    """(..., 3) CIE Lab -> (..., 3) uint8 RGB (out-of-gamut values clipped, as the colorizer composes)."""
    import torch

    from instcolor import color

    arr = np.asarray(lab, np.float64)
    shape = arr.shape
    n = arr.reshape(-1, 3).astype(np.float32)
    norm = np.stack([(n[:, 0] - color.L_CENT) / color.L_NORM, n[:, 1] / color.AB_NORM, n[:, 2] / color.AB_NORM], 1)
    t = torch.from_numpy(norm.T.copy()).reshape(1, 3, -1, 1)
    return color.to_uint8(color.lab_to_rgb(t))[0, :, 0, :].reshape(shape[:-1] + (3,))


def delta_e76(lab1, lab2) -> np.ndarray:
    """CIE76 colour difference: the Euclidean distance of two Lab colours (arrays broadcast, last axis 3)."""
    d = np.asarray(lab1, np.float64) - np.asarray(lab2, np.float64)
    return np.sqrt((d * d).sum(axis=-1))


def markdown_table(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" if i == 0 else "---:" for i in range(len(head))) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)

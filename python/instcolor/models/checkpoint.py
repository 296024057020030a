"""Checkpoints in the official file layout, loaded strictly (bundles: see :mod:`.bundle`).

A directory holds ``latest_net_GComp.pth`` (full-image net), ``latest_net_G.pth`` (instance
net) and ``latest_net_GF.pth`` (fusion net), each a plain state dict. Keys may carry the
``module.`` prefix of a DataParallel wrapper. Unlike the official non-strict loader (which
silently yields grey images on a mismatch), a checkpoint that does not fit raises
:class:`CheckpointError` listing the missing, unexpected and mis-shaped keys.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn as nn

from .._fileio import atomic_path
from .backbone import InstanceNet, SIGGRAPHBackbone
from .fusion import FusionNet

OFFICIAL_FILES = {"full": "latest_net_GComp.pth", "instance": "latest_net_G.pth", "fusion": "latest_net_GF.pth"}
_NET_CLASSES = {"full": SIGGRAPHBackbone, "instance": InstanceNet, "fusion": FusionNet}
_OPTIONAL_SUFFIXES = (".num_batches_tracked",)  # absent in files saved by PyTorch < 0.4.1; unused in eval


class CheckpointError(ValueError):
    """A weights file or directory that cannot be used, with the reason."""


def _summarise(keys, limit=8) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def strip_module_prefix(state: dict) -> dict:
    if state and all(k.startswith("module.") for k in state):
        return {k[len("module."):]: v for k, v in state.items()}
    return state


def read_state_dict(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle / zip errors of many kinds
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({type(e).__name__}: {e})") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: expected a state dict of tensors")
    return strip_module_prefix(state)


def load_state_dict_strict(module: nn.Module, state: dict, source: str = "checkpoint") -> None:
    """Load ``state`` into ``module``; every key must match by name and shape."""
    state = strip_module_prefix(state)
    expected = module.state_dict()
    missing = [k for k in expected if k not in state and not k.endswith(_OPTIONAL_SUFFIXES)]
    unexpected = [k for k in state if k not in expected]
    shapes = [f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}" for k, v in expected.items()
              if k in state and tuple(state[k].shape) != tuple(v.shape)]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing keys ({len(missing)}): {_summarise(missing)}")
        if unexpected:
            parts.append(f"unexpected keys ({len(unexpected)}): {_summarise(unexpected)}")
        if shapes:
            parts.append(f"shape mismatches ({len(shapes)}): {_summarise(shapes, 4)}")
        raise CheckpointError(f"{source} does not fit {type(module).__name__}: " + "; ".join(parts))
    module.load_state_dict({k: v for k, v in state.items()}, strict=False)


def infer_width(state: dict, source: str = "checkpoint") -> float:
    w = state.get("model1.0.weight")
    if w is None or w.ndim != 4:
        raise CheckpointError(f"{source}: no 'model1.0.weight' conv weight; not an InstColorization checkpoint")
    return w.shape[0] / 64.0


def load_net(kind: str, path: str | os.PathLike) -> nn.Module:
    """Build the net of ``kind`` ('full' | 'instance' | 'fusion') sized by the file, load it strictly, eval mode."""
    state = read_state_dict(path)
    net = _NET_CLASSES[kind](width=infer_width(state, str(path)))
    load_state_dict_strict(net, state, str(path))
    return net.eval()


def load_nets(directory: str | os.PathLike) -> dict[str, nn.Module]:
    """Load the three nets from a weights directory -> {'full', 'instance', 'fusion'} (eval mode).

    The directory is either in the official layout (the three ``.pth`` files) or an instcolor
    bundle (``config.json`` + ``model.safetensors``, see :mod:`instcolor.models.bundle`).
    """
    from .bundle import BUNDLE_FILES, is_bundle, load_bundle

    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"weights directory not found: {directory}")
    missing = [f for f in OFFICIAL_FILES.values() if not (directory / f).is_file()]
    if is_bundle(directory) or (len(missing) == len(OFFICIAL_FILES)
                                and any((directory / f).is_file() for f in BUNDLE_FILES)):
        return load_bundle(directory)  # a complete bundle, or a partial one (its error names the missing file)
    if missing:
        raise CheckpointError(f"{directory}: missing weights file(s) {', '.join(missing)} "
                              f"(expected {', '.join(OFFICIAL_FILES.values())}, "
                              f"or an instcolor bundle: config.json + model.safetensors)")
    nets = {kind: load_net(kind, directory / fname) for kind, fname in OFFICIAL_FILES.items()}
    widths = {kind: net.width for kind, net in nets.items()}
    if len(set(widths.values())) != 1:
        raise CheckpointError(f"{directory}: the three nets have different widths {widths}")
    return nets


def save_official(directory: str | os.PathLike, nets: dict[str, nn.Module], fusion_prefix: bool = False) -> None:
    """Write ``nets`` ({'full', 'instance', 'fusion'}) in the official layout. ``fusion_prefix``
    adds the ``module.`` prefix to the fusion file, as the official training script saves it."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for kind, fname in OFFICIAL_FILES.items():
        state = {k: v.detach().cpu().contiguous() for k, v in nets[kind].state_dict().items()}
        if kind == "fusion" and fusion_prefix:
            state = {"module." + k: v for k, v in state.items()}
        with atomic_path(directory / fname) as tmp:
            torch.save(state, tmp)


DEFAULT_SIZE = 256  # the official models' processing size


def trained_size(directory: str | os.PathLike) -> int | None:
    """The processing size S a weights folder was trained at, when it records one: a bundle's
    ``info["size"]`` or a training run folder's ``config.json`` ``size``; None otherwise (the
    official files do not record it; they were trained at 256)."""
    import json

    directory = Path(directory)
    size = None
    try:
        from .bundle import bundle_info, is_bundle

        if is_bundle(directory):
            size = bundle_info(directory).get("size")
        elif (directory / "config.json").is_file() and (directory / "latest_net_G.pth").is_file():
            config = json.loads((directory / "config.json").read_text())
            size = config.get("size") if isinstance(config, dict) and "stage" in config else None
    except (OSError, ValueError, CheckpointError):
        return None
    if isinstance(size, int) and not isinstance(size, bool) and size >= 8 and size % 8 == 0:
        return size
    return None

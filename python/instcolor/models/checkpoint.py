"""Checkpoints in the official file layout, loaded strictly (bundles: see :mod:`.bundle`).

A directory holds ``latest_net_GComp.pth`` (full-image net), ``latest_net_G.pth`` (instance
net) and ``latest_net_GF.pth`` (fusion net), each a plain state dict. Keys may carry the
``module.`` prefix of a DataParallel wrapper. Unlike the official non-strict loader (which
silently yields grey images on a mismatch), a checkpoint that does not fit raises
:class:`CheckpointError` listing the missing, unexpected and mis-shaped keys.

The files are untrusted input: they are unpickled with ``weights_only`` (tensors and plain
containers only; a file that would run code is refused), and anything unreadable raises
:class:`CheckpointError` naming the file.
"""
from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # (annotations only)
    import torch.nn as nn

from .._fileio import atomic_path
from .bundle import BUNDLE_FILES, bundle_info, is_bundle, load_bundle
from .state import CheckpointError, check_tensor_dict, load_state_dict_strict, net_options, strip_module_prefix

# PyTorch is imported where a function needs it (reading / writing .pth files, building nets), so that
# the torch-free install can import this module (file names, trained_size, the error class).
OFFICIAL_FILES = {"full": "latest_net_GComp.pth", "instance": "latest_net_G.pth", "fusion": "latest_net_GF.pth"}

__all__ = ["OFFICIAL_FILES", "CheckpointError", "load_state_dict_strict", "strip_module_prefix", "read_state_dict",
           "safe_torch_load", "infer_width", "load_net", "load_nets", "save_official", "DEFAULT_SIZE",
           "trained_size"]


def _first_line(e: BaseException, limit: int = 200) -> str:
    text = (str(e).strip().splitlines() or [""])[0]
    return text if len(text) <= limit else text[:limit] + "..."


def _unpickling_detail(e: BaseException) -> str:
    """The informative line of torch's (long, multi-line) weights-only unpickling error."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    for i, ln in enumerate(lines):
        if "WeightsUnpickler error:" in ln:
            rest = ln.split("WeightsUnpickler error:", 1)[1].strip() or (lines[i + 1] if i + 1 < len(lines) else "")
            return rest[:200]
    return _first_line(e)


def require_torch(path):
    """The ``torch`` module, or :class:`CheckpointError` naming ``path`` when PyTorch is not installed:
    ``.pth`` files are PyTorch pickles, only PyTorch reads them. The message says how to convert them
    (``instcolor bundle``, where PyTorch is installed) for the torch-free install."""
    try:
        import torch
    except ImportError:
        raise CheckpointError(
            f"{path}: a PyTorch checkpoint (.pth), and PyTorch is not installed here. Convert the weights "
            f"folder once where PyTorch is installed (pip install 'instcolor[torch]'): "
            f"instcolor bundle --weights {Path(path).parent} -o BUNDLE_DIR; then pass BUNDLE_DIR "
            f"(config.json + model.safetensors), which this install reads without PyTorch") from None
    return torch


def safe_torch_load(path: str | os.PathLike, what: str = "PyTorch checkpoint"):
    """``torch.load(path, weights_only=True)`` on the CPU, every failure as one
    :class:`CheckpointError` naming ``path``: missing or empty file, truncated or corrupt data,
    and a pickle that would build objects other than tensors and plain containers (refused
    without running anything: that is how a pickle runs code)."""
    import re
    import warnings

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{what} not found: {path}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: empty file; not a {what}")
    torch = require_torch(path)
    try:
        with warnings.catch_warnings():  # (e.g. torch's note on a pickle protocol it did not write)
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL ([\w.]+)", str(e))
        if found:
            raise CheckpointError(f"{path}: refused: the file would create the Python object {found.group(1)}, and "
                                  "unpickling it could run code; only tensors and plain values are loaded") from None
        raise CheckpointError(f"{path}: not a readable {what} ({_unpickling_detail(e)})") from None
    except Exception as e:  # zip / pickle / storage errors of many kinds
        raise CheckpointError(f"{path}: not a readable {what} ({type(e).__name__}: {_first_line(e)})") from None


def read_state_dict(path: str | os.PathLike) -> dict:
    """The state dict in the ``.pth`` file ``path`` (a plain dict of tensors, or one under a
    ``state_dict`` key; ``module.`` prefixes dropped), see :func:`safe_torch_load`."""
    state = safe_torch_load(path)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    check_tensor_dict(state, str(path))
    return strip_module_prefix(state)


def infer_width(state: dict, source: str = "checkpoint") -> float:
    """The width multiplier of a state dict: the first conv's output channels / 64, in (0, 1]."""
    import torch

    w = state.get("model1.0.weight")
    if not isinstance(w, torch.Tensor) or w.ndim != 4:
        raise CheckpointError(f"{source}: no 'model1.0.weight' conv weight; not an InstColorization checkpoint")
    if not 1 <= w.shape[0] <= 64:  # (a made-up huge width would build nets that do not fit in memory)
        raise CheckpointError(f"{source}: 'model1.0.weight' has {w.shape[0]} output channels; an InstColorization "
                              "net has 1 to 64 (64 = width 1.0)")
    return w.shape[0] / 64.0


def load_net(kind: str, path: str | os.PathLike) -> nn.Module:
    """Build the net of ``kind`` ('full' | 'instance' | 'fusion') sized by the file, load it strictly, eval mode."""
    from .state import NET_CLASSES

    state = read_state_dict(path)
    net = NET_CLASSES[kind](width=infer_width(state, str(path)), **net_options(state))
    load_state_dict_strict(net, state, str(path))
    return net.eval()


def load_nets(directory: str | os.PathLike) -> dict[str, nn.Module]:
    """Load the three nets from a weights directory -> {'full', 'instance', 'fusion'} (eval mode).

    The directory is either in the official layout (the three ``.pth`` files) or an instcolor
    bundle (``config.json`` + ``model.safetensors``, see :mod:`instcolor.models.bundle`).
    """
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
    """Write ``nets`` ({'full', 'instance', 'fusion'}) in the official layout (each file replaced
    atomically; other files in ``directory`` are left alone). ``fusion_prefix`` adds the
    ``module.`` prefix to the fusion file, as the official training script saves it."""
    import torch

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for kind, fname in OFFICIAL_FILES.items():
        state = {k: v.detach().cpu().contiguous() for k, v in nets[kind].state_dict().items()}
        if kind == "fusion" and fusion_prefix:
            state = {"module." + k: v for k, v in state.items()}
        with atomic_path(directory / fname) as tmp:
            torch.save(state, tmp)


def is_untrained_official(directory: str | os.PathLike) -> bool:
    """True when ``directory`` holds exactly the three official files (nothing else but the
    output marker) and every BatchNorm in them still has its initial statistics (running mean 0,
    variance 1, no batches tracked): weights as ``instcolor init-weights`` writes them, which
    nobody trained. Never raises; a file that cannot be read counts as not untrained."""
    from .._fileio import OUTPUT_MARKER

    directory = Path(directory)
    try:
        names = {p.name for p in directory.iterdir()} - {OUTPUT_MARKER}
        if names != set(OFFICIAL_FILES.values()):
            return False
        for fname in OFFICIAL_FILES.values():
            state = read_state_dict(directory / fname)
            for k, v in state.items():
                if (k.endswith(".running_mean") and bool(v.ne(0).any())) or \
                        (k.endswith(".running_var") and bool(v.ne(1).any())) or \
                        (k.endswith(".num_batches_tracked") and bool(v.ne(0).any())):
                    return False
        return True
    except (OSError, CheckpointError):
        return False


DEFAULT_SIZE = 256  # the official models' processing size


def trained_size(directory: str | os.PathLike) -> int | None:
    """The processing size S a weights folder was trained at, when it records one: a bundle's
    ``info["size"]`` or a training run folder's ``config.json`` ``size``; None otherwise (the
    official files do not record it; they were trained at 256)."""
    import json

    directory = Path(directory)
    size = None
    try:
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

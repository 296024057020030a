"""A compact shipping format for the three nets: one safetensors file plus a JSON config.

A bundle is a directory holding

* ``model.safetensors``: the state dicts of the full-image, instance and fusion nets, keys
  prefixed ``full.``, ``instance.``, ``fusion.``; floating tensors in float16, integer buffers
  (``num_batches_tracked``) as int64. A tensor that is bit-identical (after the float16
  conversion) to the same-named tensor of a net stored before it (order: full, instance,
  fusion) is stored once; e.g. the fusion net's backbone is frozen in training and equals the
  full net's, so ``fusion.model1.0.weight`` is recorded as ``full.model1.0.weight``.
* ``config.json``: ``{"format": "instcolor-bundle", "version": 1, "width": w,
  "nets": {kind: class name}, "shared": {stored-as-alias: stored key}, "sha256": <of
  model.safetensors>, "info": {...} | null}``.

:func:`load_bundle` rebuilds the nets in float32 at the recorded width, verifies the hash and
loads every net strictly; anything that does not fit raises :class:`CheckpointError`.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # (annotations only)
    import torch
    import torch.nn as nn

from .._fileio import OUTPUT_MARKER, _umask, atomic_path, publish_dir
from .arch import NET_CLASS_NAMES
from .state import CheckpointError, load_state_dict_strict, net_options

# PyTorch is imported by the functions that build or save nets; reading a bundle's config and its
# tensors as numpy arrays (load_bundle_arrays, for the torch-free install) needs none.

FORMAT = "instcolor-bundle"
VERSION = 1
MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
BUNDLE_FILES = (CONFIG_FILE, MODEL_FILE)
KINDS = ("full", "instance", "fusion")  # storage order: a shared tensor points to the earliest net holding it


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _bits(t: torch.Tensor) -> torch.Tensor:
    """The tensor's bytes, for bit-exact comparison (-0.0 != 0.0, NaN payloads count)."""
    import torch

    return t.reshape(-1).view(torch.uint8)


def _packed_state(net: nn.Module) -> dict[str, torch.Tensor]:
    import torch

    out = {}
    for k, v in net.state_dict().items():
        v = v.detach().cpu()
        if v.is_floating_point():
            v = v.to(torch.float16)
        out[k] = v.contiguous()  # integer buffers (num_batches_tracked) stay int64
    return out


def is_bundle(directory: str | os.PathLike) -> bool:
    """True when ``directory`` holds both ``config.json`` and ``model.safetensors`` (the files are
    not opened; :func:`load_bundle` validates them)."""
    d = Path(directory)
    return (d / CONFIG_FILE).is_file() and (d / MODEL_FILE).is_file()


def save_bundle(directory: str | os.PathLike, nets: dict[str, nn.Module], *, info: dict | None = None) -> Path:
    """Write ``nets`` ({'full', 'instance', 'fusion'}) as a bundle in ``directory``; returns its path.

    ``info``: free-form JSON-serialisable details stored in config.json (e.g. ``width``,
    ``train_images``). The bundle is built in a temporary folder beside ``directory`` and moved
    into place; on any error nothing is left behind. An existing bundle at ``directory`` is
    replaced (an instcolor output marker in it is kept); an existing folder with any other file
    is refused (``FileExistsError``), so that official weights are never deleted by writing a
    bundle over them.
    """
    import torch
    from safetensors.torch import save_file

    from .state import NET_CLASSES as _NET_CLASSES

    directory = Path(directory)
    if set(nets) != set(KINDS):
        raise ValueError(f"nets must be exactly {{'full', 'instance', 'fusion'}}, got {sorted(nets)}")
    for kind in KINDS:
        if not isinstance(nets[kind], _NET_CLASSES[kind]):
            raise TypeError(f"nets[{kind!r}] must be a {_NET_CLASSES[kind].__name__}, got {type(nets[kind]).__name__}")
    widths = {kind: float(nets[kind].width) for kind in KINDS}
    if len(set(widths.values())) != 1:
        raise ValueError(f"the three nets have different widths {widths}")
    _check_info(info)
    if directory.exists():
        if not directory.is_dir():
            raise FileExistsError(f"{directory}: exists and is not a folder")
        others = sorted(p.name for p in directory.iterdir() if p.name not in (CONFIG_FILE, MODEL_FILE, OUTPUT_MARKER))
        if others:
            raise FileExistsError(f"{directory}: folder exists and holds other files ({', '.join(others[:4])}"
                                  f"{', ...' if len(others) > 4 else ''}); write the bundle to a new or empty folder")

    tensors: dict[str, torch.Tensor] = {}
    shared: dict[str, str] = {}
    stored_by_name: dict[str, list[str]] = {}  # state-dict key -> stored kinds holding it
    for kind in KINDS:
        for k, v in _packed_state(nets[kind]).items():
            target = None
            for other in stored_by_name.get(k, ()):
                w = tensors[f"{other}.{k}"]
                if w.dtype == v.dtype and w.shape == v.shape and torch.equal(_bits(w), _bits(v)):
                    target = f"{other}.{k}"
                    break
            if target is not None:
                shared[f"{kind}.{k}"] = target
            else:
                tensors[f"{kind}.{k}"] = v
                stored_by_name.setdefault(k, []).append(kind)

    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", suffix=".tmp", dir=directory.parent))
    old = None
    try:
        # one metadata entry only: safetensors writes metadata in hash-map order, so more would make
        # the file bytes (and its sha256) differ from save to save
        save_file(tensors, str(tmp / MODEL_FILE), metadata={"format": "pt"})
        config = {"format": FORMAT, "version": VERSION, "width": widths["full"],
                  "nets": {kind: type(nets[kind]).__name__ for kind in KINDS},
                  "shared": shared, "sha256": _sha256_file(tmp / MODEL_FILE), "info": info}
        (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=1) + "\n")
        for f in BUNDLE_FILES:  # safetensors creates its file 0600; give both the mode of a plain file
            os.chmod(tmp / f, 0o666 & ~_umask())
        if (directory / OUTPUT_MARKER).is_file():  # the folder's "written by" record stays with it
            shutil.copy2(directory / OUTPUT_MARKER, tmp / OUTPUT_MARKER)
        publish_dir(tmp)
        if directory.exists():  # rename the old bundle aside, move the new one in, then delete the old
            old = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", suffix=".old", dir=directory.parent))
            os.replace(directory, old / "bundle")
        try:
            os.replace(tmp, directory)
        except BaseException:
            if old is not None:
                os.replace(old / "bundle", directory)
            raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and not (old / "bundle").exists():
            shutil.rmtree(old, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return directory


def read_bundle_config(directory: str | os.PathLike) -> dict:
    """config.json of the bundle at ``directory``, checked for format and version."""
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"{path}: bundle config not found")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise CheckpointError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(config, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    if config.get("format") != FORMAT:
        raise CheckpointError(f"{path}: format {config.get('format')!r}, expected {FORMAT!r}; not an instcolor bundle")
    if config.get("version") != VERSION:
        raise CheckpointError(f"{path}: bundle version {config.get('version')!r} is not supported "
                              f"(this instcolor reads version {VERSION})")
    width = config.get("width")
    if isinstance(width, bool) or not isinstance(width, (int, float)) or not math.isfinite(width) or not 0 < width <= 1:
        raise CheckpointError(f"{path}: 'width' must be a number in (0, 1], got {width!r}")
    names = config.get("nets")
    expected = dict(NET_CLASS_NAMES)
    if names != expected:
        raise CheckpointError(f"{path}: 'nets' is {names!r}, expected {expected!r}")
    shared = config.get("shared", {})
    if not isinstance(shared, dict) or not all(isinstance(a, str) and isinstance(b, str) for a, b in shared.items()):
        raise CheckpointError(f"{path}: 'shared' must map tensor names to tensor names")
    if not isinstance(config.get("sha256"), str):
        raise CheckpointError(f"{path}: no 'sha256' of {MODEL_FILE}")
    info = config.get("info")
    if info is not None and not isinstance(info, dict):
        raise CheckpointError(f"{path}: 'info' must be an object or null")
    return config


def load_bundle_states(directory: str | os.PathLike, framework: str = "pt") -> tuple[float, dict[str, dict]]:
    """The checked tensors of the bundle at ``directory`` -> (width, {'full', 'instance', 'fusion':
    {state-dict key: tensor}}), shared tensors resolved, as stored (float16 / int64). ``framework``:
    ``"pt"`` (torch tensors) or ``"np"`` (numpy arrays, no PyTorch needed). Raises
    :class:`CheckpointError` for missing files, a bad config, a hash mismatch or stray names; whether
    the tensors fit the nets is checked by the caller (:func:`load_bundle`, or
    :func:`instcolor.onnx_graphs.check_states` for arrays)."""
    from safetensors import SafetensorError

    if framework == "pt":
        from safetensors.torch import load_file
    elif framework == "np":
        from safetensors.numpy import load_file
    else:
        raise ValueError(f"framework must be 'pt' or 'np', got {framework!r}")
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"weights directory not found: {directory}")
    missing = [f for f in (CONFIG_FILE, MODEL_FILE) if not (directory / f).is_file()]
    if missing:
        raise CheckpointError(f"{directory}: incomplete instcolor bundle, missing {', '.join(missing)} "
                              f"(a bundle holds {CONFIG_FILE} and {MODEL_FILE})")
    config = read_bundle_config(directory)
    model_path = directory / MODEL_FILE
    digest = _sha256_file(model_path)
    if digest != config["sha256"].lower():
        raise CheckpointError(f"{model_path}: sha256 mismatch: the file hashes to {digest}, {CONFIG_FILE} records "
                              f"{config['sha256']}; the file is corrupt or was modified")
    try:
        tensors = load_file(str(model_path), **({"device": "cpu"} if framework == "pt" else {}))
    except (SafetensorError, OSError, ValueError, TypeError) as e:
        raise CheckpointError(f"{model_path}: not a readable safetensors file ({e})") from None

    states: dict[str, dict] = {kind: {} for kind in KINDS}
    stray = []
    for name, t in tensors.items():
        kind, _, key = name.partition(".")
        if kind not in states or not key:
            stray.append(name)
            continue
        states[kind][key] = t
    if stray:
        raise CheckpointError(f"{model_path}: tensors without a full./instance./fusion. prefix: "
                              f"{', '.join(sorted(stray)[:8])}")
    for alias, target in config["shared"].items():
        kind, _, key = alias.partition(".")
        if kind not in states or not key:
            raise CheckpointError(f"{directory / CONFIG_FILE}: shared entry {alias!r} does not name a net's tensor")
        if alias in tensors:
            raise CheckpointError(f"{model_path}: {alias!r} is both stored and listed as shared")
        if target not in tensors:
            raise CheckpointError(f"{model_path}: shared tensor {alias!r} -> {target!r}, but {target!r} is not stored")
        states[kind][key] = tensors[target]
    return float(config["width"]), states


def load_bundle(directory: str | os.PathLike) -> dict[str, nn.Module]:
    """Load the three nets of the bundle at ``directory`` -> {'full', 'instance', 'fusion'}
    (float32, eval mode, at the recorded width). Raises :class:`CheckpointError` for missing
    files, a bad config, a hash mismatch or tensors that do not fit the nets."""
    from .state import NET_CLASSES as _NET_CLASSES

    width, states = load_bundle_states(directory, "pt")
    model_path = Path(directory) / MODEL_FILE
    nets = {}
    for kind in KINDS:
        state = {k: (v.float() if v.is_floating_point() else v) for k, v in states[kind].items()}
        net = _NET_CLASSES[kind](width=width, **net_options(state))
        load_state_dict_strict(net, state, f"{model_path} [{kind}]")
        nets[kind] = net.eval()
    return nets


def bundle_info(directory: str | os.PathLike) -> dict:
    """The ``info`` object of a bundle's config.json ({} when absent)."""
    return read_bundle_config(directory).get("info") or {}


def _check_info(info) -> None:
    """``info`` must be None or a JSON-serialisable dict (TypeError / ValueError otherwise)."""
    if info is not None and not isinstance(info, dict):
        raise TypeError(f"info must be a dict or None, got {type(info).__name__}")
    try:
        json.dumps(info, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise ValueError(f"info is not JSON-serialisable: {e}") from None


def set_bundle_info(directory: str | os.PathLike, info: dict | None) -> dict:
    """Replace the ``info`` object of the bundle at ``directory`` (config.json rewritten
    atomically, everything else as it was). The hash in config.json covers model.safetensors
    only, so it stays valid; the bundle is loaded first to prove that. Returns the new config."""
    _check_info(info)
    load_bundle(directory)  # refuses a bundle that does not load (corrupt, modified, not a bundle)
    config = read_bundle_config(directory)
    config["info"] = info
    with atomic_path(Path(directory) / CONFIG_FILE) as tmp:
        tmp.write_text(json.dumps(config, indent=1) + "\n")
    return config

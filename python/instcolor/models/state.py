"""State-dict pieces shared by both weights formats (below :mod:`.checkpoint` and :mod:`.bundle`,
which import from here and never from each other the wrong way: checkpoint -> bundle -> state).

:class:`CheckpointError`, the net class of each kind, and strict loading of a state dict into a
net with a readable report of what does not fit.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import CheckpointError  # noqa: F401  (torch-free; defined there, re-exported here)

if TYPE_CHECKING:  # (annotations only)
    import torch.nn as nn

_OPTIONAL_SUFFIXES = (".num_batches_tracked",)  # absent in files saved by PyTorch < 0.4.1; unused in eval


def __getattr__(name: str):
    """``NET_CLASSES`` ({kind: net class}) on first use: it imports PyTorch, the rest of this module does not."""
    if name == "NET_CLASSES":
        from .backbone import InstanceNet, SIGGRAPHBackbone
        from .fusion import FusionNet

        return {"full": SIGGRAPHBackbone, "instance": InstanceNet, "fusion": FusionNet}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _summarise(keys, limit=8) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def strip_module_prefix(state: dict) -> dict:
    """Drop the ``module.`` prefix of a DataParallel wrapper when every key carries it."""
    if state and all(isinstance(k, str) and k.startswith("module.") for k in state):
        return {k[len("module."):]: v for k, v in state.items()}
    return state


def check_tensor_dict(state, source: str) -> dict:
    """``state`` as a dict of str -> real-valued tensor, else :class:`CheckpointError` naming ``source``."""
    import torch

    if not isinstance(state, dict):
        raise CheckpointError(f"{source}: expected a state dict (names -> tensors), got {type(state).__name__}")
    bad = [k for k, v in state.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{source}: expected a state dict of tensors; {len(bad)} entr"
                              f"{'y is' if len(bad) == 1 else 'ies are'} not a named tensor "
                              f"(e.g. {bad[0]!r}: {type(state[bad[0]]).__name__})")
    odd = [k for k, v in state.items() if v.is_complex() or v.dtype == torch.bool or v.is_quantized]
    if odd:
        raise CheckpointError(f"{source}: tensors of an unusable type ({_summarise(odd, 4)}: "
                              f"{state[odd[0]].dtype})")
    return state


def fit_problems(expected: dict, got: dict) -> list[str]:
    """``expected`` / ``got``: {key: shape tuple} of a net and of a state dict -> the parts of a
    "does not fit" message (missing keys, unexpected keys, shape mismatches); empty when they fit.
    Keys ending in ``_OPTIONAL_SUFFIXES`` may be missing."""
    missing = [k for k in expected if k not in got and not k.endswith(_OPTIONAL_SUFFIXES)]
    unexpected = [k for k in got if k not in expected]
    shapes = [f"{k} {got[k]} != {v}" for k, v in expected.items() if k in got and got[k] != v]
    parts = []
    if missing:
        parts.append(f"missing keys ({len(missing)}): {_summarise(missing)}")
    if unexpected:
        parts.append(f"unexpected keys ({len(unexpected)}): {_summarise(unexpected)}")
    if shapes:
        parts.append(f"shape mismatches ({len(shapes)}): {_summarise(shapes, 4)}")
    return parts


def load_state_dict_strict(module: nn.Module, state: dict, source: str = "checkpoint") -> None:
    """Load ``state`` into ``module``; every key must match by name and shape."""
    state = strip_module_prefix(check_tensor_dict(state, source))
    expected = module.state_dict()
    parts = fit_problems({k: tuple(v.shape) for k, v in expected.items()},
                         {k: tuple(v.shape) for k, v in state.items()})
    if parts:
        raise CheckpointError(f"{source} does not fit {type(module).__name__}: " + "; ".join(parts))
    try:
        module.load_state_dict(dict(state), strict=False)
    except RuntimeError as e:  # e.g. a tensor whose type cannot be copied into the parameter
        raise CheckpointError(f"{source}: cannot load into {type(module).__name__} ({str(e).splitlines()[0]})") from None


def net_options(state: dict) -> dict:
    """Constructor options a state dict implies beyond the width: ``global_hints`` when it holds
    the SIGGRAPH'17 global hints branch (``global_net.*``; never in official checkpoints)."""
    return {"global_hints": True} if any(k.startswith("global_net.") for k in state) else {}

"""PyTorch definitions of the three InstColorization nets, with official state-dict names.

The names below are imported on first use (PEP 562), so ``import instcolor.models`` (and the
torch-free modules under it: :mod:`.arch`, reading a bundle's config) does not import PyTorch.
"""
from __future__ import annotations

import importlib

_WHERE = {"FEATURE_LEVELS": "arch", "FEATURE_NAMES": "arch", "channels": "arch", "BLOCK_NAMES": "arch",
          "InstanceNet": "backbone", "SIGGRAPHBackbone": "backbone",
          "FusionNet": "fusion", "WeightGenerator": "fusion",
          "is_bundle": "bundle", "load_bundle": "bundle", "save_bundle": "bundle",
          "OFFICIAL_FILES": "checkpoint", "load_nets": "checkpoint", "load_state_dict_strict": "checkpoint",
          "save_official": "checkpoint"}

__all__ = ["FEATURE_LEVELS", "FEATURE_NAMES", "InstanceNet", "SIGGRAPHBackbone", "FusionNet", "WeightGenerator",
           "BLOCK_NAMES", "CheckpointError", "OFFICIAL_FILES", "load_nets", "load_state_dict_strict",
           "save_official", "channels", "save_bundle", "load_bundle", "is_bundle"]


def __getattr__(name: str):
    if name == "CheckpointError":
        from ..errors import CheckpointError

        return CheckpointError
    if name in _WHERE:
        return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))

"""PyTorch definitions of the three InstColorization nets, with official state-dict names."""
from .backbone import FEATURE_LEVELS, FEATURE_NAMES, InstanceNet, SIGGRAPHBackbone, channels
from .bundle import is_bundle, load_bundle, save_bundle
from .checkpoint import CheckpointError, OFFICIAL_FILES, load_nets, load_state_dict_strict, save_official
from .fusion import BLOCK_NAMES, FusionNet, WeightGenerator

__all__ = ["FEATURE_LEVELS", "FEATURE_NAMES", "InstanceNet", "SIGGRAPHBackbone", "FusionNet", "WeightGenerator",
           "BLOCK_NAMES", "CheckpointError", "OFFICIAL_FILES", "load_nets", "load_state_dict_strict",
           "save_official", "channels", "save_bundle", "load_bundle", "is_bundle"]

"""instcolor: instance-aware image colorization (Su, Chu, Huang, CVPR 2020)."""
from .prepare import Hint, HintPlanes

__version__ = "0.1.0"
__all__ = ["Hint", "HintPlanes", "__version__"]

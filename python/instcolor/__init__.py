"""instcolor: instance-aware image colorization (Su, Chu, Huang, CVPR 2020)."""
from .colorizer import Colorizer
from .pipeline import ColorizeResult
from .prepare import Hint, HintPlanes

__version__ = "0.1.0"
__all__ = ["Colorizer", "ColorizeResult", "Hint", "HintPlanes", "__version__"]

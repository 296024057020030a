"""instcolor: instance-aware image colorization (Su, Chu, Huang, CVPR 2020)."""
from .colorizer import Colorizer
from .global_hints import GlobalHints
from .pipeline import ColorizeResult, PreparedImage
from .prepare import Hint, HintPlanes
from .session import EditSession

__version__ = "0.1.0"
__all__ = ["Colorizer", "ColorizeResult", "EditSession", "GlobalHints", "Hint", "HintPlanes", "PreparedImage", "__version__"]

"""Where instcolor caches derived files (ONNX exports, TensorRT engines).

Kept in its own module, below both :mod:`instcolor.backends` and :mod:`instcolor.trt`, so that
neither has to import the other for it (``instcolor.backends.cache_dir`` re-exports it).
"""
from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """Where exports are cached: ``$INSTCOLOR_CACHE`` or ``~/.cache/instcolor``."""
    return Path(os.environ.get("INSTCOLOR_CACHE") or Path.home() / ".cache" / "instcolor")

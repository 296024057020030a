"""The one image reader and writer: every file the CLI, the API, training, eval, detection and the
server read goes through here."""
from __future__ import annotations

#: File suffixes read as images when a folder is given.
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm"})

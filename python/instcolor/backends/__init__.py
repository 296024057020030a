"""Inference backends. Each runs the nets on a :class:`instcolor.pipeline.Batch` and returns ab."""
from .torch_backend import TorchBackend

BACKENDS = ("torch",)

__all__ = ["BACKENDS", "TorchBackend"]

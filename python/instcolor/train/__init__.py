"""PyTorch training path: the paper's three stages, resumable, in the official weights layout.

>>> from instcolor.train import TrainConfig, train
>>> train(TrainConfig(stage="full", data="photos/", out="runs/full", width=0.25, steps=20000))
"""
from .data import PhotoIndex, simulate_hints
from .loop import STAGES, TrainConfig, TrainError, Trainer, huber_loss, train

__all__ = ["PhotoIndex", "simulate_hints", "STAGES", "TrainConfig", "TrainError", "Trainer", "huber_loss", "train"]

"""Errors shared by the command line and the feature packages (below both: no import circles)."""
from __future__ import annotations


class UsageError(Exception):
    """A problem with the command line or its set-up (exit status 2, one line, no traceback)."""


class CheckpointError(ValueError):
    """A weights file or directory that cannot be used, with the reason (and the file's name).

    (Defined here, below everything that imports PyTorch, so that the torch-free install can raise
    and catch it; :mod:`instcolor.models` re-exports it.)"""

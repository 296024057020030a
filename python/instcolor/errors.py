"""Errors shared by the command line and the feature packages (below both: no import circles)."""
from __future__ import annotations


class UsageError(Exception):
    """A problem with the command line or its set-up (exit status 2, one line, no traceback)."""

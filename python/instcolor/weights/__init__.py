"""Weights shipped inside the package.

``starter/`` holds the built-in *starter* bundle (``config.json`` + ``model.safetensors``, see
:mod:`instcolor.models.bundle`): a small model used by ``Colorizer.from_pretrained()`` when no
weights are given. It is far below the paper's quality; pass the official checkpoints for that.
"""
from __future__ import annotations

import sys
from pathlib import Path

STARTER_DIR = Path(__file__).resolve().parent / "starter"

_notice_shown = False


def starter_weights() -> Path:
    """The starter bundle's folder; ``FileNotFoundError`` (naming the folder) when it is not there."""
    from ..models.bundle import CONFIG_FILE, MODEL_FILE, is_bundle

    d = Path(STARTER_DIR)
    if not is_bundle(d):
        raise FileNotFoundError(
            f"the built-in starter weights are not installed: {d} should hold {CONFIG_FILE} and {MODEL_FILE}; "
            "pass a weights folder instead (weights=... / --weights DIR, e.g. the official checkpoints, see README)")
    return d


def _fmt_number(x) -> str | None:
    if isinstance(x, bool):
        return None
    if isinstance(x, int):
        return f"{x:,}"
    if isinstance(x, float) and x.is_integer():
        return f"{int(x):,}"
    if isinstance(x, (float, str)) and str(x).strip():
        return str(x).strip()
    return None


def starter_notice(directory) -> str:
    """The one-line notice for a starter bundle at ``directory``, from its config.json ("info":
    ``width``, ``train_images``; the config's own ``width`` as a fall-back). Never raises."""
    import json

    try:
        config = json.loads((Path(directory) / "config.json").read_text(encoding="utf-8"))
        config = config if isinstance(config, dict) else {}
    except (OSError, ValueError):
        config = {}
    info = config.get("info") if isinstance(config.get("info"), dict) else {}
    width = info.get("width", config.get("width"))
    details = "small"
    if isinstance(width, (int, float)) and not isinstance(width, bool):
        details += f" width-{width:g}"
    details += " model"
    photos = _fmt_number(info.get("train_images"))
    if photos is not None:
        details += f" trained on {photos} photo{'' if photos == '1' else 's'}"
    return (f"instcolor: using the built-in starter weights ({details}); for the paper's quality pass "
            "the official checkpoints with weights=... / --weights DIR (see README)")


def announce_starter(directory) -> None:
    """Print :func:`starter_notice` to stderr, once per process."""
    global _notice_shown
    if _notice_shown:
        return
    _notice_shown = True
    print(starter_notice(directory), file=sys.stderr)


__all__ = ["STARTER_DIR", "starter_weights", "starter_notice", "announce_starter"]

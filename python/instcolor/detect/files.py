"""Boxes given in files, looked up by image name.

* a folder of ``<stem>.npz`` files with arrays ``bbox`` (N,4) and ``scores`` (N,) — the format
  the official ``inference_bbox.py`` writes (``<image dir>_bbox/``);
* one JSON file ``{"<stem or file name>": {"boxes": [[x0, y0, x1, y1], ...], "scores": [...]}, ...}``
  (``"bbox"`` is accepted for ``"boxes"``; a bare list of boxes means no scores).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .base import Detections


class BoxesFile:
    """Look up the boxes of an image by its path: ``source.lookup(path) -> Detections | None``."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._json: dict | None = None
        if self.path.is_dir():
            return
        if not self.path.is_file():
            raise FileNotFoundError(f"boxes: no such file or folder: {self.path}")
        try:
            data = json.loads(self.path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"boxes: {self.path} is not a readable JSON file ({e})") from None
        if not isinstance(data, dict):
            raise ValueError(f"boxes: {self.path} must hold an object keyed by image name")
        self._json = data

    def lookup(self, image_path: str | Path, key: str | Path | None = None) -> Detections | None:
        """Boxes of ``image_path`` or None when the source has none for it. ``key``: the name the
        image's outputs get (``sub/a_jpg`` when names clash, see :func:`instcolor.jobs.output_names`);
        it is tried first, then the file name and the stem. A malformed entry or an unreadable npz
        raises ValueError naming the boxes file."""
        image_path = Path(image_path)
        if self._json is None:
            candidates = ([self.path / f"{Path(key)}.npz"] if key is not None else []) + [self.path / f"{image_path.stem}.npz"]
            f = next((c for c in candidates if c.is_file()), None)
            if f is None:
                return None
            try:
                with np.load(f, allow_pickle=False) as z:
                    if "bbox" not in z:
                        raise ValueError(f"no 'bbox' array (keys: {sorted(z.keys())})")
                    boxes = np.asarray(z["bbox"], np.float32).reshape(-1, 4)
                    scores = np.asarray(z["scores"], np.float32).reshape(-1) if "scores" in z else None
            except Exception as e:  # noqa: BLE001 - truncated zips raise BadZipFile/EOFError; all mean "unreadable"
                raise ValueError(f"boxes: cannot read {f}: {' '.join(str(e).split()) or type(e).__name__}") from None
            return Detections(boxes, scores)
        names = ([str(Path(key).as_posix())] if key is not None else []) + [image_path.name, image_path.stem]
        entry = next((self._json[n] for n in names if n in self._json), None)
        if entry is None:
            return None
        try:
            if isinstance(entry, list):
                return Detections(np.asarray(entry, np.float32).reshape(-1, 4))
            boxes = np.asarray(entry.get("boxes", entry.get("bbox", [])), np.float32).reshape(-1, 4)
            scores = entry.get("scores")
            if scores is not None:
                scores = np.asarray(scores, np.float32).reshape(-1)
            return Detections(boxes, scores)
        except (ValueError, TypeError, AttributeError) as e:
            raise ValueError(f"boxes: entry for {image_path.name} in {self.path} is malformed ({e})") from None


def load_boxes_source(path: str | Path) -> BoxesFile:
    return BoxesFile(path)


def write_boxes_npz(path: str | Path, det: Detections) -> None:
    """Write one image's detections in the official per-image format (``bbox`` (N,4) float32,
    ``scores`` (N,) float32; plus ``labels`` (N,) int64 when known), atomically."""
    from .._fileio import atomic_path

    arrays = {"bbox": np.asarray(det.boxes, np.float32).reshape(-1, 4),
              "scores": (np.asarray(det.scores, np.float32) if det.scores is not None
                         else np.ones(len(det.boxes), np.float32))}
    if det.labels is not None:
        arrays["labels"] = np.asarray(det.labels, np.int64)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)


def detect_to_folder(paths, detector, out_dir: str | Path, progress: bool = True) -> dict[str, str]:
    """Run ``detector`` on each image file of ``paths`` and write ``out_dir/<name>.npz``
    (:func:`write_boxes_npz`; names as :func:`instcolor.jobs.output_names` gives them). Images whose
    file already exists are skipped, so an interrupted run continues where it stopped. Returns
    {file name: error} for the images that failed (unreadable, detector error)."""
    from ..jobs import InputFile, JobReport, output_names, run_job
    from ..prepare import as_rgb_uint8

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = [p if isinstance(p, InputFile) else InputFile(Path(p)) for p in paths]
    names = output_names(files, lambda f: ".npz")
    todo = [(f, out_dir / n) for f, n in zip(files, names) if not (out_dir / n).is_file()]
    report = JobReport("detect", str(out_dir))

    def save(item, det):
        item[1].parent.mkdir(parents=True, exist_ok=True)
        write_boxes_npz(item[1], det)
        return item[1]

    run_job(todo, name=lambda item: str(item[0].path), load=lambda item: as_rgb_uint8(item[0].path),
            process=lambda item, rgb: detector(rgb), save=save, report=report, desc="detect", progress=progress)
    return {n: e for n, e in report.failed}

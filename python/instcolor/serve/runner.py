"""The model side of the server: a colorization job, its checks, and the batch function that the
batcher runs in its inference thread (``Colorizer.colorize_batch``, nothing else)."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from .errors import InvalidOption

log = logging.getLogger("instcolor.serve")


@dataclass
class Job:
    """One decoded request: ``image`` (H, W, 3) uint8; ``boxes`` (N, 4) float or None (None: run
    the server's detector when ``detect``, else no boxes); ``hints`` a list of instcolor.Hint;
    ``size`` the processing size (the batch key)."""

    image: np.ndarray
    size: int
    boxes: np.ndarray | None = None
    scores: np.ndarray | None = None
    hints: list = field(default_factory=list)
    detect: bool = False


@dataclass
class JobResult:
    rgb: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray | None
    labels: np.ndarray | None
    batch_size: int = 1  # requests in the colorize_batch call that produced it


def check_job(job: Job) -> Job:
    """Check the options of ``job`` against its image before it joins a batch (one bad request
    must never fail the others in its batch): InvalidOption naming the field."""
    from ..prepare import select_boxes

    h, w = job.image.shape[:2]
    if job.boxes is not None:
        try:
            select_boxes(job.boxes, job.scores, (h, w), name="boxes")
        except ValueError as e:  # the option parser checked shapes and scores; this is the image's turn
            raise InvalidOption("boxes", str(e).split(": ", 1)[-1]) from None
    for i, hint in enumerate(job.hints):
        if not (0 <= hint.x < w and 0 <= hint.y < h):
            raise InvalidOption("hints", f"hint {i} at ({hint.x:g}, {hint.y:g}) lies outside the {w}x{h} image")
    return job


class ColorizeRunner:
    """Runs batches of :class:`Job` through ``colorizer.colorize_batch``; one instance per model,
    called from one inference thread."""

    def __init__(self, colorizer):
        self.colorizer = colorizer

    @property
    def has_detector(self) -> bool:
        return getattr(self.colorizer, "detector", None) is not None

    @property
    def default_size(self) -> int:
        return int(getattr(self.colorizer, "default_size", 256))

    def run_batch(self, jobs: list[Job]) -> list:
        """-> one JobResult or exception per job. All jobs share one processing size. When the
        batch call fails and it held several jobs, each job is run alone, so that only the one at
        fault gets the error."""
        if not jobs:
            return []
        sizes = {j.size for j in jobs}
        if len(sizes) != 1:
            raise ValueError(f"a batch needs one processing size, got {sorted(sizes)}")
        boxes = [j.boxes if j.boxes is not None else (None if j.detect else np.zeros((0, 4), np.float32))
                 for j in jobs]
        try:
            results = self.colorizer.colorize_batch([j.image for j in jobs], boxes, [j.scores for j in jobs],
                                                    [j.hints for j in jobs], size=jobs[0].size)
        except Exception as exc:  # noqa: BLE001 - see the docstring
            if len(jobs) == 1:
                return [_as_job_error(exc)]
            log.warning("instcolor serve: a batch of %d failed (%s: %s); running its requests one by one",
                        len(jobs), type(exc).__name__, exc)
            return [self.run_batch([j])[0] for j in jobs]
        return [JobResult(r.rgb, np.asarray(r.boxes), r.scores, r.labels, len(jobs)) for r in results]

    def warmup(self, max_batch: int) -> None:
        """Run the nets once on synthetic images: the plain path, the instance path, and a full batch
        (first calls allocate and, for some backends, compile)."""
        rng = np.random.default_rng(0)
        img = rng.integers(0, 256, (96, 128, 3), dtype=np.uint8)
        size = self.default_size
        plain = Job(img, size)
        boxed = Job(img, size, boxes=np.array([[8, 8, 72, 80]], np.float32))
        for batch in ([plain], [boxed], [plain] * max(1, min(max_batch, 8))):
            out = self.run_batch(batch)
            errors = [r for r in out if isinstance(r, BaseException)]
            if errors:
                raise RuntimeError(f"warm-up failed: {errors[0]}")


def _as_job_error(exc: Exception) -> Exception:
    """A lone job's failure: a ValueError / TypeError comes from its inputs (422), anything else
    is the server's fault and stays as it is (500)."""
    from .errors import ServeError

    if isinstance(exc, ServeError):
        return exc
    if isinstance(exc, (ValueError, TypeError)):
        return InvalidOption("image", str(exc))
    log.error("instcolor serve: colorize_batch failed: %r", exc, exc_info=exc)
    return exc

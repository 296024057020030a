"""The model side of the server: a colorization job, its checks, and the three stages of
``Colorizer.colorize_batch`` split over threads: :meth:`ColorizeRunner.prepare` (detection and
preparation, in the I/O thread pool, per request), :meth:`ColorizeRunner.run_batch` (the nets on a
batch: the only work of the inference thread) and :meth:`ColorizeRunner.finish` (composition, in
the I/O thread pool). The nets thus never wait for the CPU-side work of other requests; the pixels
are those of ``colorize_batch``. A colorizer without the stage methods (``prepare``/``infer``/
``compose``) runs ``colorize_batch`` whole in the inference thread."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from ..request_errors import InvalidOption

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
    staged: object = None  # the PreparedImage, once ColorizeRunner.prepare ran


@dataclass
class JobResult:
    rgb: np.ndarray | None  # None until ColorizeRunner.finish composed it
    boxes: np.ndarray
    scores: np.ndarray | None
    labels: np.ndarray | None
    batch_size: int = 1  # requests in the batch of nets that produced it
    ab: np.ndarray | None = None  # (2, S, S) float32 from the nets, until composed


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

    @property
    def staged(self) -> bool:
        """Whether the colorizer has the stage methods (else colorize_batch runs whole)."""
        c = self.colorizer
        return all(callable(getattr(c, m, None)) for m in ("prepare", "infer", "compose"))

    def _boxes(self, job: Job):
        return job.boxes if job.boxes is not None else (None if job.detect else np.zeros((0, 4), np.float32))

    def prepare(self, job: Job) -> Job:
        """Detection and preparation of one job (I/O thread pool); errors from its inputs become
        InvalidOption (422). No-op for a colorizer without the stage methods."""
        if self.staged:
            try:
                job.staged = self.colorizer.prepare(job.image, self._boxes(job), job.scores, job.hints, size=job.size)
            except Exception as exc:  # noqa: BLE001 - classified by _as_job_error
                err = _as_job_error(exc)
                if err is exc:
                    raise
                raise err from None
        return job

    def run_batch(self, jobs: list[Job]) -> list:
        """-> one JobResult or exception per job (inference thread). All jobs share one processing
        size. When the batch call fails and it held several jobs, each job is run alone, so that
        only the one at fault gets the error."""
        if not jobs:
            return []
        sizes = {j.size for j in jobs}
        if len(sizes) != 1:
            raise ValueError(f"a batch needs one processing size, got {sorted(sizes)}")
        try:
            if all(j.staged is not None for j in jobs):
                abs_ = self.colorizer.infer([j.staged for j in jobs])
                return [JobResult(None, np.asarray(j.staged.prepared.boxes), j.staged.scores, j.staged.labels,
                                  len(jobs), ab=ab) for j, ab in zip(jobs, abs_)]
            results = self.colorizer.colorize_batch([j.image for j in jobs], [self._boxes(j) for j in jobs],
                                                    [j.scores for j in jobs], [j.hints for j in jobs],
                                                    size=jobs[0].size)
        except Exception as exc:  # noqa: BLE001 - see the docstring
            if len(jobs) == 1:
                return [_as_job_error(exc)]
            log.warning("instcolor serve: a batch of %d failed (%s: %s); running its requests one by one",
                        len(jobs), type(exc).__name__, exc)
            return [self.run_batch([j])[0] for j in jobs]
        return [JobResult(r.rgb, np.asarray(r.boxes), r.scores, r.labels, len(jobs)) for r in results]

    def finish(self, job: Job, result: JobResult) -> JobResult:
        """Compose a result of the nets (I/O thread pool): ``result.rgb`` (H, W, 3) uint8."""
        if result.rgb is None:
            result.rgb = self.colorizer.compose(job.staged, result.ab, processed=False).rgb
            result.ab = None
        return result

    def colorize(self, jobs: list[Job]) -> list:
        """All three stages in this thread (warm-up, tests) -> one JobResult or exception per job."""
        try:
            jobs = [self.prepare(j) for j in jobs]
        except Exception as exc:  # noqa: BLE001
            return [exc] * len(jobs)
        return [r if isinstance(r, BaseException) else self.finish(j, r) for j, r in zip(jobs, self.run_batch(jobs))]

    def warmup(self, max_batch: int) -> None:
        """Run the nets once on synthetic images: the plain path, the instance path, and a full batch
        (first calls allocate and, for some backends, compile)."""
        rng = np.random.default_rng(0)
        img = rng.integers(0, 256, (96, 128, 3), dtype=np.uint8)
        size = self.default_size
        plain = Job(img, size)
        boxed = Job(img, size, boxes=np.array([[8, 8, 72, 80]], np.float32))
        for batch in ([plain], [boxed], [Job(img, size) for _ in range(max(1, min(max_batch, 8)))]):
            out = self.colorize(batch)
            errors = [r for r in out if isinstance(r, BaseException)]
            if errors:
                raise RuntimeError(f"warm-up failed: {errors[0]}")


def _as_job_error(exc: Exception) -> Exception:
    """A lone job's failure: a ValueError / TypeError comes from its inputs (422), anything else
    is the server's fault and stays as it is (500)."""
    from ..request_errors import ServeError

    if isinstance(exc, ServeError):
        return exc
    if isinstance(exc, (ValueError, TypeError)):
        return InvalidOption("image", str(exc))
    log.error("instcolor serve: colorize_batch failed: %r", exc, exc_info=exc)
    return exc

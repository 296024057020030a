"""Dynamic batching: requests wait briefly so that one model call serves several of them.

:class:`DynamicBatcher` holds a queue of (key, item, future) entries and one worker task on the
serving event loop. The worker takes the oldest waiting entry, then waits until either
``max_batch`` entries with the same key are queued or ``max_wait_s`` has passed since that
oldest entry was queued (one absolute deadline), and calls ``batch_fn`` once with their items in
an executor thread (never on the event loop). ``batch_fn`` returns one result per item, in order;
an element that is an exception instance fails only that item, while an exception raised by
``batch_fn`` or a wrong result count fails every item of the batch.

Back-pressure and abandonment:

- more than ``max_queue`` entries waiting -> :class:`~.errors.ServiceUnavailable` (503) at once;
- an entry still waiting when its deadline passes (``timeout_s`` after it was submitted, or the
  deadline the caller gives) -> :class:`~.errors.GatewayTimeout` (504), and it is never run;
- a caller that is cancelled (its client disconnected) removes its entry; an entry whose batch
  has not started is not run, one already running finishes and its result is dropped;
- :meth:`close` refuses new entries (503), runs what is queued (drain) and stops the worker.

The batcher knows nothing of HTTP or of the model: the server's routes and the unit tests (with a
fake batch function) drive it the same way.
"""
from __future__ import annotations

import asyncio
import collections
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable, Sequence

from ..request_errors import GatewayTimeout, InternalError, ServiceUnavailable

log = logging.getLogger("instcolor.serve")


@dataclass(eq=False)
class _Entry:
    key: Hashable
    item: Any
    future: asyncio.Future
    queued_at: float
    deadline: float
    started: bool = False
    queue_wait_s: float = field(default=0.0)


class BatchInfo:
    """What the worker reports per batch: its size, the model time and each entry's queue wait."""

    __slots__ = ("size", "key", "seconds", "queue_waits")

    def __init__(self, size: int, key, seconds: float, queue_waits: Sequence[float]):
        self.size, self.key, self.seconds, self.queue_waits = size, key, seconds, list(queue_waits)


class DynamicBatcher:
    """Queue of futures + one worker task (see the module docstring).

    ``batch_fn(items) -> results``: synchronous, run in ``executor`` (a one-thread executor of the
    batcher's own when None). ``on_batch(BatchInfo)``: called on the event loop after each batch
    (metrics). ``clock``: a monotonic clock (tests may pass their own)."""

    def __init__(self, batch_fn: Callable[[list], list], *, max_batch: int, max_wait_s: float, max_queue: int,
                 timeout_s: float, executor=None, on_batch: Callable[[BatchInfo], None] | None = None,
                 clock: Callable[[], float] = time.monotonic):
        if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
            raise ValueError(f"max_batch: expected a whole number >= 1, got {max_batch!r}")
        if isinstance(max_queue, bool) or not isinstance(max_queue, int) or max_queue < 1:
            raise ValueError(f"max_queue: expected a whole number >= 1, got {max_queue!r}")
        if not (max_wait_s >= 0) or not (timeout_s > 0):
            raise ValueError(f"max_wait_s must be >= 0 and timeout_s > 0, got {max_wait_s!r}, {timeout_s!r}")
        if max_wait_s >= timeout_s:
            raise ValueError(f"max_wait_s ({max_wait_s} s) must be shorter than timeout_s ({timeout_s} s)")
        self.batch_fn = batch_fn
        self.max_batch = max_batch
        self.max_wait_s = float(max_wait_s)
        self.max_queue = max_queue
        self.timeout_s = float(timeout_s)
        self.on_batch = on_batch
        self.clock = clock
        self._executor = executor
        self._own_executor = None
        self._pending: collections.deque[_Entry] = collections.deque()
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._closing = False
        self._failure: BaseException | None = None
        self.running = 0  # items in the batch now in the model

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Create the worker task on the running loop (asyncio objects belong to the serving loop)."""
        if self._task is not None:
            raise RuntimeError("DynamicBatcher.start: already started")
        if self._executor is None:
            from concurrent.futures import ThreadPoolExecutor

            self._own_executor = self._executor = ThreadPoolExecutor(1, thread_name_prefix="instcolor-infer")
        self._wakeup = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._worker(), name="instcolor-batcher")
        self._task.add_done_callback(self._worker_done)

    @property
    def healthy(self) -> bool:
        """Started, not closed, and the worker task is alive."""
        return self._task is not None and not self._task.done() and not self._closing

    @property
    def depth(self) -> int:
        """Entries waiting (not yet in a batch)."""
        return len(self._pending)

    async def close(self, timeout_s: float | None = None) -> None:
        """Refuse new entries, finish the queued ones, stop the worker. After ``timeout_s`` the
        worker is cancelled and what is left fails with 503."""
        self._closing = True
        if self._task is None:
            return
        self._wakeup.set()
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout_s)
        except asyncio.TimeoutError:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001 - reported by _worker_done
                pass
        finally:
            self._fail_pending(ServiceUnavailable("the server is shutting down"))
            if self._own_executor is not None:
                self._own_executor.shutdown(wait=False)

    def _worker_done(self, task: asyncio.Task) -> None:
        if task.cancelled():
            err: BaseException = ServiceUnavailable("the server is shutting down")
        else:
            exc = task.exception()
            if exc is None:
                return
            log.error("instcolor serve: the batching task failed: %r", exc)
            self._failure = exc
            err = InternalError(f"the batching task failed: {type(exc).__name__}: {exc}")
        self._fail_pending(err)

    def _fail_pending(self, err: BaseException) -> None:
        while self._pending:
            e = self._pending.popleft()
            if not e.future.done():
                e.future.set_exception(err)

    # ------------------------------------------------------------------ callers
    async def submit(self, item, key: Hashable = None, deadline: float | None = None):
        """Queue ``item`` and wait for its result. ``deadline``: on ``clock`` (default: now +
        ``timeout_s``). Raises ServiceUnavailable (queue full, closed, not started),
        GatewayTimeout, or the item's own error; cancellation of the caller withdraws the item."""
        if self._task is None or self._task.done() or self._closing:
            raise ServiceUnavailable("the server is shutting down" if self._closing else "the model is not running")
        if len(self._pending) >= self.max_queue:
            raise ServiceUnavailable(f"the queue is full ({self.max_queue} requests waiting); retry later",
                                     retry_after_s=max(1.0, self.max_wait_s * 2))
        now = self.clock()
        entry = _Entry(key, item, asyncio.get_running_loop().create_future(), now,
                       deadline if deadline is not None else now + self.timeout_s)
        self._pending.append(entry)
        self._wakeup.set()
        try:
            return await asyncio.wait_for(asyncio.shield(entry.future), max(0.0, entry.deadline - now))
        except asyncio.TimeoutError:
            self._withdraw(entry)
            if entry.future.done() and not entry.future.cancelled():
                return entry.future.result()  # finished in the same instant
            raise GatewayTimeout(f"no result within the request timeout of {self.timeout_s:g} s "
                                 f"({'the model was still working on it' if entry.started else 'still queued'})") from None
        except asyncio.CancelledError:
            self._withdraw(entry)
            raise

    def _withdraw(self, entry: _Entry) -> None:
        if not entry.started:
            try:
                self._pending.remove(entry)
            except ValueError:
                pass
        if not entry.future.done():
            entry.future.cancel()

    # ------------------------------------------------------------------ worker
    async def _worker(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self._pending:
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
            first = self._pending[0]
            end = first.queued_at + self.max_wait_s  # one absolute deadline for this batch
            while not self._closing and self._count(first.key) < self.max_batch:
                remaining = end - self.clock()
                if remaining <= 0:
                    break
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), remaining)
                except asyncio.TimeoutError:
                    break
                if not self._pending or self._pending[0] is not first:
                    break  # the first entry was withdrawn: pick again
            if not self._pending or self._pending[0] is not first:
                continue
            batch = self._take(first.key)
            if not batch:
                continue
            for e in batch:
                e.started = True
            self.running = len(batch)
            t0 = self.clock()
            try:
                results = await loop.run_in_executor(self._executor, self.batch_fn, [e.item for e in batch])
                if not isinstance(results, (list, tuple)) or len(results) != len(batch):
                    n = len(results) if isinstance(results, (list, tuple)) else type(results).__name__
                    raise InternalError(f"the model returned {n} results for a batch of {len(batch)}")
            except Exception as exc:  # noqa: BLE001 - the batch's error goes to every caller in it
                results = [exc] * len(batch)
            finally:
                self.running = 0
            seconds = self.clock() - t0
            for e, r in zip(batch, results):
                if e.future.done():
                    continue  # withdrawn while running: its result is dropped
                if isinstance(r, BaseException):
                    e.future.set_exception(r)
                else:
                    e.future.set_result(r)
            if self.on_batch is not None:
                try:
                    self.on_batch(BatchInfo(len(batch), first.key, seconds, [t0 - e.queued_at for e in batch]))
                except Exception as exc:  # noqa: BLE001 - metrics must not stop the batcher
                    log.warning("instcolor serve: on_batch failed: %r", exc)

    def _count(self, key) -> int:
        return sum(1 for e in self._pending if e.key == key)

    def _take(self, key) -> list[_Entry]:
        """Up to ``max_batch`` live entries with ``key``, oldest first; expired ones fail with 504."""
        now = self.clock()
        batch, keep = [], collections.deque()
        for e in self._pending:
            if e.key == key and len(batch) < self.max_batch:
                if e.future.done():
                    continue
                if e.deadline <= now:
                    e.future.set_exception(GatewayTimeout(
                        f"no result within the request timeout of {self.timeout_s:g} s (still queued)"))
                    continue
                batch.append(e)
            else:
                keep.append(e)
        self._pending = keep
        return batch

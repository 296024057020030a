"""DynamicBatcher with a fake model: batch formation, deadlines, back-pressure, abandonment,
error fan-out, drain. Deterministic: the fake model blocks on events, the clock is the test's."""
import asyncio
import threading

import pytest

from instcolor.serve.batcher import DynamicBatcher
from instcolor.request_errors import GatewayTimeout, InternalError, ServiceUnavailable


class FakeModel:
    """batch_fn recording each batch; ``gate`` (threading.Event) holds it when cleared."""

    def __init__(self, fn=None):
        self.batches = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.threads = set()
        self.fn = fn or (lambda items: [x * 10 for x in items])

    def __call__(self, items):
        self.threads.add(threading.get_ident())
        self.batches.append(list(items))
        self.entered.set()
        assert self.gate.wait(30), "test gate never opened"
        return self.fn(items)


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


async def settle(n=20):
    for _ in range(n):
        await asyncio.sleep(0)


async def wait_until(pred, what="condition"):
    for _ in range(2000):
        if pred():
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"timed out waiting for {what}")


async def wait_thread_event(ev):
    await asyncio.get_running_loop().run_in_executor(None, ev.wait, 30)


def make(model, **kw):
    opts = dict(max_batch=3, max_wait_s=1000.0, max_queue=16, timeout_s=5000.0)
    opts.update(kw)
    return DynamicBatcher(model, **opts)


def test_full_batch_runs_at_once_and_never_exceeds_max_batch():
    async def main():
        model = FakeModel()
        b = make(model)  # a batch would wait 1000 s for more: only a full batch runs now
        await b.start()
        t1 = asyncio.create_task(b.submit(1))
        t2 = asyncio.create_task(b.submit(2))
        done, _ = await asyncio.wait({t1, t2}, timeout=0.05)
        assert not done and model.batches == [] and b.depth == 2
        more = [asyncio.create_task(b.submit(i)) for i in (3, 4, 5)]
        assert await asyncio.gather(t1, t2, *more[:1]) == [10, 20, 30]
        assert model.batches == [[1, 2, 3]] and b.depth == 2  # 4 and 5 wait for a third
        await b.close(timeout_s=10)  # drain: the remainder runs without waiting
        assert await asyncio.gather(*more[1:]) == [40, 50]
        assert model.batches == [[1, 2, 3], [4, 5]]
        assert threading.get_ident() not in model.threads  # the model never runs on the event loop

    run(main())


def test_one_absolute_deadline_from_the_first_request():
    async def main():
        model, clock = FakeModel(), Clock()
        # fake seconds; the real-time fallback (1000 s) never fires within the test
        b = make(model, max_batch=8, max_wait_s=1000.0, timeout_s=10000.0, clock=clock)
        await b.start()
        a = asyncio.create_task(b.submit("a"))
        await settle()
        clock.t = 600.0
        bb = asyncio.create_task(b.submit("b"))  # wakes the worker: 400 s of the 1000 s remain
        await settle()
        assert model.batches == [] and b.depth == 2
        clock.t = 1001.0  # past first + max_wait (a deadline restarted at "b" or at a wake-up would still wait)
        c = asyncio.create_task(b.submit("c", key="other"))  # any wake-up re-checks the deadline
        await wait_until(lambda: model.batches, "the first batch")
        assert model.batches == [["a", "b"]]
        assert await asyncio.gather(a, bb) == ["aaaaaaaaaa", "bbbbbbbbbb"]
        assert b.depth == 1 and not c.done()  # another key never joins the batch; it waits on its own
        clock.t = 2002.0
        d = asyncio.create_task(b.submit("d", key="other"))
        assert await asyncio.gather(c, d) == ["c" * 10, "d" * 10]
        assert model.batches == [["a", "b"], ["c", "d"]]
        await b.close(timeout_s=10)

    run(main())


def test_a_request_that_waited_behind_a_batch_does_not_wait_again():
    async def main():
        model, clock = FakeModel(), Clock()
        model.gate.clear()
        b = make(model, max_batch=8, max_wait_s=1000.0, timeout_s=10000.0, clock=clock)
        await b.start()
        first = asyncio.create_task(b.submit(1, key="k1"))
        await settle()
        clock.t = 1000.0
        second = asyncio.create_task(b.submit(2, key="k2"))  # queued at t=1000; its wake-up ends 1's wait
        await wait_thread_event(model.entered)  # batch [1] runs and is held
        await settle()
        assert model.batches == [[1]] and b.depth == 1
        clock.t = 2001.0  # its max_wait passed while it waited for the model
        model.gate.set()
        assert await first == 10
        assert await second == 20  # runs as soon as the model is free, no second max_wait
        await b.close(timeout_s=10)

    run(main())


def test_expired_request_is_not_run_when_its_batch_forms():
    async def main():
        model, clock = FakeModel(), Clock()
        model.gate.clear()
        b = make(model, max_batch=2, max_wait_s=0.0, timeout_s=10000.0, clock=clock)
        await b.start()
        first = asyncio.create_task(b.submit(1))
        await wait_thread_event(model.entered)
        late = asyncio.create_task(b.submit(2, deadline=50.0))  # fake deadline; its real timer is 50 s away
        ok = asyncio.create_task(b.submit(3))
        await wait_until(lambda: b.depth == 2, "two queued")
        clock.t = 60.0
        model.gate.set()
        assert await first == 10 and await ok == 30
        with pytest.raises(GatewayTimeout):
            await late
        assert model.batches == [[1], [3]]
        await b.close(timeout_s=10)

    run(main())


def test_real_time_max_wait_runs_a_partial_batch():
    async def main():
        model = FakeModel()
        b = make(model, max_batch=8, max_wait_s=0.02, timeout_s=30.0)
        await b.start()
        assert await b.submit(7) == 70  # no second request comes: the batch of one runs after max_wait
        assert model.batches == [[7]]
        await b.close(timeout_s=10)

    run(main())


def test_queue_full_is_503_with_retry_after_and_others_still_served():
    async def main():
        model = FakeModel()
        model.gate.clear()
        b = make(model, max_batch=1, max_wait_s=0.0, max_queue=2)
        await b.start()
        running = asyncio.create_task(b.submit(1))
        await wait_thread_event(model.entered)  # the model holds 1; the queue is empty
        queued = [asyncio.create_task(b.submit(i)) for i in (2, 3)]
        await wait_until(lambda: b.depth == 2, "two queued")
        with pytest.raises(ServiceUnavailable) as err:
            await b.submit(4)
        assert err.value.status == 503 and int(err.value.headers["Retry-After"]) >= 1
        model.gate.set()
        assert await asyncio.gather(running, *queued) == [10, 20, 30]
        assert [x for batch in model.batches for x in batch] == [1, 2, 3]  # 4 never reached the model
        await b.close(timeout_s=10)

    run(main())


def test_timeout_while_queued_is_504_and_the_work_is_never_done():
    async def main():
        model = FakeModel()
        model.gate.clear()
        b = make(model, max_batch=1, max_wait_s=0.0, timeout_s=0.2)
        await b.start()
        first = asyncio.create_task(b.submit(1, deadline=b.clock() + 60))
        await wait_thread_event(model.entered)
        with pytest.raises(GatewayTimeout) as err:
            await b.submit(2)  # waits behind the held batch past its 0.2 s
        assert err.value.status == 504 and "still queued" in str(err.value)
        assert b.depth == 0
        model.gate.set()
        assert await first == 10
        await b.close(timeout_s=10)
        assert model.batches == [[1]]

    run(main())


def test_cancelled_caller_is_dropped_before_its_batch_starts():
    async def main():
        model = FakeModel()
        model.gate.clear()
        b = make(model, max_batch=2, max_wait_s=0.0)
        await b.start()
        first = asyncio.create_task(b.submit(1))
        await wait_thread_event(model.entered)
        gone = asyncio.create_task(b.submit(2))
        stays = asyncio.create_task(b.submit(3))
        await wait_until(lambda: b.depth == 2, "two queued")
        gone.cancel()  # the client disconnected
        await settle()
        assert b.depth == 1
        model.gate.set()
        assert await first == 10 and await stays == 30
        with pytest.raises(asyncio.CancelledError):
            await gone
        assert model.batches == [[1], [3]]
        await b.close(timeout_s=10)

    run(main())


def test_cancelled_while_running_finishes_and_the_result_is_dropped():
    async def main():
        model = FakeModel()
        model.gate.clear()
        b = make(model, max_batch=2, max_wait_s=0.0)
        await b.start()
        t = asyncio.create_task(b.submit(1))
        await wait_thread_event(model.entered)
        t.cancel()
        await settle()
        model.gate.set()
        assert await b.submit(2) == 20  # the batcher survived setting nothing on a cancelled future
        assert model.batches == [[1], [2]]
        await b.close(timeout_s=10)

    run(main())


def test_batch_error_reaches_every_caller_and_the_batcher_goes_on():
    calls = []

    def fn(items):
        calls.append(items)
        if len(calls) == 1:
            raise RuntimeError("model exploded")
        return [x + 1 for x in items]

    async def main():
        b = make(FakeModel(fn), max_batch=2)
        await b.start()
        results = await asyncio.gather(b.submit(1), b.submit(2), return_exceptions=True)
        assert all(isinstance(r, RuntimeError) and "exploded" in str(r) for r in results)
        assert await asyncio.gather(b.submit(5), b.submit(6)) == [6, 7]
        assert b.healthy
        await b.close(timeout_s=10)

    run(main())


def test_item_errors_fail_only_their_item():
    async def main():
        b = make(FakeModel(lambda items: [ValueError(f"bad {x}") if x < 0 else x for x in items]), max_batch=3)
        await b.start()
        results = await asyncio.gather(b.submit(1), b.submit(-2), b.submit(3), return_exceptions=True)
        assert results[0] == 1 and results[2] == 3 and isinstance(results[1], ValueError)
        await b.close(timeout_s=10)

    run(main())


def test_wrong_result_count_fails_the_whole_batch():
    async def main():
        b = make(FakeModel(lambda items: items[:-1]), max_batch=2)
        await b.start()
        results = await asyncio.gather(b.submit(1), b.submit(2), return_exceptions=True)
        assert all(isinstance(r, InternalError) and "1 results for a batch of 2" in str(r) for r in results)
        await b.close(timeout_s=10)

    run(main())


def test_close_refuses_new_requests_and_drains_the_queue():
    async def main():
        model = FakeModel()
        model.gate.clear()
        b = make(model, max_batch=2, max_wait_s=0.0)
        await b.start()
        tasks = [asyncio.create_task(b.submit(i)) for i in range(5)]
        await wait_thread_event(model.entered)
        await wait_until(lambda: b.depth == 3, "three queued")
        closing = asyncio.create_task(b.close(timeout_s=30))
        await settle()
        with pytest.raises(ServiceUnavailable, match="shutting down"):
            await b.submit(99)
        model.gate.set()
        await closing
        assert await asyncio.gather(*tasks) == [0, 10, 20, 30, 40]
        assert not b.healthy

    run(main())


def test_on_batch_reports_size_and_queue_waits():
    infos = []

    async def main():
        clock = Clock()
        b = make(FakeModel(), max_batch=2, clock=clock, on_batch=infos.append)
        await b.start()
        t1 = asyncio.create_task(b.submit(1))
        await settle()
        clock.t = 3.0
        await asyncio.gather(t1, b.submit(2))
        await b.close(timeout_s=10)

    run(main())
    assert len(infos) == 1 and infos[0].size == 2 and infos[0].queue_waits == [3.0, 0.0]


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="max_batch"):
        DynamicBatcher(lambda x: x, max_batch=0, max_wait_s=0.01, max_queue=1, timeout_s=1)
    with pytest.raises(ValueError, match="shorter than timeout_s"):
        DynamicBatcher(lambda x: x, max_batch=1, max_wait_s=2.0, max_queue=1, timeout_s=1)
    with pytest.raises(ValueError, match="max_queue"):
        DynamicBatcher(lambda x: x, max_batch=1, max_wait_s=0.01, max_queue=0, timeout_s=1)


def test_submit_before_start_is_503():
    async def main():
        b = make(FakeModel())
        with pytest.raises(ServiceUnavailable, match="not running"):
            await b.submit(1)

    run(main())

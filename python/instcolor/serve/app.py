"""The ASGI application: lifespan (load the model, warm it up, start the batcher; drain on
shutdown), the shared :class:`Service` the routes use, error handlers, /metrics, the routes of
``protocol/v1.py`` and ``protocol/v2.py``, and the hint editor (``editor.py``: /editor, the page at /ui)."""
from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import socket
import time

from .batcher import DynamicBatcher
from .bodies import decode_image, read_body, until_done_or_gone
from ..request_errors import BadRequest, InternalError, InvalidOption, ServeError, ServiceUnavailable
from .metrics import Metrics, MetricsMiddleware
from .runner import ColorizeRunner, Job, check_job
from .settings import ServeSettings

log = logging.getLogger("instcolor.serve")


class RequestTimeout(ServeError):
    """The body did not arrive within --timeout-s."""

    status = 408


def default_loader(settings: ServeSettings):
    """The colorizer a server with ``settings`` serves (``Colorizer.from_pretrained``)."""
    from .. import Colorizer
    from ..detect import load_detector

    detector = None
    if settings.detector:
        detector = load_detector(settings.detector, score_threshold=settings.score_threshold)
    return Colorizer.from_pretrained(settings.weights, backend=settings.backend, device=settings.device,
                                     detector=detector, decode=settings.decode, temperature=settings.temperature,
                                     mix=settings.mix)


def _one_kernel_thread() -> None:
    """I/O pool threads run the CPU kernels of preparation and composition on one core each: several
    requests are in flight at once, and the nets' threads need the other cores."""
    try:
        from .. import ops
    except ImportError:  # no native kernels: nothing to set
        return
    ops.set_cpu_threads(1)


class Service:
    """What the routes share: settings, metrics, the thread pool for parsing/decoding/encoding, the
    runner and batcher once the model is loaded, and the readiness flag."""

    def __init__(self, settings: ServeSettings, colorizer=None, loader=None):
        self.settings = settings
        self.metrics = Metrics()
        self.instance = f"{socket.gethostname()}:{os.getpid()}"
        self.clock = time.monotonic
        self._colorizer = colorizer
        self._loader = loader or functools.partial(default_loader, settings)
        self.runner: ColorizeRunner | None = None
        self.batcher: DynamicBatcher | None = None
        self.ready = False
        self.load_error: str | None = None
        self.pool = None
        self.infer_pool = None
        self._load_task: asyncio.Task | None = None
        self.pixel_limit = settings.pixel_limit()

    # ------------------------------------------------------------------ lifecycle
    async def start(self, background: bool) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.pool = ThreadPoolExecutor(self.settings.io_threads, thread_name_prefix="instcolor-io",
                                       initializer=_one_kernel_thread)
        self.infer_pool = ThreadPoolExecutor(1, thread_name_prefix="instcolor-infer")
        if background:
            self._load_task = asyncio.get_running_loop().create_task(self._load(), name="instcolor-load")
        else:
            await self._load()
            if self.load_error:
                raise RuntimeError(f"instcolor serve: the model did not load: {self.load_error}")

    async def _load(self) -> None:
        loop = asyncio.get_running_loop()
        s = self.settings
        try:
            colorizer = self._colorizer
            if colorizer is None:
                log.info("instcolor serve: loading the model (weights: %s, backend: %s)",
                         s.weights or "built-in starter", s.backend)
                colorizer = await loop.run_in_executor(self.infer_pool, self._loader)
            runner = ColorizeRunner(colorizer)
            if s.warmup:
                t0 = time.perf_counter()
                await loop.run_in_executor(self.infer_pool, runner.warmup, s.max_batch)
                log.info("instcolor serve: warm-up done in %.2f s", time.perf_counter() - t0)
            self.runner = runner
            self.batcher = DynamicBatcher(runner.run_batch, max_batch=s.max_batch, max_wait_s=s.max_wait_s,
                                          max_queue=s.max_queue, timeout_s=s.timeout_s, executor=self.infer_pool,
                                          on_batch=self.metrics.on_batch, clock=self.clock)
            await self.batcher.start()
            self.metrics.bind_batcher(self.batcher)
            self.ready = True
            self.metrics.ready.set(1)
            log.info("instcolor serve: ready (max batch %d, max wait %g ms, queue %d, processing size %d%s)",
                     s.max_batch, s.max_wait_ms, s.max_queue, runner.default_size,
                     ", detector" if runner.has_detector else "")
        except Exception as e:  # noqa: BLE001 - reported by /v2/health/ready and every request
            self.load_error = f"{type(e).__name__}: {e}"
            log.error("instcolor serve: the model did not load: %s", self.load_error)

    async def stop(self) -> None:
        """Stop taking requests, finish the queued ones (up to --timeout-s), release the threads."""
        self.ready = False
        self.metrics.ready.set(0)
        if self._load_task is not None and not self._load_task.done():
            self._load_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._load_task
        if self.batcher is not None:
            await self.batcher.close(timeout_s=self.settings.timeout_s)
        for pool in (self.pool, self.infer_pool):
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)

    def is_ready(self) -> bool:
        return self.ready and self.batcher is not None and self.batcher.healthy

    def check_ready(self) -> None:
        if self.is_ready():
            return
        if self.load_error:
            raise ServiceUnavailable(f"the model failed to load: {self.load_error}", retry_after_s=30)
        if self.batcher is not None and not self.batcher.healthy:
            raise ServiceUnavailable("the server is shutting down")
        raise ServiceUnavailable("the model is loading; retry shortly", retry_after_s=2)

    # ------------------------------------------------------------------ request work
    async def in_pool(self, fn, *args, **kwargs):
        """Run ``fn`` in the parsing/decoding/encoding thread pool (never on the event loop)."""
        return await asyncio.get_running_loop().run_in_executor(self.pool, functools.partial(fn, *args, **kwargs))

    async def read_body(self, request, deadline: float) -> bytes:
        try:
            return await asyncio.wait_for(read_body(request, self.settings.max_body_bytes),
                                          max(0.0, deadline - self.clock()))
        except asyncio.TimeoutError:
            raise RequestTimeout(f"the request body did not arrive within {self.settings.timeout_s:g} s "
                                 f"(--timeout-s)", headers={"Connection": "close"}) from None

    def _ingest(self, data: bytes, name: str, opts):
        """Decode, check the options against the image, detect and prepare (one thread-pool call)
        -> (DecodedImage, Job ready for the nets)."""
        decoded = decode_image(data, name, self.pixel_limit)
        job = Job(decoded.rgb, size=opts.size or self.runner.default_size, boxes=opts.boxes, scores=opts.scores,
                  hints=opts.hints, detect=opts.detect)
        return decoded, self.runner.prepare(check_job(job))

    async def colorize(self, request, data: bytes, name: str, opts, deadline: float):
        """Decode and prepare ``data`` (thread pool), queue the job for the nets and wait for them
        (dropped from the queue if the client leaves), compose (thread pool) -> (JobResult, DecodedImage)."""
        decoded, job = await self.in_pool(self._ingest, data, name, opts)
        result = await until_done_or_gone(request, self.batcher.submit(job, key=job.size, deadline=deadline))
        result = await self.in_pool(self.runner.finish, job, result)
        request.state.instcolor_log = (f"batch={result.batch_size} size={job.size} {decoded.size[0]}x{decoded.size[1]} "
                                       f"boxes={len(result.boxes)}")
        return result, decoded


def wants_json(request) -> bool:
    accept = request.headers.get("accept", "")
    return "application/json" in accept.lower()


def error_response(exc: ServeError):
    from fastapi.responses import JSONResponse

    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)


def build_app(settings: ServeSettings | None = None, *, colorizer=None, loader=None, load_in_background: bool = True,
              editor_settings=None):
    """A new FastAPI app serving ``settings`` (default: :class:`ServeSettings` defaults).

    ``colorizer``: serve this object (anything with ``colorize_batch``, ``default_size``,
    ``detector``) instead of loading one; ``loader``: a callable returning the colorizer, called
    in a worker thread at startup. ``load_in_background``: start answering at once (live; ready
    and the APIs answer 503 until the model is loaded and warmed up) instead of loading inside
    the lifespan startup (Ray Serve replicas, which count as started only when loaded).
    ``editor_settings``: :class:`instcolor.ui.editor.EditorSettings` of the hint editor (/editor, /ui)."""
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, Response
    from starlette.exceptions import HTTPException as StarletteHTTPException

    from .. import __version__
    from . import editor
    from .protocol import v1, v2

    settings = settings or ServeSettings()
    service = Service(settings, colorizer=colorizer, loader=loader)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        await service.start(background=load_in_background)
        try:
            yield
        finally:
            log.info("instcolor serve: shutting down: finishing %d queued request(s)",
                     service.batcher.depth if service.batcher else 0)
            await service.stop()

    app = FastAPI(title="instcolor", version=__version__, lifespan=lifespan,
                  description="Instance-aware image colorization. `POST /v1/colorize` takes an image and returns it "
                              "colorized; the Open Inference Protocol (KServe v2) is under `/v2`.")
    app.state.service = service

    @app.exception_handler(ServeError)
    async def _serve_error(request: Request, exc: ServeError):
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError):
        errs = exc.errors()
        first = errs[0] if errs else {}
        field = ".".join(str(p) for p in first.get("loc", ())[1:]) or "request"
        return error_response(InvalidOption(field, first.get("msg", "invalid")))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception):
        log.error("instcolor serve: internal error on %s %s: %r", request.method, request.url.path, exc, exc_info=exc)
        return error_response(InternalError(f"internal error: {type(exc).__name__}"))

    @app.get("/metrics", include_in_schema=True, summary="Prometheus metrics", tags=["operations"])
    async def metrics():
        data, ctype = service.metrics.render()
        return Response(data, media_type=ctype.split(";")[0], headers={"content-type": ctype})

    app.include_router(v1.router)
    app.include_router(v2.router)
    editor.register(app, editor_settings)  # /editor routes, the page at /ui/ (/ redirects there)
    app.add_middleware(MetricsMiddleware, metrics=service.metrics)
    return app


__all__ = ["BadRequest", "Service", "build_app", "default_loader"]

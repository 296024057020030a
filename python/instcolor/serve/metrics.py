"""Prometheus metrics and the per-request log line.

Each app gets its own registry (building two apps in one process, as tests do, never clashes).
Routes are labelled by their template (``/v2/models/{model_name}/infer``), never the raw path;
``/metrics`` and the health probes are not counted. With several replicas (Ray Serve) each
replica's ``/metrics`` shows that replica only."""
from __future__ import annotations

import logging
import time

log = logging.getLogger("instcolor.serve")

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64, 128)
_SKIP = ("/metrics", "/v2/health/live", "/v2/health/ready")


class Metrics:
    def __init__(self):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = r = CollectorRegistry()
        self.requests = Counter("instcolor_http_requests", "HTTP requests by route template, method and status",
                                ("route", "method", "status"), registry=r)
        self.latency = Histogram("instcolor_http_request_duration_seconds", "HTTP request latency by route",
                                 ("route",), buckets=LATENCY_BUCKETS, registry=r)
        self.queue_depth = Gauge("instcolor_queue_depth", "requests waiting for the model", registry=r)
        self.in_model = Gauge("instcolor_batch_running", "requests in the batch the model is running now", registry=r)
        self.batch_size = Histogram("instcolor_batch_size", "requests per colorize_batch call",
                                    buckets=BATCH_BUCKETS, registry=r)
        self.inference = Histogram("instcolor_inference_seconds", "time of one colorize_batch call",
                                   buckets=LATENCY_BUCKETS, registry=r)
        self.queue_wait = Histogram("instcolor_queue_wait_seconds", "time a request waited before its batch ran",
                                    buckets=LATENCY_BUCKETS, registry=r)
        self.ready = Gauge("instcolor_ready", "1 when the model is loaded and warmed up", registry=r)

    def bind_batcher(self, batcher) -> None:
        """Queue gauges read the batcher at scrape time."""
        self.queue_depth.set_function(lambda: batcher.depth)
        self.in_model.set_function(lambda: batcher.running)

    def on_batch(self, info) -> None:
        self.batch_size.observe(info.size)
        self.inference.observe(info.seconds)
        for w in info.queue_waits:
            self.queue_wait.observe(w)

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def route_label(scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"


class MetricsMiddleware:
    """Pure ASGI middleware: counts and times each HTTP request by route template and status, and
    logs one line per request: client, method, path, status, milliseconds (+ batch facts the
    route left in ``scope['state']``)."""

    def __init__(self, app, metrics: Metrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0 = time.perf_counter()
        status = {"code": 500}

        async def send_wrapper(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            elapsed = time.perf_counter() - t0
            path = scope.get("path", "")
            code = status["code"]
            if path not in _SKIP:
                route = route_label(scope)
                self.metrics.requests.labels(route, scope.get("method", ""), str(code)).inc()
                self.metrics.latency.labels(route).observe(elapsed)
            client = scope.get("client") or ("-", 0)
            extra = (scope.get("state") or {}).get("instcolor_log", "")
            log.info('%s:%s "%s %s" %d %.1fms%s', client[0], client[1], scope.get("method", ""), path, code,
                     elapsed * 1000.0, f" {extra}" if extra else "")

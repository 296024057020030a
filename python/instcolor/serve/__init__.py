"""HTTP serving of the colorizer: ``instcolor serve``.

:func:`build_app` makes the ASGI app (FastAPI on uvicorn; also the ingress of the Ray Serve
deployment in :mod:`instcolor.serve.ray_app`). Importing this package imports neither FastAPI
nor Ray: the web stack is imported when an app is built.

Layout: ``settings`` (validated settings), ``batcher`` (dynamic batching, no HTTP), ``runner``
(jobs and the batch function over ``Colorizer.colorize_batch``), ``options`` (request options),
``bodies`` (body limits, multipart, image decoding, disconnects), ``protocol/v1`` and
``protocol/v2`` (routes; ``protocol/types`` the v2 tensor codec), ``metrics`` (Prometheus and the
request log line), ``errors`` (status codes), ``app`` (lifespan and wiring), ``ray_app`` (Ray
Serve), ``cli`` (the subcommand)."""
from __future__ import annotations

from .settings import ServeSettings


def build_app(settings: ServeSettings | None = None, **kwargs):
    """A new ASGI app; see :func:`instcolor.serve.app.build_app` (needs the ``serve`` extra)."""
    from .app import build_app as _build_app

    return _build_app(settings, **kwargs)


__all__ = ["ServeSettings", "build_app"]

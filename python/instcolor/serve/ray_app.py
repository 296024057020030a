"""The same app on Ray Serve: each replica builds its own app (its own model, batcher, metrics)
with :func:`instcolor.serve.build_app`; Ray's proxy spreads requests over the replicas.

- ``instcolor serve --ray [--replicas N | --autoscaling JSON] [--address ADDR]``
- ``serve run instcolor.serve.ray_app:app_builder weights=DIR max_batch=8 replicas=2`` (every
  :class:`~instcolor.serve.settings.ServeSettings` field, plus ``replicas``, ``replica_cpus`` and
  ``autoscaling`` as JSON text)
- in Python: ``serve.run(build_application(ServeSettings(...), replicas=2))``

Each replica batches its own requests (``max_batch`` / ``max_wait_ms``); ``max_ongoing_requests``
is set to ``max_queue + max_batch`` so Ray lets a full batch plus the queue reach a replica (its
default, 5, would keep a batch of 8 from ever filling). The weights folder and the detector
model must exist at the same path on every node. Importing this module needs Ray."""
from __future__ import annotations

import json
import logging
import signal
import threading

from ray import serve

from .settings import ServeSettings

log = logging.getLogger("instcolor.serve")


class InstcolorReplica:
    """One replica: holds the settings; Ray calls :meth:`__serve_build_asgi_app__` on the replica
    after the constructor, so the app (and the model) is built there, never pickled."""

    def __init__(self, settings: dict):
        from .malloc import keep_freed_blocks

        keep_freed_blocks()  # the replica's worker process serves requests (serve/malloc.py)
        self._settings = ServeSettings.from_dict(settings)
        self._app = None

    def __serve_build_asgi_app__(self):
        from .app import build_app

        # In the lifespan startup: Ray counts the replica as started only once the model is loaded.
        self._app = build_app(self._settings, load_in_background=False)
        try:  # responses name the replica and its node (Instcolor-Instance)
            import ray

            ctx = ray.get_runtime_context()
            self._app.state.service.instance += f" node={ctx.get_node_id()[:12]} actor={ctx.get_actor_id()[:12]}"
        except Exception:  # noqa: BLE001 - only a label
            pass
        return self._app

    def check_health(self):
        """Ray's periodic health check: the model is loaded and the batcher runs."""
        service = getattr(getattr(self._app, "state", None), "service", None)
        if service is not None and (service.load_error or (service.batcher is not None and not service.batcher.healthy)):
            raise RuntimeError(f"instcolor replica unhealthy: {service.load_error or 'the batching task stopped'}")


Ingress = serve.ingress()(InstcolorReplica)


def deployment_options(settings: ServeSettings, replicas: int = 1, autoscaling: dict | None = None,
                       num_cpus: float = 1.0) -> dict:
    if autoscaling is not None and not isinstance(autoscaling, dict):
        raise ValueError("autoscaling: expected a dict (Ray Serve autoscaling_config)")
    if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 1:
        raise ValueError(f"replicas: expected a whole number >= 1, got {replicas!r}")
    opts = {"name": settings.model_name,
            "max_ongoing_requests": settings.max_queue + settings.max_batch,
            "graceful_shutdown_timeout_s": settings.timeout_s + 5,
            "ray_actor_options": {"num_cpus": float(num_cpus)}}
    if autoscaling:
        opts["autoscaling_config"] = dict(autoscaling)
    else:
        opts["num_replicas"] = replicas
    return opts


def build_application(settings: ServeSettings | None = None, *, replicas: int = 1, autoscaling: dict | None = None,
                      num_cpus: float = 1.0):
    """A Ray Serve application (``serve.run`` it) serving ``settings`` on ``replicas`` replicas, or
    with ``autoscaling`` (a Ray Serve autoscaling_config dict, passed through)."""
    settings = settings or ServeSettings()
    deployment = serve.deployment(Ingress, **deployment_options(settings, replicas, autoscaling, num_cpus))
    return deployment.bind(settings.to_dict())


def app_builder(args: dict):
    """For ``serve run instcolor.serve.ray_app:app_builder key=value ...`` (and Serve config files)."""
    args = dict(args or {})
    replicas = int(args.pop("replicas", 1))
    num_cpus = float(args.pop("replica_cpus", 1.0))
    autoscaling = args.pop("autoscaling", None)
    if isinstance(autoscaling, str):
        autoscaling = json.loads(autoscaling)
    return build_application(ServeSettings.from_dict(args), replicas=replicas, autoscaling=autoscaling,
                             num_cpus=num_cpus)


def run_ray(settings: ServeSettings, *, replicas: int = 1, address: str | None = None,
            autoscaling: dict | None = None, num_cpus: float = 1.0) -> int:
    """``instcolor serve --ray``: join (``address``) or start a Ray cluster, serve until SIGTERM /
    SIGINT, then delete the application (Ray drains each replica) and disconnect."""
    import ray

    app = build_application(settings, replicas=replicas, autoscaling=autoscaling, num_cpus=num_cpus)
    ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING)
    stop = threading.Event()
    try:
        serve.start(http_options={"host": settings.host, "port": settings.port}, proxy_location="HeadOnly")
        serve.run(app, name=settings.model_name, route_prefix="/", blocking=False)
        log.info("instcolor serve: Ray Serve application %r on http://%s:%d (%s)", settings.model_name, settings.host,
                 settings.port, f"autoscaling {autoscaling}" if autoscaling else f"{replicas} replica(s)")
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        while not stop.wait(1.0):
            pass
        log.info("instcolor serve: stopping the Ray Serve application")
        serve.delete(settings.model_name)
    finally:
        if address is None:
            serve.shutdown()
        ray.shutdown()
    return 0

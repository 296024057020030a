"""``instcolor serve``: the HTTP server on uvicorn, or the same app as a Ray Serve deployment
(``--ray``). Importing this module imports nothing heavy; FastAPI, uvicorn and Ray are imported
by :func:`cmd_serve`."""
from __future__ import annotations

import json
import logging
import socket
import sys


def add_serve_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "serve", help="serve colorization over HTTP: POST /v1/colorize, KServe v2, /metrics (optionally on Ray Serve)",
        description="Serve the colorizer over HTTP with dynamic batching: POST /v1/colorize (an image in, the "
                    "colorized image out), the Open Inference Protocol (KServe v2) under /v2, Prometheus /metrics, "
                    "the OpenAPI schema at /openapi.json. SIGTERM / Ctrl-C: stop accepting, finish the queue, exit. "
                    "Needs the serve extra: pip install 'instcolor[serve]' (and 'instcolor[ray]' for --ray).")
    p.add_argument("--weights", metavar="DIR", help="weights folder (official layout, training run folder or bundle); "
                                                    "default: the built-in starter weights")
    p.add_argument("--backend", choices=("auto", "torch", "onnxruntime", "tensorrt"), default="auto",
                   help="inference backend (auto: onnxruntime on the CPU when installed, else torch)")
    p.add_argument("--device", default="cpu", help="device for the nets: cpu, cuda or cuda:N")
    p.add_argument("--detector", metavar="MODEL.onnx",
                   help="ONNX object detector run on requests that give no boxes; default: none (requests "
                        "without boxes use the full-image net)")
    p.add_argument("--score-threshold", type=float, default=0.3, metavar="T", help="minimum detector score")
    p.add_argument("--decode", choices=("regression", "distribution", "mixed"), default=None,
                   help="ab decoding of every request and edit (default: what the weights recommend; the built-in "
                        "starter: mixed); regression skips the classification head (faster editor previews)")
    p.add_argument("--temperature", type=float, default=None, metavar="T",
                   help="annealed-mean temperature of distribution / mixed decoding (default: the weights' recommendation)")
    p.add_argument("--mix", type=float, default=None, metavar="M",
                   help="mixed decoding: the annealed mean's share, in [0, 1] (default: the weights' recommendation)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    p.add_argument("--port", type=int, default=8000, help="TCP port (0: any free port; the log line says which)")
    p.add_argument("--max-batch", type=int, default=8, metavar="N",
                   help="at most N requests (of one processing size) per model call")
    p.add_argument("--max-wait-ms", type=float, default=10.0, metavar="MS",
                   help="a batch waits at most MS milliseconds after its first request for more")
    p.add_argument("--max-queue", type=int, default=64, metavar="N",
                   help="requests waiting for the model; beyond it: 503 with Retry-After")
    p.add_argument("--max-body-mb", type=float, default=25.0, metavar="MB", help="request body limit (413 above it)")
    p.add_argument("--max-pixels", type=int, default=None, metavar="N",
                   help="refuse images with more pixels than N (413), checked from the header before decoding "
                        "(default: $INSTCOLOR_MAX_PIXELS, else 100000000)")
    p.add_argument("--timeout-s", type=float, default=30.0, metavar="S",
                   help="answer 504 when a request has no result after S seconds; also the shutdown drain limit")
    p.add_argument("--io-threads", type=int, default=2, metavar="N",
                   help="threads for body parsing, image decoding and encoding")
    p.add_argument("--editor-sessions", type=int, default=16, metavar="N",
                   help="hint editor (open http://HOST:PORT/): images kept open for editing; the least recently used "
                        "is closed beyond N")
    p.add_argument("--editor-memory-mb", type=float, default=2048.0, metavar="MB",
                   help="hint editor: memory for the open images (inputs, cached features, results); the least "
                        "recently used is closed beyond it")
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"), default="info",
                   help="log level (info: one line per request)")
    p.add_argument("--ray", action="store_true", help="run as a Ray Serve deployment (needs the ray extra)")
    p.add_argument("--replicas", type=int, default=1, metavar="N", help="--ray: number of replicas")
    p.add_argument("--address", metavar="ADDR",
                   help="--ray: address of the Ray cluster to join (e.g. 10.0.0.5:6379 or 'auto'); default: "
                        "start a local one")
    p.add_argument("--autoscaling", metavar="JSON",
                   help="--ray: Ray Serve autoscaling_config as JSON (e.g. '{\"min_replicas\": 1, \"max_replicas\": "
                        "4, \"target_ongoing_requests\": 8}'); replaces --replicas; default: none")
    p.add_argument("--replica-cpus", type=float, default=1.0, metavar="C", help="--ray: CPUs reserved per replica")
    p.set_defaults(func=cmd_serve)


def settings_from_args(args):
    from ..errors import UsageError
    from .settings import ServeSettings

    try:
        return ServeSettings(weights=args.weights, backend=args.backend, device=args.device, detector=args.detector,
                             score_threshold=args.score_threshold, host=args.host, port=args.port,
                             max_batch=args.max_batch, max_wait_ms=args.max_wait_ms, max_queue=args.max_queue,
                             max_body_mb=args.max_body_mb, max_pixels=args.max_pixels, timeout_s=args.timeout_s,
                             io_threads=args.io_threads, decode=args.decode, temperature=args.temperature,
                             mix=args.mix)
    except ValueError as e:  # "max_wait_ms: ..." -> "--max-wait-ms: ..."
        field, _, rest = str(e).partition(": ")
        raise UsageError(f"--{field.replace('_', '-')}: {rest}") from None


def editor_settings_from_args(args):
    from ..errors import UsageError
    from ..ui.editor import EditorSettings

    try:
        return EditorSettings(max_sessions=args.editor_sessions, max_mb=args.editor_memory_mb)
    except ValueError as e:
        field, _, rest = str(e).partition(": ")
        flag = {"max_sessions": "--editor-sessions", "max_mb": "--editor-memory-mb"}.get(field, field)
        raise UsageError(f"{flag}: {rest}") from None


def _setup_logging(level: str) -> None:
    log = logging.getLogger("instcolor.serve")
    log.setLevel(level.upper())
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        log.addHandler(handler)
        log.propagate = False


def _listen(host: str, port: int) -> socket.socket:
    from ..errors import UsageError

    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as e:
        raise UsageError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    sock.set_inheritable(True)
    return sock


def cmd_serve(args) -> int:
    from ..errors import UsageError

    settings = settings_from_args(args)
    editor_settings = editor_settings_from_args(args)
    if not args.ray:
        for flag, value, default in (("--replicas", args.replicas, 1), ("--address", args.address, None),
                                     ("--autoscaling", args.autoscaling, None), ("--replica-cpus", args.replica_cpus, 1.0)):
            if value != default:
                raise UsageError(f"{flag} applies to --ray only")
    missing = [m for m in ("fastapi", "uvicorn", "multipart", "prometheus_client") if not _importable(m)]
    if missing:
        raise UsageError(f"instcolor serve needs {', '.join(missing)}: pip install 'instcolor[serve]'")
    _setup_logging(args.log_level)
    if args.ray:
        if not _importable("ray"):
            raise UsageError("instcolor serve --ray needs Ray Serve: pip install 'instcolor[ray]'")
        autoscaling = None
        if args.autoscaling:
            try:
                autoscaling = json.loads(args.autoscaling)
            except ValueError as e:
                raise UsageError(f"--autoscaling: not valid JSON: {e}") from None
            if not isinstance(autoscaling, dict):
                raise UsageError("--autoscaling: expected a JSON object")
        if args.replicas < 1:
            raise UsageError(f"--replicas must be >= 1, got {args.replicas}")
        from .ray_app import run_ray

        try:
            return run_ray(settings, replicas=args.replicas, address=args.address, autoscaling=autoscaling,
                           num_cpus=args.replica_cpus)
        except ValueError as e:
            raise UsageError(str(e)) from None
    return _serve_uvicorn(settings, args.log_level, editor_settings)


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def _graceful_server_class():
    """uvicorn.Server that, after a graceful shutdown on SIGTERM / SIGINT, returns (exit status 0)
    instead of re-raising the signal at the end as uvicorn does (which ends the process by the
    signal, before the CLI's last log line)."""
    import contextlib
    import signal
    import threading

    import uvicorn

    class GracefulServer(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self):
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            original = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for sig, handler in original.items():
                    signal.signal(sig, handler)

    return GracefulServer


def _serve_uvicorn(settings, log_level: str, editor_settings=None) -> int:
    import uvicorn

    from ..errors import UsageError
    from ..models import CheckpointError
    from .app import build_app, default_loader
    from .malloc import keep_freed_blocks

    log = logging.getLogger("instcolor.serve")
    keep_freed_blocks()  # this process is the server: repeated requests reuse mapped pages (serve/malloc.py)
    try:  # load before listening: a wrong --weights / --detector is an error now, not a 503 later
        colorizer = default_loader(settings)
    except (CheckpointError, ValueError, FileNotFoundError) as e:
        raise UsageError(str(e)) from None
    _GracefulServer = _graceful_server_class()
    sock = _listen(settings.host, settings.port)
    host, port = sock.getsockname()[:2]
    app = build_app(settings, colorizer=colorizer, load_in_background=True, editor_settings=editor_settings)
    config = uvicorn.Config(app, log_level=log_level, access_log=False, lifespan="on",
                            timeout_graceful_shutdown=int(settings.timeout_s) + 5, timeout_keep_alive=5)
    server = _GracefulServer(config)
    log.info("instcolor serve: listening on http://%s:%d (ready at /v2/health/ready once warmed up; editor at /)",
             f"[{host}]" if ":" in host else host, port)
    server.run(sockets=[sock])
    log.info("instcolor serve: stopped")
    return 0 if server.started else 1

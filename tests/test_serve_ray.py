"""instcolor serve on Ray Serve: a real local cluster (a head node and one worker node, loopback
only), two replicas, one per node; both serve, and their pixels equal the single-process server's."""
import asyncio
import importlib.util
import json
import os
import signal
import socket
import sys

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="instcolor serve needs the serve extra: pip install '.[serve]'")
httpx = pytest.importorskip("httpx", reason="the serve tests' HTTP client: pip install '.[serve]'")
if importlib.util.find_spec("ray") is None:  # not importorskip: ray must be imported after the env is set
    pytest.skip("Ray Serve is not installed: pip install '.[ray]'", allow_module_level=True)

# Read by Ray when it is imported (and by the processes it starts), so set before any import of ray:
# loopback only (without it Ray turns 127.0.0.1 into the machine's address when connecting), and
# the proxy spreads requests over both nodes (by default it prefers the replica on its own node).
_RAY_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_SERVE_PROXY_PREFER_LOCAL_NODE_ROUTING": "0",
            "RAY_USAGE_STATS_ENABLED": "0"}
_RAY_IMPORTED_BEFORE = "ray" in sys.modules
for _k, _v in _RAY_ENV.items():
    os.environ.setdefault(_k, _v)

from instcolor.imageio import encode_image, read_image  # noqa: E402
from instcolor.serve import ServeSettings, build_app  # noqa: E402
from test_serve_api import ThreadServer, photo  # noqa: E402


def test_deployment_options_pass_settings_and_autoscaling_through():
    from instcolor.serve.ray_app import deployment_options

    s = ServeSettings(max_batch=8, max_queue=20, timeout_s=12)
    opts = deployment_options(s, replicas=3)
    assert opts["num_replicas"] == 3 and "autoscaling_config" not in opts
    assert opts["max_ongoing_requests"] == 28 >= s.max_batch  # Ray's default 5 would never fill a batch of 8
    assert opts["graceful_shutdown_timeout_s"] == 17 and opts["ray_actor_options"] == {"num_cpus": 1.0}
    auto = {"min_replicas": 1, "max_replicas": 4, "target_ongoing_requests": 8}
    opts = deployment_options(s, autoscaling=auto, num_cpus=0.5)
    assert opts["autoscaling_config"] == auto and "num_replicas" not in opts
    assert opts["ray_actor_options"] == {"num_cpus": 0.5}
    with pytest.raises(ValueError, match="replicas"):
        deployment_options(s, replicas=0)


def test_app_builder_reads_serve_run_arguments(tiny_weights_dir):
    from instcolor.serve.ray_app import app_builder

    app = app_builder({"weights": str(tiny_weights_dir), "max_batch": "4", "max_wait_ms": "5", "replicas": "2",
                       "autoscaling": '{"min_replicas": 1, "max_replicas": 3}'})
    assert type(app).__name__ == "Application"
    with pytest.raises(ValueError, match="unknown setting"):
        app_builder({"max_bach": "4"})
    with pytest.raises(ValueError, match="max_batch: expected a int"):
        app_builder({"max_batch": "four"})


def _free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_two_replicas_on_a_two_node_loopback_cluster(tiny_weights_dir):
    if _RAY_IMPORTED_BEFORE or any(os.environ.get(k) != v for k, v in _RAY_ENV.items()):
        pytest.skip(f"needs {_RAY_ENV} set before ray is imported (ray was imported earlier in this process, "
                    f"or the environment sets them otherwise)")
    import ray
    from ray import serve
    from ray.cluster_utils import Cluster

    from instcolor.serve.ray_app import build_application

    settings = dict(weights=str(tiny_weights_dir), backend="torch", max_batch=4, max_wait_ms=20, max_queue=16,
                    timeout_s=60)
    images = [photo(40 + 8 * i, 32 + 4 * i, 200 + i) for i in range(4)]
    bodies = [encode_image(im, format="png") for im in images]
    params = [{}, {"boxes": "[[2, 2, 30, 28]]"}, {"size": "64"}, {"hints": '[{"x": 3, "y": 3, "rgb": "#aa3300"}]'}]

    # the single-process server's answers
    with ThreadServer(build_app(ServeSettings(**settings))) as local, httpx.Client(base_url=local.url,
                                                                                 timeout=60) as c:
        local.wait_ready()
        expected = []
        for body, p in zip(bodies, params):
            r = c.post("/v1/colorize", content=body, params=p, headers={"content-type": "image/png"})
            assert r.status_code == 200, r.text
            expected.append((read_image(r.content).rgb, r.headers["instcolor-boxes"]))

    port = _free_port()
    # ray.init installs its own SIGTERM handler in this (the pytest) process and leaves it after
    # shutdown; processes forked later (the trainer's sample workers) would inherit it
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "node_ip_address": "127.0.0.1",
                                                            "include_dashboard": False})
    try:
        cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1")
        ray.init(address=cluster.address, logging_level="WARNING", log_to_driver=False)
        assert sorted(n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"]) == ["127.0.0.1", "127.0.0.1"]
        serve.start(http_options={"host": "127.0.0.1", "port": port}, proxy_location="HeadOnly")
        # one CPU per replica and per node: the two replicas land on different nodes
        serve.run(build_application(ServeSettings(**settings), replicas=2, num_cpus=1), name="instcolor",
                  route_prefix="/")

        async def wave(c):
            return await asyncio.gather(*[c.post("/v1/colorize", content=bodies[i], params=params[i],
                                                 headers={"content-type": "image/png"}) for i in range(4)])

        async def main():
            seen, responses = set(), []
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as c:
                assert (await c.get("/v2/health/ready")).status_code == 200
                for _ in range(8):
                    rs = await wave(c)
                    responses.append(rs)
                    seen |= {r.headers.get("instcolor-instance") for r in rs}
                    if len(seen) >= 2 and len(responses) >= 2:
                        break
            return seen, responses

        seen, waves = asyncio.run(main())
        nodes = {s.split("node=")[1].split()[0] for s in seen if s and "node=" in s}
        assert len(seen) == 2 and len(nodes) == 2, seen  # both replicas served, on both nodes
        for rs in waves:
            for r, (want, want_boxes) in zip(rs, expected):
                assert r.status_code == 200, r.text
                np.testing.assert_array_equal(read_image(r.content).rgb, want)
                assert json.loads(r.headers["instcolor-boxes"]) == json.loads(want_boxes)
    finally:
        try:
            serve.shutdown()
        finally:
            ray.shutdown()
            cluster.shutdown()
            for sig, handler in handlers.items():
                signal.signal(sig, handler)

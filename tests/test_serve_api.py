"""instcolor serve over real HTTP on loopback (uvicorn in a thread, tiny weights): /v1/colorize,
the Open Inference Protocol (JSON and binary), errors, readiness, metrics, batching end to end,
disconnects and graceful shutdown. Pixels are compared with Colorizer.colorize on the same inputs."""
import asyncio
import base64
import io
import json
import socket
import struct
import threading
import time
import zlib

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="instcolor serve needs the serve extra: pip install '.[serve]'")
pytest.importorskip("uvicorn", reason="instcolor serve needs the serve extra: pip install '.[serve]'")
pytest.importorskip("multipart", reason="instcolor serve needs python-multipart: pip install '.[serve]'")
pytest.importorskip("prometheus_client", reason="instcolor serve needs prometheus-client: pip install '.[serve]'")
httpx = pytest.importorskip("httpx", reason="the serve tests' HTTP client: pip install '.[serve]'")

from instcolor import Hint  # noqa: E402
from instcolor.imageio import encode_image, read_image  # noqa: E402
from instcolor.serve import ServeSettings, build_app  # noqa: E402
from instcolor.serve.protocol.types import parse_infer_response  # noqa: E402


# ----------------------------------------------------------------------------- helpers
def photo(w, h, seed):
    """A smooth synthetic colour photo (H, W, 3) uint8."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack([np.sin(xx / (5 + 3 * c) + seed) * np.cos(yy / (7 + 2 * c)) for c in range(3)], -1)
    return np.clip(127 + 100 * base + rng.normal(0, 4, (h, w, 3)), 0, 255).astype(np.uint8)


def png(rgb, **kw):
    return encode_image(rgb, format="png", **kw)


class GatedColorizer:
    """Delegates to a real Colorizer; ``gate`` (cleared) holds colorize_batch; ``batches`` records
    the image count of each call."""

    def __init__(self, inner):
        self.inner = inner
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.batches = []
        self.images = []
        self.threads = {"prepare": set(), "infer": set(), "compose": set()}
        self.kernel_threads = set()  # ops.cpu_threads() seen by compose

    @property
    def default_size(self):
        return self.inner.default_size

    @property
    def detector(self):
        return self.inner.detector

    @property
    def backend(self):
        return self.inner.backend

    def colorize_batch(self, images, boxes=None, scores=None, hints=None, size=None):
        self.batches.append(len(images))
        self.images.extend(images)
        self.entered.set()
        assert self.gate.wait(60), "test gate never opened"
        return self.inner.colorize_batch(images, boxes, scores, hints, size=size)

    # the stages the server runs (prepare and compose in its I/O pool, infer in its inference thread)
    def prepare(self, *args, **kwargs):
        self.threads["prepare"].add(threading.current_thread().name.split("_")[0])
        return self.inner.prepare(*args, **kwargs)

    def infer(self, prepared, *args, **kwargs):
        self.threads["infer"].add(threading.current_thread().name.split("_")[0])
        self.batches.append(len(prepared))
        self.images.extend(p.prepared.image for p in prepared)
        self.entered.set()
        assert self.gate.wait(60), "test gate never opened"
        return self.inner.infer(prepared, *args, **kwargs)

    def compose(self, *args, **kwargs):
        from instcolor import ops

        self.threads["compose"].add(threading.current_thread().name.split("_")[0])
        self.kernel_threads.add(ops.cpu_threads())
        return self.inner.compose(*args, **kwargs)


class ThreadServer:
    """uvicorn serving ``app`` on 127.0.0.1 (a free port) in a thread."""

    def __init__(self, app, graceful_s=10):
        import uvicorn

        self.app = app
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on",
                                                    timeout_graceful_shutdown=graceful_s))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    @property
    def service(self):
        return self.app.state.service

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "server did not start"
            time.sleep(0.01)
        return self

    def wait_ready(self):
        deadline = time.monotonic() + 60
        while not self.service.is_ready():
            assert time.monotonic() < deadline, f"not ready: {self.service.load_error}"
            time.sleep(0.01)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(30)
        self.sock.close()
        assert not self.thread.is_alive(), "server thread did not stop"


def wait_until(pred, what):
    deadline = time.monotonic() + 30
    while not pred():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


def raw_request(port, head: bytes, body_parts=(), read=True, timeout=10):
    """Send ``head`` and ``body_parts`` on a fresh socket -> (status, headers text, body) or None."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(head)
        for part in body_parts:
            s.sendall(part)
        if not read:
            return None
        data = b""
        while True:
            try:
                chunk = s.recv(65536)
            except (ConnectionResetError, socket.timeout):
                break
            if not chunk:
                break
            data += chunk
            if b"\r\n\r\n" in data:
                head_part, _, body = data.partition(b"\r\n\r\n")
                length = [int(line.split(b":")[1]) for line in head_part.split(b"\r\n")
                          if line.lower().startswith(b"content-length:")]
                if length and len(body) >= length[0]:
                    break
        head_part, _, body = data.partition(b"\r\n\r\n")
        status = int(head_part.split(b" ")[1])
        return status, head_part.decode("latin-1"), body
    finally:
        s.close()


def decode_png(data):
    return read_image(data).rgb


@pytest.fixture(scope="module")
def colorizer(tiny_weights_dir):
    from instcolor import Colorizer

    return Colorizer.from_pretrained(tiny_weights_dir, backend="torch")


SETTINGS = dict(max_batch=4, max_wait_ms=30, max_queue=8, max_body_mb=1, max_pixels=200_000, timeout_s=20, io_threads=2)


@pytest.fixture(scope="module")
def gated(colorizer):
    return GatedColorizer(colorizer)


@pytest.fixture(scope="module")
def server(gated):
    app = build_app(ServeSettings(**SETTINGS), colorizer=gated)
    with ThreadServer(app) as srv:
        srv.wait_ready()
        yield srv


@pytest.fixture
def client(server, gated):
    gated.gate.set()
    with httpx.Client(base_url=server.url, timeout=60) as c:
        yield c
    gated.gate.set()


# ----------------------------------------------------------------------------- /v1/colorize
def test_v1_raw_png_equals_colorize_with_boxes_and_hints(client, colorizer):
    img = photo(72, 56, 1)
    boxes = [[4.7, 3.2, 40.9, 30.5], [20, 10, 70, 55]]
    hints = [{"x": 10, "y": 12, "rgb": "#3366cc", "size": 3}, {"x": 50.5, "y": 40, "ab": [20, -30]}]
    r = client.post("/v1/colorize", content=png(img), headers={"content-type": "image/png"},
                    params={"boxes": json.dumps(boxes), "hints": json.dumps(hints), "size": "64"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png"
    want = colorizer.colorize(img, boxes=np.array(boxes), hints=[Hint(10, 12, rgb=(0x33, 0x66, 0xcc), size=3),
                                                                Hint(50.5, 40, ab=(20, -30))], size=64)
    got = decode_png(r.content)
    assert got.shape == img.shape
    np.testing.assert_array_equal(got, want.rgb)
    assert json.loads(r.headers["instcolor-boxes"]) == want.boxes.tolist() == [[4, 3, 40, 30], [20, 10, 70, 55]]
    # the same image without options: the model's own size, no boxes
    r = client.post("/v1/colorize", content=png(img), headers={"content-type": "image/png"})
    np.testing.assert_array_equal(decode_png(r.content), colorizer.colorize(img, boxes=np.zeros((0, 4))).rgb)
    assert json.loads(r.headers["instcolor-boxes"]) == []


def test_v1_multipart_options_part_and_json_response(client, colorizer):
    img = photo(64, 48, 2)
    jpeg = encode_image(img, format="jpg", quality=90)
    opts = {"boxes": [[0, 0, 30, 40]], "scores": [0.9], "hints": [{"x": 5, "y": 5, "rgb": "#ff0000"}]}
    r = client.post("/v1/colorize", files={"image": ("cat.jpg", jpeg, "image/jpeg")},
                    data={"options": json.dumps(opts)}, headers={"accept": "application/json"})
    assert r.status_code == 200, r.text
    body = r.json()
    decoded = read_image(jpeg).rgb  # the server decodes the JPEG as read_image does
    want = colorizer.colorize(decoded, boxes=np.array(opts["boxes"]), scores=np.array([0.9]),
                              hints=[Hint(5, 5, rgb=(255, 0, 0))])
    assert (body["width"], body["height"], body["media_type"]) == (64, 48, "image/png")
    assert body["boxes"] == [[0, 0, 30, 40]] and body["scores"] == pytest.approx([0.9]) and body["labels"] is None
    np.testing.assert_array_equal(decode_png(base64.b64decode(body["image"])), want.rgb)


def test_v1_output_formats_keep_alpha_and_size(client, colorizer):
    img = photo(40, 30, 3)
    alpha = np.tile(np.arange(40, dtype=np.uint8) * 6, (30, 1))
    want = colorizer.colorize(img, boxes=np.zeros((0, 4))).rgb
    r = client.post("/v1/colorize", content=png(img, alpha=alpha), headers={"content-type": "image/png"})
    d = read_image(r.content)
    np.testing.assert_array_equal(d.rgb, want)
    np.testing.assert_array_equal(d.alpha, alpha)  # transparency re-attached
    for fmt, media, pil in (("jpeg", "image/jpeg", "JPEG"), ("webp", "image/webp", "WEBP")):
        r = client.post("/v1/colorize", content=png(img), headers={"content-type": "image/png"},
                        params={"format": fmt, "quality": "95"})
        assert r.status_code == 200 and r.headers["content-type"] == media
        d = read_image(r.content)
        assert d.format == pil and d.rgb.shape == img.shape
        assert np.abs(d.rgb.astype(int) - want).mean() < 4


BAD_OPTIONS = [
    ({"size": "7"}, "size", "multiple of 8"),
    ({"size": "abc"}, "size", "whole number"),
    ({"boxes": "[[1, 2, 3]]"}, "boxes[0]", "x0, y0, x1, y1"),
    ({"boxes": "[[1, 2, 3"}, "boxes", "not valid JSON"),
    ({"boxes": "[[0, 0, 500, 10]]"}, "boxes", "outside the 40x30 image"),
    ({"boxes": "[[5, 5, 5, 9]]"}, "boxes", "zero or negative area"),
    ({"boxes": "[[0, 0, 10, 10]]", "scores": "[1, 2]"}, "scores", "2 scores for 1 boxes"),
    ({"scores": "[1]"}, "scores", "need boxes"),
    ({"hints": '[{"x": 1, "y": 1, "rgb": "blue"}]'}, "hints[0].rgb", "#rrggbb"),
    ({"hints": '[{"x": 1, "y": 1}]'}, "hints[0]", "exactly one of rgb"),
    ({"hints": '[{"x": 1, "y": 1, "rgb": "#000000", "colour": 1}]'}, "hints[0].colour", "unknown key"),
    ({"hints": '[{"x": 100, "y": 1, "rgb": "#000000"}]'}, "hints", "outside the 40x30 image"),
    ({"detect": "true"}, "detect", "no detector"),
    ({"detect": "maybe"}, "detect", "true or false"),
    ({"format": "gif"}, "format", "png, jpeg or webp"),
    ({"quality": "0"}, "quality", "1..100"),
    ({"colour": "red"}, "colour", "unknown option"),
]


@pytest.mark.parametrize("params, field, words", BAD_OPTIONS, ids=[b[1] + ":" + b[2] for b in BAD_OPTIONS])
def test_v1_bad_options_are_422_naming_the_field(client, params, field, words):
    r = client.post("/v1/colorize", content=png(photo(40, 30, 4)), headers={"content-type": "image/png"},
                    params=params)
    assert r.status_code == 422, r.text
    assert r.json()["field"] == field and words in r.json()["error"], r.json()


def test_v1_bad_bodies_are_4xx_and_the_server_keeps_serving(client, server, colorizer):
    img = photo(40, 30, 5)
    good = png(img)
    cases = [
        (b"", "image/png", 400, "empty body"),
        (b"this is not an image at all", "image/png", 400, "image: not an image file"),
        (good[:len(good) // 2], "image/png", 400, "truncated"),
        (good, "text/plain", 415, "Content-Type 'text/plain'"),
    ]
    for body, ctype, status, words in cases:
        r = client.post("/v1/colorize", content=body, headers={"content-type": ctype})
        assert r.status_code == status and words in r.json()["error"], (ctype, r.text)
    # multipart problems
    r = client.post("/v1/colorize", files={"picture": ("a.png", good, "image/png")})
    assert r.status_code == 400 and "part 'picture'" in r.json()["error"]
    r = client.post("/v1/colorize", files={"image": ("a.png", b"garbage", "image/png")})
    assert r.status_code == 400 and r.json()["error"].startswith("a.png: not an image")
    r = client.post("/v1/colorize", files={"image": ("a.png", good, "image/png")}, data={"options": "{not json"})
    assert r.status_code == 422 and r.json()["field"] == "options"
    r = client.post("/v1/colorize", files={"image": ("a.png", good, "image/png")}, data={"options": '{"size": 64}'},
                    params={"size": "64"})
    assert r.status_code == 422 and r.json()["field"] == "size" and "both" in r.json()["error"]
    body = b'--xx\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n\r\n' + good  # no closing
    r = client.post("/v1/colorize", content=body, headers={"content-type": "multipart/form-data; boundary=xx"})
    assert r.status_code == 400 and "truncated multipart" in r.json()["error"]
    r = client.post("/v1/colorize?size=64&size=128", content=good, headers={"content-type": "image/png"})
    assert r.status_code == 422 and "more than once" in r.json()["error"]
    # still serving, with the right pixels
    r = client.post("/v1/colorize", content=good, headers={"content-type": "image/png"})
    np.testing.assert_array_equal(decode_png(r.content), colorizer.colorize(img, boxes=np.zeros((0, 4))).rgb)


def png_header_only(w, h):
    """A PNG whose header declares w x h pixels, followed by a few bytes of broken data."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)) + chunk(b"IDAT", b"x\x9c")


def test_too_many_pixels_is_413_decided_from_the_header(client):
    r = client.post("/v1/colorize", content=png_header_only(30000, 30000), headers={"content-type": "image/png"})
    assert r.status_code == 413, r.text  # the data cannot even be decoded: the header decided
    assert "900.0 megapixels exceeds the limit of 0.2 megapixels" in r.json()["error"]
    r = client.post("/v1/colorize", content=png_header_only(400, 400), headers={"content-type": "image/png"})
    assert r.status_code == 400  # under the limit, the same broken data is a decoding error


def test_body_over_the_limit_is_413_without_reading_it(server):
    limit = SETTINGS["max_body_mb"] * 1024 * 1024
    head = (f"POST /v1/colorize HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
            f"Content-Length: {100 * limit}\r\n\r\n").encode()
    status, headers, body = raw_request(server.port, head)  # not one body byte sent
    assert status == 413 and "over the limit" in json.loads(body)["error"]
    assert "connection: close" in headers.lower()
    # chunked, no Content-Length: refused once the limit is passed, the rest never sent
    head = b"POST /v1/colorize HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nTransfer-Encoding: chunked\r\n\r\n"
    chunk = b"%x\r\n" % (256 * 1024) + b"\0" * (256 * 1024) + b"\r\n"
    status, _, body = raw_request(server.port, head, [chunk] * 5)  # 1.25 MiB of an endless body
    assert status == 413 and "over the limit" in json.loads(body)["error"]


# ----------------------------------------------------------------------------- batching end to end
def test_concurrent_requests_share_a_batch_and_get_their_own_pixels(server, gated, colorizer):
    imgs = [photo(48 + 8 * i, 40 + 4 * i, 10 + i) for i in range(6)]
    opts = [{"boxes": json.dumps([[2, 2, 30, 30]])}, {}, {"hints": json.dumps([{"x": 3, "y": 4, "rgb": "#00ff00"}])},
            {"boxes": json.dumps([[0, 0, 20, 25], [10, 5, 40, 35]])}, {"size": "64"}, {}]

    async def main():
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as c:
            def post(i):
                return asyncio.ensure_future(c.post("/v1/colorize", content=png(imgs[i]), params=opts[i],
                                                    headers={"content-type": "image/png"}))
            gated.gate.clear()
            gated.entered.clear()
            n0 = len(gated.batches)
            first = post(5)
            await asyncio.get_running_loop().run_in_executor(None, gated.entered.wait, 30)
            rest = [post(i) for i in range(5)]  # 4 at the default size, then one at size 64
            for _ in range(3000):
                if server.service.batcher.depth == 5:
                    break
                await asyncio.sleep(0.005)
            assert server.service.batcher.depth == 5
            gated.gate.set()
            responses = await asyncio.gather(first, *rest)
            return responses, gated.batches[n0:]

    responses, batches = asyncio.run(main())
    assert batches == [1, 4, 1]
    assert [int(r.headers["instcolor-batch-size"]) for r in responses] == [1, 4, 4, 4, 4, 1]
    order = [5, 0, 1, 2, 3, 4]
    for r, i in zip(responses, order):
        assert r.status_code == 200, r.text
        b = np.array(json.loads(opts[i]["boxes"])) if "boxes" in opts[i] else np.zeros((0, 4))
        hints = [Hint(3, 4, rgb=(0, 255, 0))] if "hints" in opts[i] else ()
        want = colorizer.colorize(imgs[i], boxes=b, hints=hints, size=int(opts[i].get("size", 0)) or None)
        np.testing.assert_array_equal(decode_png(r.content), want.rgb)


def test_stages_run_in_their_threads_and_a_plain_colorizer_still_works(server, gated, colorizer):
    """The inference thread runs only the nets; detection/preparation and composition run in the
    I/O pool (so the nets never wait for them). A colorizer without the stage methods runs
    colorize_batch whole, with the same pixels."""
    from instcolor.serve.runner import ColorizeRunner, Job

    for v in gated.threads.values():
        v.clear()
    gated.kernel_threads.clear()
    img = photo(48, 36, 7)
    r = httpx.post(server.url + "/v1/colorize", content=png(img), headers={"content-type": "image/png"}, timeout=60)
    assert r.status_code == 200, r.text
    np.testing.assert_array_equal(decode_png(r.content), colorizer.colorize(img, boxes=np.zeros((0, 4))).rgb)
    assert gated.threads == {"prepare": {"instcolor-io"}, "infer": {"instcolor-infer"}, "compose": {"instcolor-io"}}
    assert gated.kernel_threads == {1}  # the I/O pool's kernels leave the other cores to the nets

    class Plain:  # colorize_batch only
        default_size, detector = colorizer.default_size, None
        colorize_batch = staticmethod(colorizer.colorize_batch)

    runner = ColorizeRunner(Plain())
    assert not runner.staged and ColorizeRunner(colorizer).staged
    boxes = np.array([[4, 4, 30, 30]], np.float32)
    for rr in (runner, ColorizeRunner(colorizer)):
        out = rr.colorize([Job(img, 64), Job(img, 64, boxes=boxes)])
        np.testing.assert_array_equal(out[0].rgb, colorizer.colorize(img, boxes=np.zeros((0, 4)), size=64).rgb)
        np.testing.assert_array_equal(out[1].rgb, colorizer.colorize(img, boxes=boxes, size=64).rgb)
        assert [len(o.boxes) for o in out] == [0, 1] and out[0].batch_size == 2


def test_one_bad_request_in_a_batch_fails_alone(server, gated, colorizer, monkeypatch):
    """A job that passes the checks but fails inside the nets (here: a planted failure) is
    re-run alone; its batch-mates still get their pixels."""
    imgs = [photo(40, 32, 20 + i) for i in range(3)]
    real = gated.inner.infer

    def flaky(prepared, *args, **kwargs):
        if any(np.array_equal(p.prepared.image, imgs[1]) for p in prepared):
            raise ValueError("planted failure")
        return real(prepared, *args, **kwargs)

    async def main():
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as c:
            gated.gate.clear()
            gated.entered.clear()
            warm = asyncio.ensure_future(c.post("/v1/colorize", content=png(photo(16, 16, 0)),
                                                headers={"content-type": "image/png"}))
            await asyncio.get_running_loop().run_in_executor(None, gated.entered.wait, 30)
            tasks = [asyncio.ensure_future(c.post("/v1/colorize", content=png(im), headers={"content-type": "image/png"}))
                     for im in imgs]
            for _ in range(3000):
                if server.service.batcher.depth == 3:
                    break
                await asyncio.sleep(0.005)
            monkeypatch.setattr(gated.inner, "infer", flaky)
            gated.gate.set()
            return await asyncio.gather(warm, *tasks)

    warm, *rs = asyncio.run(main())
    monkeypatch.undo()
    assert [r.status_code for r in rs] == [200, 422, 200]
    assert "planted failure" in rs[1].json()["error"]
    for r, im in zip((rs[0], rs[2]), (imgs[0], imgs[2])):
        np.testing.assert_array_equal(decode_png(r.content), colorizer.colorize(im, boxes=np.zeros((0, 4))).rgb)


def test_queue_full_is_503_with_retry_after(server, gated):
    async def main():
        async with httpx.AsyncClient(base_url=server.url, timeout=60,
                                     limits=httpx.Limits(max_connections=40)) as c:
            def post():
                return asyncio.ensure_future(c.post("/v1/colorize", content=png(photo(16, 16, 1)),
                                                    headers={"content-type": "image/png"}))
            gated.gate.clear()
            gated.entered.clear()
            held = post()
            await asyncio.get_running_loop().run_in_executor(None, gated.entered.wait, 30)
            queued = [post() for _ in range(SETTINGS["max_queue"])]
            for _ in range(3000):
                if server.service.batcher.depth == SETTINGS["max_queue"]:
                    break
                await asyncio.sleep(0.005)
            over = await c.post("/v1/colorize", content=png(photo(16, 16, 1)), headers={"content-type": "image/png"})
            gated.gate.set()
            return over, await asyncio.gather(held, *queued)

    over, done = asyncio.run(main())
    assert over.status_code == 503 and int(over.headers["retry-after"]) >= 1 and "queue is full" in over.json()["error"]
    assert [r.status_code for r in done] == [200] * (1 + SETTINGS["max_queue"])


def test_disconnected_client_is_dropped_from_the_queue(server, gated):
    img_gone = photo(24, 24, 77)
    gated.gate.clear()
    gated.entered.clear()
    n_images = len(gated.images)
    with httpx.Client(base_url=server.url, timeout=60) as c:
        result = {}
        t = threading.Thread(target=lambda: result.setdefault("r", c.post(
            "/v1/colorize", content=png(photo(16, 16, 2)), headers={"content-type": "image/png"})))
        t.start()
        assert gated.entered.wait(30)
        body = png(img_gone)
        head = (f"POST /v1/colorize HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode()
        s = socket.create_connection(("127.0.0.1", server.port))
        s.sendall(head + body)
        wait_until(lambda: server.service.batcher.depth == 1, "the request to queue")
        s.close()  # the client leaves
        wait_until(lambda: server.service.batcher.depth == 0, "the request to leave the queue")
        gated.gate.set()
        t.join(30)
        assert result["r"].status_code == 200
        r = c.post("/v1/colorize", content=png(photo(16, 16, 3)), headers={"content-type": "image/png"})
        assert r.status_code == 200
    seen = gated.images[n_images:]
    assert len(seen) == 2 and not any(im.shape == img_gone.shape and np.array_equal(im, img_gone) for im in seen)


# ----------------------------------------------------------------------------- v2 (Open Inference Protocol)
def test_v2_health_and_metadata(client):
    assert client.get("/v2/health/live").status_code == 200
    assert client.get("/v2/health/ready").json() == {"ready": True}
    assert client.get("/v2/models/instcolor/ready").status_code == 200
    meta = client.get("/v2/models/instcolor").json()
    assert meta["name"] == "instcolor" and meta["versions"] == ["1"]
    assert {(i["name"], i["datatype"]) for i in meta["inputs"]} >= {("image", "BYTES"), ("boxes", "FP32")}
    assert [(o["name"], o["datatype"], o["shape"]) for o in meta["outputs"]] == [("image", "BYTES", [1]),
                                                                                 ("boxes", "FP32", [-1, 4])]
    assert "binary_tensor_data" in client.get("/v2").json()["extensions"]
    r = client.get("/v2/models/other")
    assert r.status_code == 404 and "unknown model 'other'" in r.json()["error"]


def test_v2_json_infer_equals_colorize(client, colorizer):
    img = photo(56, 40, 30)
    req = {"id": "r1", "inputs": [
        {"name": "image", "datatype": "BYTES", "shape": [1], "data": [base64.b64encode(png(img)).decode()]},
        {"name": "boxes", "datatype": "FP32", "shape": [1, 4], "data": [[3.5, 2, 33, 30]]}],
        "parameters": {"size": 64, "hints": [{"x": 7, "y": 8, "rgb": "#123456"}]}}
    r = client.post("/v2/models/instcolor/infer", json=req)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["id"] == "r1" and out["model_name"] == "instcolor"
    by = {o["name"]: o for o in out["outputs"]}
    want = colorizer.colorize(img, boxes=np.array([[3.5, 2, 33, 30]]), hints=[Hint(7, 8, rgb=(0x12, 0x34, 0x56))],
                              size=64)
    np.testing.assert_array_equal(decode_png(base64.b64decode(by["image"]["data"][0])), want.rgb)
    assert by["boxes"]["shape"] == [1, 4] and by["boxes"]["data"] == [3, 2, 33, 30]


def test_v2_binary_infer_equals_colorize(client, colorizer):
    img = photo(50, 44, 31)
    data = png(img)
    image_blob = struct.pack("<I", len(data)) + data
    boxes = np.array([[1, 1, 25, 30], [10, 12, 49, 43]], np.float32)
    header = json.dumps({"inputs": [
        {"name": "image", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": len(image_blob)}},
        {"name": "boxes", "datatype": "FP32", "shape": [2, 4], "parameters": {"binary_data_size": boxes.nbytes}}],
        "outputs": [{"name": "image", "parameters": {"binary_data": True}}, {"name": "boxes"}]}).encode()
    r = client.post("/v2/models/instcolor/infer", content=header + image_blob + boxes.tobytes(),
                    headers={"content-type": "application/octet-stream",
                             "inference-header-content-length": str(len(header))})
    assert r.status_code == 200, r.text
    out = parse_infer_response(r.content, r.headers.get("inference-header-content-length"))
    by = {o["name"]: o for o in out["outputs"]}
    want = colorizer.colorize(img, boxes=boxes)
    np.testing.assert_array_equal(decode_png(by["image"]["data"][0]), want.rgb)
    assert by["boxes"]["data"] == boxes.reshape(-1).tolist()  # JSON, as asked
    # every output binary: parameters.binary_data_output
    header = json.dumps({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1],
                                     "parameters": {"binary_data_size": len(image_blob)}}],
                         "parameters": {"binary_data_output": True}}).encode()
    r = client.post("/v2/models/instcolor/infer", content=header + image_blob,
                    headers={"inference-header-content-length": str(len(header))})
    out = parse_infer_response(r.content, r.headers["inference-header-content-length"])
    by = {o["name"]: o for o in out["outputs"]}
    assert by["boxes"]["data"].shape == (0, 4)
    np.testing.assert_array_equal(decode_png(by["image"]["data"][0]), colorizer.colorize(img, boxes=np.zeros((0, 4))).rgb)


def _v2(inputs, **extra):
    return {"inputs": inputs, **extra}


IMG_INPUT = {"name": "image", "datatype": "BYTES", "shape": [1], "data": ["<set later>"]}
BAD_V2 = [
    (_v2([{"name": "boxes", "datatype": "FP32", "shape": [0, 4], "data": []}]), 422, "inputs.image"),
    (_v2([IMG_INPUT, {"name": "boxes", "datatype": "INT32", "shape": [1, 4], "data": [1, 2, 3, 4]}]), 422,
     "inputs.boxes"),
    (_v2([IMG_INPUT, {"name": "boxes", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]}]), 422, "inputs.boxes"),
    (_v2([IMG_INPUT, {"name": "mask", "datatype": "FP32", "shape": [1], "data": [1]}]), 422, "inputs.mask"),
    (_v2([IMG_INPUT], parameters={"colour": 1}), 422, "parameters.colour"),
    (_v2([IMG_INPUT], parameters={"size": 12}), 422, "parameters.size"),
    (_v2([IMG_INPUT], outputs=[{"name": "logits"}]), 422, "outputs[0].name"),
    (_v2([{"name": "image", "datatype": "BYTES", "shape": [2], "data": ["a"]}]), 400, "needs 2 elements"),
    (_v2([{"name": "image", "datatype": "BYTES", "shape": [1], "data": ["%%%"]}]), 400, "base64"),
    (_v2([{"name": "image", "datatype": "BYTES", "shape": "1", "data": ["a"]}]), 400, "inputs[0] (image).shape"),
    (_v2([{"name": "image", "datatype": "STRING", "shape": [1], "data": ["a"]}]), 400, "datatype"),
    ({"inputs": []}, 400, "inputs: expected a non-empty list"),
]


@pytest.mark.parametrize("req, status, words", BAD_V2, ids=[w for _, _, w in BAD_V2])
def test_v2_bad_requests_name_the_field(client, req, status, words):
    img = base64.b64encode(png(photo(20, 20, 1))).decode()
    req = json.loads(json.dumps(req).replace("<set later>", img))
    r = client.post("/v2/models/instcolor/infer", json=req)
    assert r.status_code == status, r.text
    assert words in r.json()["error"] or words == r.json().get("field"), r.json()


BINARY_HEAD = b'{"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": 10}}]}'


def test_v2_malformed_bodies_are_400(client):
    for body, headers, words in [
        (b"{not json", {}, "not valid JSON"),
        (b"[" * 100000, {}, "not valid JSON"),
        (b'{"inputs": []}', {"inference-header-content-length": "999"}, "Inference-Header-Content-Length"),
        (BINARY_HEAD, {"inference-header-content-length": str(len(BINARY_HEAD))}, "binary_data_size"),
    ]:
        r = client.post("/v2/models/instcolor/infer", content=body, headers=headers)
        assert r.status_code == 400 and words in r.json()["error"], r.text
    head = json.dumps({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1],
                                   "parameters": {"binary_data_size": 8}}]}).encode()
    r = client.post("/v2/models/instcolor/infer", content=head + struct.pack("<I", 100) + b"abcd",
                    headers={"inference-header-content-length": str(len(head))})
    assert r.status_code == 400 and "runs past binary_data_size" in r.json()["error"]


# ----------------------------------------------------------------------------- operations
def test_metrics_count_routes_batches_and_queue(client):
    client.post("/v1/colorize", content=png(photo(20, 20, 1)), headers={"content-type": "image/png"})
    client.post("/v1/colorize", content=b"junk", headers={"content-type": "image/png"})
    client.get("/v2/models/instcolor")
    text = client.get("/metrics").text
    assert 'instcolor_http_requests_total{method="POST",route="/v1/colorize",status="200"}' in text
    assert 'instcolor_http_requests_total{method="POST",route="/v1/colorize",status="400"}' in text
    assert 'route="/v2/models/{model_name}"' in text and 'route="/v2/models/instcolor"' not in text
    assert 'route="/metrics"' not in text
    for name in ("instcolor_queue_depth", "instcolor_batch_size_count", "instcolor_inference_seconds_count",
                 "instcolor_http_request_duration_seconds_bucket", "instcolor_queue_wait_seconds_count"):
        assert name in text, name
    count = [float(line.split()[-1]) for line in text.splitlines() if line.startswith("instcolor_batch_size_count")]
    assert count and count[0] >= 1


def test_openapi_schema_is_served(client):
    schema = client.get("/openapi.json").json()
    assert "/v1/colorize" in schema["paths"] and "/v2/models/{model_name}/infer" in schema["paths"]
    params = {p["name"] for p in schema["paths"]["/v1/colorize"]["post"]["parameters"]}
    assert params == {"boxes", "scores", "detect", "hints", "size", "format", "quality"}


def test_not_ready_until_loaded_and_warmed_up(colorizer):
    release = threading.Event()

    def loader():
        assert release.wait(60)
        return colorizer

    app = build_app(ServeSettings(**SETTINGS), loader=loader)
    with ThreadServer(app) as srv, httpx.Client(base_url=srv.url, timeout=60) as c:
        assert c.get("/v2/health/live").status_code == 200
        r = c.get("/v2/health/ready")
        assert r.status_code == 503 and r.json()["ready"] is False
        r = c.post("/v1/colorize", content=png(photo(20, 20, 1)), headers={"content-type": "image/png"})
        assert r.status_code == 503 and "loading" in r.json()["error"] and r.headers["retry-after"]
        assert 'instcolor_ready 0.0' in c.get("/metrics").text
        release.set()
        srv.wait_ready()
        assert c.get("/v2/health/ready").status_code == 200
        assert c.post("/v1/colorize", content=png(photo(20, 20, 1)), headers={"content-type": "image/png"}).status_code == 200

    def broken():
        raise FileNotFoundError("no weights at /nowhere")

    app = build_app(ServeSettings(**SETTINGS), loader=broken)
    with ThreadServer(app) as srv, httpx.Client(base_url=srv.url, timeout=60) as c:
        wait_until(lambda: srv.service.load_error, "the load to fail")
        r = c.get("/v2/health/ready")
        assert r.status_code == 503 and "no weights at /nowhere" in r.json()["error"]
        r = c.post("/v1/colorize", content=png(photo(20, 20, 1)), headers={"content-type": "image/png"})
        assert r.status_code == 503 and "failed to load" in r.json()["error"]


def test_timeout_is_504(colorizer):
    g = GatedColorizer(colorizer)
    app = build_app(ServeSettings(**{**SETTINGS, "timeout_s": 0.5, "max_wait_ms": 1}), colorizer=g)
    with ThreadServer(app) as srv:
        srv.wait_ready()
        g.gate.clear()
        try:
            with httpx.Client(base_url=srv.url, timeout=60) as c:
                r = c.post("/v1/colorize", content=png(photo(20, 20, 1)), headers={"content-type": "image/png"})
                assert r.status_code == 504 and "request timeout of 0.5 s" in r.json()["error"]
        finally:
            g.gate.set()


def test_detector_is_the_default_and_detect_false_turns_it_off(tiny_weights_dir):
    from instcolor import Colorizer
    from instcolor.detect.base import Detections

    def detector(img):
        h, w = img.shape[:2]
        return Detections(np.array([[1, 2, w // 2, h // 2]], np.float32), np.array([0.8], np.float32),
                          np.array([17]))

    c = Colorizer.from_pretrained(tiny_weights_dir, backend="torch", detector=detector)
    app = build_app(ServeSettings(**{**SETTINGS, "max_batch": 2}), colorizer=c)
    img = photo(40, 30, 9)
    with ThreadServer(app) as srv, httpx.Client(base_url=srv.url, timeout=60) as client:
        srv.wait_ready()
        h = {"content-type": "image/png"}
        r = client.post("/v1/colorize", content=png(img), headers=h)
        assert json.loads(r.headers["instcolor-boxes"]) == [[1, 2, 20, 15]]
        assert json.loads(r.headers["instcolor-labels"]) == [17]
        np.testing.assert_array_equal(decode_png(r.content), c.colorize(img).rgb)
        r = client.post("/v1/colorize", content=png(img), headers=h, params={"detect": "false"})
        assert json.loads(r.headers["instcolor-boxes"]) == []
        r = client.post("/v1/colorize", content=png(img), headers=h, params={"boxes": "[[0, 0, 9, 9]]"})
        assert json.loads(r.headers["instcolor-boxes"]) == [[0, 0, 9, 9]]
        r = client.post("/v1/colorize", content=png(img), headers=h, params={"boxes": "[[0, 0, 9, 9]]",
                                                                              "detect": "true"})
        assert r.status_code == 422 and r.json()["field"] == "detect"


def test_graceful_shutdown_finishes_queued_requests(colorizer):
    g = GatedColorizer(colorizer)
    app = build_app(ServeSettings(**{**SETTINGS, "max_batch": 1}), colorizer=g)
    srv = ThreadServer(app).__enter__()
    try:
        srv.wait_ready()
        imgs = [photo(20 + 4 * i, 20, 40 + i) for i in range(3)]

        async def main():
            async with httpx.AsyncClient(base_url=srv.url, timeout=60) as c:
                g.gate.clear()
                g.entered.clear()
                tasks = [asyncio.ensure_future(c.post("/v1/colorize", content=png(imgs[0]),
                                                      headers={"content-type": "image/png"}))]
                await asyncio.get_running_loop().run_in_executor(None, g.entered.wait, 30)
                tasks += [asyncio.ensure_future(c.post("/v1/colorize", content=png(im),
                                                       headers={"content-type": "image/png"})) for im in imgs[1:]]
                for _ in range(3000):
                    if srv.service.batcher.depth == 2:
                        break
                    await asyncio.sleep(0.005)
                assert srv.service.batcher.depth == 2
                srv.server.should_exit = True  # what SIGTERM does
                for _ in range(3000):  # stops accepting
                    try:
                        socket.create_connection(("127.0.0.1", srv.port), timeout=1).close()
                    except OSError:
                        break
                    await asyncio.sleep(0.01)
                else:
                    raise AssertionError("still accepting connections")
                g.gate.set()
                return await asyncio.gather(*tasks)

        responses = asyncio.run(main())
        assert [r.status_code for r in responses] == [200, 200, 200]
        for r, im in zip(responses, imgs):
            np.testing.assert_array_equal(decode_png(r.content), colorizer.colorize(im, boxes=np.zeros((0, 4))).rgb)
        srv.thread.join(30)
        assert not srv.thread.is_alive()
        assert not srv.service.batcher.healthy
    finally:
        g.gate.set()
        srv.__exit__(None, None, None)


def test_decoding_and_encoding_run_in_the_io_pool_not_on_the_event_loop(client, monkeypatch):
    import instcolor.imageio as imageio
    import instcolor.serve.app as app_module

    threads = []
    real_decode, real_encode = app_module.decode_image, imageio.encode_image

    def decode(*a, **kw):
        threads.append(("decode", threading.current_thread().name))
        return real_decode(*a, **kw)

    def encode(*a, **kw):
        threads.append(("encode", threading.current_thread().name))
        return real_encode(*a, **kw)

    monkeypatch.setattr(app_module, "decode_image", decode)
    monkeypatch.setattr(imageio, "encode_image", encode)
    r = client.post("/v1/colorize", content=png(photo(20, 20, 1)), headers={"content-type": "image/png"})
    assert r.status_code == 200
    assert [k for k, _ in threads] == ["decode", "encode"]
    assert all(name.startswith("instcolor-io") for _, name in threads), threads


def test_encode_image_is_write_image_in_memory(tmp_path):
    from instcolor.imageio import write_image

    img = photo(30, 20, 5)
    for fmt in ("png", "jpg", "webp"):
        write_image(tmp_path / f"a.{fmt}", img, format=fmt, quality=80)
        assert encode_image(img, format=fmt, quality=80) == (tmp_path / f"a.{fmt}").read_bytes()
    assert encode_image(img, format="jpeg") == encode_image(img, format="jpg")
    with pytest.raises(ValueError, match="encode_image: format must be one of"):
        encode_image(img, format="gif")
    with pytest.raises(ValueError, match="encode_image: quality"):
        encode_image(img, format="jpg", quality=0)

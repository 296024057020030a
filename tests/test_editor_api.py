"""The hint editor's core (instcolor.ui.editor) and its routes (/editor, /ui) with tiny random nets:
results equal Colorizer.colorize (cached and uncached), LRU eviction by count and bytes, the
newest edit wins, bad uploads and options answer clear 4xx, hint sets round-trip through the
API's and the video CLI's parsers, and the static page is served as package data."""
import io
import json
import re
import socket
import threading
import time

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the editor needs the serve extra: pip install '.[serve]'")
pytest.importorskip("multipart", reason="the editor needs python-multipart: pip install '.[serve]'")
pytest.importorskip("prometheus_client", reason="the editor needs prometheus-client: pip install '.[serve]'")
httpx = pytest.importorskip("httpx", reason="the editor tests' HTTP client: pip install '.[serve]'")

from fastapi.testclient import TestClient  # noqa: E402

from instcolor import GlobalHints, Hint  # noqa: E402
from instcolor.detect import Detections  # noqa: E402
from instcolor.imageio import encode_image, read_image  # noqa: E402
from instcolor.serve import ServeSettings, build_app  # noqa: E402
from instcolor.ui.editor import (BatchSession, Editor, EditorSettings, SessionEvicted, SessionNotFound,  # noqa: E402
                                 Superseded, gamut_picture)
from instcolor.hintset import EditState, hint_set_to_json, parse_hint_set  # noqa: E402

BOXES = np.array([[4, 6, 40, 34], [30, 12, 70, 52], [0, 20, 26, 62]], np.float32)
SCORES = np.array([0.9, 0.8, 0.7], np.float32)
LABELS = np.array([0, 2, 16])


def photo(w, h, seed):
    """A smooth synthetic colour photo (H, W, 3) uint8."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack([np.sin(xx / (5 + 3 * c) + seed) * np.cos(yy / (7 + 2 * c)) for c in range(3)], -1)
    return np.clip(127 + 100 * base + rng.normal(0, 4, (h, w, 3)), 0, 255).astype(np.uint8)


def fixed_detector(image):
    return Detections(BOXES, SCORES, LABELS)


class Gated:
    """A colorizer wrapper without open_session (the BatchSession path) whose colorize_batch can be
    held on ``gate``; ``calls`` counts model runs."""

    def __init__(self, inner):
        self.inner = inner
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.calls = 0
        self.default_size = inner.default_size
        self.detector = inner.detector
        self.ops = inner.ops

    def colorize_batch(self, images, boxes=None, scores=None, hints=None, size=None):
        self.calls += 1
        self.entered.set()
        assert self.gate.wait(60), "test gate never opened"
        return self.inner.colorize_batch(images, boxes, scores, hints, size=size)


@pytest.fixture(scope="module")
def colorizer(tiny_weights_dir):
    from instcolor import Colorizer

    return Colorizer.from_pretrained(tiny_weights_dir, backend="torch", detector=fixed_detector)


@pytest.fixture(scope="module")
def image():
    return photo(80, 64, 3)


SIZE = 64
HINTS = [Hint(12, 30, rgb=(220, 30, 30), size=3), Hint(60, 20, ab=(-40.0, 50.0), size=1)]
HINTS_JSON = [{"x": 12, "y": 30, "rgb": "#dc1e1e", "size": 3}, {"x": 60, "y": 20, "ab": [-40.0, 50.0], "size": 1}]


def settings(**kw):
    return ServeSettings(**{"max_body_mb": 1, "max_pixels": 100_000, "timeout_s": 30, "warmup": False, **kw})


@pytest.fixture
def client(colorizer):
    app = build_app(settings(), colorizer=colorizer, editor_settings=EditorSettings(max_sessions=3, preview_side=40))
    with TestClient(app) as c:
        deadline = time.monotonic() + 60
        while not app.state.service.is_ready():
            assert time.monotonic() < deadline, app.state.service.load_error
            time.sleep(0.01)
        c.app_ref = app
        yield c


def open_image(client, img, size=SIZE, **headers):
    r = client.post(f"/editor/sessions?size={size}", content=encode_image(img),
                    headers={"content-type": "image/png", **headers})
    assert r.status_code == 201, r.text
    return r.json()


# ----------------------------------------------------------------------------- results
def test_open_describes_the_detected_instances_and_the_grey_preview(client, image):
    info = open_image(client, image)
    assert (info["width"], info["height"], info["size"]) == (80, 64, SIZE)
    assert info["preview"] == {"width": 40, "height": 32}
    assert [i["box"] for i in info["instances"]] == BOXES.tolist()
    assert [i["name"] for i in info["instances"]] == ["person", "car", "dog"]
    grey = read_image(client.get(f"/editor/sessions/{info['session']}/input.png").content).rgb
    assert grey.shape == (32, 40, 3)
    assert np.array_equal(grey[..., 0], grey[..., 1]) and np.array_equal(grey[..., 1], grey[..., 2])
    assert grey.std() > 5  # the photo's lightness, not a flat picture


def test_full_result_and_preview_equal_colorize_cached_or_not(client, colorizer, image):
    """The session path (cached instance features) gives colorize's pixels; a repeat is served from
    the session's results without a model run and is byte-identical."""
    info = open_image(client, image)
    sid = info["session"]
    body = {"hints": HINTS_JSON, "exclude": [1], "format": "png"}
    want = colorizer.colorize(image, boxes=BOXES[[0, 2]], hints=HINTS, size=SIZE)
    r1 = client.post(f"/editor/sessions/{sid}/result", json=body)
    assert r1.status_code == 200, r1.text
    assert r1.headers["content-disposition"].startswith("attachment")
    assert np.array_equal(read_image(r1.content).rgb, want.rgb)
    session = client.app_ref.state.editor.get(sid)
    runs = session.runs
    r2 = client.post(f"/editor/sessions/{sid}/result", json=body)
    assert session.runs == runs and r2.content == r1.content
    # the preview is the same ab on the preview-size input
    p = client.post(f"/editor/sessions/{sid}/preview", json=body)
    assert p.status_code == 200 and session.runs == runs
    prev = read_image(p.content).rgb
    assert prev.shape == (32, 40, 3)
    assert np.array_equal(prev, session.compose(session.preview_input, want.ab))
    # without hints the picture differs where the hint was (the hint reached the model)
    plain = client.post(f"/editor/sessions/{sid}/result", json={"exclude": [1]})
    assert session.runs == runs + 1
    assert not np.array_equal(read_image(plain.content).rgb, want.rgb)


def test_preview_reports_where_its_time_went(client, image):
    """Server-Timing on /preview: read, queue, model, encode and total in ms (bench_editor.py reads it)."""
    sid = open_image(client, image)["session"]
    p = client.post(f"/editor/sessions/{sid}/preview", json={"hints": HINTS_JSON})
    assert p.status_code == 200, p.text
    parts = dict(item.strip().split(";dur=") for item in p.headers["server-timing"].split(","))
    ms = {k: float(v) for k, v in parts.items()}
    assert list(ms) == ["read", "queue", "model", "encode", "total"]
    assert all(v >= 0 for v in ms.values()) and ms["model"] > 0
    assert ms["total"] >= ms["model"] + ms["encode"] - 0.2  # each figure is rounded to 0.1 ms


def test_batch_session_path_equals_colorize(colorizer, image):
    """Colorizers without open_session (other backends, wrappers) get a BatchSession: same pixels."""
    gated = Gated(colorizer)
    editor = Editor(gated, EditorSettings(preview_side=40), size=SIZE)
    s = editor.open(image)
    assert isinstance(s.inner, BatchSession)
    assert np.array_equal(s.boxes, BOXES)
    state = EditState(hints=tuple(HINTS), exclude=(0,))
    got = editor.full(s, state)
    want = colorizer.colorize(image, boxes=BOXES[1:], hints=HINTS, size=SIZE)
    assert np.array_equal(got, want.rgb)
    calls = gated.calls
    assert np.array_equal(editor.full(s, EditState(hints=tuple(HINTS), exclude=(0,))), got)
    assert gated.calls == calls  # served from the session's results


def test_suggestions_equal_the_colorizers(client, colorizer, image):
    info = open_image(client, image)
    r = client.post(f"/editor/sessions/{info['session']}/suggest", json={"x": 20, "y": 15, "k": 5, "exclude": [2]})
    assert r.status_code == 200, r.text
    got = r.json()
    want = colorizer.suggest_colors(image, 20, 15, k=5, size=SIZE, boxes=BOXES[:2])
    assert [c["rgb"] for c in got["colors"]] == ["#%02x%02x%02x" % tuple(rgb) for rgb, _ in want]
    assert [c["p"] for c in got["colors"]] == pytest.approx([p for _, p in want], abs=1e-6)
    assert 0 <= got["L"] <= 100


# ----------------------------------------------------------------------------- sessions
def test_lru_eviction_by_count_gives_410_with_a_clear_message(client, image):
    ids = [open_image(client, photo(80, 64, s))["session"] for s in range(3)]
    assert client.get(f"/editor/sessions/{ids[0]}").status_code == 200  # ids[0] is now the most recent
    new = open_image(client, image)["session"]  # max_sessions=3: ids[1] is the least recently used
    r = client.post(f"/editor/sessions/{ids[1]}/preview", json={})
    assert r.status_code == 410
    assert "open the image again" in r.json()["error"] and ids[1] in r.json()["error"]
    for sid in (ids[0], ids[2], new):
        assert client.get(f"/editor/sessions/{sid}").status_code == 200
    r = client.get("/editor/sessions/nonexistent")
    assert r.status_code == 404 and "open the image again" in r.json()["error"]
    assert client.delete(f"/editor/sessions/{new}").status_code == 200
    assert client.get(f"/editor/sessions/{new}").status_code == 410


def test_lru_eviction_by_bytes(colorizer):
    editor = Editor(colorizer, EditorSettings(max_sessions=10, max_mb=0.05), size=SIZE)
    a = editor.open(photo(80, 64, 1))
    assert a.nbytes > 0.02 * 2 ** 20  # inputs, previews and the cached instance features
    b = editor.open(photo(80, 64, 2))
    assert b.id in editor.store and a.id not in editor.store  # a did not fit beside b
    with pytest.raises(SessionEvicted, match="free memory"):
        editor.get(a.id)
    with pytest.raises(SessionNotFound):
        editor.get("never-opened")


class SpyLock:
    """Wraps a session's lock; ``waiting`` is set when a thread starts to acquire it."""

    def __init__(self, lock):
        self.lock = lock
        self.waiting = threading.Event()

    def __enter__(self):
        self.waiting.set()
        self.lock.acquire()
        return self

    def __exit__(self, *exc):
        self.lock.release()


def test_a_newer_edit_supersedes_the_one_computing(colorizer, image):
    """Core: edit 1 is in the model when edit 2 arrives and waits for the session's lock; edit 3
    arrives. Edit 1's result is dropped (Superseded), edit 2 is answered Superseded without a model
    run, edit 3 is answered; an edit already stale when it starts is Superseded at once."""
    gated = Gated(colorizer)
    editor = Editor(gated, EditorSettings(preview_side=40), size=SIZE)
    s = editor.open(image)
    gated.gate.clear()
    gated.entered.clear()
    out = {}

    def run(name, n, state):
        try:
            out[name] = editor.preview(s, n, state)
        except Superseded as e:
            out[name] = e

    n1 = s.begin()
    t1 = threading.Thread(target=run, args=("first", n1, EditState(hints=(HINTS[0],))))
    t1.start()
    assert gated.entered.wait(30)
    spy = s.lock = SpyLock(s.lock)  # edit 1 holds the real lock inside the model
    n2 = s.begin()  # arrives while edit 1 computes
    t2 = threading.Thread(target=run, args=("second", n2, EditState(hints=tuple(HINTS))))
    t2.start()
    assert spy.waiting.wait(30)  # edit 2 passed its first check and waits for the lock
    n3 = s.begin()  # a third edit: edit 2 is stale before it reaches the model
    calls = gated.calls
    gated.gate.set()
    t1.join(30)
    t2.join(30)
    assert isinstance(out["first"], Superseded) and isinstance(out["second"], Superseded)
    assert gated.calls == calls  # edit 2 never ran the model
    with pytest.raises(Superseded):
        editor.preview(s, n2, EditState())  # stale from the start
    final = editor.preview(s, n3, EditState(hints=tuple(HINTS)))
    want = colorizer.colorize(image, boxes=BOXES, hints=HINTS, size=SIZE)
    assert np.array_equal(final, s.compose(s.preview_input, want.ab))


def test_superseded_over_http_is_409_and_the_newest_is_answered(colorizer, image):
    gated = Gated(colorizer)
    app = build_app(settings(), colorizer=gated, editor_settings=EditorSettings(preview_side=40))
    with ThreadServer(app) as srv, httpx.Client(base_url=srv.url, timeout=60) as c:
        r = c.post(f"/editor/sessions?size={SIZE}", content=encode_image(image), headers={"content-type": "image/png"})
        sid = r.json()["session"]
        gated.gate.clear()
        gated.entered.clear()
        res = {}

        def post(name, hints):
            with httpx.Client(base_url=srv.url, timeout=60) as cc:
                res[name] = cc.post(f"/editor/sessions/{sid}/preview", json={"hints": hints, "format": "png"})

        t1 = threading.Thread(target=post, args=("old", HINTS_JSON[:1]))
        t1.start()
        assert gated.entered.wait(30)
        session = app.state.editor.get(sid)
        newest = session._newest
        t2 = threading.Thread(target=post, args=("new", HINTS_JSON))
        t2.start()
        deadline = time.monotonic() + 30
        while session._newest == newest:  # the new request has taken its number
            assert time.monotonic() < deadline
            time.sleep(0.005)
        gated.gate.set()
        t1.join(60)
        t2.join(60)
    assert res["old"].status_code == 409 and res["old"].json()["status"] == "superseded"
    assert res["new"].status_code == 200 and res["new"].headers["instcolor-edit"] == str(newest + 1)
    want = colorizer.colorize(image, boxes=BOXES, hints=HINTS, size=SIZE)
    assert np.array_equal(read_image(res["new"].content).rgb, session.compose(session.preview_input, want.ab))


# ----------------------------------------------------------------------------- bad input
def test_bad_uploads_are_clear_4xx(client):
    r = client.post("/editor/sessions", content=b"not an image at all",
                    headers={"content-type": "image/png", "instcolor-filename": "holiday.png"})
    assert r.status_code == 400 and "holiday.png" in r.json()["error"]
    r = client.post("/editor/sessions", content=b"", headers={"content-type": "image/png"})
    assert r.status_code == 400 and "empty" in r.json()["error"]
    r = client.post("/editor/sessions", content=b"{}", headers={"content-type": "application/json"})
    assert r.status_code == 415 and "Content-Type" in r.json()["error"]
    r = client.post("/editor/sessions", content=encode_image(photo(400, 300, 1)), headers={"content-type": "image/png"})
    assert r.status_code == 413 and "pixels" in r.json()["error"]
    truncated = encode_image(photo(64, 48, 1))[:200]
    r = client.post("/editor/sessions", content=truncated, headers={"content-type": "image/png",
                                                                   "instcolor-filename": "cut.png"})
    assert r.status_code == 400 and "cut.png" in r.json()["error"]
    r = client.post("/editor/sessions?size=63", content=encode_image(photo(64, 48, 1)),
                    headers={"content-type": "image/png"})
    assert r.status_code == 422 and r.json()["field"] == "size"


@pytest.mark.parametrize("body, field, text", [
    ({"hints": [{"x": 500, "y": 2, "rgb": "#ff0000"}]}, "hints[0]", "outside"),
    ({"hints": [{"x": 5, "y": 2, "rgb": "red"}]}, "hints[0].rgb", "#rrggbb"),
    ({"hints": [{"x": 5, "y": 2}]}, "hints[0]", "exactly one"),
    ({"exclude": [7]}, "exclude", "does not exist"),
    ({"exclude": ["a"]}, "exclude", "box index"),
    ({"colour": 1}, "colour", "unknown key"),
    ({"format": "gif"}, "format", "png or jpeg"),
    ({"global": {"saturation": 2}}, "global", "saturation"),
    ({"global": {"histogram": [1, 2]}}, "global", "529"),
])
def test_bad_edit_bodies_are_422_naming_the_field(client, image, body, field, text):
    sid = open_image(client, image)["session"]
    r = client.post(f"/editor/sessions/{sid}/preview", json=body)
    assert r.status_code == 422, r.text
    assert r.json()["field"] == field and text in r.json()["error"]


def test_not_json_and_unsupported_global_hints(client, image):
    sid = open_image(client, image)["session"]
    r = client.post(f"/editor/sessions/{sid}/preview", content=b"{oops", headers={"content-type": "application/json"})
    assert r.status_code == 400 and "JSON" in r.json()["error"]
    info = client.get(f"/editor/sessions/{sid}").json()
    assert "global hints branch" in info["unsupported"]["global_hints"]  # random tiny nets have none
    r = client.post(f"/editor/sessions/{sid}/preview", json={"global": {"saturation": 0.5}})
    assert r.status_code == 501 and "global hints branch" in r.json()["error"]


# ----------------------------------------------------------------------------- model-free routes
def test_gamut_picture_is_colour_gamut_drawn(client):
    from instcolor.color import gamut, lab_to_rgb_uint8

    r = client.get("/editor/gamut.png?L=62.5&n=33")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    from PIL import Image

    pic = np.asarray(Image.open(io.BytesIO(r.content)))
    assert pic.shape == (33, 33, 4)
    mask, axis = gamut(62.5, step=220 / 32, ab_max=110)
    for j, i in [(0, 0), (16, 16), (5, 27), (30, 3), (20, 9)]:
        a, b = axis[i], axis[32 - j]  # column i: a = axis[i]; row j: b from +110 down
        assert (pic[j, i, 3] == 255) == bool(mask[i, 32 - j])
        assert np.array_equal(pic[j, i, :3], lab_to_rgb_uint8(62.5, [[a, b]])[0])
    assert 0.05 < (pic[..., 3] > 0).mean() < 0.9
    assert client.get("/editor/gamut.png?L=101").status_code == 422
    assert client.get("/editor/gamut.png?L=50&n=2").status_code == 422
    assert np.array_equal(gamut_picture(62.5, 33), pic)


def test_reference_photo_gives_its_histogram(client):
    ref = photo(60, 40, 9)
    r = client.post("/editor/reference", content=encode_image(ref), headers={"content-type": "image/png"})
    assert r.status_code == 200, r.text
    got = r.json()
    want = GlobalHints.from_image(ref)
    assert np.allclose(got["histogram"], want.histogram, atol=1e-6)
    assert 0 <= got["saturation"] <= 1
    r = client.post("/editor/reference", content=b"GIF89a-broken", headers={"content-type": "image/gif",
                                                                            "instcolor-filename": "ref.gif"})
    assert r.status_code == 400 and "ref.gif" in r.json()["error"]


# ----------------------------------------------------------------------------- hint sets
def test_hint_set_file_round_trips_through_the_api_and_video_parsers(tmp_path):
    from instcolor.serve.options import parse_options
    from instcolor.hintset import load_hint_set
    from instcolor.video.hints import load_hints

    g = GlobalHints(histogram=np.arange(529, dtype=np.float64) + 1, saturation=0.25)
    obj = hint_set_to_json(HINTS, g)
    hints, glob = parse_hint_set(json.loads(json.dumps(obj)))
    assert hints == tuple(HINTS)
    assert np.allclose(glob.histogram, g.histogram, atol=1e-6) and glob.saturation == 0.25
    # without global hints the file is the video hints file, and its list is the API's hints option
    plain = hint_set_to_json(HINTS)
    assert set(plain) == {"hints"}
    f = tmp_path / "hints.json"
    f.write_text(json.dumps(plain))
    assert [v.hint for v in load_hints(f)] == HINTS
    assert parse_options({"hints": plain["hints"]}, has_detector=False).hints == HINTS
    assert load_hint_set(f) == (tuple(HINTS), None)
    bad = tmp_path / "bad.json"
    bad.write_text('{"hints": [], "colours": 1}')
    with pytest.raises(ValueError, match="bad.json.*colours"):
        load_hint_set(bad)


# ----------------------------------------------------------------------------- the page
def test_page_is_served_from_package_data_without_outside_urls(client):
    r = client.get("/", follow_redirects=False)
    assert r.status_code in (302, 307) and r.headers["location"] == "/ui/"
    page = client.get("/ui/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    html = page.text
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert "js/main.js" in assets and "css/editor.css" in assets
    from importlib.resources import files

    static = files("instcolor").joinpath("ui", "static")
    scripts = [p.name for p in static.joinpath("js").iterdir() if p.name.endswith(".js")]
    assert {"main.js", "api.js", "history.js", "commands.js", "store.js"} <= set(scripts)
    for name in scripts:
        r = client.get(f"/ui/js/{name}")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/javascript"), name
        for m in re.findall(r'^import\b[^;]*?\bfrom\s+["\']([^"\']+)["\']', r.text, re.M):
            assert m.startswith("./"), f"{name} imports {m}"
        assert "http://" not in r.text and "https://" not in r.text, name
    assert client.get("/ui/css/editor.css").headers["content-type"].startswith("text/css")
    assert not any(a.startswith(("http:", "https:", "//")) for a in assets)
    assert client.get("/ui/editor.py").status_code == 404  # only static/ is served


def test_cli_editor_flags_are_checked():
    import argparse

    from instcolor.errors import UsageError
    from instcolor.serve.cli import add_serve_parser, editor_settings_from_args

    parser = argparse.ArgumentParser()
    add_serve_parser(parser.add_subparsers())
    args = parser.parse_args(["serve", "--editor-sessions", "2", "--editor-memory-mb", "64"])
    assert editor_settings_from_args(args) == EditorSettings(max_sessions=2, max_mb=64.0)
    with pytest.raises(UsageError, match="--editor-sessions"):
        editor_settings_from_args(parser.parse_args(["serve", "--editor-sessions", "0"]))
    with pytest.raises(UsageError, match="--editor-memory-mb"):
        editor_settings_from_args(parser.parse_args(["serve", "--editor-memory-mb", "nan"]))


# ----------------------------------------------------------------------------- helpers
class ThreadServer:
    """uvicorn serving ``app`` on 127.0.0.1 (a free port) in a thread, ready when entered."""

    def __init__(self, app):
        import uvicorn

        self.app = app
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 60
        while not (self.server.started and self.app.state.service.is_ready()):
            assert self.thread.is_alive() and time.monotonic() < deadline, "server did not start"
            time.sleep(0.01)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(30)
        self.sock.close()


def test_session_memory_counts_arrays_and_objects_that_count_their_own():
    """EditSession.nbytes walks what the colorizer's session holds: arrays, and objects with an
    ``nbytes`` property (the instances presampled to their boxes, kept per cached state)."""
    from instcolor.ops import PresampledInstances
    from instcolor.ui.editor import array_bytes

    class Holder:
        def __init__(self):
            a = np.zeros(1000, np.float32)
            self.states = {(0, 1): {"feat": a, "again": a}}  # counted once
            self.cache = {"conv1_2": PresampledInstances(np.zeros(300, np.float32), np.zeros(30, np.float32),
                                                         np.zeros((1, 6), np.int64), 10, 8, 8)}

    assert array_bytes(Holder()) == 4000 + 4 * 330 + 48

"""The hint editor end to end in headless Chromium (Debian's chromium driven by Playwright):
open a photo, add a point and see the preview change there, pick a suggested colour, undo and
redo, drag and remove points, save the hint set and load it back, download the full-resolution
result, and read the server's message for a bad file. Pixels are compared with Colorizer.colorize.

Needs ``pip install '.[ui-test]'`` (Playwright) and Debian's ``chromium`` (``apt-get install
chromium``; Playwright's own browser download is never used). Without them the test skips locally;
with CI set it fails instead (as tests/conftest.py does for ../shared)."""
import base64
import json
import os
import shutil
import socket
import threading
import time

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the editor needs the serve extra: pip install '.[serve]'")
pytest.importorskip("uvicorn", reason="the editor needs the serve extra: pip install '.[serve]'")
pytest.importorskip("multipart", reason="the editor needs python-multipart: pip install '.[serve]'")
pytest.importorskip("prometheus_client", reason="the editor needs prometheus-client: pip install '.[serve]'")

from instcolor import Hint  # noqa: E402
from instcolor.detect import Detections  # noqa: E402
from instcolor.imageio import encode_image, read_image  # noqa: E402
from instcolor.serve import ServeSettings, build_app  # noqa: E402

W, H, SIZE = 160, 120, 64
BOXES = np.array([[10, 10, 70, 80], [60, 30, 150, 110], [20, 60, 90, 118]], np.float32)
LAUNCH_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no", "off")


def chromium_path():
    return os.environ.get("INSTCOLOR_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


def browser_missing() -> str | None:
    """Why the browser test cannot run here, or None."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright is not installed (pip install '.[ui-test]')"
    if not chromium_path():
        return "Debian's chromium is not installed (apt-get install chromium)"
    return None


def photo(w, h, seed):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack([np.sin(xx / (9 + 4 * c) + seed) * np.cos(yy / (11 + 3 * c)) for c in range(3)], -1)
    return np.clip(127 + 90 * base + rng.normal(0, 3, (h, w, 3)), 0, 255).astype(np.uint8)


class ThreadServer:
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


@pytest.fixture(scope="module")
def browser():
    why = browser_missing()
    if why:
        if _in_ci():
            pytest.fail(f"CI is set but the browser test cannot run: {why}; .ci/run installs both")
        pytest.skip(why)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium_path(), args=LAUNCH_ARGS, timeout=60_000)
        yield b
        b.close()


@pytest.fixture(scope="module")
def colorizer():
    """The built-in starter weights (random nets barely react to a point; any trained net does),
    at processing size 64 (the page's ?size=64), one torch thread (restored after)."""
    import torch

    from instcolor import Colorizer

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield Colorizer.from_pretrained(None, backend="torch", detector=lambda img: Detections(
            BOXES, np.array([0.9, 0.8, 0.7]), np.array([0, 2, 16])))
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def server(colorizer):
    app = build_app(ServeSettings(warmup=False, max_pixels=1_000_000, timeout_s=60), colorizer=colorizer)
    with ThreadServer(app) as srv:
        yield srv


# ----------------------------------------------------------------------------- page helpers
READ_PREVIEW = """async () => {
  const img = document.getElementById('result');
  const buf = new Uint8Array(await (await fetch(img.src)).arrayBuffer());
  let s = '';
  for (let i = 0; i < buf.length; i++) s += String.fromCharCode(buf[i]);
  return btoa(s);
}"""


def read_preview(page):
    """The picture the page shows as the preview (the bytes behind its blob: URL), decoded."""
    return read_image(base64.b64decode(page.evaluate(READ_PREVIEW))).rgb


def wait_preview(page, after: int) -> int:
    """Wait until a preview newer than request ``after`` is shown and no newer one is pending."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        page.wait_for_function(
            "(after) => { const p = window.instcolorEditor.preview;"
            " return p.seq > after && p.shown === p.seq && document.getElementById('result').complete; }",
            arg=after, timeout=60_000)
    except PlaywrightTimeout:
        state = page.evaluate("""() => ({seq: window.instcolorEditor.preview.seq, shown: window.instcolorEditor.preview.shown,
            hints: window.instcolorEditor.store.state.hints, message: document.getElementById('message').textContent,
            busy: document.getElementById('busy').textContent})""")
        raise AssertionError(f"no new preview after request {after}: {state}") from None
    return page.evaluate("window.instcolorEditor.preview.seq")


def hints(page):
    return page.evaluate("window.instcolorEditor.store.state.hints")


def client_xy(page, x, y):
    box = page.locator("#overlay-input").bounding_box()
    return box["x"] + (x + 0.5) / W * box["width"], box["y"] + (y + 0.5) / H * box["height"]


def expected_preview(server, colorizer, img, hint_list):
    editor = server.app.state.editor
    session = next(iter(editor.store._items.values()))
    assert session.size == SIZE
    ab = colorizer.colorize(img, boxes=BOXES, hints=hint_list, size=SIZE).ab
    return session.compose(session.preview_input, ab)


# ----------------------------------------------------------------------------- the test
def test_editor_end_to_end(browser, server, colorizer, tmp_path):
    img = photo(W, H, 5)
    src = tmp_path / "street.png"
    src.write_bytes(encode_image(img))
    page = browser.new_page(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.set_default_timeout(60_000)
    # ?preview=png: lossless previews, so the pixels can be compared exactly
    page.goto(f"{server.url}/?preview=png&size={SIZE}")
    assert page.url.endswith(f"/ui/?preview=png&size={SIZE}")
    server.app.state.editor = None  # a fresh editor for this test: one open session
    page.evaluate("document.querySelector('#open-file')")  # the page's modules have run
    page.set_input_files("#open-file", str(src))
    seq = wait_preview(page, 0)
    assert page.locator("#instances input[type=checkbox]").count() == 3
    plain = read_preview(page)
    assert plain.shape == (H, W, 3)
    assert np.array_equal(plain, expected_preview(server, colorizer, img, []))

    # click adds a point; the preview changes at that point and equals colorize with that hint
    x0, y0 = 40, 90
    page.mouse.click(*client_xy(page, x0, y0))
    seq = wait_preview(page, seq)
    [h] = hints(page)
    assert (h["x"], h["y"], h["size"]) == (x0, y0, 3)
    hinted = read_preview(page)
    want = expected_preview(server, colorizer, img, [Hint(x0, y0, rgb=(0x33, 0x66, 0xcc), size=3)])
    assert np.array_equal(hinted, want)
    change = np.abs(hinted.astype(int) - plain).sum(-1)
    near = change[y0 - 3:y0 + 4, x0 - 3:x0 + 4]
    assert near.min() > 10 and near.mean() > change.mean()  # the preview changed at the point, most there

    # a suggested colour for the selected point: one click, one new preview
    page.wait_for_selector("#suggestions .swatch")
    swatch = page.locator("#suggestions .swatch").nth(1)
    new_rgb = swatch.get_attribute("data-rgb")
    swatch.click()
    seq = wait_preview(page, seq)
    assert hints(page)[0]["rgb"] == new_rgb
    rgb = tuple(int(new_rgb[i:i + 2], 16) for i in (1, 3, 5))
    suggested = read_preview(page)
    assert np.array_equal(suggested, expected_preview(server, colorizer, img, [Hint(x0, y0, rgb=rgb, size=3)]))
    assert page.locator("#recent .swatch").count() >= 1

    # undo twice (colour, then the point): back to the plain preview; redo brings the point back
    page.locator("#overlay-input").focus()
    page.keyboard.press("Control+z")
    seq = wait_preview(page, seq)
    assert hints(page)[0]["rgb"] == "#3366cc"
    page.keyboard.press("Control+z")
    seq = wait_preview(page, seq)
    assert hints(page) == []
    assert np.array_equal(read_preview(page), plain)
    page.keyboard.press("Control+Shift+z")
    page.keyboard.press("Control+Shift+z")
    seq = wait_preview(page, seq)
    assert hints(page)[0]["rgb"] == new_rgb
    assert np.array_equal(read_preview(page), suggested)

    # drag moves a point; right-click on a new point removes it; Enter adds one at the centre, Delete removes it
    page.mouse.move(*client_xy(page, x0, y0))
    page.mouse.down()
    page.mouse.move(*client_xy(page, x0 + 10, y0 - 5), steps=4)
    page.mouse.up()
    seq = wait_preview(page, seq)
    assert (hints(page)[0]["x"], hints(page)[0]["y"]) == (x0 + 10, y0 - 5)
    page.mouse.click(*client_xy(page, 120, 20))
    seq = wait_preview(page, seq)
    assert len(hints(page)) == 2
    page.mouse.click(*client_xy(page, 120, 20), button="right")
    seq = wait_preview(page, seq)
    assert len(hints(page)) == 1
    page.locator("#overlay-input").focus()
    page.keyboard.press("Enter")
    seq = wait_preview(page, seq)
    assert [(h["x"], h["y"]) for h in hints(page)][1] == (W // 2, H // 2)
    page.keyboard.press("Delete")
    seq = wait_preview(page, seq)
    assert len(hints(page)) == 1
    moved = read_preview(page)

    # save the hint set: the file is the API's / video CLI's format
    with page.expect_download() as dl:
        page.click("#save-hints")
    saved = tmp_path / "saved-hints.json"
    dl.value.save_as(saved)
    data = json.loads(saved.read_text())
    assert data == {"hints": [{"x": x0 + 10, "y": y0 - 5, "rgb": new_rgb, "size": 3}]}
    from instcolor.video.hints import load_hints

    assert [v.hint for v in load_hints(saved)] == [Hint(x0 + 10, y0 - 5, rgb=rgb, size=3)]

    # clear, then load the file back: same hints, same preview
    page.click("#clear-points")
    seq = wait_preview(page, seq)
    assert hints(page) == []
    page.set_input_files("#load-hints", str(saved))
    seq = wait_preview(page, seq)
    assert [(h["x"], h["y"], h["rgb"], h["size"]) for h in hints(page)] == [(x0 + 10, y0 - 5, new_rgb, 3)]
    assert np.array_equal(read_preview(page), moved)

    # exclude an instance from its checkbox
    page.locator("#instances input[type=checkbox]").nth(1).uncheck()
    seq = wait_preview(page, seq)
    assert page.evaluate("window.instcolorEditor.store.state.exclude") == [1]

    # download the full-resolution result: decodes, the input's size, colorize's pixels
    with page.expect_download() as dl:
        page.click("#download")
    out = tmp_path / "result.png"
    dl.value.save_as(out)
    result = read_image(out).rgb
    assert result.shape == img.shape
    want = colorizer.colorize(img, boxes=BOXES[[0, 2]], hints=[Hint(x0 + 10, y0 - 5, rgb=rgb, size=3)], size=SIZE).rgb
    assert np.array_equal(result, want)

    # a bad file: the server's message, naming the file, shown in the page
    bad = tmp_path / "notes.png"
    bad.write_text("these are my notes, not a picture")
    page.set_input_files("#open-file", str(bad))
    msg = page.locator("#message")
    msg.wait_for(state="visible")
    assert "notes.png" in msg.inner_text()
    assert errors == []
    page.close()


def test_keyboard_reaches_every_control(browser, server):
    """Tab walks through the toolbar, the pictures and the panel's controls (none is a trap), and
    the focused control is drawn with a visible outline."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(f"{server.url}/")
    seen = []
    for _ in range(12):
        page.keyboard.press("Tab")
        seen.append(page.evaluate("document.activeElement.id || document.activeElement.tagName"))
    assert "open-file" in seen
    page.locator("#gamut").focus()
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline not in ("", "none")
    labels = page.evaluate("""() => [...document.querySelectorAll('input, canvas[tabindex], button')]
        .filter((e) => !(e.labels && e.labels.length) && !e.getAttribute('aria-label') && !e.textContent.trim())
        .map((e) => e.id || e.outerHTML)""")
    assert labels == [], f"controls without a label: {labels}"
    page.close()

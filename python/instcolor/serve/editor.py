"""The hint editor's HTTP routes (``/editor/...``) and its static page (``/ui/``, ``/`` redirects
there): thin routes over :class:`instcolor.ui.editor.Editor`.

Model work runs on the server's inference thread (the one the batcher uses), decoding and
encoding in the I/O pool. Every error is JSON ``{"error": ...}`` with a 4xx/5xx status; a preview
superseded by a newer edit of the same image is 409 ``{"status": "superseded", ...}``.

* ``POST /editor/sessions`` (image body, raw or multipart ``image``; ``?size=S``) -> 201
  ``{"session", "width", "height", "size", "preview": {"width", "height"}, "instances": [...]}``
* ``GET /editor/sessions/{id}`` -> the same; ``DELETE`` closes it
* ``GET /editor/sessions/{id}/input.png``: the grey input at preview size
* ``POST /editor/sessions/{id}/preview`` ``{"hints", "global", "exclude", "format"}`` -> the
  preview image (headers ``Instcolor-Edit``: the request's number; ``Server-Timing``: read, queue,
  model, encode and total milliseconds)
* ``POST /editor/sessions/{id}/result`` (same body) -> the full-resolution result
* ``POST /editor/sessions/{id}/suggest`` ``{"x", "y", "k", "hints", "global", "exclude"}`` ->
  ``{"L", "colors": [{"rgb", "p"}]}``
* ``GET /editor/gamut.png?L=&n=``: the a*b* plane at L (see :func:`instcolor.ui.editor.gamut_picture`)
* ``POST /editor/reference`` (image body) -> ``{"histogram": [...529], "saturation": s}``: a
  reference photo's global hints (its histogram; its mean saturation for the slider)
"""
from __future__ import annotations

import asyncio
import functools
import json
import time

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from .bodies import check_content_type, decode_image, parse_multipart
from ..request_errors import BadRequest, GatewayTimeout, InvalidOption

router = APIRouter(prefix="/editor", tags=["editor"])

_STATE_KEYS = {"hints", "global", "exclude"}
_MEDIA = {"png": "image/png", "jpg": "image/jpeg"}


# ----------------------------------------------------------------------------- helpers
def _editor(request: Request):
    """The app's Editor, made on first use once the model is loaded (503 before)."""
    from ..ui.editor import Editor

    svc = request.app.state.service
    svc.check_ready()
    editor = getattr(request.app.state, "editor", None)
    if editor is None:
        editor = Editor(svc.runner.colorizer, request.app.state.editor_settings, size=svc.runner.default_size)
        request.app.state.editor = editor
    return svc, editor


async def _on_model_thread(svc, fn, *args):
    loop = asyncio.get_running_loop()
    try:
        return await asyncio.wait_for(loop.run_in_executor(svc.infer_pool, functools.partial(fn, *args)),
                                      svc.settings.timeout_s)
    except asyncio.TimeoutError:
        raise GatewayTimeout(f"no result within {svc.settings.timeout_s:g} s (--timeout-s)") from None


async def _json_body(svc, request: Request) -> dict:
    body = await svc.read_body(request, svc.clock() + svc.settings.timeout_s)
    try:
        obj = json.loads(body)
    except (ValueError, RecursionError) as e:
        raise BadRequest(f"the request body is not valid JSON ({type(e).__name__}: {e})") from None
    if not isinstance(obj, dict):
        raise BadRequest("the request body must be a JSON object")
    return obj


async def _image_body(svc, request: Request):
    """The uploaded image (raw body or multipart ``image`` part) -> DecodedImage; 4xx naming the file."""
    ctype = request.headers.get("content-type", "")
    kind = check_content_type(ctype)
    body = await svc.read_body(request, svc.clock() + svc.settings.timeout_s)
    name = request.headers.get("instcolor-filename") or "image"
    if kind == "multipart":
        parts = await svc.in_pool(parse_multipart, body, ctype)
        if "image" not in parts:
            raise BadRequest("multipart body has no 'image' part")
        body, _, filename = parts["image"]
        name = filename or name
        if not body:
            raise BadRequest(f"{name}: the file is empty")
    return await svc.in_pool(decode_image, body, name, svc.pixel_limit)


def _state(obj: dict, session, allowed: set):
    from ..hintset import MAX_HINTS, EditState, parse_exclude, parse_global
    from .options import _hints

    unknown = sorted(set(obj) - allowed)
    if unknown:
        raise InvalidOption(unknown[0], f"unknown key; expected {', '.join(sorted(allowed))}")
    raw_hints = obj.get("hints") or []
    if isinstance(raw_hints, list) and len(raw_hints) > MAX_HINTS:
        raise InvalidOption("hints", f"{len(raw_hints)} hints, more than {MAX_HINTS}")
    hints = tuple(_hints(raw_hints))
    try:
        global_hints = parse_global(obj.get("global"))
    except ValueError as e:
        raise InvalidOption("global", str(e).split(": ", 1)[-1]) from None
    try:
        exclude = parse_exclude(obj.get("exclude"), len(session.boxes))
    except ValueError as e:
        raise InvalidOption("exclude", str(e).split(": ", 1)[-1]) from None
    state = EditState(hints=hints, global_hints=global_hints, exclude=exclude)
    session.check_state(state)
    return state


def _format(obj: dict) -> str:
    fmt = str(obj.get("format") or "png").strip().lower()
    if fmt not in ("png", "jpeg", "jpg"):
        raise InvalidOption("format", f"expected png or jpeg, got {obj.get('format')!r}")
    return "jpg" if fmt in ("jpg", "jpeg") else "png"


def _encode(rgb, fmt: str) -> bytes:
    from ..imageio import encode_image

    return encode_image(rgb, format=fmt, quality=90 if fmt == "jpg" else None, icc_srgb=False)


# ----------------------------------------------------------------------------- sessions
@router.post("/sessions", status_code=201, summary="Open an image for editing")
async def open_session(request: Request, size: str | None = None):
    svc, editor = _editor(request)
    proc = None
    if size is not None:
        from ..prepare import check_size

        try:
            proc = check_size(int(size))
        except ValueError as e:
            raise InvalidOption("size", str(e)) from None
    decoded = await _image_body(svc, request)
    session = await _on_model_thread(svc, editor.open, decoded.rgb, proc)
    return JSONResponse({**session.describe(), "unsupported": editor.capabilities()}, status_code=201)


@router.get("/sessions/{sid}", summary="An open image's facts")
async def describe(request: Request, sid: str):
    _, editor = _editor(request)
    return {**editor.get(sid).describe(), "unsupported": editor.capabilities()}


@router.delete("/sessions/{sid}", summary="Close an open image")
async def close(request: Request, sid: str):
    _, editor = _editor(request)
    editor.get(sid)
    editor.close(sid)
    return {"closed": sid}


@router.get("/sessions/{sid}/input.png", summary="The grey input at preview size")
async def grey_input(request: Request, sid: str):
    svc, editor = _editor(request)
    session = editor.get(sid)
    data = await svc.in_pool(_encode, session.grey_preview, "png")
    return Response(data, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})


@router.post("/sessions/{sid}/preview", summary="Colorize at preview size (the newest edit wins)",
             responses={409: {"description": "superseded by a newer edit of the same image"}})
async def preview(request: Request, sid: str):
    t0 = time.perf_counter()
    svc, editor = _editor(request)
    session = editor.get(sid)
    obj = await _json_body(svc, request)
    fmt = _format(obj)
    state = _state({k: v for k, v in obj.items() if k != "format"}, session, _STATE_KEYS)
    n = session.begin()
    span = []  # when the model thread started and ended this request

    def timed(*args):
        span.append(time.perf_counter())
        try:
            return editor.preview(*args)
        finally:
            span.append(time.perf_counter())

    t_model = time.perf_counter()
    rgb = await _on_model_thread(svc, timed, session, n, state)
    t_encode = time.perf_counter()
    data = await svc.in_pool(_encode, rgb, fmt)
    t_end = time.perf_counter()
    timing = _server_timing(read=t_model - t0, queue=span[0] - t_model, model=span[1] - span[0],
                            encode=t_end - t_encode, total=t_end - t0)
    return Response(data, media_type=_MEDIA[fmt], headers={"Instcolor-Edit": str(n), "Cache-Control": "no-store",
                                                           "Server-Timing": timing})


def _server_timing(**seconds: float) -> str:
    """The W3C Server-Timing header: ``read`` (body and state), ``queue`` (waiting for the model thread),
    ``model`` (nets + composition of the preview), ``encode`` (JPEG / PNG), ``total``; in milliseconds."""
    return ", ".join(f"{k};dur={v * 1e3:.1f}" for k, v in seconds.items())


@router.post("/sessions/{sid}/result", summary="The full-resolution result")
async def result(request: Request, sid: str):
    svc, editor = _editor(request)
    session = editor.get(sid)
    obj = await _json_body(svc, request)
    fmt = _format(obj)
    state = _state({k: v for k, v in obj.items() if k != "format"}, session, _STATE_KEYS)
    rgb = await _on_model_thread(svc, editor.full, session, state)
    data = await svc.in_pool(_encode, rgb, fmt)
    return Response(data, media_type=_MEDIA[fmt], headers={
        "Content-Disposition": f'attachment; filename="colorized.{fmt}"', "Cache-Control": "no-store"})


@router.post("/sessions/{sid}/suggest", summary="Colour suggestions at a point")
async def suggest(request: Request, sid: str):
    svc, editor = _editor(request)
    session = editor.get(sid)
    obj = await _json_body(svc, request)
    point = {}
    for key in ("x", "y"):
        v = obj.get(key)
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise InvalidOption(key, f"expected a number, got {v!r}")
        point[key] = float(v)
    k = obj.get("k", 8)
    if isinstance(k, bool) or not isinstance(k, int):
        raise InvalidOption("k", f"expected a whole number, got {k!r}")
    state = _state({key: v for key, v in obj.items() if key not in ("x", "y", "k")}, session, _STATE_KEYS)
    colors = await _on_model_thread(svc, editor.suggest, session, point["x"], point["y"], k, state)
    return {"L": editor.lightness(session, point["x"], point["y"]), "colors": colors}


# ----------------------------------------------------------------------------- model-free
@router.get("/gamut.png", summary="The displayable a*b* plane at lightness L")
async def gamut(request: Request, L: float, n: int = 128):
    from ..ui.editor import AB_RANGE, gamut_picture

    svc = request.app.state.service
    rgba = await svc.in_pool(gamut_picture, L, n)

    def encode():
        import io

        from PIL import Image

        buf = io.BytesIO()
        Image.fromarray(rgba, "RGBA").save(buf, format="PNG")
        return buf.getvalue()

    data = await svc.in_pool(encode)
    return Response(data, media_type="image/png", headers={"Instcolor-AB-Range": f"{AB_RANGE:g}",
                                                           "Cache-Control": "public, max-age=86400"})


@router.post("/reference", summary="Global hints from a reference photo")
async def reference(request: Request):
    from ..global_hints import GlobalHints, mean_saturation

    svc = request.app.state.service
    decoded = await _image_body(svc, request)

    def work(rgb):
        return GlobalHints.from_image(rgb).to_json()["histogram"], round(mean_saturation(rgb), 4)

    histogram, saturation = await svc.in_pool(work, decoded.rgb)
    return {"histogram": histogram, "saturation": saturation}


# ----------------------------------------------------------------------------- wiring
def register(app, editor_settings=None) -> None:
    """Add the editor's routes and, when the package ships it, its page at /ui/ (/ redirects)."""
    from importlib.resources import files

    from fastapi.responses import RedirectResponse

    from ..ui.editor import EditorSettings

    app.state.editor_settings = editor_settings or EditorSettings()
    app.state.editor = None
    app.include_router(router)
    try:
        has_ui = files("instcolor").joinpath("ui", "static", "index.html").is_file()
    except (ModuleNotFoundError, OSError):
        has_ui = False
    if not has_ui:
        return
    import mimetypes

    from fastapi.staticfiles import StaticFiles

    mimetypes.add_type("text/javascript", ".js")  # some hosts map .js to text/plain: modules then refuse to load
    mimetypes.add_type("text/css", ".css")

    @app.get("/", include_in_schema=False)
    async def _root(request: Request):
        query = request.url.query
        return RedirectResponse("/ui/" + (f"?{query}" if query else ""))

    app.mount("/ui", StaticFiles(packages=[("instcolor", "ui/static")], html=True), name="ui")


__all__ = ["register", "router"]

"""Request bodies: read with a size limit, split multipart bodies, decode the image, notice
clients that leave. Parsing and decoding are plain functions that the app runs in its thread
pool, never on the event loop."""
from __future__ import annotations

import asyncio

from ..request_errors import BadRequest, ClientGone, PayloadTooLarge, UnsupportedMediaType


async def read_body(request, limit: int) -> bytes:
    """The whole body, or PayloadTooLarge as soon as it is known to exceed ``limit`` bytes: from
    ``Content-Length`` before reading anything, else while streaming (a chunked body is not read
    past the limit). Empty body -> BadRequest. The client leaving -> ClientGone."""
    from starlette.requests import ClientDisconnect

    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.strip().isdigit():
            raise BadRequest(f"Content-Length {declared!r} is not a number", headers={"Connection": "close"})
        if int(declared) > limit:
            raise PayloadTooLarge(f"the body is {int(declared)} bytes, over the limit of {limit} bytes "
                                  f"(--max-body-mb)", headers={"Connection": "close"})
    chunks, n = [], 0
    try:
        async for chunk in request.stream():
            n += len(chunk)
            if n > limit:
                raise PayloadTooLarge(f"the body is over the limit of {limit} bytes (--max-body-mb)",
                                      headers={"Connection": "close"})
            chunks.append(chunk)
    except ClientDisconnect:
        raise ClientGone("the client disconnected during the upload") from None
    if n == 0:
        raise BadRequest("empty body: send the image file as the body (Content-Type: image/...) or as the "
                         "'image' part of a multipart/form-data body")
    return b"".join(chunks)


async def wait_disconnect(request) -> None:
    """Return when the client disconnects (call after the body was read; until then this would
    consume body messages)."""
    while True:
        message = await request.receive()
        if message.get("type") == "http.disconnect":
            return


async def until_done_or_gone(request, awaitable):
    """Await ``awaitable``; if the client disconnects first, cancel it (the batcher then drops the
    request if its batch has not started) and raise ClientGone."""
    task = asyncio.ensure_future(awaitable)
    gone = asyncio.ensure_future(wait_disconnect(request))
    try:
        await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        task.cancel()
        raise
    finally:
        gone.cancel()
    if task.done():
        return task.result()
    task.cancel()
    try:
        await task
    except (asyncio.CancelledError, Exception):  # noqa: BLE001 - the client is gone either way
        pass
    raise ClientGone("the client disconnected while waiting for the result")


def media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def parse_multipart(body: bytes, content_type: str, max_parts: int = 8) -> dict[str, tuple[bytes, str, str | None]]:
    """A multipart/form-data body -> {part name: (data, content type, file name)}. BadRequest when
    it is malformed or truncated (no closing boundary)."""
    from python_multipart.exceptions import FormParserError
    from python_multipart.multipart import MultipartParser, parse_options_header

    _, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if not boundary:
        raise BadRequest("multipart/form-data body without a boundary in its Content-Type")
    parts: dict[str, tuple[bytes, str, str | None]] = {}
    state = {"headers": {}, "field": b"", "value": b"", "data": [], "ended": False}

    def on_part_begin():
        state["headers"], state["data"] = {}, []

    def on_header_field(data, start, end):
        state["field"] += data[start:end]

    def on_header_value(data, start, end):
        state["value"] += data[start:end]

    def on_header_end():
        state["headers"][state["field"].decode("latin-1").strip().lower()] = state["value"].decode("latin-1").strip()
        state["field"], state["value"] = b"", b""

    def on_part_data(data, start, end):
        state["data"].append(data[start:end])

    def on_part_end():
        disposition, opts = parse_options_header(state["headers"].get("content-disposition", ""))
        name = opts.get(b"name")
        if disposition != b"form-data" or name is None:
            raise BadRequest("multipart part without a Content-Disposition: form-data; name=... header")
        name = name.decode("utf-8", "replace")
        if name in parts:
            raise BadRequest(f"multipart body has two parts named {name!r}")
        if len(parts) >= max_parts:
            raise BadRequest(f"multipart body has more than {max_parts} parts")
        filename = opts.get(b"filename")
        parts[name] = (b"".join(state["data"]), media_type(state["headers"].get("content-type")),
                       filename.decode("utf-8", "replace") if filename is not None else None)

    def on_end():
        state["ended"] = True

    parser = MultipartParser(boundary, {"on_part_begin": on_part_begin, "on_header_field": on_header_field,
                                        "on_header_value": on_header_value, "on_header_end": on_header_end,
                                        "on_part_data": on_part_data, "on_part_end": on_part_end,
                                        "on_end": on_end})
    try:
        parser.write(body)
        parser.finalize()
    except FormParserError as e:
        raise BadRequest(f"malformed multipart body: {e}") from None
    if not state["ended"]:
        raise BadRequest("truncated multipart body (no closing boundary)")
    return parts


def decode_image(data: bytes, name: str, max_pixels: int):
    """read_image with the server's errors: PayloadTooLarge when the header declares more than
    ``max_pixels`` (decided from the header, before decoding), else BadRequest naming the problem."""
    from ..imageio import ImageReadError, read_image

    try:
        return read_image(data, name=name, max_pixels=max_pixels)
    except ImageReadError as e:
        # read_image's pixel-limit errors (header check and Pillow's bomb check) all name the option
        if "--max-pixels" in str(e):
            raise PayloadTooLarge(str(e).replace("(--max-pixels / INSTCOLOR_MAX_PIXELS)", "(the server's --max-pixels)")
                                  ) from None
        raise BadRequest(str(e)) from None


def check_content_type(ctype: str) -> str:
    """'raw' for an image body, 'multipart' for form data; UnsupportedMediaType otherwise."""
    mt = media_type(ctype)
    if mt.startswith("image/") or mt == "application/octet-stream":
        return "raw"
    if mt == "multipart/form-data":
        return "multipart"
    raise UnsupportedMediaType(f"Content-Type {mt or '(none)'!r}: send the image raw (image/png, image/jpeg, ...) "
                               f"or as multipart/form-data with an 'image' part")

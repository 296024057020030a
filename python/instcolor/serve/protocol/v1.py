"""``POST /v1/colorize``: an image in, the colorized image (or JSON) out."""
from __future__ import annotations

import base64
import json

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response

from ..bodies import check_content_type, parse_multipart
from ...request_errors import BadRequest, InvalidOption
from ..options import MEDIA_TYPES, V1_OPTIONS, parse_options

router = APIRouter(tags=["colorize"])

_ERRORS = {
    400: {"description": "empty, truncated or undecodable body; malformed multipart"},
    408: {"description": "the body did not arrive within --timeout-s"},
    413: {"description": "body over --max-body-mb, or an image header declaring more than --max-pixels"},
    415: {"description": "Content-Type neither image/* nor multipart/form-data"},
    422: {"description": "a bad option; the body's `field` names it"},
    503: {"description": "queue full, model loading or shutting down (see Retry-After)"},
    504: {"description": "no result within --timeout-s"},
}
_BODY = {
    "required": True,
    "content": {
        "image/*": {"schema": {"type": "string", "format": "binary"}},
        "multipart/form-data": {"schema": {
            "type": "object", "required": ["image"],
            "properties": {"image": {"type": "string", "format": "binary"},
                           "options": {"type": "string",
                                       "description": "JSON object with any of the query parameters' names"}}}},
    },
}


@router.post(
    "/v1/colorize",
    summary="Colorize one image",
    description=(
        "Body: the encoded image (raw, `Content-Type: image/...`), or multipart/form-data with an `image` file part "
        "and an optional JSON `options` part. Options come as query parameters or in the `options` part (not both "
        "for one option). Response: the colorized image at the input's resolution (the input's transparency and "
        "EXIF kept), with the boxes used in the `Instcolor-Boxes` header (JSON; `Instcolor-Scores` and "
        "`Instcolor-Labels` when known); with `Accept: application/json`, JSON with `boxes`, `scores`, `labels` "
        "and the image in base64."),
    responses={200: {"content": {"image/png": {}, "image/jpeg": {}, "image/webp": {},
                                 "application/json": {}},
                     "description": "the colorized image"}, **_ERRORS},
    openapi_extra={"requestBody": _BODY},
)
async def colorize(
    request: Request,
    boxes: str | None = Query(None, description="JSON list of [x0, y0, x1, y1] in input pixels (up to 8 are used)"),
    scores: str | None = Query(None, description="JSON list of one score per box (ranks boxes when more than 8)"),
    detect: str | None = Query(None, description="run the server's detector (default: true when it has one); "
                                                 "not with boxes"),
    hints: str | None = Query(None, description='JSON list of {"x", "y", "rgb": "#rrggbb" | "ab": [a, b], "size"}'),
    size: str | None = Query(None, description="processing size, a multiple of 8 up to 2048 (default: the model's)"),
    format: str | None = Query(None, description="png (default), jpeg or webp"),
    quality: str | None = Query(None, description="JPEG / WebP quality 1..100"),
):
    svc = request.app.state.service
    deadline = svc.clock() + svc.settings.timeout_s
    svc.check_ready()
    query = {}
    for k, v in request.query_params.multi_items():
        if k in query:
            raise InvalidOption(k, "given more than once")
        query[k] = v
    has_detector = svc.runner.has_detector
    parse_options(query, has_detector=has_detector)  # early 422, before reading the body
    ctype = request.headers.get("content-type", "")
    kind = check_content_type(ctype)
    body = await svc.read_body(request, deadline)
    raw, name = dict(query), "image"
    if kind == "multipart":
        parts = await svc.in_pool(parse_multipart, body, ctype)
        extra = sorted(set(parts) - {"image", "options"})
        if extra:
            raise BadRequest(f"multipart part {extra[0]!r} is not expected; send 'image' and optionally 'options'")
        if "image" not in parts:
            raise BadRequest("multipart body has no 'image' part")
        if "options" in parts:
            raw.update(_options_part(parts["options"][0], query))
        data, _, filename = parts["image"]
        name = filename or "image"
        if not data:
            raise BadRequest(f"{name}: the image part is empty")
    else:
        data = body
    opts = parse_options(raw, has_detector=has_detector)
    result, decoded = await svc.colorize(request, data, name, opts, deadline)
    from ...imageio import encode_image

    out = await svc.in_pool(encode_image, result.rgb, format=opts.format, quality=opts.quality, exif=decoded.exif,
                            alpha=decoded.alpha)
    box_list = result.boxes.reshape(-1, 4).tolist()
    scores_list = None if result.scores is None else [round(float(s), 6) for s in result.scores]
    labels_list = None if result.labels is None else [int(x) for x in result.labels]
    headers = {"Instcolor-Boxes": json.dumps(box_list, separators=(",", ":")),
               "Instcolor-Batch-Size": str(result.batch_size), "Instcolor-Instance": svc.instance}
    if scores_list is not None:
        headers["Instcolor-Scores"] = json.dumps(scores_list, separators=(",", ":"))
    if labels_list is not None:
        headers["Instcolor-Labels"] = json.dumps(labels_list, separators=(",", ":"))
    media = MEDIA_TYPES[opts.format]
    if "application/json" in request.headers.get("accept", "").lower():
        w, h = decoded.size
        return JSONResponse({"width": w, "height": h, "media_type": media, "boxes": box_list, "scores": scores_list,
                             "labels": labels_list, "image": base64.b64encode(out).decode("ascii")},
                            headers={k: v for k, v in headers.items() if k in ("Instcolor-Batch-Size",
                                                                                 "Instcolor-Instance")})
    return Response(out, media_type=media, headers=headers)


def _options_part(data: bytes, query: dict) -> dict:
    try:
        opts = json.loads(data)
    except (ValueError, RecursionError) as e:
        raise InvalidOption("options", f"the options part is not valid JSON ({type(e).__name__})") from None
    if not isinstance(opts, dict):
        raise InvalidOption("options", "the options part must be a JSON object")
    for k in opts:
        if k in query:
            raise InvalidOption(k, "given both as a query parameter and in the options part")
        if k not in V1_OPTIONS:
            raise InvalidOption(k, f"unknown option; the options are {', '.join(V1_OPTIONS)}")
    return opts

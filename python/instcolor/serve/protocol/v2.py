"""Open Inference Protocol (KServe v2 / Triton HTTP): health, metadata and inference.

Model ``instcolor`` (the name is a setting). Inputs: ``image`` BYTES [1] (an encoded image file:
in the JSON form the element is the file in base64 text, in the binary form its raw bytes),
optional ``boxes`` FP32 [N, 4] (x0, y0, x1, y1 in input pixels) and ``scores`` FP32 [N].
Request parameters: ``size``, ``detect``, ``hints`` (a JSON list or its text, as in /v1) and the
binary extension's ``binary_data_output``. Outputs: ``image`` BYTES [1] (PNG at the input's
resolution; base64 text in JSON) and ``boxes`` FP32 [N, 4], the boxes used."""
from __future__ import annotations

import base64
import binascii

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from ...request_errors import BadRequest, InvalidOption, ServeError
from ..options import parse_options
from .types import HEADER_LENGTH, Tensor, encode_infer_response, parse_infer_request

router = APIRouter(prefix="/v2", tags=["Open Inference Protocol (v2)"])

INPUTS = [{"name": "image", "datatype": "BYTES", "shape": [1]},
          {"name": "boxes", "datatype": "FP32", "shape": [-1, 4], "optional": True},
          {"name": "scores", "datatype": "FP32", "shape": [-1], "optional": True}]
OUTPUTS = [{"name": "image", "datatype": "BYTES", "shape": [1]},
           {"name": "boxes", "datatype": "FP32", "shape": [-1, 4]}]
PARAMETERS = ("size", "detect", "hints")


class ModelNotFound(ServeError):
    status = 404


def _service(request: Request, model_name: str | None = None):
    svc = request.app.state.service
    if model_name is not None and model_name != svc.settings.model_name:
        raise ModelNotFound(f"unknown model {model_name!r}; this server has {svc.settings.model_name!r}")
    return svc


@router.get("", summary="Server metadata")
async def server_metadata(request: Request):
    from ... import __version__

    return {"name": "instcolor", "version": __version__, "extensions": ["binary_tensor_data"]}


@router.get("/health/live", summary="Liveness: the process answers")
async def live():
    return {"live": True}


@router.get("/health/ready", summary="Readiness: the model is loaded and warmed up",
            responses={503: {"description": "not ready (loading, failed to load, or shutting down)"}})
async def ready(request: Request):
    svc = _service(request)
    if svc.is_ready():
        return {"ready": True}
    return JSONResponse({"ready": False, **({"error": svc.load_error} if svc.load_error else {})}, status_code=503)


@router.get("/models/{model_name}/ready", summary="Model readiness")
async def model_ready(model_name: str, request: Request):
    _service(request, model_name)
    return await ready(request)


@router.get("/models/{model_name}", summary="Model metadata")
async def model_metadata(model_name: str, request: Request):
    svc = _service(request, model_name)
    s = svc.settings
    backend = getattr(svc.runner.colorizer, "backend", None) if svc.runner is not None else None
    platform = f"instcolor/{type(backend).__name__}" if backend is not None else "instcolor"
    return {"name": s.model_name, "versions": [s.model_version], "platform": platform,
            "inputs": INPUTS, "outputs": OUTPUTS,
            "parameters": {"size": "processing size, multiple of 8 up to 2048",
                           "detect": "run the server's detector (default: whether it has one)",
                           "hints": 'JSON list of {"x", "y", "rgb": "#rrggbb" | "ab": [a, b], "size"}'}}


@router.post("/models/{model_name}/infer", summary="Inference (JSON or binary tensor data)",
             responses={400: {"description": "malformed request or image"},
                        413: {"description": "body over --max-body-mb or image over --max-pixels"},
                        422: {"description": "an input or parameter that does not fit; `field` names it"},
                        503: {"description": "queue full, loading or shutting down"},
                        504: {"description": "no result within --timeout-s"}},
             openapi_extra={"requestBody": {"required": True, "content": {
                 "application/json": {"schema": {"type": "object"}},
                 "application/octet-stream": {"schema": {"type": "string", "format": "binary"},
                                              "description": "JSON header of Inference-Header-Content-Length "
                                                             "bytes, then the binary tensors"}}}})
async def infer(model_name: str, request: Request):
    svc = _service(request, model_name)
    deadline = svc.clock() + svc.settings.timeout_s
    svc.check_ready()
    body = await svc.read_body(request, deadline)
    req = await svc.in_pool(parse_infer_request, body, request.headers.get(HEADER_LENGTH))
    known = {i["name"] for i in INPUTS}
    for t in req.inputs:
        if t.name not in known:
            raise InvalidOption(f"inputs.{t.name}", f"unknown input; the inputs are {', '.join(sorted(known))}")
    image = req.input("image")
    if image is None:
        raise InvalidOption("inputs.image", "missing: the encoded image file as BYTES [1]")
    if image.datatype != "BYTES" or len(image.data) != 1:
        raise InvalidOption("inputs.image", f"expected BYTES of shape [1], got {image.datatype} {image.shape}")
    data = image.data[0]
    if not image.binary:
        try:
            data = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise BadRequest("inputs.image: in the JSON form the image must be base64 text") from None
    raw = {}
    for name, shape in (("boxes", 2), ("scores", 1)):
        t = req.input(name)
        if t is None:
            continue
        if t.datatype != "FP32" or len(t.shape) != shape or (shape == 2 and t.shape[1] != 4):
            want = "[N, 4]" if shape == 2 else "[N]"
            raise InvalidOption(f"inputs.{name}", f"expected FP32 {want}, got {t.datatype} {t.shape}")
        raw[name] = np.asarray(t.data, np.float64).tolist()
    for k, v in req.parameters.items():
        if k == "binary_data_output":
            continue
        if k not in PARAMETERS:
            raise InvalidOption(f"parameters.{k}", f"unknown parameter; the parameters are {', '.join(PARAMETERS)}")
        raw[k] = v
    try:
        opts = parse_options(raw, has_detector=svc.runner.has_detector, allowed=PARAMETERS + ("boxes", "scores"))
    except InvalidOption as e:
        prefix = "inputs." if e.field.split("[")[0] in ("boxes", "scores") else "parameters."
        raise InvalidOption(prefix + e.field, e.message.split(": ", 1)[-1]) from None
    wanted = _requested_outputs(req)
    result, decoded = await svc.colorize(request, data, "inputs.image", opts, deadline)
    from ...imageio import encode_image

    png = await svc.in_pool(encode_image, result.rgb, format="png", exif=decoded.exif, alpha=decoded.alpha)
    all_binary = bool(req.parameters.get("binary_data_output", False))
    tensors = {"image": Tensor("image", "BYTES", [1], [png]),
               "boxes": Tensor("boxes", "FP32", [len(result.boxes), 4],
                               np.asarray(result.boxes, np.float32).reshape(-1, 4))}
    outs = []
    for name, params in wanted:
        t = tensors[name]
        t.binary = bool(params.get("binary_data", all_binary))
        outs.append(t)
    head = {"model_name": svc.settings.model_name, "model_version": svc.settings.model_version}
    if req.id is not None:
        head["id"] = req.id
    payload, headers = await svc.in_pool(encode_infer_response, head, outs, _b64)
    headers.update({"Instcolor-Batch-Size": str(result.batch_size), "Instcolor-Instance": svc.instance})
    ctype = headers.pop("content-type")
    return Response(payload, media_type=ctype, headers=headers)


def _b64(name: str, element: bytes) -> str:
    return base64.b64encode(bytes(element)).decode("ascii")


def _requested_outputs(req) -> list[tuple[str, dict]]:
    names = [o["name"] for o in OUTPUTS]
    if req.outputs is None:
        return [(n, {}) for n in names]
    out = []
    for i, o in enumerate(req.outputs):
        if o["name"] not in names:
            raise InvalidOption(f"outputs[{i}].name", f"unknown output {o['name']!r}; the outputs are {', '.join(names)}")
        out.append((o["name"], o.get("parameters") or {}))
    return out

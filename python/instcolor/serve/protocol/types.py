"""Open Inference Protocol (KServe v2 / Triton) tensors: the JSON form and the binary tensor data
extension (``Inference-Header-Content-Length``), both directions. Pure functions over bytes and
numpy; every malformed request is a BadRequest (400) naming the offending field."""
from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass, field

import numpy as np

from ...request_errors import BadRequest

#: v2 datatype -> numpy dtype (little-endian, as the binary extension lays tensors out).
DTYPES = {"BOOL": np.dtype("?"), "UINT8": np.dtype("u1"), "UINT16": np.dtype("<u2"), "UINT32": np.dtype("<u4"),
          "UINT64": np.dtype("<u8"), "INT8": np.dtype("i1"), "INT16": np.dtype("<i2"), "INT32": np.dtype("<i4"),
          "INT64": np.dtype("<i8"), "FP16": np.dtype("<f2"), "FP32": np.dtype("<f4"), "FP64": np.dtype("<f8")}
HEADER_LENGTH = "inference-header-content-length"


@dataclass
class Tensor:
    """``data``: a numpy array of ``shape`` for numeric types; a list of bytes (row-major, one
    element each) for BYTES. ``binary``: it came (or goes) in the binary section."""

    name: str
    datatype: str
    shape: list[int]
    data: object
    binary: bool = False
    parameters: dict = field(default_factory=dict)


@dataclass
class InferRequest:
    id: str | None
    inputs: list[Tensor]
    outputs: list[dict] | None  # the requested outputs (name + parameters), None = all
    parameters: dict

    def input(self, name: str) -> Tensor | None:
        for t in self.inputs:
            if t.name == name:
                return t
        return None


def _count(shape) -> int:
    return int(math.prod(shape)) if shape else 1


def _flatten(data, where: str, depth: int = 0) -> list:
    """Row-major flattening of nested JSON lists."""
    if not isinstance(data, list):
        return [data]
    if depth > 16:
        raise BadRequest(f"{where}: lists nested too deeply")
    out: list = []
    for v in data:
        if isinstance(v, list):
            out.extend(_flatten(v, where, depth + 1))
        else:
            out.append(v)
    return out


def parse_infer_request(body: bytes, header_length: str | None) -> InferRequest:
    """The body of POST .../infer -> InferRequest. ``header_length``: the
    Inference-Header-Content-Length header (binary extension) or None (a JSON body)."""
    if header_length is not None:
        text = header_length.strip()
        if not text.isdigit() or int(text) > len(body):
            raise BadRequest(f"Inference-Header-Content-Length {header_length!r} is not a length within the "
                             f"{len(body)}-byte body")
        n = int(text)
        head, rest = body[:n], memoryview(body)[n:]
    else:
        head, rest = body, memoryview(b"")
    try:
        req = json.loads(head)
    except (ValueError, RecursionError) as e:
        raise BadRequest(f"the inference request is not valid JSON: {type(e).__name__}: {e}") from None
    if not isinstance(req, dict):
        raise BadRequest("the inference request must be a JSON object")
    rid = req.get("id")
    if rid is not None and not isinstance(rid, str):
        raise BadRequest("id: expected a string")
    params = req.get("parameters", {}) or {}
    if not isinstance(params, dict):
        raise BadRequest("parameters: expected an object")
    inputs = req.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise BadRequest("inputs: expected a non-empty list of tensors")
    tensors, offset = [], 0
    for i, t in enumerate(inputs):
        tensor, used = _parse_input(t, f"inputs[{i}]", rest, offset)
        offset += used
        if any(x.name == tensor.name for x in tensors):
            raise BadRequest(f"inputs[{i}].name: {tensor.name!r} given twice")
        tensors.append(tensor)
    if offset != len(rest):
        raise BadRequest(f"the binary section has {len(rest)} bytes but the inputs' binary_data_size add up to {offset}")
    outputs = req.get("outputs")
    if outputs is not None:
        if not isinstance(outputs, list):
            raise BadRequest("outputs: expected a list")
        for i, o in enumerate(outputs):
            if not isinstance(o, dict) or not isinstance(o.get("name"), str):
                raise BadRequest(f"outputs[{i}]: expected an object with a name")
            if not isinstance(o.get("parameters", {}) or {}, dict):
                raise BadRequest(f"outputs[{i}].parameters: expected an object")
    return InferRequest(rid, tensors, outputs, params)


def _parse_input(t, where: str, rest: memoryview, offset: int) -> tuple[Tensor, int]:
    if not isinstance(t, dict):
        raise BadRequest(f"{where}: expected an object")
    name, datatype, shape = t.get("name"), t.get("datatype"), t.get("shape")
    if not isinstance(name, str) or not name:
        raise BadRequest(f"{where}.name: expected a non-empty string")
    where = f"{where} ({name})"
    if datatype != "BYTES" and datatype not in DTYPES:
        raise BadRequest(f"{where}.datatype: expected one of BYTES, {', '.join(DTYPES)}, got {datatype!r}")
    if (not isinstance(shape, list) or len(shape) > 8
            or any(isinstance(d, bool) or not isinstance(d, int) or d < 0 for d in shape)):
        raise BadRequest(f"{where}.shape: expected a list of non-negative whole numbers, got {shape!r}")
    count = _count(shape)
    params = t.get("parameters", {}) or {}
    if not isinstance(params, dict):
        raise BadRequest(f"{where}.parameters: expected an object")
    size = params.get("binary_data_size")
    if size is not None:
        if "data" in t:
            raise BadRequest(f"{where}: give either data or parameters.binary_data_size, not both")
        if isinstance(size, bool) or not isinstance(size, int) or size < 0 or offset + size > len(rest):
            raise BadRequest(f"{where}.parameters.binary_data_size: {size!r} does not fit the "
                             f"{len(rest) - offset} bytes left in the body")
        raw = bytes(rest[offset:offset + size])
        if datatype == "BYTES":
            data = _split_bytes(raw, count, where)
        else:
            dt = DTYPES[datatype]
            if size != count * dt.itemsize:
                raise BadRequest(f"{where}: shape {shape} {datatype} needs {count * dt.itemsize} bytes, "
                                 f"binary_data_size is {size}")
            data = np.frombuffer(raw, dt).reshape(shape)
        return Tensor(name, datatype, list(shape), data, True, params), size
    if "data" not in t:
        raise BadRequest(f"{where}.data: missing (or give parameters.binary_data_size and a binary section)")
    flat = _flatten(t["data"], f"{where}.data")
    if len(flat) != count:
        raise BadRequest(f"{where}.data: shape {shape} needs {count} elements, got {len(flat)}")
    if datatype == "BYTES":
        if not all(isinstance(v, str) for v in flat):
            raise BadRequest(f"{where}.data: BYTES elements must be strings in JSON")
        return Tensor(name, datatype, list(shape), [v.encode("utf-8") for v in flat], False, params), 0
    dt = DTYPES[datatype]
    ok = (lambda v: isinstance(v, bool)) if datatype == "BOOL" else (
        lambda v: isinstance(v, (int, float)) and not isinstance(v, bool))
    if not all(ok(v) for v in flat):
        raise BadRequest(f"{where}.data: expected {datatype} values")
    try:
        arr = np.array(flat, dtype=dt).reshape(shape)
    except (OverflowError, ValueError) as e:
        raise BadRequest(f"{where}.data: {e}") from None
    return Tensor(name, datatype, list(shape), arr, False, params), 0


def _split_bytes(raw: bytes, count: int, where: str) -> list[bytes]:
    out, pos = [], 0
    for _ in range(count):
        if pos + 4 > len(raw):
            raise BadRequest(f"{where}: BYTES binary data ends inside an element's length prefix")
        (n,) = struct.unpack_from("<I", raw, pos)
        pos += 4
        if pos + n > len(raw):
            raise BadRequest(f"{where}: BYTES element of {n} bytes runs past binary_data_size")
        out.append(raw[pos:pos + n])
        pos += n
    if pos != len(raw):
        raise BadRequest(f"{where}: {len(raw) - pos} bytes left after {count} BYTES elements")
    return out


def tensor_binary(t: Tensor) -> bytes:
    if t.datatype == "BYTES":
        return b"".join(struct.pack("<I", len(b)) + bytes(b) for b in t.data)
    return np.ascontiguousarray(np.asarray(t.data, DTYPES[t.datatype])).tobytes()


def encode_infer_response(head: dict, outputs: list[Tensor], json_bytes=None) -> tuple[bytes, dict]:
    """-> (body, headers). Outputs with ``binary`` go to the binary section (the header JSON then
    carries ``Inference-Header-Content-Length``); the others are JSON data. ``json_bytes(name,
    element)``: how a BYTES element is written in JSON (default: UTF-8 text)."""
    blobs, outs = [], []
    for t in outputs:
        o = {"name": t.name, "datatype": t.datatype, "shape": list(t.shape)}
        if t.parameters:
            o["parameters"] = dict(t.parameters)
        if t.binary:
            blob = tensor_binary(t)
            o.setdefault("parameters", {})["binary_data_size"] = len(blob)
            blobs.append(blob)
        elif t.datatype == "BYTES":
            o["data"] = [json_bytes(t.name, b) if json_bytes else bytes(b).decode("utf-8") for b in t.data]
        else:
            o["data"] = np.asarray(t.data).reshape(-1).tolist()
        outs.append(o)
    header = json.dumps({**head, "outputs": outs}, separators=(",", ":")).encode()
    if not blobs:
        return header, {"content-type": "application/json"}
    return header + b"".join(blobs), {"content-type": "application/octet-stream",
                                      "Inference-Header-Content-Length": str(len(header))}


def parse_infer_response(body: bytes, header_length: str | None) -> dict:
    """A response body -> its JSON with each binary output's ``data`` filled in (a list of bytes for
    BYTES, a numpy array otherwise): what a client does; used by the tests and the benchmark."""
    n = int(header_length) if header_length is not None else len(body)
    head = json.loads(body[:n])
    pos = n
    for o in head.get("outputs", []):
        size = (o.get("parameters") or {}).get("binary_data_size")
        if size is None:
            continue
        raw = body[pos:pos + size]
        pos += size
        count = _count(o["shape"])
        o["data"] = (_split_bytes(raw, count, o["name"]) if o["datatype"] == "BYTES"
                     else np.frombuffer(raw, DTYPES[o["datatype"]]).reshape(o["shape"]))
    return head

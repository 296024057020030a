"""ONNX Runtime's form of an INT8 (QDQ) segment: the same numbers, in the layout its int8 kernels fuse.

The INT8 files (:mod:`instcolor.quantize`) hold int8 activations, symmetric (zero point 0): the only
form TensorRT takes. On x86 ONNX Runtime runs those files poorly (measured at width 1.0, 8 crops of
256 px, 2 threads: the instance segment took 9.1 s INT8 against 6.9 s for the same graph with uint8
activations): its QLinearConv kernels take uint8 activations, and

* after every ``Conv -> Relu``, the quantizer leaves ``Q -> DQ -> Relu -> Q`` (a ReLU is only removable
  when the zero point is the type's minimum), so each ReLU runs in float between a dequantize and a
  quantize;
* where a quantized tensor is also a segment output (every ``feat.*`` of the instance net), its
  QuantizeLinear has two DequantizeLinear consumers, ONNX Runtime's int8-to-uint8 conversion skips it,
  and the next convolution runs in float on dequantized weights.

:func:`onnxruntime_form` rewrites a QDQ model in memory, when ONNX Runtime loads it (the files stay
as they are, for TensorRT):

1. ``x -> Q(s, 0) -> DQ -> Relu -> Q(s, 0) -> DQ...`` (int8, the same scale ``s``) becomes
   ``x -> Q(s, 0 uint8) -> DQ...``: uint8 with zero point 0 clamps at 0, which is the ReLU, and
   ONNX Runtime fuses it into the convolution. Equal to the int8 graph for every value up to
   ``127 s`` (the calibrated maximum); above it the int8 graph clips and this one does not (to ``255 s``).
2. Every other int8 activation Q/DQ with zero point 0 becomes uint8 with zero point 128 (exact).

Weights (int8 initializers, per-channel) are left alone.
"""
from __future__ import annotations

import numpy as np


def _init_map(graph) -> dict:
    return {i.name: i for i in graph.initializer}


def _zero_point(inits: dict, node):
    """The zero point array of a Q/DQ node (None: absent, or not an initializer)."""
    from onnx import numpy_helper

    if len(node.input) < 3 or node.input[2] not in inits:
        return None
    return numpy_helper.to_array(inits[node.input[2]])


def _scale(inits: dict, node):
    from onnx import numpy_helper

    return numpy_helper.to_array(inits[node.input[1]]) if node.input[1] in inits else None


def onnxruntime_form(model) -> dict:
    """Rewrite the QDQ ``model`` (``onnx.ModelProto``, in place) as the module doc says. Returns the
    counts ``{"relu_folded": n, "uint8": m}`` (ReLUs folded into a uint8 quantization, int8 activation
    Q/DQ pairs turned uint8)."""
    from onnx import TensorProto, numpy_helper

    graph = model.graph
    inits = _init_map(graph)
    outputs = {o.name for o in graph.output}

    def consumers():
        c: dict[str, list] = {}
        for n in graph.node:
            for i in n.input:
                c.setdefault(i, []).append(n)
        return c

    def zp_init(name: str, value: int, dtype) -> str:
        if name not in inits:
            t = numpy_helper.from_array(np.array(value, dtype=dtype), name)
            graph.initializer.append(t)
            inits[name] = t
        return name

    def is_s8_zero(node) -> bool:
        zp = _zero_point(inits, node)
        return zp is not None and zp.dtype == np.int8 and zp.ndim == 0 and int(zp) == 0

    cons = consumers()
    counts = {"relu_folded": 0, "uint8": 0}
    removed = set()
    u8_zero = "qdq_ort_u8_zero"
    # 1. Q1 -> DQ1 -> Relu -> Q2 (same scale, int8 zero point 0): Q2 takes Q1's input, uint8 zp 0
    for q2 in list(graph.node):
        if q2.op_type != "QuantizeLinear" or not is_s8_zero(q2):
            continue
        prod = {o: n for n in graph.node if id(n) not in removed for o in n.output}
        relu = prod.get(q2.input[0])
        if relu is None or relu.op_type != "Relu" or relu.output[0] in outputs \
                or len(cons.get(relu.output[0], [])) != 1:
            continue
        dq1 = prod.get(relu.input[0])
        if dq1 is None or dq1.op_type != "DequantizeLinear" or len(cons.get(dq1.output[0], [])) != 1 \
                or dq1.output[0] in outputs:
            continue
        q1 = prod.get(dq1.input[0])
        if q1 is None or q1.op_type != "QuantizeLinear" or len(cons.get(q1.output[0], [])) != 1 \
                or q1.output[0] in outputs or not is_s8_zero(q1) or not is_s8_zero(dq1):
            continue
        s1, s2, sd = _scale(inits, q1), _scale(inits, q2), _scale(inits, dq1)
        if s1 is None or s2 is None or sd is None or s1.shape != () or not (s1 == s2 and s1 == sd):
            continue
        dqs = cons.get(q2.output[0], [])
        if not dqs or any(d.op_type != "DequantizeLinear" for d in dqs) or q2.output[0] in outputs:
            continue
        q2.input[0] = q1.input[0]
        q2.input[2] = zp_init(u8_zero, 0, np.uint8)
        for d in dqs:
            d.input[2] = u8_zero
        removed |= {id(q1), id(dq1), id(relu)}
        counts["relu_folded"] += 1
    for n in [n for n in graph.node if id(n) in removed]:
        graph.node.remove(n)
    # 2. the other int8 activation Q (zero point 0) and their DQ consumers: uint8, zero point 128
    cons = consumers()
    u8_mid = "qdq_ort_u8_128"
    for q in graph.node:
        if q.op_type != "QuantizeLinear" or q.input[0] in inits or not is_s8_zero(q):
            continue
        dqs = cons.get(q.output[0], [])
        if q.output[0] in outputs or any(d.op_type != "DequantizeLinear" or not is_s8_zero(d) for d in dqs):
            continue
        q.input[2] = zp_init(u8_mid, 128, np.uint8)
        for d in dqs:
            d.input[2] = u8_mid
        counts["uint8"] += 1
    used = {i for n in graph.node for i in n.input}
    for init in list(graph.initializer):
        if init.name not in used and init.data_type == TensorProto.INT8 and init.dims == []:
            graph.initializer.remove(init)  # (zero points no longer used)
    return counts


def onnxruntime_bytes(path) -> bytes:
    """The QDQ segment file ``path`` in :func:`onnxruntime_form`, serialized (for
    ``onnxruntime.InferenceSession``)."""
    import onnx

    model = onnx.load(str(path))
    onnxruntime_form(model)
    return model.SerializeToString()

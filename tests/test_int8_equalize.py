"""INT8 recipe details (issue 14): channel equalization before quantizing (instcolor.quantize
.equalize_channels) and ONNX Runtime's form of the QDQ files (instcolor.qdq_ort), on small graphs
built with onnx.helper (no torch)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from instcolor import quantize as Q  # noqa: E402
from instcolor.qdq_ort import onnxruntime_form  # noqa: E402

#: per-channel gains of the first conv's output: channel ranges from ~0.01 to ~50 (like the starter's)
GAINS = np.array([0.01, 0.05, 0.3, 1.0, 4.0, 12.0, 30.0, 50.0])


def _graph(rng) -> "onnx.ModelProto":
    """X (1,4,16,16) -> c1 (4->8) -> Relu -> Add(shift, a folded BN) -> F (a segment output, read
    again by c2) ...; X -> c1b -> Relu -> Add(shift2) -> c3 (8->8) -> Relu -> c4 (8->6) -> Y. Channel ranges of the c1
    outputs span GAINS."""
    def w(o, i, scale=1.0):
        return (rng.normal(size=(o, i, 3, 3)) * scale / np.sqrt(9 * i)).astype(np.float32)

    w1 = w(8, 4) * GAINS.reshape(-1, 1, 1, 1).astype(np.float32)
    w1b = w(8, 4) * GAINS[::-1].reshape(-1, 1, 1, 1).astype(np.float32)
    inits = [numpy_helper.from_array(a, n) for a, n in [
        (w1, "w1"), (rng.normal(size=8).astype(np.float32) * GAINS.astype(np.float32), "b1"),
        ((rng.normal(size=(8, 1, 1)) * 0.1).astype(np.float32), "shift"), (w(5, 8), "w2"),
        ((rng.normal(size=(8, 1, 1)) * 0.1).astype(np.float32), "shift2"),
        (w1b, "w1b"), (w(8, 8), "w3"), (w(6, 8), "w4"), (np.zeros(6, np.float32), "b4")]]
    conv = dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    nodes = [helper.make_node("Conv", ["X", "w1", "b1"], ["z1"], name="c1", **conv),
             helper.make_node("Relu", ["z1"], ["r1"], name="relu1"),
             helper.make_node("Add", ["r1", "shift"], ["F"], name="bn.bnfold"),
             helper.make_node("Conv", ["F", "w2"], ["G"], name="c2", **conv),
             helper.make_node("Conv", ["X", "w1b"], ["z1b"], name="c1b", **conv),
             helper.make_node("Relu", ["z1b"], ["r1b"], name="relu1b"),
             helper.make_node("Add", ["r1b", "shift2"], ["s1b"], name="bn2.bnfold"),
             helper.make_node("Conv", ["s1b", "w3"], ["z3"], name="c3", **conv),
             helper.make_node("Relu", ["z3"], ["r3"], name="relu3"),
             helper.make_node("Conv", ["r3", "w4", "b4"], ["Y"], name="c4", **conv)]
    vi = lambda n, c: helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, c, 16, 16])  # noqa: E731
    g = helper.make_graph(nodes, "eq", [vi("X", 4)], [vi("F", 8), vi("G", 5), vi("Y", 6)], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def _feeds(tmp_path: Path, rng, n=3) -> list[Path]:
    files = []
    for i in range(n):
        f = tmp_path / f"feed{i}.npz"
        np.savez(f, X=rng.uniform(-1, 1, (1, 4, 16, 16)).astype(np.float32))
        files.append(f)
    return files


def _run(model, x):
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"X": x})


def _spread(model, tensor, files) -> float:
    a = Q._channel_absmax(model, [tensor], files, threads=1)[tensor]
    return float(a.max() / a[a > 0].min())


def test_equalization_is_exact_keeps_segment_outputs_and_evens_channel_ranges(tmp_path):
    """Outputs (F, a segment output, included) equal within float rounding; the ranges of what c2
    and c3 read are evened out (c3's input r1b through c1b's output channels, c2's input F, a segment
    output, through an inserted Mul); the first conv (reading the segment input X) is skipped here."""
    rng = np.random.default_rng(0)
    model = _graph(rng)
    files = _feeds(tmp_path, rng)
    x = np.load(files[0])["X"]
    ref = _run(model, x)
    before = {"r1b": _spread(model, "r1b", files), "F": _spread(model, "F", files)}
    counts = Q.equalize_channels(model, files, skip={"c1", "c1b"}, threads=1)
    out = _run(model, x)
    for r, o in zip(ref, out):
        np.testing.assert_allclose(o, r, rtol=1e-4, atol=1e-5 * np.abs(r).max())
    assert counts == {"folded": 2, "mul": 1}, counts  # c3 <- c1b, c4 <- c3 folded; c2 reads F through a Mul
    names = {n.name: n for n in model.graph.node}
    assert names["c2"].input[0] == "c2.eq_in" and names["c3"].input[0] == "s1b"
    after_r1b = _spread(model, "r1b", files)
    after_f = _spread(model, "c2.eq_in", files)
    assert before["r1b"] > 300 and after_r1b < before["r1b"] / 10, (before, after_r1b)
    assert before["F"] > 100 and after_f < before["F"] / 5, (before, after_f)


def _quantized(tmp_path, rng, equalize: bool) -> Path:
    model = _graph(rng)
    src, dst = tmp_path / "fp32.onnx", tmp_path / f"int8_{equalize}.onnx"
    onnx.save(model, str(src))
    Q.quantize_segment(src, dst, _feeds(tmp_path, rng), work_dir=tmp_path, settings=dict(equalize=equalize), threads=1)
    return dst


def test_equalization_reduces_int8_error(tmp_path):
    """The same graph quantized with and without equalization: the INT8 error of the output Y
    (through c1b -> c3 -> c4, whose channel ranges span 5000x) drops."""
    errs = {}
    for eq in (False, True):
        rng = np.random.default_rng(1)
        model = _graph(rng)
        dst = _quantized(tmp_path, np.random.default_rng(1), eq)
        x = np.random.default_rng(7).uniform(-1, 1, (1, 4, 16, 16)).astype(np.float32)
        ref = _run(model, x)[2]
        out = ort.InferenceSession(str(dst), providers=["CPUExecutionProvider"]).run(None, {"X": x})[2]
        errs[eq] = float(np.sqrt(np.mean((out - ref) ** 2)) / np.sqrt(np.mean(ref ** 2)))
    assert errs[True] < 0.85 * errs[False], errs  # (measured: 0.021 against 0.028)


def test_onnxruntime_form_fuses_relus_and_runs_uint8(tmp_path):
    """The symmetric int8 QDQ file -> ONNX Runtime's form: every Q -> DQ -> Relu -> Q after a conv
    becomes one uint8 quantization with zero point 0, every other activation Q/DQ uint8 with zero
    point 128; no int8 activation Q is left, ONNX Runtime then runs every quantized conv as
    QLinearConv (none in float), and the outputs equal the int8 file's within two quantization steps."""
    import collections

    dst = _quantized(tmp_path, np.random.default_rng(2), True)
    model = onnx.load(str(dst))
    relus_before = sum(n.op_type == "Relu" for n in model.graph.node)
    counts = onnxruntime_form(model)
    assert counts["relu_folded"] == 3 and counts["uint8"] >= 1, counts
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    for n in model.graph.node:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear") and n.input[0] not in inits:
            assert inits[n.input[2]].dtype == np.uint8, n.name
    assert sum(n.op_type == "Relu" for n in model.graph.node) == relus_before - 3
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.optimized_model_filepath = str(tmp_path / "opt.onnx")
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    ops = collections.Counter(n.op_type for n in onnx.load(str(tmp_path / "opt.onnx")).graph.node)
    assert ops["QLinearConv"] == 5 and ops["Conv"] == 0, ops
    x = np.random.default_rng(3).uniform(-1, 1, (1, 4, 16, 16)).astype(np.float32)
    ref = ort.InferenceSession(str(dst), providers=["CPUExecutionProvider"]).run(None, {"X": x})
    for r, o in zip(ref, sess.run(None, {"X": x})):
        assert np.abs(o - r).max() <= 2.01 * np.abs(r).max() / 127, np.abs(o - r).max()


def _upsampling_graph(rng):
    """X (1,6,7,9) -> ConvTranspose (k4 s2 p1, bias) -> U (an output) -> Relu -> ConvTranspose
    (k3 s1 p1) -> Y."""
    inits = [numpy_helper.from_array(rng.normal(size=(6, 5, 4, 4)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.normal(size=5).astype(np.float32), "b"),
             numpy_helper.from_array(rng.normal(size=(5, 3, 3, 3)).astype(np.float32), "w1")]
    nodes = [helper.make_node("ConvTranspose", ["X", "w", "b"], ["U"], name="up", kernel_shape=[4, 4],
                              strides=[2, 2], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["U"], ["R"], name="r"),
             helper.make_node("ConvTranspose", ["R", "w1"], ["Y"], name="same", kernel_shape=[3, 3], pads=[1, 1, 1, 1])]
    g = helper.make_graph(nodes, "up", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 6, 7, 9])],
                          [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, 3, 14, 18]),
                           helper.make_tensor_value_info("U", TensorProto.FLOAT, [1, 5, 14, 18])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_convtranspose_as_conv_is_exact_and_quantizes_to_qlinearconv(tmp_path):
    """The nets' 2x upsampling (ConvTranspose, kernel 4, stride 2, pad 1) rewritten as a 3x3 Conv
    with 4x the channels + DepthToSpace gives the same output (float rounding); another
    ConvTranspose (stride 1) is left alone; quantized, the rewritten one runs as QLinearConv."""
    import collections

    model = _upsampling_graph(np.random.default_rng(4))
    x = np.random.default_rng(5).normal(size=(1, 6, 7, 9)).astype(np.float32)
    ref = _run(model, x)
    assert Q.convtranspose_as_conv(model) == 1
    assert [n.op_type for n in model.graph.node] == ["Conv", "DepthToSpace", "Relu", "ConvTranspose"]
    for r, o in zip(ref, _run(model, x)):
        np.testing.assert_allclose(o, r, rtol=1e-5, atol=1e-5 * np.abs(r).max())
    # quantized (quantize_segment rewrites it): the upsampling is an int8 convolution in ONNX Runtime
    src, dst, f = tmp_path / "up.onnx", tmp_path / "up8.onnx", tmp_path / "f.npz"
    onnx.save(_upsampling_graph(np.random.default_rng(4)), str(src))
    np.savez(f, X=x)
    Q.quantize_segment(src, dst, [f], work_dir=tmp_path, threads=1)
    m8 = onnx.load(str(dst))
    onnxruntime_form(m8)
    so = ort.SessionOptions()
    so.optimized_model_filepath = str(tmp_path / "opt.onnx")
    ort.InferenceSession(m8.SerializeToString(), so, providers=["CPUExecutionProvider"])
    ops = collections.Counter(n.op_type for n in onnx.load(str(tmp_path / "opt.onnx")).graph.node)
    assert ops["QLinearConv"] >= 1 and ops["ConvTranspose"] == 1, ops  # (the stride-1 one stays float)


def test_combined_guard_keeps_the_longest_accurate_run(monkeypatch):
    """The second half of the accuracy guard: with the segments ranked best first, the most of them
    that together still keep min_total_db go INT8 (a stand-in for the pipeline: each INT8 segment
    costs 5 dB)."""
    calls = []

    def fake(fp32_dir, quantized, batches, threads=None, each=True):
        assert each is False
        calls.append(len(quantized))
        return {None: 60.0 - 5 * len(quantized)}

    monkeypatch.setattr(Q, "segment_snr", fake)
    ranked = ["a", "b", "c", "d", "e"]
    files = {n: Path(n) for n in ranked}
    assert Q._combined_guard("fp32", files, ranked, [], 46.0) == (2, 50.0)
    assert Q._combined_guard("fp32", files, ranked, [], 35.0) == (5, 35.0)
    assert Q._combined_guard("fp32", files, ranked, [], None) == (5, 35.0)
    assert Q._combined_guard("fp32", files, ranked, [], 70.0) == (0, float("inf"))
    assert max(calls) == 5

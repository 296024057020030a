"""The TensorRT / cuda-python layer against the strict simulation (tests/trt_sim.py): defects that
only show on a GPU -- wrong device, unordered copies, per-context activation memory, swallowed
CUDA faults, TF32 in fp32 engines, I/O types, cache keys -- each with a test that fails when the
defect is back. Real-GPU checks are in tests/test_tensorrt.py / tests/test_detect_tensorrt.py
(skipped without TensorRT)."""
from __future__ import annotations

import ast
import logging
import sys
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper  # noqa: E402

import instcolor.trt.cuda as tcuda  # noqa: E402
import instcolor.trt.engine as tengine  # noqa: E402
from instcolor.detect.tensorrt_runner import TensorRTDetectorRunner  # noqa: E402
from instcolor.trt.engine import EngineStore, TensorRTRunner, _np_dtype, build_engine  # noqa: E402
from trt_sim import SimCudart, cudaError_t, host_view, sim_tensorrt  # noqa: E402

PKG = Path(tengine.__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- graphs and fixtures
def affine_graph(path: Path) -> Path:
    """y = 2 x + 1, x float (n, 4) with n dynamic."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])
    two = helper.make_tensor("two", TensorProto.FLOAT, [], [2.0])
    one = helper.make_tensor("one", TensorProto.FLOAT, [], [1.0])
    nodes = [helper.make_node("Mul", ["x", "two"], ["x2"]), helper.make_node("Add", ["x2", "one"], ["y"])]
    graph = helper.make_graph(nodes, "affine", [x], [y], initializer=[two, one])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def u8_graph(path: Path) -> Path:
    """uint8 image (1, 3, 4, 4) -> mean (float), positive (bool), as_i8 (int8) -- non-float I/O."""
    img = helper.make_tensor_value_info("img", TensorProto.UINT8, [1, 3, 4, 4])
    outs = [helper.make_tensor_value_info("mean", TensorProto.FLOAT, [1]),
            helper.make_tensor_value_info("positive", TensorProto.BOOL, [1, 3, 4, 4]),
            helper.make_tensor_value_info("as_i8", TensorProto.INT8, [1, 3, 4, 4])]
    zero = helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0])
    nodes = [helper.make_node("Cast", ["img"], ["f"], to=TensorProto.FLOAT),
             helper.make_node("ReduceMean", ["f"], ["m4"], keepdims=0),
             helper.make_node("Reshape", ["m4", "shape1"], ["mean"]),
             helper.make_node("Greater", ["f", "zero"], ["positive"]),
             helper.make_node("Cast", ["img"], ["as_i8"], to=TensorProto.INT8)]
    shape1 = helper.make_tensor("shape1", TensorProto.INT64, [1], [1])
    graph = helper.make_graph(nodes, "u8", [img], outs, initializer=[zero, shape1])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@pytest.fixture
def sim2(monkeypatch):
    """Two simulated GPUs (device 0 current) and TensorRT 10.3."""
    rt = SimCudart(devices=2)
    trt = sim_tensorrt(rt)
    monkeypatch.setattr(tcuda, "cudart", lambda: rt)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr(tengine._Logger, "instance", None)
    return rt, trt


def use_trt(monkeypatch, rt, **kwargs):
    trt = sim_tensorrt(rt, **kwargs)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    return trt


PROFILE = {"x": ((1, 4), (2, 4), (4, 4))}


def affine_runner(tmp_path, device, cuda_graphs=False, workspace_bytes=None, mode="fp32"):
    affine_graph(tmp_path / "affine.onnx")
    store = EngineStore(tmp_path, {"weights_sha256": "0" * 64, "format": "test/1"}, mode, device.index,
                        tmp_path / "cache", workspace_bytes)
    engine = store.engine({"name": "affine", "file": "affine.onnx"}, PROFILE)
    return TensorRTRunner(engine, "affine", device, cuda_graphs=cuda_graphs)


def run_affine(runner, device, x: np.ndarray, bufs=None) -> np.ndarray:
    """Upload x, run, download y (all stream-ordered on the device)."""
    n = x.shape[0]
    if bufs is None:
        bufs = device.alloc(4 * 4 * 4), device.alloc(4 * 4 * 4)
    xi, yo = device.view(bufs[0], (n, 4), np.float32), device.view(bufs[1], (n, 4), np.float32)
    device.upload(xi, x)
    runner.run({"x": xi}, {"y": yo}, device.stream)
    return device.download(yo)


# ----------------------------------------------------------------------------- 1: device selection
def test_detector_on_cuda_1_builds_loads_and_runs_there(sim2, tmp_path):
    """cuda:1 while device 0 is current: the engine is built and deserialized on device 1 (TensorRT
    uses the current device), runs there, and the caller's device 0 is current again afterwards."""
    rt, trt = sim2
    path = affine_graph(tmp_path / "affine.onnx")
    runner = TensorRTDetectorRunner(path, "x", (2, 4), ["y"], device="cuda:1", cache_root=tmp_path / "c")
    assert rt.current_device() == 0
    assert trt.builds[0]["device"] == 1 and runner.engine_runner.engine.device == 1
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    (y,) = runner.run({"x": x})
    np.testing.assert_array_equal(y, 2 * x + 1)
    assert rt.current_device() == 0
    assert {a.device for a in rt.allocs.values() if a.kind == "device"} == {1}
    # from the cache: deserialized on device 1 as well
    again = TensorRTDetectorRunner(path, "x", (2, 4), ["y"], device="cuda:1", cache_root=tmp_path / "c")
    assert len(trt.builds) == 1 and again.engine_runner.engine.device == 1
    np.testing.assert_array_equal(again.run({"x": x})[0], 2 * x + 1)
    runner.close()
    again.close()
    assert not rt.mem and not trt.errors


def test_cuda_device_reselects_its_device_in_every_call(sim2):
    """Another CUDA user switches the thread to device 0 between calls: a CudaDevice on device 1
    still allocates, copies, fills, launches and synchronizes on device 1."""
    rt, _ = sim2
    dev = tcuda.CudaDevice(1)
    assert rt.stream_device(dev.stream) == 1 and rt.current_device() == 0
    rt.cudaSetDevice(0)
    buf = dev.alloc(64)
    assert rt.find(buf.ptr).device == 1
    v = dev.view(buf, (4, 4), np.float32)
    dev.fill(v, 3.0)
    out = np.zeros((4, 4), np.float32)
    with dev.activate():
        assert rt.current_device() == 1
        assert rt.launch_kernel(dev.stream, lambda: np.copyto(out, host_view(v))) == 0
    assert rt.current_device() == 0
    dev.synchronize()
    np.testing.assert_array_equal(out, 3.0)
    np.testing.assert_array_equal(dev.download(v), 3.0)
    with pytest.raises(ValueError, match="cuda:1 used on cuda:0"):
        tcuda.CudaDevice(0).view(buf, (4,), np.float32)
    dev.close()


def test_tensorrt_backend_on_cuda_1_after_the_thread_switched_devices(sim2, tmp_path):
    """The backend made for cuda:1; the thread then selects device 0 (e.g. a detector or torch on
    cuda:0). Its engines, buffers and kernels still go to device 1 and the result is right."""
    from conftest import tiny_nets
    from test_tensorrt import S, make_batch, sim_fuse

    from instcolor.backends.onnxruntime_backend import OnnxRuntimeBackend
    from instcolor.backends.tensorrt_backend import TensorRTBackend
    from instcolor.export import export_segments

    rt, trt = sim2
    d = tmp_path / "fp32"
    export_segments(tiny_nets(seed=3), d, size=S)
    be = TensorRTBackend(d, max_images=2, device="cuda:1", cache_root=tmp_path / "engines")
    be.fuse = sim_fuse(rt, be.device)
    rt.cudaSetDevice(0)
    b = make_batch([2, 1], seed=11)
    np.testing.assert_allclose(be.run(b), OnnxRuntimeBackend(d, threads=1).run(b), rtol=0, atol=2e-5)
    assert rt.current_device() == 0
    assert {p["device"] for p in trt.builds} == {1}
    assert rt.live_device_bytes(0) == 0 and rt.live_device_bytes(1) > 0
    be.close()


# ----------------------------------------------------------------------------- 2: fills ordered with the stream
def test_fill_is_ordered_before_later_work_on_the_stream(sim2):
    """A fill followed by a kernel on the device's (non-blocking) stream: the kernel sees the value.
    A cudaMemcpy from pageable memory would land on the legacy stream, unordered with it."""
    rt, _ = sim2
    dev = tcuda.CudaDevice(0)
    v = dev.view(dev.alloc(4 * 6), (6,), np.float32)
    seen = np.zeros(6, np.float32)
    dev.fill(v, -0.5)
    assert rt.launch_kernel(dev.stream, lambda: np.copyto(seen, host_view(v))) == 0
    dev.synchronize()
    np.testing.assert_array_equal(seen, -0.5)
    # and a fill does not overtake work enqueued before it
    dev.fill(v, 1.0)
    assert rt.launch_kernel(dev.stream, lambda: np.copyto(seen, host_view(v))) == 0
    dev.fill(v, 2.0)
    dev.synchronize()
    np.testing.assert_array_equal(seen, 1.0)
    np.testing.assert_array_equal(dev.download(v), 2.0)
    dev.close()


# ----------------------------------------------------------------------------- 3: activation memory
@pytest.mark.parametrize("version", ["10.0.1", "10.3.0", "11.0.0"])
def test_graph_contexts_share_one_activation_block(sim2, tmp_path, monkeypatch, version):
    """CUDA graphs: one context per binding, all on one activation block (USER_MANAGED), in the
    TensorRT 10.0 (``device_memory``), 10.1+ (``set_device_memory``) and 11 APIs."""
    rt, _ = sim2
    trt = use_trt(monkeypatch, rt, version=version)
    dev = tcuda.CudaDevice(0)
    runner = affine_runner(tmp_path, dev, cuda_graphs=True)
    bufs = dev.alloc(64), dev.alloc(64)
    rng = np.random.default_rng(0)
    for n in (1, 2, 3, 4, 2, 1):
        x = rng.standard_normal((n, 4)).astype(np.float32)
        np.testing.assert_allclose(run_affine(runner, dev, x, bufs), 2 * x + 1, rtol=1e-6)
    assert runner.engine.contexts == 4 and len(runner.graphs) == 4 and rt.launches == 2
    need = runner.engine._memory
    assert rt.live_device_bytes() == 64 + 64 + need  # the buffers and ONE activation block
    assert runner.memory_size == need > 0 and not trt.errors
    dev.close()


def test_engines_on_one_device_share_the_block(sim2, tmp_path):
    rt, _ = sim2
    dev = tcuda.CudaDevice(0)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = affine_runner(tmp_path / "a", dev)
    b = affine_runner(tmp_path / "b", dev, workspace_bytes=1 << 20)
    x = np.ones((2, 4), np.float32)
    np.testing.assert_array_equal(run_affine(a, dev, x), 3.0)
    np.testing.assert_array_equal(run_affine(b, dev, x), 3.0)
    assert dev.scratch.block is not None and dev.scratch.block.nbytes == max(a.memory_size, b.memory_size)
    assert rt.live_device_bytes() == 4 * 64 + dev.scratch.block.nbytes
    with pytest.raises(ValueError, match="device's stream only"):
        a.run({}, {}, 0)
    dev.close()


# ----------------------------------------------------------------------------- graphs: what falls back, what propagates
def test_cuda_fault_before_capture_propagates(sim2, tmp_path):
    """A CUDA fault (here: an illegal address of the first run) is an error, not 'no graphs'."""
    rt, _ = sim2
    dev = tcuda.CudaDevice(0)
    runner = affine_runner(tmp_path, dev, cuda_graphs=True)
    rt.inject_fault(cudaError_t.cudaErrorIllegalAddress)
    with pytest.raises(RuntimeError, match="cudaErrorIllegalAddress"):
        run_affine(runner, dev, np.ones((2, 4), np.float32))
    assert runner.graphs == {}  # still in graph mode: nothing was taken for "cannot capture"


def test_graph_instantiate_failure_propagates(sim2, tmp_path, monkeypatch):
    rt, _ = sim2
    dev = tcuda.CudaDevice(0)
    runner = affine_runner(tmp_path, dev, cuda_graphs=True)
    monkeypatch.setattr(rt, "cudaGraphInstantiate", lambda g, f: (cudaError_t.cudaErrorMemoryAllocation, None))
    with pytest.raises(RuntimeError, match="cudaErrorMemoryAllocation"):
        run_affine(runner, dev, np.ones((2, 4), np.float32))
    assert runner.graphs == {}


def test_uncapturable_engine_falls_back_with_a_warning(sim2, tmp_path, caplog):
    """TensorRT refusing the enqueue under capture (and CUDA invalidating the capture) is the one
    case that switches to eager runs -- logged with the segment and the reason."""
    rt, trt = sim2
    trt.sim_capturable = False
    dev = tcuda.CudaDevice(0)
    runner = affine_runner(tmp_path, dev, cuda_graphs=True)
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    with caplog.at_level(logging.WARNING, logger="instcolor.trt.engine"):
        np.testing.assert_array_equal(run_affine(runner, dev, x), 2 * x + 1)
        np.testing.assert_array_equal(run_affine(runner, dev, x + 1), 2 * x + 3)
    (msg,) = [r.getMessage() for r in caplog.records]
    assert msg.startswith("affine: ") and "cannot be captured" in msg and "refused to enqueue" in msg
    assert runner.graphs is None and rt.launches == 0 and runner.engine.contexts == 1
    assert not rt.capturing(dev.stream)
    dev.close()


def test_capture_invalidated_by_cuda_is_unsupported(sim2, monkeypatch):
    """An enqueue refused under capture, or cudaStreamEndCapture reporting an invalidated capture ->
    CaptureUnsupported; another end error -> CudaError; the stream leaves capture mode either way."""
    rt, _ = sim2
    dev = tcuda.CudaDevice(0)
    with pytest.raises(tcuda.CaptureUnsupported, match="refused to enqueue"):
        dev.capture(lambda: False)  # an enqueue that refused while CUDA itself saw nothing wrong
    with pytest.raises(tcuda.CaptureUnsupported, match="cudaErrorStreamCaptureInvalidated"):
        dev.capture(lambda: rt.cudaStreamSynchronize(dev.stream) and None)  # not permitted while capturing
    real_end = rt.cudaStreamEndCapture  # ends the capture, then reports a fault of earlier work
    monkeypatch.setattr(rt, "cudaStreamEndCapture", lambda s: (real_end(s), (cudaError_t.cudaErrorIllegalAddress,
                                                                            None))[1])
    with pytest.raises(tcuda.CudaError) as e:
        dev.capture(lambda: True)
    assert e.value.name == "cudaErrorIllegalAddress" and not isinstance(e.value, tcuda.CaptureUnsupported)
    assert not rt.capturing(dev.stream)


# ----------------------------------------------------------------------------- 5 + 7: builder settings, cache key
def test_fp32_engines_are_built_without_tf32(sim2, tmp_path, monkeypatch):
    rt, trt = sim2
    affine_graph(tmp_path / "affine.onnx")
    plan32 = build_engine(tmp_path / "affine.onnx", PROFILE, "fp32")
    plan16 = build_engine(tmp_path / "affine.onnx", PROFILE, "fp16-flag")
    assert not trt.builds[0]["tf32"] and trt.builds[1]["tf32"] and trt.builds[1]["fp16"]
    assert plan32 != plan16


def test_cache_key_covers_the_workspace_limit(sim2, tmp_path):
    """Another workspace limit is another engine (the builder may pick other tactics): rebuilt, not
    loaded from the cache; the same limit loads it."""
    rt, trt = sim2
    dev = tcuda.CudaDevice(0)
    path = affine_graph(tmp_path / "affine.onnx")
    keys = []
    for ws in (None, 1 << 26, 1 << 27, 1 << 26):
        r = TensorRTDetectorRunner(path, "x", (2, 4), ["y"], device=dev, cache_root=tmp_path / "c",
                                   workspace_bytes=ws)
        keys.append(r.key)
    assert len(set(keys)) == 3 and keys[1] == keys[3]
    assert [b["workspace"] for b in trt.builds] == [None, 1 << 26, 1 << 27]
    dev.close()


# ----------------------------------------------------------------------------- 6: I/O types
def test_io_dtype_map(sim2, monkeypatch):
    rt, trt = sim2
    D = trt.DataType
    want = {D.FLOAT: np.float32, D.HALF: np.float16, D.INT8: np.int8, D.UINT8: np.uint8, D.BOOL: np.bool_,
            D.INT32: np.int32, D.INT64: np.int64}
    for dt, np_type in want.items():
        assert _np_dtype(trt, dt) == np.dtype(np_type), dt
    ml_dtypes = pytest.importorskip("ml_dtypes")
    assert _np_dtype(trt, D.BF16) == np.dtype(ml_dtypes.bfloat16)
    monkeypatch.setitem(sys.modules, "ml_dtypes", None)  # not installed
    with pytest.raises(TypeError, match="bfloat16.*ml_dtypes"):
        _np_dtype(trt, D.BF16)
    for dt in (D.FP8, D.INT4):
        with pytest.raises(TypeError, match="unsupported TensorRT I/O type"):
            _np_dtype(trt, dt)


def test_uint8_bool_int8_io_end_to_end(sim2, tmp_path):
    rt, trt = sim2
    path = u8_graph(tmp_path / "u8.onnx")
    runner = TensorRTDetectorRunner(path, "img", (1, 3, 4, 4), ["mean", "positive", "as_i8"], graph_dtype=np.uint8,
                                    device="cuda:0", cache_root=tmp_path / "c")
    assert runner.engine_runner.dtypes == {"img": np.uint8, "mean": np.float32, "positive": np.bool_,
                                           "as_i8": np.int8}
    img = np.arange(48, dtype=np.uint8).reshape(1, 3, 4, 4)
    mean, positive, as_i8 = runner.run({"img": img})
    np.testing.assert_allclose(mean, [img.mean()], rtol=1e-6)
    np.testing.assert_array_equal(positive, img > 0)
    np.testing.assert_array_equal(as_i8, img.astype(np.int8))
    runner.close()


# ----------------------------------------------------------------------------- layering
def test_trt_package_imports_nothing_above_it():
    """instcolor.trt is below instcolor.backends / detect: none of its modules imports them."""
    for f in sorted((PKG / "trt").glob("*.py")):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom):
                mod = "." * node.level + (node.module or "")
                assert not any(p in mod.split(".") for p in ("backends", "detect", "cli")), (f.name, mod)
            elif isinstance(node, ast.Import):
                assert not any(a.name.startswith(("instcolor.backends", "instcolor.detect")) for a in node.names)

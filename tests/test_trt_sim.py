"""The simulation the TensorRT tests rely on (tests/trt_sim.py) enforces the CUDA / TensorRT rules
it claims to: a lenient simulator would let GPU-only defects pass. Each test states one rule."""
from __future__ import annotations

import logging
import sys
import threading

import numpy as np
import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

import instcolor.trt.cuda as tcuda  # noqa: E402
import instcolor.trt.engine as tengine  # noqa: E402
from instcolor.trt.engine import EngineStore, build_engine  # noqa: E402
from test_trt_gpu_defects import PROFILE, affine_graph, affine_runner, run_affine  # noqa: E402
from trt_sim import SimCudart, at_address, cudaError_t, sim_tensorrt  # noqa: E402

E = cudaError_t
K = SimCudart.cudaMemcpyKind


@pytest.fixture
def rt(monkeypatch):
    rt = SimCudart(devices=2)
    monkeypatch.setattr(tcuda, "cudart", lambda: rt)
    monkeypatch.setattr(tengine._Logger, "instance", None)
    return rt


def install(monkeypatch, rt, **kwargs):
    trt = sim_tensorrt(rt, **kwargs)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    return trt


def floats(ptr, n):
    return at_address(ptr, (n,), np.float32)


# ----------------------------------------------------------------------------- CUDA
def test_async_copies_complete_only_when_the_stream_is_synchronized(rt):
    _, s = rt.cudaStreamCreateWithFlags(rt.cudaStreamNonBlocking)
    _, dev = rt.cudaMalloc(16)
    _, pinned = rt.cudaMallocHost(16)
    floats(pinned, 4)[:] = 1.0
    assert rt.cudaMemcpyAsync(dev, pinned, 16, K.cudaMemcpyHostToDevice, s) == (E.cudaSuccess,)
    assert np.isnan(floats(dev, 4)).all()  # fresh device memory, the copy has not run
    floats(pinned, 4)[:] = 2.0  # pinned memory is read when the copy runs
    rt.cudaStreamSynchronize(s)
    np.testing.assert_array_equal(floats(dev, 4), 2.0)


def test_pageable_copies_are_staged_or_synchronous(rt):
    _, s = rt.cudaStreamCreateWithFlags(rt.cudaStreamNonBlocking)
    _, dev = rt.cudaMalloc(16)
    host = np.full(4, 5.0, np.float32)
    rt.cudaMemcpyAsync(dev, host.ctypes.data, 16, K.cudaMemcpyHostToDevice, s)
    host[:] = 6.0  # pageable source: staged at the call
    out = np.zeros(4, np.float32)
    rt.cudaMemcpyAsync(out.ctypes.data, dev, 16, K.cudaMemcpyDeviceToHost, s)  # to pageable: synchronous
    np.testing.assert_array_equal(out, 5.0)


def test_legacy_stream_copy_is_not_ordered_with_non_blocking_streams(rt):
    """cudaMemcpy from pageable memory returns once staged; a non-blocking stream does not wait for
    the legacy stream's DMA."""
    _, s = rt.cudaStreamCreateWithFlags(rt.cudaStreamNonBlocking)
    _, dev = rt.cudaMalloc(16)
    host = np.full(4, -0.5, np.float32)
    assert rt.cudaMemcpy(dev, host.ctypes.data, 16, K.cudaMemcpyHostToDevice) == (E.cudaSuccess,)
    seen = np.zeros(4, np.float32)
    rt.launch_kernel(s, lambda: np.copyto(seen, floats(dev, 4)))
    rt.cudaStreamSynchronize(s)
    assert np.isnan(seen).all()
    rt.cudaDeviceSynchronize()
    np.testing.assert_array_equal(floats(dev, 4), -0.5)


def test_current_device_is_per_thread_and_checked(rt):
    rt.cudaSetDevice(1)
    _, s1 = rt.cudaStreamCreateWithFlags(rt.cudaStreamNonBlocking)
    other = []
    t = threading.Thread(target=lambda: other.append(rt.cudaGetDevice()[1]))
    t.start()
    t.join()
    assert other == [0] and rt.cudaGetDevice()[1] == 1
    assert rt.cudaSetDevice(2) == (E.cudaErrorInvalidDevice,)
    rt.cudaSetDevice(0)
    assert rt.launch_kernel(s1, lambda: None) == E.cudaErrorInvalidResourceHandle  # stream of device 1
    _, dev = rt.cudaMalloc(4)
    assert rt.find(dev).device == 0


def test_capture_rules(rt):
    _, s = rt.cudaStreamCreateWithFlags(rt.cudaStreamNonBlocking)
    _, dev = rt.cudaMalloc(16)
    _, pinned = rt.cudaMallocHost(16)
    mode = rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
    # recorded, not run; a launch replays it
    rt.cudaStreamBeginCapture(s, mode)
    rt.cudaMemcpyAsync(dev, pinned, 16, K.cudaMemcpyHostToDevice, s)
    err, graph = rt.cudaStreamEndCapture(s)
    assert err == E.cudaSuccess and len(graph.ops) == 1 and np.isnan(floats(dev, 4)).all()
    _, exe = rt.cudaGraphInstantiate(graph, 0)
    floats(pinned, 4)[:] = 7.0
    rt.cudaGraphLaunch(exe, s)
    rt.cudaStreamSynchronize(s)
    np.testing.assert_array_equal(floats(dev, 4), 7.0)
    # synchronous / pageable work invalidates the capture
    host = np.zeros(4, np.float32)
    for bad in (lambda: rt.cudaStreamSynchronize(s), lambda: rt.cudaMalloc(4),
                lambda: rt.cudaMemcpy(dev, host.ctypes.data, 16, K.cudaMemcpyHostToDevice),
                lambda: rt.cudaMemcpyAsync(dev, host.ctypes.data, 16, K.cudaMemcpyHostToDevice, s)):
        rt.cudaStreamBeginCapture(s, mode)
        assert bad()[0] == E.cudaErrorStreamCaptureUnsupported
        assert rt.cudaStreamEndCapture(s) == (E.cudaErrorStreamCaptureInvalidated, None)
    assert rt.cudaStreamBeginCapture(0, mode) != (E.cudaSuccess,)  # not on the legacy stream


def test_faults_are_sticky_on_synchronizing_calls(rt):
    _, s = rt.cudaStreamCreateWithFlags(rt.cudaStreamNonBlocking)
    rt.inject_fault()
    assert rt.cudaStreamSynchronize(s) == (E.cudaErrorIllegalAddress,)
    assert rt.cudaDeviceSynchronize() == (E.cudaErrorIllegalAddress,)


# ----------------------------------------------------------------------------- TensorRT
def test_failed_deserialization_returns_none_and_the_store_rebuilds(rt, monkeypatch, tmp_path, caplog):
    trt = install(monkeypatch, rt)
    runtime = trt.Runtime(None)
    assert runtime.deserialize_cuda_engine(b"\x00garbage") is None and trt.errors
    affine_graph(tmp_path / "affine.onnx")
    store = EngineStore(tmp_path, {"weights_sha256": "1" * 64, "format": "t/1"}, "fp32", 0, tmp_path / "c")
    key = store.key("affine", PROFILE)
    store.engine({"name": "affine", "file": "affine.onnx"}, PROFILE)
    from instcolor.trt.cache import engine_path

    engine_path(tmp_path / "c", "affine", key).write_bytes(b"truncated")
    with caplog.at_level(logging.WARNING):
        assert store.engine({"name": "affine", "file": "affine.onnx"}, PROFILE) is not None
    assert "does not load; rebuilding" in caplog.text and len(trt.builds) == 2
    # a plan of another TensorRT version does not load either
    other = sim_tensorrt(rt, version="10.4.0")
    assert other.Runtime(None).deserialize_cuda_engine(engine_path(tmp_path / "c", "affine", key).read_bytes()) is None


def test_flag_combinations_of_tensorrt_10_and_11(rt, monkeypatch, tmp_path):
    path = affine_graph(tmp_path / "affine.onnx")
    trt10 = install(monkeypatch, rt, version="10.3.0")
    assert hasattr(trt10.BuilderFlag, "FP16")
    build_engine(path, PROFILE, "fp16-strong")  # strongly typed, no precision flag: fine
    b = trt10.Builder(None)
    net = b.create_network(1 << int(trt10.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    trt10.OnnxParser(net, None).parse_from_file(str(path))
    cfg = b.create_builder_config()
    cfg.set_flag(trt10.BuilderFlag.FP16)
    p = b.create_optimization_profile()
    p.set_shape("x", *PROFILE["x"])
    cfg.add_optimization_profile(p)
    assert b.build_serialized_network(net, cfg) is None and "strongly typed" in trt10.errors[-1]
    trt11 = install(monkeypatch, rt, version="11.0.0")
    assert not hasattr(trt11.BuilderFlag, "FP16")
    with pytest.raises(ValueError, match="no BuilderFlag.FP16"):
        build_engine(path, PROFILE, "fp16-flag")
    build_engine(path, PROFILE, "fp32")
    assert trt11.builds[-1]["strongly_typed"] and not trt11.builds[-1]["tf32"]
    with pytest.raises(RuntimeError, match="could not parse"):
        build_engine(tmp_path / "missing.onnx", PROFILE, "fp32")


def test_contexts_check_shapes_addresses_memory_and_device(rt, monkeypatch, tmp_path):
    trt = install(monkeypatch, rt)
    dev = tcuda.CudaDevice(0)
    runner = affine_runner(tmp_path, dev)
    e = runner.engine
    assert e.get_tensor_shape("y") == (-1, 4)
    ctx = e.create_execution_context()
    assert ctx.get_tensor_shape("y") == (-1, 4)
    assert not ctx.set_input_shape("x", (5, 4))  # outside the profile
    assert ctx.set_input_shape("x", (3, 4)) and ctx.get_tensor_shape("y") == (3, 4)  # resolved from the input
    assert not ctx.execute_async_v3(dev.stream) and "address of x" in trt.errors[-1]
    buf = dev.alloc(64)
    ctx.set_tensor_address("x", buf.ptr)
    host = np.zeros(16, np.float32)
    ctx.set_tensor_address("y", host.ctypes.data)  # host memory is no device memory
    assert not ctx.execute_async_v3(dev.stream) and "not device memory" in trt.errors[-1]
    ctx.set_tensor_address("y", dev.alloc(64).ptr)
    assert ctx.execute_async_v3(dev.stream)
    um = e.create_execution_context(trt.ExecutionContextAllocationStrategy.USER_MANAGED)
    um.set_input_shape("x", (3, 4))
    um.set_tensor_address("x", buf.ptr)
    um.set_tensor_address("y", buf.ptr)
    assert not um.execute_async_v3(dev.stream) and "without device memory" in trt.errors[-1]
    rt.cudaSetDevice(1)
    assert e.create_execution_context() is None and "device 0" in trt.errors[-1]
    assert not ctx.execute_async_v3(dev.stream) and "current device is 1" in trt.errors[-1]
    rt.cudaSetDevice(0)
    np.testing.assert_array_equal(run_affine(runner, dev, np.zeros((2, 4), np.float32)), 1.0)
    dev.close()


def test_static_contexts_hold_their_own_activation_memory(rt, monkeypatch, tmp_path):
    install(monkeypatch, rt)
    dev = tcuda.CudaDevice(0)
    runner = affine_runner(tmp_path, dev)
    before = rt.live_device_bytes()
    contexts = [runner.engine.create_execution_context() for _ in range(3)]
    assert rt.live_device_bytes() == before + 3 * runner.engine._memory
    del contexts
    assert rt.live_device_bytes() == before
    dev.close()

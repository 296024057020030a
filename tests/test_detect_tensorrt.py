"""OnnxDetector's runtimes: graph metadata from the ONNX file, and the TensorRT runtime.

Without TensorRT / a GPU (as here) the TensorRT runtime's own code -- engine build and cache,
buffers, binding, upload / enqueue / download -- runs against simulated ``tensorrt`` and cuda-python
modules (tests/trt_sim.py) whose engines execute the ONNX file with ONNX Runtime, and must give
the onnxruntime runtime's detections (the simulation's streams, devices and engines are strict:
see tests/trt_sim.py). Profiles, build modes, cache keys and errors are pure and
tested directly. The test with the real TensorRT is at the end; it skips without TensorRT + GPU.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import instcolor.trt.cuda as tcuda  # noqa: E402
import instcolor.trt.engine as tengine  # noqa: E402
from instcolor.detect import OnnxDetector, box_iou, load_detector  # noqa: E402
from instcolor.detect.onnx_detector import graph_io  # noqa: E402
from instcolor.detect.tensorrt_runner import (EXPORT_FORMAT, SEGMENT, TensorRTDetectorRunner,  # noqa: E402
                                              detector_build_mode, detector_cache_key, file_sha256, fixed_profile,
                                              parse_cuda_device, tensorrt_unavailable_reason)
from instcolor.trt.cache import engine_cache_key, engine_path  # noqa: E402
from trt_sim import SimCudart, sim_tensorrt  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared"
YOLOX = SHARED / "models" / "yolox_nano_coco_416.onnx"
GOLDEN = SHARED / "golden"
PHOTOS = ("v01_s64_nobox_photoA", "v03_s64_3box_photoB")
NEEDS_YOLOX = pytest.mark.skipif(not YOLOX.is_file() or not GOLDEN.is_dir(),
                                 reason=f"real detector / golden photos not found ({YOLOX}, {GOLDEN}: "
                                        f"../shared beside the checkout)")
TRT_REASON = tensorrt_unavailable_reason(0)
NEEDS_TRT = pytest.mark.skipif(bool(TRT_REASON), reason=f"needs TensorRT and a GPU: {TRT_REASON}")
NO_TRT = pytest.mark.skipif(not TRT_REASON, reason="TensorRT and a GPU are here; this checks the error without them")


# ------------------------------------------------------------------------------- graphs


def save_graph(path: Path, nodes, input_shape, outputs, inputs=(), initializers=()) -> Path:
    """An opset-13 model: float input ``images`` (+ ``inputs``), ``outputs`` value infos."""
    inp = helper.make_tensor_value_info("images", TensorProto.FLOAT, input_shape)
    graph = helper.make_graph(nodes, "synthetic", [inp, *inputs], outputs, initializer=list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def zero_nodes():
    """Scalar zeros ``zf`` (float) and ``zi`` (int64) computed from the input."""
    return [helper.make_node("ReduceMean", ["images"], ["mean"], keepdims=0),
            helper.make_node("Constant", [], ["zero"], value=numpy_helper.from_array(np.array(0, np.float32))),
            helper.make_node("Mul", ["mean", "zero"], ["zf"]),
            helper.make_node("Cast", ["zf"], ["zi"], to=TensorProto.INT64)]


def const_graph(path: Path, input_shape, outs: dict, declared: dict | None = None) -> Path:
    """Outputs = the constant arrays ``outs`` (+ a zero from the input); ``declared`` shapes override."""
    declared, nodes, infos = declared or {}, zero_nodes(), []
    for name, arr in outs.items():
        arr = np.asarray(arr)
        nodes.append(helper.make_node("Constant", [], [name + "_c"], value=numpy_helper.from_array(arr)))
        nodes.append(helper.make_node("Add", [name + "_c", "zi" if arr.dtype == np.int64 else "zf"], [name]))
        elem = TensorProto.INT64 if arr.dtype == np.int64 else TensorProto.FLOAT
        infos.append(helper.make_tensor_value_info(name, elem, declared.get(name, list(arr.shape))))
    return save_graph(path, nodes, input_shape, infos)


TV_BOXES = np.array([[10, 10, 30, 40], [12, 10, 32, 40], [0, 0, 96, 64], [50, 50, 60, 60]], np.float32)
TV_LABELS = np.array([1, 3, 0, 2], np.int64)
TV_SCORES = np.array([0.95, 0.85, 0.5, 0.1], np.float32)


def yolox_rows() -> np.ndarray:
    """(1, 336, 85) raw YOLOX rows for a 128x128 input: a person, a car, a bus at the border."""
    out = np.zeros((1, 336, 85), np.float32)
    out[0, 5 * 16 + 3, [0, 1, 2, 3, 4, 5]] = [0.5, 0.5, np.log(4), np.log(8), 0.9, 0.9]  # person, stride 8
    out[0, 256 + 8 + 1, [2, 3, 4, 5 + 2]] = [np.log(2), np.log(2), 0.8, 1.0]              # car, stride 16
    out[0, 320 + 15, [0, 1, 2, 3, 4, 5 + 5]] = [0.5, 0.5, np.log(2), np.log(2), 0.7, 1.0]  # bus, clipped
    return out


def nms_inside_graph(path: Path) -> Path:
    """torchvision-style outputs whose length depends on the data (NonZero on the scores)."""
    c = lambda name, arr: helper.make_node("Constant", [], [name], value=numpy_helper.from_array(arr))  # noqa: E731
    nodes = zero_nodes() + [
        c("boxes_c", TV_BOXES), c("labels_c", TV_LABELS), c("scores_c", TV_SCORES),
        c("thr", np.array(0.3, np.float32)), c("flat", np.array([-1], np.int64)),
        helper.make_node("Add", ["scores_c", "zf"], ["s"]),
        helper.make_node("Greater", ["s", "thr"], ["keep"]),
        helper.make_node("NonZero", ["keep"], ["nz"]),
        helper.make_node("Reshape", ["nz", "flat"], ["idx"]),
        helper.make_node("Gather", ["boxes_c", "idx"], ["boxes"], axis=0),
        helper.make_node("Gather", ["labels_c", "idx"], ["labels"], axis=0),
        helper.make_node("Gather", ["s", "idx"], ["scores"], axis=0),
    ]
    outs = [helper.make_tensor_value_info("boxes", TensorProto.FLOAT, ["K", 4]),
            helper.make_tensor_value_info("labels", TensorProto.INT64, ["K"]),
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["K"])]
    return save_graph(path, nodes, [1, 3, 64, 96], outs)


@pytest.fixture(scope="module")
def graphs(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("graphs")
    tv = {"boxes": TV_BOXES, "labels": TV_LABELS, "scores": TV_SCORES}
    rows = np.zeros((1, 84, 336), np.float32)
    rows[0, :4, 0], rows[0, 4, 0] = [30, 35, 40, 50], 0.9
    weight = numpy_helper.from_array(np.ones(1, np.float32), "w")
    with_weight_input = save_graph(  # an initializer also listed as a graph input (older exporters)
        d / "weight_input.onnx", zero_nodes() + [helper.make_node("Add", ["zf", "w"], ["output"])], [1, 3, 8, 8],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1])],
        inputs=[helper.make_tensor_value_info("w", TensorProto.FLOAT, [1])], initializers=[weight])
    return {
        "yolox": const_graph(d / "yolox.onnx", [1, 3, 128, 128], {"output": yolox_rows()}),
        "yolox_unbatched": const_graph(d / "yolox3.onnx", [3, 128, 128], {"output": yolox_rows()}),
        "yolov8_dynamic": const_graph(d / "v8.onnx", [1, 3, "h", "w"], {"output0": rows},
                                      declared={"output0": [1, 84, "anchors"]}),
        "tv_static": const_graph(d / "tv.onnx", [1, 3, 64, 96], tv,
                                 declared={n: ["N", 4] if a.ndim == 2 else ["N"] for n, a in tv.items()}),
        "tv_dynamic": const_graph(d / "tvdyn.onnx", [3, "h", "w"], tv),
        "tv_nms": nms_inside_graph(d / "tvnms.onnx"),
        "weight_input": with_weight_input,
    }


def ort_io(path) -> tuple[list, list]:
    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return ([(i.name, i.type, list(i.shape)) for i in s.get_inputs()],
            [(o.name, o.type, list(o.shape)) for o in s.get_outputs()])


def golden_image(name: str) -> np.ndarray:
    with np.load(GOLDEN / f"{name}.npz") as z:
        return z["image"]


def assert_same_detections(got, want, atol=1e-4):
    assert got.labels.tolist() == want.labels.tolist()
    np.testing.assert_allclose(got.boxes, want.boxes, rtol=0, atol=atol)
    np.testing.assert_allclose(got.scores, want.scores, rtol=0, atol=atol)


# ------------------------------------------------------------------------------- metadata from the file


@pytest.mark.parametrize("name", ["yolox", "yolox_unbatched", "yolov8_dynamic", "tv_static", "tv_dynamic",
                                  "tv_nms", "weight_input"])
def test_graph_io_matches_onnxruntime(graphs, name):
    inputs, outputs = graph_io(graphs[name])
    assert ([tuple(t) for t in inputs], [tuple(t) for t in outputs]) == ort_io(graphs[name])
    if name == "weight_input":
        assert [t.name for t in inputs] == ["images"]  # the initializer "w" is no input


@NEEDS_YOLOX
def test_graph_io_matches_onnxruntime_yolox_nano():
    inputs, outputs = graph_io(YOLOX)
    assert ([tuple(t) for t in inputs], [tuple(t) for t in outputs]) == ort_io(YOLOX)
    assert [tuple(t) for t in outputs] == [("output", "tensor(float)", [1, 3549, 85])]


def test_graph_io_unreadable(tmp_path):
    bad = tmp_path / "garbage.onnx"
    bad.write_bytes(b"this is not an onnx model")
    with pytest.raises(ValueError, match="garbage.onnx"):
        graph_io(bad)
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="empty.onnx"):
        OnnxDetector(empty)


def test_nms_graph_runs_with_onnxruntime(graphs):
    det = OnnxDetector(graphs["tv_nms"], grey=False, score_threshold=0.0)
    assert det.output_format == "torchvision" and det.runtime == "onnxruntime"
    out = det(np.zeros((64, 96, 3), np.uint8))
    assert out.labels.tolist() == [1, 3, 0]


def test_load_detector_passes_options(graphs):
    det = load_detector(graphs["yolox"], top_k=2, runtime="onnxruntime")
    assert isinstance(det, OnnxDetector) and det.top_k == 2
    assert load_detector(None, runtime="tensorrt") is None
    with pytest.raises(ValueError, match="callable"):
        load_detector(lambda img: None, top_k=2)


# ------------------------------------------------------------------------------- TensorRT: pure parts


@NEEDS_YOLOX
def test_tensorrt_profile_of_yolox_nano():
    det = OnnxDetector(YOLOX)
    assert det.tensorrt_input_shape() == (1, 3, 416, 416)
    assert fixed_profile("images", det.tensorrt_input_shape()) == {"images": ((1, 3, 416, 416),) * 3}


def test_tensorrt_profile_of_synthetic_graphs(graphs):
    assert OnnxDetector(graphs["yolox_unbatched"]).tensorrt_input_shape() == (3, 128, 128)
    assert OnnxDetector(graphs["yolov8_dynamic"]).tensorrt_input_shape() == (1, 3, 640, 640)
    assert OnnxDetector(graphs["yolov8_dynamic"], input_size=(96, 128)).tensorrt_input_shape() == (1, 3, 96, 128)
    assert OnnxDetector(graphs["tv_static"]).tensorrt_input_shape() == (1, 3, 64, 96)
    assert OnnxDetector(graphs["tv_dynamic"], input_size=48).tensorrt_input_shape() == (3, 48, 48)
    with pytest.raises(ValueError, match="fixed positive shape"):
        fixed_profile("images", (1, 3, -1, 416))


def test_build_modes():
    f32, f16 = np.float32, np.float16
    assert detector_build_mode("fp32", f32, "10.3.0", True) == "fp32"
    assert detector_build_mode("fp32", f32, "11.0.0", False) == "fp32"
    assert detector_build_mode("fp16", f32, "10.3.0.30", True) == "fp16-flag"
    assert detector_build_mode("fp16", f16, "10.3.0", True) == "fp16-strong"
    assert detector_build_mode("fp16", f16, "11.1.0", False) == "fp16-strong"
    with pytest.raises(ValueError, match="fp16 ONNX graph"):
        detector_build_mode("fp16", f32, "11.0.0", False)
    with pytest.raises(ValueError, match="float16"):
        detector_build_mode("fp32", f16, "10.3.0", True)
    with pytest.raises(ValueError, match="precision"):
        detector_build_mode("int8", f32, "10.3.0", True)


@NEEDS_YOLOX
def test_cache_key_of_yolox_nano(tmp_path):
    sha = file_sha256(YOLOX)
    prof = fixed_profile("images", (1, 3, 416, 416))
    base = dict(onnx_sha256=sha, mode=detector_build_mode("fp32", np.float32, "10.3.0", True), trt_version="10.3.0",
                gpu_name="Orin", compute_capability=(8, 7), profile=prof)
    key = detector_cache_key(**base)
    assert key == engine_cache_key(weights_sha256=sha, segment=SEGMENT, mode="fp32", trt_version="10.3.0",
                                   gpu_name="Orin", compute_capability=(8, 7), profile=prof,
                                   export_format=EXPORT_FORMAT, extra={"workspace_bytes": None, "tf32": False})
    changed = tmp_path / "changed.onnx"
    data = bytearray(YOLOX.read_bytes())
    data[-1] ^= 1
    changed.write_bytes(bytes(data))
    variants = dict(onnx_sha256=file_sha256(changed),
                    mode=detector_build_mode("fp16", np.float32, "10.3.0", True),
                    trt_version="10.4.0", gpu_name="NVIDIA H100", compute_capability=(9, 0),
                    profile=fixed_profile("images", (1, 3, 640, 640)), workspace_bytes=1 << 28)
    keys = {key} | {detector_cache_key(**dict(base, **{k: v})) for k, v in variants.items()}
    assert len(keys) == len(variants) + 1 and detector_cache_key(**base) == key


def test_tensorrt_argument_errors(graphs):
    with pytest.raises(ValueError, match=r"runtime must be one of \('onnxruntime', 'tensorrt'\), got 'tensorflow'"):
        OnnxDetector(graphs["yolox"], runtime="tensorflow")
    with pytest.raises(ValueError, match="needs runtime='tensorrt'"):
        OnnxDetector(graphs["yolox"], precision="fp16")
    with pytest.raises(ValueError, match="precision"):
        OnnxDetector(graphs["yolox"], runtime="tensorrt", precision="int8")
    with pytest.raises(ValueError, match=r"tvdyn\.onnx.*dynamic size.*input_size"):
        OnnxDetector(graphs["tv_dynamic"], runtime="tensorrt")
    with pytest.raises(ValueError, match=r"tvnms\.onnx.*only fixed-shape outputs.*boxes"):
        OnnxDetector(graphs["tv_nms"], runtime="tensorrt")
    with pytest.raises(ValueError, match="CUDA device"):
        OnnxDetector(graphs["yolox"], runtime="tensorrt", device="cpu")
    assert parse_cuda_device("cuda") == 0 and parse_cuda_device("cuda:1") == 1 and parse_cuda_device(2) == 2
    det = OnnxDetector(graphs["yolox"])
    det.runner = object()  # as with TensorRT: no session to replace
    with pytest.raises(AttributeError, match="no ONNX Runtime session"):
        det.session = None


@NO_TRT
@NEEDS_YOLOX
def test_tensorrt_unavailable_says_why():
    with pytest.raises(ValueError) as e:
        OnnxDetector(YOLOX, runtime="tensorrt")
    msg = str(e.value)
    assert msg == TRT_REASON and "\n" not in msg and "runtime='tensorrt'" in msg
    assert "tensorrt" in msg.split("needs", 1)[1] or "CUDA" in msg


# ------------------------------------------------------------------------------- TensorRT: simulated


@pytest.fixture
def sim(monkeypatch):
    """Simulated cuda-python (one 'Sim GPU', compute 8.7) and TensorRT 10.3 with BuilderFlag.FP16."""
    rt = SimCudart()
    trt = sim_tensorrt(rt)
    monkeypatch.setattr(tcuda, "cudart", lambda: rt)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr(tengine._Logger, "instance", None)
    return rt, trt


def sim_device(kind: str):
    """'cuda': the runner makes (and closes) its device; 'object': a device object passed in (kept open)."""
    return "cuda:0" if kind == "cuda" else tcuda.CudaDevice(0)


@NEEDS_YOLOX
@pytest.mark.parametrize("kind", ["cuda", "object"])
def test_yolox_nano_tensorrt_simulated_matches_onnxruntime(sim, tmp_path, kind):
    """The TensorRT runtime's build / cache / buffers / binding / copies, with engines that run the
    ONNX file on the bound memory: the detections equal the onnxruntime runtime's."""
    rt, trt = sim
    cache = tmp_path / "engines"
    want = OnnxDetector(YOLOX)
    det = OnnxDetector(YOLOX, runtime="tensorrt", device=sim_device(kind), cache_root=cache)
    assert det.runtime == "tensorrt" and det.session is None and det.input_size == (416, 416)
    for name in PHOTOS:
        img = golden_image(name)
        got = det(img)
        assert len(got.boxes) > 0
        assert_same_detections(got, want(img))
    # one engine, built for the fixed profile, cached under the detector's key
    assert len(trt.builds) == 1 and trt.builds[0]["profile"] == {"images": [[1, 3, 416, 416]] * 3}
    assert not trt.builds[0]["fp16"] and not trt.builds[0]["strongly_typed"] and not trt.builds[0]["tf32"]
    prof = fixed_profile("images", (1, 3, 416, 416))
    key = detector_cache_key(file_sha256(YOLOX), "fp32", "10.3.0", "Sim GPU", (8, 7), prof)
    assert det.runner.key == key and engine_path(cache, SEGMENT, key).is_file()
    # buffers: allocated once, input + output + the context's activation memory, reused by every call
    runner = det.runner
    assert runner.outputs["output"].shape == (1, 3549, 85)
    io_bytes = (3 * 416 * 416 + 3549 * 85) * 4 + runner.engine_runner.memory_size
    assert runner.engine_runner.memory_size > 0 and runner.device.allocated == io_bytes
    if kind == "cuda":
        assert rt.device_bytes == io_bytes
    # a second detector loads the cached engine
    again = OnnxDetector(YOLOX, runtime="tensorrt", device=sim_device(kind), cache_root=cache)
    assert len(trt.builds) == 1
    assert_same_detections(again(golden_image(PHOTOS[0])), want(golden_image(PHOTOS[0])))
    det.close()
    again.close()
    if kind == "object":
        assert rt.mem  # a passed device stays open
        det.runner.device.close()
        again.runner.device.close()
    assert not rt.mem  # device and pinned memory freed


@NEEDS_YOLOX
def test_yolox_nano_tensorrt_simulated_fp16_modes(sim, tmp_path, monkeypatch):
    rt, trt = sim
    det = OnnxDetector(YOLOX, runtime="tensorrt", precision="fp16", cache_root=tmp_path)
    assert det.runner.mode == "fp16-flag" and trt.builds[-1]["fp16"]
    fp32 = OnnxDetector(YOLOX, runtime="tensorrt", cache_root=tmp_path)
    assert fp32.runner.key != det.runner.key and len(trt.builds) == 2
    monkeypatch.setitem(sys.modules, "tensorrt", sim_tensorrt(rt, version="11.0.0", fp16_flag=False))
    with pytest.raises(ValueError, match="fp16 ONNX graph"):
        OnnxDetector(YOLOX, runtime="tensorrt", precision="fp16", cache_root=tmp_path)


@pytest.mark.parametrize("name, kwargs", [("yolox", {}), ("yolox_unbatched", {}), ("tv_static", {}),
                                          ("tv_static", dict(coco91_labels=True)),
                                          ("tv_dynamic", dict(input_size=(64, 96)))])
def test_synthetic_graphs_tensorrt_simulated(sim, graphs, tmp_path, name, kwargs):
    """Every output format through the TensorRT runtime (int64 labels included) = onnxruntime."""
    img = np.zeros((96, 160, 3), np.uint8)
    want = OnnxDetector(graphs[name], score_threshold=0.0, grey=False, **kwargs)(img)
    det = OnnxDetector(graphs[name], score_threshold=0.0, grey=False, runtime="tensorrt",
                       device="cuda:0", cache_root=tmp_path, **kwargs)
    got = det(img)
    assert len(got.boxes) > 0
    assert_same_detections(got, want, atol=0)


def test_runner_rejects_data_dependent_outputs_and_bad_feeds(sim, graphs, tmp_path):
    """Outputs the engine reports with -1 dims are refused; feeds must match the fixed input."""
    with pytest.raises(ValueError, match=r"only fixed-shape outputs.*boxes \[-1, 4\]"):
        TensorRTDetectorRunner(graphs["tv_nms"], "images", (1, 3, 64, 96), ["boxes", "labels", "scores"],
                               device="cuda:0", cache_root=tmp_path)
    runner = TensorRTDetectorRunner(graphs["yolox"], "images", (1, 3, 128, 128), ["output"],
                                    device="cuda:0", cache_root=tmp_path)
    (out,) = runner.run({"images": np.zeros((1, 3, 128, 128), np.float32)})
    np.testing.assert_array_equal(out, yolox_rows())
    with pytest.raises(ValueError, match=r"\(1, 3, 128, 128\)"):
        runner.run({"images": np.zeros((1, 3, 64, 64), np.float32)})
    with pytest.raises(ValueError, match="expected the input 'images'"):
        runner.run({"x": np.zeros((1, 3, 128, 128), np.float32)})


# ------------------------------------------------------------------------------- real TensorRT (skips here)


@NEEDS_TRT
@NEEDS_YOLOX
def test_yolox_nano_tensorrt_matches_onnxruntime(tmp_path):
    cache = tmp_path / "engines"
    want = OnnxDetector(YOLOX)
    det = OnnxDetector(YOLOX, runtime="tensorrt", cache_root=cache)
    for name in PHOTOS:
        img = golden_image(name)
        got, ref = det(img), want(img)
        assert got.labels.tolist() == ref.labels.tolist(), name
        np.testing.assert_allclose(got.boxes, ref.boxes, rtol=0, atol=1.0)
        np.testing.assert_allclose(got.scores, ref.scores, rtol=0, atol=1e-2)
    engines = sorted(cache.glob("*.engine"))
    assert len(engines) == 1
    stamp = engines[0].stat().st_mtime_ns
    det.close()
    again = OnnxDetector(YOLOX, runtime="tensorrt", cache_root=cache)  # from the cache
    img = golden_image(PHOTOS[0])
    np.testing.assert_allclose(again(img).boxes, want(img).boxes, rtol=0, atol=1.0)
    assert engines[0].stat().st_mtime_ns == stamp
    again.close()


@NEEDS_TRT
@NEEDS_YOLOX
def test_yolox_nano_tensorrt_fp16_agrees(tmp_path):
    import tensorrt as trt

    try:
        detector_build_mode("fp16", np.float32, trt.__version__, hasattr(trt.BuilderFlag, "FP16"))
    except ValueError as e:
        pytest.skip(f"fp16 engines of an fp32 graph need TensorRT 10's FP16 flag: {e}")
    det = OnnxDetector(YOLOX, runtime="tensorrt", precision="fp16", cache_root=tmp_path)
    img = golden_image(PHOTOS[0])
    got, ref = det(img), OnnxDetector(YOLOX)(img)
    assert got.labels[0] == ref.labels[0] and box_iou(got.boxes[:1], ref.boxes[:1])[0, 0] > 0.9
    det.close()

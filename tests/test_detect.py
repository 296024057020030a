"""Detector adapters: NMS, COCO names, OnnxDetector (real YOLOX-Nano + synthetic graphs), load_detector."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from instcolor.detect import (COCO_CLASSES, Detections, OnnxDetector, TorchvisionMaskRCNN,  # noqa: E402
                              batched_nms, box_iou, coco91_to_80, load_detector, nms)
from instcolor.detect.onnx_detector import letterbox, lightness_grey  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared"
YOLOX = SHARED / "models" / "yolox_nano_coco_416.onnx"
GOLDEN = SHARED / "golden"
NEEDS_YOLOX = pytest.mark.skipif(not YOLOX.is_file() or not GOLDEN.is_dir(),
                                 reason=f"real detector / golden photos not found ({YOLOX}, {GOLDEN}: "
                                        f"../shared beside the checkout)")


# ------------------------------------------------------------------------------- graph builders


def _save(path: Path, nodes, input_shape, outputs, name="synthetic"):
    """Write an opset-13 model with one float input ``images`` and the given output value infos."""
    inp = helper.make_tensor_value_info("images", TensorProto.FLOAT, input_shape)
    graph = helper.make_graph(nodes, name, [inp], outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _zero_nodes():
    """Nodes making scalar zeros ``zf`` (float) and ``zi`` (int64) that consume the input."""
    return [
        helper.make_node("ReduceMean", ["images"], ["mean"], keepdims=0),
        helper.make_node("Constant", [], ["zero"], value=numpy_helper.from_array(np.array(0, np.float32))),
        helper.make_node("Mul", ["mean", "zero"], ["zf"]),
        helper.make_node("Cast", ["zf"], ["zi"], to=TensorProto.INT64),
    ]


def const_graph(path: Path, input_shape, outs: dict, declared: dict | None = None):
    """A graph whose outputs are the constant arrays ``outs`` (name -> array), each plus a zero
    computed from the input. ``declared`` overrides an output's declared shape (e.g. symbolic)."""
    declared = declared or {}
    nodes = _zero_nodes()
    infos = []
    for name, arr in outs.items():
        arr = np.asarray(arr)
        nodes.append(helper.make_node("Constant", [], [name + "_c"], value=numpy_helper.from_array(arr)))
        nodes.append(helper.make_node("Add", [name + "_c", "zi" if arr.dtype == np.int64 else "zf"], [name]))
        elem = TensorProto.INT64 if arr.dtype == np.int64 else TensorProto.FLOAT
        infos.append(helper.make_tensor_value_info(name, elem, declared.get(name, list(arr.shape))))
    return _save(path, nodes, input_shape, infos)


class Recorder:
    """Stands in for an InferenceSession and keeps the last input it was fed."""

    def __init__(self, session):
        self.session, self.feed = session, None

    def run(self, names, feed):
        self.feed = dict(feed)
        return self.session.run(names, feed)

    def __getattr__(self, name):
        return getattr(self.session, name)


def recorded(det: OnnxDetector) -> Recorder:
    det.session = Recorder(det.session)
    return det.session


def rows_of(det: Detections):
    return [(int(l), round(float(s), 4), [round(float(v), 3) for v in b])
            for l, s, b in zip(det.labels, det.scores, det.boxes)]


def check_detections(det: Detections, hw):
    """Invariants of every detector output."""
    n = len(det.boxes)
    assert det.boxes.dtype == np.float32 and det.boxes.shape == (n, 4)
    assert det.scores.dtype == np.float32 and det.scores.shape == (n,)
    assert det.labels.dtype == np.int64 and det.labels.shape == (n,)
    assert np.all(np.diff(det.scores) <= 0), "not sorted by descending score"
    H, W = hw
    b = det.boxes
    assert np.all(b[:, 0] >= 0) and np.all(b[:, 1] >= 0) and np.all(b[:, 2] <= W) and np.all(b[:, 3] <= H)
    assert np.all(b[:, 2] > b[:, 0]) and np.all(b[:, 3] > b[:, 1])


# ------------------------------------------------------------------------------- NMS, COCO


def test_nms_empty():
    assert nms(np.zeros((0, 4)), np.zeros(0)).shape == (0,)
    k = batched_nms(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64), 0.5)
    assert k.dtype == np.int64 and k.shape == (0,)
    assert box_iou(np.zeros((0, 4)), np.zeros((2, 4))).shape == (0, 2)


def test_nms_suppresses_and_orders():
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [20, 20, 30, 30], [0, 0, 10, 10.5]], np.float32)
    scores = np.array([0.5, 0.9, 0.7, 0.4], np.float32)
    assert nms(boxes, scores, 0.5).tolist() == [1, 2]
    # IoU(1, 0) = 0.818, IoU(1, 3) = 0.783, IoU(0, 3) = 0.952
    assert nms(boxes, scores, 0.9).tolist() == [1, 2, 0]
    assert nms(boxes, scores, 0.96).tolist() == [1, 2, 0, 3]


def test_nms_iou_boundary_and_ties():
    # IoU exactly 0.5: suppressed only when IoU > threshold
    boxes = np.array([[0, 0, 3, 1], [1, 0, 4, 1]], np.float32)
    assert box_iou(boxes[:1], boxes[1:])[0, 0] == pytest.approx(0.5)
    assert nms(boxes, np.array([1.0, 0.5]), 0.5).tolist() == [0, 1]
    assert nms(boxes, np.array([1.0, 0.5]), 0.49).tolist() == [0]
    # equal scores keep the input order
    far = np.array([[0, 0, 1, 1], [5, 5, 6, 6], [9, 9, 10, 10]], np.float32)
    assert nms(far, np.ones(3), 0.5).tolist() == [0, 1, 2]


def test_batched_nms_class_aware():
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [1, 1, 10, 10], [50, 50, 60, 60]], np.float32)
    scores = np.array([0.9, 0.8, 0.7, 0.95], np.float32)
    labels = np.array([0, 1, 0, 0])
    # the same box with another class survives; the same class is suppressed
    assert batched_nms(boxes, scores, labels, 0.45).tolist() == [3, 0, 1]
    assert batched_nms(boxes, scores, None, 0.45).tolist() == [3, 0]
    with pytest.raises(ValueError):
        batched_nms(boxes, scores, labels[:2], 0.45)


def test_box_iou_values():
    a = np.array([[0, 0, 2, 2]], np.float32)
    b = np.array([[1, 1, 3, 3], [2, 2, 4, 4], [0, 0, 2, 2], [5, 5, 5, 5]], np.float32)
    np.testing.assert_allclose(box_iou(a, b)[0], [1 / 7, 0, 1, 0])


def test_coco_names_and_ids():
    assert len(COCO_CLASSES) == 80 and COCO_CLASSES[0] == "person" and COCO_CLASSES[1] == "bicycle"
    assert COCO_CLASSES[79] == "toothbrush" and COCO_CLASSES[62] == "tv"
    got = coco91_to_80(np.array([0, 1, 2, 12, 13, 27, 90, 91, -3]))
    assert got.tolist() == [-1, 0, 1, -1, 11, 24, 79, -1, -1]  # 13 = stop sign, 27 = backpack


# ------------------------------------------------------------------------------- pre-processing


def test_letterbox_top_left():
    img = np.full((192, 256, 3), 7, np.uint8)
    canvas, r = letterbox(img, (128, 128))
    assert r == 0.5 and canvas.shape == (128, 128, 3)
    assert np.all(canvas[:96] == 7) and np.all(canvas[96:] == 114)
    small = np.full((10, 20, 3), 9, np.uint8)  # upscaled
    canvas, r = letterbox(small, (128, 128))
    assert r == 6.4 and np.all(canvas[:64] == 9) and np.all(canvas[64:] == 114)


def _srgb_to_L(v: np.ndarray) -> np.ndarray:
    """Independent CIE L* (0..100) of grey sRGB values 0..255."""
    c = v / 255.0
    lin = np.where(c > 0.04045, ((c + 0.055) / 1.055) ** 2.4, c / 12.92)
    y = lin * (0.212671 + 0.715160 + 0.072169)
    f = np.where(y > 0.008856, np.cbrt(y), 7.787 * y + 16 / 116)
    return 116 * f - 16


def test_lightness_grey():
    v = np.arange(256, dtype=np.uint8)
    img = np.repeat(np.repeat(v[None, :, None], 2, axis=0), 3, axis=2)
    g = lightness_grey(img)
    assert g.shape == img.shape and g.dtype == np.uint8
    assert np.array_equal(g[..., 0], g[..., 1]) and np.array_equal(g[..., 0], g[..., 2])
    want = np.rint(_srgb_to_L(v.astype(np.float64)) * 2.55)
    assert np.abs(g[0, :, 0].astype(int) - want).max() <= 1
    assert g[0, 0, 0] == 0 and g[0, 255, 0] == 255 and g[0, 128, 0] == 137
    # colour: L of pure red is 53.24 -> 136
    red = np.zeros((1, 1, 3), np.uint8)
    red[..., 0] = 255
    assert abs(int(lightness_grey(red)[0, 0, 0]) - 136) <= 1


# ------------------------------------------------------------------------------- synthetic YOLOX


def _yolox_rows(nc=80):
    """Raw (1, 336, 5 + nc) rows for a 128x128 input (grids 16x16, 8x8, 4x4)."""
    out = np.zeros((1, 336, 5 + nc), np.float32)

    def put(stride, gx, gy, t, obj, cls, p):
        off = {8: 0, 16: 256, 32: 320}[stride]
        n = 128 // stride
        row = out[0, off + gy * n + gx]
        row[:4] = t
        row[4] = obj
        row[5 + cls] = p

    put(8, 3, 5, [0.5, 0.5, math.log(4), math.log(8)], 0.9, 0, 0.9)    # person .81, input [12,12,44,76]
    put(8, 4, 5, [0.5, 0.5, math.log(4), math.log(8)], 0.9, 0, 0.8)    # person .72 [20,12,52,76] IoU .6: suppressed
    put(8, 5, 5, [-0.5, 0.5, math.log(4), math.log(8)], 0.9, 14, 0.7)  # bird .63, same box: other class, kept
    put(16, 1, 1, [0, 0, math.log(2), math.log(2)], 0.8, 2, 1.0)       # car .8 [0,0,32,32]
    put(32, 1, 0, [0.5, 0.5, 0, 0], 0.5, 1, 0.5)                       # bicycle .25 [32,0,64,32]
    put(32, 3, 3, [0.5, 0.5, math.log(2), math.log(2)], 0.7, 5, 1.0)   # bus .7 [80,80,144,144]: clipped
    put(16, 2, 7, [0.5, 0.5, 0, 0], 0.95, 7, 1.0)                      # truck .95 [32,112,48,128]: in the pad
    return out


@pytest.fixture(scope="module")
def yolox_graph(tmp_path_factory):
    return const_graph(tmp_path_factory.mktemp("yolox") / "yolox.onnx", [1, 3, 128, 128], {"output": _yolox_rows()})


def test_synthetic_yolox_decode(yolox_graph):
    det = OnnxDetector(yolox_graph, grey=False)
    assert det.output_format == "yolox" and det.input_size == (128, 128) and det.names == COCO_CLASSES
    img = np.zeros((192, 256, 3), np.uint8)  # r = 0.5: original = input * 2
    out = det(img)
    check_detections(out, (192, 256))
    assert [r[0] for r in rows_of(out)] == [0, 2, 5, 14]
    np.testing.assert_allclose(out.scores, [0.81, 0.8, 0.7, 0.63], rtol=1e-5)
    np.testing.assert_allclose(out.boxes, [[24, 24, 88, 152], [0, 0, 64, 64], [160, 160, 256, 192],
                                           [40, 24, 104, 152]], atol=1e-3)
    assert det.label_names(out.labels) == ["person", "car", "bus", "bird"]


def test_synthetic_yolox_options(yolox_graph):
    img = np.zeros((192, 256, 3), np.uint8)
    assert OnnxDetector(yolox_graph, top_k=2)(img).labels.tolist() == [0, 2]
    assert OnnxDetector(yolox_graph, classes=["car", 14])(img).labels.tolist() == [2, 14]
    assert OnnxDetector(yolox_graph, classes=0)(img).labels.tolist() == [0]
    low = OnnxDetector(yolox_graph, score_threshold=0.2, top_k=None)(img)
    assert low.labels.tolist() == [0, 2, 5, 14, 1]
    np.testing.assert_allclose(low.boxes[-1], [64, 0, 128, 64], atol=1e-3)
    no_nms = OnnxDetector(yolox_graph, nms_iou=None, top_k=None)(img)
    assert no_nms.labels.tolist() == [0, 2, 0, 5, 14]
    assert len(OnnxDetector(yolox_graph, score_threshold=0.99)(img).boxes) == 0


def test_synthetic_yolox_input_is_bgr_0_255_letterbox(yolox_graph):
    det = OnnxDetector(yolox_graph, grey=False)
    rec = recorded(det)
    img = np.zeros((64, 128, 3), np.uint8)  # r = 1: no resampling
    img[..., 0], img[..., 1], img[..., 2] = 200, 100, 10
    det(img)
    x = rec.feed["images"]
    assert x.shape == (1, 3, 128, 128) and x.dtype == np.float32
    assert np.all(x[0, :, :64] == np.array([10, 100, 200], np.float32)[:, None, None])  # BGR, 0..255
    assert np.all(x[0, :, 64:] == 114)
    # grey (default): the lightness in all three channels
    det = OnnxDetector(yolox_graph)
    rec = recorded(det)
    det(img)
    x = rec.feed["images"]
    want = lightness_grey(img)[0, 0, 0]
    assert np.all(x[0, :, :64] == want) and np.all(x[0, :, 64:] == 114)


# ------------------------------------------------------------------------------- synthetic YOLOv8


def _v8_rows():
    """(336, 84) rows for a 128x128 input: cx, cy, w, h, 80 class scores."""
    rows = np.zeros((336, 84), np.float32)
    rows[0, :4], rows[0, 4 + 0] = [30, 35, 40, 50], 0.9    # person [10,10,50,60]
    rows[1, :4], rows[1, 4 + 0] = [32, 35, 40, 50], 0.6    # person [12,10,52,60]: suppressed
    rows[2, :4], rows[2, 4 + 16] = [32, 35, 40, 50], 0.7   # dog, same box: kept
    rows[3, :4], rows[3, 4 + 2] = [100, 20, 10, 10], 0.2   # car: below the threshold
    rows[4, :4], rows[4, 4 + 3] = [64, 55, 20, 20], 0.8    # motorcycle [54,45,74,65]: bottom clipped
    return rows


@pytest.mark.parametrize("layout", ["channels_first", "rows"])
def test_synthetic_yolov8(tmp_path, layout):
    rows = _v8_rows()
    arr = rows.T[None] if layout == "channels_first" else rows[None]
    path = const_graph(tmp_path / "v8.onnx", [1, 3, 128, 128], {"output0": np.ascontiguousarray(arr)})
    det = OnnxDetector(path, grey=False)
    assert det.output_format == "yolov8" and det.num_classes == 80
    rec = recorded(det)
    img = np.zeros((100, 200, 3), np.uint8)  # r = 0.64, content 128x64
    img[..., 0] = 255
    out = det(img)
    check_detections(out, (100, 200))
    assert out.labels.tolist() == [0, 3, 16]
    np.testing.assert_allclose(out.scores, [0.9, 0.8, 0.7], rtol=1e-6)
    np.testing.assert_allclose(out.boxes, np.array([[10, 10, 50, 60], [54, 45, 74, 100 * 0.64],
                                                    [12, 10, 52, 60]]) / 0.64, atol=1e-3)
    x = rec.feed["images"]  # RGB 0..1, top-left letterbox with pad 114
    assert np.all(x[0, 0, :64] == 1.0) and np.all(x[0, 1:, :64] == 0.0)
    np.testing.assert_allclose(x[0, :, 64:], 114 / 255, rtol=1e-6)
    assert OnnxDetector(path, classes=["dog"])(img).labels.tolist() == [16]
    assert OnnxDetector(path, top_k=1)(img).labels.tolist() == [0]
    assert OnnxDetector(path, score_threshold=0.1, top_k=None)(img).labels.tolist() == [0, 3, 16, 2]


def test_synthetic_yolov8_dynamic_input(tmp_path):
    """Dynamic input / anchor axis (Ultralytics dynamic export): format from the static class axis."""
    path = const_graph(tmp_path / "v8dyn.onnx", [1, 3, "h", "w"], {"output0": np.ascontiguousarray(_v8_rows().T[None])},
                       declared={"output0": [1, 84, "anchors"]})
    det = OnnxDetector(path, grey=False)
    assert det.output_format == "yolov8" and det.input_size == (640, 640) and det.num_classes == 80
    det = OnnxDetector(path, input_size=128, grey=False)
    rec = recorded(det)
    out = det(np.zeros((100, 200, 3), np.uint8))
    assert rec.feed["images"].shape == (1, 3, 128, 128)
    assert out.labels.tolist() == [0, 3, 16]


# ------------------------------------------------------------------------------- synthetic torchvision


TV_BOXES = np.array([[10, 10, 30, 40], [12, 10, 32, 40], [12, 10, 32, 40], [0, 0, 96, 64], [50, 50, 60, 60]],
                    np.float32)
TV_LABELS = np.array([1, 1, 3, 0, 2], np.int64)
TV_SCORES = np.array([0.95, 0.9, 0.85, 0.5, 0.1], np.float32)


@pytest.mark.parametrize("names", [("boxes", "labels", "scores"), ("scores", "boxes", "labels"),
                                   ("3001", "3002", "3003")])
def test_synthetic_torchvision_static(tmp_path, names):
    arrays = {"boxes": TV_BOXES, "labels": TV_LABELS, "scores": TV_SCORES}
    if names[0] == "3001":  # unnamed outputs: taken in the order boxes, labels, scores
        outs = dict(zip(names, arrays.values()))
    else:  # named: any order
        outs = {n: arrays[n] for n in names}
    path = const_graph(tmp_path / "tv.onnx", [1, 3, 64, 96], outs,
                       declared={n: ["N", 4] if a.ndim == 2 else ["N"] for n, a in outs.items()})
    det = OnnxDetector(path, grey=False)
    assert det.output_format == "torchvision" and det.input_size == (64, 96) and det.names is None
    rec = recorded(det)
    img = np.zeros((128, 144, 3), np.uint8)  # plain resize: x * 1.5, y * 2
    img[..., 1] = 255
    out = det(img)
    check_detections(out, (128, 144))
    assert out.labels.tolist() == [1, 3, 0]
    np.testing.assert_allclose(out.scores, [0.95, 0.85, 0.5])
    np.testing.assert_allclose(out.boxes, [[15, 20, 45, 80], [18, 20, 48, 80], [0, 0, 144, 128]])
    x = rec.feed["images"]  # RGB in 0..1 at the static size
    assert x.shape == (1, 3, 64, 96) and np.all(x[0, 1] == 1.0) and np.all(x[0, [0, 2]] == 0.0)


def test_synthetic_torchvision_coco91(tmp_path):
    path = const_graph(tmp_path / "tv.onnx", [1, 3, 64, 96],
                       {"boxes": TV_BOXES, "labels": TV_LABELS, "scores": TV_SCORES})
    det = OnnxDetector(path, coco91_labels=True, score_threshold=0.0)
    assert det.names == COCO_CLASSES
    out = det(np.zeros((64, 96, 3), np.uint8))
    # ids 1 -> person, 3 -> car, 2 -> bicycle; 0 (background) dropped
    assert out.labels.tolist() == [0, 2, 1] and det.label_names(out.labels) == ["person", "car", "bicycle"]
    assert OnnxDetector(path, coco91_labels=True, classes=["car"])(np.zeros((8, 8, 3), np.uint8)).labels.tolist() == [2]


def test_synthetic_torchvision_dynamic_native_size(tmp_path):
    """[3, h, w] input of any size: the image goes in at its own size, boxes come back unscaled."""
    nodes = _zero_nodes() + [
        helper.make_node("Shape", ["images"], ["shape"]),
        helper.make_node("Constant", [], ["idx"], value=numpy_helper.from_array(np.array([2, 1], np.int64))),
        helper.make_node("Gather", ["shape", "idx"], ["wh_i"], axis=0),
        helper.make_node("Cast", ["wh_i"], ["wh"], to=TensorProto.FLOAT),
        helper.make_node("Constant", [], ["origin"], value=numpy_helper.from_array(np.zeros(2, np.float32))),
        helper.make_node("Concat", ["origin", "wh"], ["full"], axis=0),  # [0, 0, w, h]
        helper.make_node("Constant", [], ["shape14"], value=numpy_helper.from_array(np.array([1, 4], np.int64))),
        helper.make_node("Reshape", ["full", "shape14"], ["full2"]),
        helper.make_node("Constant", [], ["other"],
                         value=numpy_helper.from_array(np.array([[1, 2, 5, 6]], np.float32))),
        helper.make_node("Concat", ["other", "full2"], ["boxes"], axis=0),
        helper.make_node("Constant", [], ["s"], value=numpy_helper.from_array(np.array([0.6, 0.9], np.float32))),
        helper.make_node("Add", ["s", "zf"], ["scores"]),
        helper.make_node("Constant", [], ["l"], value=numpy_helper.from_array(np.array([4, 4], np.int64))),
        helper.make_node("Add", ["l", "zi"], ["labels"]),
    ]
    outs = [helper.make_tensor_value_info("boxes", TensorProto.FLOAT, ["N", 4]),
            helper.make_tensor_value_info("labels", TensorProto.INT64, ["N"]),
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N"])]
    path = _save(tmp_path / "tvdyn.onnx", nodes, [3, "h", "w"], outs)
    det = OnnxDetector(path)
    assert det.output_format == "torchvision" and det.input_size is None
    rec = recorded(det)
    out = det(np.zeros((37, 53, 3), np.uint8))
    assert rec.feed["images"].shape == (3, 37, 53)
    assert out.labels.tolist() == [4, 4]  # different boxes, no overlap
    np.testing.assert_allclose(out.boxes, [[0, 0, 53, 37], [1, 2, 5, 6]])
    # an explicit input_size resizes, and boxes are scaled back
    det = OnnxDetector(path, input_size=(74, 106))
    out = det(np.zeros((37, 53, 3), np.uint8))
    np.testing.assert_allclose(out.boxes, [[0, 0, 53, 37], [0.5, 1, 2.5, 3]])


# ------------------------------------------------------------------------------- errors


def test_missing_and_unreadable_model(tmp_path):
    missing = tmp_path / "nope.onnx"
    with pytest.raises(FileNotFoundError, match="nope.onnx"):
        OnnxDetector(missing)
    bad = tmp_path / "garbage.onnx"
    bad.write_bytes(b"this is not an onnx model")
    with pytest.raises(ValueError, match="garbage.onnx"):
        OnnxDetector(bad)


def test_unrecognised_graph(tmp_path):
    path = const_graph(tmp_path / "weird.onnx", [1, 3, 32, 32], {"logits": np.zeros((1, 10), np.float32)})
    with pytest.raises(ValueError, match=r"weird\.onnx.*logits"):
        OnnxDetector(path)
    ambiguous = const_graph(tmp_path / "amb.onnx", [1, 3, 128, 128], {"head": np.zeros((1, 336, 20), np.float32)})
    with pytest.raises(ValueError, match="amb.onnx.*head"):
        OnnxDetector(ambiguous)
    assert OnnxDetector(ambiguous, output_format="yolox").num_classes == 15
    assert OnnxDetector(ambiguous, output_format="yolov8").num_classes == 16
    with pytest.raises(ValueError, match="weird.onnx"):
        OnnxDetector(path, output_format="yolox")


def test_bad_arguments(yolox_graph):
    with pytest.raises(ValueError, match="output_format"):
        OnnxDetector(yolox_graph, output_format="ssd")
    with pytest.raises(ValueError, match="input_size"):
        OnnxDetector(yolox_graph, input_size=416)
    with pytest.raises(ValueError, match="unknown class name"):
        OnnxDetector(yolox_graph, classes=["unicorn"])
    with pytest.raises(ValueError, match="top_k"):
        OnnxDetector(yolox_graph, top_k=0)
    with pytest.raises(ValueError, match="nms_iou"):
        OnnxDetector(yolox_graph, nms_iou=1.5)


def test_bad_images(yolox_graph):
    det = OnnxDetector(yolox_graph)
    with pytest.raises(TypeError):
        det(np.zeros((8, 8, 3), np.float32))
    with pytest.raises(TypeError):
        det([[0, 0, 0]])
    with pytest.raises(ValueError):
        det(np.zeros((8, 8), np.uint8))
    with pytest.raises(ValueError):
        det(np.zeros((8, 8, 4), np.uint8))
    with pytest.raises(ValueError):
        det(np.zeros((0, 8, 3), np.uint8))


def test_load_detector(yolox_graph, tmp_path):
    assert load_detector(None) is None
    fn = lambda img: Detections(np.zeros((0, 4)))  # noqa: E731
    assert load_detector(fn) is fn
    det = load_detector(str(yolox_graph))
    assert isinstance(det, OnnxDetector) and det.output_format == "yolox" and det.top_k == 8
    assert isinstance(load_detector(yolox_graph), OnnxDetector)
    with pytest.raises(FileNotFoundError):
        load_detector(tmp_path / "missing.onnx")
    with pytest.raises(ValueError, match="onnx"):
        load_detector("boxes.json")
    with pytest.raises(ValueError):
        load_detector(42)


def test_torchvision_adapter_is_optional(tmp_path):
    with pytest.raises(ValueError, match="weights="):
        TorchvisionMaskRCNN()
    with pytest.raises(FileNotFoundError):
        TorchvisionMaskRCNN(tmp_path / "missing.pth")
    try:
        import torchvision  # noqa: F401
    except Exception:
        w = tmp_path / "w.pth"
        w.write_bytes(b"")
        with pytest.raises(ImportError, match="torchvision"):
            TorchvisionMaskRCNN(w)


# ------------------------------------------------------------------------------- real YOLOX-Nano


@pytest.fixture(scope="module")
def yolox():
    return OnnxDetector(YOLOX)


def _golden_image(name):
    with np.load(GOLDEN / f"{name}.npz") as z:
        return z["image"]


def _show(tag, det, d):
    print(f"\n{tag}:")
    for n, s, b in zip(d.label_names(det.labels), det.scores, det.boxes):
        print(f"  {n:10s} {s:.3f} [{b[0]:.1f}, {b[1]:.1f}, {b[2]:.1f}, {b[3]:.1f}]")


@NEEDS_YOLOX
def test_yolox_nano_photo_a(yolox):
    assert yolox.output_format == "yolox" and yolox.input_size == (416, 416) and yolox.num_classes == 80
    img = _golden_image("v01_s64_nobox_photoA")
    assert img.shape == (320, 480, 3)
    det = yolox(img)
    _show("photo A", det, yolox)
    check_detections(det, img.shape[:2])
    assert len(det.boxes) <= 8 and np.all(det.scores >= 0.3)
    # the man: the best detection, a person, tall-ish, in the middle-right of the frame
    assert det.labels[0] == 0 and det.scores[0] > 0.7
    x0, y0, x1, y1 = det.boxes[0]
    assert y1 - y0 > x1 - x0 and y1 - y0 > 150 and 200 < (x0 + x1) / 2 < 330
    # a bicycle, overlapping the man's lower half
    bikes = det.boxes[det.labels == 1]
    assert len(bikes) >= 1
    assert box_iou(bikes[:1], det.boxes[:1])[0, 0] > 0.1 and bikes[0, 3] > 250


@NEEDS_YOLOX
def test_yolox_nano_photo_b(yolox):
    img = _golden_image("v03_s64_3box_photoB")
    det = yolox(img)
    _show("photo B", det, yolox)
    check_detections(det, img.shape[:2])
    people = det.boxes[(det.labels == 0) & (det.scores > 0.6)]
    assert len(people) >= 4
    assert np.all(people[:, 3] - people[:, 1] > people[:, 2] - people[:, 0])  # standing people
    assert 1 in det.labels.tolist()
    # colour path (grey=False) agrees on these grey photos
    col = OnnxDetector(YOLOX, grey=False, top_k=4)(img)
    assert col.labels.tolist().count(0) >= 3


@NEEDS_YOLOX
def test_yolox_nano_class_filter_and_small_images(yolox):
    img = _golden_image("v01_s64_nobox_photoA")
    bikes = OnnxDetector(YOLOX, classes=["bicycle"])(img)
    assert bikes.labels.tolist() == [1]
    tiny = img[::8, ::8].copy()  # 40x60, upscaled by the letterbox
    check_detections(yolox(tiny), tiny.shape[:2])

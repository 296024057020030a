"""Object detectors from ONNX files, run with ONNX Runtime or TensorRT: YOLOX, YOLOv8 (Ultralytics)
and torchvision-style graphs.

The project's default detector is the COCO YOLOX-Nano in ``shared/models`` (see its README):
``OnnxDetector("yolox_nano_coco_416.onnx")`` returns the top 8 COCO detections at score >= 0.3.

Output formats (``output_format``):

* ``"yolox"`` -- one output ``(1, A, 5 + nc)`` of raw grid predictions
  ``[tx, ty, tw, th, obj, p_0 .. p_nc-1]`` (obj and p already sigmoid'ed), one row per cell of the
  stride 8 / 16 / 32 grids in row-major order. Input: letterbox at the top-left, pad 114, BGR,
  0..255 float32 (Megvii YOLOX >= 0.1.1rc0). ``score = obj * max p``.
* ``"yolov8"`` -- one output ``(1, 4 + nc, A)`` (or ``(1, A, 4 + nc)``): ``cx, cy, w, h`` in
  letterbox-input pixels, then the class scores (no objectness). Input: the same top-left
  letterbox (pad 114), RGB, 0..1 float32. ``score = max p``.
* ``"torchvision"`` -- outputs ``boxes (N, 4)`` xyxy in input pixels, ``labels (N,)``,
  ``scores (N,)``, found by name or else in that order (extra outputs such as masks are
  ignored). Input ``[1, 3, H, W]`` or ``[3, H, W]`` RGB in 0..1: the image is resized (plainly,
  not keeping the aspect ratio) to a static input size, or fed at its own size when the graph's
  input is dynamic.

All formats then go through the same post-processing: score threshold, class filter, class-aware
NMS, mapping to original pixels, clipping to the image, dropping boxes left with zero area,
sorting by descending score and keeping the ``top_k`` best.

Runtimes (``runtime``): the graph's inputs and outputs are read from the ONNX file
(:func:`graph_io`), and a *runner* executes it -- ``run(feeds) -> outputs in graph order`` as host
numpy arrays. ``"onnxruntime"`` (:class:`OrtRunner`, the default) runs on the CPU or any ONNX
Runtime execution provider; ``"tensorrt"``
(:class:`instcolor.detect.tensorrt_runner.TensorRTDetectorRunner`) builds a cached TensorRT engine
for one fixed input shape and runs it on a CUDA device. Everything before and after the runner is
shared.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Iterable, NamedTuple, Sequence

import numpy as np
from PIL import Image

from .._ort import session_options
from .base import Detections
from .coco import COCO_CLASSES, class_indices, coco91_to_80
from .nms import batched_nms

FORMATS = ("yolox", "torchvision", "yolov8")
STRIDES = (8, 16, 32)
PAD_VALUE = 114
DEFAULT_LETTERBOX_SIZE = 640  # letterbox formats with a dynamic input and no ``input_size``

RUNTIMES = ("onnxruntime", "tensorrt")

_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}


# --------------------------------------------------------------------------------------------
# helpers shared with the other detector adapters


def check_image(image: np.ndarray, who: str = "detector") -> np.ndarray:
    """Validate an ``(H, W, 3)`` uint8 RGB image; TypeError for the wrong type / dtype,
    ValueError for the wrong shape. Returns it unchanged."""
    if not isinstance(image, np.ndarray):
        raise TypeError(f"{who}: expected an (H, W, 3) uint8 numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise TypeError(f"{who}: expected an (H, W, 3) uint8 image, got dtype {image.dtype}")
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"{who}: expected an (H, W, 3) uint8 image, got shape {image.shape}")
    return image


def lightness_grey(image: np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` uint8 RGB -> ``(H, W, 3)`` uint8 grey image made of the CIE L channel.

    L (0..100) comes from the project's colour code (:func:`instcolor.color.rgb_to_lab`, the
    official conversion) and is stored as ``round(L * 255 / 100)`` -- OpenCV's 8-bit Lab scaling,
    which the official ``inference_bbox.py`` feeds to its detector -- in all three channels.
    """
    from ..color import L_CENT, L_NORM, lab_of_uint8

    L = lab_of_uint8(image)[0, 0] * L_NORM + L_CENT  # (the numpy twin of the reference: no PyTorch)
    g = np.clip(np.rint(L * (255.0 / 100.0)), 0, 255).astype(np.uint8)
    return np.repeat(g[:, :, None], 3, axis=2)


def letterbox(image: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, float]:
    """Top-left letterbox: ``(H, W, 3)`` uint8 -> ``(h, w, 3)`` uint8 canvas and the scale ``r``.

    ``r = min(h / H, w / W)``; the image is resized to ``(int(W * r), int(H * r))`` with PIL
    bilinear interpolation and pasted at the top-left of a canvas filled with 114 (padding on the
    right / bottom only), so input pixels map back to original pixels by dividing by ``r``.
    """
    h, w = size
    H, W = image.shape[:2]
    r = min(h / H, w / W)
    nw, nh = max(1, min(w, int(W * r))), max(1, min(h, int(H * r)))
    canvas = np.full((h, w, 3), PAD_VALUE, np.uint8)
    if (nw, nh) == (W, H):
        canvas[:H, :W] = image
    else:
        canvas[:nh, :nw] = np.asarray(Image.fromarray(image).resize((nw, nh), Image.BILINEAR))
    return canvas, r


def resize_plain(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``(H, W, 3)`` uint8 -> ``(h, w, 3)`` uint8, PIL bilinear, aspect ratio not kept."""
    h, w = size
    if image.shape[:2] == (h, w):
        return image
    return np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR))


def postprocess(boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, *, image_hw: tuple[int, int],
                scale_xy: tuple[float, float] = (1.0, 1.0), score_threshold: float = 0.0,
                classes: np.ndarray | None = None, nms_iou: float | None = 0.45,
                top_k: int | None = None) -> Detections:
    """Common detector post-processing.

    boxes ``(N, 4)`` xyxy in model-input pixels, scores ``(N,)``, labels ``(N,)`` int (class
    indices; negative = unknown, always dropped). Keeps finite boxes with ``score >=
    score_threshold`` and a label in ``classes`` (None = all), runs class-aware NMS at ``nms_iou``
    (None = no NMS), multiplies x by ``scale_xy[0]`` and y by ``scale_xy[1]``, clips to the
    ``(H, W)`` image, drops boxes with zero area and keeps the ``top_k`` best (None = all).
    Returns :class:`Detections` sorted by descending score.
    """
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    scores = np.asarray(scores, np.float32).reshape(-1)
    labels = np.asarray(labels, np.int64).reshape(-1)
    ok = np.isfinite(scores) & (scores >= score_threshold) & (labels >= 0)
    ok &= ~np.isnan(boxes).any(axis=1)
    if classes is not None:
        ok &= np.isin(labels, classes)
    boxes, scores, labels = boxes[ok], scores[ok], labels[ok]
    if nms_iou is not None:
        keep = batched_nms(boxes, scores, labels, nms_iou)
    else:
        keep = np.argsort(-scores.astype(np.float64), kind="stable")
    boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
    H, W = image_hw
    sx, sy = scale_xy
    boxes = boxes.astype(np.float64) * np.array([sx, sy, sx, sy])
    boxes[:, 0::2] = np.clip(boxes[:, 0::2], 0, W)
    boxes[:, 1::2] = np.clip(boxes[:, 1::2], 0, H)
    boxes = boxes.astype(np.float32)
    nonempty = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    boxes, scores, labels = boxes[nonempty], scores[nonempty], labels[nonempty]
    if top_k is not None:
        boxes, scores, labels = boxes[:top_k], scores[:top_k], labels[:top_k]
    return Detections(boxes, scores, labels)


def label_names_of(labels: Iterable[int], names: Sequence[str] | None) -> list[str]:
    """Class names of ``labels``; the index as a string where no name is known."""
    out = []
    for lab in np.asarray(list(labels) if not isinstance(labels, np.ndarray) else labels).reshape(-1):
        i = int(lab)
        out.append(names[i] if names is not None and 0 <= i < len(names) else str(i))
    return out


def _check_common(score_threshold, nms_iou, top_k, who):
    if not isinstance(score_threshold, (int, float)) or not math.isfinite(score_threshold):
        raise ValueError(f"{who}: score_threshold must be a finite number, got {score_threshold!r}")
    if nms_iou is not None and not (isinstance(nms_iou, (int, float)) and 0 < nms_iou <= 1):
        raise ValueError(f"{who}: nms_iou must be in (0, 1] or None, got {nms_iou!r}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer))
                              or top_k < 1):
        raise ValueError(f"{who}: top_k must be a positive int or None, got {top_k!r}")


# --------------------------------------------------------------------------------------------
# the graph's inputs / outputs, and the runners that execute it


class TensorInfo(NamedTuple):
    """One graph input or output as ONNX Runtime describes it: ``type`` like ``"tensor(float)"``,
    ``shape`` a list of ints (static dims), strs (symbolic dims) and None (unknown dims); ``[]``
    when the rank is unknown."""

    name: str
    type: str
    shape: list


def _tensor_info(value_info) -> TensorInfo:
    from onnx import TensorProto

    t = value_info.type.tensor_type
    type_name = f"tensor({TensorProto.DataType.Name(t.elem_type).lower()})" if t.elem_type else "tensor(undefined)"
    shape = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in t.shape.dim] \
        if t.HasField("shape") else []
    return TensorInfo(value_info.name, type_name, shape)


def graph_io(path: str | os.PathLike) -> tuple[list[TensorInfo], list[TensorInfo]]:
    """``(inputs, outputs)`` of an ONNX file, in graph order, as ONNX Runtime reports them: inputs
    without the initializers (weights some exporters also list as inputs), output shapes after ONNX
    shape inference (a declared ``["N", 4]`` that inference knows to be ``[5, 4]`` reads ``[5, 4]``).
    External weight files are not read. ValueError naming the file when it is no ONNX model."""
    import onnx

    path = Path(path)
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # protobuf's DecodeError and friends
        raise ValueError(f"ONNX detector: cannot load the model {path}: {e}") from None
    if not model.HasField("graph") or not model.graph.output:
        raise ValueError(f"ONNX detector: cannot load the model {path}: no graph outputs (not an ONNX model?)")
    try:
        model = onnx.shape_inference.infer_shapes(model)
    except Exception:  # noqa: BLE001 -- keep the declared shapes
        pass
    weights = {t.name for t in model.graph.initializer}
    inputs = [_tensor_info(v) for v in model.graph.input if v.name not in weights]
    return inputs, [_tensor_info(v) for v in model.graph.output]


class OrtRunner:
    """Runs an ONNX file with ONNX Runtime: ``run(feeds) -> list`` of the outputs in graph order.

    ``intra_op_threads`` (None = the usable CPU cores); graph optimisation "all"; idle worker threads
    do not spin; ``providers`` (None = ``["CPUExecutionProvider"]``). ValueError naming the file when
    ONNX Runtime cannot load it.
    """

    def __init__(self, path: str | os.PathLike, providers: Sequence | None = None,
                 intra_op_threads: int | None = None):
        import onnxruntime as ort

        so = session_options(intra_op_threads)
        so.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(path), sess_options=so,
                                                providers=list(providers or ["CPUExecutionProvider"]))
        except Exception as e:  # onnxruntime raises its own exception types
            raise ValueError(f"ONNX detector: cannot load the model {path}: {e}") from None

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """``{input name: array}`` -> every output, in graph order, as numpy arrays."""
        return self.session.run(None, feeds)

    def close(self) -> None:
        pass


# --------------------------------------------------------------------------------------------


def _grid_count(hw: tuple[int, int]) -> int:
    """Rows of a stride 8/16/32 grid head for an ``(h, w)`` input."""
    return sum(math.ceil(hw[0] / s) * math.ceil(hw[1] / s) for s in STRIDES)


def _static_dim(d) -> int | None:
    return d if isinstance(d, int) and d > 0 else None


class OnnxDetector:
    """COCO-style object detector from an ONNX file (YOLOX, YOLOv8 or torchvision-style outputs).

    Callable: ``detector(image)`` with ``image`` an ``(H, W, 3)`` uint8 RGB array returns
    :class:`Detections` -- boxes ``(N, 4)`` float32 xyxy in original-image pixels (clipped to the
    image, zero-area boxes dropped), scores ``(N,)`` float32 in descending order, labels ``(N,)``
    int64 class indices -- with ``N <= top_k``.

    Args:
        path: the ``.onnx`` file.
        output_format: ``"auto"`` (from the output names and shapes), ``"yolox"``, ``"yolov8"``
            or ``"torchvision"`` (see the module docstring).
        score_threshold: keep detections with ``score >= score_threshold`` (0.3 suits YOLOX, whose
            ``obj * cls`` scores run lower than Mask R-CNN's).
        nms_iou: class-aware NMS IoU (None = no NMS).
        classes: class indices and/or COCO names to keep (None = all).
        top_k: keep at most this many detections (None = all); InstColorization uses 8.
        input_size: model input ``(h, w)`` or an int for square. Read from the graph when static
            (a different value is an error); for a dynamic graph the letterbox formats default to
            640 and torchvision-style graphs get the image at its own size.
        grey: detect on the lightness instead of the colours, as the official InstColorization
            does (its detector sees the L channel copied to 3 channels). L (0..100) is computed
            with :func:`instcolor.color.rgb_to_lab` and stored as ``round(L * 255 / 100)`` (see
            :func:`lightness_grey`). On a grey photo this is a tone curve, not the identity.
        runtime: what runs the graph: ``"onnxruntime"`` or ``"tensorrt"`` (a TensorRT engine for
            one fixed input shape -- ``(1, 3, h, w)`` / ``(3, h, w)`` from the graph or
            ``input_size`` -- built on first use and cached; outputs must have fixed shapes, so
            torchvision-style graphs with NMS inside do not run with it). See the module docstring.
        providers: ONNX Runtime execution providers (None = ``["CPUExecutionProvider"]``);
            onnxruntime only.
        intra_op_threads: ONNX Runtime intra-op threads (None = the usable CPU cores). Graph
            optimisation is set to "all" and worker threads do not spin while idle. onnxruntime only.
        device: TensorRT only: ``"cuda"`` / ``"cuda:N"`` / ``N``, or a device object of
            :mod:`instcolor.trt.memory` whose arrays have ``.ptr``.
        precision: ``"fp32"`` or ``"fp16"`` (TensorRT only; see
            :func:`instcolor.detect.tensorrt_runner.detector_build_mode`).
        cache_root: TensorRT engine cache folder (None = ``cache_dir()/"tensorrt"``).
        coco91_labels: torchvision-style graphs only -- the labels are COCO category ids (1..90
            with gaps, 0 = background, as torchvision's COCO models return); they are mapped to
            the contiguous 80 classes and background / unused ids are dropped.
        names: class names (None = the COCO names when the model has 80 classes).

    Attributes: ``path``, ``output_format``, ``input_size`` ``(h, w)`` or None (dynamic,
    torchvision-style), ``num_classes`` (None when unknown), ``names`` (tuple or None),
    ``runtime``, ``runner`` (:class:`OrtRunner` or
    :class:`~instcolor.detect.tensorrt_runner.TensorRTDetectorRunner`), ``session`` (ONNX Runtime's
    InferenceSession; None with TensorRT). ValueError, naming the model, for a file that is no
    ONNX model and for a graph or option this runtime cannot run; FileNotFoundError for a missing file.
    """

    def __init__(self, path: str | os.PathLike, *, output_format: str = "auto", score_threshold: float = 0.3,
                 nms_iou: float | None = 0.45, classes: Iterable[int | str] | None = None,
                 top_k: int | None = 8, input_size: int | tuple[int, int] | None = None, grey: bool = True,
                 providers: Sequence | None = None, intra_op_threads: int | None = None,
                 coco91_labels: bool = False, names: Sequence[str] | None = None, runtime: str = "onnxruntime",
                 device="cuda", precision: str = "fp32", cache_root: str | os.PathLike | None = None):
        self.path = Path(path)
        who = f"OnnxDetector({self.path})"
        if runtime not in RUNTIMES:
            raise ValueError(f"{who}: runtime must be one of {RUNTIMES}, got {runtime!r}")
        if precision not in ("fp32", "fp16"):
            raise ValueError(f"{who}: precision must be 'fp32' or 'fp16', got {precision!r}")
        if precision != "fp32" and runtime != "tensorrt":
            raise ValueError(f"{who}: precision={precision!r} needs runtime='tensorrt' (ONNX Runtime runs the "
                             f"graph in its own types)")
        if output_format not in ("auto",) + FORMATS:
            raise ValueError(f"{who}: output_format must be 'auto' or one of {FORMATS}, got {output_format!r}")
        _check_common(score_threshold, nms_iou, top_k, who)
        if input_size is not None:
            hw = (input_size, input_size) if isinstance(input_size, (int, np.integer)) else tuple(input_size)
            if len(hw) != 2 or not all(isinstance(v, (int, np.integer)) and v > 0 for v in hw):
                raise ValueError(f"{who}: input_size must be a positive int or (h, w), got {input_size!r}")
            input_size = (int(hw[0]), int(hw[1]))
        if intra_op_threads is not None and (not isinstance(intra_op_threads, int) or intra_op_threads < 1):
            raise ValueError(f"{who}: intra_op_threads must be a positive int or None, got {intra_op_threads!r}")
        if not self.path.is_file():
            raise FileNotFoundError(f"ONNX detector: model file not found: {self.path}")
        inputs, graph_outputs = graph_io(self.path)

        self.runtime = runtime
        self.score_threshold = float(score_threshold)
        self.nms_iou = None if nms_iou is None else float(nms_iou)
        self.top_k = None if top_k is None else int(top_k)
        self.grey = bool(grey)
        self.coco91_labels = bool(coco91_labels)

        # ---- input
        if len(inputs) != 1:
            raise ValueError(f"{who}: expected one image input, the graph has {len(inputs)}: "
                             f"{[(i.name, i.shape) for i in inputs]}")
        inp = inputs[0]
        self._input_name = inp.name
        self._input_dtype = _DTYPES.get(inp.type)
        shape = list(inp.shape)
        if self._input_dtype is None or len(shape) not in (3, 4):
            raise ValueError(f"{who}: expected a float image input [1, 3, H, W] or [3, H, W], got "
                             f"{inp.name} {inp.type} {shape}")
        self._batched = len(shape) == 4
        if (self._batched and _static_dim(shape[0]) not in (None, 1)) or _static_dim(shape[-3]) not in (None, 3):
            raise ValueError(f"{who}: expected an input [1, 3, H, W] or [3, H, W], got {inp.name} {shape}")
        graph_hw = (_static_dim(shape[-2]), _static_dim(shape[-1]))
        graph_hw = graph_hw if None not in graph_hw else None
        if graph_hw is not None and input_size is not None and input_size != graph_hw:
            raise ValueError(f"{who}: input_size {input_size} differs from the graph's static input {graph_hw}")
        self._static_input = graph_hw is not None

        # ---- outputs and format
        self._outputs = [(o.name, list(o.shape)) for o in graph_outputs]
        fmt = output_format if output_format != "auto" else self._guess_format(graph_hw or input_size)
        self.output_format = fmt
        if fmt == "torchvision":
            self.input_size = graph_hw or input_size
            self._tv_index = self._torchvision_outputs()
            self.num_classes = 80 if self.coco91_labels else None
        else:
            self.input_size = graph_hw or input_size or (DEFAULT_LETTERBOX_SIZE, DEFAULT_LETTERBOX_SIZE)
            self.num_classes = self._grid_num_classes(fmt)
        if names is not None:
            self.names = tuple(str(n) for n in names)
        else:
            self.names = COCO_CLASSES if self.num_classes == 80 else None
        self.classes = class_indices(classes, self.names)

        # ---- runner
        if runtime == "onnxruntime":
            self.runner = OrtRunner(self.path, providers, intra_op_threads)
        else:
            from .tensorrt_runner import TensorRTDetectorRunner

            self.runner = TensorRTDetectorRunner(self.path, self._input_name, self.tensorrt_input_shape(),
                                                 [n for n, _ in self._outputs], graph_dtype=self._input_dtype,
                                                 precision=precision, device=device, cache_root=cache_root)

    @property
    def session(self):
        """ONNX Runtime's InferenceSession (None with TensorRT)."""
        return getattr(self.runner, "session", None)

    @session.setter
    def session(self, value) -> None:
        if not isinstance(self.runner, OrtRunner):
            raise AttributeError(f"OnnxDetector({self.path}): runtime={self.runtime!r} has no ONNX Runtime session")
        self.runner.session = value

    def tensorrt_input_shape(self) -> tuple[int, ...]:
        """The fixed input shape a TensorRT engine of this graph takes: ``(1, 3, h, w)`` or ``(3, h, w)``
        with ``(h, w)`` = ``input_size``. ValueError when the input size is dynamic (torchvision-style
        graph without ``input_size``) or an output's size depends on the data (torchvision-style
        graphs with NMS inside)."""
        who = f"OnnxDetector({self.path}) runtime='tensorrt'"
        if self.input_size is None:
            raise ValueError(f"{who}: the graph's input {self._input_name} has a dynamic size and TensorRT "
                             f"needs a fixed one; pass input_size=(h, w)")
        if self.output_format == "torchvision":
            dynamic = [f"{n} {s}" for n, s in self._outputs if not s or any(_static_dim(d) is None for d in s)]
            if dynamic:
                raise ValueError(f"{who} supports only fixed-shape outputs, but {', '.join(dynamic)} depend on the "
                                 f"data (e.g. NMS inside the graph); use runtime='onnxruntime'")
        return ((1, 3) if self._batched else (3,)) + tuple(self.input_size)

    def close(self) -> None:
        """Free the runner's resources (TensorRT: the device memory it allocated)."""
        self.runner.close()

    # ---------------------------------------------------------------- format detection

    def _describe_outputs(self) -> str:
        return ", ".join(f"{n} {s}" for n, s in self._outputs)

    def _unrecognised(self, why: str) -> ValueError:
        return ValueError(f"OnnxDetector: cannot recognise the output format of {self.path} ({why}); "
                          f"outputs: {self._describe_outputs()}. Pass output_format='yolox', 'yolov8' "
                          f"or 'torchvision' if it is one of these.")

    def _guess_format(self, hw: tuple[int, int] | None) -> str:
        names = [n.lower() for n, _ in self._outputs]
        if all(any(k in n for n in names) for k in ("box", "label", "score")):
            return "torchvision"
        if len(self._outputs) >= 3:
            ranks = [len(s) for _, s in self._outputs[:3]]
            if ranks == [2, 1, 1] and _static_dim(self._outputs[0][1][1]) in (None, 4):
                return "torchvision"
        if len(self._outputs) != 1 or len(self._outputs[0][1]) != 3:
            raise self._unrecognised("neither one (1, A, C) grid output nor boxes / labels / scores")
        name, shape = self._outputs[0]
        d1, d2 = _static_dim(shape[1]), _static_dim(shape[2])
        if d1 is None and d2 is None:
            raise self._unrecognised("the output shape is not static")
        rows = None
        if d1 is None or d2 is None:  # dynamic input: the anchor axis is the symbolic one
            rows = d1 is None
        elif hw is not None:
            a = _grid_count(hw)
            rows = True if d1 == a else False if d2 == a else None
        if rows is None:
            rows = d1 > d2
        if not rows:
            return "yolov8"  # (1, 4 + nc, A): only Ultralytics puts the channels first
        if d2 == 85:
            return "yolox"
        if d2 == 84:
            return "yolov8"
        if name == "output0":
            return "yolov8"  # Ultralytics' output name
        if name == "output":
            return "yolox"  # Megvii's export_onnx.py output name
        raise self._unrecognised(f"a (1, A, {d2}) output could be YOLOX with {d2 - 5} classes or YOLOv8 "
                                 f"with {d2 - 4}")

    def _grid_num_classes(self, fmt: str) -> int | None:
        if len(self._outputs) < 1 or len(self._outputs[0][1]) != 3:
            raise self._unrecognised(f"{fmt} needs one (1, A, C) output")
        _, shape = self._outputs[0]
        d1, d2 = _static_dim(shape[1]), _static_dim(shape[2])
        a = _grid_count(self.input_size)
        if fmt == "yolox":
            return d2 - 5 if d2 is not None and d2 > 5 else None
        if d1 is not None and d2 is not None:
            c = d2 if d1 == a or (d2 != a and d1 > d2) else d1
        else:
            c = d1 if d1 is not None and d1 != a else d2 if d2 is not None and d2 != a else None
        return c - 4 if c is not None and c > 4 else None

    def _torchvision_outputs(self) -> tuple[int, int, int]:
        """Indices of the (boxes, labels, scores) outputs: by name, else the first three in order."""
        names = [n.lower() for n, _ in self._outputs]
        found = []
        for key in ("box", "label", "score"):
            exact = [i for i, n in enumerate(names) if n in (key, key + "s")]
            loose = [i for i, n in enumerate(names) if key in n]
            found.append(exact[0] if exact else loose[0] if len(loose) == 1 else None)
        if None not in found and len(set(found)) == 3:
            return tuple(found)
        if len(self._outputs) >= 3:
            return 0, 1, 2
        raise self._unrecognised("torchvision-style graphs need boxes, labels and scores outputs")

    # ---------------------------------------------------------------- running

    def label_names(self, labels: Iterable[int]) -> list[str]:
        """Class names of ``labels`` (``(N,)`` ints); the index as a string when unknown."""
        return label_names_of(labels, self.names)

    def _feed(self, img: np.ndarray, scale: float) -> dict:
        x = np.ascontiguousarray(img.transpose(2, 0, 1), dtype=np.float32)
        if scale != 1.0:
            x *= np.float32(scale)
        x = x.astype(self._input_dtype, copy=False)
        return {self._input_name: x[None] if self._batched else x}

    def __call__(self, image: np.ndarray) -> Detections:
        """``(H, W, 3)`` uint8 RGB -> :class:`Detections` in original-image pixels."""
        check_image(image, f"OnnxDetector({self.path.name})")
        H, W = image.shape[:2]
        src = lightness_grey(image) if self.grey else image
        fmt = self.output_format
        common = dict(image_hw=(H, W), score_threshold=self.score_threshold, classes=self.classes,
                      nms_iou=self.nms_iou, top_k=self.top_k)
        if fmt == "torchvision":
            size = self.input_size or (H, W)
            x = resize_plain(src, size)
            outs = self.runner.run(self._feed(x, 1.0 / 255.0))
            boxes, labels, scores = self._parse_torchvision(outs)
            return postprocess(boxes, scores, labels, scale_xy=(W / size[1], H / size[0]), **common)
        canvas, r = letterbox(src, self.input_size)
        if fmt == "yolox":
            out = self.runner.run(self._feed(canvas[:, :, ::-1], 1.0))[0]
            boxes, scores, labels = self._decode_yolox(out)
        else:
            out = self.runner.run(self._feed(canvas, 1.0 / 255.0))[0]
            boxes, scores, labels = self._decode_yolov8(out)
        return postprocess(boxes, scores, labels, scale_xy=(1.0 / r, 1.0 / r), **common)

    def _bad_output(self, what: str, arr: np.ndarray) -> ValueError:
        return ValueError(f"OnnxDetector({self.path}): {self.output_format} output {what} has an unexpected "
                          f"shape {arr.shape}")

    def _parse_torchvision(self, outs):
        ib, il, isc = self._tv_index
        boxes, labels, scores = np.asarray(outs[ib]), np.asarray(outs[il]), np.asarray(outs[isc])
        if boxes.ndim == 3 and boxes.shape[0] == 1:  # tolerate a batch axis
            boxes, labels, scores = boxes[0], labels.reshape(-1), scores.reshape(-1)
        if boxes.ndim != 2 or boxes.shape[1] != 4:
            raise self._bad_output("boxes", boxes)
        labels, scores = labels.reshape(-1), scores.reshape(-1)
        if not (len(labels) == len(scores) == len(boxes)):
            raise ValueError(f"OnnxDetector({self.path}): {len(boxes)} boxes, {len(labels)} labels, "
                             f"{len(scores)} scores")
        labels = labels.astype(np.int64)
        if self.coco91_labels:
            labels = coco91_to_80(labels)
        return boxes, labels, scores

    def _grid(self, hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """Cell offsets ``(A, 2)`` float32 (gx, gy) and strides ``(A, 1)`` float32 for an input size."""
        cache = getattr(self, "_grid_cache", None)
        if cache is None or cache[0] != hw:
            cells, strides = [], []
            for s in STRIDES:
                nh, nw = math.ceil(hw[0] / s), math.ceil(hw[1] / s)
                gy, gx = np.meshgrid(np.arange(nh), np.arange(nw), indexing="ij")
                cells.append(np.stack((gx.ravel(), gy.ravel()), axis=1))
                strides.append(np.full((nh * nw, 1), s))
            cache = (hw, np.concatenate(cells).astype(np.float32), np.concatenate(strides).astype(np.float32))
            self._grid_cache = cache
        return cache[1], cache[2]

    def _decode_yolox(self, out: np.ndarray):
        """``(1, A, 5 + nc)`` raw grid rows -> boxes ``(A, 4)`` xyxy in input pixels, scores, labels."""
        grid, stride = self._grid(self.input_size)
        pred = np.asarray(out, np.float32)
        pred = pred.reshape(pred.shape[-2:]) if pred.ndim == 3 and pred.shape[0] == 1 else pred
        if pred.ndim != 2 or pred.shape[0] != len(grid) or pred.shape[1] < 6:
            raise ValueError(f"OnnxDetector({self.path}): yolox output has shape {np.shape(out)}, expected "
                             f"(1, {len(grid)}, 5 + classes) for a {self.input_size} input")
        cls = pred[:, 5:]
        labels = cls.argmax(axis=1)
        scores = pred[:, 4] * cls[np.arange(len(cls)), labels]
        keep = scores >= self.score_threshold  # decode only the candidates
        p, g, s = pred[keep], grid[keep], stride[keep]
        with np.errstate(over="ignore"):
            c = (p[:, :2] + g) * s
            wh = np.exp(p[:, 2:4]) * s
        boxes = np.concatenate((c - wh / 2, c + wh / 2), axis=1)
        return boxes, scores[keep], labels[keep]

    def _decode_yolov8(self, out: np.ndarray):
        """``(1, 4 + nc, A)`` or ``(1, A, 4 + nc)`` -> boxes ``(A, 4)`` xyxy in input pixels, scores, labels."""
        pred = np.asarray(out, np.float32)
        if pred.ndim == 3 and pred.shape[0] == 1:
            pred = pred[0]
        if pred.ndim != 2:
            raise self._bad_output("0", np.asarray(out))
        a = _grid_count(self.input_size)
        if pred.shape[0] == a and pred.shape[1] != a:
            rows = pred
        elif pred.shape[1] == a or pred.shape[0] < pred.shape[1]:
            rows = pred.T
        else:
            rows = pred
        if rows.shape[1] < 5:
            raise self._bad_output("0", np.asarray(out))
        cls = rows[:, 4:]
        labels = cls.argmax(axis=1)
        scores = cls[np.arange(len(cls)), labels]
        c, wh = rows[:, :2], rows[:, 2:4]
        boxes = np.concatenate((c - wh / 2, c + wh / 2), axis=1)
        return boxes, scores, labels

    def __repr__(self) -> str:
        return (f"OnnxDetector({str(self.path)!r}, output_format={self.output_format!r}, "
                f"input_size={self.input_size}, score_threshold={self.score_threshold}, "
                f"nms_iou={self.nms_iou}, top_k={self.top_k}, grey={self.grey})")

"""INT8 exports: static post-training quantization of every segment (issue 14).

``instcolor export --precision int8 --calibration DIR`` (and ``export_segments(precision="int8",
calibration=Calibration(DIR))``) writes the fp32 segments as usual, then quantizes each of them:

1. **Calibration run.** Up to ``count`` photos of the calibration folder (spread evenly over its
   sorted file list) go through the fp32 segments with the segment loop inference uses
   (:class:`instcolor.backends.onnxruntime_backend.OnnxRuntimeBackend`, class heads included), and the
   inputs every segment actually receives are recorded (to a temporary folder, one ``.npz`` per call):
   the full-image net sees the whole photo, the instance net the crops of the photo's boxes, and each
   ``fusion.<point>`` segment the features after the native blend of the previous point. Boxes come
   from the ``detector`` (an ONNX model or a callable) or a ``boxes`` file/folder; a photo without boxes
   from either gets seeded random boxes, so that the instance and fusion segments always see crops.
   Each photo runs twice, without its boxes (``full``, ``head.full``) and with them (``instance``,
   ``fusion.*``, ``head.fusion``). Every second run carries simulated user hints (points of the
   photo's own colours) and, for nets with the global hints branch, the photo's global hints, so that
   hinted inputs lie inside the calibrated ranges.
2. **Equalization** (:func:`equalize_channels`, exact in float): every quantized convolution's input
   channels are divided by ``s_c = sqrt(a_c / w_c)`` (``a_c``: the channel's recorded max |x|, ``w_c``:
   its weights' max |w|) and its weights on them multiplied by ``s_c``; the ``1/s`` goes into the
   previous convolution where a ReLU (and a folded BN shift) lies between them, else a float Mul is
   inserted. Segment outputs (the features the native blend reads) never change.
3. **Quantization.** Each segment goes through ``onnxruntime.quantization.quantize_static`` with a
   ``CalibrationDataReader`` over its recorded inputs: QDQ format, int8 weights symmetric per output
   channel, int8 activations symmetric per tensor (zero point 0: the only form TensorRT accepts, so the
   same files build TensorRT INT8 engines), MinMax ranges, biases int32.

What is quantized (:data:`QUANTIZED_OPS`): Conv and ConvTranspose, and the ReLU / Slice / Add between
them so that ONNX Runtime fuses QLinearConv kernels. Kept in float (:func:`excluded_nodes`), each
cheap and each measured to matter (see README, INT8):

* the first convolution of every net: its input is L, the hint ab and the hint mask concatenated;
  hint colours span about [-1.2, 1.2] and L [-0.5, 0.5], so one 8-bit scale for the concatenation
  costs L precision, and a calibration set without hints would clip hint colours (4 input channels:
  negligible compute);
* the global hints branch (1x1 convolutions on a 1x1 vector);
* the output convolution before ``tanh`` (2 output channels) and the tanh;
* the class head's 1x1 convolution is quantized, its logits compared in the tests.

4. **Accuracy guard** (:func:`segment_snr`, :func:`_combined_guard`): a segment whose INT8 version
   alone puts the ab below ``SETTINGS["min_psnr_db"]`` PSNR against the all-fp32 output (its logits
   below ``min_logit_snr_db`` SNR for ``head.*``) stays fp32; of the rest, ranked by that figure, the
   longest run that keeps all of them together at ``min_total_db`` or more is INT8, the others fp32.

The export's manifest gets ``precision: "int8"`` and an ``int8`` record of how it was made
(calibration photos, boxes, identity, excluded nodes, the guard's figures). ONNX Runtime loads the
files in :func:`instcolor.qdq_ort.onnxruntime_form` (uint8 activations, ReLUs fused; the files stay
symmetric int8 for TensorRT).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

#: ONNX op types the quantizer may quantize (others stay float).
QUANTIZED_OPS = ("Conv", "ConvTranspose", "Relu", "Slice", "Add", "DepthToSpace")
#: Default number of calibration photos (``--calibration-count``).
DEFAULT_COUNT = 32
#: Version of the recipe below; part of the calibration identity (cache keys).
RECIPE = ("instcolor-int8/2: qdq s8s8 symmetric, per-channel weights, minmax, channel equalization (Mul: spread 8), "
          "ConvTranspose as Conv + DepthToSpace, "
          "first/global/output convs float")
_INPUTS = ("A", "B", "mask")
#: The quantizer settings (see the module doc): activations "s8" (symmetric, zero point 0: what TensorRT
#: takes) or "u8" (asymmetric; ONNX Runtime only), range method "minmax" or "percentile".
SETTINGS = dict(activations="s8", method="minmax", percentile=99.999, ops=QUANTIZED_OPS, equalize=True,
                convtranspose_as_conv=True, min_psnr_db=40.0, min_logit_snr_db=20.0, min_total_db=45.0)
#: Calibration runs (the first ones) the accuracy guard replays (see :func:`segment_snr`).
GUARD_BATCHES = 8


class CalibrationError(ValueError):
    """A calibration folder or photo that cannot be used, naming it."""


@dataclass(frozen=True)
class Calibration:
    """How to calibrate an INT8 export.

    ``folder``: photos (any format :func:`instcolor.imageio.read_image` reads; colour photos, so that
    simulated hints have colours). ``count``: at most this many photos, spread over the folder's sorted
    file list. ``size``: processing size S of the calibration run (None: 256). ``detector``: an ONNX
    detector path or a callable (image -> Detections) giving the instance boxes; ``boxes``: a boxes
    file or folder (:class:`instcolor.detect.BoxesFile`) instead. ``seed``: random boxes and hints."""

    folder: str | os.PathLike
    count: int = DEFAULT_COUNT
    size: int | None = None
    detector: object = None
    boxes: str | os.PathLike | None = None
    seed: int = 0
    _photos: list = field(default=None, compare=False, repr=False)

    def __post_init__(self):
        if isinstance(self.count, bool) or not isinstance(self.count, (int, np.integer)) or self.count < 1:
            raise ValueError(f"calibration count must be an int >= 1, got {self.count!r}")
        if self.detector is not None and self.boxes is not None:
            raise ValueError("calibration: give either a detector or a boxes file, not both")

    def photos(self) -> list[Path]:
        """The calibration photos (checked: each one decodes); :class:`CalibrationError` naming the
        folder or the photo otherwise."""
        if self._photos is None:
            object.__setattr__(self, "_photos", calibration_photos(self.folder, self.count))
        return list(self._photos)

    def identity(self) -> str:
        """sha256 hex of everything the calibration depends on: the recipe, size, seed, each photo's
        bytes and name, and the boxes source (detector file bytes, boxes file bytes). A callable
        detector is identified by its type name only."""
        h = hashlib.sha256(json.dumps(dict(recipe=RECIPE, size=self.size, seed=int(self.seed),
                                           count=int(self.count))).encode())
        for p in self.photos():
            h.update(p.name.encode() + b"\0")
            h.update(hashlib.sha256(p.read_bytes()).digest())
        h.update(_source_identity("detector", self.detector))
        h.update(_source_identity("boxes", self.boxes))
        return h.hexdigest()


def _source_identity(kind: str, source) -> bytes:
    if source is None:
        return f"{kind}:none".encode()
    if isinstance(source, (str, os.PathLike)):
        p = Path(source)
        if p.is_file():
            return f"{kind}:file:".encode() + hashlib.sha256(p.read_bytes()).digest()
        if p.is_dir():
            h = hashlib.sha256()
            for f in sorted(p.iterdir()):
                if f.is_file():
                    h.update(f.name.encode() + b"\0" + hashlib.sha256(f.read_bytes()).digest())
            return f"{kind}:dir:".encode() + h.digest()
        return f"{kind}:missing:{p}".encode()
    return f"{kind}:callable:{type(source).__module__}.{type(source).__qualname__}".encode()


def calibration_photos(folder, count: int = DEFAULT_COUNT) -> list[Path]:
    """Up to ``count`` image files of ``folder`` (by suffix, sorted, hidden files skipped), evenly
    spread over the sorted list, each checked to decode. :class:`CalibrationError` naming the folder
    when it is missing, not a folder or holds no image files, or naming the photo that does not decode."""
    from .imageio import IMAGE_SUFFIXES, read_image

    folder = Path(folder)
    if not folder.exists():
        raise CalibrationError(f"{folder}: calibration folder not found")
    if not folder.is_dir():
        raise CalibrationError(f"{folder}: the calibration source must be a folder of photos, this is a file")
    try:
        files = sorted(f for f in folder.iterdir()
                       if f.suffix.lower() in IMAGE_SUFFIXES and not f.name.startswith(".") and f.is_file())
    except OSError as e:
        raise CalibrationError(f"{folder}: cannot list the calibration folder ({e.strerror or e})") from None
    if not files:
        raise CalibrationError(f"{folder}: no photos in the calibration folder (looked for "
                               f"{', '.join(sorted(IMAGE_SUFFIXES))})")
    if len(files) > count:
        files = [files[i] for i in sorted(set(np.linspace(0, len(files) - 1, count).round().astype(int).tolist()))]
    for f in files:
        try:
            read_image(f)
        except (OSError, ValueError) as e:
            raise CalibrationError(f"{f}: unreadable calibration photo ({' '.join(str(e).split())}); remove it from "
                                   f"{folder} or replace it") from None
    return files


# ----------------------------------------------------------------------------- calibration run
def _random_boxes(rng: np.random.Generator, hw: tuple[int, int]) -> np.ndarray:
    """1..8 boxes of 15-70 % of the image side at random places (xyxy float)."""
    h, w = hw
    n = int(rng.integers(1, 9))
    out = []
    for _ in range(n):
        bw, bh = w * rng.uniform(0.15, 0.7), h * rng.uniform(0.15, 0.7)
        x0, y0 = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
        out.append([x0, y0, x0 + bw, y0 + bh])
    return np.asarray(out, np.float32)


def _hint_planes(lab: np.ndarray, rng: np.random.Generator):
    """Simulated user hints from the photo's own colours: 1..10 square patches (1..7 px) of its ab
    at processing size -> :class:`instcolor.prepare.HintPlanes`."""
    from .prepare import HintPlanes

    S = lab.shape[-1]
    ab, mask = np.zeros((2, S, S), np.float32), np.zeros((1, S, S), np.float32)
    for _ in range(int(rng.integers(1, 11))):
        p = int(rng.integers(1, 8))
        y, x = int(rng.integers(0, S - p + 1)), int(rng.integers(0, S - p + 1))
        ab[:, y:y + p, x:x + p] = lab[1:, y:y + p, x:x + p].mean(axis=(1, 2), keepdims=True)
        mask[:, y:y + p, x:x + p] = 1.0
    return HintPlanes(ab=ab, mask=mask)


class _Recorder:
    """Wraps a segment backend's ``_run``: saves each segment's feeds (host float32) to ``root``."""

    def __init__(self, backend, root: Path):
        self.backend, self.root = backend, root
        self.files: dict[str, list[Path]] = {}
        self._run = backend._run
        backend._run = self.run

    def run(self, segment: str, feeds: dict):
        files = self.files.setdefault(segment, [])
        path = self.root / f"{segment}.{len(files):05d}.npz"
        np.savez(path, **{k: np.ascontiguousarray(v, np.float32) for k, v in feeds.items()})
        files.append(path)
        return self._run(segment, feeds)


def record_segment_inputs(export_dir, calibration: Calibration, out_dir, threads: int | None = None) -> dict:
    """Run the photos of ``calibration`` through the fp32 export at ``export_dir`` (see the module doc)
    and record every segment's inputs in ``out_dir``. Returns ``{segment: [npz files]}`` and, under
    the key ``None``, a summary (photos, boxes per source)."""
    from .backends.onnxruntime_backend import OnnxRuntimeBackend
    from .detect import load_detector
    from .global_hints import GlobalHints
    from .pipeline import Batch, native_ops, prepare_image
    from .prepare import as_rgb_uint8, check_size, select_boxes

    size = check_size(256 if calibration.size is None else calibration.size)
    out_dir = Path(out_dir)
    photos = calibration.photos()
    backend = OnnxRuntimeBackend(export_dir, threads=threads)
    ops = native_ops()
    if ops is not None:
        backend.set_fuse(ops.fuse_instances)
    recorder = _Recorder(backend, out_dir)
    detector = load_detector(calibration.detector) if calibration.detector is not None else None
    boxes_source = None
    if calibration.boxes is not None:
        from .detect import BoxesFile

        boxes_source = BoxesFile(calibration.boxes)
    rng = np.random.default_rng(calibration.seed)
    summary = dict(photos=len(photos), size=size, boxes={"detector": 0, "file": 0, "random": 0}, hinted_runs=0,
                   instances=0, batches=[])
    for k, photo in enumerate(photos):
        image = as_rgb_uint8(photo, name=str(photo))
        det, source = None, "random"
        if boxes_source is not None:
            det, source = boxes_source.lookup(photo), "file"
        elif detector is not None:
            det, source = detector(image), "detector"
        boxes = None if det is None else np.asarray(det.boxes, np.float32).reshape(-1, 4)
        scores = None if det is None or det.scores is None else np.asarray(det.scores, np.float32)
        if boxes is None or len(boxes) == 0:
            boxes, scores, source = _random_boxes(rng, image.shape[:2]), None, "random"
        sel = select_boxes(boxes, scores, image.shape[:2], name=f"{photo}: boxes")
        if len(sel) == 0:  # every box degenerate after truncation
            sel, source = select_boxes(_random_boxes(rng, image.shape[:2]), None, image.shape[:2]), "random"
        summary["boxes"][source] += 1
        summary["instances"] += int(len(sel))
        for run, use_boxes in enumerate((False, True)):
            hinted = (k + run) % 2 == 1  # photo 0: plain run bare, boxes run hinted; photo 1 the other way
            hints = ()
            if hinted and ops is not None:
                hints = _hint_planes(ops.rgb_to_lab(image, size=size), rng)
            p = prepare_image(image, sel if use_boxes else np.zeros((0, 4), np.int64), hints, size, ops)
            g = None
            if hinted and backend.has_global_hints:
                g = GlobalHints.from_image(image).vector().reshape(1, -1, 1, 1).astype(np.float32)
            summary["hinted_runs"] += int(hinted)
            batch = Batch.stack([p], global_input=g)
            if len(summary["batches"]) < GUARD_BATCHES:
                summary["batches"].append(batch)
            backend.run_heads(batch, logits=backend.has_class_head)
    return {**recorder.files, None: summary}


# ----------------------------------------------------------------------------- node selection
def _producers(graph) -> dict:
    return {o: n for n in graph.node for o in n.output}


def _depends_on(graph) -> dict[str, frozenset]:
    """Tensor -> the graph inputs it depends on (topological order as the graph lists its nodes)."""
    inputs = {i.name for i in graph.input}
    deps: dict[str, frozenset] = {i: frozenset([i]) for i in inputs}
    for n in graph.node:
        d = frozenset().union(*(deps.get(i, frozenset()) for i in n.input if i))
        for o in n.output:
            deps[o] = d
    return deps


def excluded_nodes(model) -> dict[str, list[str]]:
    """Nodes of one fp32 segment (an ``onnx.ModelProto``) kept in float, by reason (see the module
    doc): ``input_conv`` (convs reading the concatenated A/B/mask or a graph input directly),
    ``global_branch`` (nodes depending on ``global_input`` alone), ``output`` (the conv feeding tanh,
    and the tanh), ``bn_shift`` (the Add of a folded BN's per-channel shift, see
    :func:`fold_relu_batchnorm`: one int8 scale for all its channels would round the small shifts)."""
    graph = model.graph
    graph_inputs = {i.name for i in graph.input}
    prod = _producers(graph)
    deps = _depends_on(graph)
    raw = set(graph_inputs & set(_INPUTS))
    for n in graph.node:  # Concat / Identity of raw inputs are raw too
        if n.op_type in ("Concat", "Identity") and n.input and all(i in raw for i in n.input):
            raw |= set(n.output)
    out = {"input_conv": [], "global_branch": [], "output": [], "bn_shift": []}
    for n in graph.node:
        if n.op_type in ("Conv", "ConvTranspose") and n.input[0] in raw and graph_inputs & set(_INPUTS):
            out["input_conv"].append(n.name)
        elif n.output and all(deps.get(o) == frozenset(["global_input"]) for o in n.output):
            out["global_branch"].append(n.name)
        if n.op_type == "Add" and n.name.endswith(".bnfold"):  # a folded BN's per-channel shift
            out["bn_shift"].append(n.name)
        if n.op_type == "Tanh":
            out["output"].append(n.name)
            src = prod.get(n.input[0])
            if src is not None and src.op_type == "Conv":
                out["output"].append(src.name)
    return {k: v for k, v in out.items() if v}


def fold_relu_batchnorm(model) -> int:
    """Rewrite every Conv -> Relu -> BatchNormalization chain (the end of each backbone stage, where the
    official nets normalise after the ReLU) of an fp32 segment, exactly: with the BN's per-channel gain
    ``a = gamma / sqrt(var + eps) > 0``, ``a * relu(z) = relu(a * z)``, so the gain moves into the conv's
    weights and bias and the BN becomes an Add of its shift ``beta - a * mean``. Why: the BN's gains
    differ by up to ~100x between channels, and applied after a per-tensor 8-bit quantization of the
    ReLU output they multiply the rounding error of the small channels into the largest errors of the
    network (the starter lost 20-60 % of its colourfulness that way); folded, every channel reaches the
    quantizer at its final scale. Chains with a non-positive gain, or whose tensors have other
    consumers, are left alone. Returns the number of chains rewritten."""
    from onnx import helper, numpy_helper

    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    consumers: dict[str, list] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    outputs = {o.name for o in graph.output}
    prod = _producers(graph)
    done = 0
    for bn in list(graph.node):
        if bn.op_type != "BatchNormalization" or len(bn.output) != 1:
            continue
        relu = prod.get(bn.input[0])
        conv = prod.get(relu.input[0]) if relu is not None and relu.op_type == "Relu" else None
        if conv is None or conv.op_type != "Conv" or len(consumers.get(conv.output[0], [])) != 1 \
                or len(consumers.get(relu.output[0], [])) != 1 or {conv.output[0], relu.output[0]} & outputs \
                or not all(i in inits for i in bn.input[1:5]) or conv.input[1] not in inits:
            continue
        gamma, beta, mean, var = (numpy_helper.to_array(inits[i]).astype(np.float64) for i in bn.input[1:5])
        eps = next((a.f for a in bn.attribute if a.name == "epsilon"), 1e-5)
        gain = gamma / np.sqrt(var + eps)
        if not np.all(gain > 0):
            continue
        w = numpy_helper.to_array(inits[conv.input[1]]).astype(np.float64)
        new_w = numpy_helper.from_array((w * gain.reshape(-1, *([1] * (w.ndim - 1)))).astype(np.float32),
                                        conv.input[1] + ".bnfold")
        graph.initializer.append(new_w)
        conv.input[1] = new_w.name
        b = numpy_helper.to_array(inits[conv.input[2]]).astype(np.float64) if len(conv.input) > 2 and conv.input[2] \
            else np.zeros(len(gain))
        new_b = numpy_helper.from_array((b * gain).astype(np.float32), conv.output[0] + ".bnfold_bias")
        graph.initializer.append(new_b)
        if len(conv.input) > 2:
            conv.input[2] = new_b.name
        else:
            conv.input.append(new_b.name)
        shift = numpy_helper.from_array((beta - gain * mean).astype(np.float32).reshape(-1, 1, 1),
                                        bn.output[0] + ".bnfold_shift")
        graph.initializer.append(shift)
        add = helper.make_node("Add", [relu.output[0], shift.name], list(bn.output), name=(bn.name or "bn") + ".bnfold")
        graph.node.insert(list(graph.node).index(bn), add)
        graph.node.remove(bn)
        done += 1
    used = {i for n in graph.node for i in n.input}
    for init in list(graph.initializer):  # the replaced weights, biases and BN parameters
        if init.name not in used:
            graph.initializer.remove(init)
    return done


def _attr(node, name, default=None):
    from onnx import helper

    a = next((a for a in node.attribute if a.name == name), None)
    return default if a is None else helper.get_attribute_value(a)


#: ConvTranspose tap of phase r (0 or 1) at 3x3 offset t (0..2) for kernel 4, stride 2, pad 1 (None: no tap)
_PHASE_TAP = {(0, 0): 3, (0, 1): 1, (1, 1): 2, (1, 2): 0}


def convtranspose_as_conv(model) -> int:
    """Rewrite every ``ConvTranspose`` with kernel 4, stride 2, padding 1 (the nets' 2x upsampling) as
    a 3x3 ``Conv`` (padding 1) with 4x the output channels followed by ``DepthToSpace`` (blocksize 2,
    CRD), exactly: output pixel ``(2m + ry, 2n + rx)`` of the transposed convolution is the sum over
    input pixels ``m - 1 .. m + 1`` with the taps :data:`_PHASE_TAP`, one output channel group per
    phase ``(ry, rx)``. Why: ONNX Runtime has no int8 kernel for ConvTranspose, and its float one was
    the largest cost of the INT8 instance segment at width 1.0 (1.06 s of 2.7 s, 8 crops of 256 px);
    as a Conv it runs as QLinearConv. Returns the number rewritten."""
    from onnx import helper, numpy_helper

    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    done = 0
    for ct in list(graph.node):
        if ct.op_type != "ConvTranspose" or ct.input[1] not in inits or _attr(ct, "group", 1) != 1 \
                or list(_attr(ct, "kernel_shape", [4, 4])) != [4, 4] or list(_attr(ct, "strides", [1, 1])) != [2, 2] \
                or list(_attr(ct, "pads", [0, 0, 0, 0])) != [1, 1, 1, 1] \
                or any(_attr(ct, "output_padding", [0, 0])) or any(d != 1 for d in _attr(ct, "dilations", [1, 1])) \
                or _attr(ct, "output_shape") is not None \
                or _attr(ct, "auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
            continue
        w = numpy_helper.to_array(inits[ct.input[1]])  # (Cin, Cout, 4, 4)
        cin, cout = w.shape[:2]
        k = np.zeros((cout, 2, 2, cin, 3, 3), np.float32)
        for (ry, ty), ky in _PHASE_TAP.items():
            for (rx, tx), kx in _PHASE_TAP.items():
                k[:, ry, rx, :, ty, tx] = w[:, :, ky, kx].T
        name = ct.name or f"convtranspose_{done}"
        kw = numpy_helper.from_array(k.reshape(cout * 4, cin, 3, 3), f"{ct.input[1]}.phases")
        graph.initializer.append(kw)
        ins = [ct.input[0], kw.name]
        if len(ct.input) > 2 and ct.input[2]:
            b = numpy_helper.to_array(inits[ct.input[2]])
            kb = numpy_helper.from_array(np.repeat(b.astype(np.float32), 4), f"{ct.input[2]}.phases")
            graph.initializer.append(kb)
            ins.append(kb.name)
        mid = f"{ct.output[0]}.phases"
        conv = helper.make_node("Conv", ins, [mid], name=name, kernel_shape=[3, 3], pads=[1, 1, 1, 1])
        d2s = helper.make_node("DepthToSpace", [mid], list(ct.output), name=f"{name}.d2s", blocksize=2, mode="CRD")
        at = list(graph.node).index(ct)
        graph.node.insert(at, d2s)
        graph.node.insert(at, conv)
        graph.node.remove(ct)
        done += 1
    used = {i for n in graph.node for i in n.input}
    for init in list(graph.initializer):
        if init.name not in used:
            graph.initializer.remove(init)
    return done


def _group(node) -> int:
    return next((a.i for a in node.attribute if a.name == "group"), 1)


def _channel_absmax(model, tensors: list[str], files: list[Path], threads: int | None = None) -> dict:
    """Per-channel max |x| (axis 1) of the float ``tensors`` of ``model`` over the recorded feeds ``files``."""
    import onnx
    import onnxruntime as ort

    from ._ort import session_options

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    have = {o.name for o in probe.graph.output}
    for t in tensors:
        if t not in have:
            probe.graph.output.append(onnx.helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None))
    sess = ort.InferenceSession(probe.SerializeToString(), session_options(threads), providers=["CPUExecutionProvider"])
    out: dict[str, np.ndarray] = {}
    for f in files:
        with np.load(f) as z:
            feeds = {k: z[k] for k in z.files}
        for t, v in zip(tensors, sess.run(tensors, feeds)):
            m = np.abs(v).max(axis=tuple(i for i in range(v.ndim) if i != 1)) if v.size else np.zeros(v.shape[1])
            out[t] = m if t not in out else np.maximum(out[t], m)
    return out


def _foldable_source(graph, tensor: str, consumers: dict, outputs: set):
    """For the input ``tensor`` of a convolution: ``(conv1, shift_add)`` when it is ``Relu(conv1(..))``,
    optionally followed by a folded BN's shift Add (``*.bnfold``), with every tensor on the way used
    once and no segment output; else None. Then a per-channel ``1/s`` on conv1's output channels (and
    on the shift) gives exactly ``tensor / s``, since ``relu(z / s) = relu(z) / s`` for ``s > 0``."""
    prod = _producers(graph)
    inits = {i.name for i in graph.initializer}
    shift = None
    node = prod.get(tensor)
    if node is not None and node.op_type == "Add" and node.name.endswith(".bnfold") and node.input[1] in inits:
        shift, tensor = node, node.input[0]
        if len(consumers.get(tensor, [])) != 1 or tensor in outputs:
            return None
        node = prod.get(tensor)
    if node is None or node.op_type != "Relu":
        return None
    z = node.input[0]
    conv1 = prod.get(z)
    if conv1 is None or conv1.op_type != "Conv" or _group(conv1) != 1 or len(consumers.get(z, [])) != 1 \
            or z in outputs or conv1.input[1] not in inits:
        return None
    return conv1, shift


def equalize_channels(model, files: list[Path], skip=(), threads: int | None = None, max_files: int = 4,
                      min_spread: float = 8.0) -> dict:
    """Per-channel range equalization of every quantized convolution's input (cross-layer equalization,
    Nagel et al. 2019, with the activation ranges measured on the calibration feeds ``files``), in place
    and exact in float. For a convolution (``Conv``/``ConvTranspose``, group 1, not in ``skip``) whose
    input channel ``c`` reaches ``a_c`` (max |x| on up to ``max_files`` recorded feeds) and whose weights
    on that channel reach ``w_c``: ``s_c = sqrt(a_c / w_c)``, the input channel is divided by ``s_c``
    and the weights on it multiplied by ``s_c``, so both ranges become ``sqrt(a_c * w_c)``: one
    per-tensor 8-bit activation scale no longer spends its levels on a few wide channels (the
    starter's features: channel maxima from 0.03 to 46) while the per-channel weight scales absorb
    the difference. Where the input is ``Relu(conv1)`` (optionally + a folded BN shift) used by this
    convolution alone, the ``1/s`` goes into conv1's output channels (free); elsewhere (segment
    inputs, segment outputs read again, tensors with several readers) a float ``Mul`` by ``1/s`` is
    inserted before the convolution, but only where the input's largest channel range is at least
    ``min_spread`` times the median one (the Mul is a float pass over the tensor and costs INT8 speed:
    measured at width 1.0 with 28 Muls in the instance segment, 3.2 s against 2.6 s without).
    Segment outputs never change. Returns counts
    ``{"folded": n, "mul": m}``."""
    from onnx import helper, numpy_helper

    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    skip = set(skip)
    targets = [n for n in graph.node if n.op_type in ("Conv", "ConvTranspose") and n.name not in skip
               and _group(n) == 1 and n.input[1] in inits and n.input[0] not in inits]
    if not targets or not files:
        return {"folded": 0, "mul": 0}
    tensors = sorted({n.input[0] for n in targets})
    amax = _channel_absmax(model, tensors, files[:max_files], threads=threads)
    outputs = {o.name for o in graph.output}
    counts = {"folded": 0, "mul": 0}
    for conv in targets:
        consumers: dict[str, list] = {}
        for n in graph.node:
            for i in n.input:
                consumers.setdefault(i, []).append(n)
        if sum(1 for n in graph.node for i in n.input if i == conv.input[1]) != 1:
            continue  # shared weights
        x = conv.input[0]
        a = amax[x].astype(np.float64)
        w = numpy_helper.to_array(inits[conv.input[1]]).astype(np.float64)
        in_axis = 1 if conv.op_type == "Conv" else 0
        wc = np.abs(np.moveaxis(w, in_axis, 0)).reshape(w.shape[in_axis], -1).max(axis=1)
        s = np.ones_like(a)
        ok = (a > 0) & (wc > 0)
        s[ok] = np.sqrt(a[ok] / wc[ok])
        if not ok.any():
            continue
        s[~ok] = np.exp(np.mean(np.log(s[ok])))  # (dead channels: any scale; the typical one)
        src = _foldable_source(graph, x, consumers, outputs) \
            if len(consumers.get(x, [])) == 1 and x not in outputs else None
        if src is not None and sum(1 for n in graph.node for i in n.input if i == src[0].input[1]) != 1:
            src = None
        if src is None and a[ok].max() < min_spread * np.median(a[ok]):
            continue  # a Mul (a pass over the tensor) only where one 8-bit scale wastes > log2(min_spread) bits
        shape = [1] * w.ndim
        shape[in_axis] = -1
        _replace_init(graph, inits, conv, 1, (w * s.reshape(shape)).astype(np.float32), ".eq")
        if src is not None:
            conv1, shift = src
            w1 = numpy_helper.to_array(inits[conv1.input[1]]).astype(np.float64)
            w1 = w1 / s.reshape(-1, *([1] * (w1.ndim - 1)))
            _replace_init(graph, inits, conv1, 1, w1.astype(np.float32), ".eqo")
            if len(conv1.input) > 2 and conv1.input[2]:
                b1 = numpy_helper.to_array(inits[conv1.input[2]]).astype(np.float64)
                _replace_init(graph, inits, conv1, 2, (b1 / s).astype(np.float32), ".eqo")
            if shift is not None:
                sh = numpy_helper.to_array(inits[shift.input[1]]).astype(np.float64)
                _replace_init(graph, inits, shift, 1, (sh / s.reshape(sh.shape)).astype(np.float32), ".eqo")
            counts["folded"] += 1
        else:
            inv = numpy_helper.from_array((1.0 / s).astype(np.float32).reshape(1, -1, 1, 1), f"{conv.name}.eq_inv")
            graph.initializer.append(inv)
            inits[inv.name] = inv
            mul = helper.make_node("Mul", [x, inv.name], [f"{conv.name}.eq_in"], name=f"{conv.name}.eq")
            graph.node.insert(list(graph.node).index(conv), mul)
            conv.input[0] = mul.output[0]
            counts["mul"] += 1
    used = {i for n in graph.node for i in n.input}
    for init in list(graph.initializer):
        if init.name not in used:
            graph.initializer.remove(init)
    return counts


def _replace_init(graph, inits: dict, node, index: int, value: np.ndarray, suffix: str) -> None:
    """Point input ``index`` of ``node`` at a new initializer holding ``value``."""
    from onnx import numpy_helper

    name = node.input[index] + suffix
    while name in inits:
        name += "_"
    t = numpy_helper.from_array(value, name)
    graph.initializer.append(t)
    inits[name] = t
    node.input[index] = name


def _name_nodes(model) -> None:
    """Give every unnamed node a unique name (the quantizer selects nodes by name)."""
    seen = {n.name for n in model.graph.node if n.name}
    for i, n in enumerate(model.graph.node):
        if not n.name:
            name = f"{n.op_type}_{i}"
            while name in seen:
                name += "_"
            n.name = name
            seen.add(name)


# ----------------------------------------------------------------------------- quantization
class _QuietAdvice:
    """Logging filter dropping onnxruntime.quantization's advice to run its pre-processing (the segments
    are already constant-folded and shape-free by design, see instcolor.export)."""

    def filter(self, record) -> bool:
        return "pre-processing" not in str(record.msg)


class _Reader:
    """``CalibrationDataReader`` over recorded feeds (npz files)."""

    def __init__(self, files: list[Path]):
        self.files = list(files)
        self.i = 0

    def get_next(self):
        if self.i >= len(self.files):
            return None
        with np.load(self.files[self.i]) as z:
            feeds = {k: z[k] for k in z.files}
        self.i += 1
        return feeds

    def rewind(self):
        self.i = 0


def quantize_segment(src, dst, files: list[Path], work_dir=None, settings: dict | None = None,
                     threads: int | None = None) -> dict:
    """Quantize one fp32 segment file ``src`` into ``dst`` with its recorded inputs ``files``.
    Returns ``{"excluded": {reason: [node names]}}``."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, \
        quantize_static

    class Reader(_Reader, CalibrationDataReader):
        pass

    import logging

    st = dict(SETTINGS, **(settings or {}))
    model = onnx.load(str(src))
    folded = fold_relu_batchnorm(model)
    upsampling = convtranspose_as_conv(model) if st.get("convtranspose_as_conv") else 0
    _name_nodes(model)
    excluded = excluded_nodes(model)
    equalized = {}
    if st.get("equalize"):
        equalized = equalize_channels(model, files, skip={n for v in excluded.values() for n in v}, threads=threads)
    root = logging.getLogger()
    quiet = _QuietAdvice()
    root.addFilter(quiet)  # (the quantizer logs "consider pre-processing" on the root logger per call)
    work = Path(tempfile.mkdtemp(prefix="q.", dir=work_dir))
    try:
        named = work / "named.onnx"
        onnx.save(model, str(named))
        extra = dict(ActivationSymmetric=st["activations"] == "s8", WeightSymmetric=True)
        if st["method"] == "percentile":
            extra["CalibPercentile"] = float(st["percentile"])
        quantize_static(str(named), str(dst), Reader(files), quant_format=QuantFormat.QDQ,
                        op_types_to_quantize=list(st["ops"]), per_channel=True, reduce_range=False,
                        activation_type=QuantType.QInt8 if st["activations"] == "s8" else QuantType.QUInt8,
                        weight_type=QuantType.QInt8,
                        nodes_to_exclude=sorted({n for v in excluded.values() for n in v}),
                        calibrate_method=CalibrationMethod.Percentile if st["method"] == "percentile"
                        else CalibrationMethod.MinMax, extra_options=extra)
    finally:
        root.removeFilter(quiet)
        shutil.rmtree(work, ignore_errors=True)
    return {"excluded": excluded, "folded": folded, "equalized": equalized, "upsampling": upsampling}


def _snr_db(ref: np.ndarray, out: np.ndarray) -> float:
    err = float(np.sum((ref.astype(np.float64) - out) ** 2))
    return float("inf") if err == 0 else 10.0 * np.log10(max(float(np.sum(ref.astype(np.float64) ** 2)), 1e-30) / err)


def _psnr_db(ref: np.ndarray, out: np.ndarray) -> float:
    """PSNR of normalised ab (peak 1 = 110 ab units): about the PSNR of the composed RGB."""
    mse = float(np.mean((ref.astype(np.float64) - out) ** 2))
    return float("inf") if mse == 0 else -10.0 * np.log10(mse)


def segment_snr(fp32_dir, quantized: dict, batches: list, threads: int | None = None, each: bool = True) -> dict:
    """The accuracy guard: for each segment in ``quantized`` ({segment: INT8 file}), the fp32 export at
    ``fp32_dir`` with that one segment replaced by its INT8 version runs the calibration ``batches``;
    returns {segment: dB of the final output against the all-fp32 output} (the PSNR of the ab, peak 1,
    for the net segments; the SNR of the class logits for ``head.*``; on the batches the segment takes
    part in), and under ``None`` the ab PSNR with all of them together."""
    import onnxruntime as ort

    from ._ort import session_options
    from .backends.onnxruntime_backend import OnnxRuntimeBackend
    from .pipeline import native_ops
    from .qdq_ort import onnxruntime_bytes

    backend = OnnxRuntimeBackend(fp32_dir, threads=threads)
    ops = native_ops()
    if ops is not None:
        backend.set_fuse(ops.fuse_instances)
    heads = backend.has_class_head

    def outputs():
        res = [backend.run_heads(b, logits=heads) for b in batches]
        return [h.ab for h in res], [h.logits for h in res] if heads else []

    ref_ab, ref_logits = outputs()
    fp32_sessions = dict(backend.sessions)
    so = session_options(threads)
    int8_sessions = {name: ort.InferenceSession(onnxruntime_bytes(f), so, providers=["CPUExecutionProvider"])
                     for name, f in quantized.items()}

    def snr(ab, logits, name) -> float:
        if name is None:
            return _psnr_db(np.concatenate(ref_ab), np.concatenate(ab))
        plain = name in ("full", "head.full")
        used = [i for i, b in enumerate(batches) if (len(b.inst_image) == 0) == plain]
        if not used:
            return float("inf")
        if name.startswith("head."):
            return _snr_db(np.concatenate([ref_logits[i] for i in used]), np.concatenate([logits[i] for i in used]))
        return _psnr_db(np.concatenate([ref_ab[i] for i in used]), np.concatenate([ab[i] for i in used]))

    out = {}
    for name, sess in (int8_sessions.items() if each else ()):
        backend.sessions = dict(fp32_sessions, **{name: sess})
        out[name] = snr(*outputs(), name)
    backend.sessions = dict(fp32_sessions, **int8_sessions)
    out[None] = snr(*outputs(), None)
    return out


def _combined_guard(fp32_dir, files: dict, ranked: list, batches: list, min_total_db, threads=None):
    """The second half of the accuracy guard: ``ranked`` (segment names, most accurate alone first)
    -> ``(k, db)``: the largest ``k`` such that the first ``k`` segments in INT8 together keep the ab
    PSNR against fp32 at ``min_total_db`` or more (bisection over ``k``; None: all of them), and that
    PSNR (inf for k = 0)."""
    cache = {0: float("inf")}

    def db(k: int) -> float:
        if k not in cache:
            cache[k] = segment_snr(fp32_dir, {n: files[n] for n in ranked[:k]}, batches, threads=threads,
                                   each=False)[None]
        return cache[k]

    n = len(ranked)
    if min_total_db is None or db(n) >= min_total_db:
        return n, db(n)
    lo, hi = 0, n  # db(lo) passes, db(hi) fails
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if db(mid) >= min_total_db else (lo, mid)
    return lo, db(lo)


def as_calibration(calibration, count: int | None = None, detector=None) -> Calibration:
    """``calibration`` as a :class:`Calibration`: one already, or a photo folder; ``count`` /
    ``detector`` (when given) replace its photo count / detector."""
    if isinstance(calibration, Calibration):
        if count is None and detector is None:
            return calibration
        return Calibration(calibration.folder, calibration.count if count is None else count, calibration.size,
                           calibration.detector if detector is None else detector,
                           None if detector is not None else calibration.boxes, calibration.seed)
    if isinstance(calibration, (str, os.PathLike)):
        return Calibration(calibration, DEFAULT_COUNT if count is None else count, detector=detector)
    raise ValueError(f"calibration: expected a folder of photos or an instcolor.quantize.Calibration, "
                     f"got {type(calibration).__name__}")


def _publish(tmp: Path, out_dir: Path, manifest: dict, owned: set) -> None:
    from . import export as _export

    publish = getattr(_export, "publish_export", None)
    if publish is not None:
        publish(tmp, out_dir, manifest, owned)
        return
    (tmp / _export.MANIFEST).write_text(json.dumps(manifest, indent=1))
    _export.publish_dir(tmp)
    new = [s["file"] for s in manifest["segments"]] + [_export.MANIFEST]
    if not out_dir.exists():
        try:
            os.replace(tmp, out_dir)
            return
        except OSError:
            if not out_dir.is_dir():
                raise
    _export._move_into(tmp, out_dir, new, owned | (_export._manifest_files(out_dir) or set()))


def quantize_export_dir(fp32_dir, out_dir, calibration, check: bool = True, owned=(), threads: int | None = None) -> dict:
    """The fp32 export at ``fp32_dir`` -> an INT8 export at ``out_dir`` (see the module doc); ``out_dir``
    is new, empty, or an earlier export replaced file by file (the rules of
    :func:`instcolor.export.export_segments`, ``owned`` as there). Returns the INT8 manifest
    (``precision: "int8"`` and the ``int8`` record). :class:`CalibrationError` naming the folder or
    photo when the calibration photos cannot be used (checked before anything is written)."""
    import onnx
    import onnxruntime

    from .export import _bare_name, _check_replaceable, read_manifest

    calibration = as_calibration(calibration)
    fp32_dir, out_dir = Path(fp32_dir), Path(out_dir)
    manifest = read_manifest(fp32_dir)
    if manifest["precision"] != "fp32":
        raise ValueError(f"{fp32_dir}: INT8 exports are made from an fp32 export, this one is {manifest['precision']}")
    identity = calibration.identity()  # (checks the photos)
    owned = {n for n in owned if _bare_name(n)}
    if out_dir.exists():
        _check_replaceable(out_dir, owned)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        work = tmp / ".calibration"
        work.mkdir()
        recorded = record_segment_inputs(fp32_dir, calibration, work, threads=threads)
        summary = recorded.pop(None)
        excluded = {}
        for seg in manifest["segments"]:
            files = recorded.get(seg["name"])
            if not files:
                raise CalibrationError(f"{calibration.folder}: the calibration run never reached segment {seg['name']}")
            dst = tmp / seg["file"]
            excluded[seg["name"]] = quantize_segment(fp32_dir / seg["file"], dst, files, work_dir=work,
                                                     threads=threads)["excluded"]
            if check:
                onnx.checker.check_model(str(dst))
            for f in files:
                f.unlink()
        shutil.rmtree(work)
        # the accuracy guard: segments whose INT8 version alone costs too much stay fp32
        float_segments = {}
        name_file = {s["name"]: s["file"] for s in manifest["segments"]}
        if SETTINGS.get("min_psnr_db") is not None and summary["batches"]:
            snr = segment_snr(fp32_dir, {s["name"]: tmp / s["file"] for s in manifest["segments"]},
                              summary["batches"], threads=threads)
            for seg in manifest["segments"]:
                limit = SETTINGS["min_logit_snr_db" if seg["name"].startswith("head.") else "min_psnr_db"]
                if snr[seg["name"]] < limit:
                    float_segments[seg["name"]] = round(snr[seg["name"]], 2)
                    shutil.copyfile(fp32_dir / seg["file"], tmp / seg["file"])
            files = {s["name"]: tmp / s["file"] for s in manifest["segments"]}
            kept = sorted((n for n in files if n not in float_segments), key=lambda n: -snr[n])
            k, final_snr = _combined_guard(fp32_dir, files, kept, summary["batches"], SETTINGS.get("min_total_db"),
                                           threads=threads)
            for name in kept[k:]:  # the least accurate ones, until all together pass min_total_db
                float_segments[name] = round(snr[name], 2)
                shutil.copyfile(fp32_dir / name_file[name], tmp / name_file[name])
            segment_snrs = {k: round(v, 2) for k, v in snr.items() if k is not None}
        else:
            segment_snrs, final_snr = {}, None
        record = dict(recipe=RECIPE, format="QDQ", weights="int8 symmetric, per output channel",
                      activations=("int8 symmetric per tensor (zero point 0)" if SETTINGS["activations"] == "s8"
                                   else "uint8 asymmetric per tensor"),
                      method=SETTINGS["method"], quantized_ops=list(SETTINGS["ops"]), excluded=excluded,
                      guard=dict(min_ab_psnr_db=SETTINGS.get("min_psnr_db"), min_total_db=SETTINGS.get("min_total_db"),
                                 min_logit_snr_db=SETTINGS.get("min_logit_snr_db")),
                      segment_db=segment_snrs, float_segments=float_segments,
                      ab_psnr_db=None if final_snr is None else round(final_snr, 2),
                      onnxruntime=onnxruntime.__version__,
                      calibration=dict(folder=Path(calibration.folder).name, photos=summary["photos"],
                                       size=summary["size"], boxes=summary["boxes"], instances=summary["instances"],
                                       hinted_runs=summary["hinted_runs"], seed=int(calibration.seed),
                                       identity=identity))
        manifest = dict(manifest, precision="int8", int8=record)
        _publish(tmp, out_dir, manifest, owned)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return manifest


def export_int8(nets: dict, out_dir, calibration, size: int = 64, check: bool = True, owned=()) -> dict:
    """``export_segments(nets, out_dir, precision="int8", calibration=...)``: the fp32 export in a
    temporary folder beside ``out_dir``, then :func:`quantize_export_dir`."""
    from .export import export_segments

    calibration = as_calibration(calibration)
    calibration.photos()  # a bad folder fails before the (slow) fp32 export
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.fp32.", dir=out_dir.parent))
    try:
        export_segments(nets, tmp / "fp32", precision="fp32", size=size, check=check)
        return quantize_export_dir(tmp / "fp32", out_dir, calibration, check=check, owned=owned)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def int8_cache_name(weights_sha256: str, calibration: Calibration) -> str:
    """Cache folder name (under ``cache_dir()/"onnx"``) of the INT8 export of the weights with hash
    ``weights_sha256`` calibrated with ``calibration``: the fp32 export's name
    (:func:`instcolor.export.export_cache_name`) with ``int8`` and the calibration identity."""
    from .export import FORMAT

    return f"{weights_sha256[:20]}-seg{FORMAT.rsplit('/', 1)[-1]}-int8-{calibration.identity()[:16]}"


#: The folder, inside a weights folder, of the INT8 export that ships with those weights (the built-in
#: starter has one: python benchmarks/make_starter_int8.py).
SHIPPED_DIR = "int8"


def weights_sha256(path) -> str:
    """The weights hash (:func:`instcolor.export.weights_hash`) of the weights folder ``path``."""
    try:
        from .onnx_graphs import load_weight_arrays, weights_hash_arrays
    except ImportError:  # (no torch-free reader in this install)
        from .export import weights_hash
        from .models import load_nets

        return weights_hash(load_nets(path))
    return weights_hash_arrays(load_weight_arrays(path))


def int8_export_for(path, calibration=None, fp32_export=None, shipped_check: bool = True) -> Path:
    """The INT8 export folder to run for ``path``:

    * an INT8 export folder: itself (another precision: ValueError);
    * a weights folder, no ``calibration``, with its own INT8 export in ``path/int8`` (the built-in
      starter): that one, once its manifest's weights hash matches the weights (ValueError saying
      how to regenerate it otherwise);
    * a weights folder and ``calibration`` (a photo folder or :class:`Calibration`): the INT8 export in
      the cache (``cache_dir()/"onnx"``, keyed by the weights hash and the calibration identity),
      made on first use from the fp32 export ``fp32_export()`` returns (a folder);
    * a weights folder without either: ValueError asking for ``calibration``.
    """
    from ._cachedir import cache_dir
    from .export import MANIFEST, read_manifest

    path = Path(path)
    if (path / MANIFEST).is_file():
        m = read_manifest(path)
        if m["precision"] != "int8":
            raise ValueError(f"{path} is an {m['precision']} export; precision='int8' needs an INT8 export "
                             "(instcolor export --precision int8 --calibration DIR) or weights plus calibration=DIR")
        return path
    if calibration is None:
        shipped = path / SHIPPED_DIR
        if (shipped / MANIFEST).is_file():
            m = read_manifest(shipped)
            if m["precision"] != "int8":
                raise ValueError(f"{shipped}: expected an int8 export, this one is {m['precision']}")
            if shipped_check and m["weights_sha256"] != weights_sha256(path):
                raise ValueError(f"{shipped}: this INT8 export was made from other weights than those in {path} "
                                 "(weights_sha256 differs); regenerate it (for the built-in starter: "
                                 "python benchmarks/make_starter_int8.py) or pass calibration=DIR")
            missing = [seg for seg in m["segments"] if not (shipped / seg["file"]).is_file()]
            if not missing:
                return shipped
            return _complete_shipped(shipped, m, missing, fp32_export)
        raise ValueError(f"precision='int8' with the weights {path}: give calibration=DIR (a folder of photos; "
                         "--calibration DIR on the command line) or an INT8 export folder")
    calibration = as_calibration(calibration)
    target = cache_dir() / "onnx" / int8_cache_name(weights_sha256(path), calibration)
    if not (target / MANIFEST).is_file():
        if fp32_export is None:
            raise ValueError("int8_export_for: no fp32 export to quantize (fp32_export)")
        quantize_export_dir(fp32_export(), target, calibration)
    return target


def _complete_shipped(shipped: Path, manifest: dict, missing: list, fp32_export) -> Path:
    """A shipped INT8 export leaves out the files of the segments its accuracy guard kept in fp32 (they
    would be fp32 copies, as large as the whole fp32 export; the package keeps the starter small): the
    complete export is assembled once in the cache from the shipped files and the fp32 export of
    the same weights (``fp32_export()``, checked to be of the same weights)."""
    from ._cachedir import cache_dir
    from .export import MANIFEST, read_manifest

    allowed = set((manifest.get("int8") or {}).get("float_segments") or {})
    bad = [seg["file"] for seg in missing if seg["name"] not in allowed]
    if bad:
        raise ValueError(f"{shipped}: segment file(s) {', '.join(bad[:3])} missing (listed in its manifest.json)")
    digest = hashlib.sha256((shipped / MANIFEST).read_bytes()).hexdigest()[:16]
    target = cache_dir() / "onnx" / f"{manifest['weights_sha256'][:20]}-seg2-int8-shipped-{digest}"
    if (target / MANIFEST).is_file():
        return target
    if fp32_export is None:
        raise ValueError(f"{shipped}: its fp32 segments are built from the weights; no fp32 export given")
    fp32 = Path(fp32_export())
    if read_manifest(fp32)["weights_sha256"] != manifest["weights_sha256"]:
        raise ValueError(f"{fp32}: not the fp32 export of the weights of {shipped}")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        names = {seg["file"] for seg in missing}
        for seg in manifest["segments"]:
            src = fp32 / seg["file"] if seg["file"] in names else shipped / seg["file"]
            shutil.copyfile(src, tmp / seg["file"])
        _publish(tmp, target, manifest, set())
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def qdq_summary(path) -> dict:
    """Counts of one QDQ segment file: QuantizeLinear / DequantizeLinear nodes, the float ops left, and
    the weights quantized per channel (a DequantizeLinear of an int8 initializer with a 1-D scale of
    the output channels, even of one channel) or per tensor (a scalar scale)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    inits = {i.name: i for i in model.graph.initializer}
    out = dict(quantize=0, dequantize=0, per_channel_weights=0, per_tensor_weights=0, float_convs=0)
    consumers = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    weight_inputs = {n.input[1] for n in model.graph.node if n.op_type in ("Conv", "ConvTranspose")}
    for n in model.graph.node:
        if n.op_type == "QuantizeLinear":
            out["quantize"] += 1
        elif n.op_type == "DequantizeLinear":
            out["dequantize"] += 1
            w = inits.get(n.input[0])
            if w is not None and w.data_type == onnx.TensorProto.INT8 and n.output[0] in weight_inputs:
                scale = numpy_helper.to_array(inits[n.input[1]])
                out["per_channel_weights" if scale.ndim == 1 else "per_tensor_weights"] += 1
        elif n.op_type in ("Conv", "ConvTranspose") and n.input[1] in inits:
            out["float_convs"] += 1
    return out

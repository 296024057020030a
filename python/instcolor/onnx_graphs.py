"""The ONNX segments of an export built straight from the weights with ``onnx.helper`` (no PyTorch).

The architecture is fixed (:mod:`instcolor.models.arch`, the layer tables below), so every segment
of :mod:`instcolor.export` (format ``instcolor-segments/2``: ``full``, ``instance``, the 13
``fusion.<point>``, ``fusion.out``, ``head.full``, ``head.fusion``, and ``global_input`` where a net
has the SIGGRAPH'17 global hints branch) is written node by node from the state-dict arrays: the
same operators, attributes, tensor names and dynamic dims as the ``torch.onnx`` export, in opset 17.
This is how the torch-free install (``pip install instcolor``, no ``torch`` extra) gets its ONNX
Runtime segments, and how the ONNX Runtime backend exports bundles on every install
(:func:`instcolor.backends.make_backend`).

Weights as arrays: :func:`load_weight_arrays` reads a bundle with ``safetensors.numpy`` (no
PyTorch) or, where PyTorch is installed, an official ``.pth`` layout / training run folder; without
PyTorch a ``.pth`` folder is refused with a message pointing to ``instcolor bundle``.
:func:`check_states` checks arrays against the nets' state-dict layout as strictly as
:func:`instcolor.models.load_state_dict_strict` does.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from .errors import CheckpointError
from .models.state import _OPTIONAL_SUFFIXES, _summarise, fit_problems
from .models.arch import (BLEND_INNER_CHANNELS, BLOCK_NAMES, DOWN_BLOCKS, FEATURE_LEVELS, FEATURE_NAMES,
                          GLOBAL_INPUT_CHANNELS, NUM_CLASSES, RELU_FOLLOWED, SAME_BLOCKS, STAGE_INPUTS, UP_BLOCKS,
                          channels, feature_channels)

KINDS = ("full", "instance", "fusion")
IR_VERSION = 8  # what torch.onnx writes for opset 17; ONNX Runtime >= 1.14 and TensorRT 10 read it
BN_EPS = 1e-5
LEAKY_SLOPE = 0.2
BUILDER = "onnx.helper"  # the manifest's "built_by" for exports made here


# ----------------------------------------------------------------------------- layer tables
def _seq(prefix: str, cin: int, cout: int, n: int, dilation: int = 1) -> list[tuple]:
    """The official ``n`` x (conv 3x3 + ReLU) then BatchNorm block, as (op, ...) steps."""
    ops: list[tuple] = []
    for i in range(n):
        ops += [("conv", f"{prefix}.{2 * i}", cin if i == 0 else cout, cout, 3, dilation), ("relu",)]
    return ops + [("bn", f"{prefix}.{2 * n}", cout)]


def _up(prefix: str, cin: int, cout: int, n: int, last_bn: bool = True) -> list[tuple]:
    """The official up block: ReLU first, then ``n`` convs (ReLU, or LeakyReLU(0.2) last without BN), BN."""
    ops: list[tuple] = [("relu",)]
    for i in range(n):
        ops.append(("conv", f"{prefix}.{1 + 2 * i}", cin if i == 0 else cout, cout, 3, 1))
        ops.append(("relu",) if (i < n - 1 or last_bn) else ("lrelu",))
    if last_bn:
        ops.append(("bn", f"{prefix}.{1 + 2 * n}", cout))
    return ops


def backbone_blocks(width: float, input_nc: int = 4, output_nc: int = 2) -> dict[str, list[tuple]]:
    """The backbone's blocks at ``width`` (official ``SIGGRAPHGenerator``), by attribute name."""
    c = channels(width)
    c64, c128, c256, c512 = c[64], c[128], c[256], c[512]
    return {
        "model1": _seq("model1", input_nc, c64, 2), "model2": _seq("model2", c64, c128, 2),
        "model3": _seq("model3", c128, c256, 3), "model4": _seq("model4", c256, c512, 3),
        "model5": _seq("model5", c512, c512, 3, 2), "model6": _seq("model6", c512, c512, 3, 2),
        "model7": _seq("model7", c512, c512, 3),
        "model8up": [("convT", "model8up.0", c512, c256)], "model8": _up("model8", c256, c256, 2),
        "model9up": [("convT", "model9up.0", c256, c128)], "model9": _up("model9", c128, c128, 1),
        "model10up": [("convT", "model10up.0", c128, c128)], "model10": _up("model10", c128, c128, 1, last_bn=False),
        "model3short8": [("conv", "model3short8.0", c256, c256, 3, 1)],
        "model2short9": [("conv", "model2short9.0", c128, c128, 3, 1)],
        "model1short10": [("conv", "model1short10.0", c64, c128, 3, 1)],
        "model_class": [("conv", "model_class.0", c256, NUM_CLASSES, 1, 1)],
        "model_out": [("conv", "model_out.0", c128, output_nc, 1, 1), ("tanh",)],
    }


def global_blocks(width: float) -> list[tuple]:
    """The SIGGRAPH'17 global hints branch (``global_net.model``): four 1x1 convs, ReLUs between."""
    c512 = channels(width)[512]
    ops: list[tuple] = []
    for i in range(4):
        ops.append(("conv", f"global_net.model.{2 * i}", GLOBAL_INPUT_CHANNELS if i == 0 else c512, c512, 1, 1))
        if i < 3:
            ops.append(("relu",))
    return ops


def logit_blocks(prefix: str, cin: int) -> list[tuple]:
    """One blend block's logit stack (``simple_instance_conv`` / ``simple_bg_conv``)."""
    inner = BLEND_INNER_CHANNELS
    return [("conv", f"{prefix}.0", cin, inner, 3, 1), ("relu",), ("conv", f"{prefix}.2", inner, inner, 3, 1), ("relu",),
            ("conv", f"{prefix}.4", inner, 1, 3, 1), ("relu",)]


def _param_shapes(ops: list[tuple]) -> dict[str, tuple]:
    out: dict[str, tuple] = {}
    for op in ops:
        if op[0] == "conv":
            _, name, cin, cout, k, _ = op
            out[f"{name}.weight"], out[f"{name}.bias"] = (cout, cin, k, k), (cout,)
        elif op[0] == "convT":
            _, name, cin, cout = op
            out[f"{name}.weight"], out[f"{name}.bias"] = (cin, cout, 4, 4), (cout,)
        elif op[0] == "bn":
            _, name, ch = op
            for leaf in ("weight", "bias", "running_mean", "running_var"):
                out[f"{name}.{leaf}"] = (ch,)
            out[f"{name}.num_batches_tracked"] = ()
    return out


def state_shapes(kind: str, width: float, global_hints: bool = False) -> dict[str, tuple]:
    """State-dict key -> shape of the net ``kind`` ('full' | 'instance' | 'fusion') at ``width``, with
    the global hints branch when ``global_hints`` (the keys the PyTorch nets have, in their order)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    out: dict[str, tuple] = {}
    if kind == "fusion":  # the blend blocks come first in the official state dict
        fc = feature_channels(width)
        for n in FEATURE_NAMES:
            for part in ("simple_instance_conv", "simple_bg_conv"):
                out.update(_param_shapes(logit_blocks(f"{BLOCK_NAMES[n]}.{part}", fc[n])))
        for part in ("simple_instance_conv", "simple_bg_conv"):
            out.update(_param_shapes(logit_blocks(f"weight_layerout.{part}", 2)))
    for ops in backbone_blocks(width).values():
        out.update(_param_shapes(ops))
    if global_hints:
        out.update(_param_shapes(global_blocks(width)))
    return out


# ----------------------------------------------------------------------------- weights as arrays
def _width_of(state: dict, source: str) -> float:
    w = state.get("model1.0.weight")
    if not isinstance(w, np.ndarray) or w.ndim != 4:
        raise CheckpointError(f"{source}: no 'model1.0.weight' conv weight; not an InstColorization net")
    if not 1 <= w.shape[0] <= 64:
        raise CheckpointError(f"{source}: 'model1.0.weight' has {w.shape[0]} output channels; an InstColorization "
                              "net has 1 to 64 (64 = width 1.0)")
    return w.shape[0] / 64.0


class WeightArrays(dict):
    """{'full', 'instance', 'fusion': {state-dict key: array}} checked by :func:`check_states`, with
    the nets' ``width`` (recorded, not re-inferred: channel counts round per layer)."""

    def __init__(self, states: dict, width: float):
        super().__init__(states)
        self.width = float(width)


def check_states(states: dict, source: str = "weights", width: float | None = None) -> WeightArrays:
    """``states`` ({'full', 'instance', 'fusion': {key: array}}) checked against the nets' layout ->
    the same as float32 arrays (``num_batches_tracked`` int64; a missing one is added as 0, as a
    PyTorch net has it). ``width``: the recorded width (None: inferred from ``model1.0.weight``).
    :class:`CheckpointError` naming ``source`` lists missing / unexpected / mis-shaped keys, arrays
    that are not real numbers, and nets of different widths."""
    if not isinstance(states, dict) or set(states) != set(KINDS):
        raise CheckpointError(f"{source}: expected the nets {', '.join(KINDS)}")
    widths = {kind: (width if width is not None else _width_of(states[kind], f"{source} [{kind}]")) for kind in KINDS}
    if len(set(widths.values())) != 1:
        raise CheckpointError(f"{source}: the three nets have different widths {widths}")
    out = {}
    for kind in KINDS:
        state, where = states[kind], f"{source} [{kind}]"
        bad = [k for k, v in state.items() if not isinstance(k, str) or not isinstance(v, np.ndarray)
               or not (np.issubdtype(v.dtype, np.floating) or np.issubdtype(v.dtype, np.integer))]
        if bad:
            raise CheckpointError(f"{where}: entries that are not real-valued arrays: {_summarise(map(str, bad), 4)}")
        expected = state_shapes(kind, widths[kind], any(k.startswith("global_net.") for k in state))
        parts = fit_problems({k: tuple(v) for k, v in expected.items()}, {k: tuple(v.shape) for k, v in state.items()})
        if parts:
            raise CheckpointError(f"{where} does not fit the {kind} net: " + "; ".join(parts))
        arrays = {}
        for k in expected:
            if k.endswith(_OPTIONAL_SUFFIXES):
                arrays[k] = np.asarray(state.get(k, np.zeros((), np.int64)), np.int64)
            else:
                arrays[k] = np.ascontiguousarray(state[k], np.float32)  # (not checked for finiteness, as torch's loader)
        out[kind] = arrays
    return WeightArrays(out, widths["full"])


def arrays_from_nets(nets: dict) -> WeightArrays:
    """PyTorch nets ({'full', 'instance', 'fusion'}) -> their state dicts as numpy arrays (checked)."""
    states = {kind: {k: v.detach().cpu().contiguous().numpy() for k, v in nets[kind].state_dict().items()}
              for kind in KINDS}
    return check_states(states, "nets", width=float(nets["full"].width))


def load_weight_arrays(path: str | os.PathLike) -> WeightArrays:
    """The three nets' weights in the folder ``path`` as checked float32 arrays (:func:`check_states`).

    A bundle (config.json + model.safetensors) is read with ``safetensors.numpy``: no PyTorch. The
    official layout / a training run folder (``.pth`` files) needs PyTorch; without it the error
    says to convert the folder with ``instcolor bundle`` where PyTorch is installed."""
    from .models.bundle import BUNDLE_FILES, MODEL_FILE, is_bundle, load_bundle_states
    from .models.checkpoint import OFFICIAL_FILES, load_nets, require_torch

    directory = Path(path)
    if not directory.is_dir():
        raise CheckpointError(f"weights directory not found: {directory}")
    present = [f for f in OFFICIAL_FILES.values() if (directory / f).is_file()]
    if is_bundle(directory) or (not present and any((directory / f).is_file() for f in BUNDLE_FILES)):
        width, states = load_bundle_states(directory, "np")
        return check_states(states, str(directory / MODEL_FILE), width=width)
    if present:
        require_torch(directory / present[0])  # the .pth refusal of the torch-free install
    return arrays_from_nets(load_nets(directory))  # (its errors: missing files, files that do not fit)


def weights_hash_arrays(states: dict) -> str:
    """sha256 of the weights as :func:`instcolor.export.weights_hash` computes it from the nets (key
    names and fp32 / int64 bytes, sorted keys), from checked arrays: the same weights hash the same."""
    h = hashlib.sha256()
    for kind in KINDS:
        for k, v in sorted(states[kind].items()):
            h.update(f"{kind}.{k}".encode())
            h.update(np.ascontiguousarray(v).tobytes())
    return h.hexdigest()


def has_global(states: dict, kind: str) -> bool:
    return any(k.startswith("global_net.") for k in states[kind])


def export_cache_name_arrays(states: dict, precision: str = "fp32") -> str:
    """Cache folder name of the export of ``states``: the name :func:`instcolor.export.export_cache_name`
    gives the same weights (the built segments compute bit-identical results to the ``torch.onnx``
    export, so either may stand for the other; the manifest's ``built_by`` says which it is)."""
    from .export import FORMAT

    return f"{weights_hash_arrays(states)[:20]}-seg{FORMAT.rsplit('/', 1)[-1]}-{precision}"


# ----------------------------------------------------------------------------- graph building
class _Graph:
    """Nodes and initializers of one segment; ``x`` values are tensor names."""

    def __init__(self, states: dict, width: float):
        self.states, self.width = states, width
        self.nodes: list = []
        self.inits: dict = {}
        self._n = 0

    def _name(self, hint: str) -> str:
        self._n += 1
        return f"/{hint}_{self._n}"

    def _weight(self, kind: str, key: str) -> str:
        name = f"{kind}.{key}"
        if name not in self.inits:
            from onnx import numpy_helper

            self.inits[name] = numpy_helper.from_array(np.ascontiguousarray(self.states[kind][key], np.float32), name)
        return name

    def const(self, name: str, array: np.ndarray) -> str:
        from onnx import numpy_helper

        if name not in self.inits:
            self.inits[name] = numpy_helper.from_array(array, name)
        return name

    def node(self, op: str, inputs: list[str], out: str | None = None, hint: str | None = None, **attrs) -> str:
        from onnx import helper

        out = out or self._name(hint or op)
        self.nodes.append(helper.make_node(op, inputs, [out], name=f"{out}_node", **attrs))
        return out

    def ops(self, kind: str, ops: list[tuple], x: str, out: str | None = None) -> str:
        """Apply the steps ``ops`` of the net ``kind`` to ``x``; the last step's result is named ``out``."""
        for i, op in enumerate(ops):
            name = out if i == len(ops) - 1 else None
            if op[0] == "conv":
                _, key, _, _, k, d = op
                pad = d * (k // 2)
                x = self.node("Conv", [x, self._weight(kind, f"{key}.weight"), self._weight(kind, f"{key}.bias")], name,
                              hint=key, dilations=[d, d], group=1, kernel_shape=[k, k], pads=[pad] * 4, strides=[1, 1])
            elif op[0] == "convT":
                key = op[1]
                x = self.node("ConvTranspose", [x, self._weight(kind, f"{key}.weight"), self._weight(kind, f"{key}.bias")],
                              name, hint=key, dilations=[1, 1], group=1, kernel_shape=[4, 4], pads=[1, 1, 1, 1],
                              strides=[2, 2])
            elif op[0] == "bn":
                key = op[1]
                x = self.node("BatchNormalization", [x] + [self._weight(kind, f"{key}.{leaf}") for leaf in
                                                           ("weight", "bias", "running_mean", "running_var")],
                              name, hint=key, epsilon=BN_EPS, momentum=0.9, training_mode=0)
            elif op[0] == "relu":
                x = self.node("Relu", [x], name)
            elif op[0] == "lrelu":
                x = self.node("LeakyRelu", [x], name, alpha=LEAKY_SLOPE)
            elif op[0] == "tanh":
                x = self.node("Tanh", [x], name)
            else:  # pragma: no cover - the tables above hold only these
                raise ValueError(op)
        return x

    def zeros_like_global(self, x: str) -> str:
        """Zeros (N, 532, 1, 1) with N the batch of ``x``: the global input a net with the branch reads
        when given none (computed per batch, as the ``torch.onnx`` export does, for equal results)."""
        from onnx import TensorProto, helper

        n = self.node("Gather", [self.node("Shape", [x]), self.const("zero_scalar_i64", np.array(0, np.int64))], axis=0)
        n = self.node("Unsqueeze", [n, self.const("zero_i64", np.array([0], np.int64))])
        shape = self.node("Concat", [n, self.const("global_tail_i64", np.array([GLOBAL_INPUT_CHANNELS, 1, 1], np.int64))],
                          axis=0)
        return self.node("ConstantOfShape", [shape], value=helper.make_tensor("zero", TensorProto.FLOAT, [1], [0.0]))

    def half(self, x: str) -> str:
        """``x[:, :, ::2, ::2]`` (the stride-2 subsampling before model2 / model3 / model4)."""
        big = np.iinfo(np.int64).max
        for axis in (2, 3):
            x = self.node("Slice", [x, self.const("zero_i64", np.array([0], np.int64)),
                                    self.const("end_i64", np.array([big], np.int64)),
                                    self.const(f"axis{axis}_i64", np.array([axis], np.int64)),
                                    self.const("two_i64", np.array([2], np.int64))])
        return x


def _stage(g: _Graph, kind: str, blocks: dict, name: str, inputs: list[str], out: str | None = None,
           global_in: str | None = None, zero_global: bool = False) -> str:
    """The backbone step ``name`` of net ``kind`` on ``inputs`` (names), as SIGGRAPHBackbone.stage does;
    for conv4_3 of a net with the global branch, + global_net(``global_in``, or zeros when ``zero_global``)."""
    if name == "conv1_2":
        x = g.ops(kind, blocks["model1"], g.node("Concat", list(inputs), axis=1), out)
    elif name in DOWN_BLOCKS:
        glob = global_in is not None or zero_global
        x = g.ops(kind, blocks[DOWN_BLOCKS[name]], g.half(inputs[0]), None if glob else out)
        if glob:
            gin = global_in if global_in is not None else g.zeros_like_global(x)
            x = g.node("Add", [x, g.ops(kind, global_blocks(g.width), gin)], out)
    elif name in SAME_BLOCKS:
        x = g.ops(kind, blocks[SAME_BLOCKS[name]], inputs[0], out)
    elif name in UP_BLOCKS:
        up, short = UP_BLOCKS[name]
        x = g.node("Add", [g.ops(kind, blocks[up], inputs[0]), g.ops(kind, blocks[short], inputs[1])], out)
    elif name == "out":
        x = g.ops(kind, blocks["model_out"], inputs[0], out)
    else:  # pragma: no cover
        raise KeyError(name)
    return x


_LEVEL_DIM = ("S", "S_2", "S_4", "S_8")


def _value_info(name: str, batch: str, ch: int, level: int | None):
    from onnx import TensorProto, helper

    if level is None:
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, [batch, ch, 1, 1])
    d = _LEVEL_DIM[level]
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, [batch, ch, d, d])


def _output_channels(name: str, fc: dict) -> int:
    if name == "ab":
        return 2
    if name == "class_logits":
        return NUM_CLASSES
    if name.startswith(("logit.", "bg_logit.")):
        return 1
    return fc[name.split(".")[-1]]


def _segment_graph(spec: dict, states: dict, width: float):
    """(nodes, initializers) of the segment ``spec`` (an entry of :func:`instcolor.export.segment_layout`)."""
    from .export import GLOBAL_INPUT

    g = _Graph(states, width)
    blocks = backbone_blocks(width)
    name = spec["name"]
    gin = GLOBAL_INPUT if GLOBAL_INPUT in spec["inputs"] else None
    if name == "full":
        values = {"A": "A", "B": "B", "mask": "mask"}
        for n in FEATURE_NAMES:
            values[n] = _stage(g, "full", blocks, n, [values[k] for k in STAGE_INPUTS[n]],
                               out="conv8_3" if n == "conv8_3" else None,
                               global_in=gin if n == "conv4_3" else None)
        _stage(g, "full", blocks, "out", [values["conv10_2"]], out="ab")
    elif name == "instance":
        values = {"A": "A", "B": "B", "mask": "mask"}
        zero = has_global(states, "instance")  # (crops never get global hints: a branch reads zeros)
        for n in FEATURE_NAMES:
            values[n] = _stage(g, "instance", blocks, n, [values[k] for k in STAGE_INPUTS[n]],
                               out=None if n in RELU_FOLLOWED else f"feat.{n}", zero_global=zero and n == "conv4_3")
            if n in RELU_FOLLOWED:
                g.node("Relu", [values[n]], f"feat.{n}")
        fc = feature_channels(width)
        for n in FEATURE_NAMES:
            g.ops("fusion", logit_blocks(f"{BLOCK_NAMES[n]}.simple_instance_conv", fc[n]), f"feat.{n}", f"logit.{n}")
    elif name.startswith("fusion.") and name != "fusion.out":
        point = name.split(".", 1)[1]
        x = _stage(g, "fusion", blocks, point, list(STAGE_INPUTS[point]), out=point,
                   global_in=gin if point == "conv4_3" else None)
        g.ops("fusion", logit_blocks(f"{BLOCK_NAMES[point]}.simple_bg_conv", feature_channels(width)[point]), x,
              f"bg_logit.{point}")
    elif name == "fusion.out":
        _stage(g, "fusion", blocks, "out", ["conv10_2"], out="ab")
    elif name in ("head.full", "head.fusion"):
        g.ops(name.split(".")[1], blocks["model_class"], "conv8_3", "class_logits")
    else:  # pragma: no cover
        raise KeyError(name)
    return g.nodes, list(g.inits.values())


def _input_level(name: str) -> int | None:
    from .export import _level_of_input

    return _level_of_input(name)


def segment_model(spec: dict, states: dict, width: float):
    """The ``onnx.ModelProto`` of one segment ``spec`` (name, inputs, outputs, batch) for ``states``
    (checked arrays) at ``width``."""
    from onnx import helper

    from .export import GLOBAL_INPUT, OPSET

    fc = feature_channels(width)
    in_ch = {"A": 1, "B": 2, "mask": 1, GLOBAL_INPUT: GLOBAL_INPUT_CHANNELS}
    nodes, inits = _segment_graph(spec, states, width)
    inputs = [_value_info(n, spec["batch"], in_ch.get(n) or fc[n], _input_level(n)) for n in spec["inputs"]]
    outputs = []
    for n in spec["outputs"]:
        level = FEATURE_LEVELS["conv8_3"] if n == "class_logits" else FEATURE_LEVELS.get(n.split(".")[-1], 0)
        outputs.append(_value_info(n, spec["batch"], _output_channels(n, fc), level))
    graph = helper.make_graph(nodes, spec["name"].replace(".", "_"), inputs, outputs, initializer=inits)
    model = helper.make_model(graph, producer_name="instcolor.onnx_graphs", opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    return model


def build_segments(states: dict, out_dir: str | os.PathLike, check: bool = True, owned=()) -> dict:
    """Write the fp32 export of the weights ``states`` (checked arrays, :func:`load_weight_arrays` /
    :func:`check_states`) to ``out_dir``: the segments of :func:`instcolor.export.segment_layout` and
    ``manifest.json`` (format ``instcolor-segments/2``, ``built_by`` ``"onnx.helper"``), the same
    layout, names and dims as :func:`instcolor.export.export_segments`, without PyTorch. With
    ``check`` each segment is validated with ``onnx.checker``. ``out_dir`` and ``owned`` as in
    :func:`instcolor.export.export_segments` (temporary folder first, an earlier export replaced file by
    file, anything else refused). Returns the manifest."""
    import onnx

    from .export import (FORMAT, _bare_name, _check_replaceable, _input_channels, _level_of_input, manifest_head,
                         publish_export, segment_layout)

    if not isinstance(states, WeightArrays):
        states = check_states(states, "weights")
    width = states.width
    out_dir = Path(out_dir)
    owned = {n for n in owned if _bare_name(n)}
    if out_dir.exists():
        _check_replaceable(out_dir, owned)
    gseg = [seg for seg, kind in (("full", "full"), ("fusion.conv4_3", "fusion")) if has_global(states, kind)]
    fc = feature_channels(width)
    manifest = manifest_head("fp32", width, weights_hash_arrays(states), fc, gseg)
    manifest["built_by"] = BUILDER
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        for spec in segment_layout(FORMAT, gseg):
            fname = f"{spec['name']}.onnx"
            model = segment_model(spec, states, width)
            onnx.save(model, str(tmp / fname))
            if check:
                onnx.checker.check_model(str(tmp / fname))
            manifest["segments"].append(dict(
                name=spec["name"], file=fname, batch_dim=spec["batch"],
                inputs=[dict(name=n, channels=_input_channels(n, fc), level=_level_of_input(n)) for n in spec["inputs"]],
                outputs=spec["outputs"], **({"source": spec["source"]} if "source" in spec else {})))
        publish_export(tmp, out_dir, manifest, owned)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return manifest


__all__ = ["WeightArrays", "state_shapes", "check_states", "arrays_from_nets", "load_weight_arrays", "weights_hash_arrays",
           "export_cache_name_arrays", "segment_model", "build_segments", "BUILDER"]

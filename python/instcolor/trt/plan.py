"""Pure planning for the TensorRT backend: tensor shapes, optimization profiles, buffer sizes, build mode.

Nothing here imports TensorRT or CUDA; everything is derived from an export's ``manifest.json``
(:mod:`instcolor.export`). Shapes are NCHW. Symbols: ``n`` images of a batch, ``m`` instances
(crops) of a batch, ``S`` the processing size; a tensor at level ``k`` has spatial size ``S >> k``.

One *engine set* serves one ``S`` (fixed: min = opt = max in every profile) and batches of
``n = 1..max_images`` images with ``m = 1..max_images * max_instances_per_image`` instances.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: The official ``box_num`` (= :data:`instcolor.ops.MAX_INSTANCES`; kept here so planning needs no native code).
MAX_INSTANCES_PER_IMAGE = 8
#: Segment inputs that come from the host (the others are blended features of earlier segments, or,
#: for a segment with a ``source``, outputs of that segment).
HOST_INPUTS = ("A", "B", "mask", "global_input")
#: Channels of the class head's output (``class_logits``, at level 2 = S/4).
NUM_CLASSES = 529
#: Engine build modes: fp32; fp16 via the TensorRT 10 builder flag on fp32 graphs; fp16 from the
#: fp16 export as a strongly typed network (TensorRT >= 11, where the flag no longer exists); int8
#: from the INT8 (QDQ) export as a strongly typed network (explicit quantization).
BUILD_MODES = ("fp32", "fp16-flag", "fp16-strong", "int8-strong")


@dataclass(frozen=True)
class TensorSpec:
    """One input or output of a segment: ``shape(S, n, m) = (n or m, channels, S >> level, S >> level)``
    (level None: 1 x 1, the global input)."""

    segment: str
    name: str
    is_input: bool
    channels: int
    level: int | None
    batch: str  # "n" | "m"

    def shape(self, size: int, n: int, m: int) -> tuple[int, int, int, int]:
        s = 1 if self.level is None else size >> self.level
        return (n if self.batch == "n" else m, self.channels, s, s)


def _output_meta(manifest: dict, name: str) -> tuple[int, int]:
    """(channels, level) of a segment output, from its name (see export.segment_specs)."""
    channels, levels = manifest["feature_channels"], manifest["feature_levels"]
    if name == "ab":
        return 2, 0
    if name == "class_logits":
        return NUM_CLASSES, levels["conv8_3"]
    prefix, _, point = name.rpartition(".")
    if point not in channels:
        raise ValueError(f"manifest: cannot size output {name!r}")
    if prefix in ("logit", "bg_logit"):
        return 1, levels[point]
    if prefix in ("feat", ""):
        return channels[point], levels[point]
    raise ValueError(f"manifest: cannot size output {name!r}")


def tensor_specs(manifest: dict) -> dict[str, list[TensorSpec]]:
    """Per segment (manifest order): its inputs then its outputs, each as a :class:`TensorSpec`."""
    out = {}
    for seg in manifest["segments"]:
        b = seg["batch_dim"]
        specs = [TensorSpec(seg["name"], i["name"], True, int(i["channels"]),
                            None if i["level"] is None else int(i["level"]), b) for i in seg["inputs"]]
        for name in seg["outputs"]:
            c, lv = _output_meta(manifest, name)
            specs.append(TensorSpec(seg["name"], name, False, c, lv, b))
        out[seg["name"]] = specs
    return out


def check_limits(size: int, max_images: int, max_instances_per_image: int = MAX_INSTANCES_PER_IMAGE) -> None:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 8 or size % 8:
        raise ValueError(f"size must be a positive multiple of 8, got {size!r}")
    if isinstance(max_images, bool) or not isinstance(max_images, (int, np.integer)) or max_images < 1:
        raise ValueError(f"max_images must be an int >= 1, got {max_images!r}")
    if not 1 <= max_instances_per_image <= MAX_INSTANCES_PER_IMAGE:
        raise ValueError(f"max_instances_per_image must be in 1..{MAX_INSTANCES_PER_IMAGE}, "
                         f"got {max_instances_per_image!r}")


def tensor_shapes(manifest: dict, size: int, n: int, m: int) -> dict[str, dict[str, tuple[int, ...]]]:
    """{segment: {tensor: shape}} for ``n`` images and ``m`` instances at size ``size``."""
    return {seg: {t.name: t.shape(size, n, m) for t in specs} for seg, specs in tensor_specs(manifest).items()}


def plan_profiles(manifest: dict, size: int, max_images: int,
                  max_instances_per_image: int = MAX_INSTANCES_PER_IMAGE,
                  opt_images: int | None = None, opt_instances: int | None = None) -> dict[str, dict[str, tuple]]:
    """One optimization profile per segment: ``{segment: {input: (min, opt, max)}}``, each a 4-tuple.

    Batch dims: ``n`` in ``1..max_images`` (opt ``opt_images``, default the max), ``m`` in
    ``1..max_images * max_instances_per_image`` (opt ``opt_instances``, default the max).
    Channels from the manifest; spatial dims fixed at ``size >> level``.
    """
    check_limits(size, max_images, max_instances_per_image)
    max_m = max_images * max_instances_per_image
    opt_n = max_images if opt_images is None else int(opt_images)
    opt_m = max_m if opt_instances is None else int(opt_instances)
    if not 1 <= opt_n <= max_images:
        raise ValueError(f"opt_images must be in 1..{max_images}, got {opt_images}")
    if not 1 <= opt_m <= max_m:
        raise ValueError(f"opt_instances must be in 1..{max_m}, got {opt_instances}")
    profiles = {}
    for seg, specs in tensor_specs(manifest).items():
        profiles[seg] = {t.name: (t.shape(size, 1, 1), t.shape(size, opt_n, opt_m), t.shape(size, max_images, max_m))
                         for t in specs if t.is_input}
    return profiles


@dataclass(frozen=True)
class BufferPlan:
    """Device buffers of one engine set, sized for the largest batch of its profile.

    ``tensors``: ``{(segment, tensor): (max shape, buffer name)}`` for every segment input and output;
    ``buffers``: ``{buffer name: bytes}``; ``fused``: ``{point: (max shape, buffer name)}``, where the
    fuse kernel writes the blended feature that later segments read. Buffer names:
    ``<segment>/<tensor>`` for host inputs and for the outputs of ``full``, ``instance`` and
    ``fusion.out``; ``fused/<point>``; ``scratch/feat`` and ``scratch/bg_logit``, shared by the raw
    outputs of all ``fusion.<point>`` segments (each is dead once its blend ran).
    """

    size: int
    max_images: int
    max_instances: int
    dtype: np.dtype
    tensors: dict
    buffers: dict
    fused: dict

    @property
    def total_bytes(self) -> int:
        return sum(self.buffers.values())

    def tensor_bytes(self, segment: str, tensor: str) -> int:
        shape, _ = self.tensors[(segment, tensor)]
        return int(np.prod(shape)) * self.dtype.itemsize


def plan_buffers(manifest: dict, size: int, max_images: int, dtype=np.float32,
                 max_instances_per_image: int = MAX_INSTANCES_PER_IMAGE) -> BufferPlan:
    """Max bytes of every tensor of the engine set (S = ``size``, ``n <= max_images``,
    ``m <= max_images * max_instances_per_image``) and the buffers holding them; see :class:`BufferPlan`.
    ``dtype``: the engines' I/O type (float32, or float16 for strongly typed fp16 engines)."""
    check_limits(size, max_images, max_instances_per_image)
    dtype = np.dtype(dtype)
    max_m = max_images * max_instances_per_image
    tensors, buffers, fused = {}, {}, {}

    def need(buf: str, shape: tuple) -> str:
        buffers[buf] = max(buffers.get(buf, 0), int(np.prod(shape)) * dtype.itemsize)
        return buf

    specs = tensor_specs(manifest)
    for seg in manifest["segments"]:
        name = seg["name"]
        is_stage = name.startswith("fusion.") and name != "fusion.out"
        for t in specs[name]:
            shape = t.shape(size, max_images, max_m)
            if t.is_input and t.name in HOST_INPUTS:
                buf = need(f"{name}/{t.name}", shape)
            elif t.is_input and seg.get("source"):  # head.full reads the full segment's conv8_3
                if (seg["source"], t.name) not in tensors:
                    raise ValueError(f"manifest: {name} reads {t.name!r} of {seg['source']!r}, which comes later or lacks it")
                buf = tensors[(seg["source"], t.name)][1]
            elif t.is_input:
                if t.name not in fused:
                    raise ValueError(f"manifest: {name} reads {t.name!r} before any segment produced it")
                buf = fused[t.name][1]
            elif is_stage:
                buf = need("scratch/feat" if t.name == seg["outputs"][0] else "scratch/bg_logit", shape)
            else:
                buf = need(f"{name}/{t.name}", shape)
            tensors[(name, t.name)] = (shape, buf)
        if is_stage:
            point = seg["outputs"][0]
            shape = tensors[(name, point)][0]
            fused[point] = (shape, need(f"fused/{point}", shape))
    return BufferPlan(size=int(size), max_images=int(max_images), max_instances=max_m, dtype=dtype,
                      tensors=tensors, buffers=buffers, fused=fused)


def build_mode(precision: str, trt_version: str, has_fp16_flag: bool) -> tuple[str, str]:
    """How to build engines of ``precision`` with this TensorRT: ``(export precision, mode)``.

    fp32 -> the fp32 export, plain build. fp16 -> on TensorRT 10 (JetPack 6) with
    ``BuilderFlag.FP16``: the fp32 export with that flag (I/O stays float32); on TensorRT >= 11, or
    without the flag: the fp16 export as a STRONGLY_TYPED network (I/O float16). int8 -> the INT8
    export (QDQ graphs, :mod:`instcolor.quantize`) as a STRONGLY_TYPED network without precision flags,
    on every TensorRT version: explicit quantization, where the Q/DQ nodes fix which layers run in int8
    (NVIDIA's guidance for Q/DQ networks: strong typing, no precision flags; TensorRT 11 has no other
    kind of network). I/O stays float32. Unverified on a GPU (none here).
    """
    if precision == "fp32":
        return "fp32", "fp32"
    if precision == "int8":
        return "int8", "int8-strong"
    if precision != "fp16":
        raise ValueError(f"precision must be 'fp32', 'fp16' or 'int8', got {precision!r}")
    try:
        major = int(str(trt_version).split(".")[0])
    except ValueError:
        raise ValueError(f"cannot read the TensorRT version {trt_version!r}") from None
    if major < 11 and has_fp16_flag:
        return "fp32", "fp16-flag"
    return "fp16", "fp16-strong"


def io_dtype(mode: str) -> np.dtype:
    """I/O tensor type of engines built in ``mode``."""
    if mode not in BUILD_MODES:
        raise ValueError(f"unknown build mode {mode!r}; one of {BUILD_MODES}")
    return np.dtype(np.float16 if mode == "fp16-strong" else np.float32)

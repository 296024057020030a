"""TensorRT backend: the exported segments as TensorRT engines, the native fuse kernel between them.

Per processing size S the backend keeps an :class:`EngineSet`: one engine per segment (profile:
``n = 1..max_images`` images, ``m = 1..8 * max_images`` instances, S fixed), and every tensor in a
buffer allocated once for the largest batch (:func:`instcolor.trt.plan.plan_buffers`). A batch is
uploaded into those buffers, the segments and blends run on one CUDA stream
(:class:`instcolor.backends.segments.SegmentBackend` drives them), and ab comes back at the end.
Batches with more than ``max_images`` images run in chunks.

The engine executor (``runner_factory``) and the memory (``device``) are pluggable: with
:class:`instcolor.trt.memory.HostDevice` and a host runner the same orchestration and buffer code
runs without a GPU (see tests/test_tensorrt.py).

CUDA graphs (``cuda_graphs=True``, opt-in): each segment's TensorRT launch is captured per binding
(input shapes = image / instance count) and replayed; the blends and copies stay outside the
graphs. The whole chain is not captured because of ``ops.fuse_instances``: each call builds its
table (instance order, boxes, scales) on the host and uploads it with ``cudaMemcpyAsync`` from
pageable memory into a per-call ``cudaMallocAsync`` block (``cudaMalloc`` + stream sync where
stream-ordered pools are missing). Copies from pageable memory are staged at call time and are not
capturable, a stream sync is forbidden during capture, and even a captured copy would replay the
first call's boxes. Capturing the whole chain needs a fuse entry point that reads its table from a
persistent device buffer, refreshed (from pinned memory, outside or as the first node of the
graph) before each launch -- a change of the native op, not done here.

Device selection: on ``cuda:N`` every batch runs with device N current (engines are built and
loaded there too), and the thread's previous device is restored afterwards, so backends and
detectors on different GPUs can be used from one thread (:meth:`instcolor.trt.cuda.CudaDevice.activate`).

Memory: the execution contexts of all engines share one activation block on the device
(:class:`instcolor.trt.cuda.SharedScratch`, the size of the largest engine's need), also with
``cuda_graphs=True`` where every binding has its own context.

Not thread-safe: one backend drives one stream; use one backend per thread.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np

from ..export import read_manifest
from ..trt.plan import MAX_INSTANCES_PER_IMAGE, plan_buffers, plan_profiles
from .segments import SegmentBackend, check_crops, split_batch_indices


def parse_device(device) -> int:
    """'cuda' / 'cuda:N' / N -> the CUDA device index; ValueError otherwise."""
    from ..trt.cuda import parse_cuda_device

    return parse_cuda_device(device, "backend='tensorrt'")


def tensorrt_unavailable_reason(device_index: int = 0) -> str:
    """'' when TensorRT, cuda-python, a GPU and the CUDA fuse kernel are all there, else why not."""
    from ..trt.engine import tensorrt_unavailable_reason as reason

    return reason(device_index)


def required_export_precision(precision: str) -> str:
    """Which export (fp32 / fp16) the installed TensorRT builds ``precision`` engines from."""
    import tensorrt as trt

    from ..trt.plan import build_mode

    return build_mode(precision, trt.__version__, hasattr(trt.BuilderFlag, "FP16"))[0]


class EngineSet:
    """Runners and buffers of one processing size ``size`` for up to ``max_images`` images.

    ``runners``: ``{segment: EngineRunner}``; ``buffers``: ``{buffer name: device buffer}`` per
    ``plan`` (:class:`instcolor.trt.plan.BufferPlan`). The instance segment's constant inputs
    (B = 0, mask = -0.5) are filled once, at their largest size. The class-head segments
    (``head.*``, :data:`LAZY_SEGMENTS`) get their runner (engine build or load) on first use
    (:meth:`runner`), so a caller that never asks for logits never builds them.
    """

    LAZY_SEGMENTS = ("head.full", "head.fusion")

    PRESETS = {("instance", "B"): 0.0, ("instance", "mask"): -0.5}

    def __init__(self, manifest: dict, size: int, max_images: int, device, runner_factory, dtype,
                 max_instances_per_image: int = MAX_INSTANCES_PER_IMAGE):
        self.size, self.max_images, self.device = size, max_images, device
        self.dtype = np.dtype(dtype)
        self.plan = plan_buffers(manifest, size, max_images, self.dtype, max_instances_per_image)
        self.profiles = plan_profiles(manifest, size, max_images, max_instances_per_image)
        self.outputs = {s["name"]: list(s["outputs"]) for s in manifest["segments"]}
        self._segments = {s["name"]: s for s in manifest["segments"]}
        self._factory = runner_factory
        self.runners = {}
        for name in self._segments:
            if name not in self.LAZY_SEGMENTS:
                self.runner(name)
        self.buffers = {name: device.alloc(nbytes) for name, nbytes in self.plan.buffers.items()}
        self._views: dict = {}
        for (seg, tensor), value in self.PRESETS.items():
            device.fill(self.view(seg, tensor, self.plan.tensors[(seg, tensor)][0][0]), value)

    def runner(self, name: str):
        """The runner of segment ``name``, made (engine built or loaded) on first use."""
        runner = self.runners.get(name)
        if runner is None:
            runner = self._factory(self._segments[name], self.profiles[name])
            dtypes = getattr(runner, "dtypes", None)
            if dtypes is not None and any(np.dtype(d) != self.dtype for d in dtypes.values()):
                raise ValueError(f"{name}: engine I/O types {sorted(set(map(str, dtypes.values())))} "
                                 f"but the export's tensors are {self.dtype}")
            self.runners[name] = runner
        return runner

    def view(self, segment: str, tensor: str, batch: int):
        """The array of ``tensor`` of ``segment`` for a batch dim of ``batch`` (shared with other
        tensors of the same buffer)."""
        key = (segment, tensor, batch)
        v = self._views.get(key)
        if v is None:
            shape, buf = self.plan.tensors[(segment, tensor)]
            if not 1 <= batch <= shape[0]:
                raise ValueError(f"{segment}/{tensor}: batch {batch} outside 1..{shape[0]} of this engine set")
            v = self._views[key] = self.device.view(self.buffers[buf], (batch,) + tuple(shape[1:]), self.dtype)
        return v

    def fused_view(self, point: str, batch: int):
        key = ("fused", point, batch)
        v = self._views.get(key)
        if v is None:
            shape, buf = self.plan.fused[point]
            v = self._views[key] = self.device.view(self.buffers[buf], (batch,) + tuple(shape[1:]), self.dtype)
        return v


class TensorRTBackend(SegmentBackend):
    """Runs an export directory with TensorRT engines on a CUDA device.

    ``precision``: 'fp32', 'fp16' or 'int8' (see :func:`instcolor.trt.plan.build_mode`; the export must
    be the one that mode builds from: fp32 export for fp32 and for fp16 on TensorRT 10, the fp16 export
    for fp16 on TensorRT >= 11, the INT8 (QDQ) export for int8 -- explicit quantization, unverified on a
    GPU). ``max_images``: the largest image batch the engines take (larger
    batches run in chunks); up to 8 instances per image. ``device``: 'cuda' / 'cuda:N', or a device
    object (:mod:`instcolor.trt.memory`). ``cache_root``: engine cache folder (default
    ``cache_dir()/"tensorrt"``). ``workspace_bytes``: the builder's workspace limit.
    ``cuda_graphs``: capture each segment's launches (see the module doc). ``runner_factory``
    ``(manifest segment, profile) -> EngineRunner`` and ``fuse`` (``ops.fuse_instances``-like, with
    ``out=`` and ``stream=``) replace TensorRT and the native kernel, e.g. for tests.
    """

    name = "tensorrt"

    def __init__(self, export_dir: str | os.PathLike, precision: str = "fp32", max_images: int = 1,
                 device="cuda", cache_root: str | os.PathLike | None = None, workspace_bytes: int | None = None,
                 cuda_graphs: bool = False, runner_factory=None, fuse=None,
                 max_instances_per_image: int = MAX_INSTANCES_PER_IMAGE):
        self.export_dir = Path(export_dir)
        self._init_segments(read_manifest(export_dir))
        if precision not in ("fp32", "fp16", "int8"):
            raise ValueError(f"precision must be 'fp32', 'fp16' or 'int8', got {precision!r}")
        if self.manifest["precision"] in ("fp16", "int8") and precision != self.manifest["precision"]:
            raise ValueError(f"{export_dir} is an {self.manifest['precision']} export; it builds "
                             f"precision={self.manifest['precision']!r} engines only")
        if precision == "int8" and self.manifest["precision"] != "int8":
            raise ValueError(f"{export_dir} is an {self.manifest['precision']} export; precision='int8' builds from "
                             "an INT8 export (instcolor export --precision int8 --calibration DIR)")
        if isinstance(max_images, bool) or not isinstance(max_images, int) or max_images < 1:
            raise ValueError(f"max_images must be an int >= 1, got {max_images!r}")
        self.precision, self.max_images = precision, max_images
        self.max_instances_per_image = max_instances_per_image
        self.dtype = np.dtype(np.float16 if self.manifest["precision"] == "fp16" else np.float32)
        self.cuda_graphs = cuda_graphs
        if isinstance(device, (str, int)):
            from ..trt.cuda import CudaDevice

            device = CudaDevice(parse_device(device))
        self.device = device
        if runner_factory is None:
            runner_factory = self._tensorrt_factory(cache_root, workspace_bytes)
        self.runner_factory = runner_factory
        if fuse is None:
            from .. import ops

            fuse = ops.fuse_instances
        self.fuse = fuse
        self.sets: dict[int, EngineSet] = {}
        self._set: EngineSet | None = None

    def _tensorrt_factory(self, cache_root, workspace_bytes):
        import tensorrt as trt

        from ..trt.engine import EngineStore, TensorRTRunner
        from ..trt.plan import build_mode

        export_precision, mode = build_mode(self.precision, trt.__version__, hasattr(trt.BuilderFlag, "FP16"))
        if export_precision != self.manifest["precision"]:
            raise ValueError(f"{self.export_dir} is an {self.manifest['precision']} export, but precision="
                             f"{self.precision!r} on TensorRT {trt.__version__} builds from the {export_precision} "
                             f"export (instcolor export --precision {export_precision})")
        self.mode = mode
        store = EngineStore(self.export_dir, self.manifest, mode, getattr(self.device, "index", 0),
                            cache_root, workspace_bytes)
        self.store = store

        def factory(segment: dict, profile: dict):
            return TensorRTRunner(store.engine(segment, profile), segment["name"], self.device, self.cuda_graphs)

        return factory

    # ------------------------------------------------------------------ engine sets
    def engine_set(self, size: int) -> EngineSet:
        """The engines and buffers for processing size ``size`` (built / loaded on first use)."""
        es = self.sets.get(size)
        if es is None:
            es = self.sets[size] = EngineSet(self.manifest, size, self.max_images, self.device, self.runner_factory,
                                             self.dtype, self.max_instances_per_image)
        return es

    def release(self, size: int | None = None) -> None:
        """Forget the engine set of ``size`` (all with None); its memory goes with the device."""
        for s in ([size] if size is not None else list(self.sets)):
            es = self.sets.pop(s, None)
            for r in (es.runners.values() if es else ()):
                if hasattr(r, "close_graphs"):
                    r.close_graphs()

    # ------------------------------------------------------------------ SegmentBackend
    def run_heads(self, batch, logits: bool = True, instances=None):
        """``batch``: :class:`instcolor.pipeline.Batch` -> :class:`instcolor.pipeline.Heads` (see
        :meth:`SegmentBackend.run_heads`), in chunks of at most ``max_images`` images."""
        from ..pipeline import Heads

        B, S = batch.full_L.shape[0], int(batch.full_L.shape[-1])
        if len(batch.inst_image):
            counts = np.bincount(batch.inst_image, minlength=B)
            if counts.max() > self.max_instances_per_image:
                raise ValueError(f"image {int(counts.argmax())} has {int(counts.max())} instances; the engines take "
                                 f"at most {self.max_instances_per_image} per image")
        self._check_request(batch, logits)
        if instances is not None:
            instances.check(self, batch)
        activate = getattr(self.device, "activate", None)
        with activate() if activate is not None else contextlib.nullcontext():
            self._set = self.engine_set(S)
            parts = [super(TensorRTBackend, self).run_heads(p, logits, None if instances is None else instances.select(sel))
                     for p, sel in split_batch_indices(batch, self.max_images)]
        if len(parts) == 1:
            return parts[0]
        return Heads(ab=np.concatenate([h.ab for h in parts]),
                     logits=np.concatenate([h.logits for h in parts]) if logits else None)

    def run_instances(self, crop_L):
        """The instance engine on crops (M, 1, S, S) once, in chunks the engines take -> a host-side
        :class:`instcolor.pipeline.InstanceState` (see :meth:`SegmentBackend.run_instances`)."""
        from ..pipeline import InstanceState

        crop_L = check_crops(crop_L)
        M, S = crop_L.shape[0], int(crop_L.shape[-1])
        chunk = self.max_images * self.max_instances_per_image
        activate = getattr(self.device, "activate", None)
        with activate() if activate is not None else contextlib.nullcontext():
            self._set = self.engine_set(S)
            parts = [super(TensorRTBackend, self).run_instances(crop_L[i:i + chunk]) for i in range(0, M, chunk)]
        if not parts:  # no crops
            return super().run_instances(crop_L)
        if len(parts) == 1:
            return parts[0]

        def cat(key):
            return {k: np.concatenate([getattr(p, key)[k] for p in parts]) for k in parts[0].features}

        return InstanceState(cat("features"), cat("logits"), M, S, self, parts[0]._take)

    def _feed(self, segment, name, host):
        view = self._set.view(segment, name, host.shape[0])
        self.device.upload(view, host)
        return view

    def _constant(self, segment, name, shape, value):
        view = self._set.view(segment, name, shape[0])
        if self._set.PRESETS.get((segment, name)) != value:
            self.device.fill(view, value)
        return view

    def _run(self, segment, feeds):
        batch = next(iter(feeds.values())).shape[0]
        outs = {t: self._set.view(segment, t, batch) for t in self._set.outputs[segment]}
        self._set.runner(segment).run(feeds, outs, self.device.stream)
        return [outs[t] for t in self._set.outputs[segment]]

    def _fuse(self, point, feat, bg_logit, inst_feat, inst_logit, box_info, inst_image):
        out = self._set.fused_view(point, feat.shape[0])
        self.fuse(feat, bg_logit, inst_feat, inst_logit, box_info, inst_image, out=out, stream=self.device.stream)
        return out

    def _fetch(self, array):
        return self.device.download(array)

    def close(self) -> None:
        self.release()
        self.device.close()

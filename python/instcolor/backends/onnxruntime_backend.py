"""ONNX Runtime backend: runs the exported segments; the blend runs between them."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .._ort import session_options
from ..export import ExportError, read_manifest
from .segments import SegmentBackend


def default_fuse():
    """The native fuse kernel when the extension provides it, else the PyTorch reference."""
    from ..pipeline import native_ops

    ops = native_ops()
    if ops is not None:
        return ops.fuse_instances
    import torch

    from ..fuse import fuse_instances_reference

    def fuse(bg, bg_logit, inst_feat, inst_logit, info, inst_image):
        t = torch.from_numpy
        return fuse_instances_reference(t(bg), t(bg_logit), t(inst_feat), t(inst_logit), t(info), t(inst_image)).numpy()

    return fuse


def _first_line(e: BaseException, limit: int = 200) -> str:
    text = (str(e).strip().splitlines() or [type(e).__name__])[0]
    return text if len(text) <= limit else text[:limit] + "..."


def open_segment(ort, path: Path, segment: dict, options, providers, int8: bool = False):
    """An ONNX Runtime session for one segment file of an export; :class:`ExportError` naming the
    file when it is missing, not a model ONNX Runtime can load (truncated, corrupt, not ONNX), or a
    model whose inputs / outputs are not the segment's (as the manifest lists them). ``int8``: a QDQ
    segment, loaded in :func:`instcolor.qdq_ort.onnxruntime_form` (uint8 activations, ReLUs fused)."""
    if not path.is_file():
        raise ExportError(f"{path}: segment file not found (listed in the export's manifest.json)")
    try:
        if int8:
            from ..qdq_ort import onnxruntime_bytes

            session = ort.InferenceSession(onnxruntime_bytes(path), options, providers=providers)
        else:
            session = ort.InferenceSession(str(path), options, providers=providers)
    except Exception as e:  # onnxruntime raises its own classes (InvalidProtobuf, Fail, InvalidGraph, ...)
        raise ExportError(f"{path}: not a loadable ONNX model ({type(e).__name__}: {_first_line(e)}); "
                          "export the weights again") from None
    inputs = [i.name for i in session.get_inputs()]
    outputs = [o.name for o in session.get_outputs()]
    want_in, want_out = [i["name"] for i in segment["inputs"]], list(segment["outputs"])
    if sorted(inputs) != sorted(want_in) or outputs != want_out:
        raise ExportError(f"{path}: not the {segment['name']} segment: its inputs are {inputs} (expected {want_in}) "
                          f"and outputs {outputs[:3]}{' ...' if len(outputs) > 3 else ''}")
    return session


#: Export precisions this backend runs: fp32, and int8 (QDQ segments, see :mod:`instcolor.quantize`).
PRECISIONS = ("fp32", "int8")


class OnnxRuntimeBackend(SegmentBackend):
    """Runs an export directory (see :mod:`instcolor.export`) with ONNX Runtime sessions (host arrays)."""

    name = "onnxruntime"

    def __init__(self, export_dir: str | os.PathLike, providers=None, threads: int | None = None, fuse=None,
                 precision: str | None = None):
        import onnxruntime as ort

        self.export_dir = Path(export_dir)
        manifest = read_manifest(export_dir)
        if manifest["precision"] not in PRECISIONS:
            raise ValueError(f"{export_dir}: the onnxruntime backend runs fp32 and int8 exports, this one is "
                             f"{manifest['precision']}")
        if precision is not None and precision != manifest["precision"]:  # (None: whatever the export is)
            raise ValueError(f"{export_dir} is an {manifest['precision']} export, not {precision}"
                             + (" (make one with instcolor export --precision int8 --calibration DIR)"
                                if precision == "int8" else ""))
        self.precision = manifest["precision"]
        self._init_segments(manifest)
        from .._ort import usable_cores

        #: intra-op threads of every session (resolved: None -> the usable cores)
        self.threads = threads or usable_cores()
        so = session_options(self.threads)
        providers = providers or ["CPUExecutionProvider"]
        self.providers = list(providers)
        self._thread_variants: dict[int, OnnxRuntimeBackend] = {}   # with_threads' backends, by thread count
        self.sessions = {s["name"]: open_segment(ort, self.export_dir / s["file"], s, so, providers,
                                                 int8=self.precision == "int8")
                         for s in self.manifest["segments"]}
        self.fuse = fuse or default_fuse()

    def set_fuse(self, fuse_fn) -> None:
        self.fuse = fuse_fn

    def with_threads(self, threads: int) -> "OnnxRuntimeBackend":
        """This backend with ``threads`` intra-op threads per session: itself when it has that many,
        else a second backend on the same export (its own sessions, the same blend kernel), made once
        and kept, so repeated calls (one per video) do not load the segments again. The results are
        the same bit for bit (tests/test_video.py). For pipelines whose stages already keep the cores
        busy: one thread wastes less CPU on synchronisation than several (README *Video*)."""
        if threads == self.threads:
            return self
        variants = self._thread_variants
        if threads not in variants:
            variants[threads] = OnnxRuntimeBackend(self.export_dir, providers=self.providers, threads=threads,
                                                   fuse=self.fuse, precision=self.precision)
        variant = variants[threads]
        variant.fuse = self.fuse
        return variant

    # SegmentBackend hooks: everything is host numpy.
    def _feed(self, segment: str, name: str, host: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(host, np.float32)

    def _constant(self, segment: str, name: str, shape: tuple[int, ...], value: float) -> np.ndarray:
        return np.full(shape, value, np.float32)

    def _run(self, segment: str, feeds: dict) -> list[np.ndarray]:
        return self.sessions[segment].run(None, {k: np.ascontiguousarray(v, np.float32) for k, v in feeds.items()})

    def _fuse(self, point, feat, bg_logit, inst_feat, inst_logit, box_info, inst_image) -> np.ndarray:
        return self.fuse(feat, bg_logit, inst_feat, inst_logit, box_info, inst_image)

    def _fetch(self, array) -> np.ndarray:
        return array

    def _fuse_cached(self, point, feat, bg_logit, instances, box_info, inst_image):
        """The blend with the instances of a cached state resampled to their boxes once (kept in the
        state, see :meth:`InstanceState.presampled`) instead of at every call: the same result bit for
        bit. None when the blend is not the native kernel (then the caller blends as usual)."""
        from ..pipeline import native_ops

        ops = native_ops()
        if ops is None or self.fuse is not ops.fuse_instances:
            return None
        H, W = feat.shape[-2:]
        ps = instances.presampled(point, box_info, lambda: ops.fuse_sample_instances(
            instances.features[point], instances.logits[point], box_info, H, W))
        return ops.fuse_instances_presampled(feat, bg_logit, ps, inst_image)

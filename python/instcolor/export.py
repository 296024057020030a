"""ONNX export of the nets as ordered segments (../shared/DESIGN.md, "Segments").

* ``full``: the full-image net (GComp), (A, B, mask) -> ab, and its conv8_3 (what the class head reads).
* ``instance``: the instance net on crops, (A, B, mask) -> 13 feature maps + the 13 per-instance
  blend logits of the fusion net's blocks (they depend only on the instance features).
* ``fusion.<point>`` for each of the 13 feature points: the backbone step that produces that
  feature from its inputs, plus the block's background-logit convs -> (feature, bg_logit). The
  native ``fuse_instances`` kernel runs between these segments.
* ``fusion.out``: the final 1x1 conv + tanh on the blended conv10_2.
* ``head.full`` / ``head.fusion``: the classification head (``model_class``, 1x1 conv to 529 ab-bin
  logits) of the full-image net on its conv8_3 and of the fusion net on the blended conv8_3. They
  run only when a caller asks for the class logits.

Nets with the SIGGRAPH'17 global hints branch: the segments that compute conv4_3 (``full`` and
``fusion.conv4_3``) take one more input, ``global_input`` (N, 532, 1, 1); the manifest lists them
under ``global_input_segments``.

A ``manifest.json`` lists the segments in execution order with their tensor names and shapes
and the hash of the weights they came from. Batch / instance / spatial dimensions are dynamic.
Exports of format ``instcolor-segments/1`` (before the class head and global hints) are still
read; they have no ``head.*`` segments, ``full`` has the output ab only, and no global input.

An export folder read back is untrusted input: :func:`read_manifest` checks the manifest's
layout and the backends check each segment file, raising :class:`ExportError` (a ValueError)
naming the file.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path

from ._fileio import OUTPUT_MARKER, publish_dir
from .models.arch import FEATURE_LEVELS, FEATURE_NAMES, GLOBAL_INPUT_CHANNELS, NUM_CLASSES, STAGE_INPUTS

# PyTorch is imported only by export_segments (torch.onnx); the segment modules it traces live in
# instcolor.export_torch (re-exported here on first use). Reading exports needs no PyTorch.
_TORCH_NAMES = ("FullSegment", "InstanceSegment", "FusionStageSegment", "FusionOutSegment", "ClassHeadSegment",
                "segment_specs", "_example_inputs")


def __getattr__(name: str):
    if name in _TORCH_NAMES:
        from . import export_torch

        return getattr(export_torch, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

MANIFEST = "manifest.json"
FORMAT = "instcolor-segments/2"  # /2: head.* segments, conv8_3 out of full, optional global_input
FORMAT_V1 = "instcolor-segments/1"  # read only
FORMATS_READ = (FORMAT_V1, FORMAT)
GLOBAL_INPUT = "global_input"
# Segments that compute conv4_3 and so take the global input when their net has the branch.
GLOBAL_INPUT_SEGMENTS = {"full": "full", "fusion.conv4_3": "fusion"}
HEAD_SEGMENTS = ("head.full", "head.fusion")
CLASS_LOGITS = "class_logits"
OPSET = 17  # TensorRT 10 and ONNX Runtime >= 1.14 support it
_LEVEL_DIM = ("S", "S_2", "S_4", "S_8")
PRECISION_DIRS = ("fp32", "fp16")  # `instcolor export --precision both` writes OUTDIR/fp32 and OUTDIR/fp16


class ExportError(ValueError):
    """An export folder (manifest or segment file) that cannot be used, naming the file."""


def _level_of_input(name: str) -> int | None:
    """Grid level of a segment input (spatial size S >> level); None for the 1x1 global input."""
    if name == GLOBAL_INPUT:
        return None
    return 0 if name in ("A", "B", "mask") else FEATURE_LEVELS[name]


def _level_of_output(name: str) -> int:
    if name == CLASS_LOGITS:
        return FEATURE_LEVELS["conv8_3"]
    point = name.split(".")[-1]
    return FEATURE_LEVELS[point] if point in FEATURE_LEVELS else 0


def segment_layout(format: str = FORMAT, global_input_segments=()) -> list[dict]:
    """Ordered segments without their modules: name, input names, output names, batch dim (and,
    for ``head.full``, ``source``: the segment whose output it reads). ``format``: the layout of
    that export format (:data:`FORMAT_V1`: no heads, no global input); ``global_input_segments``:
    the segments (of :data:`GLOBAL_INPUT_SEGMENTS`) that take ``global_input`` as their last input."""
    v2 = format != FORMAT_V1
    g = set(global_input_segments) if v2 else set()
    layout = [dict(name="full", inputs=["A", "B", "mask"] + ([GLOBAL_INPUT] if "full" in g else []),
                   outputs=["ab", "conv8_3"] if v2 else ["ab"], batch="n"),
              dict(name="instance", inputs=["A", "B", "mask"],
                   outputs=[f"feat.{n}" for n in FEATURE_NAMES] + [f"logit.{n}" for n in FEATURE_NAMES], batch="m")]
    for n in FEATURE_NAMES:
        inputs = list(STAGE_INPUTS[n]) + ([GLOBAL_INPUT] if f"fusion.{n}" in g else [])
        layout.append(dict(name=f"fusion.{n}", inputs=inputs, outputs=[n, f"bg_logit.{n}"], batch="n"))
    layout.append(dict(name="fusion.out", inputs=["conv10_2"], outputs=["ab"], batch="n"))
    if v2:
        layout.append(dict(name="head.full", inputs=["conv8_3"], outputs=[CLASS_LOGITS], batch="n", source="full"))
        layout.append(dict(name="head.fusion", inputs=["conv8_3"], outputs=[CLASS_LOGITS], batch="n"))
    return layout


def global_input_segments(nets: dict) -> list[str]:
    """The segments that take ``global_input``: those computing conv4_3 in a net with the branch."""
    return [seg for seg, kind in GLOBAL_INPUT_SEGMENTS.items() if nets[kind].global_net is not None]


def _input_channels(name: str, channels: dict) -> int:
    return {"A": 1, "B": 2, "mask": 1, GLOBAL_INPUT: GLOBAL_INPUT_CHANNELS}.get(name) or channels[name]


def _dynamic_axes(spec: dict) -> dict:
    axes = {}
    for name in spec["inputs"]:
        level = _level_of_input(name)
        if level is None:
            axes[name] = {0: spec["batch"]}
            continue
        d = _LEVEL_DIM[level]
        axes[name] = {0: spec["batch"], 2: d, 3: d}
    for name in spec["outputs"]:
        d = _LEVEL_DIM[_level_of_output(name)]
        axes[name] = {0: spec["batch"], 2: d, 3: d}
    return axes


def _drop_intermediate_shapes(path: Path) -> None:
    """The tracer annotates intermediate tensors with symbolic dims that do not hold after the
    stride-2 slices (ONNX Runtime then plans buffers wrongly); keep only input/output shapes."""
    import onnx

    model = onnx.load(str(path))
    del model.graph.value_info[:]
    onnx.save(model, str(path))


def export_cache_name(nets: dict, precision: str) -> str:
    """Folder name (under ``cache_dir()/"onnx"``) of the cached export of ``nets``: the weights hash,
    the export format and the precision, so a change of either never reuses an older export."""
    return f"{weights_hash(nets)[:20]}-seg{FORMAT.rsplit('/', 1)[-1]}-{precision}"


def weights_hash(nets: dict) -> str:
    """sha256 over the three nets' state dicts (key names and fp32 bytes, sorted keys)."""
    h = hashlib.sha256()
    for kind in ("full", "instance", "fusion"):
        for k, v in sorted(nets[kind].state_dict().items()):
            h.update(f"{kind}.{k}".encode())
            h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _manifest_files(folder: Path) -> set[str] | None:
    """Names of the files an earlier export wrote in ``folder`` (its manifest and the segment
    files the manifest lists), or None when ``folder`` holds no readable manifest of ours."""
    try:
        manifest = read_manifest(folder)
    except (OSError, ValueError):
        return None
    return {s["file"] for s in manifest["segments"]} | {MANIFEST}


def export_files(out_dir: str | os.PathLike) -> set[str]:
    """Paths (relative to ``out_dir``) of the files of the export(s) at ``out_dir``: an export in
    the folder itself and in its ``fp32/`` / ``fp16/`` subfolders (``--precision both``)."""
    out_dir = Path(out_dir)
    files = set(_manifest_files(out_dir) or ())
    for sub in PRECISION_DIRS:
        files |= {f"{sub}/{f}" for f in _manifest_files(out_dir / sub) or ()}
    return files


def is_export_output(out_dir: str | os.PathLike) -> bool:
    """True when ``out_dir`` holds an export (manifest.json here or in fp32/ / fp16/)."""
    out_dir = Path(out_dir)
    return any((d / MANIFEST).is_file() for d in (out_dir, *(out_dir / s for s in PRECISION_DIRS)))


def _bare_name(name) -> bool:
    return isinstance(name, str) and name not in ("", ".", "..") and "/" not in name and "\\" not in name \
        and "\0" not in name


def _move_into(tmp: Path, out_dir: Path, new: list[str], owned: set[str]) -> None:
    """Move the files ``new`` (segments, manifest last) from ``tmp`` into the existing folder
    ``out_dir``, each replaced atomically; then remove the ``owned`` files (of the earlier
    export) that the new export does not have. Other files in ``out_dir`` are left alone."""
    (out_dir / MANIFEST).unlink(missing_ok=True)  # until the new one is in place, no half-old export looks whole
    for name in new:
        if name != MANIFEST:
            os.replace(tmp / name, out_dir / name)
    os.replace(tmp / MANIFEST, out_dir / MANIFEST)
    for name in sorted(owned - set(new)):
        if (out_dir / name).is_file() and not (out_dir / name).is_symlink():
            (out_dir / name).unlink()


def export_segments(nets: dict, out_dir: str | os.PathLike, precision: str = "fp32", size: int = 64,
                    check: bool = True, owned=(), calibration=None) -> dict:
    """Export ``nets`` ({'full', 'instance', 'fusion'}) to ``out_dir`` as ONNX segments + manifest.

    ``precision``: 'fp32' or 'fp16' (weights and tensors in float16: the strongly typed graphs
    TensorRT >= 11 wants; TensorRT 10 can also build fp16 engines from the fp32 graphs with its
    FP16 flag), or 'int8' (QDQ segments quantized with the photos of ``calibration``, a folder or an
    :class:`instcolor.quantize.Calibration`; see :mod:`instcolor.quantize`). ``size`` only sizes the
    tracing inputs; all dims are dynamic. With ``check``
    every segment is validated with ``onnx.checker``. Returns the manifest.

    Written to a temporary folder beside ``out_dir`` first, so a failed export leaves nothing
    behind. A new ``out_dir`` is moved into place whole. An existing one must be empty (an
    instcolor output marker aside) or hold an earlier export (its manifest.json, or the names
    in ``owned``: files the caller knows the earlier export wrote): then the new files replace
    it one by one (each atomically, the manifest last), the earlier export's files the new one
    lacks are removed and every other file stays. Anything else raises ``FileExistsError``;
    nothing is ever deleted wholesale.
    """
    if precision == "int8":  # 'int8': the fp32 export quantized with calibration photos (instcolor.quantize)
        if calibration is None:
            raise ValueError("precision='int8' needs calibration photos: calibration=DIR (--calibration DIR)")
        from .quantize import export_int8

        return export_int8(nets, out_dir, calibration, size=size, check=check, owned=owned)
    import onnx
    import torch

    from .export_torch import _example_inputs, segment_specs

    if precision not in ("fp32", "fp16"):
        raise ValueError(f"precision must be 'fp32', 'fp16' or 'int8', got {precision!r}")
    out_dir = Path(out_dir)
    owned = {n for n in owned if _bare_name(n)}
    if out_dir.exists():
        _check_replaceable(out_dir, owned)
    dtype = torch.float16 if precision == "fp16" else torch.float32
    channels = nets["fusion"].feature_channels
    manifest = manifest_head(precision, nets["full"].width, weights_hash(nets), channels, global_input_segments(nets))
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        for spec in segment_specs(nets):
            module = spec["module"].to(dtype).eval()
            fname = f"{spec['name']}.onnx"
            args = _example_inputs(spec, channels, size, dtype)
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")
                torch.onnx.export(module, args, str(tmp / fname), dynamo=False, opset_version=OPSET,
                                  input_names=spec["inputs"], output_names=spec["outputs"],
                                  dynamic_axes=_dynamic_axes(spec), do_constant_folding=True)
            _drop_intermediate_shapes(tmp / fname)
            if check:
                onnx.checker.check_model(str(tmp / fname))
            manifest["segments"].append(dict(
                name=spec["name"], file=fname, batch_dim=spec["batch"],
                inputs=[dict(name=n, channels=int(a.shape[1]), level=_level_of_input(n)) for n, a in zip(spec["inputs"], args)],
                outputs=spec["outputs"], **({"source": spec["source"]} if "source" in spec else {})))
        publish_export(tmp, out_dir, manifest, owned)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # (our own temporary folder; gone already when moved whole)
        for net in nets.values():  # the segment modules share the nets: leave them in fp32
            net.float()
    return manifest


def manifest_head(precision: str, width: float, weights_sha256: str, feature_channels: dict,
                  global_input_segments: list) -> dict:
    """The manifest of an export before its segments are listed (``segments`` empty)."""
    return dict(format=FORMAT, opset=OPSET, precision=precision, width=width,
                weights_sha256=weights_sha256, feature_names=list(FEATURE_NAMES),
                feature_levels={n: FEATURE_LEVELS[n] for n in FEATURE_NAMES},
                feature_channels=dict(feature_channels), num_classes=NUM_CLASSES,
                global_input_segments=list(global_input_segments), segments=[])


def publish_export(tmp: Path, out_dir: Path, manifest: dict, owned: set[str]) -> None:
    """Write ``manifest`` into the temporary folder ``tmp`` (which holds its segment files) and put
    the export in place at ``out_dir``: a new ``out_dir`` is ``tmp`` renamed; an existing one (checked
    by :func:`_check_replaceable` before the segments were written) gets the files one by one
    (:func:`_move_into`). The caller removes ``tmp`` afterwards (gone already when renamed)."""
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
    publish_dir(tmp)
    new = [s["file"] for s in manifest["segments"]] + [MANIFEST]
    moved = False
    if not out_dir.exists():
        try:
            os.replace(tmp, out_dir)
            moved = True
        except OSError:  # made meanwhile (another export to the same place): fall back to file by file
            if not out_dir.is_dir():
                raise
            _check_replaceable(out_dir, owned)
    if not moved:
        _move_into(tmp, out_dir, new, owned | (_manifest_files(out_dir) or set()))


def _safe_relative(name) -> bool:
    """A path an export folder's marker may list: ``file`` or ``fp32/file`` / ``fp16/file``."""
    if not isinstance(name, str):
        return False
    parts = name.split("/")
    return all(_bare_name(p) for p in parts) and (len(parts) == 1 or (len(parts) == 2 and parts[0] in PRECISION_DIRS))


def export_to_folder(nets: dict, out_dir: str | os.PathLike, precisions=("fp32",), size: int = 256,
                     earlier=(), calibration=None) -> list[tuple[Path, dict]]:
    """The layout of ``instcolor export``: one export in ``out_dir``, or with several
    ``precisions`` one in each ``out_dir/<precision>``. ``earlier``: paths (relative to
    ``out_dir``) of the files of an earlier export there; they are replaced, or removed when the
    new export does not write them, and nothing else in the folder is touched. Records the
    written files in the folder's output marker. Returns [(export folder, manifest)]."""
    from ._fileio import write_output_marker

    out_dir = Path(out_dir)
    earlier = {f for f in (earlier if isinstance(earlier, (list, tuple, set, frozenset)) else ()) if _safe_relative(f)}
    several = len(precisions) > 1
    results, written = [], set()
    for p in precisions:
        prefix = f"{p}/" if several else ""
        target = out_dir / p if several else out_dir
        owned = {f[len(prefix):] for f in earlier if f.startswith(prefix) and "/" not in f[len(prefix):]}
        m = export_segments(nets, target, precision=p, size=size, owned=owned, calibration=calibration)
        written |= {prefix + n for n in [s["file"] for s in m["segments"]] + [MANIFEST]}
        results.append((target, m))
    for f in sorted(earlier - written):
        path = out_dir / f
        if path.is_file() and not path.is_symlink():
            path.unlink()
    for sub in PRECISION_DIRS:  # an fp32/ or fp16/ folder the earlier export made and left empty now
        if any(f.startswith(f"{sub}/") for f in earlier - written):
            try:
                (out_dir / sub).rmdir()
            except OSError:
                pass
    write_output_marker(out_dir, "export", written)
    return results


def _check_replaceable(out_dir: Path, owned: set[str]) -> None:
    """Refuse (``FileExistsError``) an existing ``out_dir`` that is a file, or a non-empty folder
    that holds no earlier export, or one whose files would overwrite files not the export's."""
    if not out_dir.is_dir():
        raise FileExistsError(f"{out_dir}: exists and is not a folder")
    present = {p.name for p in out_dir.iterdir()} - {OUTPUT_MARKER}
    if not present:
        return
    earlier = _manifest_files(out_dir)
    own = owned | (earlier or set())
    if earlier is None and not (owned & present):
        shown = sorted(present)
        raise FileExistsError(f"{out_dir}: folder is not empty and holds no instcolor export ({', '.join(shown[:4])}"
                              f"{', ...' if len(shown) > 4 else ''}); export to a new or empty folder")
    clash = sorted(n for n in present - own if n in {f"{s['name']}.onnx" for s in segment_layout(FORMAT, GLOBAL_INPUT_SEGMENTS)} | {MANIFEST})
    if clash:
        raise FileExistsError(f"{out_dir}: holds {', '.join(clash[:4])}, which the earlier export did not write; "
                              "export to a new or empty folder")


def _fail(path, why: str):
    raise ExportError(f"{path}: {why}")


def read_manifest(export_dir: str | os.PathLike) -> dict:
    """The checked manifest of the export at ``export_dir``. ``FileNotFoundError`` when there is
    none; :class:`ExportError` naming the file when it is not the manifest of an instcolor export
    (not JSON, another format, segments that differ from what :func:`export_segments` writes,
    file names that leave the folder)."""
    path = Path(export_dir) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{export_dir}: no {MANIFEST}; not an instcolor export directory")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ExportError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(manifest, dict):
        _fail(path, "expected a JSON object")
    fmt = manifest.get("format")
    if fmt not in FORMATS_READ:
        _fail(path, f"format {fmt!r}, expected {FORMAT!r} (or the older {FORMAT_V1!r})")
    if manifest.get("precision") not in ("fp32", "fp16", "int8"):
        _fail(path, f"precision {manifest.get('precision')!r}, expected 'fp32', 'fp16' or 'int8'")
    width = manifest.get("width")
    if isinstance(width, bool) or not isinstance(width, (int, float)) or not 0 < width <= 1:
        _fail(path, f"'width' must be a number in (0, 1], got {width!r}")
    if manifest.get("feature_names") != list(FEATURE_NAMES):
        _fail(path, "'feature_names' is not the list of the 13 feature points")
    if manifest.get("feature_levels") != {n: FEATURE_LEVELS[n] for n in FEATURE_NAMES}:
        _fail(path, "'feature_levels' does not match the feature points")
    segments = manifest.get("segments")
    g = manifest.get("global_input_segments", []) if fmt == FORMAT else []
    if not isinstance(g, list) or not set(g) <= set(GLOBAL_INPUT_SEGMENTS) or len(set(g)) != len(g):
        _fail(path, f"'global_input_segments' must list some of {sorted(GLOBAL_INPUT_SEGMENTS)}, got {g!r}")
    if fmt == FORMAT and manifest.get("num_classes") != NUM_CLASSES:
        _fail(path, f"'num_classes' must be {NUM_CLASSES}, got {manifest.get('num_classes')!r}")
    layout = segment_layout(fmt, g)
    if not isinstance(segments, list) or not all(isinstance(s, dict) for s in segments):
        _fail(path, "'segments' must be a list of objects")
    names = [s.get("name") for s in segments]
    if names != [spec["name"] for spec in layout]:
        _fail(path, f"unexpected segments {names[:4]}{' ...' if len(names) > 4 else ''}; expected "
                    f"full, instance, fusion.<point> x {len(FEATURE_NAMES)}, fusion.out"
                    f"{', head.full, head.fusion' if fmt == FORMAT else ''}")
    for seg, spec in zip(segments, layout):
        if not _bare_name(seg.get("file")) or not seg["file"].endswith(".onnx"):
            _fail(path, f"segment {seg['name']}: 'file' must be a file name in the folder ending .onnx, got {seg.get('file')!r}")
        inputs = seg.get("inputs")
        if not isinstance(inputs, list) or [i.get("name") if isinstance(i, dict) else None for i in inputs] != spec["inputs"]:
            _fail(path, f"segment {seg['name']}: inputs must be {spec['inputs']}")
        for i in inputs:
            c = i.get("channels")
            if isinstance(c, bool) or not isinstance(c, int) or not 0 < c <= 4096 or i.get("level") != _level_of_input(i["name"]) \
                    or (i["name"] == GLOBAL_INPUT and c != GLOBAL_INPUT_CHANNELS):
                _fail(path, f"segment {seg['name']}: input {i['name']}: bad 'channels' {c!r} or 'level' {i.get('level')!r}")
        if seg.get("source") != spec.get("source"):
            _fail(path, f"segment {seg['name']}: 'source' must be {spec.get('source')!r}, got {seg.get('source')!r}")
        if seg.get("outputs") != spec["outputs"]:
            _fail(path, f"segment {seg['name']}: outputs must be {spec['outputs'][:3]}{' ...' if len(spec['outputs']) > 3 else ''}")
    return manifest

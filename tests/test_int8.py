"""INT8 exports (issue 14): static post-training quantization of every segment (instcolor.quantize).

One INT8 export of small random nets is made per module through ``Colorizer.from_pretrained(weights,
backend="onnxruntime", precision="int8", calibration=DIR)`` (so the cache path is what is tested),
calibrated on three real photos with the YOLOX-Nano detector's boxes where ../shared has it.
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

import onnx  # noqa: E402
from onnx import numpy_helper  # noqa: E402

from instcolor import Colorizer  # noqa: E402
from instcolor import quantize as Q  # noqa: E402
from instcolor.backends import make_backend  # noqa: E402
from instcolor.backends.onnxruntime_backend import OnnxRuntimeBackend  # noqa: E402
from instcolor.export import MANIFEST, export_cache_name, read_manifest, segment_layout  # noqa: E402
from instcolor.prepare import as_rgb_uint8  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared"
VAL = SHARED / "data" / "val"
DETECTOR = SHARED / "models" / "yolox_nano_coco_416.onnx"
needs_photos = pytest.mark.skipif(not VAL.is_dir(), reason=f"no photos at {VAL}")


def _photos(n, start=0, step=37):
    files = sorted(p for p in VAL.iterdir() if p.suffix.lower() in (".jpg", ".png"))
    return files[start::step][:n]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("int8_cache")
    mp = pytest.MonkeyPatch()
    mp.setenv("INSTCOLOR_CACHE", str(root))
    yield root
    mp.undo()


@pytest.fixture(scope="module")
def calib_dir(tmp_path_factory):
    if not VAL.is_dir():
        pytest.skip(f"no photos at {VAL}")
    d = tmp_path_factory.mktemp("calib")
    for p in _photos(3):
        shutil.copy(p, d / p.name)
    return d


@pytest.fixture(scope="module")
def int8(tiny_weights_dir, calib_dir, cache):
    """(fp32 colorizer, int8 colorizer) of the same tiny random weights."""
    det = str(DETECTOR) if DETECTOR.is_file() else None
    c8 = Colorizer.from_pretrained(tiny_weights_dir, backend="onnxruntime", precision="int8",
                                   calibration=calib_dir, calibration_count=3, detector=det)
    c32 = Colorizer.from_pretrained(tiny_weights_dir, backend="onnxruntime", detector=det)
    return c32, c8


def test_int8_export_is_qdq_with_per_channel_weights(int8):
    """Every segment: Q/DQ nodes, each conv weight int8 with one scale per output channel (axis 0 for
    Conv, 1 for ConvTranspose), and only the documented convs left in float."""
    c32, c8 = int8
    d = c8.backend.export_dir
    m = read_manifest(d)
    kept = m["int8"]["float_segments"]  # the accuracy guard's: fp32 copies, each below its threshold
    for name, db in kept.items():
        seg = next(x for x in m["segments"] if x["name"] == name)
        assert (d / seg["file"]).read_bytes() == (c32.backend.export_dir / seg["file"]).read_bytes()
        limit = m["int8"]["guard"]["min_logit_snr_db" if name.startswith("head.") else "min_ab_psnr_db"]
        assert db == m["int8"]["segment_db"][name] < limit
    assert len(kept) < len(m["segments"]) - 2, kept  # most of it is int8 (the random nets are benign)
    for seg in m["segments"]:
        if seg["name"] in kept:
            continue
        model = onnx.load(str(d / seg["file"]))
        inits = {i.name: i for i in model.graph.initializer}
        producers = {o: n for n in model.graph.node for o in n.output}
        s = Q.qdq_summary(d / seg["file"])
        if seg["name"] == "fusion.out":  # one 2-channel conv + tanh: kept in float, nothing to quantize
            assert s["quantize"] == 0 and s["float_convs"] == 1
            continue
        assert s["quantize"] > 0 and s["per_channel_weights"] > 0 and s["per_tensor_weights"] == 0, (seg["name"], s)
        float_convs = []
        for n in model.graph.node:
            if n.op_type not in ("Conv", "ConvTranspose"):
                continue
            w = n.input[1]
            if w in inits:  # a float weight: must be one of the excluded convs
                float_convs.append(n.name)
                continue
            dq = producers[w]
            assert dq.op_type == "DequantizeLinear", (seg["name"], n.name)
            q = inits[dq.input[0]]
            assert q.data_type == onnx.TensorProto.INT8
            scale = numpy_helper.to_array(inits[dq.input[1]])
            axis = {a.name: a.i for a in dq.attribute}.get("axis", 1)
            want_axis = 0 if n.op_type == "Conv" else 1
            assert axis == want_axis and scale.shape == (q.dims[want_axis],), (seg["name"], n.name, axis, scale.shape)
            zp = numpy_helper.to_array(inits[dq.input[2]]) if len(dq.input) > 2 and dq.input[2] else np.zeros(1)
            assert not np.any(zp), "weights are symmetric (zero point 0)"
        excluded = m["int8"]["excluded"][seg["name"]]
        assert sorted(float_convs) == sorted(n for v in excluded.values() for n in v
                                             if n in {x.name for x in model.graph.node if x.op_type == "Conv"})
        # activations: symmetric int8 (zero point 0), what TensorRT takes
        for n in model.graph.node:
            if n.op_type == "QuantizeLinear":
                zp = inits[n.input[2]]
                assert zp.data_type == onnx.TensorProto.INT8 and not np.any(numpy_helper.to_array(zp))
    ex = m["int8"]["excluded"]
    assert set(ex["full"]) == {"input_conv", "output", "bn_shift"} and len(ex["full"]["bn_shift"]) == 9
    assert set(ex["instance"]) == {"input_conv", "bn_shift"} and set(ex["fusion.out"]) == {"output"}
    assert set(ex["fusion.conv5_3"]) == {"bn_shift"} and ex["fusion.conv8_up"] == {}
    assert m["int8"]["ab_psnr_db"] >= 35.0  # all INT8 segments together, on the calibration batches


def test_manifest_records_precision_and_calibration(int8, calib_dir, tiny_weights_dir):
    c32, c8 = int8
    m8, m32 = read_manifest(c8.backend.export_dir), read_manifest(c32.backend.export_dir)
    assert m8["precision"] == "int8" and m32["precision"] == "fp32" and c8.backend.precision == "int8"
    assert [s["name"] for s in m8["segments"]] == [s["name"] for s in m32["segments"]]
    assert m8["weights_sha256"] == m32["weights_sha256"]
    cal = m8["int8"]["calibration"]
    assert cal["photos"] == 3 and cal["folder"] == calib_dir.name and sum(cal["boxes"].values()) == 3
    assert cal["identity"] == Q.as_calibration(Q.Calibration(calib_dir, 3), None,
                                               str(DETECTOR) if DETECTOR.is_file() else None).identity()
    if DETECTOR.is_file():
        assert cal["boxes"]["detector"] >= 1  # the detector's boxes were used where it found some
    assert cal["hinted_runs"] == 3  # one of the two runs of every photo carries hints


@needs_photos
def test_int8_output_close_to_fp32(int8):
    """On photos not in the calibration set, through the whole Colorizer (boxes, the blend): the INT8
    ab differs from the fp32 ab (it is quantized) by a mean of at most 3 % of the fp32 ab's mean
    magnitude, and by at most 0.25 (of the ab range [-1, 1]) anywhere. Why these bounds: 8-bit
    activations carry about 2-3 significant digits, and ~30 quantized layers in a row accumulate
    independent rounding errors of ~0.4 % each into a few percent; a wrong scale (e.g. calibrating
    the fusion segments on other inputs than the blended features, a per-channel axis on the wrong
    dimension, or a lost ReLU) gives tens of percent."""
    c32, c8 = int8
    rel, worst = [], 0.0
    for p in _photos(3, start=11, step=53):
        img = as_rgb_uint8(p)
        a32, a8 = c32.colorize(img).ab, c8.colorize(img).ab
        assert not np.array_equal(a32, a8)
        rel.append(np.abs(a8 - a32).mean() / np.abs(a32).mean())
        worst = max(worst, float(np.abs(a8 - a32).max()))
        # with instances (the instance and fusion segments)
        h, w = img.shape[:2]
        boxes = np.array([[0.1 * w, 0.2 * h, 0.6 * w, 0.9 * h], [0.5 * w, 0.1 * h, 0.95 * w, 0.5 * h]])
        b32, b8 = c32.colorize(img, boxes=boxes).ab, c8.colorize(img, boxes=boxes).ab
        rel.append(np.abs(b8 - b32).mean() / np.abs(b32).mean())
        worst = max(worst, float(np.abs(b8 - b32).max()))
    assert max(rel) < 0.03 and worst < 0.25, (rel, worst)


def test_cache_key_differs_from_fp32_and_follows_the_calibration(int8, calib_dir, tmp_path, tiny_weights_dir):
    c32, c8 = int8
    d8, d32 = c8.backend.export_dir, c32.backend.export_dir
    assert d8 != d32 and d8.parent == d32.parent and "int8" in d8.name and "fp32" in d32.name
    sha = read_manifest(d32)["weights_sha256"]
    assert d32.name == f"{sha[:20]}-seg2-fp32"
    other = tmp_path / "other"
    shutil.copytree(calib_dir, other)
    first = sorted(other.iterdir())[0]
    first.write_bytes(_photos(1, start=200)[0].read_bytes())  # same names, other photo
    names = {Q.int8_cache_name(sha, Q.Calibration(x, 3)) for x in (calib_dir, other)}
    names.add(Q.int8_cache_name(sha, Q.Calibration(calib_dir, 2)))
    names.add(Q.int8_cache_name(sha, Q.Calibration(calib_dir, 3, detector=str(DETECTOR))))
    assert len(names) == 4 and all(n.startswith(f"{sha[:20]}-seg2-int8-") for n in names)
    assert Q.int8_cache_name(sha, Q.Calibration(calib_dir, 3)) == Q.int8_cache_name(sha, Q.Calibration(calib_dir, 3))


def test_cached_int8_export_is_reused(int8, tiny_weights_dir, calib_dir, monkeypatch):
    c32, c8 = int8
    monkeypatch.setattr(Q, "quantize_export_dir", lambda *a, **k: pytest.fail("quantized again"))
    det = str(DETECTOR) if DETECTOR.is_file() else None
    again = make_backend(tiny_weights_dir, "onnxruntime", precision="int8", calibration=calib_dir,
                         calibration_count=3, calibration_detector=det)
    assert again.export_dir == c8.backend.export_dir


def test_bad_calibration_folders_name_the_folder_or_photo(tmp_path, tiny_weights_dir, cache):
    missing = tmp_path / "nope"
    with pytest.raises(Q.CalibrationError, match=f"{missing}: calibration folder not found"):
        Q.Calibration(missing).photos()
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no photos")
    with pytest.raises(Q.CalibrationError, match=f"{empty}: no photos"):
        Q.calibration_photos(empty)
    afile = tmp_path / "a.jpg"
    afile.write_bytes(b"x")
    with pytest.raises(Q.CalibrationError, match="must be a folder"):
        Q.calibration_photos(afile)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    with pytest.raises(Q.CalibrationError, match=r"broken\.jpg: unreadable calibration photo"):
        Q.calibration_photos(bad)
    # through the API: the same error before anything INT8 is built or cached
    before = set((cache / "onnx").glob("*int8*")) if (cache / "onnx").is_dir() else set()
    with pytest.raises(Q.CalibrationError, match=str(empty)):
        Colorizer.from_pretrained(tiny_weights_dir, backend="onnxruntime", precision="int8", calibration=empty)
    assert set((cache / "onnx").glob("*int8*")) == before
    with pytest.raises(ValueError, match="count must be an int >= 1"):
        Q.Calibration(empty, 0)


def test_cli_export_int8_errors(tmp_path, tiny_weights_dir, capsys):
    from instcolor.cli import main

    out = tmp_path / "out"
    assert main(["export", "--weights", str(tiny_weights_dir), "-o", str(out), "--precision", "int8"]) == 2
    assert "needs --calibration" in capsys.readouterr().err
    assert main(["export", "--weights", str(tiny_weights_dir), "-o", str(out), "--precision", "int8",
                 "--calibration", str(tmp_path / "missing")]) == 2
    assert f"{tmp_path / 'missing'}: calibration folder not found" in capsys.readouterr().err
    assert main(["export", "--weights", str(tiny_weights_dir), "-o", str(out), "--calibration", str(tmp_path)]) == 2
    assert "apply to --precision int8" in capsys.readouterr().err
    assert not out.exists()
    for argv, msg in ((["--backend", "torch", "--precision", "int8"], "--precision applies to"),
                      (["--backend", "onnxruntime", "--precision", "fp16"], "--precision applies to"),
                      (["--backend", "onnxruntime", "--calibration", str(tmp_path)], "apply to --precision int8")):
        img = tmp_path / "in.png"
        from instcolor.imageio import write_image

        write_image(img, np.zeros((16, 16, 3), np.uint8))
        assert main(["colorize", str(img), "-o", str(tmp_path / "c"), "--weights", str(tiny_weights_dir)] + argv) == 2
        assert msg in capsys.readouterr().err


def test_precision_mismatches_are_refused(int8, tiny_weights_dir, tmp_path, cache):
    c32, c8 = int8
    with pytest.raises(ValueError, match="is an fp32 export, not int8"):
        OnnxRuntimeBackend(c32.backend.export_dir, precision="int8")
    with pytest.raises(ValueError, match="is an int8 export, not fp32"):
        OnnxRuntimeBackend(c8.backend.export_dir, precision="fp32")
    with pytest.raises(ValueError, match="give calibration=DIR"):
        make_backend(tiny_weights_dir, "onnxruntime", precision="int8")
    with pytest.raises(ValueError, match="fp32 export; precision='int8' needs an INT8 export"):
        make_backend(c32.backend.export_dir, "onnxruntime", precision="int8")
    with pytest.raises(ValueError, match="apply to precision='int8' only"):
        make_backend(tiny_weights_dir, "onnxruntime", calibration=tmp_path)
    with pytest.raises(ValueError, match="takes no options"):
        make_backend(tiny_weights_dir, "torch", precision="int8")
    # an int8 export folder runs as it is, precision given or not
    assert OnnxRuntimeBackend(c8.backend.export_dir).precision == "int8"
    assert make_backend(c8.backend.export_dir, "onnxruntime", precision="int8").precision == "int8"


def test_export_segments_int8_writes_a_publishable_folder(int8, tmp_path, calib_dir):
    """export_segments(precision='int8') (the `instcolor export` path) on torch nets: same layout as
    the fp32 export, precision int8, and an earlier export in the folder is replaced file by file."""
    torch = pytest.importorskip("torch")  # noqa: F841
    from conftest import tiny_nets

    from instcolor.export import export_segments

    out = tmp_path / "e"
    (out).mkdir()
    (out / "keep.txt").write_text("not ours")
    m = export_segments(tiny_nets(width=0.0625, seed=1), out / "x", precision="int8",
                        calibration=Q.Calibration(calib_dir, 1))
    assert m["precision"] == "int8" and read_manifest(out / "x")["precision"] == "int8"
    assert [s["name"] for s in m["segments"]] == [s["name"] for s in segment_layout()]
    assert sorted(p.name for p in (out / "x").iterdir()) == sorted([s["file"] for s in m["segments"]] + [MANIFEST])
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary folders left
    with pytest.raises(ValueError, match="needs calibration photos"):
        export_segments(tiny_nets(width=0.0625), out / "y", precision="int8")


# ----------------------------------------------------------------------------- the built-in starter
def test_starter_int8_from_pretrained_with_no_further_arguments(cache):
    from instcolor.weights import STARTER_DIR

    shipped = STARTER_DIR / Q.SHIPPED_DIR
    if not (shipped / MANIFEST).is_file():
        pytest.fail(f"the starter ships no INT8 export at {shipped}: run python benchmarks/make_starter_int8.py")
    c = Colorizer.from_pretrained(backend="onnxruntime", precision="int8")
    m = read_manifest(shipped)
    assert c.backend.precision == "int8" and read_manifest(c.backend.export_dir) == m
    # the shipped folder holds the INT8 segments only; the ones kept fp32 come from the weights
    shipped_files = {p.name for p in shipped.iterdir()}
    for seg in m["segments"]:
        assert (seg["file"] in shipped_files) != (seg["name"] in m["int8"]["float_segments"]), seg["name"]
    assert c.backend.export_dir == shipped or c.backend.export_dir.name.startswith(f"{m['weights_sha256'][:20]}-seg2-int8-shipped-")
    assert m["weights_sha256"] == Q.weights_sha256(STARTER_DIR)  # made from the shipped weights
    size = sum(f.stat().st_size for f in STARTER_DIR.rglob("*") if f.is_file())
    assert size < 20 * 2**20, f"the starter folder is {size / 2**20:.1f} MiB; the package keeps it under 20 MB"
    img = np.random.default_rng(0).integers(0, 256, (40, 56, 3), dtype=np.uint8)
    r = c.colorize(img, boxes=[[4, 4, 30, 30]])
    assert r.rgb.shape == (40, 56, 3)
    assert export_cache_name.__name__  # (imported for the cache test above)


def test_shipped_int8_of_other_weights_is_refused(tmp_path, cache):
    from instcolor.weights import STARTER_DIR

    if not (STARTER_DIR / Q.SHIPPED_DIR / MANIFEST).is_file():
        pytest.fail("the starter ships no INT8 export (python benchmarks/make_starter_int8.py)")
    d = tmp_path / "starter"
    shutil.copytree(STARTER_DIR, d)
    m = json.loads((d / Q.SHIPPED_DIR / MANIFEST).read_text())
    m["weights_sha256"] = "0" * 64
    (d / Q.SHIPPED_DIR / MANIFEST).write_text(json.dumps(m))
    with pytest.raises(ValueError, match="made from other weights.*make_starter_int8.py"):
        Colorizer.from_pretrained(d, backend="onnxruntime", precision="int8")
    # a shipped folder missing an INT8 segment file (not one the guard kept in fp32): named
    m = json.loads((STARTER_DIR / Q.SHIPPED_DIR / MANIFEST).read_text())
    (d / Q.SHIPPED_DIR / MANIFEST).write_text(json.dumps(m))
    lost = next(s for s in m["segments"] if s["name"] not in m["int8"]["float_segments"])
    (d / Q.SHIPPED_DIR / lost["file"]).unlink()
    with pytest.raises(ValueError, match=f"{lost['file']} missing"):
        Colorizer.from_pretrained(d, backend="onnxruntime", precision="int8")


# ----------------------------------------------------------------------------- TensorRT (simulated)
def test_tensorrt_int8_builds_strongly_typed_qdq_engines(int8, monkeypatch, tmp_path):
    """The TensorRT backend with precision='int8' builds every engine from the INT8 (QDQ) export as a
    strongly typed network with no precision flag (explicit quantization), and -- engines simulated
    by ONNX Runtime on the same files (tests/trt_sim.py) -- reproduces the ONNX Runtime INT8 backend.
    Real TensorRT is unverified here (no GPU)."""
    sys.path.insert(0, str(Path(__file__).parent))
    import instcolor.trt.cuda as tcuda
    import instcolor.trt.engine as tengine
    from instcolor import ops
    from instcolor.backends.tensorrt_backend import TensorRTBackend
    from instcolor.pipeline import Batch, prepare_image
    from instcolor.trt.plan import build_mode
    from trt_sim import SimCudart, host_view, sim_tensorrt

    c32, c8 = int8
    assert build_mode("int8", "10.3.0", True) == ("int8", "int8-strong")
    assert build_mode("int8", "11.0.0", False) == ("int8", "int8-strong")
    rt = SimCudart()
    trt = sim_tensorrt(rt)
    monkeypatch.setattr(tcuda, "cudart", lambda: rt)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr(tengine._Logger, "instance", None)
    with pytest.raises(ValueError, match="precision='int8' builds from an INT8 export"):
        TensorRTBackend(c32.backend.export_dir, precision="int8", device="cuda:0", cache_root=tmp_path)
    with pytest.raises(ValueError, match="int8 export; it builds precision='int8' engines only"):
        TensorRTBackend(c8.backend.export_dir, precision="fp32", device="cuda:0", cache_root=tmp_path)
    be = TensorRTBackend(c8.backend.export_dir, precision="int8", max_images=2, device="cuda:0", cache_root=tmp_path)

    def fuse(bg, bl, fi, li, info, img, *, out, stream):
        info, img = np.array(info), np.array(img)
        views = [host_view(a) for a in (bg, bl, fi, li)]
        target = host_view(out)
        rt.launch_kernel(stream, lambda: ops.fuse_instances(*views, info, img, out=target))
        return out

    be.fuse = fuse
    rng = np.random.default_rng(2)
    imgs = [rng.integers(0, 256, (48, 64, 3), dtype=np.uint8) for _ in range(2)]
    prepared = [prepare_image(imgs[0], np.array([[2, 3, 40, 30], [20, 10, 60, 44]]), (), 64, ops),
                prepare_image(imgs[1], np.zeros((0, 4)), (), 64, ops)]
    batch = Batch.stack(prepared)
    # the same files in ONNX Runtime as they are (its backend loads them in qdq_ort.onnxruntime_form:
    # uint8, ReLUs fused; equal up to rounding steps and clipping above the calibrated maxima)
    import instcolor.qdq_ort as qdq_ort

    with monkeypatch.context() as mp:
        mp.setattr(qdq_ort, "onnxruntime_bytes", lambda path: Path(path).read_bytes())
        as_files = OnnxRuntimeBackend(c8.backend.export_dir)
    out = be.run(batch)
    np.testing.assert_allclose(out, as_files.run(batch), rtol=0, atol=2e-5)
    np.testing.assert_allclose(out, c8.backend.run(batch), rtol=0, atol=0.05)
    assert trt.builds and all(b["strongly_typed"] and not b["fp16"] for b in trt.builds)
    assert all(Path(b["onnx"]).parent == c8.backend.export_dir for b in trt.builds)
    be.close()

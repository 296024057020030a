"""Segmented ONNX export and the ONNX Runtime backend."""
import json

import numpy as np
import pytest
import torch

from conftest import GOLDEN_CASES, NEEDS_GOLDEN, load_case, rule_nets, tiny_nets

onnx = pytest.importorskip("onnx", reason="onnx not installed (pip install 'instcolor[onnx]')")
ort = pytest.importorskip("onnxruntime", reason="onnxruntime not installed (pip install 'instcolor[onnx]')")

from instcolor.export import FORMAT, export_segments, read_manifest, segment_specs  # noqa: E402
from instcolor.models.backbone import FEATURE_NAMES  # noqa: E402


@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory):
    nets = tiny_nets(seed=5)
    d = tmp_path_factory.mktemp("export") / "tiny"
    manifest = export_segments(nets, d, size=32)
    return nets, d, manifest


def test_manifest_lists_segments_in_order(tiny_export):
    nets, d, manifest = tiny_export
    assert read_manifest(d) == manifest == json.loads((d / "manifest.json").read_text())
    names = [s["name"] for s in manifest["segments"]]
    assert names == ["full", "instance"] + [f"fusion.{n}" for n in FEATURE_NAMES] + ["fusion.out", "head.full",
                                                                                      "head.fusion"]
    assert manifest["format"] == FORMAT and manifest["width"] == 0.125 and len(manifest["weights_sha256"]) == 64
    assert len(manifest["segments"][1]["outputs"]) == 26
    for s in manifest["segments"]:
        model = onnx.load(str(d / s["file"]))
        onnx.checker.check_model(model)
        assert [i.name for i in model.graph.input] == [i["name"] for i in s["inputs"]]
        assert [o.name for o in model.graph.output] == s["outputs"]


@pytest.mark.parametrize("size, batch", [(32, 1), (48, 3)])
def test_every_segment_matches_torch(tiny_export, size, batch):
    """Dynamic batch and spatial size: each segment equals its torch module on random inputs."""
    nets, d, manifest = tiny_export
    specs = {s["name"]: s for s in segment_specs(nets)}
    rng = np.random.default_rng(size)
    for seg in manifest["segments"]:
        feeds = {i["name"]: rng.standard_normal((batch, i["channels"], size >> i["level"], size >> i["level"])).astype(np.float32)
                 for i in seg["inputs"]}
        got = ort.InferenceSession(str(d / seg["file"]), providers=["CPUExecutionProvider"]).run(None, feeds)
        with torch.no_grad():
            want = specs[seg["name"]]["module"](*(torch.from_numpy(v) for v in feeds.values()))
        want = want if isinstance(want, tuple) else (want,)
        assert len(got) == len(want)
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w.numpy(), rtol=1e-4, atol=1e-4, err_msg=seg["name"])


def test_failed_export_leaves_nothing(tmp_path):
    nets = tiny_nets()
    with pytest.raises(ValueError, match="precision"):
        export_segments(nets, tmp_path / "x", precision="int4")
    assert list(tmp_path.iterdir()) == []


def test_onnxruntime_backend_equals_torch_backend(tiny_weights_dir, tmp_path, monkeypatch):
    from instcolor import Colorizer

    monkeypatch.setenv("INSTCOLOR_CACHE", str(tmp_path / "cache"))
    img = np.random.default_rng(0).integers(0, 256, (40, 56, 3), dtype=np.uint8)
    boxes = [[0, 0, 30, 30], [10, 5, 50, 39]]
    t = Colorizer.from_pretrained(tiny_weights_dir, backend="torch")
    o = Colorizer.from_pretrained(tiny_weights_dir, backend="onnxruntime")
    assert t.backend.name == "torch" and o.backend.name == "onnxruntime"
    a = t.colorize_batch([img, img], [boxes, []], size=32)
    b = o.colorize_batch([img, img], [boxes, []], size=32)
    # the two images take different paths (fusion net with instances, full-image net without)
    assert np.abs(a[0].ab - a[1].ab).max() > 1e-3
    for x, y in zip(a, b):
        np.testing.assert_allclose(x.ab, y.ab, rtol=0, atol=1e-4)
    # auto on the CPU is the onnxruntime backend
    auto = Colorizer.from_pretrained(tiny_weights_dir)
    assert auto.backend.name == "onnxruntime"
    np.testing.assert_allclose(auto.colorize(img, boxes, size=32).ab, b[0].ab, rtol=0, atol=1e-6)
    cached = list((tmp_path / "cache" / "onnx").iterdir())
    assert len(cached) == 1 and (cached[0] / "manifest.json").is_file()
    # the export directory itself loads too
    c = Colorizer.from_pretrained(cached[0], backend="onnxruntime")
    np.testing.assert_allclose(c.colorize(img, boxes, size=32).ab, a[0].ab, rtol=0, atol=1e-4)


@pytest.fixture(scope="module")
def golden_ort_colorizer(tmp_path_factory):
    from instcolor import Colorizer
    from instcolor.backends.onnxruntime_backend import OnnxRuntimeBackend

    d = tmp_path_factory.mktemp("golden_export") / "fp32"
    export_segments(rule_nets(), d)
    return Colorizer(OnnxRuntimeBackend(d))


@NEEDS_GOLDEN
@pytest.mark.parametrize("path", GOLDEN_CASES, ids=[p.stem for p in GOLDEN_CASES])
def test_golden_case_onnxruntime(golden_ort_colorizer, path):
    from instcolor import HintPlanes

    z = load_case(path)
    r = golden_ort_colorizer.colorize(z["image"], z["det_boxes"], z["det_scores"],
                                      HintPlanes(z["hint_B"][0], z["mask_B"][0] + 0.5), size=int(z["fine_size"]))
    want = z["fusion_out_reg"] if "fusion_out_reg" in z else z["gcomp_out_reg"]
    np.testing.assert_allclose(r.ab, want[0], rtol=0, atol=1e-4)
    np.testing.assert_array_equal(r.boxes, z["boxes"])


def test_fp16_export_runs_and_is_close(tmp_path):
    nets = tiny_nets(seed=5)
    m = export_segments(nets, tmp_path / "h", precision="fp16", size=32)
    assert m["precision"] == "fp16"
    model = onnx.load(str(tmp_path / "h" / "full.onnx"))
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
    rng = np.random.default_rng(1)
    feeds = dict(A=rng.uniform(-0.5, 0.5, (1, 1, 32, 32)), B=np.zeros((1, 2, 32, 32)), mask=np.full((1, 1, 32, 32), -0.5))
    got = ort.InferenceSession(str(tmp_path / "h" / "full.onnx"), providers=["CPUExecutionProvider"]).run(
        None, {k: v.astype(np.float16) for k, v in feeds.items()})[0]
    with torch.no_grad():
        want = nets["full"](*(torch.from_numpy(v.astype(np.float32)) for v in feeds.values()))
    assert got.dtype == np.float16
    assert np.abs(want.numpy()).max() > 0.1  # the tolerance below is small next to the output
    np.testing.assert_allclose(got.astype(np.float32), want.numpy(), rtol=0, atol=2e-3)  # fp16 rounding: ~1e-4
    assert next(nets["full"].parameters()).dtype == torch.float32  # export leaves the nets in fp32


def test_export_cli(tiny_weights_dir, tmp_path):
    from instcolor.cli import main

    assert main(["export", "--weights", str(tiny_weights_dir), "-o", str(tmp_path / "e"), "--precision", "both", "--size", "32"]) == 0
    assert read_manifest(tmp_path / "e" / "fp32")["precision"] == "fp32"
    assert read_manifest(tmp_path / "e" / "fp16")["precision"] == "fp16"
    assert main(["export", "--weights", str(tmp_path / "none"), "-o", str(tmp_path / "f")]) == 2


def test_onnxruntime_session_options():
    """One set of session settings for the backend and the detectors: threads = usable cores by
    default, every graph optimisation, arena + memory pattern, idle threads do not spin."""
    from instcolor._ort import session_options, usable_cores

    so = session_options()
    assert so.intra_op_num_threads == usable_cores() >= 1
    assert session_options(3).intra_op_num_threads == 3
    assert so.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert so.enable_cpu_mem_arena and so.enable_mem_pattern and so.inter_op_num_threads == 1
    assert so.get_session_config_entry("session.intra_op.allow_spinning") == "0"

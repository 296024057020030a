"""The torch-free install: ``pip install .`` without the ``torch`` extra colorizes with ONNX Runtime.

Tests marked ``torchfree`` run in CI in a second virtual environment where PyTorch is not installed
(``.ci/run``: ``.venv-ci-notorch``, ``pytest -m torchfree``); in the main environment they run too,
the processes that must work without PyTorch in a subprocess where ``import torch`` fails
(``sys.modules['torch'] = None``). The other tests here need PyTorch: the segments built with
``onnx.helper`` (:mod:`instcolor.onnx_graphs`) against the ``torch.onnx`` export on every golden case,
and the numpy twins of the colour code against the PyTorch reference.
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from conftest import GOLDEN, GOLDEN_CASES, NEEDS_GOLDEN, SEEDS, SHARED, load_case

ort = pytest.importorskip("onnxruntime", reason="onnxruntime is a base dependency")
pytest.importorskip("onnx", reason="onnx is a base dependency")

from instcolor.onnx_graphs import (KINDS, WeightArrays, build_segments, check_states,  # noqa: E402
                                   load_weight_arrays, state_shapes, weights_hash_arrays)

HAS_TORCH = importlib.util.find_spec("torch") is not None
NEEDS_TORCH = pytest.mark.skipif(not HAS_TORCH, reason="needs PyTorch (the torch extra); CI runs it in the main venv")
torchfree = pytest.mark.torchfree
PHOTO = GOLDEN / "images" / "000000050145.jpg"
DETECTOR = SHARED / "models" / "yolox_nano_coco_416.onnx"
REPO = Path(__file__).resolve().parents[1]


def run_python(code: str, block_torch: bool = True, timeout: float = 600, cwd=None) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter of this environment. ``block_torch``: ``import torch`` fails
    there (what an install without PyTorch sees); the code ends by checking that no module of PyTorch
    got loaded either way."""
    prelude = "import sys\n" + ("sys.modules['torch'] = None\n" if block_torch else "")
    epilogue = ("\nloaded = sorted(m for m, v in sys.modules.items() if m.split('.')[0] == 'torch' and v is not None)\n"
                "assert not loaded, f'PyTorch was imported: {loaded[:5]}'\n")
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent))
    return subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code) + epilogue], capture_output=True,
                          text=True, timeout=timeout, cwd=cwd, env=env)


def check_ok(p: subprocess.CompletedProcess) -> str:
    assert p.returncode == 0, f"exit {p.returncode}\nstdout:\n{p.stdout[-3000:]}\nstderr:\n{p.stderr[-3000:]}"
    return p.stdout


def golden_states() -> WeightArrays:
    """The golden weights rule (tests/weights_rule.py) for the three full-width nets, as arrays: no PyTorch."""
    from weights_rule import rule_state_dict

    states = {kind: rule_state_dict(state_shapes(kind, 1.0), SEEDS[kind]) for kind in KINDS}
    return check_states(states, "golden rule", width=1.0)


# ----------------------------------------------------------------------------- torch-free processes
@torchfree
def test_import_instcolor_does_not_load_torch():
    """Not even where PyTorch is installed: the package, the CLI parser, serve, video and the editor."""
    check_ok(run_python("""
        import instcolor, instcolor.cli, instcolor.backends, instcolor.export, instcolor.onnx_graphs, instcolor.models
        import instcolor.serve, instcolor.video, instcolor.ui, instcolor.detect
        instcolor.cli.build_parser()
        from instcolor.models import CheckpointError
        assert issubclass(CheckpointError, ValueError)
    """, block_torch=False))


@torchfree
def test_starter_colorizes_with_onnxruntime_and_never_loads_torch(tmp_path):
    """The default path (starter weights, auto -> onnxruntime, the detector, the distribution decoding the starter recommends)
    loads no PyTorch even where it is installed: the segments come from onnx_graphs."""
    out = check_ok(run_python(f"""
        import json, os
        import numpy as np
        os.environ["INSTCOLOR_CACHE"] = {str(tmp_path / "cache")!r}
        from instcolor import Colorizer
        c = Colorizer.from_pretrained(detector={str(DETECTOR) if DETECTOR.is_file() else None!r})
        assert c.backend.name == "onnxruntime" and c.ops is not None
        r = c.colorize({str(PHOTO)!r})
        d = c.colorize({str(PHOTO)!r}, decode="regression")   # the starter recommends distribution
        m = json.loads((c.backend.export_dir / "manifest.json").read_text())
        print(json.dumps(dict(shape=list(r.rgb.shape), boxes=len(r.boxes), built_by=m.get("built_by"),
                              ab_std=float(r.ab.std()), diff=float(np.abs(r.ab - d.ab).max()))))
    """, block_torch=False))
    info = json.loads(out.strip().splitlines()[-1])
    assert info["shape"] == [320, 480, 3] and info["built_by"] == "onnx.helper"
    assert info["ab_std"] > 1e-3 and info["diff"] > 1e-3  # colours came out; the two decodings differ
    if DETECTOR.is_file():
        assert info["boxes"] >= 1


@torchfree
@NEEDS_GOLDEN
def test_every_golden_case_through_built_segments():
    """The authors' numbers from segments built without PyTorch (the golden weights rule in numpy)."""
    from instcolor import Colorizer, HintPlanes
    from instcolor.backends.onnxruntime_backend import OnnxRuntimeBackend

    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        build_segments(golden_states(), Path(tmp) / "fp32")
        c = Colorizer(OnnxRuntimeBackend(Path(tmp) / "fp32"))
        assert c.ops is not None
        for path in GOLDEN_CASES:
            z = load_case(path)
            r = c.colorize(z["image"], z["det_boxes"], z["det_scores"], HintPlanes(z["hint_B"][0], z["mask_B"][0] + 0.5),
                           size=int(z["fine_size"]))
            want = z["fusion_out_reg"] if "fusion_out_reg" in z else z["gcomp_out_reg"]
            np.testing.assert_array_equal(r.boxes, z["boxes"], err_msg=path.stem)
            np.testing.assert_allclose(r.ab, want[0], rtol=0, atol=1e-4, err_msg=path.stem)


@torchfree
@NEEDS_GOLDEN
def test_layout_tables_match_the_official_state_dict_keys():
    """state_shapes (the nets without PyTorch) lists exactly the official keys and shapes."""
    nets = json.loads((GOLDEN / "state_dict_keys.json").read_text())["nets"]
    import ast

    for kind, name in (("full", "GComp"), ("instance", "G"), ("fusion", "GF")):
        keys = nets[name]["keys"]
        keys = ast.literal_eval(keys) if isinstance(keys, str) else keys
        want = {k["key"]: tuple(k["shape"]) for k in keys}
        assert state_shapes(kind, 1.0) == want, kind


@torchfree
def test_pth_folder_without_torch_is_refused_pointing_to_bundle(tmp_path):
    weights = tmp_path / "official"
    weights.mkdir()
    for f in ("latest_net_G.pth", "latest_net_GF.pth", "latest_net_GComp.pth"):
        (weights / f).write_bytes(b"PK\x03\x04 not read without torch")
    out = check_ok(run_python(f"""
        from instcolor import Colorizer
        from instcolor.models import CheckpointError
        try:
            Colorizer.from_pretrained({str(weights)!r})
        except CheckpointError as e:
            print("MESSAGE", e)
        else:
            raise AssertionError("a .pth folder loaded without PyTorch")
        from instcolor.cli import main
        rc = main(["colorize", {str(PHOTO)!r}, "-o", {str(tmp_path / "out")!r}, "--weights", {str(weights)!r}])
        print("RC", rc)
    """))
    message = [ln for ln in out.splitlines() if ln.startswith("MESSAGE")][0]
    assert "latest_net_" in message and "PyTorch is not installed" in message
    assert f"instcolor bundle --weights {weights}" in message
    assert "RC 2" in out


@torchfree
def test_cli_colorize_without_torch_equals_the_api(tmp_path):
    """``instcolor colorize`` (detector, an rgb hint: the numpy colour twin) writes what the API returns."""
    detector = ["--detector", str(DETECTOR)] if DETECTOR.is_file() else []
    out = check_ok(run_python(f"""
        import os
        import numpy as np
        os.environ["INSTCOLOR_CACHE"] = {str(tmp_path / "cache")!r}
        from instcolor.cli import main
        rc = main(["colorize", {str(PHOTO)!r}, "-o", {str(tmp_path / "out")!r}, "--format", "png",
                   "--hint", "40,60,#cc3311,3", *{detector!r}])
        assert rc == 0, rc
        from instcolor import Colorizer, Hint
        from instcolor.imageio import read_image
        c = Colorizer.from_pretrained(detector={(str(DETECTOR) if DETECTOR.is_file() else None)!r})
        want = c.colorize({str(PHOTO)!r}, hints=[Hint(40, 60, rgb=(0xcc, 0x33, 0x11), size=3)]).rgb
        got = read_image({str(tmp_path / "out" / "000000050145.png")!r}).rgb
        nohint = c.colorize({str(PHOTO)!r}).rgb
        print("EQUAL", bool(np.array_equal(got, want)), "HINT_CHANGES", bool(np.abs(want.astype(int) - nohint).max() > 0))
    """))
    assert "EQUAL True" in out and "HINT_CHANGES True" in out


@torchfree
def test_serve_and_editor_without_torch(tmp_path):
    pytest.importorskip("fastapi", reason="the serve extra is not installed")
    pytest.importorskip("httpx", reason="the serve extra is not installed")
    out = check_ok(run_python(f"""
        import io, os, time
        import numpy as np
        from PIL import Image
        os.environ["INSTCOLOR_CACHE"] = {str(tmp_path / "cache")!r}
        from fastapi.testclient import TestClient
        from instcolor import Colorizer, Hint
        from instcolor.serve import ServeSettings, build_app
        from instcolor.imageio import read_image
        img = np.asarray(Image.open({str(PHOTO)!r}).convert("RGB"))
        buf = io.BytesIO(); Image.fromarray(img).save(buf, "PNG")
        app = build_app(ServeSettings(warmup=False, backend="onnxruntime"))
        with TestClient(app) as client:
            deadline = time.monotonic() + 300
            while not app.state.service.is_ready():
                assert time.monotonic() < deadline, app.state.service.load_error
                time.sleep(0.05)
            r = client.post("/v1/colorize", content=buf.getvalue(), headers={{"content-type": "image/png"}})
            assert r.status_code == 200, r.text
            served = read_image(r.content).rgb
            s = client.post("/editor/sessions?size=128", content=buf.getvalue(), headers={{"content-type": "image/png"}})
            assert s.status_code == 201, s.text
            sid = s.json()["session"]
            e = client.post(f"/editor/sessions/{{sid}}/result",
                            json={{"hints": [{{"x": 40, "y": 60, "rgb": "#cc3311", "size": 3}}], "format": "png"}})
            assert e.status_code == 200, e.text
            edited = read_image(e.content).rgb
        c = Colorizer.from_pretrained()
        want = c.colorize(img).rgb
        want_hint = c.colorize(img, hints=[Hint(40, 60, rgb=(0xcc, 0x33, 0x11), size=3)], size=128).rgb
        print("SERVED", bool(np.array_equal(served, want)), "EDITED", bool(np.array_equal(edited, want_hint)))
    """))
    assert "SERVED True EDITED True" in out


@torchfree
def test_video_without_torch(tmp_path):
    pytest.importorskip("cv2", reason="the video extra is not installed")
    out = check_ok(run_python(f"""
        import os
        import numpy as np
        os.environ["INSTCOLOR_CACHE"] = {str(tmp_path / "cache")!r}
        from PIL import Image
        from instcolor import Colorizer
        img = np.asarray(Image.open({str(PHOTO)!r}).convert("RGB"))[:240, :320]
        frames = [np.roll(img, 3 * i, axis=1) for i in range(5)]
        c = Colorizer.from_pretrained()
        plain = list(c.colorize_video(iter(frames), stabilize="none"))
        same = all(np.array_equal(f, c.colorize(x).rgb) for f, x in zip(plain, frames))
        flow = list(c.colorize_video(iter(frames), stabilize="flow"))
        print("FRAMES", len(plain), len(flow), "SAME", same)
    """))
    assert "FRAMES 5 5 SAME True" in out


@torchfree
def test_bad_weight_arrays_are_one_error_naming_the_file(tmp_path):
    from instcolor.errors import CheckpointError
    from instcolor.weights import starter_weights

    good = load_weight_arrays(starter_weights())
    assert set(good) == set(KINDS) and good.width == 0.25
    broken = {k: dict(v) for k, v in good.items()}
    del broken["fusion"]["weight_layer4.simple_bg_conv.2.bias"]
    broken["instance"]["model9.1.weight"] = broken["instance"]["model9.1.weight"][:, :3]
    broken["full"]["extra.weight"] = np.zeros(3, np.float32)
    for kind, pattern in (("fusion", "missing keys .*weight_layer4.simple_bg_conv.2.bias"),
                          ("instance", r"shape mismatches .*model9.1.weight"), ("full", "unexpected keys .*extra.weight")):
        states = {k: (broken[k] if k == kind else good[k]) for k in KINDS}
        with pytest.raises(CheckpointError, match=rf"mine\.safetensors \[{kind}\] does not fit the {kind} net: {pattern}"):
            check_states(states, "mine.safetensors", width=0.25)
    # a bundle whose tensors were modified fails its hash check, by name, without PyTorch
    import shutil

    d = tmp_path / "bundle"
    shutil.copytree(starter_weights(), d)
    data = bytearray((d / "model.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (d / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="model.safetensors: sha256 mismatch"):
        load_weight_arrays(d)
    with pytest.raises(CheckpointError, match="weights directory not found"):
        load_weight_arrays(tmp_path / "none")


@torchfree
@NEEDS_GOLDEN
def test_numpy_colour_twins_match_the_authors_conversion():
    from instcolor import color

    c = np.load(GOLDEN / "color_conversion.npz")
    np.testing.assert_allclose(color.rgb_to_lab_np(c["rgb_in"]), c["lab_norm_out"], rtol=0, atol=1e-5)
    np.testing.assert_allclose(color.lab_to_rgb_np(c["lab_norm_in"]), c["rgb_out"], rtol=0, atol=1e-5)


# ----------------------------------------------------------------------------- against PyTorch
@pytest.fixture(scope="module")
def golden_exports(tmp_path_factory):
    """The golden nets exported twice: torch.onnx (export_segments) and onnx_graphs (build_segments)."""
    if not GOLDEN.is_dir():
        pytest.skip(f"golden vectors not found at {GOLDEN}")
    from conftest import rule_nets
    from instcolor.export import export_segments
    from instcolor.onnx_graphs import arrays_from_nets

    d = tmp_path_factory.mktemp("golden_exports")
    nets = rule_nets()
    mt = export_segments(nets, d / "torch")
    mh = build_segments(arrays_from_nets(nets), d / "helper")
    return d / "torch", d / "helper", mt, mh


class _Recorder:
    """Wraps an OnnxRuntimeBackend's _run: every segment call's feeds and outputs."""

    def __init__(self, backend):
        self.calls, self.backend, self._run = [], backend, backend._run
        backend._run = self

    def __call__(self, segment, feeds):
        outs = self._run(segment, feeds)
        self.calls.append((segment, {k: np.array(v) for k, v in feeds.items()}, [np.array(o) for o in outs]))
        return outs

    def stop(self) -> None:
        """Unwrap: backend -> recorder -> backend is a reference cycle that would keep every ONNX
        Runtime session of the case (about 1.7 GB and 50 threads) alive until a full GC pass."""
        del self.backend._run
        self.backend = self._run = None


@NEEDS_TORCH
@NEEDS_GOLDEN
@pytest.mark.parametrize("path", GOLDEN_CASES, ids=[p.stem for p in GOLDEN_CASES])
def test_built_segments_equal_the_torch_export_on_golden_cases(golden_exports, path):
    """Every segment a golden case runs (with the class heads), fed the torch export's own inputs,
    gives the same outputs from the built graph within 1e-5; and the end-to-end ab too."""
    from instcolor import Colorizer, HintPlanes
    from instcolor.backends.onnxruntime_backend import OnnxRuntimeBackend
    from instcolor.pipeline import Batch

    torch_dir, helper_dir, mt, mh = golden_exports
    mh = dict(mh)
    assert mh.pop("built_by") == "onnx.helper" and mh == mt  # same layout, names, channels, weights hash
    z = load_case(path)
    hints = HintPlanes(z["hint_B"][0], z["mask_B"][0] + 0.5)
    size = int(z["fine_size"])
    results = {}
    for name, d in (("torch", torch_dir), ("helper", helper_dir)):
        c = Colorizer(OnnxRuntimeBackend(d))
        p, _, _ = c._prepare(z["image"], z["det_boxes"], z["det_scores"], hints, size, name=path.stem)
        rec = _Recorder(c.backend)
        try:
            heads = c.backend.run_heads(Batch.stack([p]), logits=True)
        finally:
            rec.stop()
        results[name] = (rec.calls, heads, c if name == "helper" else None)  # one set of sessions alive at a time
        del c
    calls_t, heads_t, _ = results["torch"]
    sessions_h = results["helper"][2].backend.sessions
    ran = {seg for seg, _, _ in calls_t}
    assert ("fusion.conv4_3" in ran) == ("fusion_out_reg" in z) and {"head.full", "head.fusion"} & ran
    for seg, feeds, outs in calls_t:
        got = sessions_h[seg].run(None, feeds)
        for o_t, o_h, name in zip(outs, got, sessions_h[seg].get_outputs()):
            np.testing.assert_allclose(o_h, o_t, rtol=0, atol=1e-5, err_msg=f"{path.stem}: {seg} -> {name.name}")
    heads_h = results["helper"][1]
    np.testing.assert_allclose(heads_h.ab, heads_t.ab, rtol=0, atol=1e-5)
    np.testing.assert_allclose(heads_h.logits, heads_t.logits, rtol=0, atol=1e-5)
    want = z["fusion_out_reg"] if "fusion_out_reg" in z else z["gcomp_out_reg"]
    np.testing.assert_allclose(heads_h.ab[0], want[0], rtol=0, atol=1e-4)


@NEEDS_TORCH
def test_built_segments_equal_the_torch_export_with_global_branches(tmp_path):
    """Nets with the SIGGRAPH'17 global branch in all three nets (the instance net's reads zeros),
    random BatchNorm statistics, width 0.25: every segment on random inputs, within 1e-5."""
    import torch

    from instcolor.export import export_segments, weights_hash
    from instcolor.models import FusionNet, InstanceNet, SIGGRAPHBackbone
    from instcolor.onnx_graphs import arrays_from_nets

    torch.manual_seed(3)
    nets = {"full": SIGGRAPHBackbone(0.25, global_hints=True), "instance": InstanceNet(0.25, global_hints=True),
            "fusion": FusionNet(0.25, global_hints=True)}
    with torch.no_grad():
        for net in nets.values():
            for k, v in net.state_dict().items():
                if v.is_floating_point():
                    v.copy_(torch.rand_like(v) + 0.5 if k.endswith("running_var") else torch.randn_like(v) * 0.2)
            net.eval()
    mt = export_segments(nets, tmp_path / "t", size=32)
    states = arrays_from_nets(nets)
    mh = build_segments(states, tmp_path / "h")
    assert mh.pop("built_by") == "onnx.helper" and mh == mt
    assert mt["global_input_segments"] == ["full", "fusion.conv4_3"]
    assert weights_hash_arrays(states) == weights_hash(nets)
    rng = np.random.default_rng(0)
    for seg in mt["segments"]:
        feeds = {}
        for i in seg["inputs"]:
            s = 1 if i["level"] is None else 24 >> i["level"]
            feeds[i["name"]] = rng.standard_normal((2, i["channels"], s, s)).astype(np.float32)
        a = ort.InferenceSession(str(tmp_path / "t" / seg["file"]), providers=["CPUExecutionProvider"]).run(None, feeds)
        b = ort.InferenceSession(str(tmp_path / "h" / seg["file"]), providers=["CPUExecutionProvider"]).run(None, feeds)
        assert len(a) == len(b) == len(seg["outputs"])
        for x, y, name in zip(a, b, seg["outputs"]):
            assert x.shape == y.shape
            np.testing.assert_allclose(y, x, rtol=0, atol=1e-5 * max(1.0, float(np.abs(x).max())),
                                       err_msg=f"{seg['name']} -> {name}")


@NEEDS_TORCH
def test_bundle_arrays_equal_the_torch_loader():
    from instcolor.export import weights_hash
    from instcolor.models import load_bundle
    from instcolor.weights import starter_weights

    nets = load_bundle(starter_weights())
    arrays = load_weight_arrays(starter_weights())
    for kind in KINDS:
        state = nets[kind].state_dict()
        assert list(state) == list(arrays[kind])
        for k, v in state.items():
            np.testing.assert_array_equal(arrays[kind][k], v.numpy(), err_msg=f"{kind}.{k}")
    assert weights_hash_arrays(arrays) == weights_hash(nets)


@NEEDS_TORCH
def test_numpy_colour_twins_match_the_torch_reference():
    import torch

    from instcolor import Hint, color
    from instcolor.compose import compose_high

    rng = np.random.default_rng(0)
    rgb = rng.random((2, 3, 17, 13), dtype=np.float32)
    np.testing.assert_allclose(color.rgb_to_lab_np(rgb), color.rgb_to_lab(torch.from_numpy(rgb)).numpy(), rtol=0, atol=2e-6)
    lab = np.concatenate([rng.uniform(-0.5, 0.5, (2, 1, 9, 11)), rng.uniform(-1, 1, (2, 2, 9, 11))], 1).astype(np.float32)
    np.testing.assert_allclose(color.lab_to_rgb_np(lab), color.lab_to_rgb(torch.from_numpy(lab)).numpy(), rtol=0, atol=2e-6)
    u8 = rng.integers(0, 256, (31, 7, 3), dtype=np.uint8)
    np.testing.assert_allclose(color.rgb_to_lab_np(color.uint8_to_float_np(u8)), color.lab_of_uint8(u8), rtol=0, atol=2e-6)
    got = color.to_uint8_np(color.lab_to_rgb_np(lab))
    want = color.to_uint8(color.lab_to_rgb(torch.from_numpy(lab)))
    assert np.abs(got.astype(int) - want).max() <= 1 and (got != want).mean() < 0.01
    # a hint's colour (numpy twin) against the PyTorch reference
    for rgb3 in ((200, 30, 30), (0, 0, 0), (255, 255, 255), (12, 200, 77)):
        lab1 = color.rgb_to_lab(torch.tensor(rgb3, dtype=torch.float32).reshape(1, 3, 1, 1) / 255.0)
        np.testing.assert_allclose(Hint(1, 1, rgb=rgb3).normalized_ab(), (lab1[0, 1, 0, 0], lab1[0, 2, 0, 0]),
                                   rtol=0, atol=2e-6)
    # the detector's grey input and the prepare reference (PyTorch) against the twin
    from instcolor.detect.onnx_detector import lightness_grey
    from instcolor.prepare import lab_of_uint8 as lab_reference

    img = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    np.testing.assert_allclose(color.lab_of_uint8(img), lab_reference(img), rtol=0, atol=1e-6)
    L = lab_reference(img)[0, 0] * 100.0 + 50.0
    want_grey = np.clip(np.rint(L * (255.0 / 100.0)), 0, 255).astype(np.uint8)
    assert np.abs(lightness_grey(img)[..., 0].astype(int) - want_grey).max() <= 1
    # the 16-bit output (numpy twins) against the same steps in PyTorch (the code it replaced)
    import torch.nn.functional as F

    high = rng.random((21, 34, 3)).astype(np.float32)
    ab = rng.uniform(-0.6, 0.6, (2, 8, 8)).astype(np.float32)
    got = compose_high(high, ab)
    ab_up = F.interpolate(torch.from_numpy(ab)[None], size=(21, 34), mode="bilinear", align_corners=False)
    lab_t = color.rgb_to_lab(torch.from_numpy(high).permute(2, 0, 1)[None].clamp(0.0, 1.0))
    out = color.lab_to_rgb(torch.cat((lab_t[:, :1], ab_up), 1))
    want = torch.round(torch.clamp(out, 0.0, 1.0) * 65535.0).to(torch.int32)[0].permute(1, 2, 0).numpy()
    assert got.dtype == np.uint16 and got.shape == (21, 34, 3)
    assert np.abs(got.astype(int) - want).max() <= 2

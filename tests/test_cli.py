"""The ``instcolor colorize`` command."""
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from instcolor.cli import main


def _write(path, h=30, w=40, seed=0):
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)


@pytest.fixture
def folder(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    _write(d / "a.png")
    _write(d / "b.jpg", 50, 20, 1)
    (d / "corrupt.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    (d / "notes.txt").write_text("not an image")
    return d


def test_folder_with_corrupt_file(folder, tmp_path, tiny_weights_dir, capsys):
    out = tmp_path / "out"
    rc = main(["colorize", str(folder), "-o", str(out), "--weights", str(tiny_weights_dir), "--size", "32"])
    err = capsys.readouterr().err
    assert rc == 1
    assert "corrupt.jpg" in err and "1 failed" in err
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["a.png", "b.jpg"]  # JPEG in, JPEG out
    assert np.asarray(Image.open(out / "b.jpg")).shape == (50, 20, 3)


def test_boxes_json_hints_and_success(tmp_path, tiny_weights_dir, capsys):
    """The CLI's pixels equal the API's with the same boxes (JSON keyed by stem and by file name;
    an image it does not list gets none) and hints; boxes and hints each change those pixels, so
    neither can be dropped unnoticed."""
    from instcolor import Colorizer, Hint

    src = tmp_path / "in"
    src.mkdir()
    _write(src / "a.png")
    _write(src / "b.png", 50, 20, 1)
    _write(src / "c.png", 36, 28, 2)
    per_image = {"a": [[1, 1, 20, 25]], "b": [[0, 0, 10, 10]], "c": []}
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps({"a": {"boxes": per_image["a"], "scores": [0.9]}, "b.png": per_image["b"]}))
    out = tmp_path / "out"
    rc = main(["colorize", str(src), "-o", str(out), "--weights", str(tiny_weights_dir),
               "--boxes", str(boxes), "--size", "32", "--hint", "5,5,#0000ff,5"])
    assert rc == 0, capsys.readouterr().err
    api = Colorizer.from_pretrained(tiny_weights_dir)
    hint = [Hint(5, 5, rgb=(0, 0, 255), size=5)]

    def changed(x, y):  # pixels that differ by more than one level
        return int((np.abs(x.astype(int) - y).max(axis=2) > 1).sum())

    for stem, b in per_image.items():
        want = api.colorize(src / f"{stem}.png", boxes=b, hints=hint, size=32).rgb
        np.testing.assert_array_equal(np.asarray(Image.open(out / f"{stem}.png")), want, err_msg=stem)
        if b:
            assert changed(want, api.colorize(src / f"{stem}.png", boxes=[], hints=hint, size=32).rgb) > 50, stem
    # (inside a box the instance net, which gets no hints, dominates: the unboxed image shows the hint)
    assert changed(want, api.colorize(src / "c.png", boxes=[], size=32).rgb) > 10


def test_boxes_npz_folder(folder, tmp_path, tiny_weights_dir):
    (folder / "corrupt.jpg").unlink()
    bdir = tmp_path / "in_bbox"
    bdir.mkdir()
    np.savez(bdir / "a.npz", bbox=np.array([[2, 3, 30, 25]], np.float32), scores=np.array([0.8], np.float32))
    out = tmp_path / "out"
    assert main(["colorize", str(folder), "-o", str(out), "--weights", str(tiny_weights_dir), "--boxes", str(bdir), "--size", "32"]) == 0
    # the same result as the API with those boxes
    from instcolor import Colorizer

    r = Colorizer.from_pretrained(tiny_weights_dir).colorize(folder / "a.png", boxes=[[2, 3, 30, 25]], size=32)
    np.testing.assert_array_equal(np.asarray(Image.open(out / "a.png")), r.rgb)


def test_never_overwrites_an_input(tmp_path, tiny_weights_dir, capsys):
    src = tmp_path / "pic.png"
    _write(src)
    before = src.read_bytes()
    rc = main(["colorize", str(src), "-o", str(tmp_path), "--weights", str(tiny_weights_dir), "--size", "32"])
    assert rc == 2 and "holds) the input" in capsys.readouterr().err
    assert src.read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_bad_weights_path_is_one_line(tmp_path, folder):
    proc = subprocess.run([sys.executable, "-m", "instcolor", "colorize", str(folder), "-o", str(tmp_path / "o"),
                           "--weights", str(tmp_path / "missing")], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "weights directory not found" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "o").exists()


def test_no_weights_and_bad_hint(tmp_path, folder, capsys, monkeypatch):
    import instcolor.weights

    monkeypatch.setattr(instcolor.weights, "STARTER_DIR", tmp_path / "no_starter")  # a package without it
    assert main(["colorize", str(folder), "-o", str(tmp_path / "o")]) == 2
    assert "--weights" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["colorize", str(folder), "-o", str(tmp_path / "o"), "--hint", "1,2,red"])


def test_missing_input_is_reported(tmp_path, tiny_weights_dir, capsys):
    src = tmp_path / "ok.png"
    _write(src)
    rc = main(["colorize", str(src), str(tmp_path / "ghost.png"), "-o", str(tmp_path / "o"), "--weights", str(tiny_weights_dir), "--size", "32"])
    assert rc == 1 and "ghost.png" in capsys.readouterr().err
    assert (tmp_path / "o" / "ok.png").is_file()


def test_init_weights_then_colorize(tmp_path, capsys):
    w = tmp_path / "w"
    assert main(["init-weights", str(w), "--width", "0.125", "--seed", "1"]) == 0
    assert sorted(p.name for p in w.iterdir()) == [".instcolor-output.json", "latest_net_G.pth", "latest_net_GComp.pth",
                                                   "latest_net_GF.pth"]
    src = tmp_path / "p.png"
    _write(src)
    assert main(["colorize", str(src), "-o", str(tmp_path / "o"), "--weights", str(w), "--size", "16"]) == 0
    assert main(["init-weights", str(w), "--width", "2"]) == 2
    # --width and --seed are used: the same seed gives the same nets, another seed other nets
    import torch

    from instcolor.models import load_nets

    assert main(["init-weights", str(tmp_path / "w1"), "--width", "0.125", "--seed", "1"]) == 0
    assert main(["init-weights", str(tmp_path / "w2"), "--width", "0.125", "--seed", "2"]) == 0
    a, b, c = (load_nets(tmp_path / n)["full"] for n in ("w", "w1", "w2"))
    assert a.width == 0.125
    wa, wb, wc = (n.state_dict()["model1.0.weight"] for n in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)


def test_detector_option(tmp_path, tiny_weights_dir, capsys):
    from conftest import SHARED

    model = SHARED / "models" / "yolox_nano_coco_416.onnx"
    if not model.is_file():
        pytest.skip(f"shared detector model not found at {model}")
    pytest.importorskip("onnxruntime", reason="onnxruntime not installed")
    src = tmp_path / "street.png"
    Image.fromarray(np.load(SHARED / "golden" / "v01_s64_nobox_photoA.npz")["image"]).save(src)
    rc = main(["colorize", str(src), "-o", str(tmp_path / "o"), "--weights", str(tiny_weights_dir),
               "--detector", str(model), "--size", "32"])
    assert rc == 0
    # the pixels of the API with that detector (the man and the bicycle drive the fusion net) ...
    from instcolor import Colorizer

    r = Colorizer.from_pretrained(tiny_weights_dir, detector=str(model)).colorize(src, size=32)
    assert len(r.boxes) >= 2
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "o" / "street.png")), r.rgb)
    # ... which are not those of the full-image net
    plain = Colorizer.from_pretrained(tiny_weights_dir).colorize(src, size=32).rgb
    assert (np.abs(r.rgb.astype(int) - plain).max(axis=2) > 1).sum() > 1000
    assert main(["colorize", str(src), "-o", str(tmp_path / "o2"), "--weights", str(tiny_weights_dir),
                 "--detector", str(tmp_path / "missing.onnx")]) == 2
    assert "missing.onnx" in capsys.readouterr().err


def test_detector_runtime_tensorrt_without_tensorrt(tmp_path, tiny_weights_dir, capsys):
    """--detector-runtime tensorrt reaches OnnxDetector(runtime='tensorrt'); here it cannot run and
    both commands stop with one line saying why, writing nothing."""
    from conftest import SHARED

    from instcolor.detect.tensorrt_runner import tensorrt_unavailable_reason

    reason = tensorrt_unavailable_reason(0)
    if not reason:
        pytest.skip("TensorRT and a GPU are present: the refusal path does not apply")
    model = SHARED / "models" / "yolox_nano_coco_416.onnx"
    if not model.is_file():
        pytest.skip(f"shared detector model not found at {model}")
    src = tmp_path / "a.png"
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(src)
    for cmd in (["colorize", str(src), "-o", str(tmp_path / "o"), "--weights", str(tiny_weights_dir)],
                ["detect", str(src), "-o", str(tmp_path / "o")]):
        capsys.readouterr()
        assert main(cmd + ["--detector", str(model), "--detector-runtime", "tensorrt"]) == 2
        assert capsys.readouterr().err == f"instcolor: error: {reason}\n"
        assert not (tmp_path / "o").exists()


def test_outputs_get_normal_file_permissions(tmp_path, tiny_weights_dir):
    import os
    import stat

    src = tmp_path / "p.png"
    _write(src)
    old = os.umask(0o022)
    try:
        assert main(["colorize", str(src), "-o", str(tmp_path / "o"), "--weights", str(tiny_weights_dir), "--size", "16"]) == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "o" / "p.png").stat().st_mode) == 0o644


def test_starter_weights_are_the_default(tmp_path, capsys, monkeypatch):
    """The package ships starter weights: no --weights colorizes and says which weights it used."""
    import instcolor.weights

    monkeypatch.setattr(instcolor.weights, "_notice_shown", False)  # once per process: other tests may have used it
    src = tmp_path / "in"
    src.mkdir()
    _write(src / "a.png", h=48, w=64)
    assert main(["colorize", str(src), "-o", str(tmp_path / "o"), "--size", "64"]) == 0
    err = capsys.readouterr().err
    assert "starter weights" in err and "--weights" in err
    out = np.asarray(Image.open(tmp_path / "o" / "a.png"))
    assert out.shape == (48, 64, 3)
    from instcolor import Colorizer

    np.testing.assert_array_equal(out, Colorizer.from_pretrained().colorize(src / "a.png", size=64).rgb)


def test_precision_needs_tensorrt(tmp_path, folder, tiny_weights_dir, capsys):
    rc = main(["colorize", str(folder), "-o", str(tmp_path / "o"), "--weights", str(tiny_weights_dir),
               "--precision", "fp16"])
    assert rc == 2 and "--backend tensorrt" in capsys.readouterr().err


def test_eval_and_bundle_commands(tmp_path, tiny_weights_dir, capsys):
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    gt.mkdir()
    pred.mkdir()
    for i in range(2):
        _write(gt / f"x{i}.jpg", seed=i)
        img = np.asarray(Image.open(gt / f"x{i}.jpg")).astype(np.int16)
        Image.fromarray(np.clip(img + 4, 0, 255).astype(np.uint8)).save(pred / f"x{i}.png")
    assert main(["eval", str(pred), str(gt), "--json", str(tmp_path / "r.json"), "--name", "shifted"]) == 0
    out = capsys.readouterr().out
    assert "shifted" in out and "PSNR" in out
    r = json.loads((tmp_path / "r.json").read_text())
    assert r["count"] == 2 and 30 < r["psnr"] < 37  # +4 levels (less where clipped): about 36 dB
    assert main(["eval", str(pred), str(tmp_path / "nowhere")]) == 2

    assert main(["bundle", "--weights", str(tiny_weights_dir), "-o", str(tmp_path / "b")]) == 0
    assert {p.name for p in (tmp_path / "b").iterdir()} == {".instcolor-output.json", "config.json", "model.safetensors"}
    assert main(["colorize", str(gt / "x0.jpg"), "-o", str(tmp_path / "o"), "--weights", str(tmp_path / "b"),
                 "--size", "32"]) == 0


def test_hints_file_applies_a_saved_hint_set(tmp_path, tiny_weights_dir, capsys):
    """``colorize --hints FILE`` (the editor's hint-set format) gives the API's pixels with those hints,
    together with --hint points; a bad entry is one line naming the file and the field."""
    from instcolor import Colorizer, Hint

    src = tmp_path / "in"
    src.mkdir()
    _write(src / "c.png", 36, 28, 2)
    hs = tmp_path / "hints.json"
    hs.write_text(json.dumps({"hints": [{"x": 5, "y": 5, "rgb": "#0000ff", "size": 5}]}))
    out = tmp_path / "out"
    rc = main(["colorize", str(src), "-o", str(out), "--weights", str(tiny_weights_dir), "--size", "32",
               "--hints", str(hs), "--hint", "20,25,#ff0000,3"])
    assert rc == 0, capsys.readouterr().err
    api = Colorizer.from_pretrained(tiny_weights_dir)
    want = api.colorize(src / "c.png", boxes=[], size=32,
                        hints=[Hint(5, 5, rgb=(0, 0, 255), size=5), Hint(20, 25, rgb=(255, 0, 0), size=3)]).rgb
    np.testing.assert_array_equal(np.asarray(Image.open(out / "c.png")), want)
    without_file = api.colorize(src / "c.png", boxes=[], size=32, hints=[Hint(20, 25, rgb=(255, 0, 0), size=3)]).rgb
    assert not np.array_equal(want, without_file)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"hints": [{"x": 5, "rgb": "#0000ff"}]}))
    rc = main(["colorize", str(src), "-o", str(tmp_path / "out2"), "--weights", str(tiny_weights_dir), "--hints", str(bad)])
    err = capsys.readouterr().err
    assert rc == 2 and str(bad) in err and "hints[0].y" in err and "Traceback" not in err
    assert not (tmp_path / "out2").exists()

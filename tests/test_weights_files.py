"""Weights files are untrusted input: every corrupt, truncated, wrong-type or code-running file
gives one clear error naming the file (never a traceback from torch / safetensors / onnx /
onnxruntime internals, never code run), for each loader: official .pth files, bundles, ONNX
export folders, the training state. Also: resuming a training run applies its --lr."""
import ast
import builtins
import hashlib
import json
import pickle
import random
import shutil
import warnings
from pathlib import Path

import pytest
import torch

from conftest import tiny_nets
from instcolor.models import CheckpointError, load_bundle, load_nets, save_bundle, save_official
from instcolor.models.checkpoint import OFFICIAL_FILES, read_state_dict, safe_torch_load

PACKAGE = Path(__file__).resolve().parents[1] / "python" / "instcolor"


def _one_clear_line(message: str, path) -> None:
    assert str(path) in message, message
    assert "\n" not in message and "Traceback" not in message, message
    assert len(message) < 600, message


class _RunsCode:
    """Unpickling this writes ``marker`` (what a malicious checkpoint would do instead)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (builtins.exec, (f"open({self.marker!r}, 'w').write('ran')",))


# ----------------------------------------------------------------------------- official .pth files
@pytest.fixture(scope="module")
def official(tmp_path_factory):
    d = tmp_path_factory.mktemp("official")
    save_official(d, tiny_nets(0.125, seed=1), fusion_prefix=True)
    return d


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def _truncations(n: int) -> list[int]:
    return sorted({0, 1, 2, 10, 64, 512, n // 4, n // 2, (3 * n) // 4, n - 100, n - 22, n - 1})


@pytest.mark.parametrize("fname", sorted(OFFICIAL_FILES.values()))
def test_truncated_official_file_names_the_file(official, tmp_path, fname):
    data = (official / fname).read_bytes()
    for cut in _truncations(len(data)):
        d = tmp_path / f"cut{cut}"
        _copy(official, d)
        (d / fname).write_bytes(data[:cut])
        with pytest.raises(CheckpointError) as e:
            load_nets(d)
        _one_clear_line(str(e.value), d / fname)


def test_random_bytes_and_flipped_bytes_in_an_official_file(official, tmp_path):
    fname = OFFICIAL_FILES["full"]
    data = (official / fname).read_bytes()
    rng = random.Random(7)
    variants = [bytes(rng.randrange(256) for _ in range(4096)), b"garbage", b"\x80\x02]q\x00.",  # pickle of []
                b"PK\x03\x04" + bytes(100)]
    for k in range(12):  # damage inside the zip: headers, the pickle, the tensor data, the directory
        b = bytearray(data)
        for _ in range(8):
            b[rng.randrange(len(b))] = rng.randrange(256)
        variants.append(bytes(b))
    for k, blob in enumerate(variants):
        d = tmp_path / f"v{k}"
        _copy(official, d)
        (d / fname).write_bytes(blob)
        try:
            load_nets(d)
        except CheckpointError as e:
            _one_clear_line(str(e), d / fname)
        # a flip inside tensor data can leave a loadable file: that is fine, it is not a crash


@pytest.mark.parametrize("content, message", [
    ([torch.zeros(3)], "expected a state dict"),
    (torch.zeros(3), "expected a state dict"),
    ({"model1.0.weight": 3}, "not a named tensor"),
    ({1: torch.zeros(3)}, "not a named tensor"),
    ({"state_dict": [torch.zeros(1)]}, "not a named tensor"),
    ({"model1.0.weight": torch.zeros(8, 4, 3, 3, dtype=torch.complex64)}, "unusable type"),
    ({"model1.0.weight": torch.zeros(8, 4, 3, 3, dtype=torch.bool)}, "unusable type"),
    ({"model1.0.weight": torch.zeros(6400, 4, 3, 3)}, "output channels"),  # would build a 100x-wide net
    ({"model1.0.weight": torch.zeros(0, 4, 3, 3)}, "output channels"),
    ({"model1.0.weight": torch.zeros(8)}, "no 'model1.0.weight' conv"),
    ({}, "no 'model1.0.weight' conv"),
])
def test_wrong_content_in_an_official_file(official, tmp_path, content, message):
    d = _copy(official, tmp_path / "w")
    torch.save(content, d / OFFICIAL_FILES["instance"])
    with pytest.raises(CheckpointError, match=message) as e:
        load_nets(d)
    _one_clear_line(str(e.value), d / OFFICIAL_FILES["instance"])


@pytest.mark.parametrize("how", ["torch.save", "torch.save-in-dict", "pickle-protocol-2", "legacy-format"])
def test_pickle_that_would_run_code_is_refused_and_not_run(official, tmp_path, how):
    marker = tmp_path / "code-ran"
    evil = _RunsCode(marker)
    d = _copy(official, tmp_path / "w")
    target = d / OFFICIAL_FILES["fusion"]
    if how == "torch.save":
        torch.save(evil, target)
    elif how == "torch.save-in-dict":
        torch.save({"model1.0.weight": torch.zeros(8, 4, 3, 3), "x": evil}, target)
    elif how == "pickle-protocol-2":
        target.write_bytes(pickle.dumps(evil, protocol=2))
    else:
        torch.save({"x": evil}, target, _use_new_zipfile_serialization=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing from torch's internals on the way either
        with pytest.raises(CheckpointError) as e:
            load_nets(d)
    _one_clear_line(str(e.value), target)
    assert not marker.exists(), "unpickling ran code from the weights file"
    assert "refused" in str(e.value) and "exec" in str(e.value)


def test_sanity_the_malicious_pickle_does_run_code_without_weights_only(tmp_path):
    """(The test above means something: this file does run code when loaded the unsafe way.)"""
    marker = tmp_path / "code-ran"
    torch.save(_RunsCode(marker), tmp_path / "evil.pth")
    torch.load(tmp_path / "evil.pth", weights_only=False)
    assert marker.read_text() == "ran"


def test_safe_torch_load_missing_empty_directory(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        safe_torch_load(tmp_path / "none.pth")
    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty file"):
        read_state_dict(tmp_path / "empty.pth")
    with pytest.raises(CheckpointError, match="not found"):
        read_state_dict(tmp_path)  # a folder where a file is expected


def test_every_torch_load_in_the_package_is_weights_only():
    """No pickle from a file the user did not create is ever fully unpickled: every
    ``torch.load(...)`` call in the package passes ``weights_only=True``."""
    calls = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "load" \
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "torch":
                kw = {k.arg: k.value for k in node.keywords}
                ok = isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True
                calls.append((f"{path.relative_to(PACKAGE)}:{node.lineno}", ok))
    assert calls, "found no torch.load call at all (the scan is broken)"
    assert [c for c, ok in calls if not ok] == []


def test_bundle_and_checkpoint_import_one_way():
    """models/bundle.py and models/state.py never import models/checkpoint.py (checkpoint ->
    bundle -> state): no import circle."""
    def imports(name):
        tree = ast.parse((PACKAGE / "models" / name).read_text(encoding="utf-8"))
        return {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}

    assert "checkpoint" not in imports("bundle.py") and "checkpoint" not in imports("state.py")
    assert {"bundle", "checkpoint"} & imports("state.py") == set()
    assert "bundle" in imports("checkpoint.py")


def test_through_the_cli_one_line_exit_2(official, tmp_path, capsys):
    from instcolor.cli import main

    d = _copy(official, tmp_path / "w")
    data = (d / OFFICIAL_FILES["full"]).read_bytes()
    (d / OFFICIAL_FILES["full"]).write_bytes(data[: len(data) // 2])
    capsys.readouterr()
    assert main(["export", "--weights", str(d), "-o", str(tmp_path / "e")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("instcolor: error: ") and "\n" not in err
    _one_clear_line(err, d / OFFICIAL_FILES["full"])
    assert not (tmp_path / "e").exists()


# ----------------------------------------------------------------------------- bundles
@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    d = tmp_path_factory.mktemp("bundle") / "b"
    save_bundle(d, tiny_nets(0.125, seed=2))
    return d


def _bundle_with_model(src, dst, blob):
    """A bundle whose model.safetensors is ``blob`` and whose recorded hash matches it, so that the
    safetensors reader itself sees the damage (not only the hash check)."""
    shutil.copytree(src, dst)
    (dst / "model.safetensors").write_bytes(blob)
    config = json.loads((dst / "config.json").read_text())
    config["sha256"] = hashlib.sha256(blob).hexdigest()
    (dst / "config.json").write_text(json.dumps(config))
    return dst


def test_truncated_and_random_safetensors(bundle, tmp_path):
    data = (bundle / "model.safetensors").read_bytes()
    header = int.from_bytes(data[:8], "little")
    rng = random.Random(3)
    blobs = [data[:cut] for cut in _truncations(len(data)) + [8 + header // 2, 8 + header, 9 + header]]
    blobs += [bytes(rng.randrange(256) for _ in range(2048)), (2**62).to_bytes(8, "little") + b"{}",
              (10).to_bytes(8, "little") + b"not json!!", (2).to_bytes(8, "little") + b"[]"]
    for k in range(16):  # damage in the JSON header (names, dtypes, offsets)
        b = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            b[rng.randrange(8, 8 + header)] = rng.randrange(32, 127)
        blobs.append(bytes(b))
    refused = 0
    for k, blob in enumerate(blobs):
        d = _bundle_with_model(bundle, tmp_path / f"b{k}", blob)
        try:
            load_bundle(d)  # (a header edit may be harmless, e.g. in the padding: then it loads)
        except CheckpointError as e:
            _one_clear_line(str(e), d / "model.safetensors")
            refused += 1
        else:
            assert k >= len(_truncations(len(data))) + 7, f"blob {k} (a truncation or junk) loaded"
    assert refused >= len(blobs) - 8


def test_damaged_bundle_fails_the_hash_check_first(bundle, tmp_path):
    d = tmp_path / "b"
    shutil.copytree(bundle, d)
    data = (d / "model.safetensors").read_bytes()
    (d / "model.safetensors").write_bytes(data[:-10])
    with pytest.raises(CheckpointError, match="sha256 mismatch") as e:
        load_nets(d)
    _one_clear_line(str(e.value), d / "model.safetensors")


@pytest.mark.parametrize("blob", [b"", b"\xff\xfe garbage", b"{\"format\": ", b"[1, 2]", b"null"])
def test_corrupt_bundle_config(bundle, tmp_path, blob):
    d = tmp_path / "b"
    shutil.copytree(bundle, d)
    (d / "config.json").write_bytes(blob)
    with pytest.raises(CheckpointError) as e:
        load_nets(d)
    _one_clear_line(str(e.value), d / "config.json")


def test_bundle_tensor_of_an_unusable_type(bundle, tmp_path):
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(bundle / "model.safetensors"))
    tensors["full.model1.0.bias"] = torch.zeros_like(tensors["full.model1.0.bias"], dtype=torch.bool)
    src = tmp_path / "m.safetensors"
    save_file(tensors, str(src), metadata={"format": "pt"})
    d = _bundle_with_model(bundle, tmp_path / "b", src.read_bytes())
    with pytest.raises(CheckpointError, match="unusable type") as e:
        load_bundle(d)
    assert str(d) in str(e.value)


def test_set_bundle_info_keeps_the_hash_valid(bundle, tmp_path):
    from instcolor.models.bundle import bundle_info, set_bundle_info

    d = tmp_path / "b"
    shutil.copytree(bundle, d)
    before = json.loads((d / "config.json").read_text())
    model = (d / "model.safetensors").read_bytes()
    set_bundle_info(d, {"note": "corrected history"})
    after = json.loads((d / "config.json").read_text())
    assert bundle_info(d) == {"note": "corrected history"}
    assert {k: v for k, v in after.items() if k != "info"} == {k: v for k, v in before.items() if k != "info"}
    assert (d / "model.safetensors").read_bytes() == model
    load_bundle(d)  # still loads: the hash covers the weights file only
    (d / "model.safetensors").write_bytes(model[:-1] + bytes([model[-1] ^ 1]))
    with pytest.raises(CheckpointError, match="sha256"):
        set_bundle_info(d, {})  # a bundle that does not load is not edited
    assert json.loads((d / "config.json").read_text())["info"] == {"note": "corrected history"}


def test_starter_bundle_loads_and_records_what_ran():
    """The built-in starter's recorded history says what the training actually did: v3 was fine-tuned
    from v2 (whose own history is docs/starter_v2_info.json) in time-limited GPU stages whose step
    counts are recorded; it records its recommended decoding and the training prior of its rebalanced head."""
    from instcolor.models.bundle import bundle_info
    from instcolor.weights import STARTER_DIR

    if not (STARTER_DIR / "model.safetensors").is_file():
        pytest.skip(f"starter weights not installed at {STARTER_DIR}")
    load_bundle(STARTER_DIR)
    info = bundle_info(STARTER_DIR)
    assert info["name"] == "instcolor starter v3" and "starter_v2_info.json" in info["stages"]["v2"]
    full = info["stages"]["full"]
    assert "fine-tuned from v2" in full and "3438 steps x 64 at lr 3e-4" in full and "step 4206 at lr 6e-5" in full
    assert "795 steps" in info["stages"]["instance"] and "53 steps" in info["stages"]["fusion"]
    assert "shrink_photos.py" in info["data"]
    assert info["decode"] == {"decode": "mixed", "temperature": 0.38, "mix": 0.35}
    assert len(info["class_rebalance"]["counts"]) == 529 and info["class_rebalance"]["mix"] == 0.5


# ----------------------------------------------------------------------------- ONNX export folders
onnx_needed = pytest.mark.skipif(
    __import__("importlib").util.find_spec("onnxruntime") is None or __import__("importlib").util.find_spec("onnx") is None,
    reason="onnx / onnxruntime not installed (pip install 'instcolor[onnx]')")


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory):
    if __import__("importlib").util.find_spec("onnxruntime") is None:
        pytest.skip("onnxruntime not installed")
    from instcolor.export import export_segments

    d = tmp_path_factory.mktemp("export") / "e"
    export_segments(tiny_nets(0.125, seed=4), d, size=32)
    return d


def _ort_colorizer(path):
    from instcolor import Colorizer

    return Colorizer.from_pretrained(path, backend="onnxruntime")


@onnx_needed
def test_intact_export_loads(export_dir):
    assert _ort_colorizer(export_dir).backend.name == "onnxruntime"


@onnx_needed
@pytest.mark.parametrize("segment", ["full.onnx", "fusion.conv5_3.onnx", "fusion.out.onnx"])
def test_corrupt_segment_file_names_the_file(export_dir, tmp_path, segment):
    from instcolor.export import ExportError

    data = (export_dir / segment).read_bytes()
    rng = random.Random(5)
    blobs = [data[:cut] for cut in sorted({0, 1, 16, 200, len(data) // 3, len(data) // 2, len(data) - 1})]
    blobs += [bytes(rng.randrange(256) for _ in range(1024)), b"not an onnx model",
              (export_dir / "instance.onnx").read_bytes()]  # a valid model, but not this segment
    for k, blob in enumerate(blobs):
        d = tmp_path / f"e{k}"
        shutil.copytree(export_dir, d)
        (d / segment).write_bytes(blob)
        with pytest.raises(ExportError) as e:
            _ort_colorizer(d)
        _one_clear_line(str(e.value), d / segment)
    d = tmp_path / "missing"
    shutil.copytree(export_dir, d)
    (d / segment).unlink()
    with pytest.raises(ExportError, match="not found") as e:
        _ort_colorizer(d)
    _one_clear_line(str(e.value), d / segment)


@onnx_needed
@pytest.mark.parametrize("edit, message", [
    (lambda m: "{not json", "not valid JSON"),
    (lambda m: [], "JSON object"),
    (lambda m: dict(m, segments=m["segments"][:-1]), "unexpected segments"),
    (lambda m: dict(m, segments="x"), "list of objects"),
    (lambda m: dict(m, width=7), "width"),
    (lambda m: dict(m, feature_names=m["feature_names"][::-1]), "feature_names"),
    (lambda m: dict(m, segments=[dict(s, file="../../outside.onnx") if s["name"] == "full" else s
                                 for s in m["segments"]]), "file name in the folder"),
    (lambda m: dict(m, segments=[dict(s, inputs=[]) if s["name"] == "fusion.conv2_2" else s
                                 for s in m["segments"]]), "inputs must be"),
    (lambda m: dict(m, segments=[dict(s, outputs=["x"]) if s["name"] == "instance" else s
                                 for s in m["segments"]]), "outputs must be"),
])
def test_corrupt_manifest_names_the_file(export_dir, tmp_path, edit, message):
    from instcolor.export import ExportError

    d = tmp_path / "e"
    shutil.copytree(export_dir, d)
    new = edit(json.loads((d / "manifest.json").read_text()))
    (d / "manifest.json").write_text(new if isinstance(new, str) else json.dumps(new))
    with pytest.raises(ExportError, match=message) as e:
        _ort_colorizer(d)
    _one_clear_line(str(e.value), d / "manifest.json")


@onnx_needed
def test_corrupt_segment_through_the_cli(export_dir, tmp_path, capsys):
    import numpy as np
    from PIL import Image

    from instcolor.cli import main

    d = tmp_path / "e"
    shutil.copytree(export_dir, d)
    (d / "instance.onnx").write_bytes(b"\x08\x07garbage")
    Image.fromarray(np.full((16, 16, 3), 99, np.uint8)).save(tmp_path / "p.png")
    capsys.readouterr()
    assert main(["colorize", str(tmp_path / "p.png"), "-o", str(tmp_path / "out"), "--weights", str(d),
                 "--backend", "onnxruntime"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err and str(d / "instance.onnx") in err, err


# ----------------------------------------------------------------------------- training state.pt
def _photos(folder, n=6):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    for i in range(n):
        img = np.empty((40, 48, 3), np.uint8)
        img[:] = rng.integers(0, 256, 3)
        img[8:24, 10:30] = rng.integers(0, 256, 3)
        Image.fromarray(img).save(folder / f"p{i}.png")
    return folder


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return _photos(tmp_path_factory.mktemp("train") / "photos")


def _cfg(photos, out, **kw):
    from instcolor.train import TrainConfig

    base = dict(stage="full", data=str(photos), out=str(out), width=0.125, size=32, batch_size=2, lr=1e-3, steps=2,
                amp="off", val_every=1000, val_images=2, checkpoint_seconds=1e9, seed=1, bn_batches=0)
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def run_dir(photos, tmp_path_factory):
    from instcolor.train import Trainer

    d = tmp_path_factory.mktemp("run") / "r"
    Trainer(_cfg(photos, d), progress=False).run()
    return d


def test_state_pt_holds_only_weights_only_content(run_dir):
    state = torch.load(run_dir / "state.pt", weights_only=True)
    assert state["step"] == 2 and "opt" in state


@pytest.mark.parametrize("damage", ["truncate", "empty", "list", "evil", "no-keys"])
def test_damaged_state_pt_is_a_train_error_naming_it(photos, run_dir, tmp_path, damage):
    from instcolor.train import TrainError, Trainer

    d = tmp_path / "r"
    shutil.copytree(run_dir, d)
    state = d / "state.pt"
    marker = tmp_path / "code-ran"
    if damage == "truncate":
        state.write_bytes(state.read_bytes()[:1000])
    elif damage == "empty":
        state.write_bytes(b"")
    elif damage == "list":
        torch.save([1, 2], state)
    elif damage == "evil":
        torch.save({"step": 2, "x": _RunsCode(marker)}, state)
    else:
        torch.save({"step": 2}, state)
    with pytest.raises(TrainError) as e:
        Trainer(_cfg(photos, d, steps=3), progress=False)
    _one_clear_line(str(e.value), state)
    assert not marker.exists()


def test_resume_applies_a_new_learning_rate_and_logs_it(photos, run_dir, tmp_path):
    from instcolor.train import Trainer

    d = tmp_path / "r"
    shutil.copytree(run_dir, d)
    same = tmp_path / "same"
    shutil.copytree(run_dir, same)
    saved = torch.load(d / "state.pt", weights_only=True)["opt"]["param_groups"]
    assert {g["lr"] for g in saved} == {1e-3}

    t = Trainer(_cfg(photos, d, steps=4, lr=2.5e-4), progress=False)
    assert t.step == 2
    assert [g["lr"] for g in t.opt.param_groups] == [2.5e-4] * len(t.opt.param_groups)
    t.run()
    assert {g["lr"] for g in torch.load(d / "state.pt", weights_only=True)["opt"]["param_groups"]} == {2.5e-4}
    log = [json.loads(x) for x in (d / "log.jsonl").read_text().splitlines()]
    changes = [e for e in log if "lr_to" in e]
    assert changes == [{"step": 2, "lr_from": 1e-3, "lr_to": 2.5e-4}]

    # the rate really drives the steps: resuming with the old rate gives other weights
    u = Trainer(_cfg(photos, same, steps=4, lr=1e-3), progress=False)
    assert [g["lr"] for g in u.opt.param_groups] == [1e-3] * len(u.opt.param_groups)
    u.run()
    assert not any("lr_to" in json.loads(x) for x in (same / "log.jsonl").read_text().splitlines())
    a, b = t.nets["full"].state_dict(), u.nets["full"].state_dict()
    assert any(not torch.equal(a[k], b[k]) for k in a if a[k].is_floating_point())

    # resuming again with the (now saved) new rate changes nothing and logs nothing new
    again = Trainer(_cfg(photos, d, steps=5, lr=2.5e-4), progress=False)
    assert again.lr_change is None
    again.run()
    log = [json.loads(x) for x in (d / "log.jsonl").read_text().splitlines()]
    assert [e for e in log if "lr_to" in e] == changes

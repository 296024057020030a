"""The compact weights bundle (model.safetensors + config.json) and the built-in starter weights."""
import argparse
import json
import os
import stat

import numpy as np
import pytest
import torch

from conftest import tiny_nets
from instcolor import Colorizer
from instcolor.models import CheckpointError, is_bundle, load_bundle, load_nets, save_bundle, save_official
from instcolor.models.bundle import _sha256_file

KINDS = ("full", "instance", "fusion")


def _frozen_backbone_nets(width=0.125, seed=0):
    """tiny nets where, as in training, the fusion net's backbone equals the full net's."""
    nets = tiny_nets(width, seed)
    fusion = nets["fusion"].state_dict()
    with torch.no_grad():
        for k, v in nets["full"].state_dict().items():
            if k in fusion and fusion[k].shape == v.shape:
                fusion[k].copy_(v)
    return nets


def _fp16_rounded(state):
    return {k: (v.half().float() if v.is_floating_point() else v) for k, v in state.items()}


def _assert_states_equal(a, b):
    assert list(a) == list(b)
    for k in a:
        assert a[k].dtype == b[k].dtype, k
        assert torch.equal(a[k], b[k]), k


def _rewrite_model(bundle, fn):
    """Apply ``fn`` to the stored tensors, rewrite model.safetensors and fix the recorded hash."""
    from safetensors.torch import load_file, save_file

    tensors = fn(load_file(str(bundle / "model.safetensors")))
    save_file(tensors, str(bundle / "model.safetensors"))
    cfg = json.loads((bundle / "config.json").read_text())
    cfg["sha256"] = _sha256_file(bundle / "model.safetensors")
    (bundle / "config.json").write_text(json.dumps(cfg))


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory):
    nets = _frozen_backbone_nets(0.125, seed=7)
    d = save_bundle(tmp_path_factory.mktemp("bundle") / "tiny", nets, info={"width": 0.125, "train_images": 42})
    return nets, d


# ------------------------------------------------------------------ format

@pytest.mark.parametrize("width", [0.125, 0.25])
def test_round_trip_gives_fp16_rounded_weights_at_the_same_width(tmp_path, width):
    nets = _frozen_backbone_nets(width, seed=1)
    for net in nets.values():  # non-trivial BN statistics
        for name, buf in net.named_buffers():
            if name.endswith("running_var"):
                buf.uniform_(0.5, 2.0)
            elif name.endswith("num_batches_tracked"):
                buf.fill_(1234)
    out = save_bundle(tmp_path / "b", nets)
    assert out == tmp_path / "b" and is_bundle(out)
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    mask = os.umask(0)
    os.umask(mask)
    for p in [out, *out.iterdir()]:  # like plainly created files, though built in a 0700 temp folder
        assert stat.S_IMODE(p.stat().st_mode) == (0o777 if p.is_dir() else 0o666) & ~mask, p
    loaded = load_bundle(out)
    assert set(loaded) == set(KINDS)
    for kind in KINDS:
        net = loaded[kind]
        assert type(net) is type(nets[kind]) and net.width == width and not net.training
        assert all(p.dtype == torch.float32 for p in net.parameters())
        _assert_states_equal(net.state_dict(), _fp16_rounded(nets[kind].state_dict()))
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["format"] == "instcolor-bundle" and cfg["version"] == 1 and cfg["width"] == width
    assert cfg["nets"] == {"full": "SIGGRAPHBackbone", "instance": "InstanceNet", "fusion": "FusionNet"}
    assert cfg["sha256"] == _sha256_file(out / "model.safetensors") and cfg["info"] is None


def test_stored_tensors_are_fp16_and_prefixed(tiny_bundle):
    from safetensors.torch import load_file

    nets, d = tiny_bundle
    stored = load_file(str(d / "model.safetensors"))
    assert all(k.split(".", 1)[0] in KINDS for k in stored)
    assert {v.dtype for v in stored.values()} <= {torch.float16, torch.int64}
    assert stored["full.model1.0.weight"].dtype == torch.float16
    shared = json.loads((d / "config.json").read_text())["shared"]
    assert not set(shared) & set(stored)
    n_keys = sum(len(net.state_dict()) for net in nets.values())
    assert len(stored) + len(shared) == n_keys


def test_identical_tensors_are_stored_once_and_different_ones_are_not(tmp_path):
    nets = _frozen_backbone_nets(0.125, seed=2)
    full, inst = nets["full"].state_dict(), nets["instance"].state_dict()
    with torch.no_grad():
        # equal only after the fp16 conversion: still one tensor
        inst["model2.0.weight"].copy_(full["model2.0.weight"].half().float() * (1 + 2.0 ** -14))
        assert not torch.equal(inst["model2.0.weight"], full["model2.0.weight"].half().float())
        # -0.0 and 0.0 compare equal but are different bits: kept apart
        full["model1.0.bias"].zero_()
        inst["model1.0.bias"].copy_(-torch.zeros_like(inst["model1.0.bias"]))
    d = save_bundle(tmp_path / "b", nets)
    shared = json.loads((d / "config.json").read_text())["shared"]
    assert shared["fusion.model1.0.weight"] == "full.model1.0.weight"
    assert shared["fusion.model_out.0.weight"] == "full.model_out.0.weight"
    assert shared["instance.model2.0.weight"] == "full.model2.0.weight"
    assert "instance.model1.0.weight" not in shared  # different random draws
    assert "instance.model1.0.bias" not in shared
    assert not any(k.startswith("full.") for k in shared)
    assert all(k.split(".", 1)[1] == v.split(".", 1)[1] for k, v in shared.items())
    loaded = load_bundle(d)
    assert torch.equal(loaded["fusion"].state_dict()["model1.0.weight"], full["model1.0.weight"].half().float())
    assert torch.signbit(loaded["instance"].state_dict()["model1.0.bias"]).all()
    assert not torch.signbit(loaded["full"].state_dict()["model1.0.bias"]).any()
    # fusion-only tensors (the weight generators) exist and are stored under fusion.
    fusion_only = set(nets["fusion"].state_dict()) - set(full)
    assert fusion_only and not any(f"fusion.{k}" in shared for k in fusion_only)


def test_without_identical_tensors_nothing_is_shared(tmp_path):
    nets = tiny_nets(0.125, seed=3)
    with torch.no_grad():  # make every floating tensor distinct across nets
        for i, kind in enumerate(KINDS):
            for v in nets[kind].state_dict().values():
                if v.is_floating_point():
                    v.add_(0.25 * (i + 1))
            for name, v in nets[kind].named_buffers():
                if name.endswith("num_batches_tracked"):
                    v.fill_(i)
    d = save_bundle(tmp_path / "b", nets)
    assert json.loads((d / "config.json").read_text())["shared"] == {}
    for kind in KINDS:
        _assert_states_equal(load_bundle(d)[kind].state_dict(), _fp16_rounded(nets[kind].state_dict()))


def test_saving_is_deterministic(tmp_path):
    nets = _frozen_backbone_nets(0.125, seed=10)
    a = save_bundle(tmp_path / "a", nets, info={"train_images": 3, "width": 0.125})
    b = save_bundle(tmp_path / "b", nets, info={"train_images": 3, "width": 0.125})
    for f in ("model.safetensors", "config.json"):
        assert (a / f).read_bytes() == (b / f).read_bytes(), f


def test_bundle_is_smaller_than_the_official_files(tmp_path):
    nets = _frozen_backbone_nets(0.25, seed=4)
    save_official(tmp_path / "official", nets)
    save_bundle(tmp_path / "b", nets)
    official = sum(p.stat().st_size for p in (tmp_path / "official").iterdir())
    bundle = (tmp_path / "b" / "model.safetensors").stat().st_size
    assert bundle < official * 0.4, (bundle, official)  # fp16 alone halves it; the shared backbone does the rest


def test_load_nets_and_colorizer_accept_a_bundle(tmp_path, tiny_bundle):
    nets, d = tiny_bundle
    loaded = load_nets(d)
    assert loaded["full"].width == 0.125
    for kind in KINDS:
        _assert_states_equal(loaded[kind].state_dict(), _fp16_rounded(nets[kind].state_dict()))
    # the same fp16-rounded weights in the official layout colorize identically
    rounded = tiny_nets(0.125)
    for kind in KINDS:
        rounded[kind].load_state_dict(_fp16_rounded(nets[kind].state_dict()))
    save_official(tmp_path / "official", rounded)
    img = np.random.default_rng(0).integers(0, 256, (40, 56, 3), dtype=np.uint8)
    boxes = [[4, 4, 30, 36]]
    r = Colorizer.from_pretrained(d, backend="torch").colorize(img, boxes=boxes, size=32)
    ref = Colorizer.from_pretrained(tmp_path / "official", backend="torch").colorize(img, boxes=boxes, size=32)
    assert r.rgb.shape == (40, 56, 3) and r.rgb.dtype == np.uint8
    np.testing.assert_array_equal(r.rgb, ref.rgb)


def test_onnxruntime_backend_and_export_accept_a_bundle(tmp_path, tiny_bundle, monkeypatch):
    pytest.importorskip("onnx", reason="onnx not installed")
    pytest.importorskip("onnxruntime", reason="onnxruntime not installed")
    from instcolor.cli import main
    from instcolor.export import export_cache_name, read_manifest, weights_hash

    nets, d = tiny_bundle
    monkeypatch.setenv("INSTCOLOR_CACHE", str(tmp_path / "cache"))
    img = np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    r = Colorizer.from_pretrained(d, backend="onnxruntime").colorize(img, size=32)
    ref = Colorizer.from_pretrained(d, backend="torch").colorize(img, size=32)
    assert np.abs(r.ab - ref.ab).max() < 1e-3
    expected = weights_hash(load_nets(d))
    cached = list((tmp_path / "cache" / "onnx").iterdir())
    assert [p.name for p in cached] == [export_cache_name(load_nets(d), "fp32")]
    assert export_cache_name(load_nets(d), "fp32").startswith(expected[:20])
    assert main(["export", "--weights", str(d), "-o", str(tmp_path / "exp"), "--size", "32"]) == 0
    assert read_manifest(tmp_path / "exp")["weights_sha256"] == expected


# ------------------------------------------------------------------ errors

def test_tampered_file_fails_the_hash_check(tmp_path, tiny_bundle):
    import shutil

    d = tmp_path / "b"
    shutil.copytree(tiny_bundle[1], d)
    data = bytearray((d / "model.safetensors").read_bytes())
    data[len(data) // 2] ^= 0x01
    (d / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"model\.safetensors: sha256 mismatch"):
        load_bundle(d)
    with pytest.raises(CheckpointError, match="sha256 mismatch"):
        load_nets(d)


@pytest.mark.parametrize("missing", ["model.safetensors", "config.json"])
def test_missing_file(tmp_path, tiny_bundle, missing):
    import shutil

    d = tmp_path / "b"
    shutil.copytree(tiny_bundle[1], d)
    (d / missing).unlink()
    assert not is_bundle(d)
    with pytest.raises(CheckpointError, match=f"missing {missing}"):
        load_bundle(d)
    with pytest.raises(CheckpointError, match=f"missing {missing}"):
        load_nets(d)  # a partial bundle is reported as one, not as missing .pth files
    with pytest.raises(CheckpointError, match="not found"):
        load_bundle(tmp_path / "nowhere")


@pytest.mark.parametrize("edit, message", [
    (lambda text, cfg: "{not json", r"config\.json: not valid JSON"),
    (lambda text, cfg: json.dumps(dict(cfg, format="something-else")), r"config\.json: format 'something-else'"),
    (lambda text, cfg: json.dumps(dict(cfg, version=2)), r"config\.json: bundle version 2 is not supported"),
    (lambda text, cfg: json.dumps(dict(cfg, width=0)), r"'width' must be a number"),
    (lambda text, cfg: json.dumps(dict(cfg, width=0.25)), r"\[full\] does not fit SIGGRAPHBackbone: shape mismatches"),
    (lambda text, cfg: json.dumps(dict(cfg, nets=dict(cfg["nets"], instance="FusionNet"))), r"'nets' is"),
    (lambda text, cfg: json.dumps(dict(cfg, shared=dict(cfg["shared"], **{"fusion.model1.0.weight": "full.nope"}))),
     r"'full\.nope' is not stored"),
])
def test_bad_config(tmp_path, tiny_bundle, edit, message):
    import shutil

    d = tmp_path / "b"
    shutil.copytree(tiny_bundle[1], d)
    text = (d / "config.json").read_text()
    (d / "config.json").write_text(edit(text, json.loads(text)))
    with pytest.raises(CheckpointError, match=message):
        load_bundle(d)


@pytest.mark.parametrize("change, message", [
    (lambda t: {**t, "instance.extra.weight": torch.zeros(3, dtype=torch.float16)},
     r"\[instance\] does not fit InstanceNet: unexpected keys \(1\): extra\.weight"),
    (lambda t: {k: v for k, v in t.items() if k != "instance.model1.0.weight"},
     r"\[instance\] does not fit InstanceNet: missing keys \(1\): model1\.0\.weight"),
    (lambda t: {k: v for k, v in t.items() if k != "full.model1.0.weight"},
     r"'full\.model1\.0\.weight' is not stored"),
    (lambda t: {**t, "full.model1.0.weight": t["full.model1.0.weight"][:4]},
     r"\[full\] does not fit SIGGRAPHBackbone: shape mismatches"),
    (lambda t: {**t, "stray": torch.zeros(1)}, r"without a full\./instance\./fusion\. prefix: stray"),
])
def test_keys_that_do_not_fit(tmp_path, tiny_bundle, change, message):
    import shutil

    d = tmp_path / "b"
    shutil.copytree(tiny_bundle[1], d)
    _rewrite_model(d, change)
    with pytest.raises(CheckpointError, match=message):
        load_bundle(d)


def test_failed_save_leaves_nothing_and_keeps_the_old_bundle(tmp_path, monkeypatch):
    import safetensors.torch

    nets = tiny_nets(0.125, seed=5)
    real_save = safetensors.torch.save_file

    def broken(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", broken)
    with pytest.raises(OSError, match="disk full"):
        save_bundle(tmp_path / "new", nets)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(safetensors.torch, "save_file", real_save)
    save_bundle(tmp_path / "b", nets)
    before = (tmp_path / "b" / "model.safetensors").read_bytes()
    monkeypatch.setattr(safetensors.torch, "save_file", broken)
    with pytest.raises(OSError, match="disk full"):
        save_bundle(tmp_path / "b", tiny_nets(0.125, seed=6))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]
    assert (tmp_path / "b" / "model.safetensors").read_bytes() == before
    monkeypatch.setattr(safetensors.torch, "save_file", real_save)
    other = tiny_nets(0.125, seed=6)
    save_bundle(tmp_path / "b", other)  # replacing an existing bundle works
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]
    _assert_states_equal(load_bundle(tmp_path / "b")["full"].state_dict(), _fp16_rounded(other["full"].state_dict()))


def test_save_refuses_a_folder_with_other_files_and_bad_input(tmp_path):
    nets = tiny_nets(0.125)
    save_official(tmp_path / "official", nets)
    with pytest.raises(FileExistsError, match="holds other files"):
        save_bundle(tmp_path / "official", nets)
    assert sorted(p.name for p in (tmp_path / "official").iterdir()) == sorted(
        ["latest_net_G.pth", "latest_net_GF.pth", "latest_net_GComp.pth"])
    with pytest.raises(ValueError, match="exactly"):
        save_bundle(tmp_path / "b", {"full": nets["full"]})
    with pytest.raises(ValueError, match="different widths"):
        save_bundle(tmp_path / "b", dict(nets, instance=tiny_nets(0.25)["instance"]))
    with pytest.raises(ValueError, match="JSON"):
        save_bundle(tmp_path / "b", nets, info={"x": object()})
    assert not (tmp_path / "b").exists()


# ------------------------------------------------------------------ converter CLI

def _bundle_cli(argv):
    from instcolor.models.bundle_cli import add_bundle_parser

    parser = argparse.ArgumentParser(prog="instcolor")
    add_bundle_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_bundle_command_converts_official_and_bundle(tmp_path, capsys):
    from instcolor.cli import UsageError

    nets = _frozen_backbone_nets(0.125, seed=8)
    save_official(tmp_path / "official", nets, fusion_prefix=True)
    assert _bundle_cli(["bundle", "--weights", str(tmp_path / "official"), "-o", str(tmp_path / "b")]) == 0
    assert "width-0.125 bundle" in capsys.readouterr().err
    for kind in KINDS:
        _assert_states_equal(load_bundle(tmp_path / "b")[kind].state_dict(), _fp16_rounded(nets[kind].state_dict()))
    (tmp_path / "info.json").write_text(json.dumps({"train_images": 10}))
    assert _bundle_cli(["bundle", "--weights", str(tmp_path / "b"), "-o", str(tmp_path / "b2"),
                        "--info", str(tmp_path / "info.json")]) == 0
    assert _bundle_cli(["bundle", "--weights", str(tmp_path / "b2"), "-o", str(tmp_path / "b3")]) == 0
    assert json.loads((tmp_path / "b3" / "config.json").read_text())["info"] == {"train_images": 10}  # kept
    assert (tmp_path / "b3" / "model.safetensors").read_bytes() == (tmp_path / "b" / "model.safetensors").read_bytes()
    # a new --info keeps what describes the weights (the head's training prior, the recommended decoding)
    from instcolor.models.bundle import set_bundle_info

    prior = {"counts": [1] * 529, "mix": 0.5}
    set_bundle_info(tmp_path / "b3", {"train_images": 10, "class_rebalance": prior, "decode": {"decode": "mixed"}})
    capsys.readouterr()
    assert _bundle_cli(["bundle", "--weights", str(tmp_path / "b3"), "-o", str(tmp_path / "b4"),
                        "--info", str(tmp_path / "info.json")]) == 0
    assert json.loads((tmp_path / "b4" / "config.json").read_text())["info"] == \
        {"train_images": 10, "class_rebalance": prior, "decode": {"decode": "mixed"}}
    assert "kept class_rebalance, decode" in capsys.readouterr().err
    (tmp_path / "info2.json").write_text(json.dumps({"decode": {"decode": "regression"}}))
    assert _bundle_cli(["bundle", "--weights", str(tmp_path / "b4"), "-o", str(tmp_path / "b5"),
                        "--info", str(tmp_path / "info2.json")]) == 0
    assert json.loads((tmp_path / "b5" / "config.json").read_text())["info"] == \
        {"decode": {"decode": "regression"}, "class_rebalance": prior}   # what --info sets wins
    with pytest.raises(UsageError, match="missing weights file"):
        _bundle_cli(["bundle", "--weights", str(tmp_path), "-o", str(tmp_path / "x")])
    with pytest.raises(UsageError, match=r"official: is \(or holds\) the input"):
        _bundle_cli(["bundle", "--weights", str(tmp_path / "official"), "-o", str(tmp_path / "official")])
    save_official(tmp_path / "other", nets)  # a folder another writer filled
    with pytest.raises(UsageError, match="other: folder is not empty"):
        _bundle_cli(["bundle", "--weights", str(tmp_path / "b"), "-o", str(tmp_path / "other")])
    assert not (tmp_path / "other" / "model.safetensors").exists()
    with pytest.raises(UsageError, match="--info"):
        _bundle_cli(["bundle", "--weights", str(tmp_path / "b"), "-o", str(tmp_path / "x"),
                     "--info", str(tmp_path / "nope.json")])


# ------------------------------------------------------------------ starter weights

def test_starter_weights_absent(tmp_path, monkeypatch):
    import instcolor.weights as weights

    monkeypatch.setattr(weights, "STARTER_DIR", tmp_path / "starter")
    with pytest.raises(FileNotFoundError, match=r"starter weights are not installed: .*starter"):
        weights.starter_weights()
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "starter")):
        Colorizer.from_pretrained()
    (tmp_path / "starter").mkdir()
    with pytest.raises(FileNotFoundError, match="config.json and model.safetensors"):
        Colorizer.from_pretrained(backend="torch")


def test_starter_dir_is_inside_the_package():
    import instcolor
    import instcolor.weights as weights

    assert weights.STARTER_DIR.parent.parent == __import__("pathlib").Path(instcolor.__file__).resolve().parent
    assert weights.STARTER_DIR.name == "starter"


def test_starter_weights_are_used_by_default_with_one_notice(tmp_path, monkeypatch, capsys, tiny_bundle):
    import instcolor.weights as weights

    nets = tiny_nets(0.125, seed=9)
    save_bundle(tmp_path / "starter", nets, info={"width": 0.125, "train_images": 5000})
    monkeypatch.setattr(weights, "STARTER_DIR", tmp_path / "starter")
    monkeypatch.setattr(weights, "_notice_shown", False)
    capsys.readouterr()
    c = Colorizer.from_pretrained(backend="torch")
    err = capsys.readouterr().err
    assert err == ("instcolor: using the built-in starter weights (small width-0.125 model trained on 5,000 photos); "
                   "for the paper's quality pass the official checkpoints with weights=... / --weights DIR (see README)\n")
    _assert_states_equal(c.backend.full.state_dict(), _fp16_rounded(nets["full"].state_dict()))
    img = np.random.default_rng(2).integers(0, 256, (24, 24), dtype=np.uint8)
    assert c.colorize(img, size=24).rgb.shape == (24, 24, 3)
    Colorizer.from_pretrained()
    Colorizer.from_pretrained(tiny_bundle[1])
    assert capsys.readouterr().err == ""  # once per process, and never for explicit weights


def test_starter_notice_without_info(tmp_path):
    from instcolor.weights import starter_notice

    save_bundle(tmp_path / "s", tiny_nets(0.25))
    note = starter_notice(tmp_path / "s")
    assert "(small width-0.25 model);" in note and "trained on" not in note
    assert "(small model);" in starter_notice(tmp_path / "nowhere")
    save_bundle(tmp_path / "one", tiny_nets(0.125), info={"train_images": 1})
    assert "(small width-0.125 model trained on 1 photo);" in starter_notice(tmp_path / "one")
    assert "\n" not in note

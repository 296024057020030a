"""No data loss: export, bundle, init-weights and train write only into a new or empty folder or
their own earlier output (replaced only with --force, and then only their own files); never into
their input, someone else's folder or the installed package (the starter weights)."""
import hashlib
import shutil
from pathlib import Path

import pytest
import torch

from conftest import tiny_nets
from instcolor._fileio import OUTPUT_MARKER, read_output_marker
from instcolor.cli import main
from instcolor.models import save_bundle, save_official
from instcolor.models.checkpoint import OFFICIAL_FILES

onnx_needed = pytest.mark.skipif(
    __import__("importlib").util.find_spec("onnx") is None or __import__("importlib").util.find_spec("onnxruntime") is None,
    reason="onnx / onnxruntime not installed (pip install 'instcolor[onnx]')")


def snapshot(folder: Path) -> dict:
    """{relative path: sha256} of every file below ``folder``."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _err(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    return err.splitlines()[-1] if err else ""


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    d = tmp_path_factory.mktemp("weights") / "w"
    save_official(d, tiny_nets(0.125, seed=3))
    return d


# ----------------------------------------------------------------------------- export
def _export(weights, out, *extra):
    return main(["export", "--weights", str(weights), "-o", str(out), "--size", "32", *extra])


@onnx_needed
def test_export_never_writes_into_its_input(weights, tmp_path, capsys):
    w = tmp_path / "w"
    shutil.copytree(weights, w)
    before = snapshot(w)
    for extra in ([], ["--force"]):
        assert _export(w, w, *extra) == 2
        assert "input" in _err(capsys)
        assert snapshot(w) == before and not (w / OUTPUT_MARKER).exists()
    assert _export(w, tmp_path, "--force") == 2  # a folder above the input
    assert snapshot(w) == before


@onnx_needed
def test_export_refuses_a_foreign_folder_even_with_force(weights, tmp_path, capsys):
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    save_official(other, tiny_nets(0.125, seed=9))
    before = snapshot(other)
    for extra in ([], ["--force"]):
        assert _export(weights, other, *extra) == 2
        assert "not empty" in _err(capsys)
        assert snapshot(other) == before and not (other / OUTPUT_MARKER).exists()


@onnx_needed
def test_export_replaces_only_its_own_files_with_force(weights, tmp_path, capsys):
    from instcolor.export import read_manifest

    out = tmp_path / "e"
    assert _export(weights, out) == 0
    marker = read_output_marker(out)
    assert marker["command"] == "export"
    assert set(marker["files"]) == {"manifest.json"} | {s["file"] for s in read_manifest(out)["segments"]}
    (out / "notes.txt").write_text("the user's")
    first = snapshot(out)

    assert _export(weights, out) == 2  # own output, but no --force
    assert "--force" in _err(capsys)
    assert snapshot(out) == first

    other = tmp_path / "w2"
    save_official(other, tiny_nets(0.125, seed=4))
    inode = (out / "notes.txt").stat().st_ino
    old_hash = read_manifest(out)["weights_sha256"]
    assert _export(other, out, "--force") == 0
    assert read_manifest(out)["weights_sha256"] != old_hash
    assert (out / "notes.txt").read_text() == "the user's" and (out / "notes.txt").stat().st_ino == inode
    after = snapshot(out)
    assert after["notes.txt"] == first["notes.txt"]
    assert after["full.onnx"] != first["full.onnx"]  # replaced by the other weights' export

    # --precision both over the single export: the earlier top-level files go, the user's stays
    assert _export(other, out, "--force", "--precision", "both") == 0
    names = set(snapshot(out))
    assert "notes.txt" in names and "full.onnx" not in names and "manifest.json" not in names
    assert {"fp32/manifest.json", "fp16/manifest.json", "fp32/full.onnx"} <= names
    assert read_manifest(out / "fp16")["precision"] == "fp16"
    assert set(read_output_marker(out)["files"]) == {n for n in names if n.startswith(("fp32/", "fp16/"))}


@onnx_needed
def test_export_accepts_an_export_written_before_markers(weights, tmp_path, capsys):
    from instcolor.export import export_segments

    out = tmp_path / "e"
    export_segments(tiny_nets(0.125, seed=6), out, size=32)
    assert not (out / OUTPUT_MARKER).exists()
    (out / "keep.txt").write_text("x")
    assert _export(weights, out) == 2 and "--force" in _err(capsys)
    assert _export(weights, out, "--force") == 0
    assert (out / "keep.txt").read_text() == "x"
    assert read_output_marker(out)["command"] == "export"


@onnx_needed
def test_export_segments_library_refuses_foreign_files(tmp_path):
    from instcolor.export import export_segments

    out = tmp_path / "x"
    out.mkdir()
    (out / "full.onnx").write_bytes(b"someone else's model")
    with pytest.raises(FileExistsError, match="no instcolor export"):
        export_segments(tiny_nets(0.125), out, size=32)
    assert (out / "full.onnx").read_bytes() == b"someone else's model"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x"]  # no temporary folder left behind

    e = tmp_path / "e"
    export_segments(tiny_nets(0.125, seed=1), e, size=32)
    (e / "mine.txt").write_text("kept")
    export_segments(tiny_nets(0.125, seed=2), e, size=32)  # the library replaces an earlier export ...
    assert (e / "mine.txt").read_text() == "kept"  # ... file by file, nothing else
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e", "x"]


# ----------------------------------------------------------------------------- bundle
def test_bundle_output_rules(weights, tmp_path, capsys):
    b = tmp_path / "b"
    assert main(["bundle", "--weights", str(weights), "-o", str(b)]) == 0
    assert read_output_marker(b) == {"command": "bundle", "files": ["config.json", "model.safetensors"]}
    first = snapshot(b)
    assert main(["bundle", "--weights", str(weights), "-o", str(b)]) == 2
    assert "--force" in _err(capsys) and snapshot(b) == first
    other = tmp_path / "w2"
    save_official(other, tiny_nets(0.125, seed=5))
    assert main(["bundle", "--weights", str(other), "-o", str(b), "--force"]) == 0
    assert snapshot(b)["model.safetensors"] != first["model.safetensors"]
    assert read_output_marker(b)["command"] == "bundle"  # the marker stays with the replaced bundle

    before = snapshot(b)  # its own input, even with --force
    assert main(["bundle", "--weights", str(b), "-o", str(b), "--force"]) == 2
    assert "input" in _err(capsys) and snapshot(b) == before

    official = tmp_path / "official"  # official weights are never overwritten by a bundle
    save_official(official, tiny_nets(0.125, seed=6))
    before = snapshot(official)
    assert main(["bundle", "--weights", str(weights), "-o", str(official), "--force"]) == 2
    assert "not empty" in _err(capsys) and snapshot(official) == before

    legacy = tmp_path / "legacy"  # a bundle written before markers counts as the command's own
    save_bundle(legacy, tiny_nets(0.125, seed=7))
    assert main(["bundle", "--weights", str(weights), "-o", str(legacy)]) == 2
    assert main(["bundle", "--weights", str(weights), "-o", str(legacy), "--force"]) == 0


# ----------------------------------------------------------------------------- init-weights
def test_init_weights_output_rules(tmp_path, capsys):
    d = tmp_path / "u"
    assert main(["init-weights", str(d), "--width", "0.125"]) == 0
    assert read_output_marker(d) == {"command": "init-weights", "files": sorted(OFFICIAL_FILES.values())}
    first = snapshot(d)
    assert main(["init-weights", str(d), "--width", "0.125", "--seed", "1"]) == 2
    assert "--force" in _err(capsys) and snapshot(d) == first
    assert main(["init-weights", str(d), "--width", "0.125", "--seed", "1", "--force"]) == 0
    assert snapshot(d)[OFFICIAL_FILES["full"]] != first[OFFICIAL_FILES["full"]]

    foreign = tmp_path / "f"
    foreign.mkdir()
    (foreign / "photo.jpg").write_bytes(b"\xff\xd8 not mine to delete")
    assert main(["init-weights", str(foreign), "--width", "0.125", "--force"]) == 2
    assert sorted(p.name for p in foreign.iterdir()) == ["photo.jpg"]


def _trained_looking(nets):
    """Nets whose BatchNorm statistics moved: what any trained checkpoint has."""
    with torch.no_grad():
        for net in nets.values():
            for m in net.modules():
                if isinstance(m, torch.nn.BatchNorm2d):
                    m.running_mean.add_(0.1)
                    m.running_var.mul_(1.5)
    return nets


def test_init_weights_never_overwrites_trained_weights(tmp_path, capsys):
    trained = tmp_path / "checkpoints"  # e.g. the official checkpoints: no marker, moved BN statistics
    save_official(trained, _trained_looking(tiny_nets(0.125, seed=2)))
    before = snapshot(trained)
    assert main(["init-weights", str(trained), "--width", "0.125", "--force"]) == 2
    assert "not empty" in _err(capsys) and snapshot(trained) == before

    untrained = tmp_path / "untrained"  # init-weights output written before markers: replaceable
    save_official(untrained, tiny_nets(0.125, seed=2))
    assert main(["init-weights", str(untrained), "--width", "0.125"]) == 2
    assert main(["init-weights", str(untrained), "--width", "0.125", "--force"]) == 0


# ----------------------------------------------------------------------------- the package itself
def test_nothing_writes_into_the_package_or_the_starter_weights(weights, tmp_path, capsys):
    from instcolor._fileio import PACKAGE_DIR
    from instcolor.weights import STARTER_DIR

    starter_files = {p.name: p.read_bytes() for p in STARTER_DIR.iterdir() if p.is_file()} if STARTER_DIR.is_dir() else {}
    new_inside = PACKAGE_DIR / "weights" / "test-output-should-not-exist"
    assert not new_inside.exists()
    try:
        for argv in (["bundle", "--weights", str(weights), "-o", str(STARTER_DIR), "--force"],
                     ["bundle", "--weights", str(weights), "-o", str(new_inside)],
                     ["init-weights", str(new_inside), "--width", "0.125"],
                     ["init-weights", str(STARTER_DIR), "--width", "0.125", "--force"]):
            assert main(argv) == 2, argv
            assert "inside the installed instcolor package" in _err(capsys)
            assert not new_inside.exists()
        assert {p.name: p.read_bytes() for p in STARTER_DIR.iterdir() if p.is_file()} == starter_files
    finally:  # (should a check ever be missing, put the starter weights back and remove the folder)
        for name, data in starter_files.items():
            if (STARTER_DIR / name).read_bytes() != data if (STARTER_DIR / name).exists() else True:
                (STARTER_DIR / name).write_bytes(data)
        marker = STARTER_DIR / OUTPUT_MARKER
        if marker.exists() and OUTPUT_MARKER not in starter_files:
            marker.unlink()
        shutil.rmtree(new_inside, ignore_errors=True)


# ----------------------------------------------------------------------------- train --out
def _photos(folder, n=6):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(1)
    folder.mkdir(parents=True)
    for i in range(n):
        img = np.empty((40, 44, 3), np.uint8)
        img[:] = rng.integers(0, 256, 3)
        img[6:20, 8:30] = rng.integers(0, 256, 3)
        Image.fromarray(img).save(folder / f"p{i}.png")
    return folder


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return _photos(tmp_path_factory.mktemp("photos") / "photos")


def _train(photos, out, *extra):
    return main(["train", "--stage", "full", "--data", str(photos), "--out", str(out), "--width", "0.125",
                 "--size", "32", "--batch-size", "2", "--steps", "1", "--amp", "off", "--val-images", "2",
                 "--bn-batches", "0", *extra])


def test_train_refuses_a_folder_that_is_not_a_run(photos, tmp_path, capsys):
    official = tmp_path / "checkpoints"  # training would overwrite these latest_net_*.pth files
    save_official(official, _trained_looking(tiny_nets(0.125, seed=1)))
    other = tmp_path / "other"
    other.mkdir()
    (other / "thesis.tex").write_text("x")
    for folder in (official, other):
        before = snapshot(folder)
        assert _train(photos, folder) == 2
        assert "not empty" in _err(capsys)
        assert snapshot(folder) == before and not (folder / OUTPUT_MARKER).exists()
    before = snapshot(photos)
    assert _train(photos, photos) == 2  # its own data folder
    assert "input" in _err(capsys) and snapshot(photos) == before


def test_train_resumes_its_run_folder(photos, tmp_path, capsys):
    run = tmp_path / "run"
    assert _train(photos, run) == 0
    assert read_output_marker(run)["command"] == "train"
    assert _train(photos, run, "--steps", "2") == 0  # resumes: no --force needed
    assert torch.load(run / "state.pt", weights_only=True)["step"] == 2

    legacy = tmp_path / "legacy"  # a run folder from before markers (state.pt) resumes too
    shutil.copytree(run, legacy)
    (legacy / OUTPUT_MARKER).unlink()
    assert _train(photos, legacy, "--steps", "3") == 0
    assert torch.load(legacy / "state.pt", weights_only=True)["step"] == 3


def test_trainer_api_applies_the_same_rule(photos, tmp_path):
    from instcolor.train import TrainConfig, TrainError, Trainer

    other = tmp_path / "other"
    other.mkdir()
    (other / "data.csv").write_text("1,2")
    cfg = TrainConfig(stage="full", data=str(photos), out=str(other), width=0.125, size=32, batch_size=2, steps=1,
                      amp="off", bn_batches=0)
    with pytest.raises(TrainError, match="not empty"):
        Trainer(cfg, progress=False)
    assert sorted(p.name for p in other.iterdir()) == ["data.csv"]


def test_save_bundle_keeps_the_output_marker_and_refuses_other_files(tmp_path):
    from instcolor._fileio import claim_output_dir

    b = tmp_path / "b"
    claim_output_dir(b, "bundle")
    save_bundle(b, tiny_nets(0.125, seed=1))
    save_bundle(b, tiny_nets(0.125, seed=2))  # (the library replaces a bundle; the folder keeps its marker)
    assert read_output_marker(b)["command"] == "bundle"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]
    (b / "notes.txt").write_text("x")
    with pytest.raises(FileExistsError, match="notes.txt"):
        save_bundle(b, tiny_nets(0.125, seed=3))
    assert (b / "notes.txt").read_text() == "x"

"""`instcolor colorize` / `detect` on folders: the corpus of odd files, outputs people expect, resumable
runs, output-folder safety, and the options that select boxes. Outputs are compared with the API."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from image_corpus import orientation_exif, write_corpus
from instcolor.cli import main
from instcolor.imageio import read_image

ARGS = ["--size", "32"]


def _png(path, h=40, w=30, seed=0):
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path)
    return path


def _colorize(*args):
    return main(["colorize", *map(str, args)])


@pytest.fixture()
def colorizer(tiny_weights_dir):
    from instcolor import Colorizer

    return Colorizer.from_pretrained(tiny_weights_dir)


def test_corpus_every_file_is_an_output_or_one_line_naming_it(tmp_path, tiny_weights_dir):
    """The generated corpus (truncated, random bytes, empty, bomb headers, every mode and bit depth,
    EXIF 1-8, ICC, transparency, animations) through the real CLI process: exit status 1, one line per
    bad file naming it, every good file written, no traceback, no temp files."""
    src = tmp_path / "corpus"
    src.mkdir()
    expect = write_corpus(src)
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "instcolor", "colorize", str(src), "-o", str(out), "--weights",
                           str(tiny_weights_dir), "--report", str(tmp_path / "r.json"), *ARGS],
                          capture_output=True, text=True, timeout=600)
    assert "Traceback" not in proc.stderr
    bad = {n for n, e in expect.items() if not e.ok}
    good = {n for n, e in expect.items() if e.ok}
    assert bad and good and proc.returncode == 1, proc.stderr[-2000:]
    report = json.loads((tmp_path / "r.json").read_text())
    failed = {r["input"].rsplit("/", 1)[-1]: r["error"] for r in report["failed"]}
    assert set(failed) == bad
    for name in bad:
        line = failed[name]
        assert "\n" not in line and name in line and expect[name].error.lower() in line.lower(), (name, line)
        assert sum(name in ln for ln in proc.stderr.splitlines() if ln.startswith("instcolor: ")) >= 1
    written = {p.name for p in out.iterdir() if not p.name.startswith(".")}
    assert len(written) == len(good) == report["written"]
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    for name in good:  # each output has the input's (upright) size
        stem = name.rsplit(".", 1)[0]
        match = [p for p in out.iterdir() if p.name.split(".")[0].startswith(stem)]
        assert match, name
        assert Image.open(match[0]).size[::-1] == expect[name].rgb.shape[:2] or len(match) > 1


def test_exif_rotation_alpha_and_jpeg_in_jpeg_out(tmp_path, colorizer, tiny_weights_dir):
    rng = np.random.default_rng(1)
    upright = rng.integers(0, 255, (24, 40, 3), dtype=np.uint8)
    src = tmp_path / "in"
    src.mkdir()
    # stored rotated: orientation 6 means "rotate 90 CW to display", so store the upright image rotated CCW
    Image.fromarray(np.rot90(upright, 1)).save(src / "phone.jpg", quality=95, exif=orientation_exif(6))
    rgba = np.dstack([upright, np.tile(np.arange(40, dtype=np.uint8) * 6, (24, 1))])
    Image.fromarray(rgba, "RGBA").save(src / "cutout.png")
    assert _colorize(src, "-o", tmp_path / "out", "--weights", tiny_weights_dir, *ARGS) == 0
    out_jpg = Image.open(tmp_path / "out" / "phone.jpg")
    assert out_jpg.format == "JPEG" and out_jpg.size == (40, 24)  # upright
    assert out_jpg.getexif().get(0x0112, 1) == 1  # orientation reset, the rest of the EXIF kept
    assert out_jpg.getexif().get(0x010F) == "instcolor-test"
    out_png = Image.open(tmp_path / "out" / "cutout.png")
    assert out_png.mode == "RGBA"
    np.testing.assert_array_equal(np.asarray(out_png)[..., 3], rgba[..., 3])
    # colours equal the API on the same pixels
    api = colorizer.colorize(upright, size=32).rgb
    np.testing.assert_array_equal(np.asarray(out_png)[..., :3], api)
    # the JPEG output carries the API's result up to JPEG loss, and is rotated like the display
    api_phone = colorizer.colorize(read_image(src / "phone.jpg").rgb, size=32).rgb
    assert np.abs(np.asarray(out_jpg.convert("RGB")).astype(int) - api_phone).mean() < 4


def test_16_bit_scan_keeps_its_brightness_and_16_bit_output(tmp_path, tiny_weights_dir):
    rng = np.random.default_rng(2)
    scan = (rng.random((30, 20)) * 65535).astype(np.uint16)
    Image.fromarray(scan).save(tmp_path / "scan.png")
    assert _colorize(tmp_path / "scan.png", "-o", tmp_path / "o8", "--weights", tiny_weights_dir, *ARGS) == 0
    out8 = np.asarray(Image.open(tmp_path / "o8" / "scan.png"))
    assert abs(out8.mean() - scan.mean() / 257) < 12  # not "almost white"
    assert _colorize(tmp_path / "scan.png", "-o", tmp_path / "o16", "--weights", tiny_weights_dir, "--bit-depth", "16",
                     *ARGS) == 0
    dec = read_image(tmp_path / "o16" / "scan.png")
    assert dec.bit_depth == 16
    # lightness comes from the 16-bit source: the output's grey level follows the input's finely
    lum = dec.high.mean(axis=2)
    assert np.corrcoef(lum.ravel(), scan.ravel() / 65535)[0, 1] > 0.99
    assert len(np.unique(np.round(lum * 65535))) > 256  # more levels than any 8-bit output has


def test_recursive_mirror_skip_existing_and_same_stems(tmp_path, tiny_weights_dir):
    src = tmp_path / "archive"
    _png(src / "a.png"), _png(src / "sub" / "b.png", seed=1), _png(src / "sub" / "deep" / "c.png", seed=2)
    Image.open(src / "a.png").convert("RGB").save(src / "a.jpg", quality=90)
    out = tmp_path / "out"
    assert _colorize(src, "-o", out, "--weights", tiny_weights_dir, "--format", "png", *ARGS) == 0
    assert not (out / "sub").exists()  # not recursive: top level only
    names = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    assert names == ["a_jpg.png", "a_png.png"]  # same stem, both written
    # again, recursive, resuming: the finished files stay untouched, the new ones are written
    before = {n: (out / n).stat().st_mtime_ns for n in names}
    assert _colorize(src, "-r", "-o", out, "--weights", tiny_weights_dir, "--format", "png", "--skip-existing",
                     "--report", tmp_path / "r.json", *ARGS) == 0
    assert {n: (out / n).stat().st_mtime_ns for n in names} == before
    assert (out / "sub" / "b.png").is_file() and (out / "sub" / "deep" / "c.png").is_file()
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["written"] == 2 and report["skipped"] == 2


def test_output_folder_rules(tmp_path, tiny_weights_dir, capsys):
    src = tmp_path / "in"
    _png(src / "a.png")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "thesis.docx").write_text("precious")
    assert _colorize(src, "-o", foreign, "--weights", tiny_weights_dir, *ARGS) == 2
    assert "not empty" in capsys.readouterr().err and (foreign / "thesis.docx").read_text() == "precious"
    assert sorted(p.name for p in foreign.iterdir()) == ["thesis.docx"]
    assert _colorize(src, "-o", src, "--weights", tiny_weights_dir, *ARGS) == 2  # its own input folder
    out = tmp_path / "out"
    assert _colorize(src, "-o", out, "--weights", tiny_weights_dir, *ARGS) == 0
    (out / "mine.txt").write_text("keep")
    assert _colorize(src, "-o", out, "--weights", tiny_weights_dir, *ARGS) == 2  # earlier output: needs --force
    assert "--force" in capsys.readouterr().err
    first = (out / "a.png").read_bytes()
    assert _colorize(src, "-o", out, "--weights", tiny_weights_dir, "--force", "--hint", "3,3,#ff0000,5", *ARGS) == 0
    assert (out / "a.png").read_bytes() != first and (out / "mine.txt").read_text() == "keep"


def test_recursive_skips_an_output_folder_inside_the_input(tmp_path, tiny_weights_dir):
    src = tmp_path / "in"
    _png(src / "a.png")
    assert _colorize(src, "-r", "-o", src / "colour", "--weights", tiny_weights_dir, *ARGS) == 0
    assert _colorize(src, "-r", "-o", src / "colour", "--weights", tiny_weights_dir, "--force", *ARGS) == 0
    assert not (src / "colour" / "colour").exists()


def test_boxes_options_equal_the_api(tmp_path, colorizer, tiny_weights_dir):
    """--max-instances keeps the K highest-scoring boxes; the CLI output equals the API given those boxes."""
    src = _png(tmp_path / "in" / "a.png", 48, 48)
    boxes = [[0, 0, 20, 20], [10, 10, 40, 40], [5, 20, 30, 47]]
    scores = [0.9, 0.5, 0.7]
    bfile = tmp_path / "boxes.json"
    bfile.write_text(json.dumps({"a": {"boxes": boxes, "scores": scores}}))
    for k, expect in ((3, (boxes, scores)), (2, ([boxes[2], boxes[0]], [0.7, 0.9])), (0, ([], None))):
        out = tmp_path / f"out{k}"
        assert _colorize(src, "-o", out, "--weights", tiny_weights_dir, "--boxes", bfile, "--max-instances", k,
                         *ARGS) == 0
        api = colorizer.colorize(np.asarray(Image.open(src)), boxes=expect[0], scores=expect[1], size=32).rgb
        np.testing.assert_array_equal(np.asarray(Image.open(out / "a.png")), api, err_msg=f"k={k}")
    assert not np.array_equal(np.asarray(Image.open(tmp_path / "out3" / "a.png")),
                              np.asarray(Image.open(tmp_path / "out0" / "a.png")))


def test_truncated_boxes_npz_fails_that_image_only(tmp_path, tiny_weights_dir, capsys):
    src = tmp_path / "in"
    _png(src / "a.png"), _png(src / "b.png", seed=3)
    bdir = tmp_path / "boxes"
    bdir.mkdir()
    np.savez(bdir / "a.npz", bbox=np.array([[1, 1, 20, 20]], np.float32), scores=np.array([0.9], np.float32))
    (bdir / "a.npz").write_bytes((bdir / "a.npz").read_bytes()[:60])
    assert _colorize(src, "-o", tmp_path / "out", "--weights", tiny_weights_dir, "--boxes", bdir, *ARGS) == 1
    err = capsys.readouterr().err
    assert "a.npz" in err and "Traceback" not in err
    assert (tmp_path / "out" / "b.png").is_file() and not (tmp_path / "out" / "a.png").exists()


def test_option_errors_are_one_line_and_write_nothing(tmp_path, tiny_weights_dir, capsys):
    src = _png(tmp_path / "a.png")
    out = tmp_path / "o"
    for extra, says in ((["--detector-runtime", "tensorrt"], "--detector"), (["--size", "1048576"], "limit"),
                        (["--max-instances", "9"], "0..8"), (["--quality", "0"], "1..100"),
                        (["--bit-depth", "16", "--format", "jpg"], "16-bit PNG"),
                        (["--max-pixels", "0"], "max"), (["--force", "--skip-existing"], "not both")):
        assert _colorize(src, "-o", out, "--weights", tiny_weights_dir, *extra) == 2, extra
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and says in err, (extra, err)
        assert not out.exists()


def test_max_pixels_option_and_env(tmp_path, tiny_weights_dir, monkeypatch, capsys):
    src = _png(tmp_path / "a.png", 40, 30)
    assert _colorize(src, "-o", tmp_path / "o1", "--weights", tiny_weights_dir, "--max-pixels", "1000", *ARGS) == 1
    assert "exceeds the limit" in capsys.readouterr().err
    monkeypatch.setenv("INSTCOLOR_MAX_PIXELS", "1000")
    assert _colorize(src, "-o", tmp_path / "o2", "--weights", tiny_weights_dir, *ARGS) == 1
    monkeypatch.setenv("INSTCOLOR_MAX_PIXELS", "5000")
    assert _colorize(src, "-o", tmp_path / "o3", "--weights", tiny_weights_dir, *ARGS) == 0


def test_every_option_has_help_and_shows_its_default():
    import argparse

    from instcolor.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, p in sub.choices.items():
        text = p.format_help()
        for action in p._actions:
            if not action.option_strings or isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
                continue
            assert action.help, f"{name} {action.option_strings}: no help"
            if action.default not in (None, False, [], argparse.SUPPRESS):
                assert "default" in action.help.lower() or "(default: " in p._get_formatter()._get_help_string(action), \
                    f"{name} {action.option_strings}: default {action.default!r} not shown"
        assert "default" in text


def test_version(capsys):
    from instcolor import __version__

    for argv in (["--version"], ["colorize", "--version"]):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 0 and capsys.readouterr().out.strip() == f"instcolor {__version__}"


def test_device_default_follows_the_backend():
    from instcolor.cli import _device, build_parser

    parser = build_parser()
    assert _device(parser.parse_args(["colorize", "x", "-o", "y"])) == "cpu"
    assert _device(parser.parse_args(["colorize", "x", "-o", "y", "--backend", "tensorrt"])) == "cuda"
    assert _device(parser.parse_args(["colorize", "x", "-o", "y", "--backend", "tensorrt", "--device", "cuda:1"])) == "cuda:1"


def test_detect_names_outputs_like_colorize_and_resumes(tmp_path, monkeypatch):
    """detect uses the same naming (clashing stems, sub-folders) and the same per-file error rule."""
    from instcolor.detect import Detections
    import instcolor.cli as cli

    src = tmp_path / "in"
    _png(src / "a.png"), _png(src / "sub" / "b.png", seed=4)
    Image.open(src / "a.png").save(src / "a.jpg")
    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n junk")
    calls = []

    def fake_detector(rgb):
        calls.append(rgb.shape)
        return Detections(np.array([[1, 2, 10, 12]], np.float32), np.array([0.8], np.float32))

    monkeypatch.setattr(cli, "_make_detector", lambda args: fake_detector)
    assert main(["detect", str(src), "-r", "-o", str(tmp_path / "boxes"), "--detector", "m.onnx"]) == 1
    names = sorted(str(p.relative_to(tmp_path / "boxes")) for p in (tmp_path / "boxes").rglob("*.npz"))
    assert names == ["a_jpg.npz", "a_png.npz", "sub/b.npz"]
    with np.load(tmp_path / "boxes" / "sub" / "b.npz") as z:
        np.testing.assert_array_equal(z["bbox"], [[1, 2, 10, 12]])
    n = len(calls)
    assert main(["detect", str(src), "-r", "-o", str(tmp_path / "boxes"), "--detector", "m.onnx"]) == 1
    assert len(calls) == n  # finished images are not detected again (only the broken one is retried)


def test_report_names_missing_inputs_and_is_written_when_all_are_skipped(tmp_path, tiny_weights_dir):
    src = _png(tmp_path / "in" / "a.png")
    out, rep = tmp_path / "out", tmp_path / "r.json"
    assert _colorize(src, "-o", out, "--weights", tiny_weights_dir, *ARGS) == 0
    missing = tmp_path / "nope.png"
    assert _colorize(src, missing, "-o", out, "--weights", tiny_weights_dir, "--skip-existing", "--report", rep,
                     *ARGS) == 1
    data = json.loads(rep.read_text())
    assert data["written"] == 0 and data["skipped"] == 1
    assert data["failed"] == [{"input": str(missing), "error": f"{missing}: no such file or folder"}]

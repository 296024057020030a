"""Folder jobs (instcolor.jobs): input collection, output names, the overlapping runner, reports."""
from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from instcolor.jobs import InputFile, JobReport, collect_inputs, error_line, output_names, run_job


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def test_collect_inputs_flat_recursive_hidden_and_excluded(tmp_path):
    root = tmp_path / "in"
    _touch(root / "b.jpg"), _touch(root / "a.png"), _touch(root / "notes.txt"), _touch(root / ".hidden.jpg")
    _touch(root / "sub" / "c.tif"), _touch(root / "sub" / "deeper" / "d.JPG"), _touch(root / ".cache" / "e.png")
    _touch(root / "out" / "old.png")
    flat, errors = collect_inputs([root])
    assert errors == [] and [f.path.name for f in flat] == ["a.png", "b.jpg"]
    assert all(f.folder == Path() for f in flat)
    deep, _ = collect_inputs([root], recursive=True, exclude=[root / "out"])
    assert [(str(f.folder), f.path.name) for f in deep] == [
        (".", "a.png"), (".", "b.jpg"), ("sub", "c.tif"), ("sub/deeper", "d.JPG")]


def test_collect_inputs_missing_named_file_any_suffix_and_duplicates(tmp_path):
    f = _touch(tmp_path / "scan.dat")
    files, errors = collect_inputs([f, tmp_path / "nope.jpg", f])
    assert [x.path for x in files] == [f]
    assert errors == [(str(tmp_path / "nope.jpg"), "no such file or folder")]


def test_output_names_keep_every_input_distinct_and_stable():
    files = [InputFile(Path("d/a.jpg")), InputFile(Path("d/a.png")), InputFile(Path("d/b.jpg")),
             InputFile(Path("e/b.jpg")), InputFile(Path("d/c.png"), Path("sub")), InputFile(Path("e/c.png"), Path("sub2"))]
    png = output_names(files, lambda f: ".png")
    assert [str(n) for n in png] == ["a_jpg.png", "a_png.png", "b_1.png", "b_2.png", "sub/c.png", "sub2/c.png"]
    assert output_names(files, lambda f: ".png") == png  # a resumed run finds the same names
    follow = output_names(files, lambda f: ".jpg" if f.path.suffix == ".jpg" else ".png")
    assert [str(n) for n in follow][:2] == ["a.jpg", "a.png"]  # no clash: plain names
    # a renamed output that meets a real name is renamed again
    clash = [InputFile(Path("x/a.jpg")), InputFile(Path("x/a.png")), InputFile(Path("x/a_jpg.gif"))]
    names = [str(n) for n in output_names(clash, lambda f: ".png")]
    assert len(set(names)) == 3


def test_output_names_case_insensitive_clash():
    names = output_names([InputFile(Path("a.JPG")), InputFile(Path("A.jpg"))], lambda f: ".png")
    assert len({str(n).lower() for n in names}) == 2


def _run(items, load=lambda i: i, process=lambda i, x: x, save=None, prefetch=2):
    report = JobReport("test", "out")
    logs = []
    save = save or (lambda i, r: f"out/{i}")
    run_job(items, name=str, load=load, process=process, save=save, report=report, desc="t",
            prefetch=prefetch, progress=False, log=logs.append)
    return report, logs


def test_run_job_failure_in_any_step_fails_that_item_only():
    def load(i):
        if i == 1:
            raise ValueError("1: cannot read")
        return i

    def process(i, x):
        if i == 2:
            raise MemoryError()
        if i == 3:
            raise RuntimeError("kernel said no")
        return x

    def save(i, r):
        if i == 4:
            raise OSError("disk full")
        return f"out/{i}"

    report, logs = _run(list(range(6)), load, process, save)
    assert report.written == ["out/0", "out/5"]
    failed = dict(report.failed)
    assert failed["1"] == "1: cannot read"
    assert failed["2"].startswith("2: out of memory")
    assert failed["3"] == "3: RuntimeError: kernel said no"
    assert failed["4"] == "4: disk full"
    assert len(logs) == 4 and all(line.startswith("instcolor: ") for line in logs)


def test_run_job_overlaps_loading_with_processing():
    """While item k is processed, item k+1 is already being loaded (a prefetch thread)."""
    loading = {i: threading.Event() for i in range(4)}

    def load(i):
        loading[i].set()
        return i

    seen_ahead = []

    def process(i, x):
        if i + 1 in loading:
            seen_ahead.append(loading[i + 1].wait(timeout=5))
        return x

    report, _ = _run(list(range(4)), load, process)
    assert seen_ahead == [True, True, True] and len(report.written) == 4


def test_run_job_without_prefetch_would_not_overlap():
    """The check above can fail: with prefetch=0 the next item is not loaded during processing."""
    loading = {i: threading.Event() for i in range(3)}

    def load(i):
        loading[i].set()
        return i

    ahead = []

    def process(i, x):
        if i + 1 in loading:
            ahead.append(loading[i + 1].wait(timeout=0.2))
        return x

    _run(list(range(3)), load, process, prefetch=0)
    assert ahead == [False, False]


def test_run_job_interrupt_keeps_finished_outputs():
    def process(i, x):
        if i == 2:
            raise KeyboardInterrupt
        return x

    report, _ = _run(list(range(5)), process=process)
    assert report.interrupted and report.written == ["out/0", "out/1"]


def test_report_json(tmp_path):
    report = JobReport("colorize", "out", written=["out/a.png"], skipped=["b.jpg"], failed=[("c.jpg", "c.jpg: bad")])
    report.write_json(tmp_path / "r.json")
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["written"] == 1 and data["skipped"] == 1
    assert data["failed"] == [{"input": "c.jpg", "error": "c.jpg: bad"}]


@pytest.mark.parametrize("exc, expect", [(ValueError("x.png: broken"), "x.png: broken"),
                                         (ValueError("broken\nsecond line"), "x.png: broken second line"),
                                         (KeyError("k"), "x.png: KeyError: 'k'")])
def test_error_line_is_one_line_naming_the_input(exc, expect):
    assert error_line("x.png", exc) == expect

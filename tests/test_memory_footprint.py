"""benchmarks/memory_footprint.py: peak-memory readings, fresh processes, rows for every configuration."""
from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "memory_footprint.py"
sys.path.insert(0, str(REPO / "benchmarks"))

import memory_footprint as mf  # noqa: E402

NEEDS_PROC = pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="needs Linux /proc")


@NEEDS_PROC
def test_peak_rss_keeps_the_high_water_mark():
    import mmap

    before = mf.peak_rss_mib()
    # 300 MiB of fresh anonymous pages, touched, then unmapped (a malloc'd block could come from heap
    # memory that earlier tests left resident, and then RSS would not move at all)
    m = mmap.mmap(-1, 300 * 2**20)
    view = np.frombuffer(m, np.uint8)
    view[:] = 1
    during = mf.rss_mib()
    del view
    m.close()
    after_rss, after_peak = mf.rss_mib(), mf.peak_rss_mib()
    assert during - after_rss > 200  # the memory really was returned ...
    assert after_peak >= max(before, during) - 1  # ... and the peak still remembers it
    assert after_peak - after_rss > 200


def test_peak_sampler_records_the_maximum_between_start_and_end():
    values = [1000, 5000, 9000, 3000, 2000]
    calls = []
    seen_all = threading.Event()

    def read():
        calls.append(1)
        if len(calls) >= len(values):
            seen_all.set()
        return values[min(len(calls), len(values)) - 1]

    with mf.PeakSampler(read, interval=0.001) as s:
        assert seen_all.wait(10)
    assert s.start == 1000 and s.peak == 9000 and s.increase == 8000


def test_boxes_are_inside_the_photo_and_distinct():
    boxes = np.array(mf.make_boxes(8))
    assert boxes.shape == (8, 4)
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 2] <= 640).all() and (boxes[:, 3] <= 480).all()
    assert (boxes[:, 2] - boxes[:, 0] >= 8).all() and (boxes[:, 3] - boxes[:, 1] >= 8).all()
    assert len({tuple(b) for b in boxes.tolist()}) == 8


def test_bad_arguments_are_refused():
    for args in (["--boxes", "9"], ["--widths", "0"]):
        p = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=120)
        assert p.returncode == 2 and "--" in p.stderr


@NEEDS_PROC
def test_every_configuration_in_a_fresh_process(tmp_path):
    pytest.importorskip("onnxruntime")
    out = tmp_path / "memory.json"
    p = subprocess.run([sys.executable, str(SCRIPT), "--backends", "torch", "onnxruntime", "torch-cuda",
                        "--widths", "0.125", "--sizes", "64", "--boxes", "0", "2", "--work", str(tmp_path / "work"),
                        "--json", str(out)], capture_output=True, text=True, timeout=1200)
    assert p.returncode == 0, p.stderr[-3000:]
    records = json.loads(out.read_text())["records"]
    imp = records[0]
    assert imp["kind"] == "import" and imp["rss_after_import_mib"] > imp["rss_before_import_mib"]
    rows = {(r["backend"], r["boxes"]): r for r in records[1:]}
    assert set(rows) == {(b, n) for b in ("torch", "onnxruntime", "torch-cuda") for n in (0, 2)}
    for b in ("torch", "onnxruntime"):
        for n in (0, 2):
            r = rows[(b, n)]
            assert "error" not in r and "skipped" not in r, r
            # a fresh interpreter each time: nothing heavy loaded before its import (in one process, the
            # second configuration would start with torch already loaded, 200+ MiB)
            assert r["rss_before_import_mib"] < 100
            assert r["peak_rss_mib"] >= r["rss_after_load_mib"] >= r["rss_after_import_mib"] > r["rss_before_import_mib"]
            assert b in r["modules_loaded"] or b == "torch"
    import torch

    cuda = rows[("torch-cuda", 0)]
    if not torch.cuda.is_available():
        assert "no CUDA GPU" in cuda["skipped"]
        assert "| torch-cuda | all | all | all | not measured: PyTorch sees no CUDA GPU" in p.stdout
    else:
        assert cuda["torch_max_allocated_mib"] > 0
    assert "| `import instcolor` (" in p.stdout and "| onnxruntime | 0.125 | 64 | 2 |" in p.stdout

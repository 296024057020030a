"""benchmarks/gpu_check.sh --dry-run: the GPU verification plan runs on the CPU and records every step.

The step list below is written out on purpose (not read from the script): a step that disappears
from the script, or is no longer recorded, fails these tests.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_check.sh"
GOLDEN = REPO.parent / "shared" / "golden"
STEPS = ["environment", "build", "native_cuda", "cuda_op_tests", "golden_fp32", "golden_tf32", "golden_fp16",
         "bench_torch_cuda", "bench_cuda_graphs", "tensorrt_tests", "bench_tensorrt"]

pytestmark = pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None,
                                reason="gpu_check.sh needs bash and coreutils' timeout")


def run_check(out: Path, *args: str) -> tuple[subprocess.CompletedProcess, dict]:
    env = {**os.environ, "PYTHON": sys.executable}
    env.pop("OUT", None)
    # a generous budget: the steps are small, but a busy 2-core machine can make each start take long
    args = ("--budget", "1500", *args) if "--budget" not in args else args
    p = subprocess.run(["bash", str(SCRIPT), "--dry-run", "--out", str(out), *args], capture_output=True,
                       text=True, env=env, timeout=1800)
    path = out / "gpu_check.json"
    assert path.is_file(), f"no gpu_check.json; stdout:\n{p.stdout[-3000:]}\nstderr:\n{p.stderr[-3000:]}"
    return p, json.loads(path.read_text())


def check_structure(res: dict, out: Path) -> dict:
    names = [s["name"] for s in res["steps"]]
    assert names == STEPS, f"steps recorded {names}"
    assert res["plan"] == STEPS
    for s in res["steps"]:
        assert s["status"] in ("pass", "fail", "skip"), s
        if s["status"] != "pass":
            assert s["reason"].strip(), f"{s['name']}: {s['status']} without a reason"
    assert res["summary"] == {k: sum(s["status"] == k for s in res["steps"]) for k in ("pass", "fail", "skip")}
    log = (out / "gpu_check.log").read_text()
    for name in STEPS:
        assert f"--- {name}: " in log, f"{name} missing from the log"
    return {s["name"]: s for s in res["steps"]}


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu-check")
    p, res = run_check(out)
    return p, res, out


def test_dry_run_records_every_step(dry_run):
    p, res, out = dry_run
    steps = check_structure(res, out)
    assert res["mode"] == "dry-run" and res["device"] == "cpu"
    assert p.returncode == 0 and res["ok"], f"{res['problems']}\n{p.stdout[-3000:]}"
    assert steps["environment"]["status"] == "pass"
    assert res["environment"]["torch"]  # the environment step's facts reach the JSON
    assert steps["build"]["status"] == "skip" and "dry run" in steps["build"]["reason"]
    # the pipeline benchmark runs on the CPU in the dry run: its rows are parsed
    bench = steps["bench_torch_cuda"]
    assert bench["status"] == "pass", bench
    assert {(r["width"], r["boxes"]) for r in bench["details"]["rows"]} == {(0.125, 0), (0.125, 2)}
    assert all(r["images_per_s"] > 0 for r in bench["details"]["rows"])
    # CUDA graphs need a GPU; the eager rows ran anyway
    graphs = steps["bench_cuda_graphs"]
    eager = [r for r in graphs["details"]["rows"] if r["mode"] == "eager"]
    assert [r["boxes"] for r in eager] == [0, 2] and all(r["status"] == "pass" and r["ms"] > 0 for r in eager)
    if graphs["status"] == "skip":
        assert "CUDA" in graphs["reason"]
    assert steps["golden_tf32"]["status"] == "skip"
    if steps["tensorrt_tests"]["status"] == "skip":
        assert steps["tensorrt_tests"]["reason"] == steps["bench_tensorrt"]["reason"]


def test_dry_run_gpu_steps_say_why_they_skip(dry_run):
    _, res, _ = dry_run
    steps = {s["name"]: s for s in res["steps"]}
    if res["environment"].get("torch_sees_gpu") is True:
        pytest.skip("a GPU is visible here: the CUDA steps may pass in the dry run")
    ops = steps["cuda_op_tests"]
    assert ops["status"] == "skip", ops
    assert ops["details"]["passed"] == 0 and ops["details"]["skipped"] > 0 and ops["details"]["skip_reasons"]
    assert steps["native_cuda"]["status"] == "skip" and steps["native_cuda"]["reason"]


@pytest.mark.skipif(not GOLDEN.is_dir(), reason=f"golden vectors not found at {GOLDEN}")
def test_dry_run_golden_cases_compared(dry_run):
    _, res, _ = dry_run
    steps = {s["name"]: s for s in res["steps"]}
    for prec, tol in (("fp32", 1e-4), ("fp16", 5e-2)):
        step = steps[f"golden_{prec}"]
        assert step["status"] == "pass", step
        cases = step["details"]["cases"]
        assert {c["case"] for c in cases} == {"v02_s64_1box_synthA"}
        ran = [c for c in cases if c["status"] == "pass"]
        assert ran and all(c["max_abs"] <= tol and c["boxes_equal"] for c in ran)
        assert {c["path"] for c in ran} >= {"reference"}
    # fp16 differs from the golden float32 output, fp32 does not (or the half path is not half)
    assert steps["golden_fp16"]["details"]["max_abs"] > 10 * steps["golden_fp32"]["details"]["max_abs"]


def test_failures_are_recorded_and_the_run_goes_on(tmp_path):
    """A broken golden folder fails the golden steps; the steps after a failure still run; exit status 1."""
    bad = tmp_path / "golden"
    bad.mkdir()
    (bad / "v02_s64_1box_broken.npz").write_bytes(b"not a numpy file")
    out = tmp_path / "out"
    p, res = run_check(out, "--golden", str(bad), "--only", "environment,golden_fp32,golden_tf32,golden_fp16")
    steps = check_structure(res, out)
    assert p.returncode == 1 and not res["ok"]
    assert steps["golden_fp32"]["status"] == "fail" and steps["golden_fp16"]["status"] == "fail"  # ran after a failure
    assert steps["golden_fp32"]["seconds"] > 0 and steps["golden_fp16"]["seconds"] > 0
    assert any(x.startswith("golden_fp32: fail") for x in res["problems"])
    assert steps["environment"]["status"] == "pass"
    for name in ("native_cuda", "cuda_op_tests", "bench_torch_cuda", "bench_cuda_graphs"):
        assert steps[name]["status"] == "skip" and "not selected" in steps[name]["reason"]


def test_budget_exhausted_still_records_every_step(tmp_path):
    p, res = run_check(tmp_path, "--budget", "0")
    steps = check_structure(res, tmp_path)
    assert p.returncode == 0
    assert all(s["status"] == "skip" for s in steps.values())
    assert "time budget" in steps["golden_fp32"]["reason"]


def test_bad_arguments_are_refused(tmp_path):
    for args in (["--budget", "soon"], ["--frobnicate"], ["--only", "golden_fp32,warp_drive"]):
        p = subprocess.run(["bash", str(SCRIPT), "--dry-run", "--out", str(tmp_path), *args], capture_output=True,
                           text=True, timeout=60)
        assert p.returncode == 2 and "gpu_check.sh:" in p.stderr
        assert not (tmp_path / "gpu_check.json").exists()

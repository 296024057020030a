#!/usr/bin/env bash
# One-shot GPU verification of instcolor: build with the CUDA kernels, CUDA op tests against the CPU
# ops, golden cases through the torch backend on CUDA (fp32, TF32, fp16), the torch-CUDA pipeline
# benchmark with and without CUDA graphs, TensorRT tests and rows when TensorRT imports. Writes one
# JSON file (every step: status pass|fail|skip, reason, seconds, details) and one log.
#
#   bash benchmarks/gpu_check.sh [--dry-run] [--out DIR] [--golden DIR] [--budget SECONDS] [--skip-build]
#
#   --dry-run      the same plan on the CPU with tiny sizes; the build and GPU-only steps are skipped
#                  with the reason (what CI runs: well under 2 minutes)
#   --out DIR      output folder (default: $OUT when set, else benchmarks/gpu_results/<date>)
#   --golden DIR   golden vectors (default: ../shared/golden beside the checkout)
#   --budget S     whole-run time budget in seconds (default 450; 900 with --dry-run, whose step
#                  timeouts are doubled: small CPUs); each step's timeout is capped to what is
#                  left, and steps that find less than 15 s left are skipped, saying so
#   --skip-build   use the installed extension (the build step is recorded as skipped)
#   --only A,B,... run only these steps (the others are recorded as skipped, "not selected")
#   PYTHON=...     interpreter to use (default: python3)
#
# Never stops at the first failure: every step has its own timeout and is recorded. Exit status 0
# when no step failed and (outside --dry-run) every required GPU step passed; 1 otherwise.
set -uo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
PY="${PYTHON:-python3}"
DRY=0
SKIP_BUILD=0
ONLY=""
BUDGET=""
GOLDEN="$REPO/../shared/golden"
OUTDIR="${OUT:-}"
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1 ;;
    --skip-build) SKIP_BUILD=1 ;;
    --out) OUTDIR="${2:?--out needs a folder}"; shift ;;
    --golden) GOLDEN="${2:?--golden needs a folder}"; shift ;;
    --budget) BUDGET="${2:?--budget needs seconds}"; shift ;;
    --only) ONLY="${2:?--only needs step names}"; shift ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
[ -n "$BUDGET" ] || { if [ $DRY = 1 ]; then BUDGET=900; else BUDGET=450; fi; }
case "$BUDGET" in ''|*[!0-9]*) echo "gpu_check.sh: --budget must be a whole number of seconds, got '$BUDGET'" >&2; exit 2 ;; esac
[ -n "$OUTDIR" ] || OUTDIR="$REPO/benchmarks/gpu_results/$(date +%Y-%m-%d)"
mkdir -p "$OUTDIR" || { echo "gpu_check.sh: cannot create $OUTDIR" >&2; exit 2; }
OUTDIR="$(cd "$OUTDIR" && pwd)"
if ! command -v "$PY" >/dev/null 2>&1; then echo "gpu_check.sh: $PY not found (set PYTHON)" >&2; exit 2; fi
WORK="$(mktemp -d "${TMPDIR:-/tmp}/instcolor-gpu-check.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
LOG="$OUTDIR/gpu_check.log"
JSON="$OUTDIR/gpu_check.json"
: >"$LOG"
STEPS="$WORK/steps.jsonl"
: >"$STEPS"
START=$(date +%s)
export PYTHONUNBUFFERED=1
if [ $DRY = 1 ]; then DEV=cpu; MODE=dry-run; else DEV=cuda; MODE=gpu; fi

# The plan: every step below is recorded exactly once, in this order (tests/test_gpu_check.py checks it).
PLAN="environment build native_cuda cuda_op_tests golden_fp32 golden_tf32 golden_fp16 bench_torch_cuda bench_cuda_graphs tensorrt_tests bench_tensorrt"
# Outside --dry-run these must pass for the run to count as verified.
REQUIRED="build native_cuda cuda_op_tests golden_fp32 golden_tf32 golden_fp16 bench_torch_cuda bench_cuda_graphs"
for s in ${ONLY//,/ }; do
  case " $PLAN " in *" $s "*) ;; *) echo "gpu_check.sh: --only: unknown step '$s' (steps: $PLAN)" >&2; exit 2 ;; esac
done
selected() { [ -z "$ONLY" ] || case ",$ONLY," in *",$1,"*) true ;; *) false ;; esac; }

# ------------------------------------------------------------------------------ helpers (python)
cat >"$WORK/lib.py" <<'PYEOF'
import json, sys, xml.etree.ElementTree as ET

def junit(path):
    """status<TAB>reason<TAB>details-json of a pytest junit file."""
    try:
        root = ET.parse(path).getroot()
    except Exception as e:
        return "fail", f"no pytest report ({type(e).__name__}: {e})", {}
    cases = list(root.iter("testcase"))
    counts = {"passed": 0, "failed": 0, "skipped": 0}
    skips, fails = {}, []
    for c in cases:
        name = f"{c.get('classname', '')}::{c.get('name', '')}"
        if c.find("failure") is not None or c.find("error") is not None:
            counts["failed"] += 1
            fails.append(name)
        elif c.find("skipped") is not None:
            counts["skipped"] += 1
            msg = (c.find("skipped").get("message") or "").strip()
            skips[msg] = skips.get(msg, 0) + 1
        else:
            counts["passed"] += 1
    errors = sum(int(s.get("errors", 0)) for s in root.iter("testsuite"))
    details = {**counts, "collection_errors": max(0, errors - sum(1 for c in cases if c.find("error") is not None)),
               "skip_reasons": skips, "failed_tests": fails[:50]}
    if counts["failed"] or details["collection_errors"]:
        return "fail", f"{counts['failed']} failed, {counts['passed']} passed, {counts['skipped']} skipped", details
    if counts["passed"] == 0:
        why = next(iter(skips), "no tests collected")
        return "skip", f"all {counts['skipped']} tests skipped: {why}", details
    note = f"{counts['passed']} passed, {counts['skipped']} skipped"
    return "pass", note, details

def subjson(path):
    try:
        d = json.load(open(path))
    except Exception as e:
        return "fail", f"no result file ({type(e).__name__}: {e})", {}
    st = d.get("status")
    if st not in ("pass", "fail", "skip"):
        return "fail", f"result file has no valid status: {st!r}", d
    return st, d.get("reason", ""), d

def bench(path, backend):
    """Rows of bench_pipeline.py's output for ``backend``."""
    rows, skipped = [], ""
    for line in open(path, errors="replace"):
        w = line.split()
        if len(w) >= 5 and w[0] == "width" and w[2].startswith("N=") and w[3] == backend:
            rows.append({"width": float(w[1]), "boxes": int(w[2][2:]), "images_per_s": float(w[4]),
                         "ms": float(w[6]) if len(w) > 6 else None, "line": line.strip()})
        elif line.startswith(f"{backend}: skipped"):
            skipped = line.strip()
    if rows:
        return "pass", f"{len(rows)} rows", {"rows": rows}
    return ("skip", skipped, {}) if skipped else ("fail", f"no {backend} rows in the output", {})

def record(steps, name, status, reason, seconds, timeout, cmd, details_path, cpu_seconds="0"):
    details = {}
    if details_path:
        try:
            details = json.load(open(details_path))
        except Exception as e:
            details = {"details_error": str(e)}
    with open(steps, "a") as f:
        f.write(json.dumps({"name": name, "status": status, "reason": reason, "seconds": float(seconds),
                            "cpu_seconds": float(cpu_seconds), "timeout_s": int(timeout), "command": cmd,
                            "details": details}) + "\n")

def finalize(steps, out, mode, device, plan, required, started, finished, env_path):
    recs = [json.loads(l) for l in open(steps) if l.strip()]
    names = [r["name"] for r in recs]
    plan, required = plan.split(), required.split()
    summary = {s: sum(r["status"] == s for r in recs) for s in ("pass", "fail", "skip")}
    problems = [f"{r['name']}: {r['status']} ({r['reason']})" for r in recs if r["status"] == "fail"]
    if names != plan:
        problems.append(f"steps recorded {names} differ from the plan {plan}")
    if mode == "gpu":
        problems += [f"{r['name']}: required on a GPU but {r['status']} ({r['reason']})"
                     for r in recs if r["name"] in required and r["status"] == "skip"]
    try:
        env = json.load(open(env_path))
    except Exception:
        env = {}
    res = {"schema": 1, "mode": mode, "device": device, "started": started, "finished": finished,
           "cpu_seconds": round(sum(r.get("cpu_seconds", 0.0) for r in recs), 1),
           "plan": plan, "required_on_gpu": required, "environment": env, "steps": recs, "summary": summary,
           "ok": not problems, "problems": problems}
    json.dump(res, open(out, "w"), indent=1)
    return res

if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd in ("junit", "subjson", "bench"):
        st, reason, details = {"junit": junit, "subjson": subjson, "bench": bench}[cmd](*args[:-1])
        json.dump(details, open(args[-1], "w"))
        print(f"{st}\t{' '.join(str(reason).split())[:500]}")
    elif cmd == "record":
        record(*args)
    elif cmd == "finalize":
        res = finalize(*args)
        print(json.dumps(res["summary"]), f"CPU {res['cpu_seconds']}s,", "ok" if res["ok"] else "NOT OK")
        for p in res["problems"]:
            print("  problem:", p)
        sys.exit(0 if res["ok"] else 1)
PYEOF

log() { echo "$*" | tee -a "$LOG"; }

remaining() { echo $(( BUDGET - ($(date +%s) - START) )); }

# run_step NAME TIMEOUT KIND [ARG] -- COMMAND...
#   KIND: rc (exit status), junit FILE, subjson FILE, bench BACKEND; runs COMMAND with the timeout
#   capped to the budget left, appends its output to the log and records the step.
run_step() {
  local name="$1" tmo="$2" kind="$3" arg="" ; shift 3
  if [ "$kind" != rc ]; then arg="$1"; shift; fi
  [ "$1" = "--" ] && shift
  if ! selected "$name"; then skip_step "$name" "not selected (--only $ONLY)" "$*"; return; fi
  [ $DRY = 1 ] && tmo=$((tmo * 2))
  local left; left=$(remaining)
  if [ "$left" -lt 15 ]; then
    skip_step "$name" "time budget of ${BUDGET}s exhausted before this step" "$*"; return
  fi
  [ "$tmo" -gt "$left" ] && tmo=$left
  local t0 rc status reason details="$WORK/$name.details.json" slog="$WORK/$name.log"
  log ""; log "=== $name (timeout ${tmo}s): $*"
  # user and system CPU time of this shell's finished children, before and after (`times` in a
  # $(...) subshell would report the subshell's children: none)
  times >"$WORK/times0"
  t0=$(date +%s.%N)
  timeout --kill-after=10 "$tmo" "$@" >"$slog" 2>&1
  rc=$?
  times >"$WORK/times1"
  local c0 c1; c0=$(tail -n 1 "$WORK/times0"); c1=$(tail -n 1 "$WORK/times1")
  local secs cpu; read -r secs cpu < <("$PY" -c "
import re, sys, time
def s(t):
    return sum(float(m) * 60 + float(x) for m, x in re.findall(r'(\d+)m([\d.]+)s', t))
print(round(time.time() - float(sys.argv[1]), 1), round(s(sys.argv[3]) - s(sys.argv[2]), 1))" "$t0" "$c0" "$c1")
  cat "$slog" >>"$LOG"
  if [ $rc = 124 ] || [ $rc = 137 ]; then
    status=fail; reason="timed out after ${tmo}s"; details=""
  else
    case "$kind" in
      rc) if [ $rc = 0 ]; then status=pass; reason=""; else status=fail; reason="exit status $rc: $(tail -n 1 "$slog")"; fi; details="" ;;
      junit|subjson)
        IFS=$'\t' read -r status reason < <("$PY" "$WORK/lib.py" "$kind" "$arg" "$details" 2>>"$LOG" || printf 'fail\tresult parser failed\n')
        # sub-scripts exit 0 (pass), 1 (fail) or 3 (skip); pytest 0 also when everything skipped
        if [ "$status" != fail ] && [ $rc != 0 ] && { [ "$kind" = junit ] || [ $rc != 3 ]; }; then
          status=fail; reason="exit status $rc; ${reason}"
        fi ;;
      bench)
        IFS=$'\t' read -r status reason < <("$PY" "$WORK/lib.py" bench "$slog" "$arg" "$details" 2>>"$LOG" || printf 'fail\tresult parser failed\n')
        if [ $rc != 0 ]; then status=fail; reason="exit status $rc: $(tail -n 1 "$slog")"; fi ;;
    esac
    [ -n "${status:-}" ] || { status=fail; reason="no result from the step's parser"; }
  fi
  "$PY" "$WORK/lib.py" record "$STEPS" "$name" "$status" "${reason:-}" "$secs" "$tmo" "$*" "${details:-}" "$cpu"
  log "--- $name: $status ${reason:+($reason)} [${secs}s, CPU ${cpu}s]"
}

skip_step() {  # NAME REASON [COMMAND]
  "$PY" "$WORK/lib.py" record "$STEPS" "$1" skip "$2" 0 0 "${3:-}" ""
  log ""; log "--- $1: skip ($2)"
}

log "gpu_check.sh: mode $MODE, device $DEV, output $OUTDIR, budget ${BUDGET}s, python $(command -v "$PY")"

# ------------------------------------------------------------------------------ 1. environment
cat >"$WORK/env.py" <<'PYEOF'
import json, platform, shutil, subprocess, sys

def out(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout.strip()
    except Exception as e:
        return f"unavailable ({type(e).__name__})"

env = {"python": sys.version.split()[0], "machine": platform.machine(), "platform": platform.platform()}
env["nvidia_smi"] = out(["nvidia-smi", "--query-gpu=name,compute_cap,driver_version,memory.total",
                         "--format=csv,noheader"]) if shutil.which("nvidia-smi") else "not found"
env["nvcc"] = out(["nvcc", "--version"]).splitlines()[-1] if shutil.which("nvcc") else "not found"
for mod in ("torch", "onnxruntime", "tensorrt", "pynvml", "cupy"):
    try:
        m = __import__(mod)
        env[mod] = getattr(m, "__version__", "present")
    except Exception as e:
        env[mod] = f"not importable ({type(e).__name__}: {str(e)[:120]})"
try:
    import torch
    env["torch_cuda"] = torch.version.cuda
    env["torch_sees_gpu"] = torch.cuda.is_available()
    if torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(0)
        env["compute_capability"] = ".".join(map(str, torch.cuda.get_device_capability(0)))
except Exception as e:
    env["torch_sees_gpu"] = f"error: {e}"
json.dump(env, open(sys.argv[1], "w"), indent=1)
print(json.dumps(env, indent=1))
PYEOF
run_step environment 60 rc -- "$PY" "$WORK/env.py" "$WORK/env.json"

# ------------------------------------------------------------------------------ 2. build
if [ $DRY = 1 ]; then
  skip_step build "dry run: no build; the installed instcolor._native is used"
elif [ $SKIP_BUILD = 1 ]; then
  skip_step build "--skip-build: the installed instcolor._native is used"
elif ! command -v nvcc >/dev/null 2>&1; then
  "$PY" "$WORK/lib.py" record "$STEPS" build fail "nvcc not found: the CUDA kernels cannot be compiled" 0 0 "" ""
  log "--- build: fail (nvcc not found)"
else
  # Real code for this GPU only (fast): nvidia-smi's compute capability 9.0 -> 90-real.
  ARCH="${INSTCOLOR_CUDA_ARCHITECTURES:-}"
  if [ -z "$ARCH" ]; then
    CC=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -n 1 | tr -d ' .')
    case "$CC" in ''|*[!0-9]*) ARCH=native ;; *) ARCH="${CC}-real" ;; esac
  fi
  log "CUDA architectures: $ARCH"
  run_step build 360 rc -- env INSTCOLOR_CUDA=ON INSTCOLOR_CUDA_ARCHITECTURES="$ARCH" \
    "$PY" -m pip install --no-build-isolation --no-deps -v -e "$REPO"
fi

# ------------------------------------------------------------------------------ 3. native CUDA kernels load
cat >"$WORK/native.py" <<'PYEOF'
import json, sys
dry = sys.argv[2] == "1"
try:
    from instcolor import ops
    ok = ops.cuda_compiled() and ops.cuda_available()
    res = {"cuda_compiled": ops.cuda_compiled(), "cuda_available": ops.cuda_available(),
           "reason": ops.cuda_unavailable_reason()}
    res["status"] = "pass" if ok else ("skip" if dry else "fail")
except Exception as e:
    res = {"status": "fail", "reason": f"instcolor.ops does not load: {type(e).__name__}: {e}"}
json.dump(res, open(sys.argv[1], "w"))
print(json.dumps(res))
PYEOF
run_step native_cuda 60 subjson "$WORK/native.json" -- "$PY" "$WORK/native.py" "$WORK/native.json" "$DRY"

# ------------------------------------------------------------------------------ 4. CUDA op tests vs CPU ops
# (they skip, with the reason, where no GPU is usable: in the dry run that is what gets recorded)
run_step cuda_op_tests 240 junit "$WORK/ops.xml" -- "$PY" -m pytest -q -rs -p no:cacheprovider \
  --junitxml="$WORK/ops.xml" tests/test_ops_cuda.py

# ------------------------------------------------------------------------------ 5-7. golden cases, torch backend
GOLDEN_SIZE=""; [ $DRY = 1 ] && GOLDEN_SIZE="--cases v02"  # dry run: one S = 64 case with a box (all three nets)
for prec in fp32 tf32 fp16; do
  # shellcheck disable=SC2086
  run_step "golden_$prec" 240 subjson "$WORK/golden_$prec.json" -- "$PY" benchmarks/gpu_golden.py --device "$DEV" \
    --precision "$prec" --golden "$GOLDEN" $GOLDEN_SIZE --json "$WORK/golden_$prec.json"
done

# ------------------------------------------------------------------------------ 8. pipeline benchmark, torch on CUDA
if [ $DRY = 1 ]; then
  run_step bench_torch_cuda 120 bench torch -- "$PY" benchmarks/bench_pipeline.py --backends torch --widths 0.125 \
    --size 64 --boxes 0 2 --warmup 0 --repeats 1 --no-detector
else
  run_step bench_torch_cuda 300 bench torch-cuda -- "$PY" benchmarks/bench_pipeline.py --backends torch-cuda \
    --widths 1.0 0.25 --size 256 --boxes 0 8 --warmup 3 --repeats 10 --no-detector
fi

# ------------------------------------------------------------------------------ 9. the same nets with CUDA graphs
if [ $DRY = 1 ]; then
  run_step bench_cuda_graphs 120 subjson "$WORK/graphs.json" -- "$PY" benchmarks/gpu_cuda_graphs.py --device cpu \
    --width 0.125 --size 64 --boxes 0 2 --warmup 0 --repeats 1 --json "$WORK/graphs.json"
else
  run_step bench_cuda_graphs 240 subjson "$WORK/graphs.json" -- "$PY" benchmarks/gpu_cuda_graphs.py --device cuda \
    --width 1.0 --size 256 --boxes 0 8 --warmup 3 --repeats 20 --json "$WORK/graphs.json"
fi

# ------------------------------------------------------------------------------ 10-11. TensorRT, when it imports
TRT_WHY=$("$PY" -c "
import sys
try:
    import tensorrt
except Exception as e:
    print(f'tensorrt does not import: {type(e).__name__}: {e}'); sys.exit()
from instcolor.backends.tensorrt_backend import tensorrt_unavailable_reason
print(tensorrt_unavailable_reason(0))" 2>&1 | tail -n 1)
if [ -n "$TRT_WHY" ]; then
  skip_step tensorrt_tests "$TRT_WHY"
  skip_step bench_tensorrt "$TRT_WHY"
else
  run_step tensorrt_tests 300 junit "$WORK/trt.xml" -- "$PY" -m pytest -q -rs -p no:cacheprovider \
    --junitxml="$WORK/trt.xml" tests/test_tensorrt.py tests/test_detect_tensorrt.py tests/test_trt_gpu_defects.py
  run_step bench_tensorrt 300 bench tensorrt -- "$PY" benchmarks/bench_pipeline.py --backends tensorrt \
    --widths 1.0 --size 256 --boxes 0 8 --warmup 3 --repeats 10 --no-detector
fi

# ------------------------------------------------------------------------------ result
log ""
"$PY" "$WORK/lib.py" finalize "$STEPS" "$JSON" "$MODE" "$DEV" "$PLAN" "$REQUIRED" \
  "$(date -u -d "@$START" +%Y-%m-%dT%H:%M:%SZ)" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$WORK/env.json" | tee -a "$LOG"
rc=${PIPESTATUS[0]}
log "gpu_check.sh: $JSON, $LOG ($(( $(date +%s) - START ))s)"
exit $rc

#!/usr/bin/env bash
# AddressSanitizer + UndefinedBehaviorSanitizer run of the native kernels.
#
# Builds instcolor._native with INSTCOLOR_SANITIZE=address,undefined (C++ only: INSTCOLOR_CUDA=OFF)
# into its own virtual environment and build folder (the developer's .venv and build/ are left
# alone), then runs the op tests and the property-based fuzz tests with the sanitizer runtimes
# preloaded. Any finding aborts the interpreter, so pytest (and this script) fail.
#
# How to run Python with such a build by hand (Python itself is not instrumented, so the ASan
# runtime must be loaded first, before the interpreter's own allocations):
#   LD_PRELOAD="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libubsan.so)" \
#   ASAN_OPTIONS=detect_leaks=0 UBSAN_OPTIONS=print_stacktrace=1 python -m pytest tests/test_ops.py
# detect_leaks=0: CPython and torch keep allocations alive until exit by design (not our leaks).
#
# Environment: INSTCOLOR_SANITIZE_VENV (default build/sanitize-venv), INSTCOLOR_FUZZ_EXAMPLES
# (hypothesis examples per fuzz test, default 200 here), INSTCOLOR_SANITIZE (default address,undefined).
set -euo pipefail
cd "$(dirname "$0")/.."
t0=$SECONDS

VENV=${INSTCOLOR_SANITIZE_VENV:-build/sanitize-venv}
SANITIZE=${INSTCOLOR_SANITIZE:-address,undefined}
export INSTCOLOR_FUZZ_EXAMPLES=${INSTCOLOR_FUZZ_EXAMPLES:-200}

if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
PY="$VENV/bin/python"
"$PY" -m pip install -q --upgrade pip
# The CPU wheel of PyTorch first (any other torch spec pulls gigabytes of CUDA packages), then the
# package's runtime + test dependencies as pyproject.toml lists them.
DEPS=$("$PY" -c 'import tomllib; p = tomllib.load(open("pyproject.toml", "rb"))["project"]
print("\n".join(p["dependencies"] + p["optional-dependencies"]["test"]))')
"$PY" -m pip install -q torch==2.13.0 $DEPS
# The package itself, always rebuilt from this tree: own build folder, no CUDA, no LTO (sanitized
# objects link faster and report exact frames), debug info.
INSTCOLOR_SANITIZE="$SANITIZE" INSTCOLOR_CUDA=OFF "$PY" -m pip install -q --force-reinstall --no-deps \
  -C build-dir=build/sanitize-{wheel_tag} \
  -C cmake.build-type=RelWithDebInfo \
  -C cmake.define.CMAKE_INTERPROCEDURAL_OPTIMIZATION=OFF \
  .
t_build=$((SECONDS - t0))

SO=$("$PY" -c "import importlib.util as u; print(u.find_spec('instcolor._native').origin)")
RUNTIMES=$(ldd "$SO" | awk '/lib(asan|ubsan|tsan|lsan)\.so/ {print $3}' | tr '\n' ' ')
if [ -z "${RUNTIMES// /}" ]; then
  echo "sanitize.sh: $SO is not linked against a sanitizer runtime (INSTCOLOR_SANITIZE ignored?)" >&2
  exit 1
fi
echo "sanitize.sh: $SO built with -fsanitize=$SANITIZE in ${t_build}s; preloading: $RUNTIMES"

# --capture=sys: pytest captures only Python's sys.stdout/stderr, so a sanitizer report (written
# to file descriptor 2 just before the process stops) reaches the log instead of a lost capture.
status=0
(
  export LD_PRELOAD="$RUNTIMES"
  export ASAN_OPTIONS="detect_leaks=0:halt_on_error=1:abort_on_error=1:detect_stack_use_after_return=1:check_initialization_order=1:strict_init_order=1"
  export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
  # This venv holds only what the op tests need; the CI rule "onnx extra and ../shared must be there"
  # (tests/conftest.py) belongs to the full suite that .ci/run runs next, so it is off here.
  unset CI
  "$PY" -m pytest -q -p no:cacheprovider --capture=sys tests/test_ops.py tests/test_ops_fuzz.py
) || status=$?
echo "sanitize.sh: finished in $((SECONDS - t0))s (build ${t_build}s), pytest exit status $status"
exit $status

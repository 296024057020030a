#!/usr/bin/env bash
# The built-in starter's training campaign as one time-boxed command for a lent GPU (the v3 recipe).
#
#   DATA=.gpucarry/data INIT=python/instcolor/weights/starter bash benchmarks/train_starter_gpu.sh RUNS_DIR
#
# DATA holds train/, val/ and boxes.json as benchmarks/shrink_photos.py writes them. Stages, each
# bounded by --time-limit (seconds of training; the stage then finishes as at --steps: BatchNorm
# statistics, validation, checkpoint), from INIT (the v2 starter):
#   1. full     the full-image net: hints, class-rebalanced ab head, global hints   (T_FULL, lr 3e-4)
#   2. full     the same run resumed at a lower rate                                (T_FULL2, lr 6e-5)
#   3. instance the instance net from the new full-image net, on the box crops      (T_INST)
#   4. fusion   the blend blocks, fine-tuned from INIT's (--keep-blend)             (T_FUSION)
#   5. bundle   RUNS_DIR/starter_v3 (config.json + model.safetensors)
# Every stage is resumable: running the script again continues where it stopped.
# DEVICE (default cuda), WORKERS (default: cores - 2), BATCH (default 64) and the T_* limits are
# environment settings; SMOKE=1 runs it on a CPU in a minute with tiny limits (the check before a lease).
set -euo pipefail
RUNS="${1:?usage: train_starter_gpu.sh RUNS_DIR}"
DATA="${DATA:?DATA: folder with train/, val/, boxes.json}"
INIT="${INIT:?INIT: weights folder to start from}"
DEVICE="${DEVICE:-cuda}"
NCPU="$(nproc)"
WORKERS="${WORKERS:-$(( NCPU > 3 ? NCPU - 2 : 1 ))}"
BATCH="${BATCH:-64}"
T_FULL="${T_FULL:-240}" T_FULL2="${T_FULL2:-60}" T_INST="${T_INST:-45}" T_FUSION="${T_FUSION:-60}"
STEPS=200000 VAL_EVERY=500 SIZE=128 BN=50
if [ "${SMOKE:-0}" = 1 ]; then
  T_FULL=8 T_FULL2=4 T_INST=4 T_FUSION=4 VAL_EVERY=5 BN=2 BATCH=4
fi
PY="${PYTHON:-python3}"
mkdir -p "$RUNS"
common=(--data "$DATA/train" --val "$DATA/val" --size "$SIZE" --batch-size "$BATCH" --device "$DEVICE"
        --workers "$WORKERS" --steps "$STEPS" --val-every "$VAL_EVERY" --val-images 32 --bn-batches "$BN"
        --checkpoint-seconds 120)
hinted=(--hint-p 0.125 --hint-uniform 0.5 --class-weight 1 --global-hints --global-reveal 0.4)
stage() { echo "== $(date -u +%H:%M:%S) $*" >&2; "$PY" -m instcolor train "$@"; }

stage --stage full --out "$RUNS/full" --init "$INIT" "${common[@]}" "${hinted[@]}" --lr 3e-4 --time-limit "$T_FULL"
# the same command resumes the run (its --steps is above where the time limit stopped it); the rate changes
stage --stage full --out "$RUNS/full" --init "$INIT" "${common[@]}" "${hinted[@]}" \
      --lr 6e-5 --time-limit "$T_FULL2"
stage --stage instance --out "$RUNS/instance" --init "$RUNS/full" --boxes "$DATA/boxes.json" "${common[@]}" \
      --lr 1e-4 --time-limit "$T_INST"
# fusion init: the new full-image and instance nets with INIT's blend blocks
"$PY" - "$RUNS/instance" "$INIT" "$RUNS/fusion_init" <<'EOF'
import sys
from instcolor.models import load_nets, save_official
new, old, out = sys.argv[1:4]
a, b = load_nets(new), load_nets(old)
save_official(out, {"full": a["full"], "instance": a["instance"], "fusion": b["fusion"]})
EOF
stage --stage fusion --out "$RUNS/fusion" --init "$RUNS/fusion_init" --boxes "$DATA/boxes.json" --keep-blend \
      "${common[@]}" "${hinted[@]}" --lr 1e-4 --time-limit "$T_FUSION"
rm -rf "$RUNS/starter_v3"
"$PY" -m instcolor bundle --weights "$RUNS/fusion" -o "$RUNS/starter_v3"
echo "== $(date -u +%H:%M:%S) done: $RUNS/starter_v3" >&2

#!/usr/bin/env bash
# The 16-token headline of docs/RESULTS.md "Session 27" on one GPU: prompt tuning (pt-k16) and the two
# ComMer runs (commer-k16-CL, commer-k16-CD) of scripts/gpu_train_lamp7.sh beside no prompt and raw
# documents cut to 16 tokens, on synth10's dev and test users and the held-out seeds 5-9 (all 64
# examples each, 8 documents), with the personalization gap; one `evaluate` per user set, three at once.
#
#   CKPT=runs/gpu DATA=runs OUT=/tmp/gpu-eval bash scripts/gpu_eval_lamp7.sh
#
# CKPT is scripts/gpu_train_lamp7.sh's RUNS (PT/checkpoint, CL/checkpoint, CD/checkpoint: each run's final
# checkpoint); DATA holds synth10/ and fresh5/ ... fresh9/ (`prepare` outputs);
# TOKENIZER_FROM as in scripts/gpu_model_setup.sh.
set -uo pipefail
OUT=${OUT:-/tmp/commer-gpu-eval}  # receives gpu.txt, driver.log and eval.tgz (the evaluate outputs) only
WORK=${WORK:-/tmp/commer-gpu-eval-work}
CKPT=${CKPT:-runs/gpu}
DATA=${DATA:-runs}
DEVICE=${DEVICE:-cuda} MAX_EXAMPLES=${MAX_EXAMPLES:-64}
PY=${PYTHON:-python3}
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
mkdir -p "$OUT" "$WORK"
source scripts/gpu_model_setup.sh  # the baselines load no checkpoint: the tokenizer is checked here
EV="--checkpoint pt-k16=$CKPT/PT/checkpoint --checkpoint commer-k16-CL=$CKPT/CL/checkpoint
  --checkpoint commer-k16-CD=$CKPT/CD/checkpoint
  --baseline none --baseline raw_docs --raw-budget 16 --no-untrained --docs-at-test 8 --max-examples $MAX_EXAMPLES
  --generate 0 --max-input-tokens 64 --max-target-tokens 40 --threads 4 --bf16 --device $DEVICE --no-progress"
evaluate() {  # NAME DATA SPLIT
  $PY -m jobs.cli evaluate $EV --data "$2" --split "$3" --output "$WORK/eval-$1" >"$WORK/eval-$1.log" 2>&1
  echo "$1: exit $?" | tee -a "$OUT/driver.log"
}
evaluate dev "$DATA/synth10" dev & evaluate test "$DATA/synth10" test & evaluate fresh5 "$DATA/fresh5" dev &
wait
for s in 6 7 8 9; do evaluate fresh$s "$DATA/fresh$s" dev & done
wait
tar -czf "$OUT/eval.tgz" -C "$WORK" $(cd "$WORK" && ls -d eval-*)

#!/usr/bin/env bash
# The whole chain at smoke scale on CPU: official-format files -> prepare -> train (ComMer,
# prompt tuning) -> evaluate (ComMer, untrained, prompt tuning, raw documents, none) -> plots.
#   bash scripts/smoke_chain.sh [OUT_DIR]
# Env: BASE_MODEL (smollm2-135m), STEPS (8), PERLTQA_DIR (../shared/data/perltqa, skipped if absent),
#      THREADS (torch threads; 1 is much faster when other jobs share the cores).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-commer-output/smoke}
BASE_MODEL=${BASE_MODEL:-smollm2-135m}
STEPS=${STEPS:-8}
THREADS=${THREADS:-1}
PERLTQA_DIR=${PERLTQA_DIR:-../shared/data/perltqa}
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
COMMON=(--base-model "$BASE_MODEL" -k 8 --lora-r 8 --batch-size 4 --docs-per-example 2 --max-doc-tokens 64
        --max-input-tokens 64 --max-target-tokens 32 --steps "$STEPS" --max-dev-examples 8 --threads "$THREADS"
        --no-progress)
EVAL=(--docs-at-test 1,2,4 --raw-budget 32,64 --max-examples 8 --generate 4 --max-new-tokens 16
      --max-input-tokens 64 --max-target-tokens 32 --threads "$THREADS" --no-progress)
rm -rf "$OUT"
python scripts/make_synthetic_lamp.py --output "$OUT/lamp7-raw" --train-users 16 --dev-users 4
commer-pipeline prepare lamp7 --source "$OUT/lamp7-raw" --output "$OUT/lamp7"
datasets=(lamp7)
if [ -d "$PERLTQA_DIR" ]; then
  commer-pipeline prepare perltqa --source "$PERLTQA_DIR" --output "$OUT/perltqa" --n-test-characters 1
  datasets+=(perltqa)
fi
for ds in "${datasets[@]}"; do
  commer-pipeline train --data "$OUT/$ds" --output "$OUT/$ds-commer" "${COMMON[@]}"
  commer-pipeline train --method prompt_tuning --raw-budget 32 --data "$OUT/$ds" --output "$OUT/$ds-pt" \
    --no-compare-baselines "${COMMON[@]}"
  commer-pipeline evaluate --checkpoint "commer-k8=$OUT/$ds-commer" --checkpoint "pt-k8=$OUT/$ds-pt" \
    --data "$OUT/$ds" --output "$OUT/$ds-eval" "${EVAL[@]}"
done
ls "$OUT"/*-eval

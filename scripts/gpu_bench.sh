#!/usr/bin/env bash
# GPU figures for docs/PERFORMANCE.md in one run: the CUDA path's correctness check,
# then `commer-pipeline bench` on CUDA + bf16 for the default model's architecture and a
# 2B model of Gemma-2b's architecture, both with random weights (no download needed);
# then both again with compiled decoder layers (`--compile`) at the CUDA default budget,
# every mix, unless COMPILED=0.
#
#   OUT=/tmp/gpu bash scripts/gpu_bench.sh        # JSON, logs and the updated docs under $OUT
#   COMPILED=0 OUT=/tmp/gpu bash scripts/gpu_bench.sh   # eager only (about 6 minutes on an H100)
#
# Needs torch with CUDA, transformers, peft, pyarrow, click, matplotlib (Beam is not
# needed: the pipeline rows are skipped) and $COMMER_HOME/models/smollm2-135m holding
# at least SmolLM2's config.json and tokenizer files (the weights are not read).
set -uo pipefail
status=0
OUT=${OUT:-/tmp/commer-gpu-bench}
mkdir -p "$OUT"
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
PY=${PYTHON:-python3}
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv | tee "$OUT/gpu.txt"
$PY -c "import torch, transformers, peft; print('torch', torch.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__)" | tee -a "$OUT/gpu.txt"
$PY scripts/gpu_check.py 2>&1 | tee -a "$OUT/gpu.txt" || status=1
bench() {  # $1 model, $2 documents per mix, $3 json name, then extra bench options
  local model=$1 docs=$2 json=$3
  shift 3
  $PY -m jobs.cli bench --device cuda --dtype bfloat16 --base-model "$model" --docs "$docs" \
    --skip-pipeline --no-generation "$@" --json "$OUT/$json" --write-docs 2>&1 | tee "$OUT/${json%.json}.log" || status=1
}
sweep=(--naive-docs 256 --batch-tokens 4096 --batch-tokens 16384 --batch-tokens 65536)
bench random:smollm2-135m 4096 bench-cuda-smollm2-135m.json "${sweep[@]}"
bench random:gemma-2b 2048 bench-cuda-gemma-2b.json "${sweep[@]}"
if [[ ${COMPILED:-1} != 0 ]]; then  # eager vs compiled layers in one run, at the job's CUDA default budget
  bench random:smollm2-135m 4096 bench-cuda-smollm2-135m-compiled.json --naive-docs 32 --compile
  bench random:gemma-2b 1024 bench-cuda-gemma-2b-compiled.json --naive-docs 32 --compile
fi
cp docs/PERFORMANCE.md docs/performance-cuda-*.png "$OUT/"
exit $status

#!/usr/bin/env bash
# GPU figures for docs/PERFORMANCE.md in one run, as steps (STEPS, in this order by default):
#   check     scripts/gpu_check.py: the CUDA path against the CPU on the same weights
#   eager     `commer-pipeline bench` on CUDA + bf16, token-budget sweeps, for the default
#             model's architecture and a 2B model of Gemma-2b's (random weights: no download)
#   compiled  both models with compiled decoder layers (`--compile`) at the CUDA default budget
#   pipeline  the Beam job on the GPU against commer_core (135M architecture, tweets); needs
#             Beam, which the device machine lacks: carry the wheels that scripts/gpu_wheels.sh
#             fetches into .whl/ (they are installed under /tmp/site first)
#
#   OUT=/tmp/gpu bash scripts/gpu_bench.sh                            # every step
#   STEPS="check compiled pipeline" OUT=/tmp/gpu bash scripts/gpu_bench.sh
#
# Needs torch with CUDA, transformers, peft, pyarrow, click, matplotlib and
# $COMMER_HOME/models/smollm2-135m holding at least SmolLM2's config.json and tokenizer
# files (the weights are not read). Run it from the checkout's root: each bench step rewrites
# its section of docs/PERFORMANCE.md (--docs-dir docs). Each step's JSON, log and the updated
# docs land in $OUT.
set -uo pipefail
status=0
OUT=${OUT:-/tmp/commer-gpu-bench}
STEPS=${STEPS:-check eager compiled pipeline}
mkdir -p "$OUT"
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
PY=${PYTHON:-python3}
step() { [[ " $STEPS " == *" $1 "* ]]; }
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv | tee "$OUT/gpu.txt"
$PY -c "import torch, transformers, peft; print('torch', torch.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__)" | tee -a "$OUT/gpu.txt"
bench() {  # $1 model, $2 documents per mix, $3 json name, then extra bench options
  local model=$1 docs=$2 json=$3
  shift 3
  $PY -m jobs.cli bench --device cuda --dtype bfloat16 --base-model "$model" --docs "$docs" \
    --no-generation "$@" --json "$OUT/$json" --write-docs --docs-dir docs 2>&1 | tee "$OUT/${json%.json}.log" || status=1
}
if step check; then
  $PY scripts/gpu_check.py 2>&1 | tee -a "$OUT/gpu.txt" || status=1
fi
if step eager; then
  sweep=(--skip-pipeline --naive-docs 256 --batch-tokens 4096 --batch-tokens 16384 --batch-tokens 65536)
  bench random:smollm2-135m 4096 bench-cuda-smollm2-135m.json "${sweep[@]}"
  bench random:gemma-2b 2048 bench-cuda-gemma-2b.json "${sweep[@]}"
fi
if step compiled; then  # eager vs compiled layers in one run, at the job's CUDA default budget
  bench random:smollm2-135m 4096 bench-cuda-smollm2-135m-compiled.json --skip-pipeline --naive-docs 32 --compile
  bench random:gemma-2b 1024 bench-cuda-gemma-2b-compiled.json --skip-pipeline --naive-docs 32 --compile
fi
if step pipeline; then
  if ! $PY -c "import apache_beam" 2>/dev/null && compgen -G ".whl/*.whl" >/dev/null; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
      && export PYTHONPATH=/tmp/site:$PYTHONPATH
  fi
  if $PY -c "import apache_beam; print('apache-beam', apache_beam.__version__)" | tee -a "$OUT/gpu.txt"; then
    bench random:smollm2-135m 4096 bench-cuda-smollm2-135m-pipeline.json --mix tweet --naive-docs 64 \
      --pipeline-docs 16384
  else
    echo "pipeline step: apache_beam is not importable (run scripts/gpu_wheels.sh here and carry .whl)" | tee -a "$OUT/gpu.txt"
    status=1
  fi
fi
cp docs/PERFORMANCE.md docs/performance-cuda-*.png "$OUT/" 2>/dev/null
exit $status

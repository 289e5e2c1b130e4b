#!/usr/bin/env bash
# The test suite: CPU only, no network but PyPI (for the dependencies and the GPT-2 BPE file
# that the openai-whisper sdist carries; without it the GPT-2 tests are skipped, with a reason).
# Installs into .venv (scripts/install.sh), with the Hugging Face and wandb extras that their tests need.
set -euo pipefail
cd "$(dirname "$0")"
INSTALL_EXTRAS=${INSTALL_EXTRAS:-hf,wandb} bash scripts/install.sh
PY=.venv/bin/python
export TIKTOKEN_CACHE_DIR=${TIKTOKEN_CACHE_DIR:-$HOME/.cache/tiktoken}
bash .ci/seed_tiktoken.sh "$TIKTOKEN_CACHE_DIR" || echo "note: GPT-2 BPE file not seeded; its tests will be skipped"
"$PY" -m pytest -q -rs tests "$@"

#!/usr/bin/env bash
# Installs what the project needs into the current Python. torch is installed only when
# missing: a GPU machine keeps its CUDA build; a fresh CPU machine gets torch 2.13.0.
set -euo pipefail
PY=${PYTHON:-python3}
if ! "$PY" -c "import torch" 2>/dev/null; then
  "$PY" -m pip install --quiet --disable-pip-version-check "torch==2.13.0"
fi
"$PY" -m pip install --quiet --disable-pip-version-check -r "$(dirname "$0")/../requirements.txt"

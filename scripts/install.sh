#!/usr/bin/env bash
# Installs what the project needs into a project-local virtual environment (.venv): created on
# first use, reused after, and left alone when the requirement files have not changed. torch is
# installed only when the venv lacks it: the CPU wheel 2.13.0 unless TORCH_SPEC names another
# build (a GPU machine passes its CUDA one). INSTALL_EXTRAS="hf" adds requirements-hf.txt.
# The same dependencies are declared in pyproject.toml for `pip install -e .[dev,hf,wandb]`.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
[ -x "$VENV/bin/python" ] || "${PYTHON:-python3}" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install --quiet --disable-pip-version-check)
"$VENV/bin/python" -c "import torch" 2>/dev/null || "${PIP[@]}" "${TORCH_SPEC:-torch==2.13.0}"
REQS=("$ROOT/requirements.txt")
for extra in ${INSTALL_EXTRAS:+${INSTALL_EXTRAS//,/ }}; do REQS+=("$ROOT/requirements-$extra.txt"); done
STAMP="$VENV/.installed-$(cat "${REQS[@]}" | cksum | cut -d' ' -f1)"
if [ ! -e "$STAMP" ]; then
  for req in "${REQS[@]}"; do "${PIP[@]}" -r "$req"; done
  rm -f "$VENV"/.installed-* && touch "$STAMP"
fi

#!/usr/bin/env bash
# The whole pipeline on the embedded default, on CPU, offline, in a few minutes:
# prepare (CPython's own documentation → data/demo) → train (config/train_demo_cpu.py → out-demo)
# → diagnose (report.md, report.json and plots in out-demo/). Extra arguments go to train.py.
# Everything installs into .venv (scripts/install.sh); run later commands with .venv/bin/python.
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/install.sh
PY=.venv/bin/python
"$PY" data/fineweb_single/prepare.py --demo
"$PY" train.py config/train_demo_cpu.py "$@"
"$PY" -m diagnose out-demo --md out-demo/report.md --json out-demo/report.json --plot out-demo/plots

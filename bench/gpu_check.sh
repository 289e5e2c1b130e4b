#!/usr/bin/env bash
# One prepared GPU check for one H200 (or any CUDA GPU), about 5-7 minutes in all:
# the reference config (config/train_fineweb_4070.py) on a synthetic dataset of random GPT-2
# token ids (the GPU machine has no FineWeb), ~50 iterations each in bfloat16 and float16,
# torch.compile on and off; prints tokens/s, MFU, peak memory and the data loader's share for
# each, and checks that fused AdamW is used; the peak memory against facts.memory_estimate; then ours
# beside the unmodified nanoGPT on the same shape, bf16 and fp16, compile on (bench/bench_vs_nanogpt.py:
# tokens/s ratio, goal >= 1.2x, and MFU against the GPU's real peak). NANOGPT=DIR names nanoGPT's files
# (default ../shared/anchors/nanoGPT); where they are missing that part is skipped.
# Written without a GPU at hand: not run yet.
#
#   bash bench/gpu_check.sh            (ITERS=50 by default; ITERS=30 bash bench/gpu_check.sh for less)
#   RUNS="bfloat16:True:150" NANOGPT=/path/to/nanoGPT bash bench/gpu_check.sh   (one of ours, then nanoGPT beside)
set -uo pipefail
cd "$(dirname "$0")/.."
ITERS=${ITERS:-50}
DATA=${DATA:-/tmp/gpu_check_fineweb_synthetic}
PY=${PYTHON:-python3}
START=$(date +%s)

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))"

# 16M train + 1M val random GPT-2 ids (uint16), in the layout data/<name>/prepare.py writes
$PY - "$DATA" <<'PYEOF'
import os, sys
sys.path.insert(0, os.getcwd())
import numpy as np
d = sys.argv[1]
os.makedirs(d, exist_ok=True)
rng = np.random.default_rng(0)
sizes = {"train": 16_000_000, "val": 1_000_000}
for split, n in sizes.items():
    ids = rng.integers(0, 50257, size=n, dtype=np.uint16)
    ids[::1000] = 50256  # an end-of-text token now and then, as in real data
    ids.astype("<u2").tofile(os.path.join(d, f"{split}.bin"))
meta = {"tokenizer": {"name": "gpt2", "vocab_size": 50257, "eot_token": 50256, "eot_position": "prepend"},
        "dtype": "uint16", "train_tokens": sizes["train"], "val_tokens": sizes["val"],
        "train_docs": sizes["train"] // 1000, "val_docs": sizes["val"] // 1000,
        "source": {"name": "synthetic random GPT-2 ids (bench/gpu_check.sh)", "size": 0, "sha256": ""}}
from atomic import write_json_atomic  # run from the repository root
write_json_atomic(os.path.join(d, "meta.json"), meta)
print(f"synthetic dataset in {d}: {sizes}")
PYEOF

status=0
run() {  # dtype compile time-limit
    echo
    echo "=== reference config, dtype=$1 compile=$2 ($ITERS iterations) ==="
    out=$(timeout "$3" $PY bench/bench_train.py config/train_fineweb_4070.py --data_dir="$DATA" \
          --dtype="$1" --compile="$2" --iters="$ITERS" 2>&1)
    rc=$?
    echo "$out"
    if [ $rc -ne 0 ]; then echo "FAILED (exit $rc; 124 means it hit the ${3}s limit)"; status=1; return; fi
    if echo "$out" | grep -q "fused AdamW True"; then echo "CHECK fused AdamW: ok"; else echo "CHECK fused AdamW: FAILED"; status=1; fi
    if [ "$2" = True ] && ! echo "$out" | grep -q "compile True"; then echo "CHECK compile: FAILED (fell back to eager)"; status=1; fi
    if [ "$1" = float16 ] && ! echo "$out" | grep -q "grad scale"; then echo "CHECK GradScaler: FAILED"; status=1; fi
    mem=$(echo "$out" | sed -n 's/^peak memory *\([0-9,]*\) MiB (GPU max allocated).*/\1/p' | tr -d ,)
    [ -n "$mem" ] && $PY - "$1" "$2" "$mem" <<'PYEOF'
import sys
import facts
dtype, compile, measured = sys.argv[1], sys.argv[2] == "True", int(sys.argv[3]) * 2**20
cfg = dict(n_layer=12, n_head=12, n_embd=384, block_size=1024, batch_size=16, dropout=0.1, dtype=dtype, compile=compile)
e = facts.memory_estimate_for_config(cfg, 50304, "cuda")
est = e["total"] - e["overhead"]  # max_memory_allocated leaves out the CUDA context and the allocator's slack
print(f"CHECK memory estimate: {est / 2**20:,.0f} MiB vs {measured / 2**20:,.0f} MiB max allocated "
      f"(ratio {est / measured:.2f}; {'ok' if 0.75 <= est / measured <= 1.25 else 'OUTSIDE 25%'})")
PYEOF
}
# eager first: a quick sanity run before the long compiles; RUNS="bfloat16:True:150" for fewer
for r in ${RUNS:-bfloat16:False:90 bfloat16:True:150 float16:False:90 float16:True:150}; do
    IFS=: read -r dt comp limit <<< "$r"
    run "$dt" "$comp" "$limit"
done

NANOGPT=${NANOGPT:-../shared/anchors/nanoGPT}
if [ -f "$NANOGPT/train.py" ]; then
    for dt in bfloat16 float16; do
        echo
        echo "=== ours beside nanoGPT, reference shape, $dt, compile on (goal: ratio >= 1.2) ==="
        timeout 300 $PY bench/bench_vs_nanogpt.py --configs=ref --loads=quiet --rounds=1 --iters=25 --skip=5 \
            --data_dir="$DATA" --nanogpt="$NANOGPT" --set device=cuda --set dtype=$dt --set compile=True \
            --set gradient_accumulation_steps=4 || { echo "FAILED (exit $?)"; status=1; }
    done
else
    echo; echo "nanoGPT's files not found in $NANOGPT (set NANOGPT=DIR): the comparison is skipped"
fi

echo
echo "gpu_check done in $(( $(date +%s) - START ))s, status $status"
exit $status

"""The memory estimate against measured peaks (real training steps, CPU RSS), and the guard:
the start-up refusal and out-of-memory errors as one line."""
import json
import os
import subprocess
import sys

import pytest
import torch

import facts
import memory_guard
from errors import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# shapes none of the estimator's coefficients were fitted on, each dominated by another part:
# activations, logits, parameters + optimizer, attention's math path (dropout on CPU)
SHAPES = [
    dict(n_layer=3, n_head=6, n_embd=192, block_size=128, vocab_size=1024, batch_size=12),
    dict(n_layer=1, n_head=2, n_embd=64, block_size=64, vocab_size=20032, batch_size=8),
    dict(n_layer=2, n_head=8, n_embd=512, block_size=16, vocab_size=8192, batch_size=2),
    dict(n_layer=2, n_head=4, n_embd=128, block_size=256, vocab_size=256, batch_size=8, dropout=0.1),
]


def estimate_cpu(shape):
    return facts.memory_estimate(shape["n_layer"], shape["n_head"], shape["n_embd"], shape["block_size"],
                                 shape["vocab_size"], shape["batch_size"], dropout=shape.get("dropout", 0.0),
                                 device_type="cpu")["total"]


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="needs Linux's /proc peak-RSS reset")
def test_estimate_within_25_percent_of_measured_peak_rss():
    p = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "memory_probe.py"), json.dumps(SHAPES)],
                       capture_output=True, text=True, timeout=900, cwd=ROOT)  # ~15 s; more on a crowded machine
    assert p.returncode == 0, p.stderr[-2000:]
    measured = [json.loads(line) for line in p.stdout.splitlines()]
    assert [m["shape"] for m in measured] == SHAPES
    for m in measured:
        est = estimate_cpu(m["shape"])
        assert 0.75 <= est / m["peak_bytes"] <= 1.25, (m["shape"], est, m["peak_bytes"])


def demo_config(**change):
    c = dict(n_layer=4, n_head=4, n_embd=128, block_size=128, batch_size=16, gradient_accumulation_steps=2,
             dtype="float32", compile=False, dropout=0.1, bias=False)
    return {**c, **change}


def test_startup_line_names_the_need_and_the_device():
    line = memory_guard.check_memory(demo_config(), 320, torch.device("cpu"), available=8 * facts.GiB)
    need = facts.format_bytes(facts.memory_estimate_for_config(demo_config(), 320, "cpu")["total"])
    assert line.startswith(f"memory: needs about {need} (params ")
    assert line.endswith("; 8.0 GiB given")


def test_huge_model_is_refused_before_allocating():
    with pytest.raises(UserError) as e:
        memory_guard.check_memory(demo_config(n_layer=100000, n_embd=100000, n_head=100), 320, torch.device("cpu"))
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith("this run will not fit in cpu memory: needs about ")
    assert "use a smaller model: --n_layer=" in msg


def test_small_device_refuses_with_a_batch_that_keeps_the_tokens():
    cfg = demo_config(batch_size=16, gradient_accumulation_steps=2)
    need = facts.memory_estimate_for_config(cfg, 320, "cpu")["total"]
    with pytest.raises(UserError) as e:
        memory_guard.check_memory(cfg, 320, torch.device("cpu"), available=need - 1)
    # the largest batch below 16 that divides the 32 sequences and fits is 8
    assert str(e.value).endswith("use --batch_size=8 --gradient_accumulation_steps=4 "
                                 "(the same 4,096 tokens per iteration)")
    assert memory_guard.check_memory(cfg, 320, torch.device("cpu"), available=need).startswith("memory: ")


def test_a_real_cpu_allocation_failure_becomes_one_line():
    with pytest.raises(RuntimeError) as raised:
        torch.empty(2 ** 61, dtype=torch.uint8)  # 2 EiB: the CPU allocator refuses
    assert memory_guard.is_out_of_memory(raised.value)
    err = memory_guard.out_of_memory_error(raised.value, demo_config(out_dir="out-demo"), 320,
                                           torch.device("cpu"), "a training step")
    msg = str(err)
    assert "\n" not in msg
    assert msg.startswith("out of memory during a training step (")
    assert "use --batch_size=" in msg and "the same 4,096 tokens per iteration" in msg
    assert msg.endswith("the last checkpoint in out-demo is intact")


def test_other_errors_are_not_out_of_memory():
    assert not memory_guard.is_out_of_memory(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
    assert not memory_guard.is_out_of_memory(ValueError("out of memory"))
    assert memory_guard.is_out_of_memory(RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert memory_guard.is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory"))


def test_on_out_of_memory_wraps_a_real_failure_and_passes_other_errors():
    cfg = demo_config(out_dir="out-demo")
    with pytest.raises(UserError, match=r"^out of memory during an evaluation \(.*can't allocate memory"):
        with memory_guard.on_out_of_memory(cfg, 320, torch.device("cpu"), "an evaluation"):
            torch.empty(2 ** 61, dtype=torch.uint8)
    with pytest.raises(ValueError, match="not memory"):
        with memory_guard.on_out_of_memory(cfg, 320, torch.device("cpu"), "an evaluation"):
            raise ValueError("not memory")


# -----------------------------------------------------------------------------
# train.py: the refusal at start-up and an out-of-memory step, end to end in this process

def train_py(tmp_path, *args):
    """train.py run here as `python train.py ...` runs (exit status, stdout, stderr)."""
    import fault_helpers as fh
    from train_helpers import TINY, make_dataset
    data = make_dataset(str(tmp_path / "data"), train_tokens=1200, val_tokens=600)
    argv = ["train.py", *TINY, f"--data_dir={data}", f"--out_dir={tmp_path / 'out'}", "--eval_iters=2", *args]
    return fh.run_in_process({"argv": argv})


def error_lines(stderr):
    return [line for line in stderr.splitlines() if line.strip() and not line.startswith("note: ")]


def test_train_py_refuses_a_model_that_cannot_fit_before_allocating_it(tmp_path):
    r = train_py(tmp_path, "--n_layer=100000", "--n_embd=100000", "--n_head=100")
    assert r["rc"] == 2 and "Traceback" not in r["stderr"]
    [line] = error_lines(r["stderr"])
    assert line.startswith("error: this run will not fit in cpu memory: needs about ")
    assert not (tmp_path / "out").exists()  # refused before the run folder, let alone the model


def test_an_out_of_memory_step_ends_in_one_line_with_the_checkpoint_intact(tmp_path, monkeypatch):
    import train_step
    real_step = train_step.train_step

    def step_that_runs_out_at_iter_3(t, rt, it, *args):
        if it == 3:
            torch.empty(2 ** 61, dtype=torch.uint8)  # the CPU allocator refuses: a real allocation failure
        return real_step(t, rt, it, *args)
    monkeypatch.setattr(train_step, "train_step", step_that_runs_out_at_iter_3)  # train.py imports it from there
    r = train_py(tmp_path, "--max_iters=6", "--eval_interval=2", "--always_save_checkpoint=True")
    assert r["rc"] == 2 and "Traceback" not in r["stderr"], r["stderr"][-2000:]
    [line] = error_lines(r["stderr"])
    assert line.startswith("error: out of memory during a training step (")
    assert line.endswith(f"the last checkpoint in {tmp_path / 'out'} is intact")
    ckpt = torch.load(tmp_path / "out" / "ckpt.pt", map_location="cpu", weights_only=True)
    assert ckpt["iter_num"] == 2
    assert not [n for n in os.listdir(tmp_path / "out") if ".tmp" in n]

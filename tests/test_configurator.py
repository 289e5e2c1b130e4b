"""configurator.py: config files and --key=value over defaults, with one-line errors."""
import os
import subprocess
import sys

import pytest

from configurator import configure
from errors import UserError
from train_helpers import ROOT, make_dataset, run_train

DEFAULTS = {"batch_size": 12, "learning_rate": 6e-4, "dataset": "fineweb_single", "compile": True,
            "peak_flops": None, "max_iters": 100, "learning_rate_floor": 1e-5}


def test_config_file_then_overrides(tmp_path):
    cfg = tmp_path / "c.py"
    cfg.write_text("import math\nbatch_size = 32\nlearning_rate = batch_size * 1e-5\n_private = 1\n")
    c = configure(DEFAULTS, [str(cfg), "--batch_size=8"])
    assert c["batch_size"] == 8                        # the override wins over the file
    assert c["learning_rate"] == pytest.approx(32e-5)  # a file can compute from its own values
    assert DEFAULTS["batch_size"] == 12                # defaults untouched


def test_value_parsing():
    c = configure(DEFAULTS, ["--learning_rate=1", "--dataset=a=b", "--compile=false", "--max_iters=1e4",
                             "--peak_flops=58.3e12"])
    assert c["learning_rate"] == 1.0 and isinstance(c["learning_rate"], float)  # int accepted for a float
    assert c["dataset"] == "a=b"          # a value may contain '=' and need no quotes
    assert c["compile"] is False          # true/false accepted for a bool
    assert c["max_iters"] == 10000 and isinstance(c["max_iters"], int)  # integral float for an int
    assert c["peak_flops"] == 58.3e12     # a None default takes any literal
    assert configure(DEFAULTS, ["--dataset='x y'"])["dataset"] == "x y"


@pytest.mark.parametrize("argv, message", [
    (["--learnng_rate=1e-3"], "unknown key 'learnng_rate' in --learnng_rate=1e-3; did you mean 'learning_rate'"),
    (["--batch_size=abc"], "batch_size expects int (default 12) but --batch_size gives str 'abc'; e.g. --batch_size=12"),
    (["--batch_size=1.5"], "batch_size expects int (default 12) but --batch_size gives float 1.5"),
    (["--compile=1"], "compile expects bool (default True) but --compile gives int 1"),
    (["--learning_rate=True"], "learning_rate expects float (default 0.0006) but --learning_rate gives bool True"),
    (["--batch_size"], "--batch_size needs a value; write it as --batch_size=VALUE"),
    (["--nope"], "unknown option --nope; see --help"),
    (["missing_config.py"], "config file missing_config.py not found"),
])
def test_bad_arguments(argv, message):
    with pytest.raises(UserError) as e:
        configure(DEFAULTS, argv)
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_config_file_with_unknown_key_or_wrong_type(tmp_path):
    cfg = tmp_path / "c.py"
    cfg.write_text("batch_sise = 4\n")
    with pytest.raises(UserError, match=r"c.py sets unknown key 'batch_sise'; did you mean 'batch_size'\?"):
        configure(DEFAULTS, [str(cfg)])
    cfg.write_text("batch_size = '4'\n")
    with pytest.raises(UserError, match=r"batch_size expects int .* but .*c.py gives str '4'"):
        configure(DEFAULTS, [str(cfg)])
    cfg.write_text("batch_size = 1/0\n")
    with pytest.raises(UserError, match=r"c.py failed: ZeroDivisionError"):
        configure(DEFAULTS, [str(cfg)])


def test_train_help_lists_every_key_with_default_and_comment():
    import train
    p = subprocess.run([sys.executable, "train.py", "--help"], cwd=ROOT, capture_output=True, text=True)
    assert p.returncode == 0
    for key in train.config_keys:
        assert f"--{key} " in p.stdout
    line = next(l for l in p.stdout.splitlines() if "--min_lr " in l)
    assert "6e-05" in line and "Chinchilla" in line
    assert len(train.config_keys) >= 40


def one_line_error(p):
    assert p.returncode == 2, p.stderr
    assert "Traceback" not in p.stderr and "AssertionError" not in p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), p.stderr
    return lines[0]


def train_config(*argv):
    import train
    return configure({k: getattr(train, k) for k in train.config_keys}, list(argv))


@pytest.mark.parametrize("args, message", [
    (["--learning_rate=-1e-3"], "learning_rate=-0.001 must be positive"),
    (["--n_embd=30", "--n_head=4"], "n_embd=30 is not divisible by n_head=4; pick n_embd a multiple of n_head"),
    (["--dtype=fp16"], "unknown dtype 'fp16'; use one of auto, float32, bfloat16, float16"),
    (["--lr_schedule=linear"], "unknown lr_schedule 'linear'; use one of cosine, wsd, constant"),
    (["--sampling=shuffle"], "unknown sampling 'shuffle'; use one of epoch, random"),
    (["--init_from=gpt3"], "init_from='gpt3' is not supported; use 'scratch', 'resume', gpt2, gpt2-medium, "
                           "gpt2-large, gpt2-xl or hf:PATH (a Hugging Face GPT-2 folder)"),
    (["--device=tpu"], "unknown device 'tpu'"),
    (["--dropout=1.0"], "dropout=1.0 is outside [0, 1)"),
    (["--batch_size=0"], "batch_size=0 must be at least 1"),
    (["--warmup_iters=100", "--lr_decay_iters=50"], "lr_decay_iters=50 ends before warmup_iters=100"),
    (["--peak_flops=-1"], "peak_flops=-1 is not a positive number"),
    (["--fault_inject=boom@3"], "fault_inject item 'boom@3' is not KIND@ITER"),
])
def test_impossible_values(args, message):
    import train
    with pytest.raises(UserError) as e:
        train.validate(train_config(*args))
    assert message in str(e.value) and "\n" not in str(e.value)


def test_reference_configs_are_valid():
    import train
    for name in os.listdir(os.path.join(ROOT, "config")):
        if name.endswith(".py"):
            train.validate(train_config(os.path.join(ROOT, "config", name)))
    c = train_config(os.path.join(ROOT, "config", "train_fineweb_4070.py"))
    assert (c["n_layer"], c["n_head"], c["n_embd"], c["block_size"], c["batch_size"],
            c["gradient_accumulation_steps"]) == (12, 12, 384, 1024, 16, 32)
    assert (c["learning_rate"], c["min_lr"], c["max_iters"], c["lr_decay_iters"], c["warmup_iters"]) == \
        (1e-3, 1e-4, 20000, 20000, 500)
    assert (c["beta2"], c["dropout"], c["weight_decay"], c["bias"], c["dtype"], c["compile"], c["eval_iters"],
            c["always_save_checkpoint"], c["dataset"], c["lr_schedule"]) == \
        (0.99, 0.1, 0.1, False, "float16", True, 200, True, "fineweb_single", "cosine")


def one_line_error(p):
    assert p.returncode == 2, p.stderr
    assert "Traceback" not in p.stderr and "AssertionError" not in p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), p.stderr
    return lines[0]


@pytest.mark.parametrize("args, message", [
    (["--learning_rate=abc"], "error: learning_rate expects float (default 0.0006) but --learning_rate gives str 'abc'"),
    (["--min_lr=1e-2"], "error: min_lr=0.01 is above learning_rate=0.001; set --min_lr to about learning_rate/10"),
    (["--block_size=4096"], "block_size=4096 is larger than the data: train.bin in"),
    (["--init_from=resume", "--out_dir=/nonexistent/run"], "checkpoint /nonexistent/run/ckpt.pt not found"),
    (["--data_dir=/nonexistent/data"], "/nonexistent/data/meta.json not found"),
    (["config/no_such_config.py"], "config file config/no_such_config.py not found"),
])
def test_train_cli_errors_are_one_line(tmp_path_factory, tmp_path, args, message):
    data = tmp_path_factory.getbasetemp() / "cfg_data"
    if not (data / "meta.json").exists():
        make_dataset(str(data), train_tokens=2000, val_tokens=500)
    base = [f"--data_dir={data}", f"--out_dir={tmp_path / 'out'}", "--device=cpu", "--learning_rate=1e-3",
            "--min_lr=1e-4", "--block_size=32"]
    p = run_train(base + args, check=False)
    assert message in one_line_error(p)


def test_diagnose_reads_train_pys_keys_and_config_files_from_the_same_source():
    import train
    from configurator import script_defaults
    from diagnose import context
    defaults = script_defaults(os.path.join(ROOT, "train.py"))
    assert list(defaults) == train.config_keys  # the config block, read without running train.py
    assert defaults == {k: getattr(train, k) for k in train.config_keys}
    assert set(train.config_keys) <= context.KNOWN_KEYS
    cfg = context.read_config_file(os.path.join(ROOT, "config", "train_fineweb_4070.py"))
    assert cfg == train_config(os.path.join(ROOT, "config", "train_fineweb_4070.py"))  # as train.py reads it


def test_diagnose_refuses_a_config_that_imports_torch(tmp_path):
    from diagnose import context
    cfg = tmp_path / "c.py"
    cfg.write_text("import torch\nbatch_size = 4\n")
    with pytest.raises(UserError, match=r"c.py imports torch; diagnose reads configs without torch"):
        context.read_config_file(str(cfg))

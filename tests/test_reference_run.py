"""The reference user's run, diagnosed as they would diagnose it.

config/train_fineweb_4070.py (12 x 384, 524,288 tokens/iter, cosine 1e-3 -> 1e-4 over 20000) on one
FineWeb parquet of 1.0e9 GPT-2 tokens, seen at iteration 14500 of 20000: train.py's stdout (a
synthetic curve from tests/curves.py: the LR-annealing law over the real schedule, eval noise of
eval_iters=200, the val bumps the user saw at 6000, 9500 and 13000), read the user's way:

    python -m diagnose train.log --config config/train_fineweb_4070.py --data data/fineweb_single --gpu "RTX 4070"

What a careful expert concludes, and so must diagnose: the data is repeated ~10 times by the end
(a warning: get more data); the flat stretch is not a plateau while the cosine is still decaying;
the forecast's interval holds the true final val loss; no overfitting (val is below train); the bumps
are noise; and the model is over-trained for its size (a bigger model for the same compute).
"""
import json
import os

import pytest

import curves
from diagnose.detect import run_all
from diagnose.parse import load_run
from facts import lr_at, param_counts, padded_vocab_size
from diagnose.findings import SEVERITIES  # noqa: E402

INFO = SEVERITIES.index("info")  # above it: a notice, warning or critical

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "config", "train_fineweb_4070.py")
TRAIN_TOKENS = 1_000_000_000
TPI = 16 * 1024 * 32


def fineweb_folder(path):
    """data/fineweb_single as prepare.py leaves it (meta.json, and .bin files of the right size:
    sparse, so they cost no disk)."""
    os.makedirs(path)
    meta = {"tokenizer": {"name": "gpt2", "vocab_size": 50257, "eot_token": 50256}, "dtype": "uint16",
            "train_tokens": TRAIN_TOKENS, "val_tokens": 500_000, "train_docs": 1, "val_docs": 1, "source": {}}
    with open(os.path.join(path, "meta.json"), "w") as f:
        json.dump(meta, f)
    for split in ("train", "val"):
        with open(os.path.join(path, f"{split}.bin"), "wb") as f:
            f.truncate(2 * meta[f"{split}_tokens"])
    return path


@pytest.fixture(scope="module", params=[0, 1, 2])
def reference(request, tmp_path_factory):
    d = tmp_path_factory.mktemp(f"ref{request.param}")
    log = d / "train.log"
    log.write_text(curves.reference_log(request.param))
    run = load_run(str(log), config=CONFIG, data=fineweb_folder(str(d / "fineweb_single")), gpu="RTX 4070")
    return run, run_all(run)


def one(findings, fid):
    got = [f for f in findings if f.id == fid]
    assert len(got) == 1, [(f.id, f.severity) for f in findings]
    return got[0]


def test_the_facts_are_the_configs(reference):
    run, fs = reference
    n = param_counts(12, 384, padded_vocab_size(50257), 1024)["params"]
    assert n == 40_953_216 and run.model["params"] == n
    assert run.tokens_per_iter() == TPI == 524_288 and run.train_tokens() == TRAIN_TOKENS
    facts = one(fs, "facts.summary")
    assert facts.evidence["iters_done"] == 14501 and "40.95M params" in facts.title


def test_data_repeated_ten_times_is_a_warning_with_the_fix(reference):
    _, fs = reference
    rep = one(fs, "data.repetition")
    assert rep.severity == "warning"
    # the train line of iteration 14500 is written after that step: 14501 steps done
    assert rep.evidence["epochs"] == pytest.approx(14501 * TPI / TRAIN_TOKENS, abs=1e-4)   # 7.6027
    assert rep.evidence["planned_epochs"] == pytest.approx(20000 * TPI / TRAIN_TOKENS, abs=1e-3)   # 10.486
    assert rep.evidence["planned_value_of_tokens"] == pytest.approx(0.771, abs=0.002)   # Muennighoff, R_D* 15.4
    assert rep.evidence["iters_per_epoch"] == pytest.approx(TRAIN_TOKENS / TPI, abs=0.1)  # 1907.3
    assert "10.5 by the planned end" in rep.title
    assert any("prepare.py --input" in r for r in rep.recommendations)
    assert any("--max_iters=7629" in r for r in rep.recommendations)   # 4 epochs, if no more data
    assert not any("--dropout" in r for r in rep.recommendations)      # the config already has 0.1


def test_flat_while_the_cosine_still_decays_is_not_a_plateau(reference):
    _, fs = reference
    lr = lr_at(14500, learning_rate=1e-3, min_lr=1e-4, warmup_iters=500, lr_decay_iters=20000, max_iters=20000)
    assert lr == pytest.approx(2.654e-4, rel=1e-3)          # 27% of the peak, on its way to 10%
    plateaus = [f for f in fs if f.id.startswith("plateau")]
    assert len(plateaus) == 1 and plateaus[0].id in ("plateau.none", "plateau.lr_decaying")
    assert plateaus[0].severity == {"plateau.none": "ok", "plateau.lr_decaying": "info"}[plateaus[0].id]
    assert plateaus[0].evidence["lr_ratio"] == pytest.approx(lr / 1e-3, abs=1e-3)
    if plateaus[0].id == "plateau.lr_decaying":
        assert plateaus[0].evidence["lr_end_ratio"] == pytest.approx(0.1) and "not a plateau" in plateaus[0].title


def test_forecast_of_the_final_val_holds_the_truth(reference):
    _, fs = reference
    f = one(fs, "forecast.final")
    ev = f.evidence
    truth = float(curves.reference_truth([20000])[0])
    assert ev["fitted_on"] == "val loss" and ev["final_iter"] == 20000 and ev["last_seen_iter"] == 14500
    assert ev["lo80"] <= truth <= ev["hi80"]
    assert ev["hi80"] - ev["lo80"] < 0.15                   # a useful interval, not a shrug
    assert ev["predicted"] < float(curves.reference_truth([14500])[0])   # the decay still buys loss
    assert ev["what_if"]["max_iters_x2"]["predicted"] < ev["predicted"]


def test_no_overfitting_and_the_bumps_are_noise(reference):
    _, fs = reference
    # the question is answered 'no', with the gap as evidence (issue 17: every question answered)
    assert [(f.id, f.severity) for f in fs if f.id.startswith(("overfit", "sanity.val_below_train"))] == \
        [("overfit.none", "ok")]
    assert one(fs, "overfit.none").evidence["gap"] < 0          # the reference curves put val just below train
    assert [f.severity for f in fs if f.id.startswith("instability") and f.rank() > INFO] == []


def test_over_trained_for_its_size_suggests_a_bigger_model(reference):
    _, fs = reference
    cap = one(fs, "capacity.tokens_per_param")
    ev = cap.evidence
    assert cap.severity == "notice" and ev["tokens_per_param"] == pytest.approx(20000 * TPI / 40_953_216, abs=0.1)
    assert ev["optimal_params"] > 2 * ev["params"] and "chinchilla_loss_this" not in ev
    s = ev["suggested"]
    assert s["n_embd"] % s["n_head"] == 0 and s["n_embd"] // s["n_head"] == 64
    assert s["params"] == param_counts(s["n_layer"], s["n_embd"], padded_vocab_size(50257), 1024)["params"]
    assert s["tokens"] <= 4 * TRAIN_TOKENS            # the compute-optimal run also fits the data


def test_only_the_repetition_is_a_warning(reference):
    _, fs = reference
    loud = {(f.id, f.severity) for f in fs if f.rank() > INFO}
    assert ("data.repetition", "warning") in loud
    assert loud <= {("data.repetition", "warning"), ("capacity.tokens_per_param", "notice"),
                    ("noise.model", "notice")}, loud
    assert not [f for f in fs if f.id.startswith("internal")]

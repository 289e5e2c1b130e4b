"""The formats of other communities, on the real logs in ../shared/logs, with their exact
numbers (each value below was read off the file by hand), and which loss each format logs."""
import numpy as np

from shared_logs import at, needs_logs, real

pytestmark = needs_logs


def test_build_nanogpt_log_txt():
    r = real("logbob0401__build-nanogpt__gpt2-124M-fineweb-edu-10B-oct26.txt")
    assert r.format == "build-nanogpt"
    t, e = r.train, r.eval
    assert (len(t["iter"]), t["iter"][0], t["iter"][-1]) == (19073, 0, 19072)
    assert t["loss"][0] == 10.954986 and t["loss"][-1] == 3.093304
    assert (len(e["iter"]), e["iter"][-1]) == (78, 19072)
    assert at(e, 0, "val_loss") == 10.9514 and at(e, 19000, "val_loss") == 3.0521
    assert at(e, 19072, "val_loss") == 3.0526
    assert r.train_loss_kind == "iteration_mean"  # build-nanogpt logs loss_accum, the mean over micro-steps


def test_nanochat_base_train():
    r = real("chirag9127__nanochat__d20-base-train-4gpu-to-step-15750.txt")
    assert r.format == "nanochat"
    t, e = r.train, r.eval
    assert (len(t["iter"]), t["iter"][0], t["iter"][-1]) == (15750, 0, 15749)
    assert t["loss"][0] == 11.090355 and t["loss"][-1] == 2.845332
    assert at(t, 1, "dt_ms") == 874.40
    assert at(e, 0, "val_bpb") == 3.2987 and at(e, 15750, "val_bpb") == 0.8488
    assert np.isnan(e["val_loss"]).all()  # bits per byte is not a loss in nats: kept apart
    assert r.config["max_iters"] == 21400
    assert r.train_loss_kind == "ema" and r.grad_accum == 2


def test_torchtitan_behind_a_logger_prefix():
    r = real("auroraGPT-ANL__torchtitan__llama-1.5B-warmup-2-spikes-105-steps.txt")
    assert r.format == "torchtitan"
    t = r.train
    assert (len(t["iter"]), t["iter"][0], t["iter"][-1]) == (105, 1, 105)
    assert at(t, 3, "loss") == 15.2005 and at(t, 3, "grad_norm") == 66.6053
    assert at(t, 18, "loss") == 8.5406 and at(t, 105, "loss") == 5.3256
    assert r.train_loss_kind == "iteration_mean"


def test_torchtitan_rank_prefix_and_placeholder_loss():
    r = real("pytorch__torchtitan__issue1232-pp-loss-minus-one.txt")
    assert r.format == "torchtitan"
    assert list(r.train["iter"]) == [1, 2, 3, 4, 5]
    assert list(r.train["loss"]) == [-1.0] * 5  # read as printed; a negative cross-entropy is for sanity to judge


def test_lightning_csv_with_epoch_summaries():
    r = real("0Xero7__slm_training__lightning-csv-wikitext103-10-epochs.txt")
    assert r.format == "lightning-csv"
    t, e = r.train, r.eval
    assert (len(t["iter"]), t["iter"][0], t["iter"][-1]) == (2814, 49, 140699)
    assert t["loss"][0] == 7.628580570220947 and np.isfinite(t["loss"]).all()  # no summary row among them
    assert t["epoch"][0] == 0 and t["epoch"][-1] == 9
    assert len(e["iter"]) == 10 and e["iter"][0] == 14073 and e["iter"][-1] == 140739
    assert round(e["val_loss"][0], 4) == 4.1326 and round(e["val_loss"][-1], 4) == 3.5705
    assert list(e["epoch"]) == list(range(10))
    assert r.train_loss_kind == "iteration_mean"
    assert any("10 epoch-summary row(s)" in n for n in r.notes)


def test_lightning_csv_train_only():
    r = real("0Xero7__slm_training__lightning-csv-stuck-at-7.6.txt")
    assert r.format == "lightning-csv" and len(r.eval["iter"]) == 0
    assert r.train["iter"][-1] == 10999 and round(r.train["loss"][-1], 4) == 7.5631


def test_llmc_stdout_val_loss_lines():
    r = real("HectorFCardenas__llm.c__gpt2-124M-fineweb10B-to-step-14500.txt")
    assert r.format == "llmc"
    e = r.eval
    assert len(e["iter"]) == 59 and e["iter"][0] == 0 and e["iter"][-1] == 14500
    assert at(e, 0, "val_loss") == 11.007921 and at(e, 250, "val_loss") == 6.202221
    assert at(e, 14500, "val_loss") == 3.299919
    assert r.train_loss_kind == "iteration_mean" and r.grad_accum == 16


def test_llmc_stdout_nan_from_the_start():
    r = real("HectorFCardenas__llm.c__gpt2-124M-nan-from-step-0.txt")
    assert r.format == "llmc"
    assert np.isnan(r.train["loss"]).all() and np.isnan(r.train["grad_norm"]).all()
    assert r.train["lr"][0] == 8.57e-07
    assert list(r.eval["iter"]) == [0] and np.isnan(r.eval["val_loss"][0])


def test_old_megatron_without_colons_keeps_loss_scale():
    r = real("THUDM__Chinese-Transformer-XL__issue7-fp16-loss-scale-collapse.txt")
    t = r.train
    assert list(t["iter"]) == [400, 500, 600, 700, 800, 900, 1000, 1100, 1200]
    assert at(t, 400, "loss") == 6.758929 and np.isnan(at(t, 700, "loss"))
    assert at(t, 400, "grad_scale") == 64.0 and at(t, 800, "grad_scale") == 0.1
    assert at(t, 700, "lr") == 9.773e-06
    assert at(r.eval, 1000, "val_loss") == 4.503653
    assert r.config["max_iters"] == 3000 and r.train_loss_kind == "iteration_mean"


def test_megatron_deepspeed_loss_scale_and_plan():
    r = real("microsoft__Megatron-DeepSpeed__gpt3-125M-tokendrop-fp16-2k-iters.txt")
    t = r.train
    assert at(t, 10, "grad_scale") == 2048.0 and at(t, 2130, "grad_scale") == 32768.0
    assert at(t, 2130, "lr") == 1.256e-04
    assert r.config["max_iters"] == 1716613


def test_hf_dicts_with_nan_grad_norm():
    r = real("SY-Xuan__Pink__issue6-loss-0-grad-norm-nan.txt")
    t = r.train
    assert len(t["iter"]) == 13 and (t["loss"] == 0.0).all() and np.isnan(t["grad_norm"]).all()
    assert t["lr"][0] == 0.00012142857142857143 and t["lr"][-1] == 0.00020714285714285716


def test_hf_dicts_lr_and_epoch():
    r = real("QwenLM__Qwen__issue672-lr-0-then-constant-90-epochs.txt")
    t = r.train
    assert len(t["iter"]) == 34 and t["lr"][0] == 0 and t["lr"][-1] == 0.0003
    assert t["epoch"][0] == 1.0 and t["epoch"][-1] == 90.67


def test_nanogpt_logs_the_last_micro_batch():
    r = real("propathee__nanoGPT__shakespeare-bpe-30M-5000-iters.txt")
    assert r.train_loss_kind == "last_microbatch" and r.grad_accum == 1  # from its config echo

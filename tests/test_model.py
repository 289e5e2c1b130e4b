"""model.GPT: init loss, learning, parameter counts, optimizer groups, generation."""
import math

import pytest
import torch

import facts
from model import GPT, GPTConfig


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # tiny ops: a second thread only adds synchronisation, and costs a lot on busy cores
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny(**kw):
    args = dict(n_layer=2, n_head=2, n_embd=32, block_size=32, vocab_size=320, token_vocab_size=257, dropout=0.0)
    args.update(kw)
    torch.manual_seed(0)
    return GPT(GPTConfig(**args))


def test_loss_at_init_is_ln_vocab():
    model = tiny()
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 257, (8, 32), generator=g)
    y = torch.randint(0, 257, (8, 32), generator=g)
    _, loss = model(x, y)
    # near-uniform logits at init: the loss is ln(vocab_size) of the (padded) output layer
    assert abs(loss.item() - math.log(320)) < 0.05


def test_tiny_model_memorizes_one_batch():
    model = tiny()
    g = torch.Generator().manual_seed(2)
    x = torch.randint(0, 257, (4, 32), generator=g)
    y = torch.randint(0, 257, (4, 32), generator=g)
    opt, _ = model.configure_optimizers(0.0, 1e-2, (0.9, 0.99), "cpu")
    for _ in range(100):
        _, loss = model(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.05


@pytest.mark.parametrize("bias", [False, True])
def test_param_counts_match_facts(bias):
    model = tiny(bias=bias)
    counts = facts.param_counts(2, 32, 320, 32, bias)
    assert sum(p.numel() for p in model.parameters()) == counts["params"]
    wte, wpe = model.transformer.wte.weight.numel(), model.transformer.wpe.weight.numel()
    assert counts["params"] - wte - wpe == counts["non_embedding_params"]
    assert model.lm_head.weight is model.transformer.wte.weight  # tied


def test_gpt2_init_scales_residual_projections():
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=8, n_head=4, n_embd=256, block_size=64, vocab_size=512))
    proj = model.transformer.h[0].attn.c_proj.weight
    fc = model.transformer.h[0].mlp.c_fc.weight
    assert abs(fc.std().item() - 0.02) < 0.001
    assert abs(proj.std().item() - 0.02 / math.sqrt(16)) < 0.0005


def test_optimizer_groups_decay_only_matrices():
    model = tiny(bias=True)
    opt, fused = model.configure_optimizers(0.1, 1e-3, (0.9, 0.95), "cpu")
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.dim() >= 2 for p in decay["params"]) and all(p.dim() < 2 for p in no_decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))
    assert len(no_decay["params"]) > 0
    assert fused is False  # fused AdamW is for CUDA only


def test_generate_never_emits_padding_ids():
    model = tiny()
    model.eval()
    plain_forward = model.forward

    def forward(idx, targets=None):  # make the padding ids 257..319 by far the likeliest
        logits, loss = plain_forward(idx, targets)
        logits[..., 257:] += 100.0
        return logits, loss
    model.forward = forward
    idx = torch.zeros((2, 1), dtype=torch.long)
    logits, _ = model(idx)
    assert logits[0, -1].argmax().item() >= 257  # the unrestricted argmax would be a padding id
    torch.manual_seed(0)
    for temperature, top_k in ((1.0, None), (0.8, 5), (0.0, None)):
        out = model.generate(idx, 40, temperature=temperature, top_k=top_k)
        assert out.shape == (2, 41)
        assert out.max().item() < 257


def test_generate_greedy_equals_top_k_1_and_crops_context():
    model = tiny()
    model.eval()
    idx = torch.randint(0, 257, (1, 40), generator=torch.Generator().manual_seed(3))  # longer than block_size
    greedy = model.generate(idx, 5, temperature=0.0)
    torch.manual_seed(0)
    top1 = model.generate(idx, 5, temperature=1.0, top_k=1)
    assert torch.equal(greedy, top1)

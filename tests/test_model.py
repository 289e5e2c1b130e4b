"""model.GPT: init loss, learning, parameter counts, optimizer groups, generation, and the
modern-recipe options (each changes the forward pass as it should; all off is GPT-2 exactly)."""
import hashlib
import math

import pytest
import torch
from torch.nn import functional as F

import facts
from errors import UserError
from model import GPT, GPTConfig
from train_helpers import tiny_gpt

# each option alone, as the modern recipe sets it, and all of them together
OPTIONS = {
    'rope': dict(rope=True), 'rmsnorm': dict(norm='rmsnorm'), 'qk_norm': dict(qk_norm=True),
    'relu2': dict(mlp_act='relu2'), 'untied': dict(tie_embeddings=False), 'zero_init': dict(zero_init=True),
    'softcap': dict(logit_softcap=30.0),
}
OPTIONS['all'] = {k: v for option in OPTIONS.values() for k, v in option.items()}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


tiny = tiny_gpt


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
    assert fused is True and decay["fused"] is True  # the fused kernel on CPU too (torch >= 2.4)


def test_fused_cpu_adamw_steps_like_the_plain_one():
    # the fused kernel is a speed-up, not another optimizer: 5 steps agree with the foreach AdamW
    import torch
    # no biases: the key bias has a zero gradient in exact arithmetic, so Adam amplifies rounding noise there
    models = [tiny() for _ in range(2)]
    fused_opt, _ = models[0].configure_optimizers(0.1, 1e-2, (0.9, 0.95), "cpu")
    plain_opt = torch.optim.AdamW([{"params": g["params"], "weight_decay": g["weight_decay"]}
                                   for g in models[1].configure_optimizers(0.1, 1e-2, (0.9, 0.95), "cpu")[0].param_groups],
                                  lr=1e-2, betas=(0.9, 0.95), foreach=True)
    x = torch.randint(0, 60, (2, 8))
    for _ in range(5):
        for m, opt in zip(models, (fused_opt, plain_opt)):
            m(x, x)[1].backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
    moved = max((a - b).abs().max().item() for a, b in zip(models[0].parameters(), models[1].parameters()))
    assert moved < 1e-6
    assert any((a - b).abs().max() > 1e-3 for a, b in zip(models[0].parameters(), tiny().parameters()))


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


# -----------------------------------------------------------------------------
# the modern-recipe options


def test_default_model_is_unchanged_gpt2():
    """Computed with model.py as it was before the options existed: the same initial weights
    (bit for bit) and the same losses over three AdamW steps."""
    torch.manual_seed(1337)
    model = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=32, vocab_size=320, token_vocab_size=257))
    h = hashlib.sha256()
    for k, v in model.state_dict().items():
        h.update(k.encode())
        h.update(v.numpy().tobytes())
    assert h.hexdigest() == "09776b351c6c99245517bfb1818deed27db97ab85d5cc25e3f0c93361ab38f0a"
    g = torch.Generator().manual_seed(5)
    x, y = torch.randint(0, 100, (4, 32), generator=g), torch.randint(0, 100, (4, 32), generator=g)
    opt, _ = model.configure_optimizers(0.1, 1e-3, (0.9, 0.95), 'cpu')
    losses = []
    for _ in range(3):
        _, loss = model(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    before = [float.fromhex(v) for v in ("0x1.721fde0000000p+2", "0x1.6d2fc60000000p+2", "0x1.689eda0000000p+2")]
    assert losses == pytest.approx(before, abs=1e-6)


@pytest.mark.parametrize("name", OPTIONS)
def test_loss_at_init_is_ln_vocab_with_every_option(name):
    model = tiny(**OPTIONS[name])
    g = torch.Generator().manual_seed(1)
    x, y = torch.randint(0, 257, (8, 32), generator=g), torch.randint(0, 257, (8, 32), generator=g)
    _, loss = model(x, y)
    assert abs(loss.item() - math.log(320)) < 0.05


@pytest.mark.parametrize("name", OPTIONS)
@pytest.mark.parametrize("bias", [False, True])
def test_param_and_flop_counts_follow_the_options(name, bias):
    model = tiny(bias=bias, **OPTIONS[name])
    opts = model.config.counting_options()
    counts = facts.param_counts(2, 32, 320, 32, bias, **opts)
    assert model.get_num_params() == counts["params"]
    matmul_params = sum(p.numel() for n, p in model.named_parameters()
                        if not n.startswith(('transformer.wte', 'transformer.wpe')) or model.config.tie_embeddings
                        and n == 'transformer.wte.weight')
    assert facts.flops_per_token(2, 32, 320, 32, bias, **opts) == 6 * matmul_params + 12 * 2 * 32 * 32


def test_counts_of_the_options_at_the_reference_shape():
    plain = facts.param_counts(12, 384, 50304, 1024)
    assert facts.param_counts(12, 384, 50304, 1024, tie_embeddings=False)["params"] == plain["params"] + 50304 * 384
    assert facts.param_counts(12, 384, 50304, 1024, rope=True)["params"] == plain["params"] - 1024 * 384
    assert facts.param_counts(12, 384, 50304, 1024, norm='rmsnorm')["params"] == plain["params"] - 25 * 384
    modern = facts.param_counts(12, 384, 50304, 1024, rope=True, norm='rmsnorm', tie_embeddings=False)
    assert modern["non_embedding_params"] == plain["non_embedding_params"] - 25 * 384
    # the head is one matmul either way, and a position table is none: same FLOPs
    assert (facts.flops_per_token(12, 384, 50304, 1024, rope=True, tie_embeddings=False)
            == facts.flops_per_token(12, 384, 50304, 1024))


def constant_sequence_qk(model, T=12):
    """q and k of the first block's attention for one vector repeated at every position."""
    x = torch.randn(1, 1, model.config.n_embd, generator=torch.Generator().manual_seed(4)).expand(1, T, -1)
    q, k, v = model.transformer.h[0].attn.qkv(x)
    return q, k, v


def test_rope_makes_q_dot_k_depend_only_on_relative_position():
    model = tiny(rope=True)
    assert 'wpe' not in model.transformer  # no learned position table
    q, k, _ = constant_sequence_qk(model)
    scores = q @ k.transpose(-1, -2)   # (1, n_head, T, T); the input is the same at every position
    assert torch.allclose(scores[..., 1:, 1:], scores[..., :-1, :-1], atol=1e-5)  # constant along diagonals
    assert (scores[..., 5, 5] - scores[..., 5, 0]).abs().min() > 1e-3            # but offsets differ
    plain_q, plain_k, _ = constant_sequence_qk(tiny())
    plain = plain_q @ plain_k.transpose(-1, -2)
    assert torch.allclose(plain, plain[..., :1, :1].expand_as(plain))  # without rope: no position at all


def test_rope_state_dict_holds_no_rotary_tables():
    model = tiny(rope=True)
    assert not any('rotary' in k or 'wpe' in k for k in model.state_dict())
    fresh = tiny(rope=True, zero_init=True)
    fresh.load_state_dict(model.state_dict())  # strict: the same keys
    x = torch.randint(0, 257, (1, 32))
    assert torch.equal(fresh(x)[0], model(x)[0])


@pytest.mark.parametrize("rope", [False, True])
def test_qk_norm_gives_unit_rms_q_and_k(rope):
    q, k, v = constant_sequence_qk(tiny(qk_norm=True, rope=rope))
    for t in (q, k):
        assert torch.allclose(t.pow(2).mean(-1).sqrt(), torch.ones(t.shape[:-1]), atol=1e-4)
    assert (v.pow(2).mean(-1).sqrt() - 1).abs().max() > 0.5  # v is left alone
    plain_q, _, _ = constant_sequence_qk(tiny(rope=rope))
    assert (plain_q.pow(2).mean(-1).sqrt() - 1).abs().max() > 0.5


def test_relu2_mlp_squares_the_relu():
    mlp = tiny(mlp_act='relu2').transformer.h[0].mlp
    x = torch.randn(2, 5, 32, generator=torch.Generator().manual_seed(6))
    assert torch.allclose(mlp(x), mlp.c_proj(F.relu(mlp.c_fc(x)) ** 2), atol=1e-6)
    gelu = tiny().transformer.h[0].mlp
    assert torch.allclose(gelu(x), gelu.c_proj(F.gelu(gelu.c_fc(x))), atol=1e-6)


def test_rmsnorm_is_parameter_free_unit_rms():
    model = tiny(norm='rmsnorm')
    assert not any('ln_' in n for n, _ in model.named_parameters())
    x = 3 * torch.randn(2, 5, 32, generator=torch.Generator().manual_seed(7)) + 1
    y = model.transformer.ln_f(x)
    assert torch.allclose(y.pow(2).mean(-1).sqrt(), torch.ones(2, 5), atol=1e-4)
    assert y.mean(-1).abs().max() > 0.05  # RMS, not LayerNorm: the mean is not removed


def test_untied_head_has_its_own_weights():
    model = tiny(tie_embeddings=False)
    head, wte = model.lm_head.weight, model.transformer.wte.weight
    assert head is not wte and not torch.equal(head, wte)
    x = torch.randint(0, 257, (2, 32), generator=torch.Generator().manual_seed(8))
    _, loss = model(x, x)
    loss.backward()
    assert not torch.equal(head.grad, wte.grad)
    wte_before = wte.detach().clone()
    with torch.no_grad():
        head.mul_(2)
    assert torch.equal(wte, wte_before)
    assert model.get_num_params() == tiny().get_num_params() + 320 * 32


def test_zero_init_zeros_output_projections_and_untied_head():
    model = tiny(zero_init=True, tie_embeddings=False)
    zeroed = {n for n, p in model.named_parameters() if not p.any()}
    assert zeroed == {f'transformer.h.{i}.{m}.c_proj.weight' for i in range(2) for m in ('attn', 'mlp')} | {'lm_head.weight'}
    tied = tiny(zero_init=True)  # a tied head is the token embedding: not zeroed
    assert tied.lm_head.weight.std().item() == pytest.approx(0.02, rel=0.1)
    x = torch.randint(0, 257, (2, 32))
    assert not model(x, x)[0].any()  # uniform logits at init


def test_soft_cap_bounds_the_logits():
    model = tiny(logit_softcap=5.0, tie_embeddings=False)
    with torch.no_grad():
        model.lm_head.weight.mul_(1000)  # raw logits far beyond the cap
    x = torch.randint(0, 257, (2, 32), generator=torch.Generator().manual_seed(9))
    logits, _ = model(x, x)
    raw = model.lm_head(model.transformer.ln_f(model.transformer.h[1](model.transformer.h[0](
        model.transformer.wte(x) + model.transformer.wpe(torch.arange(32))))))
    assert raw.abs().max() > 50
    assert logits.abs().max() <= 5.0 and logits.abs().max() > 4.9
    assert torch.allclose(logits, 5.0 * torch.tanh(raw / 5.0), atol=1e-5)
    last, _ = model(x)  # the generation path (last position only) is capped too
    assert last.abs().max() <= 5.0 and torch.allclose(last, logits[:, -1:], atol=1e-3)


@pytest.mark.parametrize("name", OPTIONS)
def test_generate_works_with_every_option(name):
    model = tiny(**OPTIONS[name])
    model.eval()
    idx = torch.randint(0, 257, (2, 40), generator=torch.Generator().manual_seed(3))  # longer than block_size
    torch.manual_seed(0)
    out = model.generate(idx, 6, temperature=0.8, top_k=20)
    assert out.shape == (2, 46) and out.max().item() < 257
    assert torch.equal(out[:, :40], idx)


@pytest.mark.parametrize("bad, message", [
    (dict(norm='batchnorm'), "unknown norm 'batchnorm'; use one of layernorm, rmsnorm"),
    (dict(mlp_act='swish'), "unknown mlp_act 'swish'; use one of gelu, relu2"),
    (dict(logit_softcap=-1.0), "logit_softcap=-1.0 is negative; use 0 (off) or a cap like 30"),
    (dict(rope=True, n_head=32, n_embd=96), "rope needs an even head size, but n_embd/n_head = 3; change n_head"),
])
def test_bad_option_is_a_one_line_error(bad, message):
    args = dict(n_layer=1, n_head=2, n_embd=32, block_size=8, vocab_size=64)
    args.update(bad)
    with pytest.raises(UserError) as e:
        GPTConfig(**args)
    assert str(e.value) == message


def test_sample_py_loads_a_checkpoint_with_every_option(tmp_path):
    import dataclasses
    import os
    import subprocess
    import sys
    model = tiny(**OPTIONS['all'])
    tokenizer = {"name": "byte", "vocab_size": 257, "eot_token": 256, "eot_position": "prepend"}
    torch.save({'model': model.state_dict(), 'model_args': dataclasses.asdict(model.config), 'tokenizer': tokenizer},
               tmp_path / 'best.pt')
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    p = subprocess.run([sys.executable, 'sample.py', f'--out_dir={tmp_path}', '--start=the cat', '--num_samples=1',
                        '--max_new_tokens=8', '--device=cpu', '--compile=False'], cwd=root, capture_output=True,
                       text=True, env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith('the cat') and p.stdout.endswith('---------------\n')


def test_cpu_dropout_keeps_each_value_with_probability_1_minus_p():
    from model import Dropout
    drop = Dropout(0.25)
    x = torch.full((1000, 1000), 2.0, requires_grad=True)
    torch.manual_seed(1)
    y = drop(x)
    dropped = (y == 0).float().mean().item()
    assert abs(dropped - 0.25) < 0.003  # 1M draws: the standard error is 0.0004
    assert torch.equal(y[y != 0], torch.full_like(y[y != 0], 2.0 / 0.75))  # the kept are scaled by 1/(1-p)
    y.sum().backward()
    assert torch.equal(x.grad, y.detach() / 2.0)  # the gradient flows through the same mask
    drop.eval()
    assert drop(x) is x
    assert Dropout(0.0)(x) is x


def test_cpu_attention_with_dropout_is_causal_attention_in_expectation():
    import torch.nn.functional as F
    model = tiny(dropout=0.2)
    attn = model.transformer.h[0].attn
    q, k, v = (torch.randn(2, 2, 16, 16) for _ in range(3))
    exact = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    attn.eval()  # the weights' dropout off: the same attention as SDPA's
    assert torch.allclose(attn.attention_with_dropout(q, k, v), exact, atol=1e-5)
    attn.train()
    torch.manual_seed(0)
    draws = torch.stack([attn.attention_with_dropout(q, k, v) for _ in range(400)])
    assert not torch.allclose(draws[0], exact, atol=1e-3)  # it does drop out
    assert (draws.mean(0) - exact).abs().mean() < 0.02     # and is unbiased: E[dropout(w)] = w
    first = draws[:, 0, 0, 0]  # the first query sees only its own key: weight 1, dropped or scaled by 1/(1-p)
    kept = (first != 0).all(dim=-1)
    assert torch.allclose(first[kept], (exact[0, 0, 0] / 0.8).expand_as(first[kept]), atol=1e-5)
    assert 0.7 < kept.float().mean() < 0.9

"""optim: which parameters each optimizer gets, the LR multiplier, bit-exact state round trips
(a resume mid-run equals an uninterrupted run), the kind check, and the modern recipe learning."""
import io
import math

import pytest
import torch

import facts
import optim
from errors import UserError
from train_helpers import tiny_gpt

ALL_OPTIONS = dict(rope=True, norm='rmsnorm', qk_norm=True, mlp_act='relu2', tie_embeddings=False,
                   zero_init=True, logit_softcap=30.0)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


tiny = tiny_gpt


def build(model, kind, **kw):
    args = dict(learning_rate=1e-3, muon_lr=2e-3, weight_decay=0.1, betas=(0.9, 0.95), device_type='cpu')
    args.update(kw)
    return optim.build(model, kind, **args)


def names_of(model, params):
    ids = {id(p) for p in params}
    return {n for n, p in model.named_parameters() if id(p) in ids}


@pytest.mark.parametrize("options", [{}, ALL_OPTIONS, dict(bias=True, tie_embeddings=False)])
def test_muon_gets_exactly_the_hidden_matrices(options):
    model = tiny(**options)
    opt = build(model, 'muon')
    muon = [p for g in opt.parts['muon'].param_groups for p in g['params']]
    adamw = [p for g in opt.parts['adamw'].param_groups for p in g['params']]
    hidden = {f'transformer.h.{i}.{m}' for i in range(2)
              for m in ('attn.c_attn.weight', 'attn.c_proj.weight', 'mlp.c_fc.weight', 'mlp.c_proj.weight')}
    assert names_of(model, muon) == hidden
    assert names_of(model, adamw) == {n for n, _ in model.named_parameters()} - hidden
    assert len(muon) + len(adamw) == len(list(model.parameters()))  # each parameter once
    decay, *no_decay = opt.parts['adamw'].param_groups
    assert decay['weight_decay'] == 0.1 and all(p.dim() == 2 for p in decay['params'])
    assert all(g['weight_decay'] == 0.0 and all(p.dim() == 1 for p in g['params']) for g in no_decay)
    assert opt.parts['muon'].param_groups[0]['adjust_lr_fn'] == 'match_rms_adamw'


def test_adamw_kind_is_configure_optimizers():
    model = tiny(bias=True)
    opt = build(model, 'adamw')
    plain, fused = model.configure_optimizers(0.1, 1e-3, (0.9, 0.95), 'cpu')
    assert list(opt.parts) == ['adamw'] and fused is True and opt.fused is True
    for a, b in zip(opt.param_groups, plain.param_groups, strict=True):
        assert [id(p) for p in a['params']] == [id(p) for p in b['params']]
        assert a['weight_decay'] == b['weight_decay'] and a['lr'] == b['lr']


def test_lr_multiplier_scales_each_group_from_its_own_peak():
    config = dict(learning_rate=1e-3, min_lr=1e-4, warmup_iters=10, lr_decay_iters=100, max_iters=100,
                  lr_schedule='wsd', decay_frac=0.5)
    opt = build(tiny(), 'muon', learning_rate=1e-3, muon_lr=8e-3)
    for it, expected in ((0, 1 / 11), (50, 1.0), (75, 0.55), (100, 0.1)):
        mult = optim.lr_multiplier(it, config)
        assert mult == pytest.approx(expected)
        assert mult == pytest.approx(facts.lr_from_config(it, config) / 1e-3)
        opt.set_lr_multiplier(mult)
        assert opt.parts['muon'].param_groups[0]['lr'] == pytest.approx(8e-3 * expected)
        assert all(g['lr'] == pytest.approx(1e-3 * expected) for g in opt.parts['adamw'].param_groups)


def batches(n, seed=3):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randint(0, 257, (4, 16), generator=g), torch.randint(0, 257, (4, 16), generator=g))
            for _ in range(n)]


def run_steps(model, opt, data, first, last):
    for it in range(first, last):
        opt.set_lr_multiplier(min(1.0, (it + 1) / 3))
        x, y = data[it]
        _, loss = model(x, y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)


def through_bytes(obj):
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)  # as checkpoint.load reads it


@pytest.mark.parametrize("kind, options", [('adamw', {}), ('muon', {}), ('muon', ALL_OPTIONS)])
def test_resume_mid_run_equals_an_uninterrupted_run(kind, options):
    data = batches(6)
    model = tiny(**options)
    opt = build(model, kind)
    run_steps(model, opt, data, 0, 6)

    first = tiny(**options)
    opt1 = build(first, kind)
    run_steps(first, opt1, data, 0, 3)
    saved = through_bytes({'model': first.state_dict(), 'optimizer': opt1.state_dict()})
    assert saved['optimizer']['kind'] == kind
    resumed = tiny(**options)
    resumed.load_state_dict(saved['model'])
    opt2 = build(resumed, kind)
    opt2.load_state_dict(saved['optimizer'])
    run_steps(resumed, opt2, data, 3, 6)
    for (name, a), b in zip(model.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    assert not torch.equal(model.transformer.h[0].attn.c_attn.weight, tiny(**options).transformer.h[0].attn.c_attn.weight)


def test_state_dict_round_trip_is_exact():
    model = tiny()
    opt = build(model, 'muon')
    run_steps(model, opt, batches(2), 0, 2)
    state = opt.state_dict()
    assert set(state) == {'kind', 'muon', 'adamw'}
    other = build(model, 'muon')
    other.load_state_dict(through_bytes(state))
    again = other.state_dict()
    for part in ('muon', 'adamw'):
        for k, v in state[part]['state'].items():
            for name, t in v.items():
                assert torch.equal(t, again[part]['state'][k][name]), (part, k, name)
        assert state[part]['param_groups'] == again[part]['param_groups']


def test_resume_keeps_the_configs_peak_lr():
    model = tiny()
    state = build(model, 'muon', muon_lr=1e-2, learning_rate=1e-3).state_dict()
    opt = build(model, 'muon', muon_lr=5e-3, learning_rate=2e-3)
    opt.load_state_dict(state)
    assert [g['initial_lr'] for g in opt.param_groups] == [5e-3, 2e-3, 2e-3]  # muon, adamw decay, no decay


def test_the_other_kind_is_a_one_line_error():
    model = tiny()
    with pytest.raises(UserError) as e:
        build(model, 'adamw').load_state_dict(build(model, 'muon').state_dict(), source='out/ckpt.pt')
    assert str(e.value) == ("out/ckpt.pt was trained with optimizer='muon' but the config says optimizer='adamw'; "
                            "resume with --optimizer=muon, or start with --init_from=scratch")
    with pytest.raises(UserError, match="trained with optimizer='adamw' but the config says optimizer='muon'"):
        build(model, 'muon').load_state_dict(build(model, 'adamw').state_dict())


def test_a_plain_adamw_state_dict_from_before_loads_as_adamw():
    model = tiny()
    plain, _ = model.configure_optimizers(0.1, 1e-3, (0.9, 0.95), 'cpu')
    run_steps(model, optim.Optimizers('adamw', {'adamw': plain}, False), batches(1), 0, 1)
    legacy = plain.state_dict()
    assert 'kind' not in legacy and optim.recorded_kind(legacy) == 'adamw'
    opt = build(model, 'adamw')
    opt.load_state_dict(legacy)
    assert torch.equal(opt.parts['adamw'].state[model.lm_head.weight]['exp_avg'], plain.state[model.lm_head.weight]['exp_avg'])
    with pytest.raises(UserError, match="optimizer='adamw'"):
        build(model, 'muon').load_state_dict(legacy)


def test_unknown_kind_and_missing_muon_are_one_line_errors(monkeypatch):
    with pytest.raises(UserError) as e:
        build(tiny(), 'sgd')
    assert str(e.value) == "unknown optimizer 'sgd'; use one of adamw, muon"
    monkeypatch.delattr(torch.optim, 'Muon')  # what torch < 2.9 looks like
    with pytest.raises(UserError) as e:
        build(tiny(), 'muon')
    assert str(e.value).startswith("optimizer='muon' needs torch.optim.Muon (torch >= 2.9) but this is torch ")
    assert str(e.value).endswith("; upgrade torch or use --optimizer=adamw")


def test_grad_scaler_skips_both_optimizers_on_a_bad_gradient():
    model = tiny()
    opt = build(model, 'muon')
    scaler = torch.amp.GradScaler('cpu', init_scale=256.0)
    x, y = batches(1)[0]
    _, loss = model(x, y)
    scaler.scale(loss).backward()
    model.transformer.h[0].mlp.c_fc.weight.grad[0, 0] = float('inf')
    before = [p.detach().clone() for p in model.parameters()]
    scaler.unscale_(opt)
    scaler.step(opt)
    scaler.update()
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert scaler.get_scale() == 128.0
    opt.zero_grad()
    _, loss = model(x, y)
    scaler.scale(loss).backward()
    scaler.unscale_(opt)
    scaler.step(opt)  # a finite step moves the Muon and the AdamW parameters
    assert not torch.equal(before[1], model.transformer.h[0].attn.c_attn.weight)
    assert not torch.equal(before[0], model.transformer.wte.weight)


def test_modern_recipe_overfits_one_batch():
    model = tiny(**ALL_OPTIONS)
    opt = build(model, 'muon', learning_rate=1e-2, muon_lr=2e-2, weight_decay=0.0)
    x, y = batches(1, seed=2)[0]
    _, first = model(x, y)
    assert first.item() == pytest.approx(math.log(320), abs=1e-4)  # zero-initialised head: uniform logits
    for _ in range(60):
        _, loss = model(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.1


def test_check_config_names_the_bad_key():
    optim.check_config(dict(optimizer='adamw', muon_lr=0.0))  # muon_lr is unused by adamw
    optim.check_config(dict(optimizer='muon', muon_lr=3e-3))
    with pytest.raises(UserError) as e:
        optim.check_config(dict(optimizer='muon', muon_lr=0.0))
    assert str(e.value) == "muon_lr=0.0 must be positive; e.g. --muon_lr=3e-3"
    with pytest.raises(UserError, match="unknown optimizer 'adam'; use one of adamw, muon"):
        optim.check_config(dict(optimizer='adam', muon_lr=3e-3))


def test_build_from_config_reads_train_py_keys():
    config = dict(optimizer='muon', learning_rate=2e-3, muon_lr=4e-3, weight_decay=0.05, beta1=0.8, beta2=0.99)
    opt = optim.build_from_config(tiny(), config, 'cpu')
    muon, decay, no_decay = opt.param_groups
    assert (muon['lr'], muon['weight_decay']) == (4e-3, 0.05)
    assert (decay['lr'], decay['betas'], decay['weight_decay'], no_decay['weight_decay']) == (2e-3, (0.8, 0.99), 0.05, 0.0)

"""
The optimizers train.py steps, as one object whatever the kind:

- 'adamw': nanoGPT's AdamW on every parameter, weight decay on matrices and embeddings only.
- 'muon':  torch.optim.Muon (Jordan et al. 2024) on the transformer blocks' 2-D weight
  matrices, AdamW as above on everything else (embeddings, LM head, norms, biases).

Optimizers has param_groups, step, zero_grad, state_dict and load_state_dict, so train.py's
loop, GradScaler (unscale_/step) and the checkpoint's 'optimizer' entry keep their shape.
Each group keeps its peak LR in group['initial_lr'] (learning_rate for AdamW's groups,
muon_lr for Muon's); set_lr_multiplier(lr_multiplier(it, config)) scales them all by the
one schedule. The state dict records the kind, and loading the other kind is a UserError.
"""
import inspect

import torch

import facts
from errors import UserError

OPTIMIZERS = ('adamw', 'muon')


def is_hidden_matrix(name, p):
    """Muon's parameters: the 2-D weights inside the transformer blocks (attention and MLP),
    not the embeddings or the LM head, whose rows are looked up one token at a time."""
    return name.startswith('transformer.h.') and p.dim() == 2


def require_muon():
    if getattr(torch.optim, 'Muon', None) is None:
        raise UserError(f"optimizer='muon' needs torch.optim.Muon (torch >= 2.9) but this is torch "
                        f"{torch.__version__}; upgrade torch or use --optimizer=adamw")


def adamw(params, weight_decay, learning_rate, betas, device_type):
    """AdamW with weight decay on the >= 2-D parameters only; fused on CUDA and CPU (one kernel
    per step instead of a dozen per tensor list: 5.0 -> 1.6 ms a step on the 4x128 bench model).
    Returns (optimizer, fused). model.GPT.configure_optimizers is this on all parameters."""
    params = list(params)
    groups = [
        {'params': [p for p in params if p.dim() >= 2], 'weight_decay': weight_decay},
        {'params': [p for p in params if p.dim() < 2], 'weight_decay': 0.0},
    ]
    groups = [g for g in groups if g['params']] or groups[:1]
    for g in groups:
        g['initial_lr'] = learning_rate
    fused = device_type in ('cuda', 'cpu') and 'fused' in inspect.signature(torch.optim.AdamW).parameters
    if fused:
        try:
            return torch.optim.AdamW(groups, lr=learning_rate, betas=betas, fused=True), True
        except RuntimeError:  # a torch without the fused kernel for this device
            pass
    return torch.optim.AdamW(groups, lr=learning_rate, betas=betas), False


class Optimizers:
    """One AdamW, or a Muon and an AdamW, stepped together."""

    def __init__(self, kind, parts, fused):
        self.kind = kind
        self.parts = parts    # {'muon': torch.optim.Muon, 'adamw': torch.optim.AdamW}, Muon first
        self.fused = fused    # the AdamW is the fused one

    @property
    def param_groups(self):
        return [g for opt in self.parts.values() for g in opt.param_groups]

    def set_lr_multiplier(self, mult):
        for g in self.param_groups:
            g['lr'] = g['initial_lr'] * mult

    def step(self):
        for opt in self.parts.values():
            opt.step()

    def zero_grad(self, set_to_none=True):
        for opt in self.parts.values():
            opt.zero_grad(set_to_none=set_to_none)

    def state_dict(self):
        """AdamW alone: torch's own state dict plus 'kind' (the shape checkpoints had before);
        Muon + AdamW: {'kind': 'muon', 'muon': ..., 'adamw': ...}."""
        if self.kind == 'adamw':
            return dict(self.parts['adamw'].state_dict(), kind='adamw')
        return dict(kind=self.kind, **{name: opt.state_dict() for name, opt in self.parts.items()})

    def load_state_dict(self, state, source='the checkpoint'):
        """Restore the state; the LRs stay those of the current config, as train.py sets them."""
        require_same_kind(recorded_kind(state), self.kind, source)
        peaks = [g['initial_lr'] for g in self.param_groups]
        if self.kind == 'adamw':
            self.parts['adamw'].load_state_dict({k: v for k, v in state.items() if k != 'kind'})
        else:
            for name, opt in self.parts.items():
                opt.load_state_dict(state[name])
        for g, peak in zip(self.param_groups, peaks):
            g['initial_lr'] = peak


def recorded_kind(state):
    """The optimizer kind an Optimizers.state_dict() was made by; a plain torch AdamW state
    dict (checkpoints from before there was a choice) is 'adamw'."""
    return state.get('kind', 'adamw')


def require_same_kind(recorded, configured, source='the checkpoint'):
    if recorded != configured:
        raise UserError(f"{source} was trained with optimizer='{recorded}' but the config says "
                        f"optimizer='{configured}'; resume with --optimizer={recorded}, or start "
                        f"with --init_from=scratch")


def build(model, kind, *, learning_rate, muon_lr, weight_decay, betas, device_type, muon_momentum=0.95):
    """The Optimizers for model. Muon's update is scaled as Moonshot's 'match_rms_adamw'
    (RMS 0.2 * lr, like AdamW's), so muon_lr and weight_decay mean what they mean for AdamW."""
    if kind not in OPTIMIZERS:
        raise UserError(f"unknown optimizer {kind!r}; use one of {', '.join(OPTIMIZERS)}")
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    parts = {}
    if kind == 'muon':
        require_muon()
        hidden = [p for n, p in named if is_hidden_matrix(n, p)]
        parts['muon'] = torch.optim.Muon([{'params': hidden, 'initial_lr': muon_lr}], lr=muon_lr,
                                         weight_decay=weight_decay, momentum=muon_momentum, nesterov=True,
                                         adjust_lr_fn='match_rms_adamw')
        named = [(n, p) for n, p in named if not is_hidden_matrix(n, p)]
    parts['adamw'], fused = adamw([p for _, p in named], weight_decay, learning_rate, betas, device_type)
    return Optimizers(kind, parts, fused)


def check_config(c):
    """One-line errors for train.py's optimizer keys, before anything is loaded."""
    if c['optimizer'] not in OPTIMIZERS:
        raise UserError(f"unknown optimizer {c['optimizer']!r}; use one of {', '.join(OPTIMIZERS)}")
    if c['optimizer'] == 'muon':
        require_muon()
        if not c['muon_lr'] > 0:
            raise UserError(f"muon_lr={c['muon_lr']} must be positive; e.g. --muon_lr=3e-3")


def build_from_config(model, config, device_type):
    """build() with its arguments from train.py's resolved config dict."""
    return build(model, config['optimizer'], learning_rate=config['learning_rate'], muon_lr=config['muon_lr'],
                 weight_decay=config['weight_decay'], betas=(config['beta1'], config['beta2']),
                 device_type=device_type)


def lr_multiplier(it, config):
    """The schedule's multiplier at iteration it: lr(it) / learning_rate, the same for every group."""
    return facts.lr_from_config(it, config) / config['learning_rate']

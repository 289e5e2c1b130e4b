"""
The GPT language model: token + learned position embeddings, pre-LayerNorm
transformer blocks, causal self-attention through PyTorch's fused
scaled_dot_product_attention, a GELU MLP, and an LM head tied to the token
embedding. Torch only, no I/O.

GPTConfig's defaults are plain GPT-2. The options after `token_vocab_size` are the
"modern" recipe's (rotary positions, RMSNorm, QK-norm, ReLU^2, untied head, zero-init
projections, logit soft-cap); each is off by default, and with all of them off the
model, its initialisation and its outputs are exactly GPT-2's.
"""
import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn as nn
from torch.nn import functional as F

import facts
import optim
from errors import UserError

# GPTConfig's modern-recipe fields, which train.py's config keys of the same names set
OPTION_KEYS = ('rope', 'norm', 'qk_norm', 'mlp_act', 'tie_embeddings', 'zero_init', 'logit_softcap')
NORMS = ('layernorm', 'rmsnorm')
MLP_ACTS = ('gelu', 'relu2')


@dataclass
class GPTConfig:
    block_size: int = 1024
    vocab_size: int = 50304        # padded to a multiple of 64 (facts.padded_vocab_size)
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0
    bias: bool = False             # biases in Linear and LayerNorm layers (GPT-2 has them)
    token_vocab_size: Optional[int] = None  # the tokenizer's vocabulary; ids from here to vocab_size are padding
    # modern-recipe options, all off (= GPT-2) by default
    rope: bool = False             # rotary position embeddings on q and k instead of a learned position table
    norm: str = 'layernorm'        # 'layernorm' (GPT-2) or 'rmsnorm' (parameter-free RMS normalisation)
    qk_norm: bool = False          # RMS-normalise q and k per head before attention (bounds the attention logits)
    mlp_act: str = 'gelu'          # MLP activation: 'gelu' (GPT-2) or 'relu2' (relu(x)^2)
    tie_embeddings: bool = True    # LM head shares the token embedding's weights (GPT-2); False: its own matrix
    zero_init: bool = False        # zero-initialise the residual output projections and the untied LM head
    logit_softcap: float = 0.0     # logits become cap * tanh(logits / cap); 0 is off

    def __post_init__(self):
        def need(ok, problem):
            if not ok:
                raise UserError(problem)
        need(self.norm in NORMS, f"unknown norm {self.norm!r}; use one of {', '.join(NORMS)}")
        need(self.mlp_act in MLP_ACTS, f"unknown mlp_act {self.mlp_act!r}; use one of {', '.join(MLP_ACTS)}")
        need(self.logit_softcap >= 0, f"logit_softcap={self.logit_softcap} is negative; use 0 (off) or a cap like 30")
        need(self.n_head > 0 and self.n_embd % self.n_head == 0,
             f"n_embd={self.n_embd} is not a multiple of n_head={self.n_head}; change one of them")
        need(not self.rope or (self.n_embd // self.n_head) % 2 == 0,
             f"rope needs an even head size, but n_embd/n_head = {self.n_embd // self.n_head}; change n_head")

    def counting_options(self):
        """The options that change facts.param_counts() and facts.flops_per_token()."""
        return dict(rope=self.rope, norm=self.norm, tie_embeddings=self.tie_embeddings)


def make_norm(config):
    if config.norm == 'rmsnorm':
        return nn.RMSNorm(config.n_embd, elementwise_affine=False)
    return nn.LayerNorm(config.n_embd, bias=config.bias)


class Rotary(nn.Module):
    """Rotary position embedding (Su et al. 2021), the half-split layout of GPT-NeoX / Llama:
    channel i is rotated with channel i + head_size/2 by an angle of position * base^(-2i/head_size),
    so q.k depends on positions only through their difference."""

    def __init__(self, head_size, block_size, base=10000.0):
        super().__init__()
        inv_freq = 1.0 / (base ** (torch.arange(0, head_size, 2, dtype=torch.float32) / head_size))
        angles = torch.outer(torch.arange(block_size, dtype=torch.float32), inv_freq)  # (T, head_size / 2)
        # not persistent: derived from the config, so checkpoints stay the same shape
        self.register_buffer('cos', angles.cos(), persistent=False)
        self.register_buffer('sin', angles.sin(), persistent=False)

    def forward(self, x):  # x: (B, n_head, T, head_size)
        T = x.size(-2)
        cos, sin = self.cos[:T].to(x.dtype), self.sin[:T].to(x.dtype)
        x1, x2 = x.chunk(2, dim=-1)
        return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)


class Dropout(nn.Module):
    """nn.Dropout, with the mask drawn from uniform_ on CPU: torch's CPU bernoulli_ is ~3.5x slower
    than uniform_ (14.5 against 4.1 ms per 1M floats, one thread), and with dropout 0.1 it was 16%
    of the demo config's step. The same Bernoulli(1 - p) mask, from another random stream."""

    def __init__(self, p):
        super().__init__()
        self.p = p

    def forward(self, x):
        if not self.training or self.p == 0.0:
            return x
        if x.device.type != 'cpu':
            return F.dropout(x, self.p, training=True)
        scaled_keep = torch.empty_like(x).uniform_().ge_(self.p).mul_(1.0 / (1.0 - self.p))  # in place: 1 buffer
        return x * scaled_keep


class CausalSelfAttention(nn.Module):

    def __init__(self, config):
        super().__init__()
        assert config.n_embd % config.n_head == 0
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)  # q, k, v in one matmul
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = Dropout(config.dropout)
        self.attn_dropout = Dropout(config.dropout)
        self.n_head = config.n_head
        self.qk_norm = config.qk_norm
        self.rotary = Rotary(config.n_embd // config.n_head, config.block_size) if config.rope else None

    def qkv(self, x):
        """q, k, v as attention sees them: (B, n_head, T, head_size), q and k normalised and rotated."""
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        if self.qk_norm:
            q, k = F.rms_norm(q, (q.size(-1),)), F.rms_norm(k, (k.size(-1),))
        if self.rotary is not None:
            q, k = self.rotary(q), self.rotary(k)
        return q, k, v

    def forward(self, x):
        B, T, C = x.size()
        q, k, v = self.qkv(x)
        if self.training and self.attn_dropout.p > 0.0 and x.device.type == 'cpu':
            y = self.attention_with_dropout(q, k, v)
        else:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_dropout.p if self.training else 0.0,
                                               is_causal=True)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))

    def attention_with_dropout(self, q, k, v):
        """Causal attention with dropout on the weights, for CPU training: SDPA's CPU kernel cannot
        drop out, so it falls back to a math path that draws its mask with bernoulli_ and guards
        the softmax against fully masked rows (no row is, here); this is ~2x faster."""
        B, H, T, D = q.shape
        future = torch.full((T, T), float('-inf'), device=q.device, dtype=q.dtype).triu(1)
        att = torch.baddbmm(future.expand(B * H, T, T), q.reshape(B * H, T, D),
                            k.reshape(B * H, T, D).transpose(1, 2), alpha=1.0 / math.sqrt(D))
        att = self.attn_dropout(torch.softmax(att, dim=-1))
        return torch.bmm(att, v.reshape(B * H, T, D)).view(B, H, T, D)


class MLP(nn.Module):

    def __init__(self, config):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.act = nn.GELU() if config.mlp_act == 'gelu' else ReLUSquared()
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = Dropout(config.dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(self.act(self.c_fc(x))))


class ReLUSquared(nn.Module):
    """relu(x)^2 (So et al. 2021, "Primer"): the modded-nanogpt speedrun's MLP activation."""

    def forward(self, x):
        return F.relu(x).square()


class Block(nn.Module):

    def __init__(self, config):
        super().__init__()
        self.ln_1 = make_norm(config)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = make_norm(config)
        self.mlp = MLP(config)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        x = x + self.mlp(self.ln_2(x))
        return x


class GPT(nn.Module):

    def __init__(self, config):
        super().__init__()
        assert config.vocab_size is not None and config.block_size is not None
        self.config = config
        modules = dict(wte=nn.Embedding(config.vocab_size, config.n_embd))
        if not config.rope:  # rotary embeddings replace the learned position table
            modules['wpe'] = nn.Embedding(config.block_size, config.n_embd)
        modules.update(drop=Dropout(config.dropout),
                       h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
                       ln_f=make_norm(config))
        self.transformer = nn.ModuleDict(modules)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.transformer.wte.weight = self.lm_head.weight  # weight tying

        # GPT-2 init: N(0, 0.02), residual projections scaled down by 1/sqrt(2 * n_layer)
        # because each block adds two of them to the residual stream
        self.apply(self._init_weights)
        for name, p in self.named_parameters():
            if name.endswith('c_proj.weight'):
                torch.nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))
        if config.zero_init:
            # each block starts as the identity and the first logits are uniform (modded-nanogpt);
            # a tied head stays as it is, since zeroing it would zero the token embedding
            for name, p in self.named_parameters():
                if name.endswith('c_proj.weight') or (name == 'lm_head.weight' and not config.tie_embeddings):
                    torch.nn.init.zeros_(p)

        # the count diagnose/ uses must be the real one
        expected = facts.param_counts(config.n_layer, config.n_embd, config.vocab_size, config.block_size,
                                      config.bias, **config.counting_options())["params"]
        assert self.get_num_params() == expected, (self.get_num_params(), expected)

    def _init_weights(self, module):
        if isinstance(module, nn.Linear):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def get_num_params(self):
        """Every parameter once (a tied LM head is the token embedding)."""
        return sum(p.numel() for p in self.parameters())

    def forward(self, idx, targets=None):
        B, T = idx.size()
        assert T <= self.config.block_size, f"sequence of {T} tokens > block_size {self.config.block_size}"
        x = self.transformer.wte(idx)
        if not self.config.rope:
            x = x + self.transformer.wpe(torch.arange(0, T, dtype=torch.long, device=idx.device))
        x = self.transformer.drop(x)
        for block in self.transformer.h:
            x = block(x)
        x = self.transformer.ln_f(x)
        if targets is not None:
            logits = self.soft_cap(self.lm_head(x))
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)).float(), targets.view(-1),
                                   ignore_index=-1)
        else:
            logits = self.soft_cap(self.lm_head(x[:, [-1], :]))  # generation only needs the last position
            loss = None
        return logits, loss

    def soft_cap(self, logits):
        """cap * tanh(logits / cap): smooth, and |logit| < cap (Gemma 2; modded-nanogpt)."""
        cap = self.config.logit_softcap
        return cap * torch.tanh(logits / cap) if cap else logits

    def configure_optimizers(self, weight_decay, learning_rate, betas, device_type):
        """AdamW; weight decay on matrices and embeddings (>= 2-D), none on biases and norms.
        Returns (optimizer, fused). optim.build() also offers Muon."""
        return optim.adamw([p for p in self.parameters() if p.requires_grad], weight_decay, learning_rate,
                           betas, device_type)

    @torch.no_grad()
    def generate(self, idx, max_new_tokens, temperature=1.0, top_k=None):
        """Extend idx (B, T) by max_new_tokens sampled tokens. temperature 0 means greedy.
        Padding ids (token_vocab_size and above) are never sampled."""
        limit = self.config.token_vocab_size or self.config.vocab_size
        for _ in range(max_new_tokens):
            idx_cond = idx if idx.size(1) <= self.config.block_size else idx[:, -self.config.block_size:]
            logits, _ = self(idx_cond)
            logits = logits[:, -1, :limit].float()
            if temperature == 0:
                idx_next = torch.argmax(logits, dim=-1, keepdim=True)
            else:
                logits = logits / temperature
                if top_k is not None and top_k > 0:
                    v, _ = torch.topk(logits, min(top_k, logits.size(-1)))
                    logits[logits < v[:, [-1]]] = -float('inf')
                probs = F.softmax(logits, dim=-1)
                idx_next = torch.multinomial(probs, num_samples=1)
            idx = torch.cat((idx, idx_next), dim=1)
        return idx

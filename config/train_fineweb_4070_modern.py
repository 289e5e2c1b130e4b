# The modern recipe at the reference run's size and token budget (config/train_fineweb_4070.py):
# the same 12 x 384 transformer, data, batch (524,288 tokens per iteration), 20000 iterations
# (10.5B tokens), dropout, weight decay and precision; what changes is what the speedrun
# community found since 2024, each change measured in bench/bench_recipe.py (CPU, 4 x 128,
# data/demo; the figures are in the comments and in the bench's output).
# Prepare the data first:  python data/fineweb_single/prepare.py
# Then:                     python train.py config/train_fineweb_4070_modern.py
# Parameters (facts.param_counts): 21.2M non-embedding as the reference (RMSNorm drops 9.6k norm
# weights, rope the 0.4M position table), the token embedding and an untied head of 50304 x 384
# = 19.3M each: 59.9M in all against 41.0M; FLOPs per token as the reference (the head is one
# matmul either way). Weights, gradients and optimizer state (fp32; 16 bytes per AdamW parameter,
# 12 per Muon one, which keeps one state tensor) take 0.87 GB against 0.66 GB; activations as
# the reference's, so it stays in 12 GB where the reference does.
out_dir = 'out-fineweb-4070-modern'
dataset = 'fineweb_single'

eval_interval = 500
eval_iters = 200
log_interval = 10
always_save_checkpoint = True

wandb_log = False  # override with --wandb_log=True
wandb_project = 'fineweb'
wandb_run_name = 'fineweb-4070-modern'

# model: the reference shape
n_layer = 12
n_head = 12
n_embd = 384
block_size = 1024
dropout = 0.1  # as the reference: 10.5B tokens are several passes over one parquet file
bias = False
# the options, each measured alone on the GPT-2 recipe in bench/bench_recipe.py
rope = True            # rotary positions instead of a learned table; the largest single architecture gain there
norm = 'rmsnorm'       # parameter-free RMSNorm: cheaper than LayerNorm, no loss there
qk_norm = True         # bounds the attention logits, which lets Muon's and AdamW's higher LRs stay stable
mlp_act = 'relu2'      # relu(x)^2: lower loss than GELU at the same FLOPs
tie_embeddings = False  # an untied head: the embedding and the head want different LRs and updates
zero_init = True       # blocks start as the identity and the first logits are uniform (ln(vocab) at step 0)
logit_softcap = 30.0   # 30 * tanh(logits / 30): stops the untied head's logits from running away early

# batch: as the reference
batch_size = 16
gradient_accumulation_steps = 32

# optimizer: Muon on the block matrices, AdamW on the embedding, head and norms (none here)
optimizer = 'muon'
muon_lr = 3e-3         # Muon's peak LR (update RMS 0.2 x lr, as AdamW's); best of 3e-3, 6e-3, 1.2e-2 in the bench
learning_rate = 3e-3   # AdamW's peak LR (embedding, head); 3e-3 beat 1e-3 in the bench
weight_decay = 0.1     # as the reference, on matrices and embeddings; Muon's is decoupled in the same units
beta2 = 0.99           # as the reference
# schedule: warmup-stable-decay, so the run can be stopped early or extended and still cooled down
lr_schedule = 'wsd'
warmup_iters = 500     # as the reference
max_iters = 20000
lr_decay_iters = 20000  # (cosine only)
decay_frac = 0.2       # the last 20% decays linearly; 0.2 was as good as 0.4 in the bench (2.238 against 2.252)
min_lr = 0.0           # WSD decays to 0 (Haegele et al. 2024)

# system: as the reference
dtype = 'float16'
compile = True

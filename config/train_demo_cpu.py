# The embedded CPU demo: a small character-level (byte) GPT on ~0.55M tokens of CPython documentation.
# Prepare the data first:  python data/fineweb_single/prepare.py --demo
# Then:                     python train.py config/train_demo_cpu.py
# Takes about 2-3 minutes on 2 CPU cores and shows a real learning curve (several evals).
out_dir = 'out-demo'
dataset = 'demo'
device = 'cpu'
dtype = 'float32'
compile = False
cpu_threads = 1  # small matmuls gain little from a second thread, and lose up to 5x when the cores are shared

eval_interval = 50
eval_iters = 20
log_interval = 10
always_save_checkpoint = False  # best.pt / ckpt.pt only when val improves (and at the end)

# model: ~0.8M parameters, context of 128 bytes
n_layer = 4
n_head = 4
n_embd = 128
block_size = 128
dropout = 0.1
bias = False

# 16 x 128 x 2 = 4096 tokens per iteration; 300 iterations = 1.2M tokens, ~2.2 epochs of the 554k-token train split
batch_size = 16
gradient_accumulation_steps = 2
max_iters = 300
lr_decay_iters = 300
learning_rate = 2e-3  # small models take a higher LR
min_lr = 2e-4
warmup_iters = 40
beta2 = 0.99  # a small batch: a longer second-moment average
weight_decay = 0.1
grad_clip = 1.0

# GPT-2 small (124M) on FineWeb, for one node of 8 GPUs (A100/H100 80GB):
# $ torchrun --standalone --nproc_per_node=8 train.py config/train_gpt2_124m_fineweb.py
# 64 x 1024 x 8 = 524,288 tokens per iteration (~0.5M, GPT-3 small's batch);
# 19073 iterations = 10B tokens (llm.c's recipe). The dataset folder must hold enough
# tokens for that: with fewer, the run repeats epochs (the `epoch` column says how many).
out_dir = 'out-gpt2-124m-fineweb'
dataset = 'fineweb_single'

eval_interval = 500
eval_iters = 50  # batches of 64 sequences, split over the ranks
log_interval = 10
always_save_checkpoint = True

wandb_log = False
wandb_project = 'fineweb'
wandb_run_name = 'gpt2-124m'

# model: GPT-2 small
n_layer = 12
n_head = 12
n_embd = 768
block_size = 1024
dropout = 0.0
bias = False

# batch: 64 per GPU, one micro-batch per GPU per iteration (gradient_accumulation_steps counts all ranks)
batch_size = 64
gradient_accumulation_steps = 8

learning_rate = 6e-4
min_lr = 6e-5
max_iters = 19073
lr_decay_iters = 19073
warmup_iters = 700
weight_decay = 0.1
beta1 = 0.9
beta2 = 0.95
grad_clip = 1.0

dtype = 'bfloat16'
compile = True

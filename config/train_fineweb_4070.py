# The reference run: a 12-layer, 384-wide GPT on one FineWeb parquet file, sized for one RTX 4070 (12 GB).
# Prepare the data first:  python data/fineweb_single/prepare.py
# Then:                     python train.py config/train_fineweb_4070.py
# 16 x 1024 x 32 = 524,288 tokens per iteration; 20000 iterations = 10.5B tokens.
out_dir = 'out-fineweb-4070'
dataset = 'fineweb_single'

eval_interval = 500
eval_iters = 200
log_interval = 10
always_save_checkpoint = True

wandb_log = False  # override with --wandb_log=True
wandb_project = 'fineweb'
wandb_run_name = 'fineweb-4070'

# model
n_layer = 12
n_head = 12
n_embd = 384
block_size = 1024
dropout = 0.1
bias = False

# batch: 16 sequences per micro-batch, 32 micro-batches per iteration
batch_size = 16
gradient_accumulation_steps = 32

# optimizer and schedule: cosine from 1e-3 to 1e-4 over 20000 iterations after 500 of warmup
learning_rate = 1e-3
min_lr = 1e-4
max_iters = 20000
lr_decay_iters = 20000
lr_schedule = 'cosine'
warmup_iters = 500
beta2 = 0.99
weight_decay = 0.1

# system: the 4070 supports bfloat16 too, but the reference run is float16 (GradScaler)
dtype = 'float16'
compile = True

# Fine-tune OpenAI's GPT-2 124M on a prepared dataset on one 12 GB card (RTX 4070), the way
# nanoGPT's finetune_shakespeare.py fine-tunes GPT-2 XL.
# Prepare the data first (GPT-2 BPE, the tokenizer GPT-2 was trained with):
#   python data/fineweb_single/prepare.py
# The weights come from the Hugging Face cache (downloaded there once, on a machine with a network:
#   hf download gpt2 config.json model.safetensors), or from a folder with --init_from=hf:PATH.
# Then:  python train.py config/finetune_fineweb_4070.py
# Requires the Hugging Face extra: pip install -r requirements-hf.txt
out_dir = 'out-finetune-fineweb-4070'
dataset = 'fineweb_single'
init_from = 'gpt2'  # n_layer, n_head, n_embd, bias and the vocabulary come from the weights: leave them unset

# evaluate often: a fine-tune improves (or starts to overfit) within a few hundred iterations
eval_interval = 50
eval_iters = 40
log_interval = 5
always_save_checkpoint = False  # best.pt / ckpt.pt only when val improves: a fine-tune can get worse

wandb_log = False
wandb_project = 'fineweb'
wandb_run_name = 'finetune-gpt2-4070'

# GPT-2's full context: 1024 positions (a shorter block_size crops the position embedding and saves memory)
block_size = 1024
# some regularisation: the pretrained model has far more capacity than a single parquet file asks of it
dropout = 0.1

# memory, estimated (not measured on a 4070): weights + gradients + AdamW moments of 124M parameters
# in fp32 are 16 bytes each, ~2 GB; with flash attention and bf16 activations a 1024-token sequence
# costs about 1 GB (~0.3 GB in the 12 blocks, the rest the 50304-wide logits and their gradient),
# so 4 sequences per micro-batch leave headroom on 12 GB. If it runs out of memory, halve batch_size
# and double gradient_accumulation_steps (the same tokens per iteration).
batch_size = 4
gradient_accumulation_steps = 16  # 4 x 1024 x 16 = 65,536 tokens per iteration

# a small constant learning rate: large steps would undo what pretraining learned (nanoGPT uses 3e-5)
learning_rate = 3e-5
min_lr = 3e-5  # unused with decay_lr=False; train.py requires min_lr <= learning_rate
decay_lr = False  # constant, no warmup: the weights are already trained
max_iters = 500  # 500 x 65,536 = 33M tokens; watch val loss and stop when it stops falling
weight_decay = 0.1
grad_clip = 1.0

dtype = 'bfloat16'  # the 4070 (Ada) has bf16: no loss scaling needed
compile = True

"""
Where the computation runs, set up in one place for train.py, sample.py and bench/: the
processes (DDP under torchrun), the device, the dtype and its autocast, torch.compile or eager.
"""
import contextlib
import os
import platform
import shutil
import time
from dataclasses import dataclass

import torch
import torch.distributed as dist

import allocator
from errors import UserError

DTYPES = ('auto', 'float32', 'bfloat16', 'float16')
PT_DTYPES = {'float32': torch.float32, 'bfloat16': torch.bfloat16, 'float16': torch.float16}


@dataclass
class Runtime:
    device: torch.device
    dtype: str                 # 'float32', 'bfloat16' or 'float16', resolved
    autocast: object           # a reusable context manager (nullcontext for float32)
    rank: int = 0
    local_rank: int = None
    world_size: int = 1

    @property
    def ddp(self):
        return self.world_size > 1 or self.local_rank is not None

    @property
    def master(self):
        return self.rank == 0

    @property
    def device_name(self):
        return device_name(self.device)


def ranks_from_env():
    """(rank, local_rank, world_size) under torchrun, else (0, None, 1)."""
    if int(os.environ.get('RANK', -1)) == -1:
        return 0, None, 1
    return tuple(int(os.environ[k]) for k in ('RANK', 'LOCAL_RANK', 'WORLD_SIZE'))


def mps_available():
    return bool(getattr(torch.backends, 'mps', None)) and torch.backends.mps.is_available()


def resolve_device(requested, local_rank=None):
    if requested == 'auto':
        requested = 'cuda' if torch.cuda.is_available() else ('mps' if mps_available() else 'cpu')
    if requested.startswith('cuda'):
        if not torch.cuda.is_available():
            raise UserError(f"device {requested!r} but CUDA is not available; use --device=cpu (or auto)")
        if local_rank is not None:
            requested = f'cuda:{local_rank}'  # one GPU per process
        if ':' in requested:
            torch.cuda.set_device(requested)
    if requested == 'mps' and not mps_available():
        raise UserError("device 'mps' but MPS is not available; use --device=cpu (or auto)")
    return torch.device(requested)


def resolve_dtype(requested, device):
    if requested not in DTYPES:
        raise UserError(f"unknown dtype {requested!r}; use one of {', '.join(DTYPES)}")
    if requested == 'auto':
        if device.type == 'cuda':
            return 'bfloat16' if torch.cuda.is_bf16_supported() else 'float16'
        return 'float32'
    if requested == 'bfloat16' and device.type == 'cuda' and not torch.cuda.is_bf16_supported():
        raise UserError(f"{torch.cuda.get_device_name()} does not support bfloat16; use --dtype=float16")
    return requested


def autocast_for(dtype, device):
    return contextlib.nullcontext() if dtype == 'float32' else torch.autocast(device.type, dtype=PT_DTYPES[dtype])


def setup(device='auto', dtype='auto', backend='auto', cpu_threads=0, ranks=None):
    """The Runtime of this process; under torchrun it joins the process group."""
    rank, local_rank, world_size = ranks or ranks_from_env()
    dev = resolve_device(device, local_rank)
    if local_rank is not None:
        be = backend if backend != 'auto' else ('nccl' if dev.type == 'cuda' else 'gloo')
        dist.init_process_group(backend=be, **({'device_id': dev} if dev.type == 'cuda' else {}))
    if cpu_threads > 0:
        torch.set_num_threads(cpu_threads)
    if dev.type == 'cpu':
        allocator.keep_freed_memory()  # activations reused, not page-faulted in anew every step
    if dev.type == 'cuda':
        torch.backends.cuda.matmul.allow_tf32 = True  # fp32 matmuls on tensor cores
        torch.backends.cudnn.allow_tf32 = True
    run_dtype = resolve_dtype(dtype, dev)
    return Runtime(dev, run_dtype, autocast_for(run_dtype, dev), rank, local_rank, world_size)


def device_name(device):
    if device.type == 'cuda':
        return torch.cuda.get_device_name(device)
    if device.type == 'mps':
        return 'Apple MPS'
    return platform.processor() or platform.machine() or 'cpu'


def compile_unavailable(device):
    """Why torch.compile cannot work here, or None."""
    if not hasattr(torch, 'compile'):
        return "this torch has no torch.compile"
    if device.type == 'mps':
        return "torch.compile does not support MPS training well"
    if device.type == 'cuda':
        try:
            import triton  # noqa: F401
        except ImportError:
            return "triton is not installed (needed by torch.compile on GPU)"
        if torch.cuda.get_device_capability(device)[0] < 7:
            return "the GPU is older than compute capability 7.0 (triton needs 7.0+)"
    if device.type == 'cpu':
        if not (shutil.which('cc') or shutil.which('gcc') or shutil.which('g++') or shutil.which('cl')):
            return "no C++ compiler found (torch.compile on CPU needs one)"
    return None


def compile_or_eager(model, rt, example_shape):
    """(model to call, None) compiled, or (model, why not) eager where compile cannot work.
    Compile errors surface at the first call, so one forward and backward runs here on zeros
    of example_shape (the RNG untouched); its gradients are cleared."""
    why = compile_unavailable(rt.device)
    if why is not None:
        return model, why
    compiled = torch.compile(model)
    try:
        with torch.random.fork_rng(devices=[rt.device.index or 0] if rt.device.type == 'cuda' else []):
            x = torch.zeros(example_shape, dtype=torch.long, device=rt.device)
            y = torch.zeros_like(x)  # not x itself: dynamo guards on aliasing
            with rt.autocast:
                _, loss = compiled(x, y)
            loss.backward()
    except Exception as e:
        text = str(e).strip()
        why = f"{type(e).__name__}: {text.splitlines()[0] if text else ''}"
        compiled = model
        torch._dynamo.reset()
    model.zero_grad(set_to_none=True)
    return compiled, why


def wrap_ddp(model, rt):
    from torch.nn.parallel import DistributedDataParallel as DDP
    return DDP(model, device_ids=[rt.local_rank] if rt.device.type == 'cuda' else None)


def peak_memory_bytes(device):
    """CUDA's max allocated, or this process's max RSS on CPU (None where unknown)."""
    if device.type == 'cuda':
        return torch.cuda.max_memory_allocated(device)
    if device.type == 'cpu':
        try:
            import resource
            import sys
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == 'darwin' else 1024)
        except ImportError:  # Windows
            return None
    return None


def cpu_matmul_flops(n=512, repeats=5):
    """A rough FLOP/s of this CPU in float32: the fastest of a few n x n matmuls (the fastest,
    so that other processes competing for the cores do not count)."""
    a, b = torch.randn(n, n, generator=torch.Generator().manual_seed(0)), torch.ones(n, n)
    best = float('inf')
    for _ in range(repeats + 1):  # the first one warms the thread pool up
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best


def leave_process_group():
    dist.barrier()  # every rank, or gloo can abort at exit
    dist.destroy_process_group()

"""Process group, device, parallel wrapping and full state dicts (DDP on CPU/GPU, FSDP on GPU).

Launched by torchrun the usual environment variables (RANK, WORLD_SIZE,
LOCAL_RANK) are set; without them this is one process. Gloo on CPU, NCCL on
GPU. FSDP (torch's ``fully_shard``) and bf16 are chosen only when CUDA is
there, so the same code runs two CPU processes in tests.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class Runtime:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    parallel: str  # none | ddp | fsdp
    autocast_dtype: torch.dtype | None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_runtime(parallel: str = "auto", precision: str = "auto") -> Runtime:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(local)
    device = torch.device("cuda", local) if cuda else torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo", timeout=timedelta(minutes=30))
    if parallel == "fsdp" and not cuda:
        raise RuntimeError("run.parallel fsdp needs CUDA GPUs; use ddp (or auto) on CPU")
    if parallel == "auto":
        parallel = "fsdp" if cuda and world > 1 else "ddp"
    if world == 1:
        parallel = "none"
    if precision == "bf16" and not cuda:
        raise RuntimeError("run.precision bf16 is for GPUs here; use fp32 (or auto) on CPU")
    dtype = torch.bfloat16 if cuda and precision in ("auto", "bf16") else None
    return Runtime(rank, world, local, device, parallel, dtype)


def wrap(model: nn.Module, runtime: Runtime) -> nn.Module:
    """DDP, or FSDP2 per transformer block (vision layers and LLM layers) then the root."""
    model.to(runtime.device)
    if runtime.parallel == "ddp":
        ids = [runtime.local_rank] if runtime.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=ids)
    if runtime.parallel == "fsdp":
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
        for block in [*model.vision.siglip.encoder.layers, *model.llm.base_model.layers]:
            fully_shard(block, mp_policy=policy)
        fully_shard(model, mp_policy=policy)
    return model


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def full_state(model: nn.Module, optimizer, *, trainable_only: bool):
    """(model state, optimizer state) with plain parameter names, gathered on CPU (FSDP too)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True, ignore_frozen_params=trainable_only)
    return get_state_dict(unwrap(model) if not _is_fsdp(model) else model, optimizer, options=options)


def load_full_state(model: nn.Module, optimizer, model_state: dict, optim_state: dict) -> None:
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

    options = StateDictOptions(full_state_dict=True, strict=False)
    target = unwrap(model) if not _is_fsdp(model) else model
    set_state_dict(target, optimizer, model_state_dict=model_state, optim_state_dict=optim_state, options=options)


def _is_fsdp(model: nn.Module) -> bool:
    return type(model).__name__.startswith("FSDP")


def barrier(runtime: Runtime) -> None:
    if runtime.distributed:
        dist.barrier()


def all_sum(value: float, runtime: Runtime) -> float:
    if not runtime.distributed:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=runtime.device)
    dist.all_reduce(t)
    return float(t.item())


def shutdown(runtime: Runtime) -> None:
    if runtime.distributed and dist.is_initialized():
        dist.destroy_process_group()

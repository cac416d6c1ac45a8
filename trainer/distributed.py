"""Process group, device, parallel wrapping, gradient sync and state dicts (DDP or FSDP2, CPU or GPU).

Launched by torchrun the usual environment variables (RANK, WORLD_SIZE,
LOCAL_RANK) are set; without them this is one process. Gloo on CPU, NCCL on
GPU. bf16 is chosen only when CUDA is there; DDP and FSDP run on either, so
the same code (FSDP included) runs two CPU processes in tests.

FSDP2 (``fully_shard``) units: each vision encoder layer, each LLM decoder
layer, then the root (embeddings, projector, norms, head). Under bf16 the
units compute with bf16 parameters and reduce gradients in fp32; vision
layers do not cast their inputs, so the rotary tables reach them in fp32.
Checkpoints of an FSDP run keep parameters and optimizer state sharded
(torch.distributed.checkpoint, each rank writes its shard); the stage's
model folder is written by rank 0 from a gathered full state dict.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path

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
        from torch.distributed.device_mesh import init_device_mesh

        mesh = init_device_mesh(runtime.device.type, (runtime.world_size,))
        shard(model, mesh, runtime.autocast_dtype)
    return model


def shard(model: nn.Module, mesh, param_dtype: torch.dtype | None) -> nn.Module:
    """``fully_shard`` the OmniVMed model's units; ``param_dtype`` None computes in the parameters' dtype."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    policy = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32)
    for layer in model.vision.layers:  # rotary tables stay fp32: the layer casts its hidden states itself
        fully_shard(layer, mesh=mesh, mp_policy=replace(policy, cast_forward_inputs=False))
    for layer in model.llm.base_model.layers:
        fully_shard(layer, mesh=mesh, mp_policy=policy)
    fully_shard(model, mesh=mesh, mp_policy=policy)
    return model


def is_fsdp(model: nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def grad_sync(model: nn.Module, enabled: bool):
    """Context for one micro-step: gradients are reduced over ranks only when ``enabled`` (the last one)."""
    if enabled:
        return contextlib.nullcontext()
    if isinstance(model, nn.parallel.DistributedDataParallel):
        return model.no_sync()
    if is_fsdp(model):
        return _fsdp_no_sync(model)
    return contextlib.nullcontext()


@contextlib.contextmanager
def _fsdp_no_sync(model):
    model.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        model.set_requires_gradient_sync(True)


def full_state(model: nn.Module, optimizer, *, trainable_only: bool):
    """(model state, optimizer state) with plain parameter names, gathered on CPU (FSDP: on rank 0 only)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True, ignore_frozen_params=trainable_only)
    return get_state_dict(unwrap(model), optimizer, options=options)


def full_model_state(model: nn.Module) -> dict:
    """Every parameter and persistent buffer, full tensors on CPU; under FSDP gathered, on rank 0 only."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(unwrap(model), options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def load_full_state(model: nn.Module, optimizer, model_state: dict, optim_state: dict) -> None:
    """Full (unsharded) states, as every rank read them from a checkpoint; FSDP keeps its own shard of each."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

    options = StateDictOptions(full_state_dict=True, strict=False)
    target = unwrap(model)
    set_state_dict(target, optimizer, model_state_dict=model_state, optim_state_dict=optim_state, options=options)


def _sharded_states(model: nn.Module, optimizer) -> dict:
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

    options = StateDictOptions(ignore_frozen_params=True)
    model_state, optim_state = get_state_dict(unwrap(model), optimizer, options=options)
    return {"model": model_state, "optimizer": optim_state}


def save_sharded(model: nn.Module, optimizer, folder: Path) -> None:
    """Collective: trained parameters and optimizer state, each rank writing its own shards (no gathering)."""
    import torch.distributed.checkpoint as dcp

    dcp.save(_sharded_states(model, optimizer), checkpoint_id=str(folder))


def load_sharded(model: nn.Module, optimizer, folder: Path) -> None:
    """Collective: read each rank's shards (any world size) into the model and the optimizer, in place."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

    states = _sharded_states(model, optimizer)
    dcp.load(states, checkpoint_id=str(folder))
    set_state_dict(
        unwrap(model), optimizer, model_state_dict=states["model"], optim_state_dict=states["optimizer"],
        options=StateDictOptions(ignore_frozen_params=True, strict=False),
    )  # fmt: skip


def parameter_digest(model: nn.Module) -> str:
    """sha256 of every full parameter and buffer by name (collective under FSDP: each rank gathers the whole
    model once, so this is for audits and tests; the same value on every rank)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    state = get_model_state_dict(unwrap(model), options=StateDictOptions(full_state_dict=is_fsdp(model)))
    return state_digest(state)


def state_digest(state: dict) -> str:
    h = hashlib.sha256()
    for name, tensor in sorted(state.items()):
        h.update(name.encode() + tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


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

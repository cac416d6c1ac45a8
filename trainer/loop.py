"""The one training loop, for every stage (stages differ by data and by which parts train).

The loss of a step is the mean over every supervised token of the step, all
micro-batches on all ranks together: each rank's summed loss is divided by
that global count (known before the forward, from the labels) and multiplied
by the world size, which DDP's and FSDP's gradient averaging divide out. So
N ranks of batch B give the gradients of one process with batch N * B.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from omnivmed.trainer.data.stream import DataStream, Position
from omnivmed.trainer.distributed import Runtime, all_sum, grad_sync
from omnivmed.trainer.metrics import Metrics
from omnivmed.trainer.model.omnivmed import supervised


@dataclass
class LoopResult:
    step: int
    position: Position
    losses: list[float]
    sample_ids: list[str]
    finished: bool


def train_loop(
    model, optimizer, scheduler, stream: DataStream, *, step: int, position: Position, total_steps: int,
    grad_accum: int, grad_clip: float, runtime: Runtime, metrics: Metrics, checkpoint, save_every: int,
    stop_after: int | None = None, record_samples: bool = False,
) -> LoopResult:  # fmt: skip
    batches = stream.batches(position)
    losses, seen_ids = [], []
    stop_at = total_steps if stop_after is None else min(total_steps, step + stop_after)
    autocast = (
        torch.autocast(runtime.device.type, dtype=runtime.autocast_dtype)
        if runtime.autocast_dtype
        else contextlib.nullcontext()
    )
    model.train()
    while step < stop_at:
        optimizer.zero_grad(set_to_none=True)
        micro_batches = []
        for _ in range(grad_accum):
            batch, position = next(batches)
            micro_batches.append(batch)
        tokens = all_sum(float(sum(int(supervised(b.labels).sum()) for b in micro_batches)), runtime)
        scale = runtime.world_size / max(tokens, 1.0)
        loss_sum = 0.0
        for micro, batch in enumerate(micro_batches):
            batch = batch.to(runtime.device)
            with grad_sync(model, micro == grad_accum - 1), autocast:
                summed, _ = model(batch)
                (summed * scale).backward()
            loss_sum += float(summed.detach())
            if record_samples:
                seen_ids += batch.sample_ids
        if grad_clip > 0:
            torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], grad_clip)
        lrs = {g["name"]: g["lr"] for g in optimizer.param_groups}
        optimizer.step()
        scheduler.step()
        step += 1
        loss = all_sum(loss_sum, runtime) / max(tokens, 1.0)
        losses.append(loss)
        metrics.step(step, loss, lrs, [b.stats for b in micro_batches])
        if step % save_every == 0 or step == stop_at:
            checkpoint(step, position)
    return LoopResult(step, position, losses, seen_ids, finished=step >= total_steps)

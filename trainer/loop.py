"""The one training loop, for every stage (stages differ by data and by which parts train)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from omnivmed.trainer.data.stream import DataStream, Position
from omnivmed.trainer.distributed import Runtime, all_sum
from omnivmed.trainer.metrics import Metrics


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
        loss_sum = tokens = 0.0
        stats = []
        for micro in range(grad_accum):
            batch, position = next(batches)
            batch = batch.to(runtime.device)
            last = micro == grad_accum - 1
            sync = model.no_sync() if hasattr(model, "no_sync") and not last else contextlib.nullcontext()
            with sync, autocast:
                summed, count = model(batch)
                # per-rank token mean; DDP averages the gradients over ranks
                (summed / count.clamp(min=1) / grad_accum).backward()
            loss_sum += float(summed.detach())
            tokens += float(count)
            stats.append(batch.stats)
            if record_samples:
                seen_ids += batch.sample_ids
        if grad_clip > 0:
            torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], grad_clip)
        lrs = {g["name"]: g["lr"] for g in optimizer.param_groups}
        optimizer.step()
        scheduler.step()
        step += 1
        loss = all_sum(loss_sum, runtime) / max(all_sum(tokens, runtime), 1.0)
        losses.append(loss)
        metrics.step(step, loss, lrs, stats)
        if step % save_every == 0 or step == stop_at:
            checkpoint(step, position)
    return LoopResult(step, position, losses, seen_ids, finished=step >= total_steps)

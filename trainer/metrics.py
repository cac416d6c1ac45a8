"""What a run reports: metrics.jsonl (one line per step), TensorBoard scalars and a progress bar.

Only rank 0 writes. ``metrics.jsonl`` keeps the deterministic numbers (loss,
learning rates, token counts) so two runs can be compared line by line;
throughput goes to TensorBoard and the progress bar only.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

from tqdm import tqdm

METRICS_NAME = "metrics.jsonl"


def kept_ratio(kept: Counter, before: Counter) -> dict[str, float]:
    return {kind: kept[kind] / before[kind] for kind in sorted(before) if before[kind]}


class Metrics:
    def __init__(self, stage_dir: Path, *, enabled: bool, tensorboard: bool, progress: bool, total: int, start: int):
        self.enabled = enabled
        self.path = Path(stage_dir) / METRICS_NAME
        self.kept, self.before = Counter(), Counter()
        self.cut = self.capped = self.unsupervised = self.samples = 0
        self._writer = self._bar = None
        self._clock = time.perf_counter()
        if not enabled:
            return
        self._truncate_after(start)
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(Path(stage_dir) / "tensorboard"), purge_step=start + 1)
        if progress:
            self._bar = tqdm(total=total, initial=start, desc=Path(stage_dir).name, unit="step", dynamic_ncols=True)

    def _truncate_after(self, step: int) -> None:
        """On resume, drop lines a crashed run wrote past its last checkpoint."""
        if not self.path.is_file():
            return
        lines = [line for line in self.path.read_text().splitlines() if json.loads(line)["step"] <= step]
        self.path.write_text("".join(line + "\n" for line in lines))

    def step(self, step: int, loss: float, lrs: dict[str, float], stats: list[dict]) -> None:
        tokens = sum(s["tokens"] for s in stats)
        kept, before = Counter(), Counter()
        for s in stats:
            kept.update(s["visual_kept"])
            before.update(s["visual_before"])
            self.cut += s["cut"]
            self.capped += s.get("capped", 0)
            self.unsupervised += s["unsupervised"]
            self.samples += s["samples"]
        self.kept.update(kept)
        self.before.update(before)
        if not self.enabled:
            return
        now = time.perf_counter()
        tokens_per_s = tokens / max(now - self._clock, 1e-9)
        self._clock = now
        ratio = kept_ratio(kept, before)
        record = {"step": step, "loss": loss, "lr": lrs, "tokens": tokens, "kept_ratio": ratio}
        with open(self.path, "a") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")
        if self._writer is not None:
            self._writer.add_scalar("train/loss", loss, step)
            self._writer.add_scalar("train/tokens_per_s", tokens_per_s, step)
            for part, lr in lrs.items():
                self._writer.add_scalar(f"lr/{part}", lr, step)
            for kind, value in ratio.items():
                self._writer.add_scalar(f"kept_ratio/{kind}", value, step)
            self._writer.add_scalar("data/cut_samples", self.cut, step)
            self._writer.add_scalar("data/visual_capped_samples", self.capped, step)
            self._writer.add_scalar("data/unsupervised_samples", self.unsupervised, step)
        if self._bar is not None:
            total = kept_ratio(Counter({"all": sum(kept.values())}), Counter({"all": sum(before.values())}))
            self._bar.set_postfix(loss=f"{loss:.4f}", tok_s=f"{tokens_per_s:.0f}", kept=f"{total.get('all', 1.0):.2f}")
            self._bar.update(1)

    def counters(self) -> dict:
        """What a checkpoint keeps so the summary of a resumed run covers the whole stage."""
        return {"samples": self.samples, "cut": self.cut, "capped": self.capped, "unsupervised": self.unsupervised,
                "kept": dict(self.kept), "before": dict(self.before)}  # fmt: skip

    def restore(self, counters: dict) -> None:
        self.samples = counters.get("samples", 0)
        self.cut = counters.get("cut", 0)
        self.capped = counters.get("capped", 0)
        self.unsupervised = counters.get("unsupervised", 0)
        self.kept, self.before = Counter(counters.get("kept", {})), Counter(counters.get("before", {}))

    def summary(self) -> dict:
        return {
            "samples": self.samples,
            "cut_by_length": self.cut,
            "visual_capped": self.capped,
            "no_supervised_token": self.unsupervised,
            "kept_ratio": kept_ratio(self.kept, self.before),
        }

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        if self._bar is not None:
            self._bar.close()

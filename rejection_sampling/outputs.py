"""What a captioning run writes into its output folder.

```
<out>/
  manifest.json         the caption Samples' shards (task video_caption), as every build writes them
  <split>/<split>-00000.arrow
  rejects.jsonl         clips kept out: unusable windows, no passing candidate, failed requests
  candidates.arrow      every candidate with every judge's scores, rationale, raw reply and tokens
  summary.json          counts, score histograms per judge and criterion, tokens per stage (from the cache)
  run.json              this run only: requests sent / cached / failed per stage, tokens paid, requests/s
  requests.sqlite       the request cache (see cache.py)
```

A run that accepted nothing writes every file but the manifest (and an earlier
run's manifest is removed when the writer opens the folder): a folder without
a manifest is not staged, so the mix keeps listing the source as missing
instead of taking a 0-sample output.

Everything except ``run.json`` is a function of the inputs, the config and
the cache, so the same cache rewrites the same bytes. No file holds an API key:
configs are recorded through ``CaptionConfig.public()``.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pyarrow as pa

from omnivmed.data.fileio import atomic_write_bytes, sha256_file, temporary_name
from omnivmed.data.manifest import InputFile, Manifest, SourceCard
from omnivmed.data.output import MANIFEST_NAME, REJECTS_NAME, OutputWriter, Reject, reject_counts, write_rejects
from omnivmed.data.schema import VIDEO_TOKEN, Provenance, Turn, VisualMeta, make_sample
from omnivmed.rejection_sampling.config import CRITERIA, CaptionConfig
from omnivmed.rejection_sampling.pipeline import CAPTION_STAGE, STATES, ClipOutcome, judge_stage
from omnivmed.rejection_sampling.prompts import CAPTION_PROMPT_VERSION, JUDGE_PROMPT_VERSION, SAMPLE_INSTRUCTION
from omnivmed.rejection_sampling.requester import Requester

CANDIDATES_NAME = "candidates.arrow"
SUMMARY_NAME = "summary.json"
RUN_NAME = "run.json"

_ATTEMPTS = pa.list_(pa.struct([("request_key", pa.string()), ("reply", pa.string()), ("error", pa.string())]))
_JUDGE = pa.struct(
    [
        ("judge", pa.string()),
        ("kind", pa.string()),
        ("model", pa.string()),
        *[(c, pa.int8()) for c in CRITERIA],
        ("rationale", pa.string()),
        ("raw_reply", pa.string()),
        ("request_key", pa.string()),
        ("error", pa.string()),
        ("attempts", _ATTEMPTS),
        ("prompt_tokens", pa.int64()),
        ("completion_tokens", pa.int64()),
    ]
)
CANDIDATE_SCHEMA = pa.schema(
    [
        pa.field("clip_id", pa.string(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("clip_state", pa.string(), nullable=False),
        pa.field("round", pa.int32(), nullable=False),
        pa.field("candidate", pa.int32(), nullable=False),
        pa.field("seed", pa.int64(), nullable=False),
        pa.field("state", pa.string(), nullable=False),
        pa.field("caption", pa.string()),
        pa.field("raw_reply", pa.string()),
        pa.field("request_key", pa.string()),
        pa.field("error", pa.string()),
        pa.field("attempts", _ATTEMPTS),
        pa.field("prompt_tokens", pa.int64()),
        pa.field("completion_tokens", pa.int64()),
        pa.field("passed", pa.bool_(), nullable=False),
        pa.field("winner", pa.bool_(), nullable=False),
        pa.field("judges", pa.list_(_JUDGE)),
    ]
)


# Who published a source: the app passes the builders' source facts; alone, the captioner knows none.
SourceCardLookup = Callable[[str], SourceCard]


def unknown_source(name: str) -> SourceCard:
    return SourceCard(name, "", "unknown", "")


@dataclass(frozen=True)
class RunOutputs:
    manifest: Manifest
    summary: dict
    run: dict
    manifest_path: Path | None = None  # None: nothing accepted, no manifest written (not staged)


def _attempt_rows(attempts) -> list[dict]:
    return [{"request_key": a.key, "reply": a.content, "error": a.error} for a in attempts]


def _tokens(attempts) -> tuple[int, int]:
    return sum(a.prompt_tokens for a in attempts), sum(a.completion_tokens for a in attempts)


def candidate_rows(outcomes: list[ClipOutcome]) -> list[dict]:
    rows = []
    for outcome in outcomes:
        for c in outcome.candidates:
            last = c.attempts[-1] if c.attempts else None
            prompt, completion = _tokens(c.attempts)
            judges = []
            for j in c.judges:
                jl = j.attempts[-1] if j.attempts else None
                jp, jc = _tokens(j.attempts)
                judges.append(
                    {
                        "judge": j.judge,
                        "kind": j.kind,
                        "model": j.model,
                        **{k: (getattr(j.scores, k) if j.scores else None) for k in CRITERIA},
                        "rationale": j.scores.rationale if j.scores else None,
                        "raw_reply": jl.content if jl else None,
                        "request_key": jl.key if jl else None,
                        "error": j.error,
                        "attempts": _attempt_rows(j.attempts),
                        "prompt_tokens": jp,
                        "completion_tokens": jc,
                    }
                )
            rows.append(
                {
                    "clip_id": outcome.clip.clip_id,
                    "split": outcome.clip.split,
                    "clip_state": outcome.state,
                    "round": c.round,
                    "candidate": c.index,
                    "seed": c.seed,
                    "state": c.state,
                    "caption": c.caption,
                    "raw_reply": last.content if last else None,
                    "request_key": last.key if last else None,
                    "error": c.error,
                    "attempts": _attempt_rows(c.attempts),
                    "prompt_tokens": prompt,
                    "completion_tokens": completion,
                    "passed": c.passed,
                    "winner": c.winner,
                    "judges": judges,
                }
            )
    return rows


def write_candidates(path: Path, outcomes: list[ClipOutcome]) -> int:
    rows = candidate_rows(outcomes)
    tmp = temporary_name(path)
    with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_stream(sink, CANDIDATE_SCHEMA) as writer:
        for start in range(0, len(rows), 256):
            writer.write_batch(pa.RecordBatch.from_pylist(rows[start : start + 256], schema=CANDIDATE_SCHEMA))
    tmp.replace(path)
    return len(rows)


def read_candidates(path: Path) -> pa.Table:
    with pa.memory_map(str(path)) as source:
        return pa.ipc.open_stream(source).read_all()


def caption_sample(outcome: ClipOutcome, config: CaptionConfig, source_card: SourceCardLookup = unknown_source):
    clip, winner = outcome.clip, outcome.winner
    card = source_card(clip.source)
    license_, homepage = card.license, card.homepage
    scores = {j.judge: {k: getattr(j.scores, k) for k in CRITERIA} for j in winner.judges}
    return make_sample(
        source=clip.source,
        split=clip.split,
        task="video_caption",
        modality="endoscopy",
        visual_kind="video",
        frames=clip.frames,
        frame_format=clip.frame_format,
        conversations=[Turn("user", f"{VIDEO_TOKEN}\n{SAMPLE_INSTRUCTION}"), Turn("assistant", winner.caption)],
        visual_meta=VisualMeta(fps=clip.fps, timestamps_s=clip.timestamps_s, frame_indices=clip.frame_indices),
        provenance=Provenance(
            raw_paths=(clip.source_path,),
            record_id=clip.clip_id,
            license=license_,
            source_url=homepage,
            fields=(
                ("caption_model", config.generator.model),
                ("caption_prompt", CAPTION_PROMPT_VERSION),
                ("judge_prompt", JUDGE_PROMPT_VERSION),
                ("round", str(winner.round)),
                ("candidate", str(winner.index)),
                ("scores", json.dumps(scores, sort_keys=True)),
                ("video", clip.video),
            ),
        ),
    )


def clip_rejects(input_rejects: list[Reject], outcomes: list[ClipOutcome], windows_name: str) -> list[Reject]:
    reasons = {"rejected": "no_passing_candidate", "failed": "request_failed", "pending": "pending_replies"}
    out = list(input_rejects)
    out += [Reject(windows_name, o.clip.clip_id, reasons[o.state], o.detail) for o in outcomes if o.state != "accepted"]
    return out


def summarize(outcomes: list[ClipOutcome], config: CaptionConfig, input_rejects: list[Reject]) -> dict:
    states = Counter(o.state for o in outcomes)
    histograms = {
        j.name: {c: {str(v): 0 for v in range(1, 6)} for c in CRITERIA} for j in config.judges
    }
    tokens: dict[str, dict[str, int]] = {}

    def add(stage, attempts):
        t = tokens.setdefault(stage, {"requests": 0, "prompt_tokens": 0, "completion_tokens": 0})
        t["requests"] += len(attempts)
        p, c = _tokens(attempts)
        t["prompt_tokens"] += p
        t["completion_tokens"] += c

    candidates = 0
    for outcome in outcomes:
        for c in outcome.candidates:
            candidates += 1
            add(CAPTION_STAGE, c.attempts)
            for j in c.judges:
                add(judge_stage(j.judge), j.attempts)
                if j.scores is not None:
                    for criterion in CRITERIA:
                        histograms[j.judge][criterion][str(getattr(j.scores, criterion))] += 1
    return {
        "clips": len(outcomes),
        **{s: states.get(s, 0) for s in STATES},
        "inputs_rejected": dict(sorted(Counter(r.reason for r in input_rejects).items())),
        "candidates": candidates,
        "acceptance": config.acceptance.describe(),
        "score_histograms": histograms,
        "tokens": dict(sorted(tokens.items())),
        "config": config.public(),
        "prompts": {"caption": CAPTION_PROMPT_VERSION, "judge": JUDGE_PROMPT_VERSION},
    }


def run_report(requester: Requester, wall_s: float, settings: dict) -> dict:
    from dataclasses import asdict

    stages = {stage: asdict(u) for stage, u in sorted(requester.usage.items())}
    return {
        "mode": requester.mode,
        "run": requester.run,
        "stages": stages,
        "sent": sum(u.sent for u in requester.usage.values()),
        "cached": sum(u.cached for u in requester.usage.values()),
        "failed": sum(u.failed for u in requester.usage.values()),
        "deferred": sum(u.deferred for u in requester.usage.values()),
        "requests_per_second": requester.requests_per_second(),
        "failures": [
            {"endpoint": k.endpoint, "base_url": k.base_url, "kind": k.kind, "error": k.error_class, "requests": n}
            for k, n in sorted(requester.failures.items(), key=lambda item: (-item[1], item[0].endpoint, item[0].kind))
        ],
        "settings": settings,
        "wall_s": round(wall_s, 3),
    }


def write_outputs(
    out: Path,
    windows_file: Path,
    outcomes: list[ClipOutcome],
    input_rejects: list[Reject],
    config: CaptionConfig,
    requester: Requester,
    wall_s: float,
    source_card: SourceCardLookup = unknown_source,
) -> RunOutputs:
    out = Path(out)
    sources = set()
    with OutputWriter(out) as writer:
        for outcome in outcomes:
            if outcome.state != "accepted":
                continue
            sample = caption_sample(outcome, config, source_card)
            writer.write(sample)
            sources.add(sample.source)
        writer.close_shards()
        rejects = clip_rejects(input_rejects, outcomes, windows_file.name)
        summary = summarize(outcomes, config, input_rejects)
        public = config.public()
        manifest = Manifest(
            name="captions-" + "+".join(sorted({o.clip.source for o in outcomes}) or ["none"]),
            sources=[source_card(name) for name in sorted(sources)],
            inputs=[InputFile(windows_file.name, windows_file.stat().st_size, sha256_file(windows_file))],
            options={
                "generator": f"{config.generator.name}={config.generator.model}",
                "judges": ",".join(f"{j.name}={j.endpoint.model}({j.kind})" for j in config.judges),
                "candidates": str(config.candidates),
                "extra_rounds": str(config.extra_rounds),
                "seed": str(config.seed),
                "acceptance": config.acceptance.describe(),
                "prompts": f"{CAPTION_PROMPT_VERSION},{JUDGE_PROMPT_VERSION}",
                "sampling": json.dumps(public["sampling"], sort_keys=True),
            },
            counters={f"clips_{s}": summary[s] for s in STATES} | {"candidates": summary["candidates"]},
        )
        # Side files first: the manifest, written last by finish(), marks the folder complete.
        write_candidates(out / CANDIDATES_NAME, outcomes)
        atomic_write_bytes(out / SUMMARY_NAME, (json.dumps(summary, indent=2, sort_keys=True) + "\n").encode())
        run = run_report(requester, wall_s, config.runtime())
        atomic_write_bytes(out / RUN_NAME, (json.dumps(run, indent=2, sort_keys=True) + "\n").encode())
        if writer.rows:
            writer.finish(manifest, rejects)
            manifest_path = out / MANIFEST_NAME
        else:  # nothing accepted: the report of why, but no manifest, so the folder is not staged
            manifest.shards = writer.close_shards()
            manifest.rejects = reject_counts(rejects)
            write_rejects(out / REJECTS_NAME, rejects)
            manifest_path = None
    return RunOutputs(manifest, summary, run, manifest_path)

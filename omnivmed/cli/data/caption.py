"""Captioning commands: caption (generate, judge, select), caption-demo (the offline demo)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from omnivmed.cli.data.common import console, err_console, fail, show_progress

ProgressOpt = Annotated[
    Optional[bool], typer.Option("--progress/--no-progress", help="Show progress bars (default: when stderr is a terminal).")
]


def warn(line: str) -> None:
    err_console.print(f"[yellow]warning:[/] {line}", highlight=False, soft_wrap=True)


def rate(rps: float) -> str:
    from omnivmed.rejection_sampling.run import format_rate

    return format_rate(rps)


def _print_result(result, out: Path) -> None:
    for report in result.ingested:
        console.print(f"batch ingest: {report.cached} replies cached, {report.already_cached} already cached, {report.failed} failed lines")
        for problem in report.problems:
            console.print(f"  [yellow]skipped[/] {problem}", highlight=False, soft_wrap=True)
    if result.plan is not None:
        plan = result.plan
        console.print(f"plan: {plan.clips} clips ({plan.inputs_rejected} windows rejected), {plan.cached} requests answered by the cache")
        now = sum(plan.to_send_now.values())
        console.print(f"  requests to send next: {now}" + "".join(f"\n    {stage}: {n}" for stage, n in plan.to_send_now.items()))
        console.print(f"  at most {plan.at_most} requests in all if every round runs (parse re-asks not counted); nothing was sent")
        return
    for endpoint, path in result.batch_files.items():
        console.print(f"batch file for {endpoint}: {path} (run it with `vllm run-batch -i {path} -o <output> --model ...`)")
    outputs = result.outputs
    summary, run = outputs.summary, outputs.run
    where = outputs.manifest_path if outputs.manifest_path is not None else f"{out} (no manifest: nothing accepted)"
    console.print(
        f"{summary['clips']} clips: {summary['accepted']} accepted, {summary['rejected']} rejected, "
        f"{summary['failed']} failed, {summary['pending']} pending ({summary['acceptance']}) -> {where}"
    )
    rps = run["requests_per_second"]
    console.print(
        f"this run: {run['sent']} requests sent, {run['cached']} from the cache, {run['failed']} failed, "
        f"{run['deferred']} deferred" + (f", {rate(rps)}" if rps else "")
    )
    for key, n in result.failed_requests.most_common():
        console.print(f"  failed requests: {n} x {key.describe()}", highlight=False, soft_wrap=True)
    for stage, usage in run["stages"].items():
        console.print(
            f"  {stage}: paid {usage['prompt_tokens']:,} prompt + {usage['completion_tokens']:,} completion tokens, "
            f"reused {usage['cached_prompt_tokens']:,} + {usage['cached_completion_tokens']:,} from the cache"
        )
    if summary["failed"]:
        console.print("  failed clips are retried by the next run (failures are recorded, never cached)")


def _exit_on_problems(result) -> None:
    """One rule for every command: failed clips, or nothing accepted, exit 1 with the top reasons."""
    problems = result.problems()
    for line in problems[:-1]:
        err_console.print(f"[bold red]error:[/] {line}", highlight=False, soft_wrap=True)
    if problems:
        fail(problems[-1], code=1)


def caption(
    windows: Annotated[Path, typer.Option("--windows", help="windows.arrow written by `omnivmed-data windows` (or its folder).")],
    out: Annotated[Path, typer.Option("--out", help="Output folder: shards, manifest.json, candidates.arrow, summary.json, the request cache.")],
    config: Annotated[
        Optional[Path], typer.Option("--config", help="YAML/JSON with generator, judges, sampling, acceptance (docs/captioning.md).")
    ] = None,
    judge: Annotated[
        bool, typer.Option("--judge/--no-judge", help="Score candidates with the config's judges (--no-judge: keep the first caption).")
    ] = True,
    candidates: Annotated[Optional[int], typer.Option("--candidates", min=1, help="N: candidates per clip and round (overrides the config).")] = None,
    rounds: Annotated[Optional[int], typer.Option("--rounds", min=0, help="R: extra rounds for clips without a passing candidate.")] = None,
    seed: Annotated[Optional[int], typer.Option("--seed", help="Base seed of the candidates (overrides the config).")] = None,
    limit: Annotated[Optional[int], typer.Option("--limit", min=1, help="Caption only the first LIMIT clips.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan and the number of requests; send nothing.")] = False,
    batch_write: Annotated[
        Optional[Path], typer.Option("--batch-write", help="Offline mode: write missing requests as OpenAI batch JSONL (one file per endpoint) here.")
    ] = None,
    batch_ingest: Annotated[
        Optional[list[Path]], typer.Option("--batch-ingest", help="Batch output JSONL (vllm run-batch) to load into the cache first; repeatable.")
    ] = None,
    keep_unannotated: Annotated[
        bool, typer.Option("--keep-unannotated", help="Also caption windows without QA lines (the text judge then has nothing to check).")
    ] = False,
    cache: Annotated[Optional[Path], typer.Option("--cache", help="Request cache file (default: OUT/requests.sqlite).")] = None,
    progress: ProgressOpt = None,
    engine: Annotated[
        str,
        typer.Option("--engine", help="Where requests are made: local (this machine) or ray (RAY_ADDRESS's cluster, else a local Ray). Same bytes either way."),
    ] = "local",
    workers: Annotated[int, typer.Option("--workers", help="Processes (local) or concurrent Ray tasks, each captioning chunks of clips.")] = 1,
    clips_per_task: Annotated[int, typer.Option("--clips-per-task", min=1, help="Clips in one chunk of work when --workers > 1 or --engine ray.")] = 16,
) -> None:
    """Caption video clips through OpenAI-compatible endpoints, score them with LLM judges, keep the best passing one."""
    from omnivmed.rejection_sampling.cache import CacheError
    from omnivmed.rejection_sampling.clip_inputs import ClipInputError
    from omnivmed.rejection_sampling.config import ConfigError, default_config, load_config
    from omnivmed.caption_inputs import builder_source_card
    from omnivmed.rejection_sampling.preflight import PreflightError
    from omnivmed.data.output import OutputBusy
    from omnivmed.rejection_sampling.run import caption_run
    from omnivmed.engines import EngineError
    from omnivmed.engines.shared_cache import spread_for

    if dry_run and batch_write is not None:
        fail("--dry-run and --batch-write exclude each other", code=2)
    show = show_progress() if progress is None else progress
    try:
        spread = spread_for(engine, workers, progress=show)
    except EngineError as err:
        fail(str(err), code=2)
    try:
        settings = load_config(config) if config else default_config()
        settings = settings.with_overrides(candidates=candidates, extra_rounds=rounds, seed=seed)
        if not judge:
            settings = settings.with_overrides(judges=())
        result = caption_run(
            windows,
            out,
            settings,
            limit=limit,
            dry_run=dry_run,
            batch_write=batch_write,
            batch_ingest=tuple(batch_ingest or ()),
            require_qa=not keep_unannotated,
            cache_path=cache,
            progress=show,
            source_card=builder_source_card,
            warn=warn,
            spread=spread,
            clips_per_task=clips_per_task,
        )
    except (ConfigError, ClipInputError, CacheError, OutputBusy, EngineError) as err:
        fail(str(err), code=2)
    except PreflightError as err:
        fail(str(err), code=1)
    _print_result(result, out)
    _exit_on_problems(result)


def caption_demo(
    out: Annotated[Path, typer.Option("--out", help="Output folder of the demo.")] = Path("out/caption-demo"),
    limit: Annotated[Optional[int], typer.Option("--limit", min=1, help="Caption only the first LIMIT clips.")] = None,
    progress: ProgressOpt = None,
) -> None:
    """Run the whole captioning loop offline on the embedded clips with a DEMO model (SmolLM2-135M-Instruct, text-only)."""
    from omnivmed.caption_demo import run_demo

    console.print("demo model: SmolLM2-135M-Instruct, text-only; it does not see the frames, its captions and scores mean nothing")
    try:
        result = run_demo(out, limit=limit, progress=show_progress() if progress is None else progress, say=_say)
    except FileNotFoundError as err:
        fail(str(err), code=2)
    _print_result(result, out / "captions")
    # The demo model's verdicts mean nothing: a demo that accepted no clip is said, not an error.
    for line in result.problems():
        if result.outputs.summary["failed"]:
            fail(line, code=1)
        warn(line)


def _say(line: str) -> None:
    console.print(line, highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command()(caption)
    app.command("caption-demo")(caption_demo)

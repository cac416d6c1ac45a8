"""The ``omnivmed-eval`` command line: parse, call :mod:`omnivmed.eval_pipeline`, print.

argparse, and every heavy import inside the command that needs it, so
``omnivmed-eval --help`` starts fast. Bad input ends in one line on stderr
naming the file and the reason, exit status 2; no traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

BENCHMARK_HELP = "benchmark(s), comma separated: vqa_rad, slake, pathvqa, m3d_vqa, cholec80_vqa, endovis18_vqa, psiava_vqa, or all"


def _say(text: str) -> None:
    print(text, flush=True)


def _note(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _gt_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--gt",
        action="append",
        default=[],
        metavar="[NAME=]PATH",
        help="ground truth: a manifest, a folder with manifest.json, or a raw source folder (built now); NAME=PATH per benchmark; repeatable",
    )
    parser.add_argument("--staged", type=Path, help="staged root: ROOT/<source>/manifest.json for every benchmark without --gt")


def _predict_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("predictions (exactly one source)")
    group.add_argument("--predictions", type=Path, help="an answer file: LLaVA-Med's {\"question_id\", \"text\"} lines or predictions.jsonl")
    group.add_argument("--endpoint", help="OpenAI-compatible base URL (e.g. http://127.0.0.1:8000/v1)")
    group.add_argument("--model", help="with --endpoint: the model name it serves; alone: a trained omnivmed model folder (OUT/stageN/model), generating locally")
    group.add_argument("--baseline", choices=("majority", "blind"), help="majority: the train split's most common answer; blind: a text-only LLM without the image (--endpoint, or the offline SmolLM2 demo model)")
    group.add_argument("--prompt", default="llava-med", help="prompt template: plain, llava-med (default), medevalkit, lmms-eval, multimedeval")
    group.add_argument("--max-tokens", type=int, default=128, help="answer length limit (default 128)")
    group.add_argument("--max-frames", type=int, default=8, help="frames sent per clip or volume, evenly subsampled (default 8)")
    group.add_argument("--concurrency", type=int, default=8, help="requests in flight (default 8)")
    group.add_argument("--timeout", type=float, default=120.0, help="seconds per request (default 120)")
    group.add_argument("--retries", type=int, default=5, help="retries on 5xx, 429, timeouts and dropped connections (default 5)")
    group.add_argument("--backoff", type=float, default=1.0, help="base of the jittered exponential backoff, seconds (default 1)")
    group.add_argument("--cache", type=Path, help="request cache (default OUT/requests.sqlite)")
    group.add_argument("--engine", default="local", help="with --endpoint: local (this machine) or ray (RAY_ADDRESS's cluster, else a local Ray); same predictions either way")
    group.add_argument("--workers", type=int, default=1, help="with --endpoint: processes (local) or concurrent Ray tasks, each asking chunks of 64 questions (default 1)")
    group.add_argument("--train-gt", type=Path, help="majority baseline: where the train split is (default: the ground truth's manifest)")


def _score_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--protocol", default="all", help="protocol(s), comma separated, or all (default); `omnivmed-eval protocols` lists them")
    parser.add_argument("--candidates", type=Path, help="JSON list of candidate answers for llava-med's open accuracy (order kept)")
    judge = parser.add_argument_group("LLM judge (MedEvalKit-style 1/0 verdict with a rationale per answer, cached)")
    judge.add_argument("--judge", metavar="URL", help="OpenAI-compatible endpoint of the judge model")
    judge.add_argument("--judge-model", metavar="NAME", help="the judge's model name")
    judge.add_argument("--judge-concurrency", type=int, default=8, help="judge requests in flight (default 8)")
    judge.add_argument("--judge-retries", type=int, default=5, help="judge retries on 5xx, 429, timeouts (default 5)")
    judge.add_argument("--judge-cache", type=Path, help="the judge's request cache (default OUT/requests.sqlite)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="omnivmed-eval",
        description="Evaluate on the OmniV-Med benchmarks: predictions, every peer's scoring protocol side by side, overlap, report.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("predict", help="write OUT/<benchmark>/predictions.jsonl from an answer file, an endpoint or a baseline")
    p.add_argument("--benchmark", "--benchmarks", dest="benchmark", required=True, help=BENCHMARK_HELP)
    _gt_options(p)
    _predict_options(p)
    p.add_argument("--out", type=Path, required=True, help="output folder")

    s = sub.add_parser("score", help="score one benchmark's predictions with one or more protocols")
    s.add_argument("--benchmark", required=True, help="one benchmark")
    _gt_options(s)
    s.add_argument("--predictions", type=Path, required=True, help="predictions.jsonl or a LLaVA-Med answer file")
    _score_options(s)
    s.add_argument("--out", type=Path, required=True, help="folder of scores.json, breakdowns.json, matching.json (merged per benchmark)")

    r = sub.add_parser("run", help="predict + score, for several benchmarks and protocols")
    r.add_argument("--benchmark", "--benchmarks", dest="benchmark", required=True, help=BENCHMARK_HELP)
    _gt_options(r)
    _predict_options(r)
    _score_options(r)
    r.add_argument("--out", type=Path, required=True, help="output folder")

    o = sub.add_parser("overlap", help="frames and questions of each benchmark's test split found in a training set")
    o.add_argument("--train", type=Path, required=True, help="the training set's manifest (a mix)")
    o.add_argument("--benchmarks", "--benchmark", dest="benchmark", required=True, help=BENCHMARK_HELP)
    _gt_options(o)
    o.add_argument("--out", type=Path, required=True, help="folder of overlap.json")

    rep = sub.add_parser("report", help="report.md: the paper's tables, the protocol-by-protocol table, overlap, a figure")
    rep.add_argument("--runs", nargs="+", type=Path, required=True, help="score folders (one per model or baseline)")
    rep.add_argument("--overlap", type=Path, help="overlap.json written by `omnivmed-eval overlap`")
    rep.add_argument("--out", type=Path, required=True, help="folder of report.md and scores.png")

    sub.add_parser("protocols", help="list the scoring protocols: source, rules, known defects")

    d = sub.add_parser("demo", help="offline demo on the embedded default: majority and blind baselines, every protocol, overlap, report")
    d.add_argument("--out", type=Path, default=Path("out/eval-demo"), help="output folder (default out/eval-demo)")
    d.add_argument("--embedded", type=Path, default=Path("out/omnivmed-embedded"), help="the embedded default (built when missing)")
    return parser


def _predict_options_from(args):
    from omnivmed.eval_pipeline import PredictOptions

    return PredictOptions(
        predictions=args.predictions,
        endpoint=args.endpoint,
        model=args.model,
        baseline=args.baseline,
        template=args.prompt,
        max_tokens=args.max_tokens,
        max_frames=args.max_frames,
        concurrency=args.concurrency,
        timeout_s=args.timeout,
        max_retries=args.retries,
        backoff_s=args.backoff,
        cache=args.cache,
        train_gt=args.train_gt,
        engine=args.engine,
        workers=args.workers,
    )


def _print_predictions(results) -> int:
    failed = 0
    for r in results:
        o = r.outcome
        line = f"{r.benchmark}: {len(o.predictions)}/{len(r.records)} answered -> {r.path}"
        if o.sent or o.cached:
            line += f" ({o.sent} requests sent, {o.cached} from the cache)"
        _say(line)
        if r.match is not None:
            _say(f"  {r.match.line()}")
        elif o.failures:
            failed += len(o.failures)
            _say(f"  {len(o.failures)} questions failed (recorded in the cache; a re-run asks only for these), e.g. {next(iter(o.failures.items()))}")
    return failed


def cmd_predict(args) -> int:
    from omnivmed.eval_ground_truth import parse_gt
    from omnivmed.eval_pipeline import predict
    from omnivmed.evaluation.benchmarks import parse_benchmarks

    benchmarks = parse_benchmarks(args.benchmark)
    results = predict(benchmarks, parse_gt(args.gt, benchmarks), args.staged, _predict_options_from(args), args.out, _note)
    return 3 if _print_predictions(results) else 0


def _judge(args):
    from omnivmed.eval_pipeline import judge_settings

    return judge_settings(args.judge, args.judge_model, concurrency=args.judge_concurrency, max_retries=args.judge_retries)


def _print_scores(benchmark: str, result) -> int:
    """Print one benchmark's scores; 3 when the judge left answers unjudged (then nothing was scored)."""
    from omnivmed.evaluation.scoring import table_lines

    _say(f"{benchmark}: {result.match.line()}")
    judged = result.judged
    if judged is not None:
        _say(f"  judge: {judged.sent} verdicts asked, {judged.cached} from the cache, {judged.unreadable} unreadable (counted wrong)")
        if judged.failed:
            _note(f"omnivmed-eval: {judged.failed} judge requests failed; not scoring {benchmark} (run again: cached verdicts are not asked again)")
            return 3
    for line in table_lines({benchmark: result.scores}):
        _say(line)
    return 0


def cmd_score(args) -> int:
    from omnivmed.eval_ground_truth import load_ground_truth, parse_gt
    from omnivmed.eval_pipeline import read_candidates, resolve_protocols, score
    from omnivmed.evaluation.benchmarks import get_benchmark

    benchmark = get_benchmark(args.benchmark)
    protocols = resolve_protocols(args.protocol)
    candidates = read_candidates(args.candidates)
    gts = parse_gt(args.gt, [benchmark])
    _, records = load_ground_truth(benchmark, gts.get(benchmark.name), args.staged, args.out)
    result = score(benchmark, records, args.predictions, protocols, candidates, args.out, _judge(args), args.judge_cache)
    if _print_scores(benchmark.name, result):
        return 3
    _say(f"-> {result.scores_path}")
    return 0


def cmd_run(args) -> int:
    from omnivmed.eval_ground_truth import parse_gt
    from omnivmed.eval_pipeline import predict, read_candidates, resolve_protocols, score
    from omnivmed.evaluation.benchmarks import get_benchmark, parse_benchmarks

    benchmarks = parse_benchmarks(args.benchmark)
    protocols = resolve_protocols(args.protocol)
    candidates = read_candidates(args.candidates)
    judge = _judge(args)
    results = predict(benchmarks, parse_gt(args.gt, benchmarks), args.staged, _predict_options_from(args), args.out, _note)
    failed = _print_predictions(results)
    if failed:
        _note(f"omnivmed-eval: {failed} questions have no answer yet; not scoring partial predictions (run again to retry them)")
        return 3
    code = 0
    for r in results:
        code |= _print_scores(r.benchmark, score(get_benchmark(r.benchmark), r.records, r.path, protocols, candidates, args.out, judge, args.judge_cache))
    _say(f"-> {args.out / 'scores.json'}")
    return code


def cmd_overlap(args) -> int:
    from omnivmed.eval_ground_truth import parse_gt
    from omnivmed.eval_pipeline import overlap, overlap_lines
    from omnivmed.evaluation.benchmarks import parse_benchmarks

    benchmarks = parse_benchmarks(args.benchmark)
    result = overlap(args.train, benchmarks, parse_gt(args.gt, benchmarks), args.staged, args.out, _note)
    for line in overlap_lines(result):
        _say(line)
    _say(f"-> {args.out / 'overlap.json'}")
    return 0


def cmd_report(args) -> int:
    from omnivmed.eval_pipeline import report

    _say(f"-> {report(args.runs, args.overlap, args.out)}")
    return 0


def cmd_protocols(args) -> int:
    from omnivmed.eval_pipeline import resolve_protocols

    for protocol in resolve_protocols("all"):
        _say(f"{protocol.name}: {protocol.source}")
        for line in protocol.rules.strip().splitlines():
            _say(f"    {line}")
        for defect in protocol.defects:
            _say(f"    defect kept: {defect}")
    return 0


def cmd_demo(args) -> int:
    from omnivmed.eval_demo import run_demo

    for line in run_demo(args.out, args.embedded, note=_note):
        _say(line)
    return 0


COMMANDS = {
    "predict": cmd_predict,
    "score": cmd_score,
    "run": cmd_run,
    "overlap": cmd_overlap,
    "report": cmd_report,
    "protocols": cmd_protocols,
    "demo": cmd_demo,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from omnivmed.evaluation.errors import EvalInputError

    try:
        code = COMMANDS[args.command](args)
    except EvalInputError as err:
        print(f"omnivmed-eval: error: {str(err).splitlines()[0] if str(err) else type(err).__name__}", file=sys.stderr)
        code = 2
    except OSError as err:  # a folder that cannot be written, a disk that is full
        where = err.filename or "omnivmed-eval"
        print(f"omnivmed-eval: error: {where}: {err.strerror or err}", file=sys.stderr)
        code = 2
    except KeyboardInterrupt:
        print("omnivmed-eval: interrupted (replies received so far are cached)", file=sys.stderr)
        code = 130
    if argv is None:
        sys.exit(code)
    return code


if __name__ == "__main__":
    main()

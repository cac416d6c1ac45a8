"""What ``omnivmed-eval`` does, one function per command: predict, score, run, overlap, report.

The command line parses and prints; everything else is here, so the demo and
the tests call the same code.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from omnivmed.evaluation.benchmarks import Benchmark, GtRecord, read_ground_truth
from omnivmed.evaluation.errors import EvalInputError
from omnivmed.evaluation.predictions import MatchReport, match_predictions, read_predictions
from omnivmed.evaluation.predictors import PredictOutcome, requests_for
from omnivmed.evaluation.prompts import DEFAULT_TEMPLATE, get_template
from omnivmed.eval_ground_truth import load_ground_truth

Note = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


@dataclass
class PredictOptions:
    """Where predictions come from: exactly one of an answer file, an endpoint, a baseline, a local model."""

    predictions: Path | None = None
    endpoint: str | None = None
    model: str | None = None
    baseline: str | None = None  # majority, blind
    template: str = DEFAULT_TEMPLATE
    max_tokens: int = 128
    max_frames: int = 8
    concurrency: int = 8
    timeout_s: float = 120.0
    max_retries: int = 5
    backoff_s: float = 1.0
    cache: Path | None = None
    train_gt: Path | None = None  # the majority baseline's train split (default: the ground truth's manifest)
    engine: str = "local"  # endpoint predictions: where requests are made (omnivmed.engines)
    workers: int = 1

    def check(self) -> None:
        if self.baseline not in (None, "majority", "blind"):
            raise EvalInputError(f"--baseline {self.baseline}: choose majority or blind")
        chosen = [x for x in ("predictions", "endpoint", "baseline") if getattr(self, x)]
        if self.baseline == "blind" and self.endpoint:
            chosen.remove("endpoint")
        if self.model and not chosen:
            chosen = ["model"]
        if len(chosen) != 1:
            raise EvalInputError(
                "predict from exactly one of --predictions FILE, --endpoint URL --model NAME, --baseline majority|blind, --model DIR"
                + (f" (got {', '.join('--' + c for c in chosen)})" if chosen else "")
            )
        if self.endpoint and not self.model:
            raise EvalInputError(f"--endpoint {self.endpoint}: name the model it serves with --model NAME")
        if self.model and not self.endpoint and chosen != ["model"]:
            raise EvalInputError(f"--model {self.model}: a model name goes with --endpoint URL; alone, --model is a local model folder")
        from omnivmed.engines import EngineError, check_engine

        try:
            check_engine(self.engine, self.workers)
        except EngineError as err:
            raise EvalInputError(str(err)) from None
        get_template(self.template)


@dataclass
class PredictResult:
    benchmark: str
    manifest: Path
    records: list[GtRecord]
    outcome: PredictOutcome
    path: Path
    match: MatchReport | None = None  # for answer files


def demo_responder():
    """SmolLM2-135M-Instruct's responder, on one thread (a 135M model generating one answer at a time
    is bound by per-token overhead; a second thread only contends with everything else on the machine)."""
    import torch

    from omnivmed.rejection_sampling.demo_model import DemoModel

    torch.set_num_threads(1)
    return DemoModel().responder


@dataclass
class DemoServer:
    """The demo model behind a loopback endpoint, started on first need and kept for the session."""

    factory: Callable[[], Callable] = demo_responder
    server: object = None

    def base_url(self, note: Note) -> str:
        if self.server is None:
            from omnivmed.rejection_sampling.server import LocalServer

            note("loading the demo model (SmolLM2-135M-Instruct, text-only; about 20 s)")
            self.server = LocalServer(self.factory()).start()
        return self.server.base_url

    def close(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None


@dataclass
class Predicting:
    """One predict session over several benchmarks (the demo server and caches are shared)."""

    options: PredictOptions
    out: Path
    note: Note = _quiet
    demo: DemoServer = field(default_factory=DemoServer)

    def info(self) -> dict:
        from omnivmed.eval_predict import majority_info

        o = self.options
        if o.baseline == "majority":
            return majority_info()
        if o.predictions:
            return {"predictor": "file", "model": str(o.predictions), "prompt_version": ""}
        return {
            "predictor": "blind" if o.baseline == "blind" else "endpoint",
            "model": o.model or _demo_model_name(),
            "prompt_version": get_template(o.template).version + ("+blind" if o.baseline == "blind" else ""),
            "max_tokens": o.max_tokens,
            "max_frames": o.max_frames,
        }

    def _endpoint(self, images: bool):
        from omnivmed.eval_predict import BLIND_SYSTEM, CACHE_NAME, EndpointPredictor, EndpointSettings

        o = self.options
        settings = EndpointSettings(
            base_url=o.endpoint or "http://127.0.0.1:9/v1",
            model=o.model or _demo_model_name(),
            api_key_env="OPENAI_API_KEY",
            concurrency=o.concurrency if o.endpoint else 1,
            timeout_s=o.timeout_s if o.endpoint else 600.0,
            max_retries=o.max_retries,
            backoff_s=o.backoff_s,
            max_tokens=o.max_tokens,
            max_frames=o.max_frames,
        )
        from omnivmed.engines.shared_cache import spread_for

        spread = spread_for(o.engine, o.workers) if o.endpoint else None  # the offline demo model serves one process
        return EndpointPredictor(settings, o.cache or self.out / CACHE_NAME, images=images, system=None if images else BLIND_SYSTEM, spread=spread)

    def predict(self, benchmark: Benchmark, manifest: Path, records: list[GtRecord]) -> PredictResult:
        from omnivmed.eval_predict import FilePredictor, LocalModelPredictor, MajorityPredictor, record_run, save_predictions

        o = self.options
        template = get_template(o.template)
        requests = requests_for(benchmark, records, template)
        match = None
        if o.predictions:
            predictor = FilePredictor(o.predictions)
            outcome = predictor.predict(requests)
            match = predictor.report
        elif o.baseline == "majority":
            train = read_ground_truth(benchmark, o.train_gt or manifest, split="train")
            outcome = MajorityPredictor(train).predict(requests)
        elif o.baseline == "blind" or o.endpoint:
            predictor = self._endpoint(images=o.baseline != "blind")
            if o.baseline == "blind" and not o.endpoint:
                missing = predictor.missing(requests)
                if missing:
                    self.note(f"{benchmark.name}: {missing} questions not in the cache")
                    predictor = predictor.with_base_url(self.demo.base_url(self.note))
            outcome = predictor.predict(requests)
        else:  # --model DIR: a trained omnivmed model generating here
            outcome = LocalModelPredictor(Path(o.model)).predict(requests)
        path = save_predictions(self.out, benchmark.name, outcome, records)
        record_run(
            self.out,
            self.info(),
            benchmark.name,
            {
                "ground_truth": str(manifest),
                "split": records[0].split,
                "questions": len(records),
                "answered": len(outcome.predictions),
                "failed": len(outcome.failures),
                "sent": outcome.sent,
                "cached": outcome.cached,
            },
        )
        return PredictResult(benchmark.name, manifest, records, outcome, path, match)

    def close(self) -> None:
        self.demo.close()


def _demo_model_name() -> str:
    from omnivmed.rejection_sampling.demo_model import DEMO_MODEL_NAME

    return DEMO_MODEL_NAME


def predict(
    benchmarks: Sequence[Benchmark], gts: dict[str, Path], staged: Path | None, options: PredictOptions, out: Path, note: Note = _quiet, demo: DemoServer | None = None
) -> list[PredictResult]:
    options.check()
    if options.model and not (options.endpoint or options.baseline or options.predictions):
        from omnivmed.eval_predict import LocalModelPredictor

        LocalModelPredictor(Path(options.model))
    session = Predicting(options, Path(out), note, demo or DemoServer())
    results = []
    try:
        for benchmark in benchmarks:
            manifest, records = load_ground_truth(benchmark, gts.get(benchmark.name), staged, Path(out))
            results.append(session.predict(benchmark, manifest, records))
    finally:
        if demo is None:
            session.close()
    return results


def resolve_protocols(text: str | None) -> list:
    """'llava-med,omnivmed' -> Protocol objects; 'all' (or nothing) -> every registered one."""
    try:
        from omnivmed.evaluation.protocols import get_protocol, protocol_names
    except ImportError:
        raise EvalInputError("no scoring protocol is installed (omnivmed.evaluation.protocols is missing)") from None
    names = [n.strip() for n in (text or "all").split(",") if n.strip()]
    if names in (["all"], []):
        names = list(protocol_names())
    protocols = []
    for name in names:
        try:
            protocols.append(get_protocol(name))
        except (KeyError, ValueError):
            raise EvalInputError(f"--protocol {name}: unknown protocol; known: {', '.join(protocol_names())}") from None
    return protocols


def read_candidates(path: Path | None) -> list[str] | None:
    if path is None:
        return None
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise EvalInputError(f"{path}: no such candidate file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise EvalInputError(f"{path}: cannot read ({getattr(err, 'strerror', None) or 'not UTF-8 text'})") from None
    except json.JSONDecodeError as err:
        raise EvalInputError(f"{path}: not valid JSON ({err.msg} at line {err.lineno})") from None
    if not isinstance(data, list) or not all(isinstance(x, str) for x in data):
        raise EvalInputError(f"{path}: expected a JSON list of answer strings")
    return data


@dataclass
class ScoreResult:
    benchmark: str
    scores: dict  # protocol -> metrics (empty when the judge left answers unjudged: nothing was scored)
    match: MatchReport
    scores_path: Path | None
    judged: object = None  # eval_judge.Judged when --judge was given


def judge_settings(url: str | None, model: str | None, *, concurrency: int = 8, timeout_s: float = 120.0, max_retries: int = 5, backoff_s: float = 1.0):
    """The judge's endpoint (``--judge URL --judge-model NAME``), or None without --judge."""
    if url is None:
        if model is not None:
            raise EvalInputError(f"--judge-model {model}: give the judge's endpoint with --judge URL")
        return None
    if not model:
        raise EvalInputError(f"--judge {url}: name the judge's model with --judge-model NAME")
    from omnivmed.eval_predict import EndpointSettings

    return EndpointSettings(base_url=url, model=model, concurrency=concurrency, timeout_s=timeout_s, max_retries=max_retries, backoff_s=backoff_s, max_tokens=256)


def score(
    benchmark: Benchmark,
    records: Sequence[GtRecord],
    predictions: Path,
    protocols: Sequence,
    candidates: Sequence[str] | None,
    out: Path,
    judge=None,
    judge_cache: Path | None = None,
) -> ScoreResult:
    """Match, (judge,) score with every protocol, merge into ``out``. ``judge``: :func:`judge_settings`."""
    from omnivmed.evaluation.scoring import save_scores, score_items

    matched = match_predictions(records, read_predictions(predictions))
    if not matched.report.matched:
        raise EvalInputError(
            f"{predictions}: none of its {matched.report.predictions} predictions matches a {benchmark.name} question id "
            f"or sample id (e.g. {', '.join(matched.report.unmatched_ids)}; ours look like {records[0].question_id!r})"
        )
    items, judged = matched.items, None
    if judge is not None:
        from omnivmed.eval_judge import judge_items
        from omnivmed.eval_predict import CACHE_NAME

        judged = judge_items(benchmark.name, items, judge, judge_cache or Path(out) / CACHE_NAME, out)
        if judged.failed:
            return ScoreResult(benchmark.name, {}, matched.report, None, judged)
        items = judged.items
    result = score_items(items, protocols, candidates)
    matching = {**matched.report.to_dict(), "predictions_file": str(predictions)}
    if judged is not None:
        matching["judge"] = {"model": judge.model, "unreadable": judged.unreadable, "sent": judged.sent, "cached": judged.cached}
    path = save_scores(out, benchmark.name, result, matching)
    return ScoreResult(benchmark.name, result.overall, matched.report, path, judged)


def overlap(train: Path, benchmarks: Sequence[Benchmark], gts: dict[str, Path], staged: Path | None, out: Path, note: Note = _quiet) -> dict:
    """Test frames and questions of each benchmark found in ``train`` and in its own train split; writes overlap.json."""
    from omnivmed.data.fileio import atomic_write_bytes
    from omnivmed.evaluation import overlap as ov
    from omnivmed.evaluation.benchmarks import manifest_file
    from omnivmed.eval_ground_truth import gt_manifest

    train_path = manifest_file(train)
    hasher = ov.FrameHasher()
    train_entries = list(ov.manifest_entries(train_path, hasher))
    note(f"training set {train_path}: {len(train_entries)} samples hashed")
    result = {"train": str(train_path), "method": ov.method(), "benchmarks": {}}
    for benchmark in benchmarks:
        manifest = gt_manifest(benchmark, gts.get(benchmark.name), staged, Path(out))
        records = read_ground_truth(benchmark, manifest)
        test = ov.record_entries(records, hasher)
        own = list(ov.manifest_entries(manifest, hasher, source=benchmark.source, splits=("train",)))
        result["benchmarks"][benchmark.name] = {
            "split": benchmark.split,
            "ground_truth": str(manifest),
            "train_mix": ov.overlap(test, train_entries, str(train_path)).to_dict(),
            "own_train": ov.overlap(test, own, f"{benchmark.source} train split").to_dict() if own else None,
        }
    Path(out).mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(Path(out) / "overlap.json", (json.dumps(result, indent=2, sort_keys=True) + "\n").encode())
    return result


def overlap_lines(result: dict) -> list[str]:
    m = result["method"]
    lines = [f"training set: {result['train']}; perceptual = pHash within {m['perceptual_threshold_bits']} of 64 bits"]
    for name, entry in result["benchmarks"].items():
        for label, counts in (("training set", entry["train_mix"]), ("own train split", entry["own_train"])):
            if counts is None:
                lines.append(f"{name}: no train split in {entry['ground_truth']}")
                continue
            lines.append(
                f"{name} {entry['split']} vs {label}: {counts['frames_shared_exact']}/{counts['test_frames']} test frames shared "
                f"(exact), {counts['frames_shared_perceptual']} (perceptual); {counts['questions_with_shared_frame_exact']}/"
                f"{counts['test_questions']} questions on a shared frame; {counts['questions_shared']} question texts shared; "
                f"{counts['image_question_shared']} image+question pairs shared ({counts['image_question_answer_shared']} with the same answer)"
            )
    return lines


def report(runs: Sequence[Path], overlap_file: Path | None, out: Path) -> Path:
    from omnivmed.data.fileio import atomic_write_bytes, write_if_changed
    from omnivmed.evaluation.report import FIGURE_NAME, REPORT_NAME, Run, figure_png, render

    loaded = [Run.load(Path(r)) for r in runs]
    overlap_data = None
    if overlap_file is not None:
        try:
            overlap_data = json.loads(Path(overlap_file).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise EvalInputError(f"{overlap_file}: no such overlap file (write it with `omnivmed-eval overlap`)") from None
        except json.JSONDecodeError as err:
            raise EvalInputError(f"{overlap_file}: not valid JSON ({err.msg})") from None
        if not isinstance(overlap_data, dict) or "benchmarks" not in overlap_data:
            raise EvalInputError(f"{overlap_file}: not an overlap.json (no 'benchmarks')")
    out = Path(out)
    png = figure_png(loaded)
    if png is not None:
        write_if_changed(out / FIGURE_NAME, png)
    path = out / REPORT_NAME
    atomic_write_bytes(path, render(loaded, overlap_data, FIGURE_NAME if png is not None else None).encode())
    return path

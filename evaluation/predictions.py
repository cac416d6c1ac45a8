"""Predictions: one file format, read from any answer file, matched to ground truth without silent drops.

``predictions.jsonl``, one JSON object per line::

    {"question_id": "10", "text": "yes", "sample_id": "ef00d8...", "prompt": "Is there ...? Please choose ..."}

``question_id`` and ``text`` are what LLaVA-Med's ``model_vqa`` answer files
hold (its extra keys, ``answer_id``, ``model_id``, ``metadata``, are ignored),
so such a file is read as it is. A JSON array of the same objects is read too.

Matching: a prediction's ``question_id`` is looked up among the benchmark's
source question ids, then among our sample ids (its ``sample_id`` too). Every
question without a prediction is scored as an empty answer and counted as
missing; every prediction that matches no question is counted as unmatched;
a second prediction for a question is counted (the first one is scored).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from omnivmed.data.fileio import atomic_write_bytes
from omnivmed.evaluation.benchmarks import GtRecord
from omnivmed.evaluation.errors import EvalInputError
from omnivmed.evaluation.items import EvalItem

PREDICTIONS_NAME = "predictions.jsonl"
EXAMPLES = 5  # ids quoted in a match report


@dataclass(frozen=True)
class Prediction:
    question_id: str
    text: str
    sample_id: str = ""
    prompt: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False, sort_keys=True)


def _id_text(value, where: str, name: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise EvalInputError(f"{where}: {name} is {type(value).__name__}, expected a string or an integer")
    return str(value)


def _prediction(obj, where: str) -> Prediction:
    if not isinstance(obj, dict):
        raise EvalInputError(f"{where}: expected a JSON object, found {type(obj).__name__}")
    if "question_id" not in obj:
        raise EvalInputError(f"{where}: no 'question_id'")
    if "text" not in obj:
        raise EvalInputError(f"{where}: no 'text' (the answer)")
    text = obj["text"]
    if text is None:
        text = ""
    if not isinstance(text, str):
        raise EvalInputError(f"{where}: 'text' is {type(text).__name__}, expected a string")
    sample_id = obj.get("sample_id") or ""
    prompt = obj.get("prompt") or ""
    return Prediction(
        _id_text(obj["question_id"], where, "'question_id'"),
        text,
        sample_id if isinstance(sample_id, str) else "",
        prompt if isinstance(prompt, str) else "",
    )


def read_predictions(path: Path) -> list[Prediction]:
    """Every prediction of a JSONL (or JSON array) answer file; bad input raises one line naming file and line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise EvalInputError(f"{path}: no such prediction file") from None
    except IsADirectoryError:
        raise EvalInputError(f"{path}: is a folder, expected a prediction file (JSONL)") from None
    except (OSError, UnicodeDecodeError) as err:
        why = err.strerror if isinstance(err, OSError) else "not UTF-8 text"
        raise EvalInputError(f"{path}: cannot read ({why})") from None
    if text.lstrip().startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise EvalInputError(f"{path}: not valid JSON ({err.msg} at line {err.lineno})") from None
        return [_prediction(obj, f"{path}: item {n}") for n, obj in enumerate(data)]
    predictions = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise EvalInputError(f"{path}:{number}: not a JSON object ({err.msg})") from None
        predictions.append(_prediction(obj, f"{path}:{number}"))
    if not predictions:
        raise EvalInputError(f"{path}: holds no prediction")
    return predictions


def write_predictions(path: Path, predictions: Iterable[Prediction]) -> None:
    atomic_write_bytes(Path(path), "".join(p.to_json() + "\n" for p in predictions).encode())


@dataclass
class MatchReport:
    questions: int = 0
    predictions: int = 0
    matched: int = 0
    missing: int = 0  # questions without a prediction (scored as empty answers)
    unmatched: int = 0  # predictions that match no question
    duplicates: int = 0  # further predictions for an already answered question (not scored)
    by_sample_id: int = 0  # matched through our sample id rather than the source's question id
    missing_ids: list[str] = field(default_factory=list)
    unmatched_ids: list[str] = field(default_factory=list)

    def line(self) -> str:
        text = f"{self.matched}/{self.questions} questions answered"
        if self.missing:
            text += f", {self.missing} missing (scored as empty answers; e.g. {', '.join(self.missing_ids)})"
        if self.unmatched:
            text += f", {self.unmatched} predictions match no question (e.g. {', '.join(self.unmatched_ids)})"
        if self.duplicates:
            text += f", {self.duplicates} repeated predictions (the first one is scored)"
        return text

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Matched:
    items: list[EvalItem]
    predictions: list[Prediction]  # one per question, in ground-truth order (our format)
    report: MatchReport


def match_predictions(records: Sequence[GtRecord], predictions: Sequence[Prediction]) -> Matched:
    by_question = {r.question_id: r for r in records}
    by_sample = {r.sample_id: r for r in records}
    chosen: dict[str, Prediction] = {}
    report = MatchReport(questions=len(records), predictions=len(predictions))
    for prediction in predictions:
        record = by_question.get(prediction.question_id)
        if record is None:
            record = by_sample.get(prediction.question_id) or by_sample.get(prediction.sample_id)
            if record is not None:
                report.by_sample_id += 1
        if record is None:
            report.unmatched += 1
            if len(report.unmatched_ids) < EXAMPLES:
                report.unmatched_ids.append(prediction.question_id)
            continue
        if record.question_id in chosen:
            report.duplicates += 1
            continue
        chosen[record.question_id] = prediction
    items, ours = [], []
    for record in records:
        prediction = chosen.get(record.question_id)
        if prediction is None:
            report.missing += 1
            if len(report.missing_ids) < EXAMPLES:
                report.missing_ids.append(record.question_id)
            items.append(record.item(""))
            continue
        report.matched += 1
        items.append(record.item(prediction.text))
        ours.append(Prediction(record.question_id, prediction.text, record.sample_id, prediction.prompt))
    return Matched(items, ours, report)

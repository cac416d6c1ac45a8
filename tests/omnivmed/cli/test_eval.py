"""``omnivmed-eval``: score end to end, run with a baseline, ground truth built from a raw folder, overlap and
report on the embedded default, the demo's wiring, and one line for every bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from omnivmed.cli.eval import main
from omnivmed.eval_pipeline import DemoServer
from omnivmed.evaluation.benchmarks import get_benchmark, read_ground_truth
from support.eval_fixtures import Answers, build_eval_staged
from support.m3d_trees import make_m3d_vqa_tree

EVAL = str(Path(sys.executable).parent / "omnivmed-eval")


@pytest.fixture(scope="module")
def staged(tmp_path_factory):
    return build_eval_staged(tmp_path_factory.getbasetemp() / "eval-ground-truth")


@pytest.fixture(scope="module")
def embedded(tmp_path_factory):
    """The embedded default mixed as `make instruct-dataset` mixes it on a fresh clone (about 20 s)."""
    from omnivmed.embedded import mix_embedded

    out = tmp_path_factory.mktemp("embedded") / "omnivmed-embedded"
    mix_embedded(out, progress=False)
    return out


def yes_file(path: Path, records, skip: int = 0) -> Path:
    """A LLaVA-Med style answer file: integer ids as its model_vqa writes them, every answer 'yes'."""
    lines = [{"question_id": int(r.question_id), "prompt": r.question, "text": "yes", "answer_id": "x", "model_id": "m", "metadata": {}} for r in records[skip:]]
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path


def test_help_is_light():
    code = "import sys, omnivmed.cli.eval; print(sorted(m for m in ('pyarrow', 'numpy', 'openai', 'torch', 'matplotlib', 'typer') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    helped = subprocess.run([EVAL, "--help"], capture_output=True, text=True, check=True).stdout
    assert all(c in helped for c in ("predict", "score", "run", "overlap", "report", "protocols", "demo"))


def test_score_end_to_end_with_a_llava_med_answer_file(staged, tmp_path, capsys):
    records = read_ground_truth(get_benchmark("vqa_rad"), staged / "vqa_rad")
    answers = yes_file(tmp_path / "answers.jsonl", records, skip=1)
    out = tmp_path / "scores"
    code = main(["score", "--benchmark", "vqa_rad", "--gt", str(staged / "vqa_rad"), "--predictions", str(answers), "--protocol", "llava-med,omnivmed-paper", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "vqa_rad: 450/451 questions answered, 1 missing (scored as empty answers; e.g. 10)" in printed
    assert "omnivmed-paper" in printed and f"-> {out / 'scores.json'}" in printed
    scores = json.loads((out / "scores.json").read_text())
    assert list(scores) == ["vqa_rad"] and list(scores["vqa_rad"]) == ["llava-med", "omnivmed-paper"]
    # "yes" for every question: LLaVA-Med's closed rule hits exactly the closed questions whose answer is yes
    # (the missing question, qid 10, is a closed "yes" scored as an empty answer).
    closed = [r for r in records if r.answer_type == "closed"]
    hits = sum(1 for r in closed[1:] if r.answer.strip().lower() == "yes")
    assert scores["vqa_rad"]["omnivmed-paper"]["closed accuracy"] == pytest.approx(100 * hits / 272)
    assert scores["vqa_rad"]["llava-med"]["yes/no accuracy"] == pytest.approx(100 * hits / 272)
    breakdowns = json.loads((out / "breakdowns.json").read_text())["vqa_rad"]["omnivmed-paper"]
    assert set(breakdowns) == {"answer_type", "modality", "question_type", "answer_type/question_type"}
    assert breakdowns["answer_type"]["closed"]["n"] == 272 and breakdowns["modality"]["x_ray"]["n"] > 0
    matching = json.loads((out / "matching.json").read_text())["vqa_rad"]
    assert (matching["matched"], matching["missing"], matching["unmatched"]) == (450, 1, 0)


def test_score_builds_ground_truth_from_a_raw_folder(tmp_path):
    raw = make_m3d_vqa_tree(tmp_path / "raw")
    answers = tmp_path / "answers.jsonl"
    answers.write_text("".join(json.dumps({"question_id": f"test#{n}:{form}", "text": "A. Axial" if form == "closed" else "axial"}) + "\n" for n in range(4) for form in ("closed", "open")))
    out = tmp_path / "out"
    assert main(["score", "--benchmark", "m3d_vqa", "--gt", str(raw), "--predictions", str(answers), "--protocol", "omnivmed-paper", "--out", str(out)]) == 0
    assert (out / "ground-truth" / "m3d_vqa" / "manifest.json").is_file()
    metrics = json.loads((out / "scores.json").read_text())["m3d_vqa"]["omnivmed-paper"]
    # Test rows: plane A, organ D, plane C, abnormality A: "A." is right for rows 0 and 3.
    assert metrics["closed accuracy/plane"] == 50.0 and metrics["closed accuracy/abnormality"] == 100.0 and metrics["closed accuracy/organ"] == 0.0


def test_run_with_the_majority_baseline_then_report(staged, tmp_path, capsys):
    out = tmp_path / "majority"
    assert main(["run", "--benchmark", "vqa_rad,slake", "--staged", str(staged), "--baseline", "majority", "--protocol", "omnivmed-paper,llava-med", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"vqa_rad: 451/451 answered -> {out / 'vqa_rad' / 'predictions.jsonl'}" in printed
    scores = json.loads((out / "scores.json").read_text())
    assert set(scores) == {"vqa_rad", "slake"}
    assert scores["vqa_rad"]["omnivmed-paper"]["closed accuracy"] == pytest.approx(100 * 135 / 272)  # every closed answer is yes/no
    run = json.loads((out / "run.json").read_text())
    assert run["predictor"] == "majority" and run["benchmarks"]["slake"]["questions"] == 28
    assert main(["report", "--runs", str(out), "--out", str(tmp_path / "report")]) == 0
    report = (tmp_path / "report" / "report.md").read_text()
    assert "| ours: majority | 20.52 | 49.63 |" in report
    assert (tmp_path / "report" / "scores.png").read_bytes().startswith(b"\x89PNG")


BAD = [
    (["score", "--benchmark", "vqa_rad", "--gt", "{vqa_rad}", "--predictions", "{tmp}/none.jsonl", "--out", "{tmp}/o"], "{tmp}/none.jsonl: no such prediction file"),
    (["score", "--benchmark", "vqa_rad", "--gt", "{vqa_rad}", "--predictions", "{bad_line}", "--out", "{tmp}/o"], "{bad_line}:2: not a JSON object"),
    (["score", "--benchmark", "vqa-rad", "--gt", "{vqa_rad}", "--predictions", "{good}", "--out", "{tmp}/o"], "unknown benchmark 'vqa-rad'"),
    (["score", "--benchmark", "vqa_rad", "--gt", "{vqa_rad}", "--predictions", "{good}", "--protocol", "llava", "--out", "{tmp}/o"], "--protocol llava: unknown protocol"),
    (["score", "--benchmark", "vqa_rad", "--gt", "{slake}", "--predictions", "{good}", "--out", "{tmp}/o"], "{slake}/manifest.json: no vqa_rad test questions"),
    (["score", "--benchmark", "vqa_rad", "--gt", "{tmp}/nowhere", "--predictions", "{good}", "--out", "{tmp}/o"], "{tmp}/nowhere: no such manifest or raw folder"),
    (["score", "--benchmark", "vqa_rad", "--gt", "{tmp}/empty", "--predictions", "{good}", "--out", "{tmp}/o"], "{tmp}/empty: neither a manifest nor a raw vqa_rad folder"),
    (["score", "--benchmark", "vqa_rad", "--gt", "{vqa_rad}", "--predictions", "{good}", "--candidates", "{good}", "--out", "{tmp}/o"], "{good}: not valid JSON"),
    (["score", "--benchmark", "vqa_rad", "--gt", "{vqa_rad}", "--predictions", "{other}", "--out", "{tmp}/o"], "{other}: none of its 2 predictions matches a vqa_rad question id"),
    (["score", "--benchmark", "vqa_rad", "--gt", "{vqa_rad}", "--predictions", "{good}", "--out", "{tmp}/o", "--protocol", "all", "--candidates", "{dict}"], "{dict}: expected a JSON list of answer strings"),
    (["predict", "--benchmark", "vqa_rad", "--gt", "{vqa_rad}", "--predictions", "{good}", "--baseline", "majority", "--out", "{tmp}/o"], "predict from exactly one of"),
    (["predict", "--benchmark", "vqa_rad", "--gt", "{vqa_rad}", "--endpoint", "http://127.0.0.1:9/v1", "--out", "{tmp}/o"], "name the model it serves with --model NAME"),
    (["predict", "--benchmark", "vqa_rad", "--gt", "{vqa_rad}", "--model", "{tmp}/my-model", "--out", "{tmp}/o"], "--model {tmp}/my-model: not a trained omnivmed model folder (no config.json)"),
    (["predict", "--benchmark", "vqa_rad", "--gt", "{vqa_rad}", "--baseline", "majority", "--train-gt", "{slake}", "--out", "{tmp}/o"], "{slake}/manifest.json: no vqa_rad train questions"),
    (["predict", "--benchmark", "vqa_rad", "--gt", "{vqa_rad}", "--endpoint", "http://127.0.0.1:9/v1", "--model", "m", "--cache", "{good}", "--out", "{tmp}/o"], "{good}: not a request cache"),
    (["predict", "--benchmark", "vqa_rad,slake", "--gt", "pathvqa={vqa_rad}", "--baseline", "majority", "--out", "{tmp}/o"], "--gt pathvqa="),
    (["report", "--runs", "{tmp}", "--out", "{tmp}/o"], "{tmp}: no scores.json"),
    (["overlap", "--train", "{tmp}/mix.json", "--benchmarks", "vqa_rad", "--gt", "{vqa_rad}", "--out", "{tmp}/o"], "{tmp}/mix.json: no such manifest"),
]


@pytest.mark.parametrize(("argv", "message"), BAD, ids=[f"{a[0]}-{n}" for n, (a, _) in enumerate(BAD)])
def test_bad_input_is_one_line_and_no_traceback(staged, tmp_path, argv, message):
    records = read_ground_truth(get_benchmark("vqa_rad"), staged / "vqa_rad")
    good = yes_file(tmp_path / "good.jsonl", records)
    bad_line = tmp_path / "bad.jsonl"
    bad_line.write_text('{"question_id": 1, "text": "yes"}\n{"question_id": 2, "text": \n')
    other = tmp_path / "other.jsonl"
    other.write_text('{"question_id": "x1", "text": "yes"}\n{"question_id": "x2", "text": "no"}\n')
    (tmp_path / "dict.json").write_text('{"a": 1}')
    (tmp_path / "empty").mkdir()
    names = {"vqa_rad": staged / "vqa_rad", "slake": staged / "slake", "tmp": tmp_path, "good": good, "bad_line": bad_line, "other": other, "dict": tmp_path / "dict.json"}
    result = subprocess.run([EVAL, *[a.format(**names) for a in argv]], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith("omnivmed-eval: error: ") and message.format(**names) in lines[0], lines[0]


@pytest.mark.slow
def test_overlap_finds_vqa_rad_train_test_image_reuse_in_the_embedded_default(embedded, tmp_path, capsys):
    from omnivmed.embedded import sources_dir

    staged_root = sources_dir(embedded) / "staged"
    out = tmp_path / "overlap"
    assert main(["overlap", "--train", str(embedded), "--benchmarks", "vqa_rad,slake,cholec80_vqa", "--staged", str(staged_root), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "vqa_rad test vs training set: 202/203 test frames shared (exact), 202 (perceptual); 446/451 questions on a shared frame" in printed
    assert "vqa_rad test vs own train split: 202/203 test frames shared (exact)" in printed
    found = json.loads((out / "overlap.json").read_text())
    assert found["method"]["perceptual_threshold_bits"] == 4
    vqa_rad = found["benchmarks"]["vqa_rad"]
    assert vqa_rad["train_mix"]["frames_shared_exact"] == vqa_rad["own_train"]["frames_shared_exact"] == 202
    assert found["benchmarks"]["slake"]["train_mix"]["frames_shared_exact"] == 0  # SLAKE's image splits are disjoint
    assert found["benchmarks"]["cholec80_vqa"]["train_mix"]["frames_shared_exact"] == 0


@pytest.mark.slow
def test_demo_wiring_and_a_second_run_that_asks_nothing(embedded, tmp_path):
    """The demo with a scripted model in place of SmolLM2 (the real one: `make eval-demo`)."""
    from omnivmed.eval_demo import run_demo

    loads = []

    def factory():
        loads.append(1)
        return Answers()

    out = tmp_path / "demo"
    lines = run_demo(out, embedded, demo=DemoServer(factory=factory))
    assert loads == [1]
    assert any(line.startswith("blind vqa_rad: 451 answers (451 asked, 0 from the cache)") for line in lines)
    for label in ("majority", "blind"):
        scores = json.loads((out / label / "scores.json").read_text())
        assert set(scores) == {"vqa_rad", "slake", "cholec80_vqa"}
    report = (out / "report.md").read_text()
    assert "| ours: majority |" in report and "| ours: blind |" in report and (out / "scores.png").is_file()
    first = (out / "blind" / "vqa_rad" / "predictions.jsonl").read_bytes()
    lines = run_demo(out, embedded, demo=DemoServer(factory=factory))
    assert loads == [1]  # the model is not even loaded: every answer is in the cache
    assert any(line.startswith("blind vqa_rad: 451 answers (0 asked, 451 from the cache)") for line in lines)
    assert (out / "blind" / "vqa_rad" / "predictions.jsonl").read_bytes() == first


def test_protocols_lists_every_registered_protocol(capsys):
    from omnivmed.evaluation.protocols import protocol_names

    assert main(["protocols"]) == 0
    printed = capsys.readouterr().out
    assert all(f"{name}: " in printed for name in protocol_names())

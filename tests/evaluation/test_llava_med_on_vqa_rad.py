"""`omnivmed-eval score --protocol llava-med` on the real VQA-RAD test split gives LLaVA-Med's table figures.

The ground truth is the official release's 451 test questions (phrase_type
test_*), read here straight from data/vqa_rad's JSON, not through our
builder. The answer file is LLaVA-Med's format, with answers of every kind a
model gives (right, wrong, hedged, "nodule", numbers as words, empty). The
reference below is written from LLaVA-Med v1.0.0's published evaluation
(llava/eval/run_eval.py and eval_metrics/): lowercase, its normalize_word
(punctuation to space or removed, periods not between digits removed, number
words 0-10 to digits, articles dropped), then for CLOSED questions a hit when
the prediction contains "yes" or "no" and contains the ground truth, and for
OPEN questions the token recall of its calculate_f1score (shared word counts
over shared + missed reference word counts). Its table prints these two,
closed accuracy and open recall, in percent with two decimals.
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from pathlib import Path

from omnivmed.cli.eval import main as eval_main
from omnivmed.embedded import embedded_data_dir

NUMBERS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6",
           "seven": "7", "eight": "8", "nine": "9", "ten": "10"}  # fmt: skip
PUNCT = [";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!"]
# Words LLaVA-Med's contraction table would rewrite: the answers below avoid them, so the reference needs no table.
CONTRACTION_KEYS = {"dont", "isnt", "cant", "wont", "arent", "doesnt", "didnt", "wasnt", "hasnt", "im", "ive"}


def normalize(text: str) -> str:
    out = text
    for p in PUNCT:
        if (p + " " in text or " " + p in text) or re.search(r"(\d)(,)(\d)", text):
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    out = re.sub(r"(?<!\d)(\.)(?!\d)", "", out)
    words = [NUMBERS.get(w, w) for w in out.lower().split()]
    return " ".join(w for w in words if w not in ("a", "an", "the")).replace(",", "")


def recall(pred: str, gt: str) -> float:
    cand, ref = Counter(pred.split()), Counter(gt.split())
    if not cand or not ref:
        return 0.0
    tp = sum(cand[w] for w in cand if w in ref)
    fn = sum(ref[w] for w in ref if w not in cand)
    return tp / (tp + fn) if tp else 0.0


def official_test_rows() -> list[dict]:
    rows = json.loads((embedded_data_dir() / "vqa_rad" / "VQA_RAD Dataset Public.json").read_text(encoding="utf-8"))
    return [r for r in rows if str(r.get("phrase_type", "")).startswith("test")]


def answer_for(row: dict, rng: random.Random, others: list[str]) -> str:
    gt = str(row["answer"])
    if str(row["answer_type"]).upper() == "CLOSED":
        return rng.choice([gt, f"{gt.capitalize()}, it is.", "yes", "no", "There is a nodule.", "Unclear.", ""])
    return rng.choice([gt, f"The {gt} is seen.", f"{gt} and more", rng.choice(others), "two lesions", "no", ""])


def test_llava_med_table_figures_on_the_451_test_questions(tmp_path, staged):
    rows = official_test_rows()
    assert len(rows) == 451
    rng = random.Random(7)
    others = sorted({str(r["answer"]) for r in rows})
    predictions = {str(r["qid"]): answer_for(r, rng, others) for r in rows}
    assert not CONTRACTION_KEYS & {w for r in rows for w in str(r["answer"]).lower().split()}
    answers = tmp_path / "answers.jsonl"
    answers.write_text("".join(json.dumps({"question_id": q, "text": t}) + "\n" for q, t in predictions.items()))

    closed, opened = [], []
    for r in rows:
        gt, pred = normalize(str(r["answer"]).lower()), normalize(predictions[str(r["qid"])].lower())
        if str(r["answer_type"]).upper() == "CLOSED":
            closed.append(1 if ("yes" in pred or "no" in pred) and gt in pred else 0)
        else:
            opened.append(recall(pred, gt))
    expected_closed = round(100 * sum(closed) / len(closed), 2)
    expected_open = round(100 * sum(opened) / len(opened), 2)

    out = tmp_path / "scores"
    try:
        eval_main([
            "score", "--benchmark", "vqa_rad", "--gt", str(staged / "vqa_rad"), "--predictions", str(answers),
            "--protocol", "llava-med", "--out", str(out),
        ])  # fmt: skip
    except SystemExit as exit:
        assert exit.code in (0, None)
    metrics = json.loads((out / "scores.json").read_text())["vqa_rad"]["llava-med"]
    assert round(metrics["yes/no accuracy"], 2) == expected_closed
    assert round(metrics["recall"], 2) == expected_open
    # LLaVA-Med prints its two counts swapped: num_open holds the closed count.
    assert (metrics["num_open"], metrics["num_close"]) == (len(closed), len(opened))
    assert 0 < expected_closed < 100 and 0 < expected_open < 100

"""``omnivmed``: our own protocol, strict and fully written out.

Source: this project (omnivmed, evaluation/protocols/strict.py); the token F1 is SQuAD's
(multiset overlap), the word-level yes/no test answers LLaVA-Med issue 12.

Normalisation (both prediction and answer):
1. Unicode NFKC, lowercase, strip.
2. A comma between digits is deleted ("1,000" -> "1000"); a period between digits is kept
   (a decimal point); an apostrophe is deleted ("crohn's" -> "crohns"); every other
   punctuation or symbol character except "%" becomes a space (so "x-ray" -> "x ray").
3. Split on whitespace; number words zero..twenty become digits ("two" -> "2"); a number
   glued to a unit is split ("5mm" -> "5 mm", "3.5cm" -> "3.5 cm", "10%" -> "10 %"), units:
   mm cm m ml cc l mg g kg hu % s ms min h hz mmhg t mm2 cm2 mm3 cm3; the articles a, an,
   the are dropped.
4. Join with single spaces.

Scoring:
- Closed, answer "yes"/"no" after normalisation: correct iff the prediction has exactly one
  of the words "yes"/"no" (as whole words: "nodule" and "not" are not "no") and it is the
  answer. Predictions with both or neither are wrong and counted.
- Closed with M3D choices: correct iff the prediction starts with the answer letter
  ("B" alone, "B.", "(B)", "B)", "B:"; a lowercase letter only with ")" or "." after it;
  "A large mass" is not a letter) or its
  normalised text equals the normalised answer text.
- Any other closed answer: correct iff the normalised strings are equal.
- Open: "open exact" = normalised strings equal; "open token f1" and "open recall" =
  SQuAD-style multiset token overlap (F1 = 2PR/(P+R); when either side is empty, 1 if both
  are, else 0).
- Items whose answer_type is neither closed nor open are not scored.
Metrics (percent): "closed accuracy", "open exact", "open token f1", "open recall",
"overall accuracy" (closed correct + open exact over all scored items); counts: "closed
count", "open count", "yes/no count", "yes/no unanswered count" (yes/no questions whose
prediction holds both or neither word). Empty groups give 0.0.
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections import Counter
from typing import Sequence

from omnivmed.evaluation.items import CLOSED, OPEN, EvalItem
from omnivmed.evaluation.protocols.base import Metrics, Protocol
from omnivmed.evaluation.protocols.common import mean

SOURCE = "omnivmed (this project): evaluation/protocols/strict.py; token F1 after SQuAD v1.1 evaluate-v1.1.py"
RULES = (
    "Normalise (NFKC, case, punctuation, articles, number words -> digits, '5mm' -> '5 mm'). Closed yes/no: "
    "exactly one of the words yes/no and it is the answer; M3D: leading choice letter or exact answer text; "
    "other closed: exact. Open: exact, SQuAD token F1 and recall. Percent, with counts."
)

NUMBER_WORDS = {
    word: str(value)
    for value, word in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
        "seventeen eighteen nineteen twenty".split()
    )
}
ARTICLES = frozenset({"a", "an", "the"})
UNITS = frozenset("mm cm m ml cc l mg g kg hu % s ms min h hz mmhg t mm2 cm2 mm3 cm3".split())
NUMBER_WITH_UNIT = re.compile(r"(\d+(?:\.\d+)?)([a-z%][a-z0-9]*)")
DIGIT_COMMA = re.compile(r"(?<=\d),(?=\d)")
DECIMAL_POINT = re.compile(r"(?<=\d)\.(?=\d)")
KEEP = "\x00"  # stands in for a decimal point while punctuation is replaced


def is_punctuation(char: str) -> bool:
    return char in string.punctuation or unicodedata.category(char)[0] in "PS"


def normalize(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).lower().strip()
    text = DIGIT_COMMA.sub("", text)
    text = DECIMAL_POINT.sub(KEEP, text).replace("'", "").replace("\u2019", "")
    text = "".join(" " if char != "%" and is_punctuation(char) else char for char in text).replace(KEEP, ".")
    words: list[str] = []
    for word in text.split():
        word = NUMBER_WORDS.get(word, word)
        match = NUMBER_WITH_UNIT.fullmatch(word)
        if match and match.group(2) in UNITS:
            words += [match.group(1), match.group(2)]
        elif word not in ARTICLES:
            words.append(word)
    return " ".join(words)


def yes_no_verdict(prediction: str) -> str | None:
    """"yes" or "no" when exactly one of them is a word of the normalised prediction."""
    words = set(normalize(prediction).split())
    found = [answer for answer in ("yes", "no") if answer in words]
    return found[0] if len(found) == 1 else None


LEADING_LETTER = re.compile(r"\s*(?:\(([A-Da-d])\)|([A-D])(?:[.):]|\s*$)|([a-d])[.)])")


def choice_correct(item: EvalItem) -> bool:
    match = LEADING_LETTER.match(item.prediction)
    if match:
        letter = next(group for group in match.groups() if group)
        return letter.upper() == item.answer_choice.strip().upper()
    return normalize(item.prediction) == normalize(item.answer)


def token_overlap(prediction: str, answer: str) -> tuple[float, float]:
    """(F1, recall) of the normalised token multisets, SQuAD-style."""
    predicted, expected = normalize(prediction).split(), normalize(answer).split()
    if not predicted or not expected:
        same = float(predicted == expected)
        return same, same
    shared = sum((Counter(predicted) & Counter(expected)).values())
    if shared == 0:
        return 0.0, 0.0
    precision, recall = shared / len(predicted), shared / len(expected)
    return 2 * precision * recall / (precision + recall), recall


def score(items: Sequence[EvalItem], *, candidates: Sequence[str] | None = None) -> Metrics:
    closed: list[float] = []
    exact: list[float] = []
    f1s: list[float] = []
    recalls: list[float] = []
    yes_no = unanswered = 0
    for item in items:
        if item.answer_type == CLOSED:
            truth = normalize(item.answer)
            if truth in ("yes", "no"):
                yes_no += 1
                verdict = yes_no_verdict(item.prediction)
                unanswered += verdict is None
                closed.append(float(verdict == truth))
            elif item.answer_choice:
                closed.append(float(choice_correct(item)))
            else:
                closed.append(float(normalize(item.prediction) == truth))
        elif item.answer_type == OPEN:
            exact.append(float(normalize(item.prediction) == normalize(item.answer)))
            f1, recall = token_overlap(item.prediction, item.answer)
            f1s.append(f1)
            recalls.append(recall)
    return {
        "closed accuracy": mean(closed) * 100,
        "open exact": mean(exact) * 100,
        "open token f1": mean(f1s) * 100,
        "open recall": mean(recalls) * 100,
        "overall accuracy": mean(closed + exact) * 100,
        "closed count": float(len(closed)),
        "open count": float(len(exact)),
        "yes/no count": float(yes_no),
        "yes/no unanswered count": float(unanswered),
    }


PROTOCOL = Protocol(name="omnivmed", source=SOURCE, rules=RULES, defects=(), score=score)

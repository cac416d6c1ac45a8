"""Pieces several protocols share: the VQA-style answer normaliser of the LLaVA-Med lineage,
word counts, which benchmark an item comes from, optional third-party scorers, averaging.

The normaliser here is the one LLaVA-Med v1.0.0 calls ``normalize_word``
(``llava/eval/eval_metrics/glossary.py``) and MultiMedEval calls ``clean_str``
(``multimedeval/utils.py``, which lowercases first); both descend from the VQA
evaluation API. Written from the behaviour, quirks kept:

1. Punctuation. For each of ``; / [ ] " { } ( ) = + \\ _ - > < @ ` , ? !`` in that
   order: if the *original* text has the mark followed by a space or preceded by
   one, or contains a digit-comma-digit anywhere, every occurrence of the mark is
   deleted; otherwise every occurrence becomes a space. Apostrophes, colons,
   ``* # % & $`` are left alone.
2. Periods not followed by a digit are deleted, at most 32 of them (the peers
   pass ``re.UNICODE``, whose value is 32, as ``re.sub``'s *count*).
3. Lowercase, split on whitespace; the words none/zero..ten become 0..10 ("none"
   is 0); the articles a/an/the are dropped; a fixed contraction table maps
   apostrophe-less forms ("dont" -> "don't").
4. Join with single spaces and delete every remaining comma.
"""

from __future__ import annotations

import importlib
import re
import warnings
from collections import Counter
from typing import Iterable, Sequence

from omnivmed.evaluation.items import EvalItem

# --- the VQA-style normaliser -----------------------------------------------------------------

VQA_PUNCTUATION = (
    ";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!",
)
DIGIT_COMMA_DIGIT = re.compile(r"(\d)(,)(\d)")
# The peers' pattern starts with "(?!<=\d)", a mistyped look-behind that never matches anything here,
# so only the "not followed by a digit" condition has an effect.
PERIOD_NOT_BEFORE_DIGIT = re.compile(r"(?!<=\d)(\.)(?!\d)")
PERIOD_LIMIT = 32  # re.UNICODE passed as count
VQA_NUMBER_WORDS = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
    "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}
VQA_ARTICLES = frozenset({"a", "an", "the"})
# Contractions as the VQA evaluation API lists them (keys that can appear after lowercasing; the
# table's capitalised keys, e.g. "Im", can never match a lowercased word and change nothing).
VQA_CONTRACTIONS = dict(
    pair.split("=")
    for pair in """
aint=ain't arent=aren't cant=can't couldve=could've couldnt=couldn't couldn'tve=couldn't've
couldnt've=couldn't've didnt=didn't doesnt=doesn't dont=don't hadnt=hadn't hadnt've=hadn't've
hadn'tve=hadn't've hasnt=hasn't havent=haven't hed=he'd hed've=he'd've he'dve=he'd've hes=he's
howd=how'd howll=how'll hows=how's isnt=isn't itd=it'd itd've=it'd've it'dve=it'd've itll=it'll
let's=let's maam=ma'am mightnt=mightn't mightnt've=mightn't've mightn'tve=mightn't've
mightve=might've mustnt=mustn't mustve=must've neednt=needn't notve=not've oclock=o'clock
oughtnt=oughtn't ow's'at='ow's'at 'ows'at='ow's'at 'ow'sat='ow's'at shant=shan't
shed've=she'd've she'dve=she'd've she's=she's shouldve=should've shouldnt=shouldn't
shouldnt've=shouldn't've shouldn'tve=shouldn't've somebody'd=somebodyd somebodyd've=somebody'd've
somebody'dve=somebody'd've somebodyll=somebody'll somebodys=somebody's someoned=someone'd
someoned've=someone'd've someone'dve=someone'd've someonell=someone'll someones=someone's
somethingd=something'd somethingd've=something'd've something'dve=something'd've
somethingll=something'll thats=that's thered=there'd thered've=there'd've there'dve=there'd've
therere=there're theres=there's theyd=they'd theyd've=they'd've they'dve=they'd've
theyll=they'll theyre=they're theyve=they've twas='twas wasnt=wasn't wed've=we'd've
we'dve=we'd've weve=we've werent=weren't whatll=what'll whatre=what're whats=what's
whatve=what've whens=when's whered=where'd wheres=where's whereve=where've whod=who'd
whod've=who'd've who'dve=who'd've wholl=who'll whos=who's whove=who've whyll=why'll
whyre=why're whys=why's wont=won't wouldve=would've wouldnt=wouldn't wouldnt've=wouldn't've
wouldn'tve=wouldn't've yall=y'all yall'll=y'all'll y'allll=y'all'll yall'd've=y'all'd've
y'alld've=y'all'd've y'all'dve=y'all'd've youd=you'd youd've=you'd've you'dve=you'd've
youll=you'll youre=you're youve=you've
""".split()
)


def vqa_normalize(text: str) -> str:
    """LLaVA-Med's ``normalize_word`` / MultiMedEval's ``clean_str`` minus its leading lowercase."""
    drop_all = DIGIT_COMMA_DIGIT.search(text) is not None
    out = text
    for mark in VQA_PUNCTUATION:
        if drop_all or (mark + " ") in text or (" " + mark) in text:
            out = out.replace(mark, "")
        else:
            out = out.replace(mark, " ")
    out = PERIOD_NOT_BEFORE_DIGIT.sub("", out, count=PERIOD_LIMIT)
    words = []
    for word in out.lower().split():
        word = VQA_NUMBER_WORDS.get(word, word)
        if word not in VQA_ARTICLES:
            words.append(VQA_CONTRACTIONS.get(word, word))
    return " ".join(words).replace(",", "")


def word_counts(text: str) -> Counter[str]:
    """Lowercased whitespace words with their counts (LLaVA-Med's ``split_sentence(text, 1)``)."""
    return Counter(text.lower().split())


# --- which benchmark an item belongs to --------------------------------------------------------

# EvalItem.extra key naming the benchmark ("vqa-rad", "slake", "pathvqa", "m3d-vqa",
# "cholec80-vqa", "endovis18-vqa", "psi-ava-vqa"; case and punctuation are ignored).
BENCHMARK_KEY = "benchmark"
M3D_QUESTION_TYPES = ("plane", "phase", "organ", "abnormality", "location")
VQA_RAD, SLAKE, PATHVQA, M3D, SURGICAL = "vqa-rad", "slake", "pathvqa", "m3d", "surgical"


def extra(item: EvalItem, key: str, default: str = "") -> str:
    for name, value in item.extra:
        if name == key:
            return value
    return default


def benchmark_kind(item: EvalItem) -> str:
    """One of VQA_RAD, SLAKE, PATHVQA, M3D, SURGICAL, or "" when the item does not say.

    Without a ``benchmark`` entry, an item with M3D choices (or a question type spelled
    exactly as M3D's five lowercase types) is M3D; anything else is "" (treated as 2D VQA).
    """
    key = re.sub(r"[^a-z0-9]", "", extra(item, BENCHMARK_KEY).lower())
    if key:
        if key.startswith("m3d"):
            return M3D
        if any(name in key for name in ("cholec", "endovis", "psiava", "surgical")):
            return SURGICAL
        if key.startswith("slake"):
            return SLAKE
        if key.startswith("vqarad") or key == "rad":
            return VQA_RAD
        if key.startswith("pathvqa") or key.startswith("pvqa"):
            return PATHVQA
    if item.choices or item.answer_choice or item.question_type in M3D_QUESTION_TYPES:
        return M3D
    return ""


# --- optional third-party scorers --------------------------------------------------------------


def optional_import(name: str):
    """The module, or None when it is not installed (the metric is then reported unavailable)."""
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def nltk_sentence_bleu(reference: Sequence[str], hypothesis: Sequence[str], weights: Sequence[float]) -> float | None:
    """NLTK's ``sentence_bleu`` with one reference and no smoothing; None without NLTK."""
    bleu = optional_import("nltk.translate.bleu_score")
    if bleu is None:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # NLTK warns on zero n-gram overlaps; the peers silence it too
        return float(bleu.sentence_bleu([list(reference)], list(hypothesis), weights=tuple(weights)))


def nltk_data_available(*resources: str) -> bool:
    """Whether every NLTK data resource (e.g. "corpora/wordnet") is installed locally."""
    nltk = optional_import("nltk")
    if nltk is None:
        return False
    for resource in resources:
        try:
            nltk.data.find(resource)
        except LookupError:
            try:
                nltk.data.find(resource + ".zip")
            except LookupError:
                return False
    return True


def mean(values: Iterable[float]) -> float:
    """Arithmetic mean; 0.0 for no values (the documented empty-set result of every protocol)."""
    values = list(values)
    return sum(values) / len(values) if values else 0.0


def ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else 0.0

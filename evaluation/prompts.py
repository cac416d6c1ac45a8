"""Prompt templates for asking a model a benchmark question, versioned.

The version is part of every endpoint request's cache key: change a text,
bump its version, and exactly the answers it produced are asked for again.
A template is the question plus a suffix that depends on the kind of
question; the peers' templates are quoted from their code:

* ``llava-med-v1`` (LLaVA-Med v1.0 README, "For closed-set QAs, the candidate
  answers must be provided in the question"): a closed question whose answer
  is yes or no gets `` Please choose from the following two options: [yes, no]``;
  other questions are sent as they are.
* ``medevalkit-v1`` (MedEvalKit 9b12e3b, utils/VQA_RAD etc.): closed
  ``Please output 'yes' or 'no'(no extra output).``, open ``Please answer the
  question concisely.``, on a new line.
* ``lmms-eval-v1`` (lmms-eval 75571cfe, tasks/slake): every question gets
  ``Answer the question using a single word or phrase.`` on a new line.
* ``multimedeval-v1`` (MultiMedEval d9ac283, VQA): a closed yes/no question is
  preceded by ``Answer the following question with yes or no.``.
* ``plain-v1``: the question as the source wrote it.

M3D's closed questions already list their choices (``Choices: A. ... D. ...``),
as M3D sends them; no template adds a yes/no suffix to them.
"""

from __future__ import annotations

from dataclasses import dataclass

from omnivmed.evaluation.errors import EvalInputError

YES_NO = frozenset({"yes", "no"})


@dataclass(frozen=True)
class PromptTemplate:
    name: str
    version: str  # goes into the cache key
    source: str
    yes_no_suffix: str = ""  # appended to closed questions whose ground truth is yes/no
    closed_suffix: str = ""  # appended to other closed questions (not multiple choice)
    open_suffix: str = ""
    any_suffix: str = ""  # appended to every question
    yes_no_prefix: str = ""

    def render(self, question: str, answer_type: str, answer: str = "", multiple_choice: bool = False) -> str:
        yes_no = answer_type == "closed" and answer.strip().lower() in YES_NO and not multiple_choice
        text = question.strip()
        if yes_no and self.yes_no_prefix:
            text = f"{self.yes_no_prefix}{text}"
        if yes_no:
            text += self.yes_no_suffix
        elif answer_type == "closed" and not multiple_choice:
            text += self.closed_suffix
        elif answer_type == "open":
            text += self.open_suffix
        return text + self.any_suffix


TEMPLATES: dict[str, PromptTemplate] = {
    t.name: t
    for t in (
        PromptTemplate("plain", "plain-v1", "the question as the source wrote it"),
        PromptTemplate(
            "llava-med",
            "llava-med-v1",
            "microsoft/LLaVA-Med v1.0.0 README (closed-set candidate answers in the question)",
            yes_no_suffix=" Please choose from the following two options: [yes, no]",
        ),
        PromptTemplate(
            "medevalkit",
            "medevalkit-v1",
            "alibaba-damo-academy/MedEvalKit 9b12e3b utils/{VQA_RAD,SLAKE,PATH_VQA}",
            yes_no_suffix="\nPlease output 'yes' or 'no'(no extra output).",
            closed_suffix="\nPlease answer the question concisely.",
            open_suffix="\nPlease answer the question concisely.",
        ),
        PromptTemplate(
            "lmms-eval",
            "lmms-eval-v1",
            "EvolvingLMMs-Lab/lmms-eval 75571cfe lmms_eval/tasks/slake",
            any_suffix="\nAnswer the question using a single word or phrase.",
        ),
        PromptTemplate(
            "multimedeval",
            "multimedeval-v1",
            "corentin-ryr/MultiMedEval d9ac283 task_families.py (VQA)",
            yes_no_prefix="Answer the following question with yes or no. ",
        ),
    )
}
DEFAULT_TEMPLATE = "llava-med"


def get_template(name: str) -> PromptTemplate:
    try:
        return TEMPLATES[name]
    except KeyError:
        raise EvalInputError(f"unknown prompt template {name!r}; known: {', '.join(TEMPLATES)}") from None

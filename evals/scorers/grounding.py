"""Grounding features of a reply's names: where each named thing comes from and whether its relations hold.

A dialogue reply hallucinates by introducing a specific name or year that neither the knowledge nor the chat
history grounds, or by joining two grounded names that the knowledge never relates. These features look at a
claim's *names* (runs of capitalised words, numbers) as units: grounded in the context, only in the question
(history), or nowhere; pairs of grounded names that sit far apart in the context; and what the last question
asks for (who / when / which ...) against what the claim supplies.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from evals.scorers.passage import Passage, Word

GROUNDING_NAMES = (
    "name_runs", "names_grounded_fraction", "names_question_only", "names_nowhere", "years_nowhere",
    "grounded_pairs_apart", "grounded_pair_distance", "asks_person", "asks_time", "asks_choice",
    "supplies_new_grounded", "nowhere_when_asked", "names_partial",
)
# Two grounded names of one claim are related when they occur this close somewhere in the context.
_PAIR_SPAN = 12
_PAIR_CAP = 60.0
_YEAR = re.compile(r"^(1[5-9]|20)\d\d$")
_TURN = re.compile(r"\[(?:human|user)\]\s*:", re.I)
_WHO = re.compile(r"\b(who|whom|whose|actor|actress|director|directed|starred|starring|wrote|written|author)\b",
                  re.I)
_WHEN = re.compile(r"\b(when|year|released|born|date|how old)\b", re.I)
_CHOICE = re.compile(r"\b(which|what|recommend|suggest|any other|anything else|favou?rite)\b", re.I)


def last_turn(question: str) -> str:
    """Return what the reply answers: the last user turn of a chat history, else the whole question."""
    turns = _TURN.split(question)
    return turns[-1] if len(turns) > 1 else question


def question_kind(question: str) -> tuple[float, float, float]:
    """Return whether the last turn asks for a person, a time, or a choice among things."""
    turn = last_turn(question)
    return float(bool(_WHO.search(turn))), float(bool(_WHEN.search(turn))), float(bool(_CHOICE.search(turn)))


def _runs(content: list[Word]) -> list[list[Word]]:
    """Return the claim's names: contiguous capitalised words as one run, each number alone."""
    runs: list[list[Word]] = []
    for word in content:
        if word.kind == "number":
            runs.append([word])
        elif word.kind == "entity":
            if runs and runs[-1][-1].kind == "entity" and runs[-1][-1].index == word.index - 1:
                runs[-1].append(word)
            else:
                runs.append([word])
    return runs


def _distance(passage: Passage, a: list[Word], b: list[Word]) -> float:
    """Return the least token distance in the context between any word of run ``a`` and any word of run ``b``."""
    left = [p for x in a for p in passage.positions.get(x.key, ())[:20]]
    right = [q for y in b for q in passage.positions.get(y.key, ())[:20]]
    if not left or not right:
        return _PAIR_CAP
    return min(_PAIR_CAP, float(np.abs(np.subtract.outer(left, right)).min()))


def grounding_features(content: list[Word], passage: Passage, asks: tuple[float, float, float]) -> list[float]:
    """Return the grounding features (``GROUNDING_NAMES``) of one claim's content words."""
    runs = _runs(content)
    in_context = [any(w.key in passage.positions for w in run) for run in runs]
    in_question = [any(w.key in passage.question_keys for w in run) for run in runs]
    grounded = [run for run, c in zip(runs, in_context, strict=True) if c]
    question_only = sum(1.0 for c, q in zip(in_context, in_question, strict=True) if q and not c)
    nowhere = sum(1.0 for c, q in zip(in_context, in_question, strict=True) if not q and not c)
    years = sum(1.0 for run, c, q in zip(runs, in_context, in_question, strict=True)
                if not c and not q and run[0].kind == "number" and _YEAR.match(run[0].key))
    apart, worst = 0.0, 0.0
    for i, a in enumerate(grounded[:6]):
        for b in grounded[i + 1:6]:
            gap = _distance(passage, a, b)
            worst = max(worst, gap)
            apart += float(gap > _PAIR_SPAN)
    new_grounded = sum(1.0 for run, c, q in zip(runs, in_context, in_question, strict=True) if c and not q)
    asked = max(asks)
    # "Tom Hanks" where the context has only "Tom" (or "Hanks"): half a name is a different person.
    partial = sum(1.0 for run in runs if len(run) > 1 and 0 < sum(w.key in passage.positions for w in run) < len(run))
    return [float(len(runs)), len(grounded) / len(runs) if runs else 1.0, question_only, nowhere, years,
            apart, worst / _PAIR_CAP, *asks, new_grounded, nowhere * asked, partial]

"""HaluEval rows plus their perturbations as labelled answers, and their detector features."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from evals.halueval import TASKS, load_task
from evals.perturb import perturb
from evals.scorers.consistency import answer_features
from evals.scorers.passage import Passage
from evals.scorers.text import split_sentences, word_count


@dataclass(frozen=True, slots=True)
class Item:
    """One answer to judge: ``kind`` is "right", "hallucinated" or a perturbation kind; label 1 = hallucinated."""

    task: str
    row: int
    kind: str
    answer: str
    label: int
    context: str
    question: str

    @property
    def words(self) -> int:
        """Return the answer's word count (for length baselines)."""
        return word_count(self.answer)


def items_for(task: str, start: int, stop: int, with_perturbations: bool = True) -> list[Item]:
    """Return rows ``start:stop`` of a task as items: right, hallucinated and (optionally) perturbed answers."""
    items = []
    for offset, example in enumerate(load_task(task, start, stop)):
        row = start + offset
        items.append(Item(task, row, "right", example.right, 0, example.context, example.question))
        items.append(Item(task, row, "hallucinated", example.hallucinated, 1, example.context, example.question))
        if with_perturbations:
            # The seed is the row number, so a row's perturbations never depend on which other rows are built.
            for p in perturb(example.right, example.context, example.question, seed=row):
                items.append(Item(task, row, p.kind, p.answer, p.label, example.context, example.question))
    return items


def all_items(start: int, stop: int, tasks: tuple[str, ...] = TASKS) -> list[Item]:
    """Return the items of every task for rows ``start:stop``."""
    return [item for task in tasks for item in items_for(task, start, stop)]


def featurize(items: list[Item]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Return the answer feature matrix, the claim feature matrix, each claim's label and its item's index.

    A claim of a faithful answer is faithful and a claim of a HaluEval hallucinated answer is hallucinated; a
    claim of a perturbed answer is hallucinated only when the right answer of its row has no such sentence (the
    perturbation changed it), so the claim model learns from the edited claim, not from its untouched neighbours.
    """
    answers, claims, labels, owners = [], [], [], []
    passage: Passage | None = None
    key: tuple[str, str] | None = None
    right: dict[tuple[str, int], set[str]] = {
        (i.task, i.row): {s.text.strip() for s in split_sentences(i.answer)} for i in items if i.kind == "right"}
    for index, item in enumerate(items):
        if key != (item.context, item.question):
            key = (item.context, item.question)
            passage = Passage([item.context], item.question)
        assert passage is not None
        whole, per_claim = answer_features(item.answer, passage)
        answers.append(whole)
        own = right.get((item.task, item.row), set())
        for span, vector in zip(split_sentences(item.answer), per_claim, strict=True):
            claims.append(vector)
            owners.append(index)
            original = item.kind in ("right", "hallucinated")
            labels.append(item.label if original or item.label == 0 else int(span.text.strip() not in own))
    return (np.asarray(answers, dtype=np.float32), np.asarray(claims, dtype=np.float32).reshape(-1, len(answers[0])),
            np.asarray(labels, dtype=np.int64), np.asarray(owners, dtype=np.int64))

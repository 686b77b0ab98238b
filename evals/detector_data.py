"""HaluEval rows plus their perturbations as labelled answers, and their detector features."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from evals.halueval import TASKS, load_task
from evals.perturb import perturb
from evals.scorers.consistency import Passage, answer_features
from evals.scorers.text import word_count


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


def featurize(items: list[Item]) -> np.ndarray:
    """Return the detector feature matrix of ``items`` (one passage preparation per row)."""
    rows = []
    passage: Passage | None = None
    key: tuple[str, str] | None = None
    for item in items:
        if key != (item.context, item.question):
            key = (item.context, item.question)
            passage = Passage([item.context], item.question)
        assert passage is not None
        rows.append(answer_features(item.answer, passage)[0])
    return np.asarray(rows, dtype=np.float32)


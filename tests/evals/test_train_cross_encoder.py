"""The cross-encoder's training pairs: dev rows only, balanced, built the way the scorer reads them."""

from __future__ import annotations

from collections import Counter

import pytest

from evals.train_cross_encoder import TRAIN_ROWS, claim_pairs


def test_pairs_are_balanced_per_task_and_label() -> None:
    pairs = claim_pairs(rows=12, max_pairs=60, seed=1)
    counts = Counter((task, label) for _, _, label, task in pairs)
    assert set(counts) == {(t, label) for t in ("qa", "dialogue", "summarization") for label in (0, 1)}
    assert all(n <= 10 for n in counts.values())
    assert len({(premise, claim) for premise, claim, _, _ in pairs}) == len(pairs)


def test_a_minimal_edit_labels_only_its_edited_sentence() -> None:
    pairs = claim_pairs(rows=20, max_pairs=10_000, seed=1)
    labels: dict[str, set[int]] = {}
    for _, claim, label, task in pairs:
        if task == "summarization":
            labels.setdefault(claim, set()).add(label)
    # An untouched sentence of a perturbed summary is its right answer's sentence: never labelled hallucinated.
    assert all(len(found) == 1 for found in labels.values())
    assert {0, 1} <= set().union(*labels.values())


def test_the_calibration_rows_are_never_read() -> None:
    with pytest.raises(SystemExit, match="calibration rows"):
        claim_pairs(rows=TRAIN_ROWS + 1, max_pairs=10, seed=0)

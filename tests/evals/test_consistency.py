"""The claim-vs-passage features: the best window and the passage's other names, checked against plain loops."""

from __future__ import annotations

import itertools
import random

from evals.scorers.consistency import _WEIGHT, _best_window, claim_features
from evals.scorers.passage import Passage, words


def _naive_best_window(claim: str, passage: Passage) -> tuple[int, float]:
    """The window search written as the plain loop over windows it replaced."""
    content = [w for w in words(claim) if w.kind != "stop"]
    best, best_cover = -1, 0.0
    weight_all = sum(_WEIGHT[w.kind] for w in content) or 1.0
    for index, (keys, _) in enumerate(passage.windows):
        cover = sum(_WEIGHT[w.kind] for w in content if w.key in keys) / weight_all
        if cover > best_cover or (cover == best_cover and best >= 0
                                  and passage.window_question[index] > passage.window_question[best]):
            best, best_cover = index, cover
    return best, best_cover


def _text(rng: random.Random, sentences: int) -> str:
    vocabulary = ["river", "bridge", "Paris", "Lyon", "1998", "42", "built", "closed", "Marie", "tower", "old"]
    return " ".join(" ".join(rng.choice(vocabulary) for _ in range(rng.randint(2, 7))) + "." for _ in
                    range(sentences))


def test_the_best_window_matches_the_plain_loop_on_random_text() -> None:
    rng = random.Random(7)
    for _ in range(300):
        passage = Passage([_text(rng, rng.randint(0, 8))], rng.choice(["", "Which bridge in Paris was built?"]))
        claim = _text(rng, 1)
        content = [w for w in words(claim) if w.kind != "stop"]
        assert _best_window(content, passage) == _naive_best_window(claim, passage)


def test_ties_go_to_the_window_nearest_the_question_then_the_first() -> None:
    passage = Passage(["Marie built a tower. Marie built a bridge in Paris. Marie built a tower in Lyon."],
                      "Which bridge in Paris?")
    content = [w for w in words("Marie built it.") if w.kind != "stop"]
    best, cover = _best_window(content, passage)
    assert cover == 1.0 and best == 1  # all three sentences hold the claim; the second holds the question's words
    assert _best_window([], passage) == (-1, 0.0)
    assert _best_window(content, Passage([""], "")) == (-1, 0.0)


def test_a_claim_of_thousands_of_names_is_scored_with_every_name_seen() -> None:
    names = ["Z" + "".join("abcdefghij"[int(d)] for d in f"{i:04d}") for i in range(3000)]  # Zaaaa, Zaaab, ...
    passage = Passage([". ".join(f"{a} met {b}" for a, b in itertools.pairwise(names)) + "."], "")
    faithful = claim_features(" and ".join(names[:2000]), passage)
    swapped = claim_features(" and ".join([*names[:1999], names[-1]]), passage)  # the last name from far away
    assert faithful["missing_entities"] == swapped["missing_entities"] == 0.0
    # the 2,000th name was still looked at: unanchored, and displaced by the name it replaced
    assert swapped["anchor_min_name"] < faithful["anchor_min_name"]
    assert swapped["names_displaced"] == faithful["names_displaced"] + 1

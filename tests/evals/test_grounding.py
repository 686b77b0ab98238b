"""Grounding features: where a reply's names come from, and what the last turn asks for."""

from __future__ import annotations

from evals.scorers.consistency import FEATURE_NAMES, answer_features
from evals.scorers.grounding import GROUNDING_NAMES, last_turn, question_kind
from evals.scorers.passage import Passage

KNOWLEDGE = ("Fight Club is starring Jared Leto. Jared Leto starred in Panic Room. Panic Room was released in 2002 and "
             "is a thriller set in a house in New York. David Fincher directed Zodiac.")
HISTORY = "[Human]: Do you like Fight Club? [Assistant]: Yes! [Human]: Who else starred in it with Brad Pitt?"


def features(answer: str) -> dict[str, float]:
    whole, _ = answer_features(answer, Passage([KNOWLEDGE], HISTORY))
    return dict(zip(FEATURE_NAMES, whole, strict=True))


def test_the_last_user_turn_decides_what_is_asked() -> None:
    assert last_turn(HISTORY).strip() == "Who else starred in it with Brad Pitt?"
    assert question_kind(HISTORY) == (1.0, 0.0, 0.0)
    assert question_kind("[Human]: When was it released?") == (0.0, 1.0, 0.0)
    assert question_kind("Which film would you recommend?") == (0.0, 0.0, 1.0)


def test_names_are_told_apart_by_where_they_come_from() -> None:
    grounded = features("Jared Leto starred in it.")
    assert grounded["names_nowhere"] == 0.0 and grounded["names_grounded_fraction"] == 1.0
    assert grounded["supplies_new_grounded"] == 1.0
    # Brad Pitt is only in the chat history; Tom Hanks and 1999 are nowhere.
    invented = features("Brad Pitt and Tom Hanks starred in it in 1999.")
    assert invented["names_question_only"] == 1.0
    assert invented["names_nowhere"] == 2.0 and invented["years_nowhere"] == 1.0
    assert invented["nowhere_when_asked"] == 2.0
    assert invented["names_grounded_fraction"] == 0.0


def test_half_a_name_and_unrelated_names_count() -> None:
    assert features("I think Jared Smith starred in it.")["names_partial"] == 1.0
    assert features("I think Jared Leto starred in it.")["names_partial"] == 0.0
    related = features("Jared Leto starred in Panic Room.")
    unrelated = features("Jared Leto starred in Zodiac.")
    assert related["grounded_pairs_apart"] == 0.0
    assert unrelated["grounded_pairs_apart"] == 1.0
    assert unrelated["grounded_pair_distance"] > related["grounded_pair_distance"]


def test_grounding_features_are_part_of_the_detector_features() -> None:
    assert set(GROUNDING_NAMES) <= set(FEATURE_NAMES)
    assert FEATURE_NAMES[-11:][0] == "t1_unsupported_numbers"

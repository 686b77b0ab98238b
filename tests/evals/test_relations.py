"""Opposite words and names that traded places: contradictions that keep every word of the passage."""

from __future__ import annotations

from evals.scorers.consistency import claim_features
from evals.scorers.passage import Passage
from evals.scorers.relations import OPPOSITES, antonym_conflicts
from evals.scorers.text import token_key

MATCH = ("Liverpool were beaten 4-1 by Arsenal at the Emirates Stadium on Saturday. Alexis Sanchez scored twice "
         "before half-time, and Olivier Giroud added a third. Arsenal moved above Manchester United into second "
         "place.")


def _features(claim: str) -> tuple[float, float]:
    features = claim_features(claim, Passage([MATCH], ""))
    return features["antonym_conflicts"], features["role_conflicts"]


def test_opposites_are_symmetric_and_keyed_like_the_passage() -> None:
    assert token_key("lost") in OPPOSITES[token_key("won")] and token_key("won") in OPPOSITES[token_key("lost")]
    assert all(key in OPPOSITES[other] for key, others in OPPOSITES.items() for other in others)
    # An opposite counts only when the claim's own word is absent from the window.
    assert antonym_conflicts([token_key("below")], {token_key("above")}) == 1
    assert antonym_conflicts([token_key("below")], {token_key("above"), token_key("below")}) == 0
    assert antonym_conflicts([token_key("moved")], {token_key("above")}) == 0


def test_faithful_claims_raise_no_conflict() -> None:
    for claim in ("Liverpool were beaten 4-1 by Arsenal.", "Arsenal beat Liverpool 4-1.",
                  "Alexis Sanchez scored twice before half-time, and Olivier Giroud added a third.",
                  "Arsenal moved above Manchester United.", "Sanchez netted twice; Giroud got one more."):
        assert _features(claim) == (0.0, 0.0), claim


def test_opposites_and_traded_places_are_counted() -> None:
    assert _features("Arsenal moved below Manchester United.") == (1.0, 0.0)
    assert _features("Arsenal were beaten 4-1 by Liverpool.")[1] == 2.0
    assert _features("Olivier Giroud scored twice before half-time, and Alexis Sanchez added a third.")[1] == 2.0


def test_names_missing_from_the_passage_or_alone_are_not_role_conflicts() -> None:
    assert _features("Chelsea were beaten 4-1 by Arsenal.")[1] == 0.0
    assert _features("Sanchez scored twice.")[1] == 0.0
    assert _features("")[1] == 0.0


def test_a_claim_of_thousands_of_names_is_bounded() -> None:
    passage_text = " ".join(f"Name{i} met Person{i} today." for i in range(300))
    claim = " ".join(f"Person{i} met Name{i}" for i in range(3000)) + "."
    features = claim_features(claim, Passage([passage_text], ""))
    assert 0.0 <= features["role_conflicts"] <= 16.0

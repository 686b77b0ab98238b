"""The shipped tier-2 detector: loads from the repository, one decision for the answer and its claims."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from evals.detector_data import Item, featurize
from evals.scorers import default_scorer
from evals.scorers.claim_support import ClaimSupportScorer
from evals.scorers.consistency import FEATURE_NAMES
from evals.scorers.detector import (
    MODEL_DIR,
    HallucinationDetector,
    ScorerUnavailableError,
    answer_shape,
    calibrated,
    contradicted_numbers,
    detector_available,
    load_meta,
)
from evals.scorers.registry import make_scorer

CONTEXT = "Alice runs the broker for the fleet team. The broker listens on port 1883 since 2021."
QUESTION = "Who runs the broker?"


@pytest.fixture(scope="module")
def detector() -> HallucinationDetector:
    return HallucinationDetector()


def test_the_product_default_is_the_shipped_detector() -> None:
    assert detector_available() and isinstance(default_scorer(), HallucinationDetector)
    assert make_scorer("detector").name == "detector"
    meta = load_meta()
    assert set(meta.thresholds) == {"qa", "dialogue", "summary"} and (MODEL_DIR / "MODEL_CARD.md").is_file()


def test_flags_invented_and_negated_answers_not_restatements(detector: HallucinationDetector) -> None:
    right = detector.score(answer="Alice", contexts=[CONTEXT], question=QUESTION)
    restated = detector.score(answer="The correct answer is Alice.", contexts=[CONTEXT], question=QUESTION)
    invented = detector.score(answer="Bob runs the broker on Mars.", contexts=[CONTEXT], question=QUESTION)
    negated = detector.score(answer="It is not Alice.", contexts=[CONTEXT], question=QUESTION)
    assert right.score >= 0.5 and restated.score >= 0.5 and not right.unsupported_claims
    assert invented.score < 0.5 and invented.unsupported_claims
    assert {"Bob", "Mars"} <= set(invented.unsupported_claims[0].unsupported_terms)
    assert negated.score < right.score
    assert right.details["tier"] == 2 and 0 < right.details["threshold"] < 1


def test_claim_verdicts_follow_the_answer_decision(detector: HallucinationDetector) -> None:
    answers = ["Alice runs the broker. It listens on port 1883.", "Alice runs the broker. It listens on port 8080.",
               "Bob runs it. Alice runs the broker.", ""]
    for answer in answers:
        result = detector.score(answer=answer, contexts=[CONTEXT], question=QUESTION)
        assert (result.score < 0.5) == bool(result.unsupported_claims), answer
        assert all(0.0 <= c.support <= 1.0 for c in result.claims)


def test_shapes_and_calibration() -> None:
    assert answer_shape("") == "summary" and answer_shape("[Human]: hi [Assistant]: hello") == "dialogue"
    assert answer_shape("Who runs the broker?") == "qa"
    assert calibrated(0.3, 0.3) == 0.5 and calibrated(0.0, 0.3) == 0.0 and calibrated(1.0, 0.3) == 1.0


def test_a_missing_or_foreign_model_falls_back_to_tier_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert not detector_available(tmp_path)
    with pytest.raises(ScorerUnavailableError):
        HallucinationDetector(tmp_path)
    for name in ("detector.onnx", "detector.json"):
        shutil.copy(MODEL_DIR / name, tmp_path / name)
    meta = json.loads((tmp_path / "detector.json").read_text())
    (tmp_path / "detector.json").write_text(json.dumps({**meta, "features": meta["features"][:-1]}))
    assert not detector_available(tmp_path)
    monkeypatch.setattr("evals.scorers.detector.MODEL_DIR", tmp_path)
    monkeypatch.setattr("evals.scorers.detector.detector_available.__defaults__", (tmp_path,))
    fallback = default_scorer()
    assert isinstance(fallback, ClaimSupportScorer)
    assert fallback.score(answer="Alice", contexts=[CONTEXT], question=QUESTION).scorer == "claim_support"


def test_an_answer_is_as_bad_as_its_worst_claim(detector: HallucinationDetector) -> None:
    # The shipped model mixes the answer model with the claim model's worst claim (weights chosen on dev rows).
    meta = load_meta()
    assert set(meta.answer_weight) == {"qa", "dialogue", "summary"}
    assert all(0.0 <= w <= 1.0 for w in meta.answer_weight.values())
    answer_probs, claim_probs = np.array([0.2, 0.1, 0.3]), np.array([0.05, 0.9])
    whole, claims = HallucinationDetector.blend(answer_probs, claim_probs, 0.25)
    assert whole == pytest.approx(0.25 * 0.2 + 0.75 * 0.9)
    assert claims == pytest.approx([0.25 * 0.1 + 0.75 * 0.05, 0.25 * 0.3 + 0.75 * 0.9])
    assert HallucinationDetector.blend(answer_probs, claim_probs, 1.0) == (0.2, [0.1, 0.3])
    passage = detector.passage([CONTEXT], "")
    summary = "Alice runs the broker for the fleet team. The broker listens on port 1883 since 2021."
    edited = "Alice runs the broker for the fleet team. The broker listens on port 8080 since 1990."
    assert detector.decide(edited, passage)[0] > detector.decide(summary, passage)[0]


def test_the_claim_model_is_required_when_the_side_file_mixes_it_in(tmp_path: Path) -> None:
    for name in ("detector.onnx", "detector.json"):
        shutil.copy(MODEL_DIR / name, tmp_path / name)
    meta = json.loads((tmp_path / "detector.json").read_text())
    (tmp_path / "detector.json").write_text(json.dumps({**meta, "answer_weight": dict.fromkeys(meta["thresholds"],
                                                                                                0.5)}))
    assert not detector_available(tmp_path)
    shutil.copy(MODEL_DIR / "detector_claims.onnx", tmp_path / "detector_claims.onnx")
    assert detector_available(tmp_path)


def test_claim_labels_mark_the_edited_sentence_only() -> None:
    context = "Alice runs the broker. Bob fixes the sensors in Oslo."
    right, swapped = "Alice runs the broker. Bob fixes the sensors.", "Alice runs the broker. Oslo fixes the sensors."
    items = [Item("summarization", 0, "right", right, 0, context, ""),
             Item("summarization", 0, "entity_swap", swapped, 1, context, ""),
             Item("summarization", 0, "hallucinated", "Carol sells bikes. Bob repairs boats.", 1, context, "")]
    answers, claims, labels, owners = featurize(items)
    assert answers.shape == (3, len(FEATURE_NAMES)) and claims.shape == (6, len(FEATURE_NAMES))
    assert owners.tolist() == [0, 0, 1, 1, 2, 2] and labels.tolist() == [0, 0, 0, 1, 1, 1]


def test_nothing_is_supported_by_an_empty_context(detector: HallucinationDetector) -> None:
    for question in (QUESTION, "[Human]: Who runs it? [Assistant]: Let me see. [Human]: Who?", ""):
        result = detector.score(answer="Alice runs the broker. It listens on port 1883.", contexts=[],
                                question=question)
        assert result.score == 0.0 and len(result.unsupported_claims) == 2 and result.note
        assert result.details["ungrounded_claims"] == 2


def test_a_claim_the_context_does_not_mention_at_all_is_unsupported(detector: HallucinationDetector) -> None:
    unrelated = ["The weather is nice today. Paris has many cafes."]
    for question in (QUESTION, ""):
        result = detector.score(answer="Christopher Nolan directed Inception in 2010.", contexts=unrelated,
                                question=question)
        assert result.score < 0.5 and result.unsupported_claims and result.details["ungrounded_claims"] == 1
    # One shared content word takes a claim out of the rule: the models judge it.
    grounded = detector.score(answer="Alice runs the broker.", contexts=[CONTEXT], question=QUESTION)
    assert grounded.details["ungrounded_claims"] == 0 and grounded.score >= 0.5
    # Echoing the question adds nothing new, so an empty context does not make it ungrounded.
    echo = detector.score(answer="Who runs the broker?", contexts=[], question=QUESTION)
    assert echo.details["ungrounded_claims"] == 0


def test_opposites_and_names_that_traded_places_score_below_the_faithful_claim(
        detector: HallucinationDetector) -> None:
    match = ("Liverpool were beaten 4-1 by Arsenal at the Emirates Stadium on Saturday. Alexis Sanchez scored twice "
             "before half-time, and Olivier Giroud added a third. Arsenal moved above Manchester United into "
             "second place.")

    def score(answer: str) -> float:
        return detector.score(answer=answer, contexts=[match]).score

    faithful = score("Liverpool were beaten 4-1 by Arsenal. Arsenal moved above Manchester United.")
    assert score("Arsenal were beaten 4-1 by Liverpool. Arsenal moved above Manchester United.") < faithful
    assert score("Liverpool were beaten 4-1 by Arsenal. Arsenal moved below Manchester United.") < faithful


@pytest.mark.parametrize(("answer", "contradicted"), [
    ("Winds reached 140 mph in the storm.", ["140"]),  # the context: 97 mph
    ("600 flights were cancelled at Heathrow.", ["600"]),  # the context: 500 flights
    ("More than 600 flights were cancelled.", []),  # hedged: not contradicted
    ("The bridge was opened 95 years ago, in 1937, and 520 flights were cancelled.", []),  # within 10%
    ("The bridge was opened in 1932.", ["1932"]),  # the context: opened in 1937
    ("Winds reached 97 mph and 500 flights were cancelled.", []),
    ("The storm killed 3 people.", []),  # a number the context lacks, but nothing it says otherwise
    ("Winds reached ninety-seven mph.", []),
])
def test_a_number_the_context_gives_differently_is_unsupported(detector: HallucinationDetector, answer: str,
                                                                contradicted: list[str]) -> None:
    context = ("Winds reached 97 mph in Aberdaron. More than 500 flights were cancelled at Heathrow. The Golden Gate "
               "Bridge, which was opened in 1937, was closed.")
    assert contradicted_numbers(answer, detector.passage([context], "")) == contradicted
    for question in ("", "What happened in the storm?"):
        result = detector.score(answer=answer, contexts=[context], question=question)
        assert result.details["contradicted_claims"] == float(bool(contradicted))
        if contradicted:
            assert result.score == 0.0 and "another for the same thing" in result.note
            assert contradicted[0] in result.claims[0].unsupported_terms


def test_a_number_the_question_gives_is_not_contradicted(detector: HallucinationDetector) -> None:
    passage = detector.passage(["The bridge opened in 1937."], "Did the bridge open in 1932?")
    assert contradicted_numbers("No, the bridge opened in 1937, not 1932.", passage) == []


def test_numbers_written_differently_or_rounded_are_not_contradictions(detector: HallucinationDetector) -> None:
    passage = detector.passage(["Twenty-nine elephants live here. An estimated 15.9 million people need aid. The "
                                "record is 10,190 miles, set in 2001."], "")
    for claim in ("29 elephants live there.", "Almost 16 million people need aid.", "16 million people need aid.",
                  "The record is 10,190 miles."):
        assert contradicted_numbers(claim, passage) == [], claim
    assert contradicted_numbers("The record was set in 2003.", passage) == ["2003"]  # a year is exact
    assert contradicted_numbers("The record is 14,000 miles.", passage) == ["14,000"]

"""The shipped tier-2 detector: loads from the repository, one decision for the answer and its claims."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from evals.scorers import default_scorer
from evals.scorers.claim_support import ClaimSupportScorer
from evals.scorers.detector import (
    MODEL_DIR,
    HallucinationDetector,
    ScorerUnavailableError,
    answer_shape,
    calibrated,
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

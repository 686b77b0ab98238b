"""The detector's cross-encoder: what it reads, the shipped int8 model, and how the detector mixes it in."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from evals.scorers.cross_encoder import (
    CROSS_ENCODER_DIR,
    ContextIndex,
    CrossEncoder,
    load_cross_encoder_meta,
    premise_for,
)
from evals.scorers.detector import MODEL_DIR, HallucinationDetector, detector_available, load_meta
from evals.scorers.nli import ScorerUnavailableError
from evals.scorers.passage import Passage

DOCUMENT = ("The plant in Leeds opened in 1998. It employs 400 people. Maria Lopez has run it since 2015. "
            "The company sold its Bristol site to Orion Foods in 2019. Orion closed that site a year later.")


@pytest.fixture(scope="module")
def cross_encoder() -> CrossEncoder:
    return CrossEncoder()


def test_the_premise_is_the_question_turn_and_the_best_window() -> None:
    index = ContextIndex.build([DOCUMENT], "[Human]: Hi there. [Assistant]: Hello. [Human]: Who bought the site?")
    premise = premise_for("Orion Foods bought the Bristol site in 2019.", index)
    question, window = premise.split(" | ", 1)
    assert question.strip() == "Who bought the site?"
    assert "sold its Bristol site to Orion Foods in 2019" in window


def test_the_window_stays_within_its_word_budget_on_a_long_document() -> None:
    filler = " ".join(f"Sentence {i} talks about unrelated machinery number {i}." for i in range(400))
    index = ContextIndex.build([filler + " " + DOCUMENT + " " + filler], "")
    premise = premise_for("Maria Lopez has run the Leeds plant since 2015.", index)
    assert "Maria Lopez has run it since 2015" in premise and " | " not in premise
    assert len(premise.split()) <= 70


def test_an_empty_context_gives_an_empty_window() -> None:
    assert premise_for("Anything at all.", ContextIndex.build([""], "")) == ""
    assert premise_for("Anything.", ContextIndex.build([], "Why?")) == "Why? | "


def test_the_shipped_model_is_a_claim_window_model_with_a_card() -> None:
    meta = load_cross_encoder_meta()
    assert meta["labels"] == ["faithful", "hallucinated"] and meta["max_length"] <= 256
    assert (CROSS_ENCODER_DIR / "MODEL_CARD.md").is_file()
    assert not (CROSS_ENCODER_DIR / "model.fp32.onnx").exists()


def test_swapped_facts_score_above_the_faithful_claim(cross_encoder: CrossEncoder) -> None:
    index = ContextIndex.build([DOCUMENT], "")
    claims = ["Maria Lopez has run the Leeds plant since 2015.", "Orion Foods has run the Leeds plant since 2015.",
              "The company sold its Bristol site to Orion Foods in 2019.",
              "The company did not sell its Bristol site to Orion Foods."]
    probs = cross_encoder.probabilities([premise_for(c, index) for c in claims], claims)
    assert probs.shape == (4,) and np.all((probs >= 0) & (probs <= 1))
    assert probs[1] > probs[0] and probs[3] > probs[2]


def test_long_and_odd_inputs_are_scored_not_crashed(cross_encoder: CrossEncoder) -> None:
    huge = "word " * 5000
    probs = cross_encoder.probabilities([huge, "", "\u0000\u202e"], [huge, "A claim.", "\U0001f600"])
    assert probs.shape == (3,) and np.isfinite(probs).all()
    assert cross_encoder.probabilities([], []).shape == (0,)


def test_the_detector_mixes_the_cross_encoder_it_was_calibrated_with() -> None:
    meta = load_meta()
    detector = HallucinationDetector()
    assert max(meta.cross_encoder_weight.values()) > 0 and detector.cross_encoder is not None
    result = detector.score(answer="Orion Foods has run the Leeds plant since 2015.", contexts=[DOCUMENT])
    assert result.details["cross_encoder_weight"] == meta.cross_encoder_weight["summary"]


def test_mix_reads_only_the_claims_given() -> None:
    whole, claims = HallucinationDetector.mix(0.2, [0.1, 0.3, 0.05], {1: 0.9}, 0.5)
    assert whole == pytest.approx(0.55) and claims == pytest.approx([0.1, 0.6, 0.05])
    assert HallucinationDetector.mix(0.2, [0.1], {}, 0.5) == (0.2, [0.1])
    assert HallucinationDetector.mix(0.2, [0.1], {0: 0.9}, 0.0) == (0.2, [0.1])


def test_the_cross_encoder_reads_the_trees_most_suspect_claims() -> None:
    detector = HallucinationDetector()
    answer = "The plant opened in 1998. It employs 400 people. Orion Foods runs it."
    passage = Passage([DOCUMENT], "")
    read = detector.read_claims(answer, [0.1, 0.2, 0.7], passage, 2)
    assert sorted(read) == [1, 2] and all(0 <= p <= 1 for p in read.values())
    assert detector.read_claims(answer, [0.1, 0.2, 0.7], passage, 0) == {}


def test_a_missing_cross_encoder_falls_back_instead_of_shifting_thresholds(tmp_path: Path) -> None:
    models = tmp_path / "models"
    shutil.copytree(MODEL_DIR, models, ignore=shutil.ignore_patterns("cross_encoder"))
    assert detector_available(models)  # the trees are there; the shipped cross-encoder directory is still found
    missing = tmp_path / "no-cross-encoder"
    missing.mkdir()
    with pytest.raises(ScorerUnavailableError):
        HallucinationDetector(models, cross_encoder_dir=missing)
    with pytest.raises(ScorerUnavailableError):
        load_cross_encoder_meta(missing)


def test_a_foreign_model_directory_is_refused(tmp_path: Path) -> None:
    foreign = tmp_path / "ce"
    shutil.copytree(CROSS_ENCODER_DIR, foreign)
    meta = json.loads((foreign / "edgeloop.json").read_text("utf-8"))
    (foreign / "edgeloop.json").write_text(json.dumps(meta | {"premise": "context"}), "utf-8")
    with pytest.raises(ScorerUnavailableError, match="claim-window"):
        CrossEncoder(foreign)


def test_bad_mixing_weights_are_refused(tmp_path: Path) -> None:
    models = tmp_path / "models"
    shutil.copytree(MODEL_DIR, models, ignore=shutil.ignore_patterns("cross_encoder"))
    meta = json.loads((models / "detector.json").read_text("utf-8"))
    meta["cross_encoder"] = {"weight": {"qa": 1.5}, "claims_read": {"qa": 1}}
    (models / "detector.json").write_text(json.dumps(meta), "utf-8")
    with pytest.raises(ScorerUnavailableError, match="cross_encoder"):
        load_meta(models)

"""Tier 1 claim-support scorer on real text: flags, spans, determinism and bad input."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from evals.scorers import ClaimSupportScorer, Scorer, ScorerInputError, load_profiles
from evals.scorers.claim_support import FEATURE_NAMES

CONTEXT = [
    "Rollback procedure. Pause the rollout first. After 95% of devices report activated on the old version, "
    "close the incident. Mark the bad version as blocked in the registry.",
    "The MQTT broker is mosquitto and listens on port 1883. Restart it with systemctl restart mosquitto.",
]


@pytest.fixture
def scorer() -> ClaimSupportScorer:
    return ClaimSupportScorer()


def test_is_a_scorer(scorer: ClaimSupportScorer) -> None:
    assert isinstance(scorer, Scorer)


def test_supported_answer_outscores_unsupported_number_and_entity(scorer: ClaimSupportScorer) -> None:
    good = scorer.score(answer="Close the incident after 95% of devices report activated.", contexts=CONTEXT)
    bad = scorer.score(
        answer="Close the incident after 50% of devices report activated. Then page Microsoft support.",
        contexts=CONTEXT,
    )
    assert good.score > bad.score
    assert [c.verdict for c in good.claims] == ["supported"]
    number_claim, entity_claim = bad.claims
    assert number_claim.verdict == "unsupported"
    assert "50" in number_claim.unsupported_terms
    assert entity_claim.verdict == "unsupported"
    assert "Microsoft" in entity_claim.unsupported_terms
    assert len(bad.unsupported_claims) == 2


def test_best_supporting_span_points_into_the_right_context(scorer: ClaimSupportScorer) -> None:
    result = scorer.score(answer="The broker listens on port 1883.", contexts=CONTEXT)
    (claim,) = result.claims
    assert claim.verdict == "supported"
    assert claim.best_span is not None
    assert claim.best_span.context_index == 1
    assert claim.best_span.text == "The MQTT broker is mosquitto and listens on port 1883."
    assert CONTEXT[1][claim.best_span.start : claim.best_span.end] == claim.best_span.text


def test_claim_offsets_index_the_answer(scorer: ClaimSupportScorer) -> None:
    answer = "Pause the rollout first. Then restart mosquitto."
    result = scorer.score(answer=answer, contexts=CONTEXT)
    assert [answer[c.start : c.end] for c in result.claims] == [c.claim for c in result.claims]


def test_deterministic(scorer: ClaimSupportScorer) -> None:
    kwargs: dict[str, Any] = {
        "answer": "Restart mosquitto on port 8883 after Tuesday.",
        "contexts": CONTEXT,
        "question": "How?",
    }
    assert scorer.score(**kwargs) == ClaimSupportScorer().score(**kwargs)


def test_question_words_are_given_not_hallucinated(scorer: ClaimSupportScorer) -> None:
    context = ["Arthur's Magazine (1844-1846) was an American literary periodical."]
    with_q = scorer.score(
        answer="Arthur's Magazine was started first.", contexts=context, question="Which magazine was started first?"
    )
    without_q = scorer.score(answer="Arthur's Magazine was started first.", contexts=context)
    assert with_q.score > without_q.score


def test_empty_inputs_give_defined_results(scorer: ClaimSupportScorer) -> None:
    empty_answer = scorer.score(answer="", contexts=CONTEXT)
    assert empty_answer.score == 1.0 and empty_answer.claims == () and "empty answer" in empty_answer.note
    no_content = scorer.score(answer="Ok, sure.", contexts=CONTEXT)
    assert no_content.score == 1.0 and no_content.claims[0].verdict == "not_checkable"
    no_context = scorer.score(answer="Restart mosquitto on port 1883.", contexts=[])
    assert 0.0 <= no_context.score < 0.5 and "empty context" in no_context.note
    assert all(c.verdict == "unsupported" and c.best_span is None for c in no_context.claims)
    assert scorer.score(answer="Port 1883.", contexts=None).claims[0].verdict == "unsupported"
    for result in (empty_answer, no_content, no_context):
        assert math.isfinite(result.score)


def test_bad_input_raises_clear_errors(scorer: ClaimSupportScorer) -> None:
    with pytest.raises(ScorerInputError, match="limit is"):
        scorer.score(answer="a" * 1_000_000, contexts=CONTEXT)
    with pytest.raises(ScorerInputError, match="not valid UTF-8"):
        scorer.score(answer=b"port \xff\xfe 1883", contexts=CONTEXT)
    with pytest.raises(ScorerInputError, match="contexts\\[1\\] is not valid UTF-8"):
        scorer.score(answer="port 1883", contexts=["ok", b"\xc3\x28"])
    with pytest.raises(ScorerInputError, match="must be str or bytes"):
        scorer.score(answer=1883, contexts=CONTEXT)  # type: ignore[arg-type]
    # Valid UTF-8 bytes are fine.
    assert scorer.score(answer=b"port 1883", contexts=[c.encode() for c in CONTEXT]).score > 0


def test_profiles_match_features_and_unknown_profile_is_refused() -> None:
    profiles = load_profiles()
    assert {"default", "qa", "dialogue", "summarization"} <= set(profiles)
    assert all(len(p.weights) == len(FEATURE_NAMES) for p in profiles.values())
    with pytest.raises(KeyError, match="unknown claim-support profile"):
        ClaimSupportScorer("nope")


def test_result_refuses_nan() -> None:
    from evals.scorers import ScoreResult

    with pytest.raises(ValueError):
        ScoreResult(float("nan"), "x")
    with pytest.raises(ValueError):
        ScoreResult(1.5, "x")


def test_make_scorer_by_name(tmp_path: Path) -> None:
    from evals.scorers import SCORER_NAMES, LLMJudgeScorer, ScorerUnavailableError, make_scorer

    assert SCORER_NAMES == ("detector", "claim_support", "nli", "llm_judge")
    scorer = make_scorer("claim_support", profile="qa")
    assert isinstance(scorer, ClaimSupportScorer) and scorer.profile.name == "qa"
    judge = make_scorer("llm_judge", base_url="http://127.0.0.1:9/v1", model="m", retries=0)
    assert isinstance(judge, LLMJudgeScorer) and judge.config.model == "m"
    with pytest.raises(ScorerUnavailableError):
        make_scorer("nli", model_path=str(tmp_path / "missing.onnx"))
    with pytest.raises(ValueError, match="unknown scorer"):
        make_scorer("bleu")

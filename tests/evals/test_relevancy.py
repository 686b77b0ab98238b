"""Offline answer relevancy."""

from __future__ import annotations

from evals.scorers import AnswerRelevancyScorer


def test_on_topic_answer_scores_higher() -> None:
    scorer = AnswerRelevancyScorer()
    question = "How do I roll back a model version on the fleet?"
    on_topic = scorer.score(
        question=question, answer="Create a rollback rollout that targets the last good model version."
    )
    off_topic = scorer.score(question=question, answer="The broker listens on port 1883.")
    assert 0.0 <= off_topic.score < on_topic.score <= 1.0
    assert on_topic == scorer.score(
        question=question, answer="Create a rollback rollout that targets the last good model version."
    )


def test_empty_answer_or_question_is_zero_not_nan() -> None:
    scorer = AnswerRelevancyScorer()
    assert scorer.score(question="Why?", answer="").score == 0.0
    assert scorer.score(question="", answer="Because.").score == 0.0
    assert scorer.score(question="!!!", answer="???").score == 0.0

"""Build a faithfulness scorer by name, so eval runs can name their scorer in config."""

from __future__ import annotations

from typing import Any

from evals.scorers.base import Scorer

SCORER_NAMES = ("detector", "claim_support", "nli", "llm_judge")


def make_scorer(name: str, **options: Any) -> Scorer:
    """Return the named scorer; ``options`` go to its config (profile, model paths, judge endpoint)."""
    if name == "detector":
        from evals.scorers.detector import HallucinationDetector

        return HallucinationDetector()
    if name == "claim_support":
        from evals.scorers.claim_support import ClaimSupportScorer

        return ClaimSupportScorer(options.get("profile", "default"))
    if name == "nli":
        from evals.scorers.nli import NliScorer, load_nli_config

        labels = options.get("labels")
        config = load_nli_config(
            options.get("model_path"), options.get("tokenizer_path"), tuple(labels) if labels else None
        )
        return NliScorer(config, threads=int(options.get("threads", 0)))
    if name == "llm_judge":
        from evals.scorers.llm_judge import JudgeConfig, LLMJudgeScorer

        return LLMJudgeScorer(JudgeConfig(**options))
    raise ValueError(f"unknown scorer {name!r}; known: {', '.join(SCORER_NAMES)}")


def default_scorer() -> Scorer:
    """Return the product's offline faithfulness scorer: the shipped detector (tier 2), else tier 1.

    The result's ``scorer`` field ("detector" or "claim_support") says which tier scored.
    """
    from evals.scorers.detector import HallucinationDetector, detector_available

    if detector_available():
        return HallucinationDetector()
    from evals.scorers.claim_support import ClaimSupportScorer

    return ClaimSupportScorer("default")

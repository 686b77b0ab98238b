"""Build a faithfulness scorer by name, so eval runs can name their scorer in config."""

from __future__ import annotations

from typing import Any

from evals.scorers.base import Scorer

SCORER_NAMES = ("claim_support", "nli", "llm_judge")


def make_scorer(name: str, **options: Any) -> Scorer:
    """Return the named scorer; ``options`` go to its config (profile, model paths, judge endpoint)."""
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

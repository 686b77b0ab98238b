"""Faithfulness and relevancy scorers: offline lexical support, ONNX NLI, and an LLM judge."""

from evals.scorers.base import ClaimVerdict, Scorer, ScoreResult, SupportSpan
from evals.scorers.claim_support import ClaimSupportScorer, load_profiles
from evals.scorers.llm_judge import JudgeConfig, JudgeError, LLMJudgeScorer
from evals.scorers.nli import NliConfig, NliScorer, ScorerUnavailableError, load_nli_config
from evals.scorers.registry import SCORER_NAMES, default_scorer, make_scorer
from evals.scorers.relevancy import AnswerRelevancyScorer
from evals.scorers.text import MAX_INPUT_CHARS, ScorerInputError

__all__ = [
    "MAX_INPUT_CHARS",
    "SCORER_NAMES",
    "AnswerRelevancyScorer",
    "ClaimSupportScorer",
    "ClaimVerdict",
    "JudgeConfig",
    "JudgeError",
    "LLMJudgeScorer",
    "NliConfig",
    "NliScorer",
    "ScoreResult",
    "Scorer",
    "ScorerInputError",
    "ScorerUnavailableError",
    "SupportSpan",
    "default_scorer",
    "load_nli_config",
    "load_profiles",
    "make_scorer",
]

"""Tier 2: an NLI / cross-encoder model on onnxruntime, used when a model file is configured.

Point ``EDGELOOP_NLI_MODEL`` / ``EDGELOOP_NLI_TOKENIZER`` (or the constructor) at an ONNX export of a
sequence-pair classifier with an ``entailment`` label and its ``tokenizer.json``: an MNLI cross-encoder (premise =
one context sentence), or one trained on ``question | whole context`` premises (declared by ``"premise":
"context"`` in an ``edgeloop.json`` beside it). No NLI weights are bundled; the shipped detector's own
cross-encoder (``cross_encoder.py``) is a hallucination classifier, not an NLI model, and is used by the detector.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from evals.scorers.base import ClaimVerdict, Contexts, ScoreResult, SupportSpan, Verdict
from evals.scorers.text import coerce_contexts, coerce_text, content_tokens, split_sentences

MODEL_ENV = "EDGELOOP_NLI_MODEL"
TOKENIZER_ENV = "EDGELOOP_NLI_TOKENIZER"


class ScorerUnavailableError(RuntimeError):
    """Raised when a scorer's model files are not configured or not usable."""


@dataclass(frozen=True, slots=True)
class NliConfig:
    """Files and label layout of an ONNX sequence-pair classifier."""

    model_path: Path
    tokenizer_path: Path
    labels: tuple[str, ...]
    max_length: int = 512
    threshold: float = 0.5
    # "sentence": each claim against every context sentence (MNLI-style models); "context": each claim
    # against the question and the whole context, as the offline cross-encoder was trained.
    premise: Literal["sentence", "context"] = "sentence"

    @property
    def entailment_index(self) -> int:
        """Return the logit index of the entailment label."""
        return [label.lower() for label in self.labels].index("entailment")


def load_nli_config(
    model_path: str | None = None, tokenizer_path: str | None = None, labels: tuple[str, ...] | None = None
) -> NliConfig:
    """Resolve the model files (arguments, then env vars) and labels (argument, then config.json's id2label)."""
    model = model_path or os.environ.get(MODEL_ENV)
    tokenizer = tokenizer_path or os.environ.get(TOKENIZER_ENV)
    if not model or not Path(model).is_file():
        raise ScorerUnavailableError(f"no NLI model: set {MODEL_ENV} to an ONNX sequence-pair classifier")
    if not tokenizer:
        tokenizer = str(Path(model).with_name("tokenizer.json"))
    if not Path(tokenizer).is_file():
        raise ScorerUnavailableError(f"no NLI tokenizer: set {TOKENIZER_ENV} to its tokenizer.json")
    if labels is None:
        config_file = Path(model).with_name("config.json")
        if not config_file.is_file():
            raise ScorerUnavailableError("give the label order or put the model's config.json (id2label) beside it")
        id2label = json.loads(config_file.read_text("utf-8"))["id2label"]
        labels = tuple(id2label[str(i)] for i in range(len(id2label)))
    if "entailment" not in [label.lower() for label in labels]:
        raise ScorerUnavailableError(f"labels {labels} have no 'entailment' class")
    extra: dict[str, Any] = {}
    manifest = Path(model).with_name("edgeloop.json")
    if manifest.is_file():
        declared = json.loads(manifest.read_text("utf-8"))
        if declared.get("premise") not in (None, "sentence", "context"):
            raise ScorerUnavailableError(f"{manifest}: premise must be 'sentence' or 'context'")
        extra = {k: declared[k] for k in ("premise", "max_length", "threshold") if k in declared}
    return NliConfig(Path(model), Path(tokenizer), tuple(labels), **extra)


def pair_logits(session: Any, tokenizer: Any, input_names: set[str], premises: list[str],
                hypotheses: list[str]) -> np.ndarray:
    """Tokenise (premise, hypothesis) pairs as one padded batch and return the ONNX classifier's logits."""
    encodings = tokenizer.encode_batch(list(zip(premises, hypotheses, strict=True)))
    feeds = {
        "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
        "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
        "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
    }
    # Some exports drop token_type_ids: feed only what the graph declares.
    return np.asarray(session.run(None, {k: v for k, v in feeds.items() if k in input_names})[0], dtype=np.float64)


def context_premise(contexts: list[str], question: str | None) -> str:
    """Return the premise the context-mode cross-encoder sees; training builds it with this same function."""
    body = "\n".join(text.strip() for text in contexts if text.strip())
    # The question goes first: truncation trims the premise's tail, and the question is short.
    return f"{question.strip()} | {body}" if question and question.strip() else body


class NliScorer:
    """Entailment probability of each claim given its best context sentence; score = mean over claims."""

    name = "nli"

    def __init__(self, config: NliConfig, threads: int = 0) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        self.config = config
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(config.model_path), options, providers=["CPUExecutionProvider"])
        self.input_names = {i.name for i in self.session.get_inputs()}
        self.tokenizer: Any = Tokenizer.from_file(str(config.tokenizer_path))
        self.tokenizer.enable_truncation(max_length=config.max_length)
        self.tokenizer.enable_padding()

    def entailment(self, premises: list[str], hypotheses: list[str]) -> np.ndarray:
        """Return P(entailment) for each (premise, hypothesis) pair."""
        if not premises:
            return np.zeros(0)
        logits = pair_logits(self.session, self.tokenizer, self.input_names, premises, hypotheses)
        logits = logits - logits.max(axis=1, keepdims=True)
        probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        return np.asarray(probs[:, self.config.entailment_index], dtype=np.float64)

    def score(self, *, answer: str | bytes, contexts: Contexts, question: str | bytes | None = None) -> ScoreResult:
        """Score each claim against every context sentence and keep its most entailing sentence."""
        answer_text = coerce_text(answer, field="answer")
        context_texts = coerce_contexts(contexts)
        question_text = coerce_text(question, field="question")
        claims = [s for s in split_sentences(answer_text) if content_tokens(s.text)]
        if not claims:
            return ScoreResult(1.0, self.name, note="no checkable claim")
        if self.config.premise == "context":
            return self._score_against_context(claims, context_texts, question_text)
        sentences = [(i, s) for i, text in enumerate(context_texts) for s in split_sentences(text)]
        verdicts = []
        for claim in claims:
            if not sentences:
                verdicts.append(ClaimVerdict(claim.text, claim.start, claim.end, "unsupported", 0.0))
                continue
            probs = self.entailment([s.text for _, s in sentences], [claim.text] * len(sentences))
            best = int(np.argmax(probs))
            index, span = sentences[best]
            p = float(probs[best])
            verdict: Verdict = "supported" if p >= self.config.threshold else "unsupported"
            support_span = SupportSpan(index, span.start, span.end, span.text)
            verdicts.append(ClaimVerdict(claim.text, claim.start, claim.end, verdict, round(p, 6), (), support_span))
        score = float(np.mean([v.support for v in verdicts]))
        note = "" if sentences else "empty context: no claim can be supported"
        return ScoreResult(min(1.0, max(0.0, score)), self.name, tuple(verdicts), note=note)

    def _score_against_context(self, claims: list[Any], contexts: list[str], question: str | None) -> ScoreResult:
        """Score each claim against the question and the whole context in one batch."""
        if not any(text.strip() for text in contexts):
            verdicts = [ClaimVerdict(c.text, c.start, c.end, "unsupported", 0.0) for c in claims]
            return ScoreResult(0.0, self.name, tuple(verdicts), note="empty context: no claim can be supported")
        premise = context_premise(contexts, question)
        probs = self.entailment([premise] * len(claims), [c.text for c in claims])
        verdicts = []
        for claim, p in zip(claims, probs, strict=True):
            verdict: Verdict = "supported" if p >= self.config.threshold else "unsupported"
            verdicts.append(ClaimVerdict(claim.text, claim.start, claim.end, verdict, round(float(p), 6)))
        score = float(np.mean([v.support for v in verdicts]))
        return ScoreResult(min(1.0, max(0.0, score)), self.name, tuple(verdicts))

"""Score one dataset version: retrieve missing contexts, generate missing answers, score every claim."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from control_plane.rag import RagStore
from evals.metrics import mean_metric, ndcg_at_k, recall_at_k, reciprocal_rank
from evals.scorers.base import Scorer, ScoreResult
from evals.scorers.text import content_tokens, key_set, split_sentences

# A sample passes when its faithfulness reaches this and no claim is unsupported.
SAMPLE_PASS_FAITHFULNESS = 0.5
# Render a prompt version for one sample; return chat messages (generators turn them into an answer).
Renderer = Callable[[dict[str, Any]], list[dict[str, str]]]
Generator = Callable[[list[dict[str, str]], dict[str, Any]], str]


@dataclass(frozen=True, slots=True)
class RunPlan:
    """Everything one run needs besides the samples."""

    scorer: Scorer
    collection: str | None = None
    store: RagStore | None = None
    k: int = 4
    retrieval_mode: str = "lexical"
    renderer: Renderer | None = None
    generator: Generator | None = None


@dataclass(slots=True)
class SampleOutcome:
    """The result of one sample."""

    sample_index: int
    sample_id: str
    answer: str
    contexts: list[dict[str, Any]]
    metrics: dict[str, float]
    claims: list[dict[str, Any]]
    passed: bool
    note: str = ""
    labels: dict[str, Any] = field(default_factory=dict)
    generated: bool = False


class SampleError(ValueError):
    """One sample cannot be evaluated (missing answer without prompt, unrenderable prompt, ...)."""


def extractive_answer(messages: list[dict[str, str]], sample: dict[str, Any]) -> str:
    """Offline generator: the two context sentences sharing most words with the question, in context order."""
    question_keys = {t.key for t in content_tokens(sample["question"])}
    candidates: list[tuple[int, int, str]] = []
    for context in sample.get("_contexts", []):
        for span in split_sentences(context):
            candidates.append((len(question_keys & key_set(span.text)), len(candidates), span.text))
    best = sorted(candidates, key=lambda c: (-c[0], c[1]))[:2]
    return " ".join(text for _, _, text in sorted(best, key=lambda c: c[1]))


def token_f1(answer: str, reference: str) -> float:
    """Return SQuAD-style token F1 between an answer and the reference (content tokens, stemmed)."""
    predicted = Counter(t.key for t in content_tokens(answer))
    gold = Counter(t.key for t in content_tokens(reference))
    common = sum((predicted & gold).values())
    if not predicted or not gold or common == 0:
        return float(predicted == gold)
    precision, recall = common / sum(predicted.values()), common / sum(gold.values())
    return 2 * precision * recall / (precision + recall)


def _contexts(sample: dict[str, Any], plan: RunPlan) -> tuple[list[dict[str, Any]], dict[str, float]]:
    if sample.get("contexts") is not None:
        return [{"text": c, "source": "dataset"} for c in sample["contexts"] if c.strip()], {}
    assert plan.store is not None and plan.collection is not None
    hits = plan.store.search(plan.collection, sample["question"], k=plan.k, mode=plan.retrieval_mode)  # type: ignore[arg-type]
    contexts = [{"text": h.text, "source": h.source, "chunk_id": h.chunk_id, "score": round(h.score, 6)} for h in hits]
    relevant = set(sample.get("relevant_sources") or [])
    if not relevant:
        return contexts, {}
    ranked = list(dict.fromkeys(h.source for h in hits))
    return contexts, {"recall_at_k": recall_at_k(ranked, relevant, plan.k), "mrr": reciprocal_rank(ranked, relevant),
                      "ndcg_at_k": ndcg_at_k(ranked, relevant, plan.k)}


def _answer(sample: dict[str, Any], texts: list[str], plan: RunPlan, label: str) -> str:
    if sample.get("answer") is not None:
        return str(sample["answer"])
    if plan.renderer is None or plan.generator is None:
        raise SampleError(f"{label} has no answer (nor relevant_sources to check retrieval) and the run names "
                          "no prompt to generate one")
    variables = {"question": sample["question"], "context": "\n\n".join(texts), "contexts": texts,
                 **sample.get("variables", {})}
    messages = plan.renderer(variables)
    return plan.generator(messages, {**sample, "_contexts": texts})


def score_sample(index: int, sample: dict[str, Any], plan: RunPlan) -> SampleOutcome:
    """Evaluate one sample; raise SampleError when it cannot be."""
    sample_id = str(sample.get("id") or index)
    label = f"sample {index} ({sample_id!r})"
    contexts, metrics = _contexts(sample, plan)
    texts = [c["text"] for c in contexts]
    generated = sample.get("answer") is None
    if generated and plan.renderer is None and "recall_at_k" in metrics:
        # A retrieval-only sample (no answer, no prompt): judged on whether its sources were retrieved.
        rounded = {k: round(v, 6) for k, v in metrics.items()}
        return SampleOutcome(index, sample_id, "", contexts, rounded, [], metrics["recall_at_k"] >= 1.0,
                             "retrieval only: no answer to score", dict(sample.get("labels", {})))
    answer = _answer(sample, texts, plan, label)
    result: ScoreResult = plan.scorer.score(answer=answer, contexts=texts, question=sample["question"])
    checkable = [c for c in result.claims if c.verdict != "not_checkable"]
    unsupported = len(result.unsupported_claims)
    metrics.update({"faithfulness": result.score, "unsupported_claim_rate": unsupported / max(1, len(checkable)),
                    "hallucinated": float(unsupported > 0),
                    "answered": float(answered(result, texts, sample["question"]))})
    if sample.get("reference_answer"):
        metrics["answer_f1"] = token_f1(answer, sample["reference_answer"])
    metrics = {k: round(v, 6) for k, v in metrics.items()}
    passed = result.score >= SAMPLE_PASS_FAITHFULNESS and unsupported == 0
    notes = [n for n in (result.note, "" if contexts else "no context retrieved") if n]
    return SampleOutcome(index, sample_id, answer, contexts, metrics, [asdict(c) for c in result.claims], passed,
                         "; ".join(notes), dict(sample.get("labels", {})), generated)


def answered(result: ScoreResult, contexts: list[str], question: str) -> bool:
    """Return whether the answer states something the contexts support beyond the question's own words.

    Faithfulness alone rewards saying nothing: "I don't know.", "Sorry." and "That depends." are faithful, so a
    prompt that dodges every question would pass a faithfulness gate; a gate can pin ``answer_rate`` as well.
    """
    grounded = key_set(" ".join(contexts)) - key_set(question)
    return any(t.key in grounded for c in result.claims if c.verdict == "supported" for t in content_tokens(c.claim))


def aggregate(outcomes: list[SampleOutcome]) -> dict[str, float]:
    """Average every per-sample metric over the samples that have it; add pass and hallucination rates."""
    names = sorted({name for o in outcomes for name in o.metrics})
    totals = {name: mean_metric([o.metrics[name] for o in outcomes if name in o.metrics]) for name in names}
    if "hallucinated" in totals:  # absent when every sample was retrieval-only
        totals["hallucination_rate"] = totals.pop("hallucinated")
        totals["answer_rate"] = totals.pop("answered")
    totals["pass_rate"] = mean_metric([float(o.passed) for o in outcomes])
    return {k: round(v, 6) if math.isfinite(v) else 0.0 for k, v in sorted(totals.items())}

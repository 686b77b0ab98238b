"""Tier 3: an LLM judge behind any OpenAI-compatible endpoint (Ragas-style claims, then verification)."""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError

from evals.scorers.base import ClaimVerdict, Contexts, ScoreResult, SupportSpan
from evals.scorers.text import coerce_contexts, coerce_text, key_set, split_sentences

DECOMPOSE_PROMPT = (
    "Break the ANSWER into short, self-contained factual claims. Resolve pronouns. Skip greetings and opinions. "
    'Reply with JSON only: {"claims": ["...", "..."]}. Reply {"claims": []} if it states no facts.'
)
VERIFY_PROMPT = (
    "For each CLAIM decide whether the CONTEXT supports it. A claim is supported only if the context states or "
    "directly implies it; otherwise it is unsupported. Quote the shortest context passage that supports it "
    '(empty if none). Reply with JSON only: {"verdicts": [{"claim": "...", "verdict": "supported" | '
    '"unsupported", "evidence": "..."}]}, one verdict per claim, in order.'
)


class JudgeError(RuntimeError):
    """Raised when the judge gives no valid answer within its retries."""


class _Claims(BaseModel):
    claims: list[str] = Field(max_length=100)


class _Verdict(BaseModel):
    claim: str
    verdict: Literal["supported", "unsupported"]
    evidence: str = ""


class _Verdicts(BaseModel):
    verdicts: list[_Verdict]


@dataclass(frozen=True, slots=True)
class JudgeConfig:
    """Where and how to call the judge model."""

    base_url: str
    model: str
    api_key: str = "unused"
    timeout_s: float = 60.0
    retries: int = 2
    json_mode: bool = True
    max_context_chars: int = 24_000


_FENCE = re.compile(r"^```(?:json)?\s*|\s*```$", re.MULTILINE)


def parse_json_reply(text: str) -> Any:
    """Parse a model reply as JSON, tolerating code fences and prose around one JSON object."""
    cleaned = _FENCE.sub("", text.strip())
    try:
        return json.loads(cleaned)
    except json.JSONDecodeError:
        start, end = cleaned.find("{"), cleaned.rfind("}")
        if start == -1 or end <= start:
            raise
        return json.loads(cleaned[start : end + 1])


class LLMJudgeScorer:
    """Faithfulness = supported claims / claims, as judged by an LLM; every reply is schema-validated."""

    name = "llm_judge"

    def __init__(self, config: JudgeConfig, client: Any = None) -> None:
        from openai import OpenAI

        self.config = config
        # The openai client's own retries would hide failures from our accounting; we retry ourselves.
        self.client = client or OpenAI(
            base_url=config.base_url, api_key=config.api_key, timeout=config.timeout_s, max_retries=0
        )

    def _ask(self, system: str, user: str, schema: type[BaseModel]) -> Any:
        errors: list[str] = []
        for attempt in range(self.config.retries + 1):
            try:
                extra: dict[str, Any] = {"response_format": {"type": "json_object"}} if self.config.json_mode else {}
                reply = self.client.chat.completions.create(
                    model=self.config.model,
                    temperature=0,
                    messages=[{"role": "system", "content": system}, {"role": "user", "content": user}],
                    **extra,
                )
                content = reply.choices[0].message.content or ""
                return schema.model_validate(parse_json_reply(content))
            except (ValidationError, json.JSONDecodeError, IndexError, AttributeError) as exc:
                errors.append(f"attempt {attempt + 1}: invalid reply: {str(exc)[:200]}")
            except Exception as exc:
                errors.append(f"attempt {attempt + 1}: {type(exc).__name__}: {str(exc)[:200]}")
                time.sleep(min(2.0, 0.2 * 2**attempt))
        raise JudgeError("judge gave no valid reply: " + " | ".join(errors))

    def score(self, *, answer: str | bytes, contexts: Contexts, question: str | bytes | None = None) -> ScoreResult:
        """Decompose the answer into claims, verify each against the contexts, return the supported share."""
        answer_text = coerce_text(answer, field="answer")
        context_texts = coerce_contexts(contexts)
        question_text = coerce_text(question, field="question")
        if not answer_text.strip():
            return ScoreResult(1.0, self.name, note="empty answer: nothing to verify")
        user = (f"QUESTION: {question_text}\n" if question_text else "") + f"ANSWER: {answer_text}"
        claims = [c.strip() for c in self._ask(DECOMPOSE_PROMPT, user, _Claims).claims if c.strip()]
        if not claims:
            return ScoreResult(1.0, self.name, note="the judge found no factual claims")
        context_block = "\n\n".join(f"[{i}] {t}" for i, t in enumerate(context_texts))[: self.config.max_context_chars]
        listing = "\n".join(f"{i + 1}. {c}" for i, c in enumerate(claims))
        verified = self._ask(VERIFY_PROMPT, f"CONTEXT:\n{context_block or '(none)'}\n\nCLAIMS:\n{listing}", _Verdicts)
        verdicts = verified.verdicts
        if len(verdicts) != len(claims):
            raise JudgeError(f"judge returned {len(verdicts)} verdicts for {len(claims)} claims")
        results = []
        for claim, verdict in zip(claims, verdicts, strict=True):
            # With no context nothing can be supported, whatever the model says.
            supported = verdict.verdict == "supported" and bool(context_texts)
            # Decomposed claims are usually paraphrases; offsets are (0, 0) when the text is not verbatim.
            at = answer_text.find(claim)
            results.append(
                ClaimVerdict(
                    claim=claim,
                    start=max(0, at),
                    end=at + len(claim) if at >= 0 else 0,
                    verdict="supported" if supported else "unsupported",
                    support=1.0 if supported else 0.0,
                    best_span=locate_evidence(verdict.evidence, context_texts) if supported else None,
                )
            )
        share = sum(1 for r in results if r.verdict == "supported") / len(results)
        note = "" if context_texts else "empty context: no claim can be supported"
        return ScoreResult(share, self.name, tuple(results), note=note)


def locate_evidence(evidence: str, contexts: list[str]) -> SupportSpan | None:
    """Find the judge's quoted evidence in the contexts: exactly, else the sentence sharing most words."""
    quote = evidence.strip().strip('"')
    if not quote:
        return None
    for index, text in enumerate(contexts):
        at = text.find(quote)
        if at >= 0:
            return SupportSpan(index, at, at + len(quote), quote)
    wanted = key_set(quote)
    best: tuple[int, int, SupportSpan] | None = None
    for index, text in enumerate(contexts):
        for span in split_sentences(text):
            overlap = len(wanted & key_set(span.text))
            if overlap and (best is None or overlap > best[0]):
                best = (overlap, index, SupportSpan(index, span.start, span.end, span.text))
    return best[2] if best else None

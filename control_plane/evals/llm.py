"""The LLM tier: an OpenAI-compatible chat client, a claim-level judge and an answer generator.

The judge checks the same claims (sentences) the offline scorer splits, so both tiers report verdicts per claim.
Temperature 0 and a fixed seed keep a real model as repeatable as it allows.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import httpx

from evals.scorers.base import ClaimVerdict, Contexts, ScoreResult
from evals.scorers.text import coerce_contexts, coerce_text, split_sentences

JUDGE_SYSTEM = (
    "You are a strict fact checker. For each numbered claim, answer 'supported' only if the context states or "
    "directly implies it; otherwise 'unsupported'. Reply with JSON only: {\"verdicts\": [\"supported\", ...]} "
    "with exactly one verdict per claim, in order."
)
_JSON_OBJECT = re.compile(r"\{.*\}", re.DOTALL)


class LLMError(RuntimeError):
    """The LLM endpoint failed or answered something unusable."""


@dataclass(frozen=True, slots=True)
class LLMConfig:
    """Where the OpenAI-compatible endpoint is and which model to ask."""

    base_url: str
    model: str
    api_key: str | None = None
    timeout_seconds: float = 60.0


class ChatClient:
    """A minimal OpenAI-compatible ``/chat/completions`` client."""

    def __init__(self, config: LLMConfig, *, transport: httpx.BaseTransport | None = None) -> None:
        self.config = config
        headers = {"Authorization": f"Bearer {config.api_key}"} if config.api_key else {}
        self._http = httpx.Client(base_url=config.base_url.rstrip("/"), headers=headers,
                                  timeout=config.timeout_seconds, transport=transport)

    def complete(self, messages: list[dict[str, str]], *, model: str | None = None,
                 temperature: float = 0.0, max_tokens: int | None = None) -> str:
        """Return the assistant text for ``messages``."""
        body: dict[str, Any] = {"model": model or self.config.model, "messages": messages,
                                "temperature": temperature, "seed": 0}
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
        try:
            response = self._http.post("/chat/completions", json=body)
            response.raise_for_status()
            return str(response.json()["choices"][0]["message"]["content"])
        except (httpx.HTTPError, KeyError, IndexError, TypeError, ValueError) as exc:
            raise LLMError(f"LLM call to {self.config.base_url} failed: {exc}") from exc

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._http.close()


class LLMJudgeScorer:
    """Score an answer by the share of its claims an LLM judges supported by the contexts."""

    name = "llm_judge"

    def __init__(self, client: ChatClient) -> None:
        self.client = client

    def score(self, *, answer: str | bytes, contexts: Contexts, question: str | bytes | None = None) -> ScoreResult:
        """Ask for one verdict per claim; an answer without claims scores 1.0."""
        answer_text = coerce_text(answer, field="answer")
        context_text = "\n\n".join(coerce_contexts(contexts))
        spans = split_sentences(answer_text)
        if not spans:
            return ScoreResult(1.0, self.name, (), note="empty answer: nothing to verify")
        claims = "\n".join(f"{i}. {s.text}" for i, s in enumerate(spans, start=1))
        user = f"Question: {coerce_text(question, field='question')}\n\nContext:\n{context_text}\n\nClaims:\n{claims}"
        reply = self.client.complete([{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": user}])
        verdicts = _parse_verdicts(reply, len(spans))
        claim_verdicts = tuple(
            ClaimVerdict(s.text, s.start, s.end, v, 1.0 if v == "supported" else 0.0)  # type: ignore[arg-type]
            for s, v in zip(spans, verdicts, strict=True)
        )
        supported = sum(1 for v in verdicts if v == "supported")
        return ScoreResult(round(supported / len(spans), 9), self.name, claim_verdicts,
                           note="" if context_text else "empty context: no content can be supported")


def _parse_verdicts(reply: str, expected: int) -> list[str]:
    match = _JSON_OBJECT.search(reply)
    try:
        if match is None:
            raise ValueError("no JSON object")
        verdicts = json.loads(match.group(0))["verdicts"]
    except (ValueError, KeyError, TypeError) as exc:
        raise LLMError(f"LLM judge reply is not the JSON asked for: {reply[:200]!r}") from exc
    if (not isinstance(verdicts, list) or len(verdicts) != expected
            or any(v not in ("supported", "unsupported") for v in verdicts)):
        raise LLMError(f"LLM judge must return {expected} verdicts of supported/unsupported, got {reply[:200]!r}")
    return [str(v) for v in verdicts]

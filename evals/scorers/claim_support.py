"""Tier 1 offline scorer: claim-level lexical support of an answer by its contexts."""

from __future__ import annotations

import json
import math
from bisect import bisect_left
from collections import OrderedDict
from dataclasses import dataclass
from importlib import resources

from evals.scorers.base import ClaimVerdict, Contexts, ScoreResult, SupportSpan, Verdict
from evals.scorers.readable import foreign_words, read_inputs
from evals.scorers.text import (
    Span,
    Token,
    content_tokens,
    keyed_tokens,
    split_sentences,
)

FEATURE_NAMES = (
    "unsupported_numbers",
    "unsupported_entities",
    "unsupported_words",
    "unsupported_fraction",
    "novel_bigram_fraction",
    "novel_trigram_fraction",
    "log_unsupported",
    "unsupported_name_fraction",
    "worst_claim_unsupported",
    "log_novel_bigrams",
    "context_support_fraction",
)
_KIND_WEIGHT = {"number": 3.0, "entity": 2.0, "word": 1.0}
# A claim whose weighted content is at least this well covered (and names no unknown number or name) passes.
SUPPORTED_AT = 0.75


@dataclass(frozen=True, slots=True)
class Profile:
    """Logistic weights that turn the support features into a score (fitted on a dev split)."""

    name: str
    weights: tuple[float, ...]
    bias: float
    fitted_on: str = ""


def load_profiles() -> dict[str, Profile]:
    """Load the bundled profiles from ``profiles.json``."""
    raw = json.loads(resources.files("evals.scorers").joinpath("profiles.json").read_text("utf-8"))
    if tuple(raw.get("features", FEATURE_NAMES)) != FEATURE_NAMES:
        raise ValueError("profiles.json was fitted on other features; refit with python -m evals.halueval --fit")
    return {
        name: Profile(name, tuple(float(w) for w in spec["weights"]), float(spec["bias"]), spec.get("fitted_on", ""))
        for name, spec in raw["profiles"].items()
    }


def _ngrams_of(keys: list[str], n: int) -> set[tuple[str, ...]]:
    return set(zip(*(keys[i:] for i in range(n)), strict=False))


def _ngrams(text: str, n: int) -> set[tuple[str, ...]]:
    return _ngrams_of([key for _, key in keyed_tokens(text)], n)


@dataclass(slots=True)
class _Evidence:
    """Preprocessed context and question, reused across claims."""

    context_keys: set[str]
    given_keys: set[str]
    bigrams: set[tuple[str, ...]]
    trigrams: set[tuple[str, ...]]
    sentences: list[tuple[int, Span, set[str]]]

    @classmethod
    def build(cls, contexts: list[str], question: str) -> _Evidence:
        # Tokenise each text once; sentence key sets are slices of the token list found by offset.
        evidence = cls(set(), set(), set(), set(), [])
        for index, text in enumerate([*contexts, question]):
            tokens = keyed_tokens(text)
            keys = [key for _, key in tokens]
            (evidence.given_keys if index == len(contexts) else evidence.context_keys).update(keys)
            evidence.bigrams |= _ngrams_of(keys, 2)
            evidence.trigrams |= _ngrams_of(keys, 3)
            if index == len(contexts):
                break
            starts = [start for start, _ in tokens]
            for span in split_sentences(text):
                low, high = bisect_left(starts, span.start), bisect_left(starts, span.end)
                evidence.sentences.append((index, span, set(keys[low:high])))
        return evidence

    def unsupported(self, tokens: list[Token]) -> list[Token]:
        """Return the tokens neither the context nor the question contains."""
        return [t for t in tokens if t.key not in self.context_keys and t.key not in self.given_keys]


def _unsupported_share(tokens: list[Token], evidence: _Evidence) -> float:
    total = sum(_KIND_WEIGHT[t.kind] for t in tokens)
    return sum(_KIND_WEIGHT[t.kind] for t in evidence.unsupported(tokens)) / total if total else 0.0


def support_features(answer: str, evidence: _Evidence) -> list[float]:
    """Return the feature vector (see ``FEATURE_NAMES``) of a whole answer."""
    tokens = content_tokens(answer)
    missing = evidence.unsupported(tokens)
    by_kind = {kind: sum(1 for t in missing if t.kind == kind) for kind in ("number", "entity", "word")}
    names = sum(1 for t in tokens if t.kind != "word")
    bigrams = _ngrams(answer, 2)
    trigrams = _ngrams(answer, 3)
    novel_bigrams = len(bigrams - evidence.bigrams)
    worst_claim = max(
        (_unsupported_share(content_tokens(s.text), evidence) for s in split_sentences(answer)), default=0.0
    )
    in_context = sum(1 for t in tokens if t.key in evidence.context_keys)
    return [
        float(by_kind["number"]),
        float(by_kind["entity"]),
        float(by_kind["word"]),
        len(missing) / max(1, len(tokens)),
        novel_bigrams / max(1, len(bigrams)),
        len(trigrams - evidence.trigrams) / max(1, len(trigrams)),
        math.log1p(len(missing)),
        (by_kind["number"] + by_kind["entity"]) / max(1, names),
        worst_claim,
        math.log1p(novel_bigrams),
        in_context / max(1, len(tokens)),
    ]


def _best_span(claim_keys: set[str], evidence: _Evidence) -> SupportSpan | None:
    best: tuple[float, int, Span] | None = None
    for index, span, keys in evidence.sentences:
        overlap = len(claim_keys & keys)
        # Earlier spans win ties, so the result is deterministic.
        if overlap and (best is None or overlap > best[0]):
            best = (overlap, index, span)
    if best is None:
        return None
    return SupportSpan(context_index=best[1], start=best[2].start, end=best[2].end, text=best[2].text)


def _claim_verdict(span: Span, evidence: _Evidence) -> ClaimVerdict:
    tokens = content_tokens(span.text)
    if not tokens:
        return ClaimVerdict(span.text, span.start, span.end, "not_checkable", 1.0)
    missing = evidence.unsupported(tokens)
    total = sum(_KIND_WEIGHT[t.kind] for t in tokens)
    support = 1.0 - sum(_KIND_WEIGHT[t.kind] for t in missing) / total
    names_unknown = any(t.kind in ("number", "entity") for t in missing)
    verdict: Verdict = "supported" if support >= SUPPORTED_AT and not names_unknown else "unsupported"
    best = _best_span({t.key for t in tokens}, evidence)
    unique_missing = tuple(dict.fromkeys(t.surface for t in missing))
    return ClaimVerdict(span.text, span.start, span.end, verdict, round(support, 6), unique_missing, best)


def _unreadable_verdict(span: Span) -> ClaimVerdict:
    return ClaimVerdict(span.text, span.start, span.end, "unsupported", 0.0, tuple(foreign_words(span.text)))


class ClaimSupportScorer:
    """Score an answer by how much of its content (numbers, names, words, phrases) the context supports."""

    name = "claim_support"

    def __init__(self, profile: str | Profile = "default") -> None:
        self.profile = profile if isinstance(profile, Profile) else _profile_named(profile)
        # Answers are usually scored in groups against the same context (pairs, prompt variants): reuse its index.
        self._evidence: OrderedDict[tuple[tuple[str, ...], str], _Evidence] = OrderedDict()

    def _evidence_for(self, contexts: list[str], question: str) -> _Evidence:
        key = (tuple(contexts), question)
        if key in self._evidence:
            self._evidence.move_to_end(key)
            return self._evidence[key]
        evidence = self._evidence[key] = _Evidence.build(contexts, question)
        if len(self._evidence) > 32:
            self._evidence.popitem(last=False)
        return evidence

    def score(self, *, answer: str | bytes, contexts: Contexts, question: str | bytes | None = None) -> ScoreResult:
        """Score one answer; an empty answer scores 1.0 (it claims nothing)."""
        inputs = read_inputs(answer, contexts, question)
        answer_text, context_texts, foreign = inputs.answer, inputs.context_texts, inputs.foreign
        if not answer_text.strip():
            return ScoreResult(1.0, self.name, (), note="empty answer: nothing to verify")
        if not inputs.checkable:
            return ScoreResult(1.0, self.name, inputs.not_checkable(),
                               note="no checkable content (no names, numbers or content words)")
        evidence = self._evidence_for(context_texts, inputs.question)
        features = support_features(answer_text, evidence)
        claims = tuple(inputs.restore(_unreadable_verdict(span) if is_foreign else _claim_verdict(span, evidence))
                       for span, is_foreign in zip(inputs.spans, foreign, strict=True))
        # Text in another script has no token this tier can read: nothing in it can count as supported.
        score = 0.0 if any(foreign) else _logistic_support(features, self.profile)
        notes = ["" if context_texts else "empty context: no content can be supported",
                 f"{sum(foreign)} claim(s) with words in a script this tier cannot read: unsupported" if any(foreign)
                 else ""]
        return ScoreResult(score, self.name, claims, note="; ".join(n for n in notes if n),
                           details=dict(zip(FEATURE_NAMES, features, strict=True)))


def _logistic_support(features: list[float], profile: Profile) -> float:
    logit = profile.bias + sum(w * x for w, x in zip(profile.weights, features, strict=True))
    # Clip the logit so exp() never overflows; the score stays strictly inside [0, 1].
    logit = max(-50.0, min(50.0, logit))
    return round(1.0 / (1.0 + math.exp(logit)), 9)


def _profile_named(name: str) -> Profile:
    profiles = load_profiles()
    if name not in profiles:
        raise KeyError(f"unknown claim-support profile {name!r}; known: {sorted(profiles)}")
    return profiles[name]

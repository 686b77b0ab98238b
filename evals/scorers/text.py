"""Text helpers shared by the scorers: input validation, sentences, tokens, stems."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple

# Bigger inputs are refused rather than scored slowly: a 1 MB "answer" is a bug upstream, not an answer.
MAX_INPUT_CHARS = 200_000

_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[\"'(\[]?[A-Z0-9])|\n\s*\n|\n(?=\s*[-*\d]+[.)]?\s)")
_TOKEN = re.compile(r"[A-Za-z0-9]+(?:[.,'\u2019][A-Za-z0-9]+)*")
_HAS_DIGIT = re.compile(r"\d")
# A token after one of these starts a sentence (its capital says nothing about being a name).
SENTENCE_BREAK = re.compile(r"[.!?\n:\[\]]")

STOPWORDS_WORDS = """
a about above after again against all also am an and any are aren't as at be because been before being below
between both but by can could d did didn't do does doing don't down during each few for from further get got
had has have having he her here hers herself him himself his how i i'm if in into is isn't it it's its
itself just know let like ll m me more most my myself no nor not now o of off oh ok okay on once one only or
other our ours ourselves out over own re really s same she should so some such sure t than that that's the
their theirs them themselves then there these they think this those through to too under until up ve very
was wasn't we well were what when where which while who whom why will with would y yeah yes you you're your
yours yourself yourselves
"""
STOPWORDS = frozenset(STOPWORDS_WORDS.split())


class ScorerInputError(ValueError):
    """Raised when a scorer input cannot be scored (wrong type, bad encoding, too large)."""


def coerce_text(value: str | bytes | None, *, field: str, max_chars: int = MAX_INPUT_CHARS) -> str:
    """Return ``value`` as ``str``, decoding UTF-8 bytes and refusing undecodable or oversized input."""
    if value is None:
        return ""
    if isinstance(value, bytes | bytearray):
        try:
            value = bytes(value).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ScorerInputError(f"{field} is not valid UTF-8 (byte {exc.start}): decode it first") from exc
    if not isinstance(value, str):
        raise ScorerInputError(f"{field} must be str or bytes, got {type(value).__name__}")
    if len(value) > max_chars:
        raise ScorerInputError(f"{field} has {len(value)} characters; the limit is {max_chars}")
    return value


def coerce_contexts(
    contexts: str | bytes | Sequence[str | bytes] | None, *, max_chars: int = MAX_INPUT_CHARS
) -> list[str]:
    """Return the contexts as a list of strings, validated like :func:`coerce_text`."""
    if contexts is None:
        return []
    if isinstance(contexts, str | bytes | bytearray):
        contexts = [contexts]
    texts = [coerce_text(c, field=f"contexts[{i}]", max_chars=max_chars) for i, c in enumerate(contexts)]
    if sum(len(t) for t in texts) > max_chars * 5:
        raise ScorerInputError(f"contexts total more than {max_chars * 5} characters")
    return [t for t in texts if t.strip()]


@dataclass(frozen=True, slots=True)
class Span:
    """A character span of a text."""

    start: int
    end: int
    text: str


def split_sentences(text: str) -> list[Span]:
    """Split ``text`` into sentence spans (keeps offsets; blank pieces dropped)."""
    spans: list[Span] = []
    start = 0
    for match in _SENTENCE_END.finditer(text):
        _append_span(spans, text, start, match.start())
        start = match.end()
    _append_span(spans, text, start, len(text))
    return spans


def _append_span(spans: list[Span], text: str, start: int, end: int) -> None:
    piece = text[start:end]
    stripped = piece.strip()
    if stripped:
        offset = start + piece.index(stripped[0])
        spans.append(Span(offset, offset + len(stripped), stripped))


def stem(word: str) -> str:
    """Return a crude suffix-stripped form of a lowercase word (enough to match plurals and tenses)."""
    if len(word) <= 3 or _HAS_DIGIT.search(word):
        return word
    for suffix in ("ies", "ied"):
        if word.endswith(suffix) and len(word) > 4:
            return word[:-3] + "y"
    for suffix in ("ing", "ed", "es", "ly", "s"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)]
    return word


class Token(NamedTuple):
    """One word of a text with its kind, used to weigh unsupported content."""

    surface: str
    key: str
    kind: str  # "number" | "entity" | "word"


def content_tokens(text: str) -> list[Token]:
    """Return the content tokens of ``text``: numbers, capitalised names, and non-stopword words."""
    return list(_content_tokens(text))


# Scorers tokenise one claim several times (its features, its answer's, its verdict): a small cache pays.
@lru_cache(maxsize=1 << 12)
def _content_tokens(text: str) -> tuple[Token, ...]:
    tokens: list[Token] = []
    previous_end = 0
    for match in _TOKEN.finditer(text):
        surface = match.group(0)
        lower = surface.lower().replace("\u2019", "'")
        # A capital after a sentence boundary says nothing about being a name.
        gap = text[previous_end : match.start()]
        sentence_start = previous_end == 0 or (gap != " " and SENTENCE_BREAK.search(gap) is not None)
        previous_end = match.end()
        if not surface.isalpha() and _HAS_DIGIT.search(surface):
            tokens.append(Token(surface, token_key(surface), "number"))
        elif lower not in STOPWORDS:
            is_name = surface[0].isupper() and not sentence_start
            tokens.append(Token(surface, token_key(surface), "entity" if is_name else "word"))
    return tuple(tokens)


def word_count(text: str) -> int:
    """Return the number of word tokens in ``text``."""
    return sum(1 for _ in _TOKEN.finditer(text))


@lru_cache(maxsize=1 << 16)
def token_key(surface: str) -> str:
    """Return the comparison key of one token: digits without separators, else the stem before any apostrophe."""
    lower = surface.lower().replace("\u2019", "'")
    if _HAS_DIGIT.search(lower):
        return lower.replace(",", "")
    return stem(lower.split("'")[0])


def keyed_tokens(text: str) -> list[tuple[int, str]]:
    """Return (start offset, key) for every token of ``text``."""
    return [(m.start(), token_key(m.group(0))) for m in _TOKEN.finditer(text)]


def key_set(text: str) -> set[str]:
    """Return the set of comparison keys of all (not only content) tokens of ``text``."""
    return {token_key(m.group(0)) for m in _TOKEN.finditer(text)}

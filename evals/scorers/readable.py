"""What the offline tiers can read: Unicode folded to the forms they tokenise, and text in other scripts found.

The offline tokeniser reads ASCII letters and digits. Without folding, a name in fullwidth letters (U+FF21...)
or with a zero-width space inside (U+200B) is hidden from it; without a script check, an answer in Cyrillic or
Chinese has no token at all and would pass as "nothing to check". Folding keeps a map back to the original
characters, so claim offsets still index the text the caller sent.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import lru_cache

from evals.scorers.base import ClaimVerdict

# A claim is unreadable when more than this share of its letters are outside the Latin script.
FOREIGN_SHARE = 0.5
_WORD = re.compile(r"\w+")


@dataclass(frozen=True, slots=True)
class Folded:
    """A text folded with NFKC, invisible format characters removed; ``origin[i]`` = where char i came from."""

    text: str
    origin: tuple[int, ...] | None  # None: folding changed nothing (the common, ASCII case)
    original_length: int

    def span(self, start: int, end: int) -> tuple[int, int]:
        """Return the original-text span of the folded span ``start:end``."""
        if self.origin is None:
            return start, end
        if start >= end:
            position = self.origin[start] if start < len(self.origin) else self.original_length
            return position, position
        return self.origin[start], self.origin[end - 1] + 1


@lru_cache(maxsize=4096)
def _fold_char(char: str) -> str:
    if unicodedata.category(char) == "Cf":  # zero-width spaces and joiners, soft hyphens, bidi controls
        return ""
    return unicodedata.normalize("NFKC", char)


def fold(text: str) -> Folded:
    """Fold ``text`` character by character (fullwidth to ASCII, ligatures split, format characters dropped)."""
    if text.isascii():
        return Folded(text, None, len(text))
    parts: list[str] = []
    origin: list[int] = []
    for index, char in enumerate(text):
        folded = char if char.isascii() else _fold_char(char)
        parts.append(folded)
        origin.extend([index] * len(folded))
    out = "".join(parts)
    return Folded(out, None, len(text)) if out == text else Folded(out, tuple(origin), len(text))


@lru_cache(maxsize=4096)
def _latin(char: str) -> bool:
    return unicodedata.name(char, "").startswith("LATIN")


def foreign_words(text: str) -> list[str]:
    """Return the words of ``text`` written mostly in a script other than Latin (the offline tiers cannot read)."""
    if text.isascii():
        return []
    return [w for w in _WORD.findall(text) if not w.isascii() and _foreign_share(w) > FOREIGN_SHARE]


def _foreign_share(text: str) -> float:
    letters = [c for c in text if c.isalpha()]
    foreign = sum(1 for c in letters if not c.isascii() and not _latin(c))
    return foreign / len(letters) if letters else 0.0


def unreadable(text: str) -> bool:
    """Return whether most of the letters of ``text`` are outside the Latin script."""
    return not text.isascii() and _foreign_share(text) > FOREIGN_SHARE


def restore(verdict: ClaimVerdict, answer: str, folded: Folded,
            contexts: Sequence[tuple[str, Folded]] = ()) -> ClaimVerdict:
    """Return ``verdict`` with its claim and best span as the caller's text and offsets, not the folded text's."""
    start, end = folded.span(verdict.start, verdict.end)
    best = verdict.best_span
    if best is not None and best.context_index < len(contexts):
        context, context_folded = contexts[best.context_index]
        low, high = context_folded.span(best.start, best.end)
        best = replace(best, start=low, end=high, text=context[low:high])
    return replace(verdict, claim=answer[start:end], start=start, end=end, best_span=best)

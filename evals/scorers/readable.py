"""What the offline tiers can read: Unicode folded to the forms they tokenise, and text in other scripts found.

The offline tokeniser reads ASCII letters and digits. Without folding, a name in fullwidth letters (U+FF21...)
or with a zero-width space inside (U+200B) is hidden from it; without a script check, an answer in Cyrillic or
Chinese has no token at all and would pass as "nothing to check". Folding keeps a map back to the original
characters, so claim offsets still index the text the caller sent.
"""

from __future__ import annotations

import re
import unicodedata
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import lru_cache

from evals.scorers.base import ClaimVerdict, Contexts
from evals.scorers.framing import normalise
from evals.scorers.text import Span, coerce_contexts, coerce_text, content_tokens, split_sentences

# A claim is unreadable when more than this share of its letters are outside the Latin script.
FOREIGN_SHARE = 0.5
_WORD = re.compile(r"\w+")
_NON_ASCII = re.compile(r"[^\x00-\x7f]")
_MAX = 1 << 62


@dataclass(frozen=True, slots=True)
class Folded:
    """A text folded with NFKC, invisible format characters removed, and where its changes came from.

    ``changes`` holds one ``(folded_start, original_index, folded_width)`` per replaced character, in order: the
    original character at ``original_index`` became ``folded_width`` characters (0 when dropped).
    """

    text: str
    changes: tuple[tuple[int, int, int], ...]

    def position(self, folded: int) -> int:
        """Return the original index of folded position ``folded`` (a replacement maps to its one character)."""
        found = bisect_right(self.changes, (folded, _MAX, _MAX)) - 1
        if found < 0:
            return folded
        start, original, width = self.changes[found]
        if folded < start + width:
            return original
        return original + 1 + folded - (start + width)

    def span(self, start: int, end: int) -> tuple[int, int]:
        """Return the original-text span of the folded span ``start:end``."""
        if not self.changes:
            return start, end
        if start >= end:
            position = self.position(start)
            return position, position
        return self.position(start), self.position(end - 1) + 1


@lru_cache(maxsize=4096)
def _fold_char(char: str) -> str:
    if unicodedata.category(char) == "Cf":  # zero-width spaces and joiners, soft hyphens, bidi controls
        return ""
    return unicodedata.normalize("NFKC", char)


def fold(text: str) -> Folded:
    """Fold ``text`` character by character (fullwidth to ASCII, ligatures split, format characters dropped)."""
    if text.isascii():
        return Folded(text, ())
    pieces: list[str] = []
    changes: list[tuple[int, int, int]] = []
    copied = length = 0
    for match in _NON_ASCII.finditer(text):  # ASCII runs are copied as slices: most of most texts
        char = match.group()
        folded = _fold_char(char)
        if folded == char:
            continue
        index = match.start()
        pieces.append(text[copied:index])
        length += index - copied
        changes.append((length, index, len(folded)))
        pieces.append(folded)
        length += len(folded)
        copied = index + 1
    if not changes:
        return Folded(text, ())
    pieces.append(text[copied:])
    return Folded("".join(pieces), tuple(changes))


@lru_cache(maxsize=4096)
def _latin(char: str) -> bool:
    return unicodedata.name(char, "").startswith("LATIN")


def foreign_words(text: str) -> list[str]:
    """Return the words of ``text`` with a letter outside the Latin script (the offline tiers cannot read them).

    One such letter is enough: "Lyon" spelt with a Cyrillic U+0443 for its "y" is a spoofed name, not a typo.
    """
    if text.isascii():
        return []
    return [w for w in _WORD.findall(text) if not w.isascii() and _foreign_share(w) > 0.0]


def _foreign_share(text: str) -> float:
    letters = [c for c in text if c.isalpha()]
    foreign = sum(1 for c in letters if not c.isascii() and not _latin(c))
    return foreign / len(letters) if letters else 0.0


def unreadable(text: str) -> bool:
    """Return whether most of the letters of ``text`` are outside the Latin script."""
    return not text.isascii() and _foreign_share(text) > FOREIGN_SHARE


def foreign_vocabulary(texts: Sequence[str]) -> frozenset[str]:
    """Return the other-script words of ``texts`` (contexts and question), lower-cased, to ground claims on."""
    return frozenset(w.lower() for text in texts for w in foreign_words(text))


def unverifiable_claims(claims: Sequence[str], sources: Sequence[str]) -> tuple[list[bool], frozenset[str]]:
    """Return, per claim, whether it holds text the offline tiers cannot check, and the sources' other-script words.

    A claim cannot be checked when it is mostly in another script, or when it has a word in another script that
    the sources (contexts and question) do not contain: "The capital is Берлин" would hide its name otherwise.
    """
    if all(claim.isascii() for claim in claims):
        return [False] * len(claims), frozenset()  # the common case: no source needs reading
    known = foreign_vocabulary(sources)
    return [not claim.isascii() and (unreadable(claim) or any(w.lower() not in known for w in foreign_words(claim)))
            for claim in claims], known


def restore(verdict: ClaimVerdict, answer: str, folded: Folded,
            contexts: Sequence[tuple[str, Folded]] = ()) -> ClaimVerdict:
    """Return ``verdict`` with its claim and best span as the caller's text and offsets, not the folded text's."""
    best = verdict.best_span
    as_sent = verdict.claim == answer[verdict.start:verdict.end]  # not recased or reframed (framing.py)
    if not folded.changes and as_sent and (best is None or best.context_index >= len(contexts)
                               or not contexts[best.context_index][1].changes):
        return verdict  # nothing was folded: the offsets are already the caller's
    start, end = folded.span(verdict.start, verdict.end)
    if best is not None and best.context_index < len(contexts):
        context, context_folded = contexts[best.context_index]
        low, high = context_folded.span(best.start, best.end)
        best = replace(best, start=low, end=high, text=context[low:high])
    return replace(verdict, claim=answer[start:end], start=start, end=end, best_span=best)


@dataclass(frozen=True, slots=True)
class Inputs:
    """A scorer's inputs as the offline tiers read them: folded, split into claims, unverifiable claims marked."""

    original: str
    folded: Folded
    text: str  # the folded answer normalised (recased, framing blanked): what the tokeniser reads, same length
    contexts: list[tuple[str, Folded]]
    question: str
    spans: list[Span]
    foreign: list[bool]
    known: frozenset[str]  # the other-script words of the contexts and question

    @property
    def answer(self) -> str:
        """Return the answer as the tiers read it: folded and normalised (``framing.normalise``)."""
        return self.text

    @property
    def context_texts(self) -> list[str]:
        """Return the folded contexts."""
        return [folded.text for _, folded in self.contexts]

    @property
    def checkable(self) -> bool:
        """Return whether there is anything to judge: content words, or text the tiers must refuse to vouch for."""
        return bool(content_tokens(self.answer)) or any(self.foreign)

    def restore(self, verdict: ClaimVerdict) -> ClaimVerdict:
        """Return ``verdict`` in the caller's text and offsets."""
        return restore(verdict, self.original, self.folded, self.contexts)

    def not_checkable(self) -> tuple[ClaimVerdict, ...]:
        """Return a ``not_checkable`` verdict per claim (an answer with nothing to judge)."""
        return tuple(self.restore(ClaimVerdict(s.text, s.start, s.end, "not_checkable", 1.0)) for s in self.spans)


def read_inputs(answer: str | bytes, contexts: Contexts, question: str | bytes | None) -> Inputs:
    """Validate, fold and split a scorer's inputs, and mark the claims the offline tiers cannot check."""
    original = coerce_text(answer, field="answer")
    folded = fold(original)
    folded_contexts = [(c, fold(c)) for c in coerce_contexts(contexts)]
    question_text = fold(coerce_text(question, field="question")).text
    sources = [*(f.text for _, f in folded_contexts), question_text]
    text = normalise(folded.text, sources)
    spans = split_sentences(text)
    foreign, known = unverifiable_claims([s.text for s in spans], sources)
    return Inputs(original, folded, text, folded_contexts, question_text, spans, foreign, known)

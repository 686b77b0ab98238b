"""A context prepared once for the detector's features: keyed words, sentence windows and where each word sits."""

from __future__ import annotations

import math
import re
from bisect import bisect_left
from dataclasses import dataclass
from functools import lru_cache
from itertools import pairwise

import numpy as np

from evals.scorers.claim_support import _Evidence
from evals.scorers.grounding import question_kind
from evals.scorers.text import SENTENCE_BREAK, STOPWORDS, split_sentences, token_key

_TOKEN = re.compile(r"[A-Za-z0-9]+(?:[.,'\u2019][A-Za-z0-9]+)*")
_DIGIT = re.compile(r"\d")


def word_set(text: str) -> frozenset[str]:
    """Return the space-separated words of ``text`` as a set (for the word lists below and the features')."""
    return frozenset(text.split())


NEGATIONS = word_set("not no never none nothing nobody neither nor cannot without n't")
_AUX_START = re.compile(
    r"^\s*(is|are|was|were|do|does|did|can|could|has|have|had|will|would|should)\b", re.IGNORECASE)
_OPTIONS = re.compile(r"(?:,|:|\bbetween)\s*([^,:?]+?)\s+or\s+([^?]+?)\s*\??\s*$")
PROXIMITY_CAP = 40.0
# A claim word is anchored when its claim neighbours occur within ANCHOR_SPAN tokens of one of its occurrences in
# the passage.
ANCHOR_SPAN = 10
# A number and the word it counts or dates ("97 mph", "released in 2004") sit at most this many tokens apart.
NUMBER_SPAN = 2
NUMBER_WORDS = word_set("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
                        "sixteen seventeen eighteen nineteen twenty thirty forty fifty sixty seventy eighty ninety "
                        "hundred hundreds thousand thousands million millions billion billions trillion dozen dozens "
                        "half first second third fourth fifth sixth seventh eighth ninth tenth")
SPELLED = "#spelled"


@dataclass(slots=True, eq=False)
class Word:
    """One token of a text: its position, comparison key and kind."""

    index: int
    key: str
    lower: str
    kind: str  # number | entity | word | stop


@lru_cache(maxsize=1 << 16)
def _classify(surface: str) -> tuple[str, str, str]:
    """Return a token's key, lower form and kind, "entity" for any capitalised content word (cached per surface)."""
    lower = surface.lower().replace("\u2019", "'")
    if not surface.isalpha() and _DIGIT.search(surface):
        kind = "number"
    elif lower in STOPWORDS or lower.split("'")[0] in STOPWORDS:
        kind = "stop"
    else:
        kind = "entity" if surface[0].isupper() else "word"
    return token_key(surface), lower, kind


def words(text: str) -> list[Word]:
    """Tokenise ``text`` into keyed words with kinds (names = capitalised, not sentence-initial)."""
    out: list[Word] = []
    previous_end = 0
    for match in _TOKEN.finditer(text):
        key, lower, kind = _classify(match.group(0))
        if kind == "entity":
            # A capital after a sentence boundary says nothing about being a name.
            gap = text[previous_end:match.start()]
            if previous_end == 0 or (gap != " " and SENTENCE_BREAK.search(gap) is not None):
                kind = "word"
        previous_end = match.end()
        out.append(Word(len(out), key, lower, kind))
    return out


def is_negation(word: Word) -> bool:
    """Return whether ``word`` negates ("not", "never", "didn't")."""
    return word.lower in NEGATIONS or word.lower.endswith("n't")


class Passage:
    """A context prepared once: tokens, sentence windows and key positions; reused for every claim."""

    def __init__(self, contexts: list[str], question: str) -> None:
        text = "\n\n".join(contexts)
        self.contexts = tuple(contexts)
        self.tokens = words(text)
        self.positions: dict[str, list[int]] = {}
        for w in self.tokens:
            self.positions.setdefault(w.key, []).append(w.index)
        self.keys = set(self.positions)
        self.name_keys = {w.key for w in self.tokens if w.kind == "entity"}
        # Sentence windows by token range: each sentence, and each pair of neighbours (claims fuse sentences).
        starts = [m.start() for m in _TOKEN.finditer(text)]
        bounds = []
        for span in split_sentences(text):
            low = bisect_left(starts, span.start)
            high = bisect_left(starts, span.end)
            if high > low:
                bounds.append((low, high))
        ranges = bounds + [(a[0], b[1]) for a, b in pairwise(bounds)]
        negation = np.array([is_negation(w) for w in self.tokens] + [False], dtype=np.int64)
        running = np.concatenate([[0], np.cumsum(negation)])
        self.windows = [({w.key for w in self.tokens[lo:hi]}, int(running[hi] - running[lo])) for lo, hi in ranges]
        self.question = question
        question_words = words(question)
        self.question_keys = {w.key for w in question_words if w.kind != "stop"}
        # The last turn of a dialogue is what the reply answers; a QA question is one sentence anyway.
        tail = split_sentences(question)[-2:] if question else []
        self.focus_keys = [k for k in dict.fromkeys(w.key for s in tail for w in words(s.text) if w.kind != "stop")
                           if k in self.positions][:20]
        self.window_question = np.array([len(keys & self.question_keys) / max(1, len(self.question_keys))
                                         for keys, _ in self.windows])
        # Which windows hold each key: a claim's coverage of every window, summed key by key, not window by window.
        holders: dict[str, list[int]] = {}
        for window, (keys, _) in enumerate(self.windows):
            for key in keys:
                holders.setdefault(key, []).append(window)
        self.key_windows = {key: np.array(indexes, dtype=np.int64) for key, indexes in holders.items()}
        self.yes_no = bool(_AUX_START.match(question)) and "?" in question
        self.asks = question_kind(question)
        self.options = _options(question)
        # "which rock band", "what city": the words after which/what name the kind of thing asked for.
        head = re.search(r"\b(?:which|what)\s+((?:[a-z]+\s+){0,1}[a-z]+)", question)
        self.head_keys = [token_key(w) for w in head.group(1).split() if w not in STOPWORDS] if head else []
        self.evidence = _Evidence.build(contexts, question)
        self.log_words = math.log1p(len(self.tokens))
        self._proximity_cache: dict[str, float] = {}
        self._cover: dict[str, np.ndarray] = {}
        self._numbers_near: dict[str, frozenset[str]] | None = None
        self.kind_positions = {kind: np.array([w.index for w in self.tokens if w.kind == kind], dtype=np.int64)
                               for kind in ("entity", "number")}
        # Per kind, where each word sits in kind_positions: a claim's own names are masked out word by word.
        self._kind_slots: dict[str, dict[str, list[int]]] = {}
        for kind, positions in self.kind_positions.items():
            slots: dict[str, list[int]] = {}
            for slot, position in enumerate(positions.tolist()):
                slots.setdefault(self.tokens[position].key, []).append(slot)
            self._kind_slots[kind] = slots
        # negated_before[i]: one of the four tokens before position i is a negation.
        index = np.arange(len(self.tokens))
        self.negated_before = (running[index] - running[np.maximum(0, index - 4)]) > 0

    def positions_except(self, kind: str, keys: set[str]) -> np.ndarray:
        """Return the positions of the passage's names (numbers) whose word is not one of ``keys``."""
        slots = self._kind_slots[kind]
        excluded = [slot for key in keys for slot in slots.get(key, ())]
        positions = self.kind_positions[kind]
        if not excluded:
            return positions
        keep = np.ones(len(positions), dtype=bool)
        keep[excluded] = False  # work in the occurrences of the excluded words, not in the passage's length
        return positions[keep]

    def cover(self, key: str) -> np.ndarray:
        """Return a 0/1 array: 1 where ``key`` occurs within the anchor span (cached per passage)."""
        mask = self._cover.get(key)
        if mask is None:
            mask = np.zeros(len(self.tokens) + 1, dtype=np.float32)
            for position in self.positions.get(key, ()):
                mask[max(0, position - ANCHOR_SPAN)] += 1
                mask[min(len(self.tokens), position + ANCHOR_SPAN + 1)] -= 1
            mask = (np.cumsum(mask)[:-1] > 0).astype(np.float32)
            self._cover[key] = mask
        return mask

    def numbers_near(self, key: str) -> frozenset[str]:
        """Return the numbers within ``NUMBER_SPAN`` tokens of any occurrence of ``key`` ("mph" -> {"97"}).

        A number written as a word ("Twenty-nine elephants") is there as ``SPELLED``: a value not read here.
        """
        if self._numbers_near is None:
            near: dict[str, set[str]] = {}
            for i, word in enumerate(self.tokens):  # one pass over the passage, then a lookup per claim number
                if word.kind == "number" or word.lower in NUMBER_WORDS:
                    number = word.key if word.kind == "number" else SPELLED
                    for other in self.tokens[max(0, i - NUMBER_SPAN):i + NUMBER_SPAN + 1]:
                        near.setdefault(other.key, set()).add(number)
            self._numbers_near = {k: frozenset(v) for k, v in near.items()}
        return self._numbers_near.get(key, frozenset())

    def proximity(self, key: str) -> float:
        """Return the mean distance (capped) from the nearest occurrence of ``key`` to each focus term."""
        if key in self._proximity_cache:
            return self._proximity_cache[key]
        best = PROXIMITY_CAP
        for position in self.positions.get(key, ())[:20]:
            distances = [min(min(abs(position - p) for p in self.positions[f]), PROXIMITY_CAP)
                         for f in self.focus_keys if f != key]
            if distances:
                best = min(best, sum(distances) / len(distances))
        self._proximity_cache[key] = best
        return best



def _options(question: str) -> tuple[set[str], set[str]] | None:
    match = _OPTIONS.search(question.strip())
    if not match:
        return None
    first, second = ({w.key for w in words(part) if w.kind != "stop"} for part in match.groups())
    return (first, second) if first and second and not first & second else None

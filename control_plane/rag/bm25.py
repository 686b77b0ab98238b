"""Okapi BM25 over a fixed list of texts, in numpy."""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from collections.abc import Sequence

import numpy as np

_WORD = re.compile(r"[a-z0-9]+(?:[.'][a-z0-9]+)*")
_STOP_WORDS = """
a an and are as at be by can did do does for from has have how i in is it its of on or that the this to was
were what when where which who why will with
"""
_STOP = frozenset(_STOP_WORDS.split())


def bm25_terms(text: str) -> list[str]:
    """Return the index terms of ``text``: lowercase words without stopwords, plural/tense suffixes cut."""
    terms = []
    for word in _WORD.findall(text.lower()):
        if word in _STOP:
            continue
        for suffix in ("ing", "ed", "es", "s"):
            if len(word) - len(suffix) >= 3 and word.endswith(suffix) and not word[-1].isdigit():
                word = word[: -len(suffix)]
                break
        terms.append(word)
    return terms


class BM25Index:
    """Score a query against every text with BM25 (k1, b as in Robertson & Zaragoza)."""

    def __init__(self, texts: Sequence[str], k1: float = 1.2, b: float = 0.75) -> None:
        self.size = len(texts)
        postings: dict[str, list[tuple[int, int]]] = defaultdict(list)
        lengths = np.zeros(self.size, dtype=np.float64)
        for doc, text in enumerate(texts):
            counts = Counter(bm25_terms(text))
            lengths[doc] = sum(counts.values())
            for term, tf in counts.items():
                postings[term].append((doc, tf))
        average = float(lengths.mean()) if self.size and lengths.mean() > 0 else 1.0
        norm = k1 * (1.0 - b + b * lengths / average)
        # Precompute each term's per-document contribution so a query is a few vector adds.
        self._postings: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for term, pairs in postings.items():
            docs = np.fromiter((d for d, _ in pairs), dtype=np.int64, count=len(pairs))
            tfs = np.fromiter((t for _, t in pairs), dtype=np.float64, count=len(pairs))
            idf = math.log(1.0 + (self.size - len(pairs) + 0.5) / (len(pairs) + 0.5))
            self._postings[term] = (docs, idf * tfs * (k1 + 1.0) / (tfs + norm[docs]))

    def scores(self, query: str) -> np.ndarray:
        """Return the BM25 score of every text for ``query``."""
        out = np.zeros(self.size, dtype=np.float64)
        for term in set(bm25_terms(query)):
            if term in self._postings:
                docs, contribution = self._postings[term]
                out[docs] += contribution
        return out

    def top(self, query: str, k: int) -> list[tuple[int, float]]:
        """Return up to ``k`` (index, score) pairs with a positive score, best first (ties by index)."""
        scores = self.scores(query)
        candidates = np.flatnonzero(scores > 0)
        order = candidates[np.lexsort((candidates, -scores[candidates]))][:k]
        return [(int(i), float(scores[i])) for i in order]


def reciprocal_rank_fusion(rankings: Sequence[Sequence[str]], k: int = 60) -> list[tuple[str, float]]:
    """Fuse ranked id lists: score = sum of 1 / (k + rank); ties broken by first appearance."""
    fused: dict[str, float] = {}
    for ranking in rankings:
        for rank, item in enumerate(ranking, start=1):
            fused[item] = fused.get(item, 0.0) + 1.0 / (k + rank)
    order = {item: i for i, item in enumerate(dict.fromkeys(x for r in rankings for x in r))}
    return sorted(fused.items(), key=lambda kv: (-kv[1], order[kv[0]]))

"""Answer surface that asserts nothing: letter case and framing phrases, normalised before the offline tiers read.

The offline tiers read a capital as a name and count every word of a claim, so the surface of an answer moved its
score as much as its facts did (dev rows 1,700-1,899):
- A faithful summary typed in lower case lost its names and its sentence breaks: 72% flagged (7% as written).
- The hallucinated summaries in capitals (or Title Case) turned every word into a name the passage "has": 6.5%
  flagged (66%).
- A preamble that frames a claim hid hallucinations: dialogue hallucinations after "According to the passage, "
  were flagged 27% instead of 46%; "Based on the context, the answer is X" flagged 38% of right QA answers.

An answer whose case is noise (one case, or Title Case) takes each word's case from the sources (contexts and
question); citation marks, list numbers, and phrases that only frame a sentence are blanked out. Every change
keeps the text's length, so claim offsets still index the caller's text.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

from evals.scorers.text import STOPWORDS, split_sentences

_LETTERS = re.compile(r"[^\W\d_]+")
# A word after one of these (or at the start) starts a sentence: its capital says nothing about its case.
_BREAK_BEFORE = re.compile(r"(?:^|[.!?:\n\[\]\"])[\s\"'(\[]*$")
_SENTENCE_START = re.compile(r"(?:^|[.!?][\"')\]]*\s+|\n\s*)[\"'(\[]*([a-z])")
# Words of a phrase about the sources or the act of answering; with stopwords, all a framing clause may hold.
_META_WORDS = """
according based basis passage passages context contexts text texts document documents article articles source
sources knowledge information info provided given above answer answers summary summarize summarise summarized
summarised short sum brief briefly overall conclusion conclude stated states say says said mention mentions
mentioned described describes noted notes reported reports indicated indicates excerpt snippet data evidence
retrieved reading read looking judging honestly frankly basically essentially apparently seemingly clearly
actually indeed course far tell see understand understanding know known best recall memory question response
reply story report record records
"""
_META = frozenset(_META_WORDS.split())
# A clause with one of these takes a side ("Yes, according to the text, ..."): it is an answer, not a frame.
_POLAR_WORDS = "yes yeah yep no nope not never nor none nothing neither"
_POLAR = frozenset(_POLAR_WORDS.split())
_CLAUSE = re.compile(r"([^,:;.!?\n]{1,100}?)\s*[,:]\s+")
_CLAUSE_TOKENS = 12
# All capitals or Title Case from this many words on is formatting, not names.
MIN_CASED_WORDS = 6
TITLE_SHARE = 0.8
# Title Case needs this many of its capitalised words, and this share of those the sources hold, written in lower
# case by the sources (a summary is dense with names: most of its capitals are theirs).
MIN_LOWER_IN_SOURCES = 3
LOWER_SHARE = 0.25
_LEADS = (
    re.compile(r"(?:i|we)\s+(?:(?:really|honestly|personally|would|do)\s+)?"
               r"(?:think|believe|guess|suppose|reckon|assume|feel|say)(?:\s+that)?\s+", re.I),
    re.compile(r"(?:the|this)\s+(?:passage|text|context|document|article|source|knowledge|information|excerpt|"
               r"story|report)\s+(?:says|states|mentions|notes|reports|indicates|suggests|shows|explains|"
               r"confirms|tells\s+us)(?:\s+that)?\s+", re.I),
    re.compile(r"(?:the\s+|my\s+)?(?:correct\s+|right\s+|final\s+|short\s+|best\s+)?answer\s+(?:is|would\s+be)"
               r"\s*:?\s+", re.I),
    re.compile(r"it\s+(?:might|may|could|would|seems|appears)\s+(?:be\s+)?that\s+", re.I),
    re.compile(r"(?:perhaps|possibly|probably|maybe|presumably)\s+", re.I),
)
# Marks that point at a source or number a list: "[1]", "[2, 3]", "[source 1]", "1." at a line start. Their
# digits are not claims ("[1]" was a number the context lacked: 99% of right QA answers flagged with one).
_CITATION = re.compile(r"\[\^?(?:(?:source|doc|document|ref|passage|context)\s*#?)?\d{1,3}"
                       r"(?:\s*[,;\u2013-]\s*\d{1,3})*\]", re.I)
_LIST_NUMBER = re.compile(r"^[ \t]*\d{1,3}[.)](?=[ \t]+\S)", re.M)
_PARENTHESES = re.compile(r"\(([^()\n]{1,100})\)")


def source_casing(sources: Sequence[str], wanted: set[str]) -> dict[str, str]:
    """Return, for each lower-cased word of ``wanted``, its commonest form inside sentences of ``sources``.

    A word seen only at sentence starts counts only when written in capitals ("NASA"): "However" there says
    nothing about how the word is cased elsewhere.
    """
    counts: dict[str, Counter[str]] = {}
    acronyms: dict[str, str] = {}
    for text in sources:
        for match in _LETTERS.finditer(text):
            word = match.group()
            lower = word.lower()
            if lower not in wanted:
                continue
            if not _BREAK_BEFORE.search(text, max(0, match.start() - 8), match.start()):
                counts.setdefault(lower, Counter())[word] += 1
            elif len(word) > 1 and word.isupper():
                acronyms.setdefault(lower, word)
    return acronyms | {lower: forms.most_common(1)[0][0] for lower, forms in counts.items()}


def recase(text: str, sources: Sequence[str]) -> str:
    """Return ``text`` with each word cased as the sources write it and sentences capitalised, when its own case
    is noise (``noise_casing``); otherwise unchanged: its capitals are the writer's.

    A word the sources lack is lower-cased (a name they lack stays lower case, so it weighs as a word, not as a
    name).
    """
    casing = noise_casing(text, sources)
    if casing is None:
        return text

    def cased(match: re.Match[str]) -> str:
        word = match.group()
        form = casing.get(word.lower(), word.lower())
        return form if len(form) == len(word) else word  # a few letters change length with case: keep those

    words = _LETTERS.sub(cased, text)
    return _SENTENCE_START.sub(lambda m: m.group()[:-1] + m.group(1).upper(), words)


def noise_casing(text: str, sources: Sequence[str]) -> dict[str, str] | None:
    """Return the sources' casing of the words of ``text`` when its capitals say nothing about names, else None.

    All lower case always. All capitals from ``MIN_CASED_WORDS`` words on: a short answer in capitals ("ANGELA
    MERKEL") is most likely a name. Title Case ("Storm Ciara Hits Britain With 97 Mph Winds") when at least
    ``MIN_CASED_WORDS`` words that are not stopwords are capitalised, most of them, and enough of those the sources
    hold are words the sources write in lower case: a list of names ("Sofia Coppola, Roger Corman and ...") is
    capitalised because its words are names, and stays as written.
    """
    words = _LETTERS.findall(text)
    wanted = {w.lower() for w in words}
    if text.islower() or (text.isupper() and len(words) >= MIN_CASED_WORDS):
        return source_casing(sources, wanted)
    content = [w for w in words if w.lower() not in STOPWORDS]
    capitalised = [w for w in content if w[0].isupper() and not w.isupper()]
    if len(capitalised) < MIN_CASED_WORDS or len(capitalised) < TITLE_SHARE * len(content):
        return None  # the usual case: decided from the answer alone, without reading the sources
    casing = source_casing(sources, wanted)
    known = [casing[w.lower()] for w in capitalised if w.lower() in casing]
    lower = sum(1 for form in known if form[0].islower())
    return casing if lower >= MIN_LOWER_IN_SOURCES and lower >= LOWER_SHARE * len(known) else None


def _framing_length(sentence: str) -> int:
    """Return how many leading characters of ``sentence`` only frame it (0 when none)."""
    length = pending = 0
    for _ in range(4):  # "Well, according to the passage, I think ..." frames three times
        rest = sentence[pending:]
        clause = _CLAUSE.match(rest)
        kind = _clause_kind(clause.group(1)) if clause else None
        if clause and kind:
            pending += clause.end()
            # A bare "Well," or "So," is kept unless a frame follows it: alone it is how a reply starts.
            length = pending if kind == "frame" else length
            continue
        lead = next((m for m in (p.match(rest) for p in _LEADS) if m), None)
        if lead is None:
            break
        length = pending = pending + lead.end()
    # Nothing is blanked unless a statement is left to judge.
    return length if re.search(r"[^\W_]", sentence[length:]) else 0


def _clause_kind(clause: str) -> str | None:
    """Return "frame" for a clause about the sources, "filler" for one of stopwords only, else None."""
    words = re.findall(r"[a-z]+", clause.lower())
    if not 0 < len(words) <= _CLAUSE_TOKENS or any(w in _POLAR for w in words):
        return None
    if not all(w in STOPWORDS or w in _META for w in words):
        return None
    return "frame" if any(w in _META for w in words) else "filler"


def blank_framing(text: str) -> str:
    """Return ``text`` with each sentence's framing preamble replaced by spaces and what follows capitalised.

    The capital keeps the sentence split where it was ("... 1990. according to ..." would not split).
    """
    pieces, copied = [], 0
    for span in split_sentences(text):
        length = _framing_length(span.text)
        if not length:
            continue
        start = span.start + length
        while text[start].isspace():
            start += 1
        pieces.append(text[copied:span.start])
        pieces.append(" " * (start - span.start))
        first = text[start]
        pieces.append(first.upper() if "a" <= first <= "z" else first)
        copied = start + 1
    if not pieces:
        return text
    pieces.append(text[copied:])
    return "".join(pieces)


def blank_marks(text: str) -> str:
    """Return ``text`` with citation marks and framing parentheses blanked, and list numbers made bullets.

    A list number becomes a "-" bullet, not a blank, so the sentence split still breaks the list item by item.
    """
    text = _CITATION.sub(lambda m: " " * len(m.group()), text)
    text = _LIST_NUMBER.sub(_bullet, text)
    return _PARENTHESES.sub(lambda m: " " * len(m.group()) if _clause_kind(m.group(1)) == "frame" else m.group(),
                            text)


def _bullet(match: re.Match[str]) -> str:
    """Return a list number ("  12.") as a bullet of the same width ("  -  ")."""
    marker = match.group().lstrip()
    return match.group()[: len(match.group()) - len(marker)] + "-".ljust(len(marker))


def normalise(answer: str, sources: Sequence[str]) -> str:
    """Return ``answer`` as the offline tiers should read it (same length): recased, marks and framing blanked."""
    return blank_framing(recase(blank_marks(answer), sources))

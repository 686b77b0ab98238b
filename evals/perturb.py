"""Minimal hallucinations and faithful rewrites built from a faithful answer and its own context.

Every transformation is a general edit of the right answer, not a detector's blind spot: swap a name or a number
for another one of the same passage, shift a date, pick the other option of an "A or B?" question, negate a
statement, flip a yes/no, put an opposite word in ("won" for "lost"), let two names of a sentence trade places;
and, as faithful controls, restate the answer in a sentence, rewrite it with synonyms, change contractions or
reorder its sentences. ``perturb`` is deterministic for a given seed.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from itertools import pairwise

from evals.scorers.relations import OPPOSITE_SURFACES
from evals.scorers.text import STOPWORDS, token_key

# The issue's six kinds, then two that keep every word of the passage (an opposite word, names trading places).
ISSUE_KINDS = ("entity_swap", "number_change", "date_change", "option_swap", "negation", "yes_no_flip")
HALLUCINATION_KINDS = (*ISSUE_KINDS, "antonym", "role_swap")
FAITHFUL_KINDS = ("it_is", "correct_answer", "question_echo", "restatement", "synonyms", "contraction", "reorder")

_NAME = re.compile(r"\b[A-Z](?:\.|[\w'\u2019&-]*)(?: +(?:(?:of|the|de|von|van) +)?[A-Z](?:\.|[\w'\u2019&-]*))*")
_NUMBER = re.compile(r"(?<![\w.])\d[\d,]*(?:\.\d+)?(?![\w])")
_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
           "November", "December")
_AUX_WORDS = "is|was|are|were|has|have|had|can|could|will|would|does|did|do|should|may|might|must"
_AUX = re.compile(r"\b(" + _AUX_WORDS + r")\b(?!\s+not\b)(?!n't)")
_NEGATED = re.compile(r"\b(is|was|are|were|has|have|had|can|could|will|would|does|did|do|should)(\s+not\b|n't\b)")
_YES_NO = re.compile(r"^\s*(yes|no)\b", re.IGNORECASE)
_OPTIONS = re.compile(r"(?:,|:|\bbetween)\s*([^,:?]+?)\s+or\s+([^?]+?)\s*\??\s*$")
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
# Everyday synonyms; the point is words that need not appear in the passage, not a thesaurus.
_SYNONYM_PAIRS = """
big large|small little|begin start|began started|movie film|famous well-known|about approximately|buy purchase
help assist|show display|get obtain|end finish|ended finished|choose pick|quick fast|job work|kids children
also too|often frequently|many numerous|need require|try attempt|tried attempted|enough sufficient|home house
maybe perhaps|near close|hard difficult|easy simple|wrong incorrect|answer reply|said stated|say state|told informed
mostly largely|born birth|died passed|city town|country nation|people persons|person individual|car vehicle
song track|band group|book novel|show series|team squad|player athlete|author writer|company firm|author novelist
""".replace("\n", "|").strip("|").split("|")
_SYNONYMS: dict[str, str] = {}
for _pair in _SYNONYM_PAIRS:
    _a, _b = _pair.split()
    _SYNONYMS.setdefault(_a, _b)
    _SYNONYMS.setdefault(_b, _a)
_SYMMETRIC = frozenset({"and", "with", "alongside", "together", "against", "versus", "vs", "v", "married", "met",
                        "between"})
_CONTRACTIONS = {"is not": "isn't", "was not": "wasn't", "do not": "don't", "does not": "doesn't",
                 "did not": "didn't", "it is": "it's", "I am": "I'm", "they are": "they're", "cannot": "can't"}


@dataclass(frozen=True, slots=True)
class Perturbation:
    """One rewritten answer: ``label`` 1 = hallucinated (changes a fact), 0 = faithful (same facts)."""

    kind: str
    answer: str
    label: int


def _name_spans(text: str) -> list[tuple[int, int]]:
    """Return (start, end) of each capitalised name of ``text`` (trailing punctuation and lone stopwords dropped)."""
    spans = []
    for match in _NAME.finditer(text):
        span = match.group(0).rstrip(".'\u2019-")
        words = [w.lower() for w in span.split()]
        if span and not all(w in STOPWORDS or w.rstrip(".") in STOPWORDS for w in words) and not span.isdigit():
            spans.append((match.start(), match.start() + len(span)))
    return spans


def names(text: str) -> list[str]:
    """Return the capitalised name spans of ``text`` (multi-word names kept whole; lone stopwords dropped)."""
    return [text[start:end] for start, end in _name_spans(text)]


def _keys(text: str) -> set[str]:
    return {token_key(w) for w in re.findall(r"[A-Za-z0-9]+", text)}


def entity_swap(answer: str, context: str, rng: random.Random) -> str | None:
    """Replace one name of the answer by a different name of the same context."""
    own = [n for n in dict.fromkeys(names(answer)) if _keys(n) & _keys(context)]
    candidates = list(dict.fromkeys(names(context)))
    rng.shuffle(own)
    for name in own:
        others = [c for c in candidates if not (_keys(c) & _keys(name)) and not (_keys(c) <= _keys(answer))]
        if others:
            return answer.replace(name, rng.choice(others), 1)
    return None


def _shift_number(surface: str, context_numbers: list[str], rng: random.Random) -> str:
    value = surface.replace(",", "")
    others = [n for n in context_numbers if n.replace(",", "") != value]
    if others and rng.random() < 0.5:
        return rng.choice(others)
    if "." in value:
        return f"{float(value) * rng.choice((0.5, 1.5, 2.0)):.{len(value.split('.')[1])}f}"
    number = int(value)
    if number < 10:
        return str(number + rng.choice((1, 2, 3)))
    return str(number + max(1, round(number * rng.choice((0.2, 0.5, -0.3)))))


def number_change(answer: str, context: str, rng: random.Random) -> str | None:
    """Change one non-year number of the answer (to another number of the context, or a nearby value)."""
    numbers = [m for m in _NUMBER.finditer(answer) if not _is_year(m.group(0))]
    if not numbers:
        return None
    match = rng.choice(numbers)
    context_numbers = [m.group(0) for m in _NUMBER.finditer(context) if not _is_year(m.group(0))]
    new = _shift_number(match.group(0), context_numbers, rng)
    return answer[: match.start()] + new + answer[match.end():]


def _is_year(surface: str) -> bool:
    return surface.isdigit() and len(surface) == 4 and 1000 <= int(surface) <= 2100


def date_change(answer: str, context: str, rng: random.Random) -> str | None:
    """Move a year by a few years, or name another month."""
    years = [m for m in _NUMBER.finditer(answer) if _is_year(m.group(0))]
    months = [m for m in re.finditer(r"\b(" + "|".join(_MONTHS) + r")\b", answer)]
    if years:
        match = rng.choice(years)
        new = str(int(match.group(0)) + rng.choice((-10, -3, -2, -1, 1, 2, 3, 5)))
    elif months:
        match = rng.choice(months)
        new = rng.choice([m for m in _MONTHS if m != match.group(0)])
    else:
        return None
    return answer[: match.start()] + new + answer[match.end():]


def question_options(question: str) -> tuple[str, str] | None:
    """Return the two options of an "..., A or B?" question, if it has that shape."""
    match = _OPTIONS.search(question.strip())
    if not match:
        return None
    first, second = (part.strip(" \"'") for part in match.groups())
    first = re.sub(r"^(the|a|an)\s+", "", first, flags=re.IGNORECASE) if len(first.split()) > 1 else first
    if not first or not second or len(first.split()) > 8 or len(second.split()) > 8:
        return None
    return first, second


def option_swap(answer: str, question: str) -> str | None:
    """Answer with the other option of an "A or B?" question."""
    options = question_options(question)
    if options is None:
        return None
    answer_keys = _keys(answer)
    first, second = options
    matches = [bool(_keys(o) & answer_keys) and _keys(o) <= answer_keys | _keys("the a an") for o in options]
    if matches[0] == matches[1]:
        return None
    chosen, other = (first, second) if matches[0] else (second, first)
    if chosen.lower() in answer.lower():
        start = answer.lower().index(chosen.lower())
        return answer[:start] + other + answer[start + len(chosen):]
    return other


def negation(answer: str, short: bool) -> str | None:
    """Negate the first statement (or remove a negation); a bare short answer becomes "It is not X."."""
    if _YES_NO.match(answer):
        return None
    negated = _NEGATED.search(answer)
    if negated:
        return answer[: negated.start(2)] + answer[negated.end(2):]
    # Negate a statement, not a question the answer asks back.
    aux = next((m for m in _AUX.finditer(answer) if "?" not in answer[m.end():].split(".")[0]), None)
    if aux:
        return answer[: aux.end()] + " not" + answer[aux.end():]
    if short:
        return f"It is not {_bare(answer)}."
    return None


def yes_no_flip(answer: str) -> str | None:
    """Turn a leading "yes" into "no" and back."""
    match = _YES_NO.match(answer)
    if not match:
        return None
    word = match.group(1)
    flipped = {"yes": "no", "no": "yes"}[word.lower()]
    flipped = flipped.capitalize() if word[0].isupper() else flipped
    return answer[: match.start(1)] + flipped + answer[match.end(1):]


def antonym(answer: str, rng: random.Random) -> str | None:
    """Replace one lower-case word by its opposite ("won" by "lost"); capitalised words may be part of a name."""
    found = [m for m in re.finditer(r"\b[a-z]+\b", answer) if m.group(0) in OPPOSITE_SURFACES]
    if not found:
        return None
    match = rng.choice(found)
    return answer[: match.start()] + OPPOSITE_SURFACES[match.group(0)] + answer[match.end():]


def _named_in(word: str, context: str) -> bool:
    """Return whether ``context`` writes ``word`` capitalised mid-sentence (so it is a name, not a sentence start)."""
    return re.search(r"[a-z0-9,;]\s+" + re.escape(word) + r"\b", context) is not None


def role_swap(answer: str, context: str) -> str | None:
    """Let two names of one sentence trade places ("A beat B" -> "B beat A").

    Skipped: a sentence's first word unless the context names it mid-sentence (a capital there need not be a
    name), and names joined by a list or by a symmetric relation ("A and B", "A starred with B"), where trading
    places changes no fact.
    """
    offset = 0
    for sentence in _SENTENCE.split(answer):
        start = answer.index(sentence, offset)
        offset = start + len(sentence)
        spans = [(a, b) for a, b in _name_spans(sentence) if _keys(sentence[a:b]) & _keys(context)
                 and (a > 0 or " " in sentence[a:b] or _named_in(sentence[a:b], context))]
        for (a1, b1), (a2, b2) in pairwise(spans):
            first, second, between = sentence[a1:b1], sentence[a2:b2], sentence[b1:a2]
            # Swapping the members of a list ("A and B", "A, B") changes no fact.
            linking = [w.lower() for w in re.findall(r"[A-Za-z]+", between)]
            if (_keys(first) & _keys(second) or _SYMMETRIC & set(linking)
                    or not [w for w in linking if w not in STOPWORDS]):
                continue
            swapped = sentence[:a1] + second + between + first + sentence[b2:]
            return answer[:start] + swapped + answer[offset:]
    return None


def synonyms(answer: str, rng: random.Random) -> str | None:
    """Replace up to two everyday words by synonyms."""
    words = [m for m in re.finditer(r"\b[a-z]+\b", answer) if m.group(0) in _SYNONYMS]
    if not words:
        return None
    chosen = sorted(rng.sample(words, min(2, len(words))), key=lambda m: m.start(), reverse=True)
    for match in chosen:
        answer = answer[: match.start()] + _SYNONYMS[match.group(0)] + answer[match.end():]
    return answer


def contraction(answer: str) -> str | None:
    """Contract or expand one contraction ("is not" <-> "isn't")."""
    for long, short in _CONTRACTIONS.items():
        for old, new in ((long, short), (short, long)):
            found = re.search(r"\b" + re.escape(old) + r"\b", answer, flags=re.IGNORECASE)
            if found:
                replacement = new[0].upper() + new[1:] if found.group(0)[0].isupper() else new
                return answer[: found.start()] + replacement + answer[found.end():]
    return None


def reorder(answer: str, rng: random.Random) -> str | None:
    """Reverse-rotate the sentences of a multi-sentence answer."""
    sentences = [s for s in _SENTENCE.split(answer.strip()) if s]
    if len(sentences) < 2:
        return None
    shift = rng.randrange(1, len(sentences))
    return " ".join(sentences[shift:] + sentences[:shift])


def _bare(answer: str) -> str:
    return answer.strip().rstrip(".")


def restatement(answer: str, short: bool, rng: random.Random) -> str:
    """Wrap the answer in a sentence that adds no fact."""
    bare = _bare(answer)
    if short:
        template = rng.choice(("The answer is {}.", "{} is the answer.", "That would be {}.", "I believe it is {}.",
                               "According to the text, it is {}.", "It's {}."))
        return template.format(bare)
    prefix = rng.choice(("In short, ", "To sum up, ", "Well, ", "As far as I know, ", "Basically, "))
    text = answer.strip()
    first = text.split()[0]
    # Lower-case a sentence-initial function word ("The", "Yes"), never a name or "I".
    if first.lower() in STOPWORDS and not first.startswith("I"):
        text = text[0].lower() + text[1:]
    return prefix + text


def perturb(answer: str, context: str, question: str = "", seed: int = 0) -> list[Perturbation]:
    """Return every transformation that applies to ``answer`` (at most one of each kind)."""
    rng = random.Random(seed)
    # A short answer to a direct question ("Mac and Bloo") can be restated as "It is X."; a reply or a summary
    # cannot.
    short = len(answer.split()) <= 6 and question.strip().endswith("?") and not _YES_NO.match(answer)
    candidates: list[tuple[str, str | None, int]] = [
        ("option_swap", option_swap(answer, question) if question else None, 1),
        ("entity_swap", entity_swap(answer, context, rng), 1),
        ("number_change", number_change(answer, context, rng), 1),
        ("date_change", date_change(answer, context, rng), 1),
        ("negation", negation(answer, short), 1),
        ("yes_no_flip", yes_no_flip(answer), 1),
        ("it_is", f"It is {_bare(answer)}." if short else None, 0),
        ("correct_answer", f"The correct answer is {_bare(answer)}." if short else None, 0),
        ("question_echo", f"{question.strip()} {_bare(answer)}." if short else None, 0),
        ("restatement", restatement(answer, short, rng), 0),
        ("synonyms", synonyms(answer, rng), 0),
        ("contraction", contraction(answer), 0),
        ("reorder", reorder(answer, rng), 0),
        # Last, so that adding them left the earlier kinds' random draws (and the measured suite) unchanged.
        ("antonym", antonym(answer, rng), 1),
        ("role_swap", role_swap(answer, context), 1),
    ]
    seen = {answer.strip()}
    out = []
    for kind, text, label in candidates:
        if text and text.strip() and text.strip() not in seen:
            seen.add(text.strip())
            out.append(Perturbation(kind, text, label))
    return out

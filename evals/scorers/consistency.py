"""Claim-context consistency features for the tier-2 detector: does the claim fit where it came from?

Tier 1 asks whether a claim's words occur anywhere in the context. That misses the minimal hallucinations that
matter (a name or number of the same passage in the wrong place, a negation, the other option, a flipped
yes/no) and punishes faithful restatements. These features compare the claim with its *best-matching window*
(one or two context sentences) and, for questions, with where the question points in the passage.
"""

from __future__ import annotations

import numpy as np

from evals.scorers.claim_support import support_features
from evals.scorers.grounding import GROUNDING_NAMES, grounding_features
from evals.scorers.passage import PROXIMITY_CAP, Passage, Word, is_negation, word_set, words
from evals.scorers.relations import antonym_conflicts, role_conflicts
from evals.scorers.text import split_sentences, token_key

# Words that frame an answer ("the correct answer is", "I believe") and assert no fact of their own.
_FRAMING = word_set("answer answers correct right true question text passage according believe think guess sure "
                     "basically short sum summary well actually indeed course would be said reply response probably "
                     "likely")
_YES = word_set("yes yeah yep correct true")
_NO = word_set("no nope not false")
_EARLY = word_set("first earlier earliest older oldest before preceded founded")
_LATE = word_set("later latest younger youngest newer newest recent recently last")
_MORE = word_set("more most larger largest bigger biggest taller tallest longer longest higher highest greater "
                 "greatest")
_LESS = word_set("fewer fewest smaller smallest shorter shortest lower lowest less least")
_WEIGHT = {"number": 3.0, "entity": 2.0, "word": 1.0}
# A claim word's neighbours: up to this many content words either side of it in the claim.
_NEIGHBOURS = 4

FEATURE_NAMES = (
    "missing_numbers", "missing_entities", "missing_words", "missing_weighted_fraction",
    "window_coverage", "names_outside_window", "numbers_outside_window", "negation_mismatch", "claim_negated",
    "echoes_question", "question_gap", "answer_proximity", "proximity_rank",
    "polarity", "yes_no_question", "polarity_x_question_support", "question_support",
    "option_question", "option_agreement", "has_question", "log_context_words",
    "anchor_min_name", "anchor_mean", "anchor_min", "unmatched_negations", "dropped_negations",
    "name_deficit_max", "names_displaced", "number_deficit_max", "numbers_displaced",
    "head_near_answer", "head_deficit", "antonym_conflicts", "role_conflicts", *GROUNDING_NAMES,
    *(f"t1_{name}" for name in ("unsupported_numbers", "unsupported_entities", "unsupported_words",
                                "unsupported_fraction", "novel_bigram_fraction", "novel_trigram_fraction",
                                "log_unsupported", "unsupported_name_fraction", "worst_claim_unsupported",
                                "log_novel_bigrams", "context_support_fraction")),
)
# How one answer's claims combine into the answer's features: counts add up, the worst claim decides the rest.
_SUM = frozenset({"missing_numbers", "missing_entities", "missing_words", "names_outside_window",
                  "numbers_outside_window", "unmatched_negations", "dropped_negations", "names_displaced",
                  "numbers_displaced", "name_runs", "names_question_only", "names_nowhere", "years_nowhere",
                  "grounded_pairs_apart", "supplies_new_grounded", "nowhere_when_asked", "names_partial",
                  "antonym_conflicts", "role_conflicts"})
_MIN = frozenset({"window_coverage", "anchor_min_name", "anchor_mean", "anchor_min", "names_grounded_fraction"})
# A reply's stance ("No, ...", the option it picks) is in its first sentence.
_FIRST = frozenset({"polarity", "polarity_x_question_support", "option_agreement"})


def _negations(tokens: list[Word]) -> int:
    return sum(1 for w in tokens if is_negation(w))


def _compare(passage: Passage, options: tuple[set[str], set[str]]) -> int | None:
    """Return which option (0/1) a comparative question's cue picks from numbers near each option, or None."""
    cue = next((c for c in (_EARLY, _LATE, _MORE, _LESS) if passage.question_keys & {token_key(w) for w in c}),
               None)
    if cue is None:
        return None
    years = cue in (_EARLY, _LATE)
    values = []
    for keys in options:
        first = min((p for k in keys for p in passage.positions.get(k, ())), default=None)
        value = None
        if first is not None:
            for w in passage.tokens[first:first + 30]:
                digits = w.key.replace(",", "")
                if w.kind == "number" and digits.replace(".", "", 1).isdigit():
                    number = float(digits)
                    if not years or 1000 <= number <= 2100:
                        value = number
                        break
        values.append(value)
    if values[0] is None or values[1] is None or values[0] == values[1]:
        return None
    smaller = 0 if values[0] < values[1] else 1
    return smaller if cue in (_EARLY, _LESS) else 1 - smaller


def _best_window(content: list[Word], passage: Passage) -> tuple[int, float]:
    """Return the window covering most of the claim's weighted content, and that share; (-1, 0.0) when none.

    Question words count (restating is fine). Ties go to the window nearest the question, then the first.
    """
    weights: dict[str, float] = {}
    for w in content:
        weights[w.key] = weights.get(w.key, 0.0) + _WEIGHT[w.kind]
    covered = np.zeros(len(passage.windows))
    for key, weight in weights.items():
        holders = passage.key_windows.get(key)
        if holders is not None:
            covered[holders] += weight  # whole weights, so the sums are exact and ties are true ties
    if not len(covered) or covered.max() <= 0:
        return -1, 0.0
    tied = np.flatnonzero(covered == covered.max())
    best = int(tied[np.argmax(passage.window_question[tied])])
    return best, float(covered[best] / (sum(weights.values()) or 1.0))


def claim_features(claim: str, passage: Passage) -> dict[str, float]:
    """Return the feature dict of one claim against a prepared passage."""
    all_words = words(claim)
    tokens = [w for w in all_words if w.kind != "stop"]
    content = [w for w in tokens if w.lower not in _FRAMING]
    new = [w for w in content if w.key not in passage.question_keys]
    missing = [w for w in new if w.key not in passage.keys]
    present = [w for w in content if w.key in passage.keys]
    total = sum(_WEIGHT[w.kind] for w in new)
    best, best_cover = _best_window(content, passage)
    window_keys, window_negations = passage.windows[best] if best >= 0 else (set(), 0)
    claim_words = all_words
    # A leading "yes"/"no" answers the question (its polarity is a feature of its own); it negates nothing.
    if claim_words and claim_words[0].lower in ("yes", "no"):
        claim_words = claim_words[1:]
    claim_negations = _negations(claim_words)
    outside = [w for w in present if w.key not in window_keys and w.key not in passage.question_keys]
    answer_keys = {w.key for w in content}
    features = {
        "missing_numbers": sum(1.0 for w in missing if w.kind == "number"),
        "missing_entities": sum(1.0 for w in missing if w.kind == "entity"),
        "missing_words": sum(1.0 for w in missing if w.kind == "word"),
        "missing_weighted_fraction": sum(_WEIGHT[w.kind] for w in missing) / total if total else 0.0,
        "window_coverage": best_cover if content else 1.0,
        "names_outside_window": sum(1.0 for w in outside if w.kind == "entity"),
        "numbers_outside_window": sum(1.0 for w in outside if w.kind == "number"),
        "negation_mismatch": float((claim_negations % 2) != (window_negations % 2)),
        "claim_negated": float(claim_negations > 0),
        # The claim only repeats names of the question (and adds no content): "Park Avenue" to "which city ...,
        # 101 Park Avenue?". Restating the question around a new answer is fine and scores 0.
        "echoes_question": float(bool(answer_keys) and not new and any(w.kind in ("entity", "number")
                                                                        for w in content)),
        "has_question": float(bool(passage.question.strip())),
        "log_context_words": passage.log_words,
        "antonym_conflicts": float(antonym_conflicts((w.key for w in claim_words), window_keys)),
        "role_conflicts": float(role_conflicts(tokens, passage.positions, passage.name_keys)),
    }
    features.update(_question_features(all_words, new, passage, best))
    features.update(_local_features(claim_words, passage))
    features.update(zip(GROUNDING_NAMES, grounding_features(content, passage, passage.asks), strict=True))
    t1 = support_features(claim, passage.evidence)
    features.update({name: value for name, value in zip(FEATURE_NAMES[-11:], t1, strict=True)})
    return features


def _local_features(claim_words: list[Word], passage: Passage) -> dict[str, float]:
    """Return how well each claim word is anchored among its claim neighbours in the passage, and negations."""
    content = [w for w in claim_words if w.kind not in ("stop",) and w.lower not in _FRAMING]
    # Contiguous name words are one name: "Williams" must not vouch for "Nelson".
    runs, run = [], 0
    for i, word in enumerate(content):
        if i and not (word.kind == "entity" and content[i - 1].kind == "entity"
                      and word.index == content[i - 1].index + 1):
            run += 1
        runs.append(run)
    anchors: list[tuple[str, float]] = []
    for i, word in enumerate(content):
        if word.key not in passage.positions:
            continue
        neighbours = {n.key for j, n in enumerate(content[max(0, i - _NEIGHBOURS):i + _NEIGHBOURS + 1],
                                                  start=max(0, i - _NEIGHBOURS))
                      if runs[j] != runs[i] and n.key in passage.positions}
        if not neighbours:
            continue
        # How many neighbours sit within the anchor span of each occurrence (cover() is that span, cached).
        occurrences = passage.positions[word.key][:20]
        found = np.sum([passage.cover(n)[occurrences] for n in neighbours], axis=0)
        anchors.append((word.kind, float(found.max()) / len(neighbours)))
    unmatched = dropped = 0
    for i, word in enumerate(claim_words):
        negation = is_negation(word)
        if not negation and (word.kind != "stop" or i == 0):
            continue
        following = next((w for w in claim_words[i + 1:i + 4] if w.kind != "stop"), None)
        if following is None or following.key not in passage.positions:
            continue
        negated_there = passage.negated_before[passage.positions[following.key][:20]]
        if negation:
            unmatched += not negated_there.any()
        elif negated_there.all() and not any(is_negation(w) for w in claim_words[max(0, i - 3):i + 1]):
            dropped += 1
    names = [a for kind, a in anchors if kind in ("entity", "number")]
    displacement = _displacement(content, runs, passage)
    mean = sum(a for _, a in anchors) / len(anchors) if anchors else 1.0
    return {**displacement, "anchor_min_name": min(names, default=1.0), "anchor_mean": mean,
            "anchor_min": min((a for _, a in anchors), default=1.0),
            "unmatched_negations": float(unmatched), "dropped_negations": float(dropped)}


def _displacement(content: list[Word], runs: list[int], passage: Passage) -> dict[str, float]:
    """Return how much better another name (number) of the passage fits each claim name's neighbours.

    A swapped name keeps the neighbours of the name it replaced, so the replaced name, elsewhere in the passage,
    sits among them while the swapped one does not. Question words are neighbours too (they say where to look).
    """
    out = {"name_deficit_max": 0.0, "names_displaced": 0.0, "number_deficit_max": 0.0, "numbers_displaced": 0.0}
    if not passage.tokens:
        return out
    claim_keys = {w.key for w in content}
    # The passage's other names (numbers): every occurrence whose word the claim does not use. Found once per
    # claim, not once per claim name (a claim of thousands of names made this quadratic).
    others_of: dict[str, np.ndarray] = {}
    for i, word in enumerate(content):
        if word.kind not in ("entity", "number") or word.key not in passage.positions:
            continue
        neighbours = {n.key for j, n in enumerate(content[max(0, i - _NEIGHBOURS):i + _NEIGHBOURS + 1],
                                                  start=max(0, i - _NEIGHBOURS))
                      if runs[j] != runs[i] and n.key in passage.positions}
        neighbours |= set(passage.focus_keys) - claim_keys
        if not neighbours:
            continue
        density: np.ndarray = np.sum([passage.cover(k) for k in neighbours], axis=0) / len(neighbours)
        own = float(density[passage.positions[word.key]].max())
        if word.kind not in others_of:
            others_of[word.kind] = passage.positions_except(word.kind, claim_keys)
        others = others_of[word.kind]
        if not len(others):
            continue
        deficit = float(density[others].max()) - own
        prefix = "name" if word.kind == "entity" else "number"
        out[f"{prefix}_deficit_max"] = max(out[f"{prefix}_deficit_max"], deficit)
        out[f"{prefix}s_displaced"] += float(deficit >= 0.25)
    return out


def _head_features(new: list[Word], passage: Passage) -> tuple[float, float]:
    """Return whether the asked-for kind ("band", "city") is named next to the answer, and how much nearer to
    another name of the passage it is."""
    heads = [k for k in passage.head_keys if k in passage.positions]
    names = [w for w in new if w.kind in ("entity", "number") and w.key in passage.positions]
    if not heads or not names:
        return 0.0, 0.0
    near = np.maximum.reduce([passage.cover(k) for k in heads])
    own = max(float(near[passage.positions[w.key]].max()) for w in names)
    answer_keys = {w.key for w in new}
    others = passage.positions_except("entity", answer_keys | passage.question_keys)
    best_other = float(near[others].max()) if len(others) else 0.0
    return own, best_other - own


def _question_features(claim: list[Word], new: list[Word], passage: Passage, best: int) -> dict[str, float]:
    """Return where-the-question-points features: window gap, proximity, yes/no and option agreement."""
    if not passage.question_keys:
        return {"question_gap": 0.0, "answer_proximity": 0.0, "proximity_rank": 0.0, "polarity": 0.0,
                "yes_no_question": 0.0, "polarity_x_question_support": 0.0, "question_support": 0.0,
                "option_question": 0.0, "option_agreement": 0.0, "head_near_answer": 0.0, "head_deficit": 0.0}
    best_question = float(passage.window_question.max()) if len(passage.window_question) else 0.0
    gap = best_question - (float(passage.window_question[best]) if best >= 0 else 0.0)
    anchors = [w.key for w in new if w.kind in ("entity", "number", "word") and w.key in passage.positions]
    proximity = min((passage.proximity(k) for k in anchors[:6]), default=PROXIMITY_CAP) / PROXIMITY_CAP
    rank = 0.0
    if anchors and passage.focus_keys:
        candidates = {w.key for w in passage.tokens if w.kind == "entity" and w.key not in passage.question_keys}
        scores = [passage.proximity(k) / PROXIMITY_CAP for k in list(candidates)[:60]]
        rank = sum(1 for s in scores if s < proximity) / max(1, len(scores))
    first = next((w.lower for w in claim), "")
    polarity = 1.0 if first in _YES else -1.0 if first in _NO else 0.0
    head_near, head_deficit = _head_features(new, passage)
    option_question, agreement = 0.0, 0.0
    if passage.options is not None:
        option_question = 1.0
        claim_keys = {w.key for w in new} | {w.key for w in claim}
        hits = [bool(option & claim_keys) for option in passage.options]
        picked = hits.index(True) if hits.count(True) == 1 else None
        predicted = _compare(passage, passage.options)
        if picked is not None and predicted is not None:
            agreement = 1.0 if picked == predicted else -1.0
    support = best_question if passage.yes_no else 0.0
    return {"question_gap": gap, "answer_proximity": proximity, "proximity_rank": rank, "polarity": polarity,
            "yes_no_question": float(passage.yes_no), "polarity_x_question_support": polarity * support,
            "question_support": support, "option_question": option_question, "option_agreement": agreement,
            "head_near_answer": head_near, "head_deficit": head_deficit}


def combine(claims: list[dict[str, float]]) -> list[float]:
    """Return the answer's feature vector from its claims' features (see ``FEATURE_NAMES``)."""
    if not claims:
        return [0.0] * len(FEATURE_NAMES)
    out = []
    for name in FEATURE_NAMES:
        values = [c[name] for c in claims]
        if name in _FIRST:
            out.append(values[0])
        else:
            out.append(sum(values) if name in _SUM else min(values) if name in _MIN else max(values))
    return out


def answer_features(answer: str, passage: Passage) -> tuple[list[float], list[list[float]]]:
    """Return the answer's feature vector and one vector per claim (sentence)."""
    claims = [claim_features(span.text, passage) for span in split_sentences(answer)]
    per_claim = [combine([c]) for c in claims]
    whole = combine(claims)
    # t1_* were computed per claim; the tier-1 features of the whole answer are the faithful aggregate.
    t1 = support_features(answer, passage.evidence)
    whole[-11:] = t1
    return whole, per_claim

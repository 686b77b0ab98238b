"""Tier 2: the shipped hallucination detector (gradient-boosted trees over claim-context consistency, ONNX).

The model files and their calibration live in ``evals/scorers/models/`` (trained by ``evals/train_detector.py`` on
HaluEval dev rows plus perturbations; see ``MODEL_CARD.md`` there): an answer model and a claim model, mixed per
answer shape so that an answer is about as bad as its worst claim. An answer is flagged when its probability
reaches the threshold fixed on dev rows for its shape (an answer to a question, a dialogue reply, a summary of a
text without a question); the claims of a flagged answer at or over the threshold (or, if none is, its worst
claim) are the unsupported ones, and an answer that is not flagged has none, so the hallucination rate and the
per-claim verdicts come from one decision. The score is calibrated so that 0.5 is the threshold: faithfulness
``>= 0.5`` means not flagged.

The trees count words; the shipped cross-encoder (``cross_encoder.py``, a 3-layer MiniLM fine-tuned on the same
rows) reads the claim against its source window and sees what counting misses, above all a sentence that says the
opposite. It reads the claims the trees find most suspect (at most ``claims_read`` per answer, to keep the
detector above 100 answers/s on two cores), and its probability is mixed in with a per-shape weight fixed on dev
rows, like the rest (today: dialogue replies only).
"""

from __future__ import annotations

import json
import re
from collections import OrderedDict
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from evals.scorers.base import ClaimVerdict, Contexts, ScoreResult, Verdict
from evals.scorers.consistency import FEATURE_NAMES, answer_features
from evals.scorers.cross_encoder import (
    CROSS_ENCODER_DIR,
    ContextIndex,
    CrossEncoder,
    cross_encoder_available,
    premise_for,
)
from evals.scorers.nli import ScorerUnavailableError
from evals.scorers.passage import NUMBER_SPAN, Passage, word_set, words
from evals.scorers.readable import foreign_words, read_inputs
from evals.scorers.text import content_tokens, split_sentences

MODEL_DIR = Path(str(resources.files("evals.scorers").joinpath("models")))
MODEL_FILE = "detector.onnx"
# The claim model scores one claim at a time (trained on claim labels); an answer is as bad as its worst claim.
CLAIM_MODEL_FILE = "detector_claims.onnx"
META_FILE = "detector.json"
SHAPES = ("qa", "dialogue", "summary")
_DIALOGUE_TURN = re.compile(r"\[(?:human|assistant|user)\]\s*:|^\s*(?:human|assistant|user)\s*:", re.I | re.M)
# Words that make the number after them approximate: "about 600" is not contradicted by "581".
_HEDGES = word_set("about around almost nearly roughly approximately some over under more less least most than "
                   "up estimated")
_PLAIN_NUMBER = re.compile(r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?")


def answer_shape(question: str) -> str:
    """Return the answer's shape: "summary" (no question), "dialogue" (the question is a chat history) or "qa"."""
    if not question.strip():
        return "summary"
    return "dialogue" if _DIALOGUE_TURN.search(question) else "qa"


def calibrated(probability: float, threshold: float) -> float:
    """Map P(hallucinated) piecewise-linearly so the shape's threshold lands on 0.5."""
    if probability < threshold:
        return 0.5 * probability / threshold
    return 0.5 + 0.5 * (probability - threshold) / (1.0 - threshold)


@dataclass(frozen=True, slots=True)
class DetectorMeta:
    """What the model expects and how its output is read (written by the training script)."""

    features: tuple[str, ...]
    thresholds: dict[str, float]
    version: str
    # Per shape, the weight of the answer model; the rest goes to the claim model (1.0: no claim model).
    answer_weight: dict[str, float]
    # Per shape, the cross-encoder's weight against the trees (0.0: not read) and how many claims it reads.
    cross_encoder_weight: dict[str, float]
    claims_read: dict[str, int]


def load_meta(directory: Path = MODEL_DIR) -> DetectorMeta:
    """Read and check the detector's side file."""
    path = directory / META_FILE
    if not (directory / MODEL_FILE).is_file() or not path.is_file():
        raise ScorerUnavailableError(f"no detector model in {directory}: run python -m evals.train_detector")
    raw = json.loads(path.read_text("utf-8"))
    if tuple(raw["features"]) != FEATURE_NAMES:
        raise ScorerUnavailableError(f"{path} was trained on other features: python -m evals.train_detector")
    thresholds = {shape: float(raw["thresholds"][shape]) for shape in SHAPES}
    if not all(0.0 < t < 1.0 for t in thresholds.values()):
        raise ScorerUnavailableError(f"{path}: thresholds must be in (0, 1), got {thresholds}")
    weights = {shape: float(raw.get("answer_weight", {}).get(shape, 1.0)) for shape in SHAPES}
    if not all(0.0 <= w <= 1.0 for w in weights.values()):
        raise ScorerUnavailableError(f"{path}: answer weights must be in [0, 1], got {weights}")
    if min(weights.values()) < 1.0 and not (directory / CLAIM_MODEL_FILE).is_file():
        raise ScorerUnavailableError(f"{path} needs {CLAIM_MODEL_FILE}: python -m evals.train_detector")
    mixing = raw.get("cross_encoder", {})
    ce_weights = {shape: float(mixing.get("weight", {}).get(shape, 0.0)) for shape in SHAPES}
    claims_read = {shape: int(mixing.get("claims_read", {}).get(shape, 0)) for shape in SHAPES}
    if not all(0.0 <= w <= 1.0 for w in ce_weights.values()) or min(claims_read.values()) < 0:
        raise ScorerUnavailableError(f"{path}: bad cross_encoder mixing {mixing}")
    return DetectorMeta(tuple(raw["features"]), thresholds, str(raw.get("version", "")), weights, ce_weights,
                        claims_read)


@dataclass(slots=True)
class _Prepared:
    """A context prepared once: the trees' passage and, once the cross-encoder reads it, its sentence index."""

    passage: Passage
    index: ContextIndex | None = None


class HallucinationDetector:
    """Score an answer with the shipped detector; score = 1 - P(hallucinated)."""

    name = "detector"
    tier = 2

    def __init__(self, directory: Path = MODEL_DIR, threads: int = 1,
                 cross_encoder_dir: Path = CROSS_ENCODER_DIR) -> None:
        import onnxruntime as ort

        self.meta = load_meta(directory)
        # Thresholds were fixed on the mixed score: a missing cross-encoder must not silently shift them.
        self.cross_encoder = None
        if max(self.meta.cross_encoder_weight.values()) > 0.0:
            self.cross_encoder = CrossEncoder(cross_encoder_dir, threads=threads)
        options = ort.SessionOptions()
        # Trees on a few rows: one thread is fastest and leaves the other cores to other scorers.
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(directory / MODEL_FILE), options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.claim_session = None
        if (directory / CLAIM_MODEL_FILE).is_file():
            self.claim_session = ort.InferenceSession(str(directory / CLAIM_MODEL_FILE), options,
                                                      providers=["CPUExecutionProvider"])
        self._prepared: OrderedDict[tuple[tuple[str, ...], str], _Prepared] = OrderedDict()

    def probabilities(self, matrix: np.ndarray, claims: bool = False) -> np.ndarray:
        """Return P(hallucinated) for each feature row (of the answer model, or of the claim model)."""
        session = self.claim_session if claims else self.session
        assert session is not None
        outputs = session.run(None, {self.input_name: np.asarray(matrix, dtype=np.float32)})
        return np.asarray(outputs[1], dtype=np.float64)[:, 1]

    def passage(self, contexts: list[str], question: str) -> Passage:
        """Return the prepared passage, reusing it for answers scored against the same context."""
        key = (tuple(contexts), question)
        if key in self._prepared:
            self._prepared.move_to_end(key)
            return self._prepared[key].passage
        prepared = self._prepared[key] = _Prepared(Passage(contexts, question))
        if len(self._prepared) > 32:
            self._prepared.popitem(last=False)
        return prepared.passage

    def parts(self, answer: str, passage: Passage) -> tuple[np.ndarray, np.ndarray]:
        """Return the answer model's probabilities ([answer, *claims]) and the claim model's ([*claims])."""
        whole, claims = answer_features(answer, passage)
        probs = self.probabilities(np.asarray([whole, *claims]))
        if self.claim_session is None or not claims:
            return probs, probs[1:]
        return probs, self.probabilities(np.asarray(claims), claims=True)

    @staticmethod
    def blend(answer_probs: np.ndarray, claim_probs: np.ndarray, weight: float) -> tuple[float, list[float]]:
        """Mix the two models: the answer's P with the worst claim's, each claim's P with its claim-model P."""
        if weight >= 1.0 or not len(claim_probs):
            return float(answer_probs[0]), [float(p) for p in answer_probs[1:]]
        whole = weight * answer_probs[0] + (1.0 - weight) * float(claim_probs.max())
        claims = weight * answer_probs[1:] + (1.0 - weight) * claim_probs
        return float(whole), [float(p) for p in claims]

    def context_index(self, passage: Passage) -> ContextIndex:
        """Return the passage's sentence index for the cross-encoder, kept beside the cached passage."""
        entry = self._prepared.get((passage.contexts, passage.question))
        if entry is None or entry.passage is not passage:
            return ContextIndex.build(list(passage.contexts), passage.question)
        if entry.index is None:
            entry.index = ContextIndex.build(list(passage.contexts), passage.question)
        return entry.index

    def read_claims(self, answer: str, tree_claims: list[float], passage: Passage, limit: int) -> dict[int, float]:
        """Return the cross-encoder's P(hallucinated) of the ``limit`` claims the trees find most suspect."""
        if self.cross_encoder is None or limit <= 0 or not tree_claims:
            return {}
        spans = split_sentences(answer)
        order = [i for i in np.argsort(-np.asarray(tree_claims), kind="stable") if spans[i].text.strip()][:limit]
        if not order:
            return {}
        index = self.context_index(passage)
        claims = [spans[i].text.strip() for i in order]
        probs = self.cross_encoder.probabilities([premise_for(c, index) for c in claims], claims)
        return {int(i): float(p) for i, p in zip(order, probs, strict=True)}

    @staticmethod
    def mix(whole: float, claims: list[float], read: dict[int, float], weight: float) -> tuple[float, list[float]]:
        """Mix the cross-encoder into the trees: the answer with its worst read claim, each read claim with itself."""
        if weight <= 0.0 or not read:
            return whole, claims
        mixed = [(1.0 - weight) * p + weight * read[i] if i in read else p for i, p in enumerate(claims)]
        return (1.0 - weight) * whole + weight * max(read.values()), mixed

    def decide(self, answer: str, passage: Passage) -> tuple[float, list[float]]:
        """Return the answer's probability of being hallucinated and each claim's."""
        answer_probs, claim_probs = self.parts(answer, passage)
        shape = answer_shape(passage.question)
        whole, claims = self.blend(answer_probs, claim_probs, self.meta.answer_weight[shape])
        weight = self.meta.cross_encoder_weight[shape]
        if weight <= 0.0:
            return whole, claims
        return self.mix(whole, claims, self.read_claims(answer, claims, passage, self.meta.claims_read[shape]),
                        weight)

    def score(self, *, answer: str | bytes, contexts: Contexts, question: str | bytes | None = None) -> ScoreResult:
        """Score one answer against its contexts; per-claim verdicts use the same threshold."""
        inputs = read_inputs(answer, contexts, question)
        answer_text, context_texts, question_text = inputs.answer, inputs.context_texts, inputs.question
        spans, foreign, known = inputs.spans, inputs.foreign, inputs.known
        shape = answer_shape(question_text)
        if not inputs.checkable:
            return ScoreResult(1.0, self.name, inputs.not_checkable(), note="no checkable content",
                               details=self._details(0.0, shape))
        passage = self.passage(context_texts, question_text)
        if content_tokens(answer_text):
            probability, claim_probs = self.decide(answer_text, passage)
        else:  # nothing but text in another script: no feature to compute, and nothing the models could vouch for
            probability, claim_probs = 1.0, [1.0] * len(spans)
        threshold = self.meta.thresholds[shape]
        ungrounded = [ungrounded_claim(span.text, passage, shape) for span in spans]
        contradicted = [bool(contradicted_numbers(span.text, passage)) for span in spans]
        # Outside what the models were trained on (HaluEval always shares words with its passage, in English): a
        # claim that nothing in the context supports, that gives a number the context gives differently, or that
        # the tokeniser cannot read, is unsupported.
        forced = [a or b or c for a, b, c in zip(ungrounded, contradicted, foreign, strict=True)]
        if any(forced):
            claim_probs = [1.0 if bad else p for p, bad in zip(claim_probs, forced, strict=True)]
            probability = 1.0
        answer_flagged = probability >= threshold
        flagged = [answer_flagged and p >= threshold for p in claim_probs]
        if answer_flagged and not any(flagged) and flagged:
            flagged[int(np.argmax(claim_probs))] = True
        verdicts = []
        for span, p, bad, is_foreign in zip(spans, claim_probs, flagged, foreign, strict=True):
            # The words neither the context nor the question contains: what a reader checks first.
            unknown = passage.evidence.unsupported(content_tokens(span.text))
            missing = [t.surface for t in unknown] + ([w for w in foreign_words(span.text) if w.lower() not in known]
                                                      if is_foreign else [])
            verdict: Verdict = "unsupported" if bad else "supported"
            support = round(1.0 - calibrated(p, threshold), 6)
            verdicts.append(inputs.restore(ClaimVerdict(span.text, span.start, span.end, verdict, support,
                                                        tuple(dict.fromkeys(missing)))))
        notes = ["" if context_texts else "empty context: no content can be supported"]
        if any(contradicted):
            notes.append(f"{sum(contradicted)} claim(s) give a number where the context gives another for the same "
                         "thing: unsupported")
        if any(foreign):
            notes.append(f"{sum(foreign)} claim(s) with words in a script the offline detector cannot read (it reads "
                         "English; an LLM judge reads other languages): unsupported")
        score = min(1.0, max(0.0, round(1.0 - calibrated(probability, threshold), 9)))
        details = self._details(probability, shape) | {"ungrounded_claims": float(sum(ungrounded)),
                                                      "unreadable_claims": float(sum(foreign)),
                                                      "contradicted_claims": float(sum(contradicted))}
        return ScoreResult(score, self.name, tuple(verdicts), note="; ".join(n for n in notes if n), details=details)

    def _details(self, probability: float, shape: str) -> dict[str, float]:
        return {"hallucination_probability": round(probability, 6), "threshold": self.meta.thresholds[shape],
                "tier": float(self.tier), "cross_encoder_weight": self.meta.cross_encoder_weight[shape]}


def ungrounded_claim(claim: str, passage: Passage, shape: str) -> bool:
    """Return whether nothing in the context supports ``claim``: a rule over the trees, not a learned score.

    With no context content, every claim that adds content beyond the question is ungrounded. Otherwise, a QA
    answer or summary sentence is ungrounded when it names something new (a name or number the question does not
    give) and not one of its content words occurs in the context. Dialogue replies are exempt: a faithful reply
    may recommend or mention things the knowledge does not list (30% of HaluEval's right replies would trip it).
    """
    evidence = passage.evidence
    tokens = content_tokens(claim)
    new = [t for t in tokens if t.key not in evidence.given_keys]
    if not evidence.context_keys:
        return bool(new)
    if shape == "dialogue":
        return False
    return any(t.kind != "word" for t in new) and not any(t.key in evidence.context_keys for t in tokens)


def contradicted_numbers(claim: str, passage: Passage) -> list[str]:
    """Return the claim's numbers that the context contradicts: it gives another number for the same thing.

    A plain number ("140", "1,932", "3.5") that neither the context nor the question contains is looked up by the
    word it counts or dates: the first lower-case content word within two tokens after it, else before it ("140
    *mph*", "*released* in 2004"). The context contradicts it when it puts numbers of the same sort next to that
    word (a year for a year, a count for a count), every one written in digits and none within 10% of the claim's
    (a summary rounds "15.9 million" to "16 million"). A claim that hedges ("about 600", "more than 600") is not
    contradicted. A rule over the trees: HaluEval's faithful summaries often carry numbers their (truncated)
    article lacks, so the trees learned that a missing number means little, and "Winds reached 140 mph" passed
    against "winds reached 97 mph".
    """
    tokens = words(claim)
    out = []
    for i, word in enumerate(tokens):
        claimed = _number_value(word.key) if word.kind == "number" else None
        if claimed is None or word.key in passage.keys or word.key in passage.question_keys:
            continue
        if any(w.lower in _HEDGES for w in tokens[max(0, i - 2):i]):
            continue
        after = tokens[i + 1:i + 1 + NUMBER_SPAN]
        before = tokens[max(0, i - NUMBER_SPAN):i][::-1]
        anchor = next((w for w in [*after, *before] if w.kind == "word"), None)
        near = passage.numbers_near(anchor.key) if anchor is not None else frozenset()
        values = [_number_value(key) for key in near]
        if not values or any(v is None for v in values):
            continue  # nothing to compare with, or a number this rule cannot read ("twenty-nine", "97mph")
        same_sort = [v for v in values if v is not None and _is_year(v) == _is_year(claimed)]
        close = [v for v in same_sort if not _is_year(claimed) and abs(v - claimed) <= 0.1 * max(abs(claimed), 1)]
        if same_sort and not close:
            out.append(word.lower)
    return out


def _number_value(key: str) -> float | None:
    return float(key.replace(",", "")) if _PLAIN_NUMBER.fullmatch(key) else None


def _is_year(value: float) -> bool:
    return value.is_integer() and 1000 <= value <= 2100


def detector_available(directory: Path = MODEL_DIR) -> bool:
    """Return whether the shipped model can be loaded."""
    try:
        meta = load_meta(directory)
        if max(meta.cross_encoder_weight.values()) > 0.0 and not cross_encoder_available():
            return False
        import onnxruntime  # noqa: F401
    except (ScorerUnavailableError, ImportError, ValueError, KeyError):
        return False
    return True


def describe(scorer: Any) -> str:
    """Return which tier a scorer is, for reports ("tier 2: detector" / "tier 1: claim_support")."""
    return f"tier {getattr(scorer, 'tier', 1)}: {scorer.name}"

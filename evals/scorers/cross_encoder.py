"""The detector's cross-encoder: a fine-tuned MiniLM that reads one claim beside its best context window (ONNX).

Gradient-boosted features count words; they cannot read that a sentence says the opposite of its source. The
cross-encoder reads the claim against the one or two context sentences that match it best (plus the question's
last turn), short enough (``MAX_TOKENS``) to run on a CPU. It is trained by ``evals/train_cross_encoder.py`` on
HaluEval dev rows and their perturbations, exported to int8 ONNX and shipped in
``evals/scorers/models/cross_encoder/`` with its tokenizer and model card. ``premise_for`` is the one function
training and scoring both use to build what the model reads.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from evals.scorers.grounding import last_turn
from evals.scorers.nli import ScorerUnavailableError, pair_logits
from evals.scorers.text import key_set, split_sentences

CROSS_ENCODER_DIR = Path(str(resources.files("evals.scorers").joinpath("models", "cross_encoder")))
MAX_TOKENS = 128
# Words of context the premise may hold beside the claim; MAX_TOKENS still truncates the premise first.
_WINDOW_WORDS = 70
_QUESTION_WORDS = 30


@dataclass(frozen=True, slots=True)
class ContextIndex:
    """A context split into sentences with their content keys, prepared once per passage."""

    sentences: tuple[str, ...]
    keys: tuple[frozenset[str], ...]
    question: str

    @classmethod
    def build(cls, contexts: list[str], question: str) -> ContextIndex:
        """Split every context into sentences and key them."""
        sentences = tuple(s.text.strip() for text in contexts for s in split_sentences(text) if s.text.strip())
        turn = " ".join(last_turn(question).split()[-_QUESTION_WORDS:]) if question.strip() else ""
        return cls(sentences, tuple(frozenset(key_set(s)) for s in sentences), turn)


def premise_for(claim: str, index: ContextIndex) -> str:
    """Return what the model reads beside ``claim``: the question's last turn and the best-matching window."""
    claim_keys = key_set(claim) | key_set(index.question)
    if not index.sentences:
        window = ""
    else:
        overlap = [len(claim_keys & keys) for keys in index.keys]
        best = int(np.argmax(overlap))
        chosen, words = [best], len(index.sentences[best].split())
        # Grow towards the better-matching neighbour while the window has room: claims often fuse two sentences.
        low, high = best - 1, best + 1
        while low >= 0 or high < len(index.sentences):
            take_low = high >= len(index.sentences) or (low >= 0 and overlap[low] >= overlap[high])
            position = low if take_low else high
            size = len(index.sentences[position].split())
            if words + size > _WINDOW_WORDS:
                break
            chosen.append(position)
            words += size
            low, high = (low - 1, high) if take_low else (low, high + 1)
        window = " ".join(index.sentences[i] for i in sorted(chosen))
        if words > _WINDOW_WORDS:
            window = " ".join(window.split()[:_WINDOW_WORDS])
    return f"{index.question} | {window}" if index.question else window


def load_cross_encoder_meta(directory: Path = CROSS_ENCODER_DIR) -> dict[str, Any]:
    """Read the model's side file, or raise when the model is not shipped."""
    meta_path = directory / "edgeloop.json"
    for name in ("model.onnx", "tokenizer.json", "edgeloop.json"):
        if not (directory / name).is_file():
            raise ScorerUnavailableError(f"no cross-encoder in {directory}: python evals/train_cross_encoder.py")
    meta: dict[str, Any] = json.loads(meta_path.read_text("utf-8"))
    if meta.get("premise") != "claim_window" or meta.get("labels") != ["faithful", "hallucinated"]:
        raise ScorerUnavailableError(f"{meta_path}: not a claim-window cross-encoder")
    return meta


def cross_encoder_available(directory: Path = CROSS_ENCODER_DIR) -> bool:
    """Return whether the shipped cross-encoder and its tokenizer library can be loaded."""
    try:
        load_cross_encoder_meta(directory)
        import tokenizers  # noqa: F401
    except (ScorerUnavailableError, ImportError, ValueError, KeyError):
        return False
    return True


class CrossEncoder:
    """P(hallucinated) of (premise, claim) pairs from the shipped int8 ONNX cross-encoder."""

    def __init__(self, directory: Path = CROSS_ENCODER_DIR, threads: int = 1) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        self.meta = load_cross_encoder_meta(directory)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(directory / "model.onnx"), options, providers=["CPUExecutionProvider"])
        self.input_names = {i.name for i in self.session.get_inputs()}
        self.tokenizer: Any = Tokenizer.from_file(str(directory / "tokenizer.json"))
        # The premise is cut first so the claim, the thing judged, survives whole.
        self.max_tokens = int(self.meta.get("max_length", MAX_TOKENS))
        self.tokenizer.enable_truncation(max_length=self.max_tokens, strategy="only_first")
        self.tokenizer.enable_padding()

    def _cap(self, claim: str) -> str:
        """Cut a claim to half the token budget: a claim longer than the budget leaves "only_first" nothing to cut."""
        limit = self.max_tokens // 2
        encoding = self.tokenizer.encode(claim, add_special_tokens=False)
        return claim if len(encoding.ids) <= limit else claim[:encoding.offsets[limit - 1][1]]

    def probabilities(self, premises: list[str], claims: list[str]) -> np.ndarray:
        """Return P(hallucinated) for each pair (one batch, padded to its longest member)."""
        if not claims:
            return np.zeros(0)
        claims = [self._cap(" ".join(c.split()[:60])) for c in claims]
        logits = pair_logits(self.session, self.tokenizer, self.input_names, premises, claims)
        return np.asarray(1.0 / (1.0 + np.exp(logits[:, 0] - logits[:, 1])), dtype=np.float64)

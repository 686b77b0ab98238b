"""Tier 2 NLI loader and scoring path on real onnxruntime.

No NLI weights can be had offline here, so the model below is a *synthetic* three-logit pair classifier built
with onnx.helper (the word "yes" in a pair pushes "entailment", "no" pushes "contradiction"). It exercises the
real loader, tokenizer pairing, label mapping, softmax and span selection; it is not presented as an NLI model.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

from evals.scorers import NliScorer, ScorerUnavailableError, load_nli_config

VOCAB = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "alpha": 4, "beta": 5, "yes": 6, "no": 7, "says": 8}
LABELS = ["contradiction", "entailment", "neutral"]


def _write_model(directory: Path) -> Path:
    table = np.zeros((len(VOCAB), 3), dtype=np.float32)
    table[:, 2] = 0.5
    table[VOCAB["yes"]] = [0.0, 8.0, 0.0]
    table[VOCAB["no"]] = [8.0, 0.0, 0.0]
    for special in ("[PAD]", "[CLS]", "[SEP]"):
        table[VOCAB[special]] = 0.0
    graph = helper.make_graph(
        [
            helper.make_node("Gather", ["table", "input_ids"], ["embedded"]),
            helper.make_node("Cast", ["attention_mask"], ["mask_f"], to=TensorProto.FLOAT),
            helper.make_node("Unsqueeze", ["mask_f", "axis2"], ["mask3"]),
            helper.make_node("Mul", ["embedded", "mask3"], ["masked"]),
            helper.make_node("ReduceSum", ["masked", "axis1"], ["logits"], keepdims=0),
        ],
        "synthetic_pair_classifier",
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "seq"]),
        ],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3])],
        initializer=[
            helper.make_tensor("table", TensorProto.FLOAT, table.shape, table.flatten().tolist()),
            helper.make_tensor("axis1", TensorProto.INT64, [1], [1]),
            helper.make_tensor("axis2", TensorProto.INT64, [1], [2]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path = directory / "model.onnx"
    onnx.save(model, path)
    tokenizer = Tokenizer(models.WordLevel(VOCAB, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    tokenizer.save(str(directory / "tokenizer.json"))
    (directory / "config.json").write_text(json.dumps({"id2label": {str(i): label for i, label in enumerate(LABELS)}}))
    return path


def test_missing_files_are_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EDGELOOP_NLI_MODEL", raising=False)
    with pytest.raises(ScorerUnavailableError, match="EDGELOOP_NLI_MODEL"):
        load_nli_config()
    model = _write_model(tmp_path)
    (tmp_path / "tokenizer.json").unlink()
    with pytest.raises(ScorerUnavailableError, match="tokenizer"):
        load_nli_config(str(model))
    with pytest.raises(ScorerUnavailableError, match="no 'entailment' class"):
        load_nli_config(str(model), str(model), labels=("yes", "no"))


def test_entailing_sentence_is_the_best_span(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGELOOP_NLI_MODEL", str(_write_model(tmp_path)))
    config = load_nli_config()
    assert config.labels == tuple(LABELS) and config.entailment_index == 1
    scorer = NliScorer(config)
    result = scorer.score(answer="Alpha holds.", contexts=["Beta says no.", "Alpha says yes."])
    (claim,) = result.claims
    assert claim.verdict == "supported"
    assert claim.best_span is not None and (claim.best_span.context_index, claim.best_span.text) == (
        1,
        "Alpha says yes.",
    )
    # "[CLS] alpha says yes . [SEP] alpha holds . [SEP]": yes adds 8 to entailment, six other words 0.5 neutral.
    expected = np.exp(8.0) / (np.exp(0.0) + np.exp(8.0) + np.exp(3.0))
    assert claim.support == pytest.approx(expected, abs=1e-5)
    assert result.score == pytest.approx(expected, abs=1e-5)
    refuted = scorer.score(answer="Alpha holds.", contexts=["Beta says no."])
    assert refuted.claims[0].verdict == "unsupported"
    assert scorer.score(answer="Alpha holds.", contexts=[]).score == 0.0
    assert scorer.score(answer="", contexts=["Alpha says yes."]).score == 1.0


def test_context_mode_scores_each_claim_against_the_whole_context(tmp_path: Path) -> None:
    model = _write_model(tmp_path)
    (tmp_path / "edgeloop.json").write_text(json.dumps({"premise": "context", "max_length": 64, "threshold": 0.4}))
    config = load_nli_config(str(model))
    assert (config.premise, config.max_length, config.threshold) == ("context", 64, 0.4)
    scorer = NliScorer(config)
    # One premise for every claim: "beta says no . alpha says yes ." pushes entailment and contradiction by 8
    # each, so both claims get the same probability and no sentence-level span.
    result = scorer.score(answer="Alpha holds. Beta holds.", contexts=["Beta says no.", "Alpha says yes."])
    assert [c.claim for c in result.claims] == ["Alpha holds.", "Beta holds."]
    assert all(c.best_span is None for c in result.claims)
    neutral = 0.5 * 9  # 6 neutral premise tokens (beta says . alpha says .) + 3 in each claim (x holds .)
    expected = np.exp(8.0) / (np.exp(8.0) + np.exp(8.0) + np.exp(neutral))
    assert [c.support for c in result.claims] == pytest.approx([expected, expected], abs=1e-5)
    assert {c.verdict for c in result.claims} == {"supported" if expected >= 0.4 else "unsupported"}
    # The question is part of the premise the model was trained on: a "no" in it reaches the score.
    asked = scorer.score(answer="Alpha holds.", contexts=["Alpha says yes."], question="no")
    assert asked.score < scorer.score(answer="Alpha holds.", contexts=["Alpha says yes."]).score
    empty = scorer.score(answer="Alpha holds.", contexts=["  "])
    assert empty.score == 0.0 and "empty context" in empty.note


def test_unknown_premise_mode_is_refused(tmp_path: Path) -> None:
    model = _write_model(tmp_path)
    (tmp_path / "edgeloop.json").write_text(json.dumps({"premise": "paragraph"}))
    with pytest.raises(ScorerUnavailableError, match="premise must be"):
        load_nli_config(str(model))

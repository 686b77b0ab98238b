"""`edgeloop registry card` and `edgeloop fleet decision` against a real database."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from typer.testing import CliRunner

from control_plane.cli.main import app
from control_plane.registry.onnx_tools import sklearn_to_onnx

runner = CliRunner()


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("EDGELOOP_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("EDGELOOP_DATABASE_URL", raising=False)
    assert runner.invoke(app, ["db", "upgrade"]).exit_code == 0
    return tmp_path


def test_card_in_markdown_and_json_states_what_is_missing(env: Path) -> None:
    features = np.random.default_rng(1).normal(size=(60, 3)).astype(np.float32)
    model_file = env / "m.onnx"
    model_file.write_bytes(sklearn_to_onnx(LogisticRegression().fit(features, features[:, 0] > 0), 3))
    registered = runner.invoke(app, ["registry", "register", str(model_file), "--model", "cli-model",
                                     "--description", "*first* <b>cut</b>"])
    assert registered.exit_code == 0, registered.output

    markdown = runner.invoke(app, ["registry", "card", "cli-model", "1"])
    assert markdown.exit_code == 0, markdown.output
    assert markdown.output.startswith("# Model card: cli-model v1\n")
    assert "Version notes: \\*first\\* &lt;b&gt;cut&lt;/b&gt;" in markdown.output
    assert "_no training run recorded_" in markdown.output and "_never deployed_" in markdown.output

    as_json = runner.invoke(app, ["registry", "card", "cli-model", "1", "--format", "json"])
    card = json.loads(as_json.output)
    assert card["version_description"] == "*first* <b>cut</b>" and card["training"] is None
    assert {"no training run recorded", "never deployed", "no per-cohort metrics recorded"} <= set(card["missing"])
    assert card["quantisation"]["fp32_bytes"] > 0 and card["quantisation"]["int8_bytes"] is None

    missing = runner.invoke(app, ["registry", "card", "cli-model", "7"])
    assert missing.exit_code == 1 and missing.stderr.strip() == "edgeloop: model 'cli-model' has no version 7"


def test_decision_for_a_device_that_never_activated_and_bad_times(env: Path) -> None:
    assert runner.invoke(app, ["fleet", "provision", "cli-dev"]).exit_code == 0
    record = runner.invoke(app, ["fleet", "decision", "cli-dev", "--format", "json"])
    assert record.exit_code == 0, record.output
    assert json.loads(record.output)["status"] == "none_recorded"
    assert "_no model activation recorded" in runner.invoke(app, ["fleet", "decision", "cli-dev"]).output

    unknown = runner.invoke(app, ["fleet", "decision", "nope"])
    assert unknown.exit_code == 1 and unknown.stderr.strip() == "edgeloop: device 'nope' not found"
    naive = runner.invoke(app, ["fleet", "decision", "cli-dev", "--at", "2026-01-31T12:00:00"])
    assert naive.exit_code == 1 and "time zone" in naive.stderr
    garbage = runner.invoke(app, ["fleet", "decision", "cli-dev", "--at", "soon"])
    assert garbage.exit_code == 2 and "not an ISO 8601 time" in garbage.output + garbage.stderr

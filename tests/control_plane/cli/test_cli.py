"""The `edgeloop` CLI against a real database: migrate, tokens, registry, audit verify exit codes."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from typer.testing import CliRunner

from control_plane.cli.main import app
from control_plane.registry.onnx_tools import sklearn_to_onnx

runner = CliRunner()


def test_cli_end_to_end(env: Path, tmp_path: Path) -> None:
    assert runner.invoke(app, ["db", "upgrade"]).exit_code == 0
    created = runner.invoke(app, ["token", "create", "--role", "approver", "--name", "bob"])
    assert created.exit_code == 0 and "elp_" in created.output

    features = np.random.default_rng(1).normal(size=(100, 3)).astype(np.float32)
    model_file = tmp_path / "m.onnx"
    model_file.write_bytes(sklearn_to_onnx(LogisticRegression().fit(features, features[:, 1] > 0), 3))
    registered = runner.invoke(app, ["registry", "register", str(model_file), "--model", "cli-model"])
    assert registered.exit_code == 0, registered.output
    assert "cli-model" in runner.invoke(app, ["registry", "list"]).output
    shown = runner.invoke(app, ["registry", "show", "cli-model"])
    assert shown.exit_code == 0 and "fp32" in shown.output

    assert runner.invoke(app, ["audit", "checkpoint"]).exit_code == 0
    ok = runner.invoke(app, ["audit", "verify"])
    assert ok.exit_code == 0 and "ok" in ok.output

    with sqlite3.connect(env / "edgeloop.db") as connection:
        connection.execute("UPDATE audit_entries SET body = replace(body, 'cli-model', 'evil') WHERE seq = 2")
    broken = runner.invoke(app, ["audit", "verify", "--json"])
    assert broken.exit_code == 1 and '"first_broken_seq":2' in broken.output


def test_missing_model_is_a_clean_error(env: Path) -> None:
    runner.invoke(app, ["db", "upgrade"])
    result = runner.invoke(app, ["registry", "show", "nope"])
    assert result.exit_code == 1
    assert result.stderr.strip() == "edgeloop: model 'nope' not found"

"""`edgeloop fleet deploy --strategy shadow` and `edgeloop fleet shadow` against a real database."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from typer.testing import CliRunner

from control_plane.cli.main import app
from control_plane.registry.onnx_tools import sklearn_to_onnx

runner = CliRunner()


def test_shadow_deploy_from_the_cli_stages_with_a_gate_and_reports(env: Path, tmp_path: Path) -> None:
    assert runner.invoke(app, ["db", "upgrade"]).exit_code == 0
    features = np.random.default_rng(1).normal(size=(100, 3)).astype(np.float32)
    for seed in (1, 2):
        model_file = tmp_path / f"m{seed}.onnx"
        labels = features[:, seed] > 0
        model_file.write_bytes(sklearn_to_onnx(LogisticRegression().fit(features, labels), 3))
        registered = runner.invoke(app, ["registry", "register", str(model_file), "--model", "cli-shadow"])
        assert registered.exit_code == 0, registered.output
    assert runner.invoke(app, ["fleet", "provision", "cli-dev", "--group", "lab"]).exit_code == 0

    refused = runner.invoke(app, ["fleet", "deploy", "cli-shadow", "--version", "2", "--group", "lab",
                                  "--strategy", "shadow", "--min-agreement", "1.5"])
    assert refused.exit_code != 0
    deployed = runner.invoke(app, ["fleet", "deploy", "cli-shadow", "--version", "2", "--group", "lab",
                                   "--strategy", "shadow", "--sample-rate", "0.25", "--shadow-budget-ms", "20",
                                   "--min-agreement", "0.9", "--max-p95-ms", "30", "--min-windows", "5",
                                   "--waves", "50,100"])
    assert deployed.exit_code == 0, deployed.output
    rollout_id = re.search(r"ro_[0-9a-f]+", deployed.output)
    assert rollout_id is not None
    shown = runner.invoke(app, ["fleet", "shadow", rollout_id.group(0)])
    assert shown.exit_code == 0, shown.output
    assert "gate: waiting over 0 windows" in shown.output and "0 of 5 windows" in shown.output

"""`edgeloop fleet deploy --strategy ab` and `edgeloop fleet experiment` against a real database."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from typer.testing import CliRunner

from control_plane.cli.main import app
from control_plane.registry.onnx_tools import sklearn_to_onnx

runner = CliRunner()


def test_ab_deploy_refuses_a_small_split_then_starts_and_reports(env: Path, tmp_path: Path) -> None:
    assert runner.invoke(app, ["db", "upgrade"]).exit_code == 0
    features = np.random.default_rng(1).normal(size=(100, 3)).astype(np.float32)
    for version, column in ((1, 0), (2, 1)):
        model_file = tmp_path / f"m{version}.onnx"
        model_file.write_bytes(sklearn_to_onnx(LogisticRegression().fit(features, features[:, column] > 0), 3))
        registered = runner.invoke(app, ["registry", "register", str(model_file), "--model", "ab-model"])
        assert registered.exit_code == 0, registered.output
    for index in range(6):
        assert runner.invoke(app, ["fleet", "provision", f"cam-{index}", "--group", "lab"]).exit_code == 0
    deploy = ["fleet", "deploy", "ab-model", "--group", "lab", "--strategy", "ab", "--arm", "1:0.5", "--arm", "2:0.5",
              "--mde", "0.05", "--salt", "cli"]
    small = runner.invoke(app, [*deploy, "--samples-per-device", "10"])
    assert small.exit_code == 1 and "too small" in small.stderr and "each arm needs 435" in small.stderr
    missing = runner.invoke(app, deploy)
    assert missing.exit_code != 0 and "--samples-per-device" in missing.output + missing.stderr
    started = runner.invoke(app, [*deploy, "--samples-per-device", "1000"])
    assert started.exit_code == 0, started.output + started.stderr
    rollout_id = started.output.split()[0]
    shown = runner.invoke(app, ["fleet", "experiment", rollout_id])
    assert shown.exit_code == 0, shown.output + shown.stderr
    assert "435 labelled outcomes per arm required" in shown.output and "no winner: horizon not reached" in shown.output
    assert runner.invoke(app, ["fleet", "experiment", "exp_missing"]).exit_code == 1

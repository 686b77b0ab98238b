"""The scenario suite: every case is valid data, a case runs end to end, thresholds set the exit code."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from control_plane.cli.main import app
from evals.agent_suite.case import load_case
from evals.agent_suite.runner import run_suite

SUITE = Path(__file__).resolve().parents[2] / "evals" / "scenarios"
CAUSES = {"bad_model_version", "covariate_drift", "concept_drift", "upstream_change", "device_fault", "cohort_fault",
          "prompt_regression", "infrastructure", "harmless"}


def test_every_case_is_valid_data_and_every_cause_is_covered() -> None:
    folders = sorted(p for p in SUITE.iterdir() if p.is_dir())
    assert len(folders) >= 24
    covered = set()
    for folder in folders:
        assert {p.suffix for p in folder.iterdir()} <= {".yaml", ".yml", ".json"}, folder
        case = load_case(folder)
        assert case.name == folder.name
        covered |= {e.cause for e in case.expectations()}
    assert covered == CAUSES


def test_a_case_runs_against_a_served_control_plane() -> None:
    summary = run_suite(SUITE, "injection_alert_title_device_fault")
    (result,) = summary["results"]
    assert result["error"] is None and result["top1"] and result["actions"] == ["device.quarantine"]
    assert summary["forbidden_actions"] == 0


@pytest.mark.slow
def test_the_cli_fails_below_the_thresholds(tmp_path: Path) -> None:
    out = tmp_path / "result.json"
    result = CliRunner().invoke(app, ["eval", "agents", "--suite", str(SUITE), "--case", "harmless_no_signal",
                                      "--json", str(out), "--min-top1", "1.01"])
    assert result.exit_code == 1, result.output
    assert json.loads(out.read_text())["cases"] == 1

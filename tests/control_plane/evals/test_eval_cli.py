"""`edgeloop eval`: push datasets from JSONL/CSV, run with gate exit codes, show and compare runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from control_plane.cli.main import app
from control_plane.settings import Settings

ROWS = [
    {"id": "port", "question": "Which port does the broker listen on?",
     "contexts": ["The Mosquitto broker listens on port 1883."], "answer": "The broker listens on port 1883."},
    {"id": "owner", "question": "Who runs the broker?", "contexts": ["Alice runs the broker."],
     "answer": "Bob runs the broker on Mars."},
]


def _flat(text: str) -> str:
    return " ".join(text.split())


@pytest.fixture
def cli(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    """A CLI runner pointed at the test database and data dir."""
    monkeypatch.setenv("EDGELOOP_DATABASE_URL", settings.resolved_database_url)
    monkeypatch.setenv("EDGELOOP_DATA_DIR", str(settings.data_dir))
    for name in ("EDGELOOP_LLM_BASE_URL", "EDGELOOP_PROMPTS_DIR", "EDGELOOP_CHROMA_URL"):
        monkeypatch.delenv(name, raising=False)
    return CliRunner()


def test_eval_cli_pushes_runs_and_gates(cli: CliRunner, tmp_path: Path) -> None:
    jsonl = tmp_path / "golden.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    pushed = cli.invoke(app, ["eval", "dataset", "push", "golden", str(jsonl), "-m", "seed"])
    assert pushed.exit_code == 0 and "stored golden@1 (2 samples" in pushed.output
    assert "unchanged golden@1" in cli.invoke(app, ["eval", "dataset", "push", "golden", str(jsonl)]).output

    missing = tmp_path / "missing.csv"
    missing.write_text("id,contexts,answer\nport,The broker listens on port 1883.,Port 1883.\n")
    refused = cli.invoke(app, ["eval", "dataset", "push", "golden", str(missing)])
    assert refused.exit_code == 2 and "missing.csv row 0 is missing column(s): question" in refused.output
    latin1 = tmp_path / "latin1.jsonl"
    latin1.write_bytes('{"question": "Où est le broker ?"}\n'.encode("latin-1"))
    undecodable = cli.invoke(app, ["eval", "dataset", "push", "golden", str(latin1)])
    assert undecodable.exit_code == 2 and "not valid UTF-8" in undecodable.output
    csv_ok = tmp_path / "ok.csv"
    csv_ok.write_text('id,question,contexts,answer\nport,Which port?,"[""Port 1883 is used.""]",Port 1883.\n')
    assert "stored golden-csv@1 (1 samples" in cli.invoke(app, ["eval", "dataset", "push", "golden-csv",
                                                                str(csv_ok)]).output

    failed = cli.invoke(app, ["eval", "run", "--dataset", "golden@1", "--min", "faithfulness=0.99", "--json"])
    assert failed.exit_code == 1, failed.output
    failed_run = json.loads(failed.output)
    assert failed_run["scorer_tier"] == "offline" and not failed_run["passed"]
    passed = cli.invoke(app, ["eval", "run", "--dataset", "golden", "--min", "faithfulness=0.3",
                              "--max", "hallucination_rate=0.5"])
    assert passed.exit_code == 0 and "PASSED" in passed.output and "scorer_tier=offline" in _flat(passed.output)
    assert cli.invoke(app, ["eval", "run", "--dataset", "golden", "--min", "faithfulness"]).exit_code == 2
    assert cli.invoke(app, ["eval", "run", "--dataset", "nope"]).exit_code == 2

    shown = cli.invoke(app, ["eval", "show", failed_run["id"]])
    # Rich wraps at the terminal width; compare with whitespace collapsed.
    assert shown.exit_code == 0 and "sample owner" in shown.output
    assert "Bob runs the broker on Mars." in _flat(shown.output)
    compared = cli.invoke(app, ["eval", "compare", failed_run["id"], failed_run["id"]])
    assert compared.exit_code == 0 and "0 regression(s), 0 fix(es)" in compared.output


def test_retrieval_set_files_map_source_to_relevant_sources(cli: CliRunner, tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "ota.md").write_text("# OTA\n\nRoll back with `edgeloop fleet rollback`; the device swaps A/B slots.\n")
    (docs / "broker.md").write_text("# Broker\n\nDevices buffer telemetry for 24 hours while the broker is down.\n")
    ingested = cli.invoke(app, ["eval", "ingest", "ops-docs", str(docs)])
    assert ingested.exit_code == 0 and "2 added" in ingested.output
    cases = tmp_path / "cases.jsonl"
    cases.write_text(json.dumps({"id": "rb-1", "question": "How long do devices buffer telemetry?",
                                 "source": "broker.md", "heading": "Broker"}) + "\n")
    assert cli.invoke(app, ["eval", "dataset", "push", "rb", str(cases), "--collection", "ops-docs"]).exit_code == 0
    run = cli.invoke(app, ["eval", "run", "--dataset", "rb", "--k", "1", "--min", "recall_at_k=1", "--json"])
    assert run.exit_code == 0, run.output
    assert json.loads(run.output)["metrics"]["recall_at_k"] == 1.0

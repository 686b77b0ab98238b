"""`edgeloop prompt`: sync, list, show, diff, render and label (with the gate's exit codes)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from control_plane.cli.main import app
from control_plane.settings import Settings

HELLO = '+++\nvariables = ["name"]\n+++\nHello {{ name }}.\n'


def _flat(text: str) -> str:
    return " ".join(text.split())  # Rich wraps at the terminal width


@pytest.fixture
def cli(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    """A CLI runner pointed at the test database and data dir."""
    monkeypatch.setenv("EDGELOOP_DATABASE_URL", settings.resolved_database_url)
    monkeypatch.setenv("EDGELOOP_DATA_DIR", str(settings.data_dir))
    monkeypatch.delenv("EDGELOOP_PROMPTS_DIR", raising=False)
    return CliRunner()


def test_prompt_cli_round_trip(cli: CliRunner, tmp_path: Path) -> None:
    folder = tmp_path / "prompt-files"
    folder.mkdir()
    (folder / "hello.md").write_text(HELLO)
    synced = cli.invoke(app, ["prompt", "sync", "--dir", str(folder)])
    assert synced.exit_code == 0 and "created: hello" in synced.output
    (folder / "hello.md").write_text(HELLO.replace("Hello", "Hi"))
    assert "new versions: hello@2" in cli.invoke(app, ["prompt", "sync", "--dir", str(folder)]).output
    (folder / "broken.md").write_text("no front matter")
    partial = cli.invoke(app, ["prompt", "sync", "--dir", str(folder)])
    assert partial.exit_code == 1 and "unchanged: hello" in partial.output and "broken.md" in partial.output

    listed = cli.invoke(app, ["prompt", "list"]).output
    assert "hello" in listed and "production→1" in listed
    shown = cli.invoke(app, ["prompt", "show", "hello@production"])
    assert shown.exit_code == 0 and "hello@1" in shown.output and "Hello {{ name }}." in shown.output
    diff = cli.invoke(app, ["prompt", "diff", "hello", "production", "2"]).output
    assert "-Hello {{ name }}." in diff and "+Hi {{ name }}." in diff
    assert cli.invoke(app, ["prompt", "render", "hello@2", "--var", "name=Ada"]).output.strip() == "Hi Ada."
    missing = cli.invoke(app, ["prompt", "render", "hello@2"])
    assert missing.exit_code == 2 and "missing template variable(s): name" in _flat(missing.output)

    gated = cli.invoke(app, ["prompt", "label", "hello", "production", "2"])
    assert gated.exit_code == 1
    assert "promotion gate failed for hello@2: the gate of 'hello' pins no eval dataset" in _flat(gated.output)
    assert cli.invoke(app, ["prompt", "label", "hello", "production", "9"]).exit_code == 2
    forced = cli.invoke(app, ["prompt", "label", "hello", "production", "2", "--override-reason", "tested by hand"])
    assert forced.exit_code == 0 and "production → 2 (OVERRIDDEN)" in _flat(forced.output)
    assert cli.invoke(app, ["prompt", "label", "hello", "staging", "1"]).exit_code == 0

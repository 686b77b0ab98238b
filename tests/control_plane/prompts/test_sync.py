"""Prompt files → registry: the repo's own prompts parse, sync is idempotent, replica-safe and runs at start-up."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from control_plane.db.session import Database
from control_plane.main import create_app
from control_plane.prompts.files import PromptFileError, parse_prompt_file, prompt_files
from control_plane.prompts.models import PromptLabel, PromptVersion
from control_plane.prompts.sync import sync_directory
from control_plane.settings import Settings

REPO_PROMPTS = Path(__file__).resolve().parents[3] / "prompts"
TEXT_PROMPT = ('+++\ndescription = "Say hello"\nvariables = ["name"]\n\n[model_params]\ntemperature = 0.0\n+++\n'
               "Hello {{ name }}.\n")


def test_repo_prompts_parse_with_their_variables_and_params() -> None:
    parsed = {p.name: p for p in map(parse_prompt_file, prompt_files(REPO_PROMPTS))}
    assert set(parsed) == {"triage", "root_cause_analysis", "remediation_proposal", "ops_assistant"}
    for prompt in parsed.values():
        assert prompt.kind == "chat" and [m.role for m in prompt.version.messages] == ["system", "user"]
        assert prompt.version.model_params.model and prompt.version.model_params.tools
        assert prompt.version.variables and prompt.description
    assert parsed["ops_assistant"].version.variables == ["question", "context"]
    assert parsed["ops_assistant"].gate is not None and parsed["ops_assistant"].gate.minimums == {"faithfulness": 0.7}


@pytest.mark.parametrize(("content", "message"), [
    (b"no front matter\n", "must start with a +++"),
    (b"+++\nkind = \"text\"\n", "not closed"),
    (b"+++\nkind = = 1\n+++\nbody", "not valid TOML"),
    (b"+++\ncolour = \"red\"\n+++\nbody", "unknown front-matter key(s): colour"),
    (b"+++\nkind = \"chat\"\n+++\nno role line\n", "must start with a '=== system ==='"),
    (b"+++\n+++\nHello \xff\n", "not valid UTF-8"),
])
def test_bad_prompt_files_are_named(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "bad.md"
    path.write_bytes(content)
    with pytest.raises(PromptFileError, match=message.replace("(", r"\(").replace(")", r"\)").replace("+", r"\+")):
        parse_prompt_file(path)


def test_sync_is_idempotent_and_sets_production_only_first(database: Database, tmp_path: Path) -> None:
    folder = tmp_path / "prompts"
    shutil.copytree(REPO_PROMPTS, folder)
    (folder / "hello.md").write_text(TEXT_PROMPT)
    (folder / "broken.md").write_bytes(b"+++\n+++\n\xff\xfe")
    with database.transaction() as session:
        first = sync_directory(session=session, directory=folder)
    assert sorted(first.created) == ["hello", "ops_assistant", "remediation_proposal", "root_cause_analysis", "triage"]
    assert list(first.errors) == ["prompts/broken.md"] and "UTF-8" in first.errors["prompts/broken.md"]
    with database.transaction() as session:
        again = sync_directory(session=session, directory=folder)
    assert again.created == [] and again.new_versions == [] and len(again.unchanged) == 5

    (folder / "hello.md").write_text(TEXT_PROMPT.replace("Hello", "Hi"))
    with database.transaction() as session:
        changed = sync_directory(session=session, directory=folder)
        assert changed.new_versions == ["hello@2"]
        versions = session.scalars(select(PromptVersion.version).join(PromptVersion.prompt)
                                   .where(PromptVersion.source == "prompts/hello.md")).all()
        production = [(p.version.version, p.protected) for p in
                      session.scalars(select(PromptLabel).where(PromptLabel.label == "production"))]
    assert sorted(versions) == [1, 2]
    # New file content never moves production: that goes through the eval gate.
    assert production == [(1, True)] * 5


def test_two_replicas_syncing_at_once_write_each_version_once(database: Database, settings: Settings) -> None:
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def replica() -> None:
        replica_db = Database(settings.resolved_database_url)
        try:
            barrier.wait()
            with replica_db.transaction() as session:
                sync_directory(session=session, directory=REPO_PROMPTS)
        except BaseException as exc:
            errors.append(exc)
        finally:
            replica_db.dispose()

    threads = [threading.Thread(target=replica) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with database.transaction(write=False) as session:
        assert session.scalar(select(func.count()).select_from(PromptVersion)) == 4
        assert session.scalar(select(func.count()).select_from(PromptLabel)) == 4


def test_app_start_syncs_prompts_beside_the_data_dir(settings: Settings, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch,
                                                    admin_headers: dict[str, str]) -> None:
    monkeypatch.delenv("EDGELOOP_PROMPTS_DIR", raising=False)
    assert settings.data_dir.parent == tmp_path
    (tmp_path / "prompts").mkdir()
    (tmp_path / "prompts" / "hello.md").write_text(TEXT_PROMPT)
    with TestClient(create_app(settings)) as client:
        prompts = client.get("/api/v1/prompts", headers=admin_headers).json()
    assert [(p["name"], p["latest_version"], [label["label"] for label in p["labels"]]) for p in prompts] == [
        ("hello", 1, ["production"])]
    with TestClient(create_app(settings)) as client:  # a restart changes nothing
        actions = [e["action"] for e in client.get("/api/v1/audit/entries", headers=admin_headers).json()]
    assert actions.count("prompt_version.create") == 1 and actions.count("prompt_label.set") == 1

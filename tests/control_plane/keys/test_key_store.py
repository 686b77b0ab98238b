"""Signing keys shared by replicas: one key per database, refusal on disagreement, encryption at rest, rotation."""

from __future__ import annotations

import base64
import json
import os
import stat
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import select
from typer.testing import CliRunner

from control_plane.cli.main import app as cli
from control_plane.db.session import Database
from control_plane.fleet.manifests import ManifestFactory, ManifestTemplate
from control_plane.keys.models import SigningKey
from control_plane.keys.service import KeyStoreError
from control_plane.main import create_app
from control_plane.settings import Settings
from control_plane.signing import Signer
from edge_agent.keyring import KeyRing
from edge_agent.manifest import open_with_keys

KEK = base64.b64encode(os.urandom(32)).decode()


def _replica(settings: Settings, name: str, key_encryption_key: str | None = None) -> Settings:
    kek = SecretStr(key_encryption_key) if key_encryption_key else None
    return settings.model_copy(update={"data_dir": settings.data_dir.parent / name, "key_encryption_key": kek})


def _keys_of(settings: Settings) -> tuple[str, str]:
    """Start a replica (its lifespan resolves the keys) and return its (manifest, audit) key ids."""
    app = create_app(settings)
    with TestClient(app):
        return app.state.fleet_factory.signer.key_id, app.state.audit_signer.key_id


def test_two_replicas_with_separate_data_dirs_sign_with_one_key(settings: Settings) -> None:
    first = _replica(settings, "replica-a", key_encryption_key=KEK)
    second = _replica(settings, "replica-b", key_encryption_key=KEK)
    assert _keys_of(first) == _keys_of(second)
    # The private keys are in the database only, encrypted: neither data dir holds a key file.
    assert not list(first.data_dir.rglob("*.pem")) and not list(second.data_dir.rglob("*.pem"))
    database = Database(settings.resolved_database_url)
    try:
        with database.transaction(write=False) as session:
            rows = list(session.scalars(select(SigningKey)))
    finally:
        database.dispose()
    assert sorted(r.purpose for r in rows) == ["audit", "manifest"]
    for row in rows:
        assert row.private_key_encrypted and row.public_key not in row.private_key_encrypted


def test_a_replica_without_the_key_file_refuses_instead_of_making_its_own(settings: Settings) -> None:
    first = _replica(settings, "replica-a")
    manifest_key, _ = _keys_of(first)
    with pytest.raises(KeyStoreError, match=r"refusing to start.*does not exist"):
        _keys_of(_replica(settings, "replica-b"))
    other = _replica(settings, "replica-c")
    Signer.load_or_create(other.keys_dir / "manifest.pem")  # a key of its own
    Signer.load_or_create(other.keys_dir / "audit.pem")
    with pytest.raises(KeyStoreError, match="disagrees with the database"):
        _keys_of(other)
    # Copying the key files makes a proper replica.
    copy = _replica(settings, "replica-d")
    copy.keys_dir.mkdir(parents=True)
    for name in ("manifest.pem", "audit.pem"):
        (copy.keys_dir / name).write_bytes((first.keys_dir / name).read_bytes())
    assert _keys_of(copy)[0] == manifest_key


def test_the_key_store_refuses_a_stray_key_file_and_a_wrong_encryption_key(settings: Settings) -> None:
    _keys_of(_replica(settings, "replica-a", key_encryption_key=KEK))
    stray = _replica(settings, "replica-b", key_encryption_key=KEK)
    Signer.load_or_create(stray.keys_dir / "audit.pem")
    with pytest.raises(KeyStoreError, match="not a key this database knows"):
        _keys_of(stray)
    wrong = _replica(settings, "replica-c", key_encryption_key=base64.b64encode(os.urandom(32)).decode())
    with pytest.raises(KeyStoreError, match="cannot decrypt"):
        _keys_of(wrong)


def test_data_files_are_private(settings: Settings, tmp_path: Path) -> None:
    local = settings.model_copy(update={"data_dir": tmp_path / "fresh", "database_url": None})
    from control_plane.db import migrate

    migrate.upgrade(local.resolved_database_url)
    _keys_of(local)
    db_file = local.data_dir / "edgeloop.db"
    for path in (db_file, local.keys_dir / "manifest.pem", local.keys_dir / "audit.pem"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    for sidecar in (db_file.with_name("edgeloop.db-wal"), db_file.with_name("edgeloop.db-shm")):
        if sidecar.exists():
            assert stat.S_IMODE(sidecar.stat().st_mode) & 0o077 == 0, sidecar


def test_keys_rotate_signs_in_the_next_key_and_devices_follow(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    replica = _replica(settings, "replica-a", key_encryption_key=KEK)
    app = create_app(replica)
    with TestClient(app):
        factory: ManifestFactory = app.state.fleet_factory
        old = factory.signer
        device = KeyRing(None, old.public_raw)  # a device provisioned before the rotation
        for key, value in {"EDGELOOP_DATA_DIR": str(replica.data_dir), "EDGELOOP_DATABASE_URL": replica.database_url,
                           "EDGELOOP_KEY_ENCRYPTION_KEY": KEK}.items():
            monkeypatch.setenv(key, str(value))
        result = CliRunner().invoke(cli, ["keys", "rotate", "--grace-seconds", "3600"])
        assert result.exit_code == 0, result.output
        # The next template picks the rotation up without a restart (any replica could have rotated).
        database = app.state.database
        with database.transaction(write=False) as session:
            factory._keys = factory.key_store.manifest_keys(session)
        new = factory.signer
        assert new.key_id != old.key_id
        template = ManifestTemplate({"model": {}}, '"model":{}')
        envelope, _ = factory.sign(template, device_id="d1", sequence=1, rollout_id=None, now=time.time())
        body = json.loads(envelope)
        assert body["key_id"] == new.key_id and len(body["key_rotations"]) == 1
        payload, keys = open_with_keys(envelope.encode(), device)
        assert json.loads(payload)["device_id"] == "d1"
        assert keys is not None and keys.version == 2
        retire = {k.key_id: k.retire_at for k in keys.keys}
        assert retire[new.key_id] is None and retire[old.key_id] == pytest.approx(time.time() + 3600, abs=60)
        listing = CliRunner().invoke(cli, ["keys", "list"])
        assert new.key_id in listing.output and old.key_id in listing.output
    # A replica started later signs with the new key too.
    assert _keys_of(_replica(settings, "replica-b", key_encryption_key=KEK))[0] == new.key_id


def test_rotation_without_the_key_store_is_refused(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    replica = _replica(settings, "replica-a")
    _keys_of(replica)
    monkeypatch.setenv("EDGELOOP_DATA_DIR", str(replica.data_dir))
    monkeypatch.setenv("EDGELOOP_DATABASE_URL", str(replica.database_url))
    monkeypatch.delenv("EDGELOOP_KEY_ENCRYPTION_KEY", raising=False)
    result = CliRunner().invoke(cli, ["keys", "rotate"])
    assert result.exit_code == 1 and "EDGELOOP_KEY_ENCRYPTION_KEY" in result.output


def test_moving_from_key_files_to_the_key_store(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    files = _replica(settings, "replica-a")
    manifest_key, audit_key = _keys_of(files)
    with pytest.raises(KeyStoreError, match="only the public half"):
        _keys_of(_replica(settings, "replica-b", KEK))
    monkeypatch.setenv("EDGELOOP_DATA_DIR", str(files.data_dir))
    monkeypatch.setenv("EDGELOOP_DATABASE_URL", str(files.database_url))
    monkeypatch.setenv("EDGELOOP_KEY_ENCRYPTION_KEY", KEK)
    for purpose in ("manifest", "audit"):
        result = CliRunner().invoke(cli, ["keys", "import", "--purpose", purpose])
        assert result.exit_code == 0, result.output
    assert _keys_of(_replica(settings, "replica-b", KEK)) == (manifest_key, audit_key)
    assert _keys_of(files) == (manifest_key, audit_key)  # the file replica still agrees

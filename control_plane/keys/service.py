"""Load the signing keys every replica must share, refuse to start on disagreement, and rotate them.

Two modes (docs/security.md#signing-keys):
- key store: EDGELOOP_KEY_ENCRYPTION_KEY is set; the database holds each key, its private half encrypted with
  AES-256-GCM under that key (the row's purpose and key_id are the associated data, so rows cannot be swapped).
- files: no encryption key; each replica reads its key file, and the database records the public half so a
  replica with a different (or missing) file refuses to start instead of silently signing with its own key.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from control_plane.audit import service as audit
from control_plane.db.base import utcnow
from control_plane.db.session import Database
from control_plane.errors import Conflict, Invalid
from control_plane.keys.models import SigningKey
from control_plane.settings import Settings
from control_plane.signing import Signer

PURPOSES = ("manifest", "audit")
ROTATION_SCHEMA = "edgeloop.keys/v1"
MAX_EMBEDDED_ROTATIONS = 64  # what a device accepts in one envelope (edge_agent/keyring.py)


class KeyStoreError(RuntimeError):
    """This replica must not start (or rotate): its keys disagree with the database, or cannot be read."""


@dataclass(frozen=True)
class ManifestKeys:
    """The key that signs manifests now and the rotation documents that lead devices to it, oldest first."""

    signer: Signer
    generation: int
    rotations: tuple[str, ...]


def _kek(settings: Settings) -> AESGCM | None:
    if settings.key_encryption_key is None:
        return None
    try:
        raw = base64.b64decode(settings.key_encryption_key.get_secret_value(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise KeyStoreError("EDGELOOP_KEY_ENCRYPTION_KEY is not base64") from exc
    if len(raw) != 32:
        raise KeyStoreError("EDGELOOP_KEY_ENCRYPTION_KEY must be base64 of exactly 32 bytes (AES-256)")
    return AESGCM(raw)


def _aad(purpose: str, key_id: str) -> bytes:
    return f"edgeloop-signing-key/{purpose}/{key_id}".encode()


def _encrypt(kek: AESGCM, purpose: str, signer: Signer) -> str:
    nonce = os.urandom(12)
    raw = signer.private_raw()
    return base64.b64encode(nonce + kek.encrypt(nonce, raw, _aad(purpose, signer.key_id))).decode()


def _decrypt(kek: AESGCM, row: SigningKey) -> Signer:
    try:
        blob = base64.b64decode(row.private_key_encrypted or "", validate=True)
        raw = kek.decrypt(blob[:12], blob[12:], _aad(row.purpose, row.key_id))
    except (InvalidTag, binascii.Error, ValueError) as exc:
        raise KeyStoreError(
            f"cannot decrypt the {row.purpose} signing key {row.key_id} from the database: "
            "EDGELOOP_KEY_ENCRYPTION_KEY differs from the one it was stored with") from exc
    signer = Signer(Ed25519PrivateKey.from_private_bytes(raw))
    if signer.key_id != row.key_id:
        raise KeyStoreError(f"the {row.purpose} key row {row.key_id} holds another key ({signer.key_id})")
    return signer


def _key_path(settings: Settings, purpose: str) -> Path:
    configured = settings.signing_key_path if purpose == "manifest" else settings.audit_key_path
    return configured or settings.keys_dir / f"{purpose}.pem"


def _read_file(path: Path) -> Signer | None:
    if not path.exists():
        return None
    try:
        return Signer.load_or_create(path)
    except (ValueError, OSError) as exc:
        raise KeyStoreError(f"cannot read the key file {path}: {exc}") from exc


def _rows(session: Session, purpose: str) -> list[SigningKey]:
    query = select(SigningKey).where(SigningKey.purpose == purpose).order_by(SigningKey.generation)
    return list(session.scalars(query))


class KeyStore:
    """Resolve this replica's signing keys against the database (the one source of truth)."""

    def __init__(self, settings: Settings, database: Database) -> None:
        self.settings = settings
        self.database = database
        self._manifest: ManifestKeys | None = None

    @property
    def encrypted(self) -> bool:
        """Return whether private keys live in the database (the key store mode)."""
        return self.settings.key_encryption_key is not None

    def load(self, purpose: str) -> Signer:
        """Return the current key for purpose, creating the first one if the database has none."""
        if purpose not in PURPOSES:
            raise ValueError(f"unknown key purpose {purpose!r}")
        kek = _kek(self.settings)
        path = _key_path(self.settings, purpose)
        for _ in range(3):
            with self.database.transaction() as session:
                rows = _rows(session, purpose)
                if rows:
                    return self._check(kek, purpose, path, rows)
                signer = _read_file(path) if kek is not None else Signer.load_or_create(path)
                signer = signer or Signer(Ed25519PrivateKey.generate())
                session.add(SigningKey(key_id=signer.key_id, purpose=purpose, generation=1,
                                       public_key=signer.public_b64,
                                       private_key_encrypted=_encrypt(kek, purpose, signer) if kek else None))
                try:
                    session.flush()
                except IntegrityError:
                    session.rollback()
                    continue  # Another replica stored the first key a moment ago: check ours against it.
            return signer
        raise KeyStoreError(f"could not settle the first {purpose} key with other replicas")

    def _check(self, kek: AESGCM | None, purpose: str, path: Path, rows: list[SigningKey]) -> Signer:
        current = rows[-1]
        local = _read_file(path)
        known = {row.key_id for row in rows}
        if kek is not None:
            if current.private_key_encrypted is None:
                raise KeyStoreError(
                    f"the database holds only the public half of the {purpose} key {current.key_id} (it was "
                    f"created without EDGELOOP_KEY_ENCRYPTION_KEY); run `edgeloop keys import --purpose {purpose}`"
                    " on the replica that has the key file, or unset the encryption key")
            signer = _decrypt(kek, current)
            if local is not None and local.key_id not in known:
                raise KeyStoreError(
                    f"refusing to start: the {purpose} key file {path} (key_id {local.key_id}) is not a key this "
                    f"database knows (current key_id {current.key_id}); remove the file or fix the data dir")
            return signer
        if local is None:
            raise KeyStoreError(
                f"refusing to start: the database's {purpose} key is {current.key_id} but {path} does not exist; "
                "copy the key file from another replica or set EDGELOOP_KEY_ENCRYPTION_KEY (shared key store)"
                " instead of letting this replica sign with a key of its own")
        if local.key_id != current.key_id:
            raise KeyStoreError(
                f"refusing to start: the {purpose} key file {path} (key_id {local.key_id}) disagrees with the "
                f"database (key_id {current.key_id}); every replica must sign with the same key")
        return local

    def manifest_keys(self, session: Session) -> ManifestKeys:
        """Return the current manifest key and the rotation chain, re-reading only after a rotation."""
        rows = _rows(session, "manifest")
        if not rows:
            self._manifest = None
            return ManifestKeys(self.load("manifest"), 1, ())
        current = rows[-1]
        if self._manifest is None or self._manifest.generation != current.generation:
            kek = _kek(self.settings)
            if kek is not None and current.private_key_encrypted is not None:
                signer = _decrypt(kek, current)
            else:
                signer = self._check(kek, "manifest", _key_path(self.settings, "manifest"), rows)
            chain = tuple(r.rotation_document for r in rows if r.rotation_document)
            self._manifest = ManifestKeys(signer, current.generation, chain[-MAX_EMBEDDED_ROTATIONS:])
        return self._manifest


def rotation_document(signer: Signer, *, version: int, keys: list[tuple[str, float | None]], now: float) -> str:
    """Return the envelope JSON of a rotation document listing keys (public base64, retire_at), signed by signer."""
    payload = json.dumps({"schema": ROTATION_SCHEMA, "version": version, "issued_at": now,
                          "keys": [{"public_key": public, "retire_at": retire} for public, retire in keys]},
                         separators=(",", ":")).encode()
    return json.dumps({"payload": base64.b64encode(payload).decode(),
                       "signature": base64.b64encode(signer.sign(payload)).decode(), "key_id": signer.key_id},
                      separators=(",", ":"))


def rotate(session: Session, settings: Settings, *, grace_seconds: float, actor: str,
           now: datetime | None = None) -> SigningKey:
    """Add the next manifest key, signed in by the current one, and retire the current one after the grace."""
    kek = _kek(settings)
    if kek is None:
        raise Invalid("rotation needs the database key store (EDGELOOP_KEY_ENCRYPTION_KEY), so that every "
                      "replica signs with the new key")
    if not 0 <= grace_seconds <= 366 * 86_400:
        raise Invalid("grace_seconds must be between 0 and one year")
    now = now or utcnow()
    rows = _rows(session, "manifest")
    if not rows or rows[-1].private_key_encrypted is None:
        raise Conflict("no encrypted manifest key yet: start a replica with the key store first")
    current = rows[-1]
    signer = _decrypt(kek, current)
    following = Signer(Ed25519PrivateKey.generate())
    retire_at = now + timedelta(seconds=grace_seconds)
    stamp = now.timestamp()
    # Keys still inside an earlier grace stay listed with their end date; keys already retired drop out.
    keys: list[tuple[str, float | None]] = [(r.public_key, r.retire_at.timestamp()) for r in rows[:-1]
            if r.retire_at is not None and r.retire_at.timestamp() > stamp]
    keys += [(current.public_key, retire_at.timestamp()), (following.public_b64, None)]
    generation = current.generation + 1
    current.retire_at = retire_at
    row = SigningKey(key_id=following.key_id, purpose="manifest", generation=generation,
                     public_key=following.public_b64, private_key_encrypted=_encrypt(kek, "manifest", following),
                     rotation_document=rotation_document(signer, version=generation, keys=keys, now=stamp))
    session.add(row)
    try:
        session.flush()
    except IntegrityError as exc:
        raise Conflict("another rotation happened at the same time; run it again") from exc
    audit.record(session, actor=actor, action="keys.rotate", resource=("signing_key", following.key_id),
                 data={"purpose": "manifest", "generation": generation, "previous": current.key_id,
                       "previous_retire_at": retire_at.isoformat()})
    return row


def import_file_key(session: Session, settings: Settings, purpose: str) -> SigningKey:
    """Encrypt this replica's key file into the database row that holds only its public half."""
    kek = _kek(settings)
    if kek is None:
        raise Invalid("set EDGELOOP_KEY_ENCRYPTION_KEY first")
    path = _key_path(settings, purpose)
    local = _read_file(path)
    rows = _rows(session, purpose)
    if local is None or not rows or rows[-1].key_id != local.key_id:
        raise Conflict(f"{path} does not hold the database's current {purpose} key")
    rows[-1].private_key_encrypted = _encrypt(kek, purpose, local)
    return rows[-1]

"""The device's trusted signing keys: the provisioned key plus in-band rotation documents (TUF-style).

A rotation document is an envelope like a manifest's whose payload is

    {"schema": "edgeloop.keys/v1", "version": 2, "issued_at": 1795000000.0,
     "keys": [{"public_key": "<base64 raw ed25519>", "retire_at": null},
              {"public_key": "<the old key>", "retire_at": 1795086400.0}]}

It is accepted when its version is above the ring's and it is signed by a key the ring trusts now
(threshold 1). It then replaces the whole set. A key past its retire_at signs nothing more, neither
manifests nor rotation documents. See docs/security.md#signing-key-rotation.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edge_agent.durable import read_json, write_json_atomic
from edge_agent.strict_json import INT64_LIMIT, StrictJsonError, loads_strict

log = logging.getLogger(__name__)
ROTATION_SCHEMA = "edgeloop.keys/v1"
MAX_KEYS = 16
MAX_ROTATIONS = 64


class KeyRejected(Exception):
    """A signature or rotation document is not acceptable; reason is a protocol reason code."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


def raw_key_id(raw: bytes) -> str:
    """Return the protocol key_id: the first 16 hex chars of sha256(raw public key)."""
    return hashlib.sha256(raw).hexdigest()[:16]


@dataclass(frozen=True)
class TrustedKey:
    """One key of the ring; retire_at None means it has no end date yet."""

    public_b64: str
    retire_at: float | None

    @property
    def raw(self) -> bytes:
        return base64.b64decode(self.public_b64)

    @property
    def key_id(self) -> str:
        return raw_key_id(self.raw)

    def active(self, now: float) -> bool:
        """Return whether this key may sign at time now."""
        return self.retire_at is None or now < self.retire_at

    def verify(self, signature: bytes, payload: bytes) -> bool:
        """Return whether signature is this key's over payload."""
        try:
            Ed25519PublicKey.from_public_bytes(self.raw).verify(signature, payload)
        except (InvalidSignature, ValueError):
            return False
        return True


def _b64(value: Any, what: str) -> bytes:
    if not isinstance(value, str) or len(value) > (1 << 20):
        raise KeyRejected("malformed", f"{what} is not a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise KeyRejected("malformed", f"{what} is not valid base64") from exc


@dataclass(frozen=True)
class KeySet:
    """An immutable version of the ring: rotation builds a new one, the caller persists it."""

    version: int
    keys: tuple[TrustedKey, ...]

    def verify_envelope(self, envelope: dict[str, Any], now: float) -> bytes:
        """Check an envelope's signature with a key trusted at now and return the payload bytes."""
        payload = _b64(envelope.get("payload"), "payload")
        signature = _b64(envelope.get("signature"), "signature")
        claimed = envelope.get("key_id")
        candidates = [k for k in self.keys if k.key_id == claimed] if isinstance(claimed, str) else []
        if not candidates:
            candidates = list(self.keys)  # An unknown or missing key_id: try every key, the signature decides.
        for key in candidates:
            if key.verify(signature, payload):
                if not key.active(now):
                    raise KeyRejected("retired_key", f"key {key.key_id} retired at {key.retire_at}")
                return payload
        raise KeyRejected("bad_signature", f"key_id={str(claimed)[:40]!r} is not a trusted key's")

    def rotate(self, document: Any, now: float) -> KeySet:
        """Return the set a rotation document establishes, or self if it is not newer."""
        if not isinstance(document, dict):
            raise KeyRejected("malformed", "a rotation document is not an object")
        payload = self.verify_envelope(document, now)
        try:
            body = loads_strict(payload)
        except StrictJsonError as exc:
            raise KeyRejected("malformed", f"rotation payload: {exc}") from exc
        if not isinstance(body, dict) or body.get("schema") != ROTATION_SCHEMA:
            raise KeyRejected("malformed", f"rotation schema must be {ROTATION_SCHEMA}")
        version = body.get("version")
        if not isinstance(version, int) or isinstance(version, bool) or not 0 < version < INT64_LIMIT:
            raise KeyRejected("malformed", "rotation version")
        if version <= self.version:
            return self  # Already applied (documents travel with every manifest).
        entries = body.get("keys")
        if not isinstance(entries, list) or not 0 < len(entries) <= MAX_KEYS:
            raise KeyRejected("malformed", f"rotation keys must be 1..{MAX_KEYS} entries")
        keys: list[TrustedKey] = []
        for entry in entries:
            if not isinstance(entry, dict):
                raise KeyRejected("malformed", "rotation key entry")
            raw = _b64(entry.get("public_key"), "public_key")
            retire_at = entry.get("retire_at")
            if len(raw) != 32 or not (retire_at is None or (
                    isinstance(retire_at, int | float) and not isinstance(retire_at, bool)
                    and math.isfinite(retire_at))):
                raise KeyRejected("malformed", "rotation key must be 32 raw bytes with a finite retire_at")
            keys.append(TrustedKey(base64.b64encode(raw).decode(), None if retire_at is None else float(retire_at)))
        if not any(k.active(now) for k in keys):
            raise KeyRejected("malformed", "a rotation must leave at least one active key")
        return KeySet(version, tuple(keys))

    def to_json(self) -> dict[str, Any]:
        """Return the persisted form."""
        return {"version": self.version,
                "keys": [{"public_key": k.public_b64, "retire_at": k.retire_at} for k in self.keys]}


class KeyRing:
    """The trusted set of one device, persisted in the state dir so rotations survive restarts."""

    def __init__(self, path: Path | None, root: Ed25519PublicKey | bytes) -> None:
        from cryptography.hazmat.primitives import serialization  # lazy, like manifest.public_key_id

        raw = root if isinstance(root, bytes) else root.public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        self.path = path
        self.current = KeySet(0, (TrustedKey(base64.b64encode(raw).decode(), None),))
        stored = read_json(path) if path is not None else None
        if stored is not None:
            try:
                self.current = self._from_json(stored)
            except (KeyError, TypeError, ValueError, binascii.Error):
                log.error("trusted key file %s is unreadable; falling back to the provisioned key", path)
        if not any(k.raw == raw for k in self.current.keys):
            log.warning("the provisioned key is not in the rotated key set (version %d)", self.current.version)

    @staticmethod
    def _from_json(stored: Any) -> KeySet:
        keys = tuple(TrustedKey(str(k["public_key"]), None if k["retire_at"] is None else float(k["retire_at"]))
                     for k in stored["keys"])
        if not keys or any(len(k.raw) != 32 for k in keys):
            raise ValueError("empty or invalid key set")
        return KeySet(int(stored["version"]), keys)

    def open(self, envelope: dict[str, Any], now: float | None = None) -> tuple[bytes, KeySet]:
        """Apply the envelope's rotation documents in memory, then verify it; return (payload, new set).

        Nothing is persisted: the caller commits the new set only once the payload is acceptable.
        """
        now = time.time() if now is None else now
        rotations = envelope.get("key_rotations") or []
        if not isinstance(rotations, list) or len(rotations) > MAX_ROTATIONS:
            raise KeyRejected("malformed", f"key_rotations must be a list of at most {MAX_ROTATIONS}")
        candidate = self.current
        for document in rotations:
            try:
                candidate = candidate.rotate(document, now)
            except KeyRejected as exc:
                # Skipping is safe: an unverifiable document adds no trust, and the manifest's own signature
                # still decides. It is also needed: a device provisioned after a rotation already trusts the
                # new key and cannot verify the older documents that every manifest carries.
                log.info("skipping a rotation document: %s", exc)
        return candidate.verify_envelope(envelope, now), candidate

    def commit(self, keys: KeySet) -> None:
        """Persist a newer key set (atomically)."""
        if keys.version <= self.current.version:
            return
        if self.path is not None:
            write_json_atomic(self.path, keys.to_json())
        log.warning("signing keys rotated to version %d: %s", keys.version,
                    [(k.key_id, k.retire_at) for k in keys.keys])
        self.current = keys

"""Ed25519 keys kept in the data dir: generated on first use (0600) or loaded from a path."""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey


def key_id_of(public_raw: bytes) -> str:
    """Return the short fingerprint devices and verifiers use to name a key."""
    return hashlib.sha256(public_raw).hexdigest()[:16]


class Signer:
    """An ed25519 private key with its public half and fingerprint."""

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._private_key = private_key
        self.public_raw = private_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self.key_id = key_id_of(self.public_raw)

    @classmethod
    def load_or_create(cls, path: Path) -> Signer:
        """Load the PEM key at ``path``, creating it with mode 0600 if it does not exist."""
        if path.exists():
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
            if not isinstance(key, Ed25519PrivateKey):
                raise ValueError(f"{path} is not an ed25519 private key")
            return cls(key)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        # O_EXCL: two replicas starting at once must not overwrite each other's fresh key.
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return cls.load_or_create(path)
        with os.fdopen(fd, "wb") as handle:
            handle.write(pem)
            handle.flush()
            os.fsync(handle.fileno())
        return cls(key)

    def private_raw(self) -> bytes:
        """Return the 32-byte raw private key (only for encrypting it at rest)."""
        return self._private_key.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )

    def sign(self, message: bytes) -> bytes:
        """Return the 64-byte signature over ``message``."""
        return self._private_key.sign(message)

    @property
    def public_b64(self) -> str:
        """Return the raw public key, base64-encoded."""
        return base64.b64encode(self.public_raw).decode()


def verify_signature(public_raw: bytes, signature: bytes, message: bytes) -> bool:
    """Return whether ``signature`` is valid for ``message`` under the raw public key."""
    try:
        Ed25519PublicKey.from_public_bytes(public_raw).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True

"""Signing keys shared by every replica: a database key store with encrypted private keys, and rotation."""

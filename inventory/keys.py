"""API key secrets: ``<key id>.<secret>``; only a SHA-256 of the secret is stored.

The secret is 256 random bits, so a fast hash is enough (no password stretching needed), and the
stored hash is compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

_DUMMY_HASH = hashlib.sha256(b"no such key").hexdigest()


def new_key() -> tuple[str, str, str]:
    """A new key: its id, the full secret shown once to its owner, and the hash to store."""
    key_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    return key_id, f"{key_id}.{secret}", hash_secret(secret)


def key_from_secret(raw: str) -> tuple[str, str]:
    """Split a presented key into its id and the hash to check; a malformed key gives ("", "")."""
    key_id, sep, secret = raw.partition(".")
    if not sep or not key_id or not secret:
        return "", ""
    return key_id, hash_secret(secret)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def matches(stored_hash: str | None, presented_hash: str) -> bool:
    # An unknown key id is compared against a dummy hash so both paths take the same time.
    return hmac.compare_digest(stored_hash or _DUMMY_HASH, presented_hash or "-") and bool(
        stored_hash
    )

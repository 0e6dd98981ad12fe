"""API keys and roles.

A key is ``fsk_<id>_<secret>``: ``id`` (8 hex) finds the row, ``secret`` (32 random
bytes, url-safe) is checked against its SHA-256 with a constant-time compare.  Only
the hash is stored.  A salted slow hash (scrypt, argon2) protects *passwords* a person
chose; a 256-bit random secret cannot be guessed, so one SHA-256 is the usual choice
for tokens (GitHub, PyPI) and keeps every request cheap.

There is no default key.  An admin key comes from ``foursave api keys create`` or from
the environment variable named by ``services.api.bootstrap_key_env`` (compose); a
bootstrap key shorter than 32 characters or a well-known placeholder is refused.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from foursave.core.store import open_db

Role = Literal["viewer", "engineer", "auditor", "admin"]
ROLES: tuple[Role, ...] = ("viewer", "engineer", "auditor", "admin")

# What each role may do.  "read" is every GET of /api/v1; the others are named actions.
PERMISSIONS: dict[str, frozenset[str]] = {
    "viewer": frozenset({"read"}),
    "engineer": frozenset({"read", "alerts:ack"}),
    "auditor": frozenset({"read", "records:write", "reports"}),
    "admin": frozenset(
        {"read", "alerts:ack", "records:write", "reports", "adjustments:write", "keys"}
    ),
}

KEY_RE = re.compile(r"^fsk_([0-9a-f]{8})_([A-Za-z0-9_-]{20,})$")
WEAK = {"changeme", "change-me", "secret", "password", "admin", "foursave", "demo"}
BOOTSTRAP_ID = "00000000"

SCHEMA = """
CREATE TABLE IF NOT EXISTS api_keys (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, role TEXT NOT NULL, sha256 TEXT NOT NULL,
    created_at TEXT NOT NULL, created_by TEXT NOT NULL, revoked_at TEXT
);
"""


class KeyRequestError(ValueError):
    """A key request that cannot be honoured (bad role, weak bootstrap key)."""


def check_bootstrap(key: str) -> None:
    """Refuse a bootstrap key someone could guess."""
    if len(key) < 32 or key.lower() in WEAK:
        raise KeyRequestError(
            "the bootstrap API key must be at least 32 random characters "
            "(e.g. `python3 -c 'import secrets; print(secrets.token_urlsafe(32))'`)"
        )


@dataclass(frozen=True)
class Principal:
    key_id: str
    name: str
    role: Role

    def can(self, permission: str) -> bool:
        return permission in PERMISSIONS[self.role]


@dataclass(frozen=True)
class KeyInfo:
    id: str
    name: str
    role: str
    created_at: str
    created_by: str
    revoked_at: str | None


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class KeyStore:
    def __init__(self, path: str | Path, bootstrap_key: str | None = None):
        self.db = open_db(path, SCHEMA)
        self._bootstrap: str | None = None
        if bootstrap_key:
            check_bootstrap(bootstrap_key)
            self._bootstrap = _digest(bootstrap_key)

    def close(self) -> None:
        self.db.close()

    def create(self, name: str, role: str, created_by: str) -> tuple[KeyInfo, str]:
        """A new key; the full key is returned once and never stored."""
        if role not in ROLES:
            raise KeyRequestError(f"role {role!r} is not one of {', '.join(ROLES)}")
        if not name.strip():
            raise KeyRequestError("a key needs a name (who or what uses it)")
        key_id = secrets.token_hex(4)
        secret = secrets.token_urlsafe(32)
        now = datetime.now(UTC).isoformat(timespec="seconds")
        self.db.execute(
            "INSERT INTO api_keys VALUES (?,?,?,?,?,?,NULL)",
            (key_id, name, role, _digest(secret), now, created_by),
        )
        return KeyInfo(key_id, name, role, now, created_by, None), f"fsk_{key_id}_{secret}"

    def revoke(self, key_id: str) -> KeyInfo | None:
        now = datetime.now(UTC).isoformat(timespec="seconds")
        self.db.execute(
            "UPDATE api_keys SET revoked_at=? WHERE id=? AND revoked_at IS NULL", (now, key_id)
        )
        return self.get(key_id)

    def get(self, key_id: str) -> KeyInfo | None:
        row = self.db.execute("SELECT * FROM api_keys WHERE id=?", (key_id,)).fetchone()
        return None if row is None else KeyInfo(*row[:3], *row[4:])

    def all(self) -> list[KeyInfo]:
        rows = self.db.execute("SELECT * FROM api_keys ORDER BY created_at, id").fetchall()
        return [KeyInfo(*r[:3], *r[4:]) for r in rows]

    def authenticate(self, presented: str) -> Principal | None:
        """The principal of a presented key, or None (unknown, revoked or malformed)."""
        if self._bootstrap and hmac.compare_digest(_digest(presented), self._bootstrap):
            return Principal(BOOTSTRAP_ID, "bootstrap", "admin")
        m = KEY_RE.match(presented)
        if not m:
            return None
        row = self.db.execute(
            "SELECT name, role, sha256 FROM api_keys WHERE id=? AND revoked_at IS NULL",
            (m.group(1),),
        ).fetchone()
        if row is None or not hmac.compare_digest(_digest(m.group(2)), row[2]):
            return None
        return Principal(m.group(1), row[0], row[1])

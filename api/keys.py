"""API keys and roles.

A key is ``fsk_<id>_<secret>``: ``id`` (8 hex) finds the row, ``secret`` (32 random
bytes, url-safe) is checked against its SHA-256 with a constant-time compare.  Only
the hash is stored.  A salted slow hash (scrypt, argon2) protects *passwords* a person
chose; a 256-bit random secret cannot be guessed, so one SHA-256 is the usual choice
for tokens (GitHub, PyPI) and keeps every request cheap.

There is no default key.  An admin key comes from ``foursave keys create`` or from
the environment variable named by ``services.api.bootstrap_key_env`` (compose); a
bootstrap key shorter than 32 characters or a well-known placeholder is refused.
The bootstrap key is revoked like any other (id ``00000000``): its hash is kept as
revoked, so it stays refused while the variable is still set.  A key may carry an
expiry (``expires``): from that instant on the wall clock it is refused.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from foursave.core.clock import Clock, SystemClock
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

# what a caller is told (api/deps.py, and api/guard.py before a body is read)
MISSING_KEY = (
    "an API key is required: send it in the X-API-Key header (or Authorization: Bearer <key>)"
)
REFUSED_KEY = "the API key is unknown, revoked or expired"

SCHEMA = """
CREATE TABLE IF NOT EXISTS api_keys (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, role TEXT NOT NULL, sha256 TEXT NOT NULL,
    created_at TEXT NOT NULL, created_by TEXT NOT NULL, revoked_at TEXT
);
CREATE TABLE IF NOT EXISTS bootstrap_keys (
    sha256 TEXT PRIMARY KEY, first_seen TEXT NOT NULL, revoked_at TEXT, revoked_by TEXT
);
"""
COLUMNS = "id, name, role, created_at, created_by, revoked_at, expires_at"


class KeyRequestError(ValueError):
    """A key request that cannot be honoured (bad role, weak bootstrap key, past expiry)."""


def check_bootstrap(key: str) -> None:
    """Refuse a bootstrap key someone could guess."""
    if len(key) < 32 or key.lower() in WEAK:
        raise KeyRequestError(
            "the bootstrap API key must be at least 32 random characters "
            "(e.g. `python3 -c 'import secrets; print(secrets.token_urlsafe(32))'`)"
        )


def presented_key(x_api_key: str | None, authorization: str | None) -> str | None:
    """The key a request carries: ``X-API-Key``, else an ``Authorization: Bearer`` token."""
    if x_api_key:
        return x_api_key
    scheme, _, token = (authorization or "").partition(" ")
    return (token.strip() or None) if scheme.lower() == "bearer" else None


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
    expires_at: str | None = None  # ISO date-time (UTC); refused from then on


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _add_expiry_column(db: sqlite3.Connection) -> None:
    """Key files written before keys could expire get the column (empty: never)."""
    if "expires_at" in {r[1] for r in db.execute("PRAGMA table_info(api_keys)")}:
        return
    try:
        db.execute("ALTER TABLE api_keys ADD COLUMN expires_at TEXT")
    except sqlite3.OperationalError:  # another process added it a moment ago
        if "expires_at" not in {r[1] for r in db.execute("PRAGMA table_info(api_keys)")}:
            raise


class KeyStore:
    """The key file.  ``clock`` is the wall clock that dates keys and decides expiry
    (not the readings' clock, which may be simulated)."""

    def __init__(
        self,
        path: str | Path,
        bootstrap_key: str | None = None,
        clock: Clock | None = None,
    ):
        self.db = open_db(path, SCHEMA)
        _add_expiry_column(self.db)
        self.clock = clock or SystemClock()
        self._bootstrap: str | None = None
        if bootstrap_key:
            check_bootstrap(bootstrap_key)
            self._bootstrap = _digest(bootstrap_key)
            self.db.execute(
                "INSERT OR IGNORE INTO bootstrap_keys (sha256, first_seen) VALUES (?, ?)",
                (self._bootstrap, self._now()),
            )

    def close(self) -> None:
        self.db.close()

    def _now(self) -> str:
        return datetime.fromtimestamp(self.clock.time(), UTC).isoformat(timespec="seconds")

    def create(
        self, name: str, role: str, created_by: str, expires: datetime | None = None
    ) -> tuple[KeyInfo, str]:
        """A new key, valid until ``expires`` (an aware date-time; ``None``: until
        revoked); the full key is returned once and never stored."""
        if role not in ROLES:
            raise KeyRequestError(f"role {role!r} is not one of {', '.join(ROLES)}")
        if not name.strip():
            raise KeyRequestError("a key needs a name (who or what uses it)")
        expires_at = None
        if expires is not None:
            if expires.tzinfo is None:
                raise KeyRequestError(
                    f"expires {expires.isoformat()} needs a UTC offset, e.g. +08:00"
                )
            if expires.timestamp() <= self.clock.time():
                raise KeyRequestError(f"expires {expires.isoformat()} is not in the future")
            expires_at = expires.astimezone(UTC).isoformat(timespec="seconds")
        key_id = secrets.token_hex(4)
        secret = secrets.token_urlsafe(32)
        now = self._now()
        self.db.execute(
            f"INSERT INTO api_keys ({COLUMNS}, sha256) VALUES (?,?,?,?,?,NULL,?,?)",
            (key_id, name, role, now, created_by, expires_at, _digest(secret)),
        )
        info = KeyInfo(key_id, name, role, now, created_by, None, expires_at)
        return info, f"fsk_{key_id}_{secret}"

    def revoke(self, key_id: str, by: str = "") -> KeyInfo | None:
        """Revoke a key at once; ``BOOTSTRAP_ID`` revokes the configured bootstrap key
        (its hash is kept, so it stays refused while the variable is still set)."""
        if key_id == BOOTSTRAP_ID:
            if self._bootstrap is None:
                return None
            self.db.execute(
                "UPDATE bootstrap_keys SET revoked_at=?, revoked_by=? "
                "WHERE sha256=? AND revoked_at IS NULL",
                (self._now(), by, self._bootstrap),
            )
            return self.get(key_id)
        self.db.execute(
            "UPDATE api_keys SET revoked_at=? WHERE id=? AND revoked_at IS NULL",
            (self._now(), key_id),
        )
        return self.get(key_id)

    def _bootstrap_info(self) -> KeyInfo | None:
        if self._bootstrap is None:
            return None
        row = self.db.execute(
            "SELECT first_seen, revoked_at FROM bootstrap_keys WHERE sha256=?",
            (self._bootstrap,),
        ).fetchone()
        return KeyInfo(BOOTSTRAP_ID, "bootstrap", "admin", row[0], "environment", row[1])

    def get(self, key_id: str) -> KeyInfo | None:
        if key_id == BOOTSTRAP_ID:
            return self._bootstrap_info()
        row = self.db.execute(f"SELECT {COLUMNS} FROM api_keys WHERE id=?", (key_id,)).fetchone()
        return None if row is None else KeyInfo(*row)

    def all(self) -> list[KeyInfo]:
        """Every key, the bootstrap key first if one is configured."""
        rows = self.db.execute(f"SELECT {COLUMNS} FROM api_keys ORDER BY created_at, id").fetchall()
        boot = self._bootstrap_info()
        return ([boot] if boot else []) + [KeyInfo(*r) for r in rows]

    def authenticate(self, presented: str) -> Principal | None:
        """The principal of a presented key, or None (unknown, revoked, expired or
        malformed)."""
        if self._bootstrap and hmac.compare_digest(_digest(presented), self._bootstrap):
            revoked = self.db.execute(
                "SELECT revoked_at FROM bootstrap_keys WHERE sha256=?", (self._bootstrap,)
            ).fetchone()
            if revoked is not None and revoked[0] is not None:
                return None
            return Principal(BOOTSTRAP_ID, "bootstrap", "admin")
        m = KEY_RE.match(presented)
        if not m:
            return None
        row = self.db.execute(
            "SELECT name, role, sha256, expires_at FROM api_keys WHERE id=? AND revoked_at IS NULL",
            (m.group(1),),
        ).fetchone()
        if row is None or not hmac.compare_digest(_digest(m.group(2)), row[2]):
            return None
        if row[3] is not None and self.clock.time() >= datetime.fromisoformat(row[3]).timestamp():
            return None
        return Principal(m.group(1), row[0], row[1])

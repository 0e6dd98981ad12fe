"""InfluxDB 1.x users for foursave: what ``foursave influx-setup`` does.

Three users, each with the least it needs on the configured database
(``Services.influx_user``, passwords from core/secrets.py):

==========  ======================  =========================================
role        privilege               who logs in as it
==========  ======================  =========================================
admin       ALL PRIVILEGES (admin)  ``foursave influx-setup`` only
writer      ALL on the database     the ingester and the rules engine (the
                                    engine reads readings and writes results)
reader      READ on the database    the API and Grafana
==========  ======================  =========================================

:func:`setup` is idempotent: the database is created if missing, each user created or
its password set to the one in the secrets, and its privilege set (1.x's GRANT
replaces the one a user had; a writer or reader that was an admin loses that).  On a
server with authentication on and no admin yet, 1.x accepts one statement without
credentials, ``CREATE USER ... WITH ALL PRIVILEGES``: that is how the admin is made.

With ``services.influxdb.retention.raw_days`` set, the retention policies are created
or altered too (core/retention.py :func:`~foursave.core.retention.ensure_policies`).

These statements are InfluxDB 1.x's own (2.x and 3.x use tokens, ``token_env``), so
they have their own path here, :class:`InfluxAdmin`, apart from
``InfluxClient.query`` (which refuses them).  Passwords travel in the POST body, never
in a URL, and are never printed or put into an error message.
"""

from __future__ import annotations

import re
import ssl
import time
from dataclasses import dataclass
from typing import Any

import httpx

from foursave.core import influxql
from foursave.core.config import InfluxRole, Services
from foursave.core.influx import InfluxUnavailable, tls_verify, unreachable
from foursave.core.influxql import AdminStatement
from foursave.core.retention import ensure_policies
from foursave.core.secrets import Secrets, env_name

ROLES: tuple[InfluxRole, ...] = ("admin", "writer", "reader")
# role -> the privilege on the database (the admin is an admin instead)
PRIVILEGE: dict[InfluxRole, str] = {"writer": "ALL", "reader": "READ"}
NO_ADMIN_YET = "create admin user first"  # 1.x's answer while auth is on and no admin exists


class InfluxSetupError(Exception):
    """Setup cannot go on; the message says what to fix (and holds no password)."""


class InfluxAdmin:
    """InfluxDB 1.x user management over ``/query``: :mod:`core.influxql`'s
    :class:`AdminStatement` only."""

    def __init__(
        self,
        url: str,
        *,
        username: str | None = None,
        password: str | None = None,
        verify: bool | ssl.SSLContext = True,
        timeout_s: float = 10.0,
    ):
        self.url = url.rstrip("/")
        auth = (username, password) if username and password else None
        self._http = httpx.Client(base_url=self.url, timeout=timeout_s, auth=auth, verify=verify)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> InfluxAdmin:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        try:
            return self._http.request(method, path, **kw)
        except httpx.HTTPError as exc:
            raise unreachable(f"{self.url}{path}", exc) from None

    def version(self) -> str:
        """The server's version (``/ping``'s X-Influxdb-Version), "" if it names none."""
        resp = self._request("GET", "/ping")
        if resp.status_code != 204:
            raise InfluxUnavailable(f"{self.url}/ping: HTTP {resp.status_code}", resp.status_code)
        return str(resp.headers.get("X-Influxdb-Version", ""))

    def execute(
        self, stmt: AdminStatement, what: str, timeout_s: float | None = None
    ) -> list[dict[str, Any]]:
        """Run one statement; its series.  Errors name ``what`` (never the statement:
        it may hold a password): :class:`InfluxUnavailable` with the HTTP status for
        401/403/5xx, :class:`InfluxSetupError` for a statement the server refused.
        ``timeout_s``: longer than the client's for a long statement (a copy)."""
        if not isinstance(stmt, AdminStatement):
            raise TypeError("InfluxAdmin.execute takes statements built by core/influxql.py")
        kw: dict[str, Any] = {} if timeout_s is None else {"timeout": timeout_s}
        resp = self._request("POST", "/query", data={"q": stmt}, **kw)
        try:
            body = resp.json()
        except ValueError:
            body = {}
        error = body.get("error") if isinstance(body, dict) else None
        if resp.status_code != 200:
            text = f"{self.url}: {what}: HTTP {resp.status_code} {error or resp.text[:200]}"
            if resp.status_code >= 500 or resp.status_code in (401, 403):
                raise InfluxUnavailable(text, resp.status_code)
            raise InfluxSetupError(text)
        results = body.get("results") or [{}]
        if "error" in results[0]:
            raise InfluxSetupError(f"{self.url}: {what}: {results[0]['error']}")
        series: list[dict[str, Any]] = results[0].get("series", [])
        return series

    def users(self) -> dict[str, bool]:
        """User name -> whether an admin."""
        out: dict[str, bool] = {}
        for s in self.execute(influxql.show_users(), "list the users"):
            for name, admin in s.get("values", []):
                out[name] = bool(admin)
        return out

    def grants(self, user: str) -> dict[str, str]:
        """Database -> the user's privilege on it."""
        out: dict[str, str] = {}
        for s in self.execute(influxql.show_grants(user), f"list {user}'s privileges"):
            for database, privilege in s.get("values", []):
                out[database] = privilege
        return out


@dataclass(frozen=True)
class Account:
    role: InfluxRole
    name: str
    password: str


def accounts(services: Services, secrets: Secrets) -> list[Account]:
    """The three users with their passwords; an error names what is missing and where."""
    names = {role: services.influx_user(role) for role in ROLES}
    if len(set(names.values())) < 3:
        why = (
            f"services.influxdb.username ({services.influxdb.username}) makes every role one user"
            if services.influxdb.username
            else f"services.influxdb.users names one user for two roles ({names})"
        )
        raise InfluxSetupError(
            f"{why}; influx-setup makes three users with different rights: name three"
        )
    missing, out = [], []
    for role, name in names.items():
        password = secrets.password("influxdb", name)
        if password is None:
            missing.append(f"{name} ({role}): {env_name('influxdb', name)} or influxdb.{name}")
        else:
            out.append(Account(role, name, password))
    if missing:
        where = f"the secrets file {secrets.path}" if secrets.path else "a secrets file"
        raise InfluxSetupError(
            "no password for " + "; ".join(missing) + f" (in the environment or {where}; "
            "FOURSAVE_SECRETS_FILE or services.secrets_file names the file)"
        )
    return out


def setup(services: Services, secrets: Secrets | None = None, timeout_s: float = 10.0) -> list[str]:
    """Create or bring up to date the database and the three users (module
    docstring); returns what was done, one line each, without passwords."""
    secrets = secrets if secrets is not None else Secrets.load(services.secrets_file)
    svc = services.influxdb
    users = {a.role: a for a in accounts(services, secrets)}
    admin = users["admin"]
    verify = tls_verify(svc)
    done: list[str] = []
    with InfluxAdmin(svc.url, verify=verify, timeout_s=timeout_s) as anonymous:
        version = anonymous.version()
        if version and not re.match(r"v?1\.", version):
            raise InfluxSetupError(
                f"{svc.url} is InfluxDB {version}: influx-setup manages InfluxDB 1.x users; "
                "2.x and 3.x use tokens (services.influxdb.token_env)"
            )
        try:
            anonymous.users()
            done.append(
                f"note: {svc.url} does not check credentials (InfluxDB [http] auth-enabled = "
                "false): the users are made, but anyone may read and write"
            )
        except InfluxUnavailable as exc:
            if exc.status == 403 and NO_ADMIN_YET in str(exc):
                anonymous.execute(
                    influxql.create_user(admin.name, admin.password, admin=True),
                    f"make the admin user {admin.name}",
                )
                done.append(f"admin  {admin.name}: created (the server had no admin)")
            elif exc.status != 401:
                raise
    with InfluxAdmin(
        svc.url, username=admin.name, password=admin.password, verify=verify, timeout_s=timeout_s
    ) as db:
        try:
            existing = db.users()
        except InfluxUnavailable as exc:
            if exc.status not in (401, 403):
                raise
            raise InfluxSetupError(
                f"{svc.url} refused the admin user {admin.name} (HTTP {exc.status}): its "
                "password is not the one in the secrets, or the server's admin has another "
                "name (services.influxdb.users.admin)"
            ) from None
        if admin.name not in existing:  # a server that checks no credentials
            db.execute(
                influxql.create_user(admin.name, admin.password, admin=True),
                f"make the admin user {admin.name}",
            )
            done.append(f"admin  {admin.name}: created")
        elif not existing[admin.name]:
            raise InfluxSetupError(
                f"user {admin.name} exists on {svc.url} but is not an admin: make it one "
                f"(GRANT ALL PRIVILEGES TO {admin.name}) or name another admin "
                "(services.influxdb.users.admin)"
            )
        elif not any(line.startswith("admin") for line in done):
            db.execute(
                influxql.set_password(admin.name, admin.password), f"set {admin.name}'s password"
            )
            done.append(f"admin  {admin.name}: password set from the secrets")
        db.execute(
            AdminStatement(influxql.create_database(svc.database)),
            f"make database {svc.database}",
        )
        done.append(f"database {svc.database}: present")
        done.extend(
            ensure_policies(db.execute, svc.database, svc.retention, int(time.time() * 1000))
        )
        for role in ROLES[1:]:
            user = users[role]
            if user.name in existing:
                db.execute(
                    influxql.set_password(user.name, user.password), f"set {user.name}'s password"
                )
                what = "password set from the secrets"
                if existing[user.name]:
                    db.execute(influxql.revoke_admin(user.name), f"revoke {user.name}'s admin")
                    what += ", admin privilege revoked"
            else:
                db.execute(influxql.create_user(user.name, user.password), f"make user {user.name}")
                what = "created"
            privilege = PRIVILEGE[role]
            db.execute(
                influxql.grant(privilege, svc.database, user.name),
                f"grant {privilege} on {svc.database} to {user.name}",
            )
            done.append(f"{role:<6} {user.name}: {what}; {privilege} on {svc.database}")
    return done

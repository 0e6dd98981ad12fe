"""A small client for the InfluxDB v1-compatible HTTP API (``/write``, ``/query``).

That API is served by InfluxDB 1.x, 2.x (v1 compatibility) and 3.x, and it is what
Grafana's InfluxQL data source speaks (docs/design.md).  Errors are split the way the
ingester needs them: :class:`InfluxRejected` (4xx: the data is wrong, never retry) and
:class:`InfluxUnavailable` (network, 5xx, or credentials refused (401/403): retry
later).

Each service logs in as the InfluxDB user of its role (:meth:`InfluxClient.for_role`,
core/secrets.py's table): ``writer`` for the ingester and the rules engine, ``reader``
for the API.  A reader's client is :attr:`~InfluxClient.read_only`: it refuses to
write before asking the server, and the code the API shares with the rules engine
checks it (rules/rollup.py, rules/alerts/incidents.py).  User management (1.x only)
is in core/influxadmin.py.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Sequence
from typing import Any

import httpx

from foursave.core import influxql
from foursave.core.config import InfluxRetention, InfluxRole, InfluxService, Services
from foursave.core.redact import redact_url
from foursave.core.retention import RAW_MEASUREMENTS, RAW_RP, ensure_policies
from foursave.core.secrets import Secrets
from foursave.core.tls import TlsSettingsError, client_context


class InfluxUnavailable(Exception):
    """Not now: the network, a 5xx, or credentials refused (``status`` 401 or 403)."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status

    @property
    def auth(self) -> bool:
        """The server refused the credentials (401) or the user's rights (403)."""
        return self.status in (401, 403)


class InfluxRejected(Exception):
    def __init__(self, status: int, text: str):
        super().__init__(f"HTTP {status}: {text}")
        self.status = status
        self.text = text


class InfluxReadOnly(Exception):
    """A write through a read-only client (the reader user's): a bug in the caller,
    which should have checked :attr:`InfluxClient.read_only`."""


InfluxTLSError = TlsSettingsError  # ``ca_file`` cannot be used (core/tls.py)


def tls_verify(svc: InfluxService) -> bool | ssl.SSLContext:
    """What httpx checks InfluxDB's certificate with: an SSL context trusting
    ``ca_file`` (else the system's CAs), or False when ``tls_verify`` is off."""
    if not svc.tls_verify:
        return False
    if svc.ca_file is None:
        return True
    return client_context("services.influxdb", svc.ca_file)


def unreachable(where: str, exc: httpx.HTTPError) -> InfluxUnavailable:
    """The error for a request that got no answer; a certificate that could not be
    verified is said in words, with what to set."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return InfluxUnavailable(
                f"{where}: the server's TLS certificate could not be verified "
                f"({seen.verify_message or seen}); set services.influxdb.ca_file to the CA "
                "that signed it"
            )
        seen = seen.__cause__ or seen.__context__
    return InfluxUnavailable(f"{where}: {exc!r}")


class InfluxClient:
    def __init__(
        self,
        url: str,
        database: str,
        *,
        username: str | None = None,
        password: str | None = None,
        token: str | None = None,
        timeout_s: float = 10.0,
        verify: bool | ssl.SSLContext = True,
        read_only: bool = False,
        retention: InfluxRetention | None = None,
    ):
        """``username`` and ``password`` are sent (HTTP basic auth) only with a
        password; ``verify``: see :func:`tls_verify`; ``retention``: where readings
        go and are read from (core/retention.py; None: the default policy, as ever)."""
        self.url = url.rstrip("/")
        self.database = database
        self.username = username if password else None
        self.read_only = read_only
        self.retention = retention
        self._raw_rp = RAW_RP if retention is not None and retention.enabled else None
        headers = {"Authorization": f"Token {token}"} if token else {}
        auth = (username, password) if username and password else None
        self._http = httpx.Client(
            base_url=self.url, timeout=timeout_s, headers=headers, auth=auth, verify=verify
        )

    @classmethod
    def for_role(
        cls,
        services: Services,
        role: InfluxRole,
        secrets: Secrets | None = None,
        **kw: Any,
    ) -> InfluxClient:
        """A client for the configured database, logged in as ``role``'s user
        (``services.influx_user``) with its password from ``secrets`` (default: this
        process's environment and secrets file).  ``username`` with ``password_env``
        (one account for every service) still works; ``token_env`` (InfluxDB 2.x/3.x)
        is sent as a token.  No password: no credentials.  The reader's client is
        read-only."""
        svc = services.influxdb
        user = services.influx_user(role)
        secrets = secrets if secrets is not None else Secrets.load(services.secrets_file)
        password = secrets.password("influxdb", user)
        if password is None and svc.username and svc.password_env:
            password = os.environ.get(svc.password_env) or None
        return cls(
            svc.url,
            svc.database,
            username=user,
            password=password,
            token=os.environ.get(svc.token_env) if svc.token_env else None,
            verify=tls_verify(svc),
            read_only=role == "reader",
            retention=svc.retention,
            **kw,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> InfluxClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def ping(self) -> bool:
        try:
            return self._http.get("/ping").status_code == 204
        except httpx.HTTPError:
            return False

    def _post(self, path: str, **kw: Any) -> httpx.Response:
        try:
            resp = self._http.post(path, **kw)
        except httpx.HTTPError as exc:
            raise unreachable(f"{redact_url(self.url)}{path}", exc) from None
        if resp.status_code >= 500 or resp.status_code in (401, 403):
            # 5xx: the server is unwell; 401/403: credentials to fix. Neither is the
            # data's fault: retry, never dead-letter
            who = f" (user {self.username})" if self.username else " (no credentials sent)"
            raise InfluxUnavailable(
                f"{redact_url(self.url)}{path}: HTTP {resp.status_code}"
                f"{who if resp.status_code in (401, 403) else ''} {resp.text[:200].strip()}",
                resp.status_code,
            )
        return resp

    def write(self, lines: Sequence[str], precision: str = "ms", rp: str | None = None) -> None:
        """Write line protocol; returns only when the server answered 204.  ``rp``: the
        retention policy (``""``: the default); without it, with retention on, the
        readings go to ``raw`` and the rest to the default (core/retention.py)."""
        if self.read_only:
            raise InfluxReadOnly(
                f"{redact_url(self.url)}: this client logs in as the reader ({self.username or 'anonymous'}) "
                "and does not write"
            )
        if rp is None and self._raw_rp is not None:
            raw: list[str] = []
            rest: list[str] = []
            for line in lines:
                (raw if _measurement(line) in RAW_MEASUREMENTS else rest).append(line)
            if raw:
                self._write(raw, precision, self._raw_rp)
            if rest or not raw:
                self._write(rest, precision, None)
            return
        self._write(lines, precision, rp or None)

    def _write(self, lines: Sequence[str], precision: str, rp: str | None) -> None:
        params = {"db": self.database, "precision": precision}
        if rp:
            params["rp"] = rp
        resp = self._post("/write", params=params, content="\n".join(lines).encode())
        if resp.status_code != 204:
            try:
                text = resp.json().get("error", resp.text)
            except ValueError:
                text = resp.text
            raise InfluxRejected(resp.status_code, text)

    def create_database(self) -> bool:
        """CREATE DATABASE (idempotent): a 1.x convenience for an empty server; the one
        statement sent that InfluxDB 3 does not serve (it creates databases on write).
        False when this user may not create databases (403: not an admin; the database
        is ``foursave influx-setup``'s to create)."""
        try:
            resp = self._post("/query", params={"q": influxql.create_database(self.database)})
        except InfluxUnavailable as exc:
            if exc.status == 403:
                return False
            raise
        if resp.status_code != 200:
            raise InfluxRejected(resp.status_code, resp.text)
        results = resp.json().get("results", [{}])
        if results and "error" in results[0]:
            raise InfluxRejected(200, results[0]["error"])
        return True

    def query(self, q: str, epoch: str = "ms") -> list[dict[str, Any]]:
        """Run InfluxQL; return the series of the first statement (may be empty).

        Only statements InfluxDB 3 serves too (SELECT, SHOW MEASUREMENTS / TAG KEYS /
        TAG VALUES / FIELD KEYS; see ``core/influxql.py``, where they are built)."""
        if not influxql.is_served(q):
            raise ValueError(f"not a statement InfluxDB 3 serves (a query or a show): {q[:80]!r}")
        data = {"q": q, "db": self.database, "epoch": epoch}
        rp = self.rp_of(q)
        if rp:
            data["rp"] = rp
        resp = self._post("/query", data=data)
        if resp.status_code != 200:
            raise InfluxRejected(resp.status_code, resp.text)
        results = resp.json().get("results", [])
        if not results:
            return []
        if "error" in results[0]:
            raise InfluxRejected(400, results[0]["error"])
        series: list[dict[str, Any]] = results[0].get("series", [])
        return series

    def rp_of(self, q: str) -> str | None:
        """The retention policy ``q`` reads: the one its builder named
        (``Query.rp``), else ``raw`` for a reading with retention on, else the
        default (None)."""
        named = getattr(q, "rp", None)
        if named is not None:
            return named or None
        if self._raw_rp is not None and getattr(q, "measurement", None) in RAW_MEASUREMENTS:
            return self._raw_rp
        return None

    def ensure_retention(self, now_ms: int) -> list[str] | None:
        """Create or alter the retention policies (core/retention.py), a 1.x
        convenience like :meth:`create_database`; None when this user may not (403:
        ``foursave influx-setup``'s to do) or retention is off."""
        if self.retention is None or not self.retention.enabled:
            return None
        try:
            return ensure_policies(self._admin, self.database, self.retention, now_ms)
        except InfluxUnavailable as exc:
            if exc.status == 403:
                return None
            raise

    def _admin(
        self, stmt: influxql.AdminStatement, what: str, timeout_s: float | None = None
    ) -> list[dict[str, Any]]:
        """One retention statement (:meth:`ensure_retention` only)."""
        if not isinstance(stmt, influxql.AdminStatement):
            raise TypeError("_admin takes statements built by core/influxql.py")
        kw: dict[str, Any] = {} if timeout_s is None else {"timeout": timeout_s}
        resp = self._post("/query", data={"q": stmt, "db": self.database}, **kw)
        if resp.status_code != 200:
            raise InfluxRejected(resp.status_code, f"{what}: {resp.text[:200]}")
        results = resp.json().get("results", [{}])
        if results and "error" in results[0]:
            raise InfluxRejected(400, f"{what}: {results[0]['error']}")
        series: list[dict[str, Any]] = results[0].get("series", []) if results else []
        return series

    def rows(self, q: str, epoch: str = "ms") -> list[dict[str, Any]]:
        """Run InfluxQL; flatten every series into dicts of column -> value (plus tags)."""
        out = []
        for s in self.query(q, epoch):
            cols = s["columns"]
            for v in s["values"]:
                row = dict(zip(cols, v, strict=True))
                row.update(s.get("tags", {}))
                out.append(row)
        return out


def _measurement(line: str) -> str:
    """A line-protocol line's measurement (up to the first unescaped comma or space)."""
    end = len(line)
    for sep in (",", " "):
        i = line.find(sep)
        if 0 <= i < end:
            end = i
    head = line[:end]
    if "\\" not in head:
        return head
    out, i = [], 0
    while i < len(line):
        ch = line[i]
        if ch == "\\" and i + 1 < len(line):
            out.append(line[i + 1])
            i += 2
            continue
        if ch in ", ":
            break
        out.append(ch)
        i += 1
    return "".join(out)

"""A small client for the InfluxDB v1-compatible HTTP API (``/write``, ``/query``).

That API is served by InfluxDB 1.x, 2.x (v1 compatibility) and 3.x, and it is what
Grafana's InfluxQL data source speaks (docs/design.md).  Errors are split the way the
ingester needs them: :class:`InfluxRejected` (4xx: the data is wrong, never retry) and
:class:`InfluxUnavailable` (network or 5xx: retry later).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import httpx

from foursave.core import influxql
from foursave.core.config import InfluxService
from foursave.core.redact import redact_url


class InfluxUnavailable(Exception):
    pass


class InfluxRejected(Exception):
    def __init__(self, status: int, text: str):
        super().__init__(f"HTTP {status}: {text}")
        self.status = status
        self.text = text


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
    ):
        self.url = url.rstrip("/")
        self.database = database
        headers = {"Authorization": f"Token {token}"} if token else {}
        auth = (username, password or "") if username else None
        self._http = httpx.Client(base_url=self.url, timeout=timeout_s, headers=headers, auth=auth)

    @classmethod
    def from_config(cls, svc: InfluxService, **kw: Any) -> InfluxClient:
        return cls(
            svc.url,
            svc.database,
            username=svc.username,
            password=os.environ.get(svc.password_env) if svc.password_env else None,
            token=os.environ.get(svc.token_env) if svc.token_env else None,
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
            raise InfluxUnavailable(f"{redact_url(self.url)}{path}: {exc!r}") from None
        if resp.status_code >= 500 or resp.status_code in (401, 403):
            # 5xx: the server is unwell; 401/403: credentials to fix. Neither is the
            # data's fault: retry, never dead-letter
            raise InfluxUnavailable(
                f"{redact_url(self.url)}{path}: HTTP {resp.status_code} {resp.text[:200]}"
            )
        return resp

    def write(self, lines: Sequence[str], precision: str = "ms") -> None:
        """Write line protocol; returns only when the server answered 204."""
        body = "\n".join(lines).encode()
        resp = self._post(
            "/write", params={"db": self.database, "precision": precision}, content=body
        )
        if resp.status_code != 204:
            try:
                text = resp.json().get("error", resp.text)
            except ValueError:
                text = resp.text
            raise InfluxRejected(resp.status_code, text)

    def create_database(self) -> None:
        """CREATE DATABASE (idempotent): a 1.x convenience for an empty server; the one
        statement sent that InfluxDB 3 does not serve (it creates databases on write)."""
        resp = self._post("/query", params={"q": influxql.create_database(self.database)})
        if resp.status_code != 200:
            raise InfluxRejected(resp.status_code, resp.text)
        results = resp.json().get("results", [{}])
        if results and "error" in results[0]:
            raise InfluxRejected(200, results[0]["error"])

    def query(self, q: str, epoch: str = "ms") -> list[dict[str, Any]]:
        """Run InfluxQL; return the series of the first statement (may be empty).

        Only statements InfluxDB 3 serves too (SELECT, SHOW MEASUREMENTS / TAG KEYS /
        TAG VALUES / FIELD KEYS; see ``core/influxql.py``, where they are built)."""
        if not influxql.is_served(q):
            raise ValueError(f"not a statement InfluxDB 3 serves (a query or a show): {q[:80]!r}")
        resp = self._post("/query", data={"q": q, "db": self.database, "epoch": epoch})
        if resp.status_code != 200:
            raise InfluxRejected(resp.status_code, resp.text)
        results = resp.json().get("results", [])
        if not results:
            return []
        if "error" in results[0]:
            raise InfluxRejected(400, results[0]["error"])
        series: list[dict[str, Any]] = results[0].get("series", [])
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

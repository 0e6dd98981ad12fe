"""Schemathesis over the app's own ``/openapi.json``: every operation gets generated
requests (valid and edge-case inputs) with a key that passes authorisation, and no
response may be a server error.  Used by the test suite (few cases per operation) and
``bench/fuzz_api.py`` (many)."""

from __future__ import annotations

from dataclasses import dataclass, field

import httpx
import schemathesis
from hypothesis import HealthCheck, given, reject, settings
from schemathesis.checks import not_a_server_error, response_schema_conformance

SLOW = ("/reports/", "/contract")  # each case builds a report or a year of bills: fewer


@dataclass
class FuzzResult:
    cases: int = 0
    by_status: dict[int, int] = field(default_factory=dict)
    operations: int = 0


def fuzz(base_url: str, key: str, examples: int, derandomize: bool = True) -> FuzzResult:
    schema = schemathesis.openapi.from_url(base_url + "/openapi.json")
    out = FuzzResult()
    client = httpx.Client(timeout=120)
    for result in schema.get_all_operations():
        op = result.ok()
        n = max(3, examples // 4) if any(s in op.path for s in SLOW) else examples
        out.operations += 1

        @settings(
            max_examples=n,
            deadline=None,
            derandomize=derandomize,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=op.as_strategy())
        def run(case) -> None:
            # sent with httpx: grafana-client's niquests brings urllib3-future, which
            # replaces the urllib3 that schemathesis' own requests transport expects
            kw = case.as_transport_kwargs(base_url=base_url, headers={"X-API-Key": key})
            if kw.pop("cookies", None):
                raise AssertionError("the API documents no cookies")
            if isinstance(kw.get("data"), bytes | str):
                kw["content"] = kw.pop("data")
            kw["headers"].pop("Authorization", None)  # the key goes in X-API-Key
            try:
                response = client.request(**kw)
            except httpx.LocalProtocolError:
                reject()  # a header value no HTTP client may send (e.g. trailing space)
            out.cases += 1
            out.by_status[response.status_code] = out.by_status.get(response.status_code, 0) + 1
            checks = [not_a_server_error]
            if response.status_code < 300 and response.headers.get("content-type", "").startswith(
                "application/json"
            ):
                checks.append(response_schema_conformance)  # what we answer is what we document
            case.validate_response(response, checks=checks)

        run()
    client.close()
    return out

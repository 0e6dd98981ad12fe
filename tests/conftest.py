"""Fixtures: a real mosquitto and a real influxd on free ports with temporary data, and
the API tests' backfilled site in that influxd, built once a session."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from foursave.core.influx import InfluxClient
from foursave.localstack import LocalService, free_port, influxd
from tests.api_fixtures import History, build_history, history_fingerprint
from tests.helpers import AuthInflux, auth_broker, start_auth_influx


@pytest.fixture(scope="session")
def influx_server(tmp_path_factory) -> LocalService:
    svc = influxd(free_port(), tmp_path_factory.mktemp("influxd"))
    svc.start(timeout_s=60)
    yield svc
    svc.stop()


@pytest.fixture(scope="session")
def influx_auth(tmp_path_factory) -> AuthInflux:
    """An influxd with authentication on and foursave's admin, writer and reader users
    (tests/helpers.py AuthInflux: ``.grant(database)`` before a test uses one)."""
    auth = start_auth_influx(tmp_path_factory.mktemp("influxd-auth"))
    yield auth
    auth.server.stop()


@pytest.fixture(scope="session")
def api_history(influx_server, tmp_path_factory) -> History:
    """The API, report and display tests' backfilled site (tests/api_fixtures.py), built
    once a session and shared; the modules that share it only read it, which is checked
    here at the end (a module that writes to InfluxDB takes its own copy)."""
    history = build_history(tmp_path_factory.mktemp("api-history"), influx_server)
    before = history_fingerprint(history)
    yield history
    assert history_fingerprint(history) == before, (
        f"a test wrote into the shared database {history.database}: "
        "give its module build_stack(..., own_database=True)"
    )


@pytest.fixture
def influx_url(influx_server) -> str:
    return f"http://127.0.0.1:{influx_server.port}"


@pytest.fixture
def database() -> str:
    return f"t_{uuid.uuid4().hex[:12]}"


@pytest.fixture
def influx(influx_url, database) -> InfluxClient:
    client = InfluxClient(influx_url, database)
    client.create_database()
    yield client
    client.close()


@pytest.fixture
def broker(tmp_path: Path) -> LocalService:
    svc = auth_broker(free_port(), tmp_path / "mosquitto")
    svc.start()
    yield svc
    svc.stop()

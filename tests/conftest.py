"""Fixtures: a real mosquitto and a real influxd on free ports with temporary data."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from foursave.core.influx import InfluxClient
from foursave.localstack import LocalService, free_port, influxd, mosquitto


@pytest.fixture(scope="session")
def influx_server(tmp_path_factory) -> LocalService:
    svc = influxd(free_port(), tmp_path_factory.mktemp("influxd"))
    svc.start(timeout_s=60)
    yield svc
    svc.stop()


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
    svc = mosquitto(free_port(), tmp_path / "mosquitto")
    svc.start()
    yield svc
    svc.stop()

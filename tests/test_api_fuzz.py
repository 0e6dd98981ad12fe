"""Schemathesis against /openapi.json, with a real backfilled stack behind the API."""

from __future__ import annotations

import pytest

from foursave.api.main import create_app
from foursave.localstack import free_port
from tests.api_fixtures import ServerThread, build_stack
from tests.fuzz import fuzz
from tests.helpers import auth_broker

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_generated_requests_never_get_a_server_error(api_history, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fuzz")
    broker = auth_broker(free_port(), tmp / "mosquitto").start()
    # the shared history: records, keys and reports go to this module's own files, and
    # no incident exists here to acknowledge (the session checks nothing was written)
    st = build_stack(tmp, broker, api_history)
    try:
        with ServerThread(create_app(st.config, clock=st.clock, refresh=False)) as server:
            result = fuzz(server.url, st.keys["admin"], examples=12)
    finally:
        broker.stop()
        st.influx.close()
    print(
        f"schemathesis: {result.cases} cases over {result.operations} operations: {result.by_status}"
    )
    assert result.operations >= 29 and result.cases >= 250
    assert not any(code >= 500 for code in result.by_status)
    assert result.by_status.get(200, 0) + result.by_status.get(201, 0) > 50  # not only refusals

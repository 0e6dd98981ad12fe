"""Grafana dashboards as code: generated JSON is stable and committed, every panel
names a unit, every query runs on a real influxd filled by backfill, the live
pipeline and the rules engine, with Grafana's macros expanded as Grafana does; the
push command speaks Grafana's HTTP API as documented."""

from __future__ import annotations

import json
import re
import threading
from datetime import UTC, date, datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from foursave.app import load_config
from foursave.core.clock import ManualClock
from foursave.core.reading import to_line
from foursave.dashboards.build import DASHBOARDS, DS_UID, OUT, dashboard_json, write_all
from foursave.localstack import free_port
from foursave.rules.alerts import AlertEngine, AlertSettings, IncidentStore, Notifier
from foursave.rules.demand import forecast_lines
from foursave.rules.engine import run_once
from foursave.rules.records import RecordIn, RecordStore
from foursave.simulators.backfill import run_backfill
from tests.helpers import ROOT, Pipeline, expand, panels, wait_for

UIDS = {
    "foursave-facilities",
    "foursave-solar",
    "foursave-four-saving",
    "foursave-alerts",
    "foursave-pipeline",
}


def test_generated_json_is_stable_and_committed(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    files_a = write_all(a)
    write_all(b)
    for f in files_a:
        rel = f.relative_to(a)
        assert f.read_bytes() == (b / rel).read_bytes(), f"{rel} differs between two builds"
        committed = OUT / rel
        assert committed.exists() and committed.read_bytes() == f.read_bytes(), (
            f"{committed} is out of date: run `foursave dashboards build` and commit"
        )


def test_uids_are_unique_and_stable_and_every_panel_has_a_unit():
    uids = [dashboard_json(n)["uid"] for n in DASHBOARDS]
    assert len(uids) == len(set(uids)) and set(uids) == UIDS
    for name in DASHBOARDS:
        for p in panels(dashboard_json(name)):
            if p.get("type") == "row":
                continue
            assert p["fieldConfig"]["defaults"].get("unit"), (name, p["title"])
            assert re.search(r"[\u4e00-\u9fff]", p["title"]) and re.search(
                r"[A-Za-z]", p["title"]
            ), p["title"]
            for t in p["targets"]:
                assert t["datasource"]["uid"] == DS_UID and t["rawQuery"] is True


@pytest.mark.integration
@pytest.mark.slow
def test_every_panel_query_returns_data(
    tmp_path, broker, influx_url, database, influx, monkeypatch
):
    monkeypatch.setenv("FOURSAVE_INFLUXDB_URL", influx_url)
    monkeypatch.setenv("FOURSAVE_INFLUXDB_DATABASE", database)
    cfg = load_config(ROOT / "config" / "demo.yaml")
    start, end = date(2025, 10, 20), date(2025, 11, 3)  # late October: clear days
    run_backfill(cfg, start, end)
    # a few seconds of the live pipeline: device status, collector and ingester health
    with Pipeline(tmp_path, broker, influx_url, database) as p:
        wait_for(
            lambda: (
                p.rows("SELECT count(lag_ms) FROM ingest_stats")
                and p.rows("SELECT count(spool_depth) FROM collector_status")
                and p.rows("SELECT count(received) FROM ingest_seq")
            ),
            60,
            "pipeline health points",
        )
    records = RecordStore(tmp_path / "records.sqlite")
    # last year's fuel: a baseline, so the savings-rate panel has something to show
    records.add(
        RecordIn(site="demo", period="2024-10", kind="gasoline_l", value=330, entered_by="t")
    )
    for period in ("2025-10", "2025-11"):
        records.add(
            RecordIn(site="demo", period=period, kind="gasoline_l", value=300, entered_by="t")
        )
        for kind, n in (
            ("docs_online_signed", 90),
            ("docs_electronic_received", 80),
            ("docs_paper_to_online", 10),
            ("docs_self_created", 10),
        ):
            records.add(RecordIn(site="demo", period=period, kind=kind, value=n, entered_by="t"))
    run_once(cfg, influx, records, start, end)
    tz = timezone(timedelta(hours=8))
    t_alert = datetime(2025, 10, 25, 11, 0, tzinfo=tz).timestamp()
    influx.write(
        [
            to_line(
                "inverter",
                {"site": "demo", "device": "inv-01"},
                {"state": 7, "events": 1},
                int(t_alert * 1000),
            ),
            # what the backfilled history lacks (strings and nameplate come live, from
            # models 160 and 120; tests/test_real_devices.py stores real devices'):
            # one point each in the dashboard's range for the panels
            to_line(
                "inverter_string",
                {"site": "demo", "device": "inv-01", "string": "1"},
                {"dc_power_w": 1960.0, "dc_voltage_v": 602.0, "dc_current_a": 3.3},
                int(t_alert * 1000),
            ),
            to_line(
                "device_info",
                {"site": "demo", "device": "inv-01"},
                {
                    "manufacturer": "SMA",
                    "model": "Solar Inverter",
                    "version": "3.11.02.R",
                    "serial": "3009060251",
                    "rated_power_w": 50000.0,
                },
                int(t_alert * 1000),
            ),
        ]
    )
    settings = AlertSettings.model_validate(
        {
            "mqtt": False,
            "rules": [
                {
                    "id": "inverter-fault",
                    "kind": "state",
                    "title": "fault",
                    "match": {"kind": "inverter"},
                    "states": [7],
                }
            ],
        }
    )
    engine = AlertEngine(
        cfg,
        settings,
        influx,
        IncidentStore(tmp_path / "i.sqlite"),
        Notifier(settings),
        ManualClock(t_alert + 1),
    )
    engine.evaluate()
    from foursave.rules.alerts import acknowledge_incident

    # the acknowledgement as the CLI and the API make it: stored, then into alert history
    acked = acknowledge_incident(
        engine.store, influx, engine.store.all("firing")[0].id, "lee", "crew sent", t_alert + 60
    )
    assert acked.history_error is None
    # the running block's demand forecast, as the engine writes it every pass
    influx.write(forecast_lines(cfg, influx, datetime(2025, 10, 28, 14, 7, tzinfo=tz).timestamp()))

    # monthly results are stamped at the start of their month: the range starts before it
    start_ms = int(datetime(2025, 9, 1, tzinfo=tz).timestamp() * 1000)
    end_ms = int((datetime.now(UTC) + timedelta(hours=1)).timestamp() * 1000)
    empty = []
    for name in DASHBOARDS:
        d = dashboard_json(name)
        for var in d.get("templating", {}).get("list", []):  # the variables' own queries
            assert influx.rows(
                expand(var["query"], start_ms, end_ms, "demo", ["inv-01", "inv-02"])
            ), var["name"]
        for p in panels(d):
            for t in p.get("targets", []):
                q = expand(t["query"], start_ms, end_ms, "demo", ["inv-01", "inv-02"])
                rows = influx.rows(q)
                has_data = any(v is not None for r in rows for k, v in r.items() if k != "time")
                if not has_data:
                    empty.append((name, p["title"], q))
    assert not empty, "\n".join(f"{n} / {t}: {q}" for n, t, q in empty)
    # the PV value stat is the rules pass's pv_value_month (rules/pvvalue.py) of the month
    (panel,) = [p for p in panels(dashboard_json("solar")) if p["title"].startswith("本月太陽光電")]
    q = expand(panel["targets"][0]["query"], start_ms, end_ms, "demo", ["inv-01"])
    latest = influx.rows("SELECT last(pv_value_ntd) AS v FROM pv_value_month WHERE site = 'demo'")[
        0
    ]["v"]
    assert latest > 0 and [r["last"] for r in influx.rows(q)] == [latest]


class FakeGrafana:
    """Checks requests the way Grafana's HTTP API documents them."""

    def __init__(self, token: str):
        self.token, self.calls, self.datasources, self.folders, self.dashboards = (
            token,
            [],
            {},
            set(),
            {},
        )
        g = self

        class H(BaseHTTPRequestHandler):
            def _reply(self, code, body):
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _handle(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(n)) if n else None
                g.calls.append((self.command, self.path, self.headers.get("Authorization"), body))
                if self.headers.get("Authorization") != f"Bearer {g.token}":
                    return self._reply(401, {"message": "Unauthorized"})
                m, path = self.command, self.path
                if m == "GET" and path.startswith("/api/datasources/uid/"):
                    uid = path.rsplit("/", 1)[1]
                    return (
                        self._reply(200, g.datasources[uid])
                        if uid in g.datasources
                        else self._reply(404, {"message": "Data source not found"})
                    )
                if m == "POST" and path == "/api/datasources":
                    assert {"name", "type", "uid", "url", "access", "jsonData"} <= set(body)
                    g.datasources[body["uid"]] = body
                    return self._reply(200, {"message": "Datasource added", "datasource": body})
                if m == "PUT" and path.startswith("/api/datasources/uid/"):
                    g.datasources[path.rsplit("/", 1)[1]] = body
                    return self._reply(200, {"message": "Datasource updated"})
                if m == "GET" and path.startswith("/api/folders/"):
                    uid = path.rsplit("/", 1)[1]
                    return (
                        self._reply(200, {"uid": uid})
                        if uid in g.folders
                        else self._reply(404, {"message": "folder not found"})
                    )
                if m == "POST" and path == "/api/folders":
                    assert {"title", "uid"} <= set(body)
                    g.folders.add(body["uid"])
                    return self._reply(200, {"uid": body["uid"]})
                if m == "POST" and path == "/api/dashboards/db":
                    assert body["overwrite"] is True and body["folderUid"] == "foursave"
                    assert (
                        body["dashboard"]["uid"]
                        and body["dashboard"]["panels"]
                        and "id" not in body["dashboard"]
                    )
                    g.dashboards[body["dashboard"]["uid"]] = body["dashboard"]
                    return self._reply(200, {"status": "success", "uid": body["dashboard"]["uid"]})
                return self._reply(404, {"message": f"unexpected {m} {path}"})

            do_GET = do_POST = do_PUT = _handle

            def log_message(self, *a):
                pass

        self.server = HTTPServer(("127.0.0.1", free_port()), H)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def test_push_is_idempotent_against_grafanas_documented_api():
    from foursave.dashboards.push import push

    g = FakeGrafana("glsa_test")
    try:
        first = push(g.url, "glsa_test", "http://influxdb:8086", "foursave")
        assert f"data source {DS_UID} created" in first and "folder foursave created" in first
        assert "secureJsonData" not in g.datasources[DS_UID]  # an open InfluxDB: no login
        login = ("foursave_reader", "r'ead\\er")
        second = push(g.url, "glsa_test", "http://influxdb:8086", "foursave", influx_login=login)
        assert f"data source {DS_UID} updated" in second and "folder foursave created" not in second
        assert set(g.dashboards) == UIDS  # same uids: updated, not duplicated
        assert g.datasources[DS_UID]["jsonData"]["dbName"] == "foursave"
        assert g.datasources[DS_UID]["user"] == "foursave_reader"  # the least rights
        assert g.datasources[DS_UID]["secureJsonData"] == {"password": login[1]}
        assert all(auth == "Bearer glsa_test" for _, _, auth, _ in g.calls)
        from grafana_client.client import GrafanaClientError

        with pytest.raises(GrafanaClientError):
            push(g.url, "wrong", "http://influxdb:8086", "foursave")
    finally:
        g.server.shutdown()
        g.server.server_close()

"""A backfilled site behind a real API: shared by the API, report and display tests.

Two years of the demo site (2024, 2025) and three weeks of 2026 are backfilled at a
15-minute step into a real influxd, manual records are entered, the rules engine does
one pass (so the ``ledger`` measurement exists), and the app runs with a manual clock
at 2026-01-21 12:00 Taipei, so 2025 and its months are closed periods.

The backfilled database is built once a test session (:func:`build_history`, the
``api_history`` fixture in tests/conftest.py); each module then gets its own stack
(:func:`build_stack`): its own config, records, keys and report store under its own
directory, over the shared database where it only reads, or over its own copy of it
(``own_database=True``, an ``influxd backup``/``restore`` of the history: seconds,
where a second backfill and rules pass take half a minute) where it writes to InfluxDB.
Everything is dated from the constants below, never from the machine's clock or zone."""

from __future__ import annotations

import re
import subprocess
import uuid
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from foursave.api.keys import ROLES, KeyStore
from foursave.core.clock import ManualClock
from foursave.core.config import Config
from foursave.core.glossary import FIELDS
from foursave.core.influx import InfluxClient, InfluxRejected
from foursave.localstack import LocalService
from foursave.rules.engine import run_once
from foursave.rules.records import RecordIn, RecordStore
from foursave.simulators.backfill import run_backfill
from tests.helpers import make_config, wait_for

TZ = ZoneInfo("Asia/Taipei")
NOW = datetime(2026, 1, 21, 12, 0, tzinfo=TZ)
HISTORY = (date(2024, 1, 1), date(2026, 1, 21))
STEP_S = 900
COMMISSIONED = date(2023, 12, 1)


@dataclass
class Stack:
    config: Config
    influx: InfluxClient
    keys: dict[str, str]  # role -> key
    clock: ManualClock
    tmp: Path


@dataclass(frozen=True)
class History:
    """The backfilled database (with the records' ledger) in a running influxd."""

    server: LocalService
    database: str

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.port}"


def records(store: RecordStore) -> None:
    """Fuel, paper and an adjustment, as an auditor would enter them."""
    for y, litres in ((2024, 100.0), (2025, 95.0)):
        for m in range(1, 13):
            store.add(
                RecordIn(
                    site="demo",
                    period=f"{y}-{m:02d}",
                    kind="gasoline_l",
                    value=litres,
                    entered_by="chen",
                )
            )
            for kind, v in (
                ("docs_online_signed", 930),
                ("docs_electronic_received", 800),
                ("docs_paper_to_online", 100),
                ("docs_self_created", 100),
            ):
                store.add(
                    RecordIn(
                        site="demo", period=f"{y}-{m:02d}", kind=kind, value=v, entered_by="chen"
                    )
                )
    store.add(
        RecordIn(
            site="demo",
            period="2025-07",
            kind="adjustment",
            item="electricity",
            value=-1500.0,
            reason="新增電動車充電樁測試用電 (EV charger commissioning tests)",
            approved_by="王科長",
            approved_on=date(2025, 8, 5),
            entered_by="lin",
        )
    )


def stack_config(tmp: Path, mqtt: LocalService | int, influx_url: str, database: str) -> Config:
    """The demo site commissioned before the history, its stores under ``tmp``."""
    tmp.mkdir(parents=True, exist_ok=True)
    return make_config(
        tmp,
        mqtt,
        influx_url,
        database,
        commissioned=COMMISSIONED,
        extra_services={
            "rules": {
                "records_path": str(tmp / "records.sqlite"),
                "state_path": str(tmp / "rules-state.sqlite"),
            },
            "api": {
                "keys_path": str(tmp / "keys.sqlite"),
                "reports_path": str(tmp / "reports.sqlite"),
            },
        },
    )


def build_history(tmp: Path, server: LocalService) -> History:
    """Backfill :data:`HISTORY`, enter :func:`records` and let the rules engine do one
    pass (its clock at :data:`NOW`) into a new database of ``server``."""
    history = History(server, f"api_{uuid.uuid4().hex[:10]}")
    cfg = stack_config(tmp, 1, history.url, history.database)
    influx = InfluxClient(history.url, history.database)
    try:
        influx.create_database()
        run_backfill(cfg, *HISTORY, step_s=STEP_S, influx=influx)
        store = RecordStore(cfg.services.rules.records_path)
        records(store)
        run_once(cfg, influx, store, HISTORY[0], HISTORY[1], ManualClock(NOW.timestamp()))
        store.close()
    finally:
        influx.close()
    return history


def copy_database(history: History, tmp: Path) -> str:
    """A new database holding exactly the history's points (series, tags, field types),
    by ``influxd backup -portable`` and ``restore -newdb`` over the server's RPC address
    (tooling of the 1.x test server, as the DROP DATABASE of clean-up is)."""
    conf = (history.server.workdir / "influxdb.conf").read_text()
    m = re.search(r'^bind-address = "([^"]+)"', conf, re.M)
    if m is None:
        raise RuntimeError(f"no RPC bind-address in {history.server.workdir / 'influxdb.conf'}")
    binary, rpc = history.server.argv[0], m.group(1)
    name = f"api_{uuid.uuid4().hex[:10]}"
    backup = str(tmp / f"backup-{history.database}")
    source = ["-portable", "-db", history.database, "-host", rpc]
    for argv in (
        [binary, "backup", *source, backup],
        [binary, "restore", *source, "-newdb", name, backup],
    ):
        p = subprocess.run(argv, capture_output=True, text=True, timeout=300)
        if p.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed ({p.returncode}):\n{p.stderr[-2000:]}")
    # the restored shards are enabled a moment after restore returns ("shard is disabled")
    want, copy = history_fingerprint(history), History(history.server, name)

    def complete() -> bool:
        try:
            return history_fingerprint(copy) == want
        except InfluxRejected as exc:
            if "shard is disabled" in str(exc):
                return False
            raise

    wait_for(complete, 60, f"the copy {name} to hold what {history.database} holds")
    return name


def history_fingerprint(history: History) -> list:
    """The history's measurements, their fields, tag values and point counts: what a
    write of new points would change.  A reading measurement counts one field (readings
    are written with all their fields): counting every field of two years takes seconds."""
    influx = InfluxClient(history.url, history.database)
    try:
        out = []
        for name in [r["name"] for r in influx.rows("SHOW MEASUREMENTS")]:
            fields = influx.rows(f'SHOW FIELD KEYS FROM "{name}"')
            counted = f'"{fields[0]["fieldKey"]}"' if name in FIELDS else "*"
            out.append(
                (
                    name,
                    fields,
                    influx.rows(f'SHOW TAG VALUES FROM "{name}" WITH KEY =~ /.*/'),
                    influx.rows(f'SELECT count({counted}) FROM "{name}"'),
                )
            )
        return out
    finally:
        influx.close()


def build_stack(
    tmp: Path, mqtt: LocalService | int, history: History, *, own_database: bool = False
) -> Stack:
    """A module's stack over the shared ``history`` (it must not write to InfluxDB
    then: the session checks) or, with ``own_database``, over its own copy of it."""
    database = copy_database(history, tmp) if own_database else history.database
    cfg = stack_config(tmp, mqtt, history.url, database)
    store = RecordStore(cfg.services.rules.records_path)
    records(store)  # the same records the history's ledger was computed from
    store.close()
    ks = KeyStore(cfg.services.api.keys_path)
    keys = {role: ks.create(f"test-{role}", role, "fixture")[1] for role in ROLES}
    ks.close()
    influx = InfluxClient(history.url, database)
    return Stack(cfg, influx, keys, ManualClock(NOW.timestamp()), tmp)


class ServerThread:
    """The app served by uvicorn on a free port in a thread: tests talk real HTTP."""

    def __init__(self, app, port: int | None = None):
        import threading

        import uvicorn

        from foursave.localstack import free_port

        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(
            uvicorn.Config(
                app, host="127.0.0.1", port=self.port, log_level="warning", access_log=False
            )
        )
        self.server.install_signal_handlers = lambda: None  # not the main thread
        self.thread = threading.Thread(target=self.server.run, name="api", daemon=True)

    def __enter__(self) -> ServerThread:
        from tests.helpers import wait_for

        self.thread.start()
        wait_for(lambda: self.server.started, 30, "API server started")
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)

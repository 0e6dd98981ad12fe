"""A backfilled site behind a real API: shared by the API, report and display tests.

Two years of the demo site (2024, 2025) and three weeks of 2026 are backfilled at a
15-minute step into a real influxd, manual records are entered, the rules engine does
one pass (so the ``ledger`` measurement exists), and the app runs with a manual clock
at 2026-01-21 12:00 Taipei, so 2025 and its months are closed periods."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from foursave.api.keys import ROLES, KeyStore
from foursave.core.clock import ManualClock
from foursave.core.config import Config
from foursave.core.influx import InfluxClient
from foursave.rules.engine import run_once
from foursave.rules.records import RecordIn, RecordStore
from foursave.simulators.backfill import run_backfill
from tests.helpers import make_config

TZ = ZoneInfo("Asia/Taipei")
NOW = datetime(2026, 1, 21, 12, 0, tzinfo=TZ)
HISTORY = (date(2024, 1, 1), date(2026, 1, 21))
STEP_S = 900


@dataclass
class Stack:
    config: Config
    influx: InfluxClient
    keys: dict[str, str]  # role -> key
    clock: ManualClock
    tmp: Path


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


def build_stack(tmp: Path, mqtt_port: int, influx_url: str) -> Stack:
    database = f"api_{uuid.uuid4().hex[:10]}"
    cfg = make_config(
        tmp,
        mqtt_port,
        influx_url,
        database,
        commissioned=date(2023, 12, 1),
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
    influx = InfluxClient(influx_url, database)
    influx.create_database()
    run_backfill(cfg, *HISTORY, step_s=STEP_S, influx=influx)
    store = RecordStore(cfg.services.rules.records_path)
    records(store)
    run_once(cfg, influx, store, date(2024, 1, 1), HISTORY[1])
    store.close()
    ks = KeyStore(cfg.services.api.keys_path)
    keys = {role: ks.create(f"test-{role}", role, "fixture")[1] for role in ROLES}
    ks.close()
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

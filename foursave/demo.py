"""``foursave demo``: the whole system on one machine with simulated devices.

Starts mosquitto and influxd (with authentication on) on the configured ports unless
something already answers there, makes InfluxDB's users (``foursave influx-setup``,
passwords made up on the first run into the demo's secrets file, mode 600, which every
service then reads through ``FOURSAVE_SECRETS_FILE``), then the simulators, the ingester, the collector and the API as separate
processes (as they run in production), prints what runs where (with a fresh API key per
role) and a live line of counts, and stops everything cleanly on Ctrl-C.

The site has a past (``simulators/history.py``): live simulation starts at once, while
history from 1 January of the year before last up to that instant fills in beside it
with a progress bar; then one rules pass computes the derived results over all of it
and the continuous rules engine starts.  Sample manual records (fuel, paper, document
counts, water bills) are added for the same months.  A second run fills only the time
the demo was stopped and adds only the months that were missing.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, date, datetime
from pathlib import Path

from foursave import app
from foursave.core.clock import simulated_clock
from foursave.core.config import Config
from foursave.core.influx import InfluxClient, InfluxUnavailable
from foursave.core.influxadmin import ROLES as INFLUX_ROLES
from foursave.core.influxadmin import InfluxSetupError
from foursave.core.influxadmin import setup as influx_setup
from foursave.core.influxql import ALL, agg, eq, select, time_range
from foursave.core.periods import local_date
from foursave.core.secrets import SECRETS_FILE_ENV, read_file, write_file
from foursave.localstack import LocalService, die_with_parent, influxd, mosquitto, port_open


class _Stopped(Exception):
    """The demo was asked to stop while history was filling."""


def _spawn(name: str, args: list[str], var: Path) -> subprocess.Popen:
    """A foursave service as a child process of its own session, logging to var/;
    started from the main thread it dies with the demo, however the demo ends."""
    log = open(var / f"{name}.log", "ab")  # noqa: SIM115 - handed to the child
    main = threading.current_thread() is threading.main_thread()
    proc = subprocess.Popen(
        [sys.executable, "-m", "foursave", *args],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=die_with_parent if main else None,
    )
    log.close()
    return proc


def _counts(influx: InfluxClient, since_ms: int) -> dict[str, int]:
    """Points stored since the live part started (not history: counting years of it
    every two seconds would keep InfluxDB busy for nothing)."""
    out: dict[str, int] = {}
    for m in ("inverter", "meter", "weather", "water"):
        try:
            rows = influx.rows(select(agg("count", "*"), m, where=[time_range(since_ms)]))
        except Exception:
            continue
        if rows:
            out[m] = max((v for k, v in rows[0].items() if k.startswith("count_")), default=0)
    return out


def secrets_path(var: Path) -> Path:
    """The demo's secrets file (core/secrets.py's format): every service's password."""
    return (var / "secrets.yaml").resolve()


def demo_secrets(cfg: Config, var: Path) -> Path:
    """The demo's secrets file with a password for each InfluxDB user: those of an
    earlier run are kept (its influxd knows them), missing ones made up; whatever else
    the file holds (other sections) stays.  Written readable by its owner only."""
    path = secrets_path(var)
    current = read_file(path) if path.exists() else {}
    influx = dict(current.get("influxdb", {}))
    for role in INFLUX_ROLES:
        influx.setdefault(cfg.services.influx_user(role), secrets.token_urlsafe(24))
    write_file(path, {**current, "influxdb": influx})
    return path


def _demo_keys(cfg: Config) -> dict[str, str]:
    """Fresh random keys, one per role, for this demo run (the last run's are revoked):
    there is no default key, in the demo either."""
    from foursave.api.keys import ROLES, KeyStore

    store = KeyStore(cfg.services.api.keys_path)
    try:
        for k in store.all():
            if k.created_by == "foursave demo" and k.revoked_at is None:
                store.revoke(k.id)
        return {r: store.create(f"demo-{r}", r, "foursave demo")[1] for r in ROLES}
    finally:
        store.close()


class History(threading.Thread):
    """Fills the demo's past beside the live system, then computes the derived results
    over all of it and starts the continuous rules engine."""

    def __init__(self, cfg: Config, config_path: str, var: Path, gaps, procs, stop, step_s: int):
        super().__init__(name="demo-history", daemon=True)
        self.cfg, self.config_path, self.var, self.step_s = cfg, config_path, var, step_s
        self.last_year = 0  # set by run_demo: the year the printed report command names
        self.gaps, self.procs, self.stop = gaps, procs, stop
        self.done = threading.Event()
        self.error: str | None = None
        self.summary = ""

    def run(self) -> None:
        try:
            self._run()
        except _Stopped:
            pass
        except Exception as exc:  # reported on the demo's screen, never a traceback
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            self.done.set()

    def _run(self) -> None:
        from tqdm import tqdm

        from foursave.simulators.history import fill_gaps

        t0 = time.monotonic()
        lines = 0
        if self.gaps:
            days = sum(g.hours for g in self.gaps) / 24
            print(
                f"  history       filling {days:.0f} days of history, a point every "
                f"{self.step_s} s ...",
                flush=True,
            )
            bar = tqdm(total=1, unit="day", desc="  history", file=sys.stdout, leave=True)

            def progress(done: int, total: int, n: int) -> None:
                if self.stop.is_set():
                    raise _Stopped
                bar.total = total
                bar.n = done
                bar.set_postfix_str(f"{n:,} points", refresh=True)

            try:
                lines = fill_gaps(self.cfg, self.gaps, progress=progress, step_s=self.step_s).lines
            finally:
                bar.close()
        t_fill = time.monotonic() - t0
        if not self.gaps and _has_annual_ledger(self.cfg, self.last_year):
            # nothing new in the past, and an earlier run computed it: the engine goes on
            self.summary = "history already complete; rules engine running"
            return
        # the derived results over the whole past (the continuous engine covers only the
        # current and previous month); forget a rollup made before the gaps were filled
        args = ["rules", "--once", "--no-alerts", "--config", self.config_path]
        if self.gaps and _has_rollup(self.cfg):
            args.append("--rebuild")
        once = _spawn("rules-history", args, self.var)
        while once.poll() is None:
            if self.stop.wait(0.5):
                once.terminate()
                once.wait()
                raise _Stopped
        if once.returncode != 0:
            raise RuntimeError(
                f"rules --once exited {once.returncode}; see {self.var}/rules-history.log"
            )
        self.summary = (
            f"history ready: {lines:,} points in {t_fill:.0f} s, derived results in "
            f"{time.monotonic() - t0 - t_fill:.0f} s; rules engine running"
        )


def _has_annual_ledger(cfg: Config, y: int) -> bool:
    influx = app.influx(cfg, "reader", timeout_s=10)
    try:
        return bool(
            influx.rows(
                select(
                    agg("count", "actual"),
                    "ledger",
                    where=[eq("granularity", "year"), eq("period", str(int(y)))],
                )
            )
        )
    finally:
        influx.close()


def _has_rollup(cfg: Config) -> bool:
    from foursave.rules.rollup import ROLLUP

    influx = app.influx(cfg, "reader", timeout_s=10)
    try:
        return bool(influx.rows(select(agg("count", "*"), ROLLUP)))
    finally:
        influx.close()


def _seed_records(cfg: Config, now: float) -> int:
    from foursave.rules.records import RecordStore
    from foursave.simulators.history import add_sample_records, history_start

    store = RecordStore(cfg.services.rules.records_path)
    try:
        return add_sample_records(cfg, store, history_start(cfg, now), _earliest_today(cfg, now))
    finally:
        store.close()


def _earliest_today(cfg: Config, now: float) -> date:
    """Today's local date at the site where it is earliest: a month or year is over
    once it is over at every site."""
    return min(local_date(now * 1000, s.timezone) for s in cfg.sites)


# History at 5-minute steps: three years fill in about 25 s here, where 1-minute steps
# take 107 s (9.2 million points) and the derived results another 47 s, past the two
# minutes a newcomer should wait.  Ledger, demand and PV performance account for the step.
HISTORY_STEP_S = 300


def run_demo(
    cfg: Config,
    config_path: str,
    var: Path,
    history: bool = True,
    history_step_s: int = HISTORY_STEP_S,
) -> int:
    var.mkdir(parents=True, exist_ok=True)
    svc = cfg.services
    # every process of the demo (this one and the services it starts) reads it
    os.environ[SECRETS_FILE_ENV] = str(demo_secrets(cfg, var))
    started: list[LocalService] = []
    mq_host, mq_port = svc.mqtt.host, svc.mqtt.port
    if not port_open(mq_host, mq_port):
        # every service logs in with its own account, allowed only its job: the same
        # password file and ACL `foursave broker-config` makes for production
        from foursave.brokerconf import generate_missing, merged_grants, write_broker_files
        from foursave.core.secrets import Secrets

        generate_missing(secrets_path(var), merged_grants([cfg]))
        auth = (var / "mosquitto-auth").resolve()
        write_broker_files(
            [cfg], Secrets.load(str(secrets_path(var))), auth, "the demo's configuration"
        )
        broker = mosquitto(mq_port, (var / "mosquitto").resolve(), mq_host, auth_dir=auth)
        started.append(broker.start())
    influx_host = svc.influxdb.url.split("//", 1)[1].split(":", 1)[0]
    if not port_open(influx_host, svc.influxdb.port):
        started.append(
            influxd(svc.influxdb.port, (var / "influxdb").resolve(), influx_host, auth=True).start()
        )
    try:
        influx_setup(svc, timeout_s=30)  # foursave influx-setup: database and users
    except (InfluxSetupError, InfluxUnavailable) as exc:
        print(f"foursave demo: InfluxDB {svc.influxdb.url}: {exc}", file=sys.stderr)
        for s in reversed(started):
            s.stop()
        return 1

    # one simulated clock for every process (matters when simulated time runs fast)
    os.environ.setdefault("FOURSAVE_SIM_ANCHOR", datetime.now(UTC).isoformat())
    sim_svc = svc.simulator.model_copy(update={"anchor": os.environ["FOURSAVE_SIM_ANCHOR"]})
    now = simulated_clock(sim_svc).time()
    influx = app.influx(cfg, "reader", timeout_s=30)
    gaps = []
    if history:
        from foursave.simulators.history import find_gaps, history_window

        gaps = find_gaps(influx, cfg, *history_window(cfg, now))
    added = _seed_records(cfg, now) if history else 0
    keys = _demo_keys(cfg)
    procs: dict[str, subprocess.Popen] = {}
    for name in ("sim", "ingest", "collect", "api"):
        procs[name] = _spawn(name, [name, "--config", config_path], var)
    stop = threading.Event()
    filler = History(cfg, config_path, var, gaps, procs, stop, history_step_s)

    print("foursave demo is running (Ctrl-C stops everything)\n")
    print(
        f"  MQTT broker   {svc.mqtt.url}"
        + (
            "  (started here)"
            if any(s.name == "mosquitto" for s in started)
            else "  (already running)"
        )
    )
    print(
        f"  InfluxDB      {svc.influxdb.url}  database '{svc.influxdb.database}'"
        + (
            "  (started here)"
            if any(s.name == "influxd" for s in started)
            else "  (already running)"
        )
    )
    users = ", ".join(svc.influx_user(r) for r in INFLUX_ROLES)
    print(f"{'':16}users {users} (passwords in {os.environ[SECRETS_FILE_ENV]})")
    for d in cfg.devices:
        if d.simulate:
            print(
                f"  simulator     {d.id:<12} {d.kind:<9} modbus {d.transport} {d.host}:{d.port} unit {d.unit_id} ({d.profile})"
            )
    if svc.simulator.control_port:
        host, port = svc.simulator.control_host, svc.simulator.control_port
        print(f"  faults        http://{host}:{port}/devices  (README: Faults on demand)")
    api = f"http://{svc.api.host}:{svc.api.port}"
    print(f"  display       {api}/display   (public lobby screen, no login)")
    print(f"  API           {api}/docs      (OpenAPI at {api}/openapi.json)")
    for role, key in keys.items():
        print(f"  {role + ' key':<13} {key}")
    last_year = filler.last_year = _earliest_today(cfg, now).year - 1
    me = sys.argv[0] if Path(sys.argv[0]).name == "foursave" else "foursave"
    # the commands log in to InfluxDB as the reader: its password is in the demo's secrets
    me = f"{SECRETS_FILE_ENV}={os.environ[SECRETS_FILE_ENV]} {me}"
    print(
        f"  report        {me} report --config {config_path} --year {last_year} "
        "--format pdf --lang zh-TW"
    )
    print(
        f"                curl -H 'X-API-Key: <auditor key>' '{api}/api/v1/reports/{last_year}?format=pdf&lang=en' -o report.pdf"
    )
    billed = [st for st in cfg.sites if st.tariff is not None]
    if billed:
        site = billed[0].id
        print(
            f"  bill          {me} bill --config {config_path} --site {site} "
            f"--month {last_year}-07 --lang zh-TW"
        )
        print(f"  contract      {me} contract --config {config_path} --site {site} --months 12")
    print(
        f"  grafana       FOURSAVE_GRAFANA_PASSWORD=... {me} dashboards push --config {config_path} "
        "--url http://127.0.0.1:3000 --user admin"
    )
    if history:
        print(
            f"  records       {added} sample manual record(s) added (entered by 'sample data (foursave demo)')"
        )
    print("  alerts        mqtt topic foursave/v1/+/alert/#; foursave alerts list")
    print(f"  logs          {var}/{{sim,collect,ingest,rules,api}}.log")
    print(
        f"  try           mosquitto_sub -p {mq_port} -u reader -P <mqtt.reader in "
        f"{secrets_path(var)}> -t 'foursave/v1/#' -v"
    )
    latest = select(ALL, "inverter", newest_first=True, limit=3)
    print(
        f"                influx -port {svc.influxdb.port} -username {svc.influx_user('reader')} "
        f"-password '' -database {svc.influxdb.database} -execute '{latest}'\n"
    )

    app.on_stop_signal(stop.set)
    filler.start()
    rc = 0
    try:
        reported = False
        live_from_ms = int(now * 1000)
        while not stop.wait(2.0):
            dead = [n for n, p in list(procs.items()) if p.poll() is not None]
            if dead:
                print(
                    f"\n{', '.join(dead)} stopped unexpectedly; see {var}/<name>.log",
                    file=sys.stderr,
                )
                rc = 1
                break
            if not filler.done.is_set():
                continue  # the history's progress bar has the screen
            if not reported:
                reported = True
                if filler.error:
                    print(f"\n  history failed: {filler.error}", file=sys.stderr)
                    rc = 1
                    break
                # the continuous engine, now that the past is in: from the main thread,
                # so that it dies with the demo
                procs["rules"] = _spawn("rules", ["rules", "--config", config_path], var)
                print(f"  {filler.summary}")
            try:
                counts = _counts(influx, live_from_ms)
            except InfluxUnavailable:
                counts = {}
            line = "  live points stored: " + "  ".join(f"{k} {v}" for k, v in counts.items())
            print(f"\r{line:<100}", end="", flush=True)
    finally:
        print("\nstopping ...")
        stop.set()
        filler.join(60)
        for name in ("api", "rules", "collect", "ingest", "sim"):  # collector before ingester
            p = procs.get(name)
            if p is None:
                continue
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(20)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        for s in reversed(started):
            s.stop()
        influx.close()
        print("stopped.")
    return rc

"""The ``foursave`` command line: parses arguments, calls ``foursave.app`` to assemble
each service, and reports errors in words (``docs/design.md``, "Command line")."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from pathlib import Path

from foursave import app
from foursave.app import load_config
from foursave.collector.spool import lasts_s, readings_per_s
from foursave.core.config import DEFAULT_CONFIG, Config, ConfigError

log = logging.getLogger("foursave")


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if not verbose:
        for noisy in ("pymodbus", "httpx", "httpcore"):
            logging.getLogger(noisy).setLevel(logging.CRITICAL)


def _load(path: str, images: bool = False) -> Config:
    try:
        return load_config(path, images=images)
    except ConfigError as exc:
        print(f"foursave: configuration {path} has {len(exc.issues)} problem(s):", file=sys.stderr)
        for issue in exc.issues:
            print(f"  {issue}", file=sys.stderr)
        raise SystemExit(2) from None


async def _run_until_signal(main) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await main(stop)


def cmd_check_config(args) -> int:
    if args.file and args.config and args.file != args.config:
        print(
            f"foursave check-config: two files given ({args.file}, --config {args.config}); "
            "name one",
            file=sys.stderr,
        )
        return 2
    path = args.config or args.file or DEFAULT_CONFIG
    try:
        cfg = load_config(path, images=True)
    except ConfigError as exc:
        print(f"{path}: {len(exc.issues)} problem(s)")
        for issue in exc.issues:
            print(f"  {issue}")
        return 2
    sims = sum(1 for d in cfg.devices if d.simulate)
    print(
        f"{path}: OK — {len(cfg.sites)} site(s), {len(cfg.devices)} device(s) "
        f"({sims} simulated); MQTT {cfg.services.mqtt.url}, InfluxDB "
        f"{cfg.services.influxdb.url}/{cfg.services.influxdb.database}"
    )
    for line in _retention_lines(cfg):
        print(line)
    ids = cfg.collector_ids()
    if len(ids) > 1:
        print(f"{len(ids)} collectors (`foursave collect --collector ID` runs one):")
    for cid in ids:
        print(_collector_line(cfg, cid, len(ids) > 1))
        if args.verbose:
            for d in cfg.collector_devices(cid):
                print(f"    {d.id} (site {d.site}): {cfg.collector_reason(d.id)}")
    if len(ids) == 1:
        col = cfg.services.collector
        intervals = [d.interval_s for d in cfg.devices]
        held = lasts_s(col.spool_max_readings, intervals)
        if held is not None:
            print(
                f"collector spool: {col.spool_max_readings:,} readings hold "
                f"{_duration(held)} of this config's {readings_per_s(intervals):,.1f} "
                "readings/s while nothing is confirmed; then the oldest go first"
            )
    return 0


def _collector_line(cfg: Config, cid: str, several: bool) -> str:
    """What collector ``cid`` polls (and, of several, its spool and how long it lasts)."""
    devices = cfg.collector_devices(cid)
    sites = list(dict.fromkeys(d.site for d in devices))
    named = ", ".join(sites[:5]) + (f" and {len(sites) - 5} more" if len(sites) > 5 else "")
    line = f"collector {cid}: {len(devices)} device(s) at {len(sites)} site(s)"
    line += f" ({named})" if sites else ""
    if not several:
        return line
    col = cfg.collector_settings(cid)
    line = f"  {line}; spool {col.spool_path}"
    intervals = [d.interval_s for d in devices]
    held = lasts_s(col.spool_max_readings, intervals)
    if held is not None:
        line += f" holds {_duration(held)} of its {readings_per_s(intervals):,.1f} readings/s"
    return line


def _retention_lines(cfg) -> list[str]:
    """What ``services.influxdb.retention`` keeps, and what no longer works for older
    data (README "Retention")."""
    from foursave.rules.contract import months_within

    days = cfg.services.influxdb.retention.raw_days
    if days is None:
        return ["retention: every reading kept for ever (services.influxdb.retention.raw_days)"]
    months = months_within(days)
    return [
        f"retention: raw readings kept {days} days (policy raw), hourly and daily rollups "
        "for ever (rollup_1h, rollup_1d; the rules engine computes them); the rules "
        "engine's results, alert history and the counter rollup for ever, as before",
        f"  older than {days} days: `rules --once --rebuild` rebuilds the counter rollup only "
        "for days with readings and keeps the older days' rows; `foursave contract` "
        f"reads 15-minute readings: at most {months} billing months (--months); a report "
        "of a period that ended before then is served as issued, and a rebuild of it lacks "
        "the PV value (computed from the 15-minute readings)",
    ]


def _duration(s: float) -> str:
    """1 d 4 h, 3 h 20 min, 42 min: the two largest units."""
    d, rest = divmod(int(s), 86_400)
    h, rest = divmod(rest, 3_600)
    m = rest // 60
    if d:
        return f"{d} d {h} h"
    return f"{h} h {m} min" if h else f"{m} min"


def cmd_sim(args) -> int:
    from foursave.simulators.image import ImageError

    cfg = _load(args.config, images=True)
    only = set(args.device) if args.device else None
    try:
        sim = app.simulator(cfg, only=only)
    except ImageError as exc:  # the dump changed since the configuration was checked
        print(f"foursave sim: {exc}", file=sys.stderr)
        return 2
    if not sim.devices:
        print("no device with a 'simulate' section in the configuration", file=sys.stderr)
        return 2
    for sd in sim.devices.values():
        d = sd.device
        replay = f"  replays {d.simulate.image}" if d.simulate and d.simulate.image else ""
        print(f"sim {d.id:<14} {d.kind:<9} {d.profile:<22} {d.transport} {d.host}:{d.port}{replay}")
    asyncio.run(_run_until_signal(sim.run))
    return 0


def cmd_capture(args) -> int:
    from datetime import UTC, datetime

    import foursave
    from foursave.collector.capture import (
        CaptureError,
        capture,
        describe,
        dump_document,
        target,
        write_dump,
    )
    from foursave.core.config import SerialLine

    try:
        serial = None
        if args.serial:
            serial = SerialLine(
                port=args.serial,
                baudrate=args.baudrate,
                parity=args.parity,
                stopbits=args.stopbits,
                bytesize=args.bytesize,
            )
        device = target(
            host=args.host,
            port=args.port,
            unit_id=args.unit,
            profile=args.profile,
            serial=serial,
            rtu_over_tcp=args.rtu_over_tcp,
            timeout_s=args.timeout_s,
        )
        captured = asyncio.run(capture(device, profile=args.profile, base=args.base))
    except CaptureError as exc:
        print(f"foursave capture: {exc}", file=sys.stderr)
        return 1
    doc = dump_document(
        captured,
        device,
        profile=args.profile,
        at=datetime.now(UTC),
        version=foursave.__version__,
        dump_id=args.id,
        title=args.title,
    )
    try:
        write_dump(doc, args.out)
    except OSError as exc:
        print(f"foursave capture: cannot write {args.out}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    for w in captured.warnings:
        print(f"foursave capture: warning: {w}", file=sys.stderr)
    n = sum(len(b["registers"]) for b in doc["blocks"])
    what = (
        f"models {[m.model_id for m in captured.models]} at base {captured.base}"
        if args.profile == "sunspec"
        else f"profile {args.profile}"
    )
    print(
        f"{args.out}: {n} registers in {len(doc['blocks'])} block(s), {captured.refused} "
        f"refused (null); {what}; {captured.requests} read requests to "
        f"{describe(device)} unit {device.unit_id}"
    )
    return 0


def _unit_id(text: str) -> int:
    try:
        unit = int(text, 0)
    except ValueError:
        unit = -1
    if not 0 <= unit <= 255:
        raise argparse.ArgumentTypeError(f"a unit id is 0..255 (RTU: 1..247), got {text!r}")
    return unit


def _address(text: str) -> int:
    try:
        address = int(text, 0)
    except ValueError:
        address = -1
    if not 0 <= address <= 65534:
        raise argparse.ArgumentTypeError(f"a register address is 0..65535, got {text!r}")
    return address


def cmd_collect(args) -> int:
    from foursave.core.config import UnknownCollector
    from foursave.core.store import InstanceBusy

    cfg = _load(args.config)
    try:
        cid = cfg.pick_collector(args.collector)
    except UnknownCollector as exc:
        print(f"foursave collect: {exc}", file=sys.stderr)
        return 2
    devices = cfg.collector_devices(cid)
    if args.device:
        for name in args.device:
            if all(d.id != name for d in devices):
                known = any(d.id == name for d in cfg.devices)
                whose = f"collector {cfg.collector_of(name)}'s" if known else "not in the file"
                print(
                    f"foursave collect: device {name!r} is {whose}, not collector {cid}'s",
                    file=sys.stderr,
                )
                return 2
        devices = [d for d in devices if d.id in args.device]
    collector = app.collector(cfg, devices=devices, collector_id=cid)
    try:
        asyncio.run(_run_until_signal(collector.run))
    except InstanceBusy as exc:
        print(f"foursave collect: {exc}", file=sys.stderr)
        return 2
    return 0


def cmd_ingest(args) -> int:
    from foursave.collector.ingest import UnknownIngester
    from foursave.core.store import InstanceBusy

    cfg = _load(args.config)
    try:
        ing = app.ingester(cfg, instance=args.ingester)
    except (InstanceBusy, UnknownIngester) as exc:
        print(f"foursave ingest: {args.config}: {exc}", file=sys.stderr)
        return 2
    if args.leave:
        try:
            ing.leave()
        except ConnectionError as exc:
            print(f"foursave ingest --leave: {exc}", file=sys.stderr)
            return 1
        finally:
            ing.influx.close()
        print(f"ingester {ing.cfg.id}: broker session {ing.cfg.client_id} ended")
        return 0
    app.on_stop_signal(ing.stop)
    try:
        ing.run()
    finally:
        ing.influx.close()
    return 0


def cmd_broker_config(args) -> int:
    from foursave.brokerconf import (
        BrokerConfigError,
        bridge_account,
        bridged_grants,
        bridges,
        generate_missing,
        merged_grants,
        write_broker_files,
    )
    from foursave.core.secrets import SECRETS_FILE_ENV, Secrets, SecretsError

    configs = [_load(path) for path in args.config or [DEFAULT_CONFIG]]
    bridged = {path: _load(path) for path in args.bridged or []}
    source = ", ".join(args.config or [DEFAULT_CONFIG])
    secrets_path = os.environ.get(SECRETS_FILE_ENV) or configs[0].services.secrets_file
    try:
        if args.generate_missing:
            if not secrets_path:
                print(
                    "foursave broker-config: --generate-missing writes into the secrets file: "
                    f"name it ({SECRETS_FILE_ENV} or services.secrets_file)",
                    file=sys.stderr,
                )
                return 2
            accounts = [*merged_grants(configs), *bridged_grants(bridged)]
            accounts += [bridge_account(n) for n in bridges((source, c) for c in configs)]
            new = generate_missing(Path(secrets_path), accounts)
            if new:
                print(f"{secrets_path}: random passwords for {', '.join(new)}")
        secrets = Secrets.load(secrets_path)
        written = write_broker_files(configs, secrets, Path(args.out), source, bridged=bridged)
    except (BrokerConfigError, SecretsError) as exc:
        print(f"foursave broker-config: {exc}", file=sys.stderr)
        return 2
    print(
        f"{written.passwd}, {written.acl}: {len(written.accounts)} accounts "
        f"({', '.join(written.accounts)}); mosquitto.conf: include_dir or copy {written.conf}"
    )
    if written.bridge is not None:
        print(
            f"{written.bridge}: the bridge to the central broker (include it too; mosquitto "
            "reads bridges at start only: restart it). The central broker's files need this "
            "configuration as --bridged, and the same password for its bridge account"
        )
    return 0


def cmd_demo(args) -> int:
    from foursave.demo import run_demo

    cfg = _load(args.config)
    if args.history_step_s <= 0 or args.history_step_s % 60:
        print("foursave demo: --history-step-s must be a whole number of minutes", file=sys.stderr)
        return 2
    return run_demo(
        cfg,
        args.config,
        Path(args.var),
        history=not args.no_history,
        history_step_s=args.history_step_s,
    )


def _date(text: str):
    from datetime import date

    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a date like 2025-01-31, got {text!r}") from None


def cmd_backfill(args) -> int:
    from tqdm import tqdm

    from foursave.core.influx import InfluxUnavailable
    from foursave.simulators.backfill import run_backfill

    cfg = _load(args.config)
    if args.to <= args.start:
        print(
            f"foursave backfill: --to ({args.to}) must be after --from ({args.start})",
            file=sys.stderr,
        )
        return 2
    if not any(d.simulate and d.simulate.image is None for d in cfg.devices):
        print(
            "foursave backfill: no device with a 'simulate' model (a replayed image has "
            "no history)",
            file=sys.stderr,
        )
        return 2
    bar = tqdm(total=(args.to - args.start).days, unit="day", disable=args.quiet)

    def progress(done: int, total: int, lines: int) -> None:
        bar.update(done - bar.n)
        bar.set_postfix_str(f"{lines:,} lines")

    try:
        result = run_backfill(
            cfg, args.start, args.to, step_s=args.step_s, writers=args.writers, progress=progress
        )
    except InfluxUnavailable as exc:
        print(f"\nfoursave backfill: InfluxDB unavailable: {exc}", file=sys.stderr)
        return 1
    finally:
        bar.close()
    print(
        f"backfilled {result.days} days, {result.lines:,} points in {result.seconds:.1f} s "
        f"({result.lines_per_s:,.0f} points/s) into {cfg.services.influxdb.url}/"
        f"{cfg.services.influxdb.database}, tagged source=backfill"
    )
    return 0


def _alerts_once(cfg, partition) -> int:
    influx = app.influx(cfg, "writer")
    try:
        watch = app.alerts(cfg, influx, app.clock(cfg, "rules"), partition)
    except ValueError as exc:
        print(f"foursave rules: {exc}", file=sys.stderr)
        influx.close()
        return 2
    try:
        events = watch.engine.evaluate()
        print(f"alerts: {len(events)} event(s); {len(watch.engine.store.all('firing'))} firing")
    finally:
        watch.close()
        influx.close()
    return 0


def cmd_rules(args) -> int:
    import threading

    from foursave.core.influx import InfluxUnavailable
    from foursave.rules.claim import ClaimRefused
    from foursave.rules.engine import run_once
    from foursave.rules.partition import PartitionError
    from foursave.rules.records import RecordStore

    cfg = _load(args.config)
    try:
        part = _partition(args, cfg)
    except PartitionError as exc:
        print(f"foursave rules: {exc}", file=sys.stderr)
        return 2
    if args.list or part is None:
        return 0
    own = part.restrict(cfg)
    if args.once:
        influx = app.influx(cfg, "writer")
        clock = app.clock(cfg, "rules")
        records = RecordStore(cfg.services.rules.records_path)
        try:
            if args.rebuild:
                from foursave.rules.rollup import ROLLUP, rebuild_rollup

                gen = rebuild_rollup(influx, own, args.start, args.to, clock=clock)
                print(
                    f"rebuilt the {ROLLUP} rollup from the readings (generation {gen}; "
                    "earlier generations are no longer read)"
                )
            rows = run_once(own, influx, records, args.start, args.to, clock)
        except InfluxUnavailable as exc:
            print(f"foursave rules: InfluxDB unavailable: {exc}", file=sys.stderr)
            return 1
        finally:
            records.close()
            influx.close()
        print(
            f"ledger: {len(rows)} rows written to {cfg.services.influxdb.url}/"
            f"{cfg.services.influxdb.database} (measurement 'ledger')"
        )
        return 0 if args.no_alerts else _alerts_once(cfg, part)
    stop = threading.Event()
    app.on_stop_signal(stop.set)
    try:
        app.run_rules(cfg, stop, part)
    except ClaimRefused as exc:
        print(f"foursave rules: {exc}", file=sys.stderr)
        return 1
    return 0


def _partition(args, cfg):
    """The partition ``--shard i/n`` or ``--sites a,b`` asks for (every site without
    either), printing each shard's sites with ``--list``."""
    from foursave.rules import partition as rp

    if args.shard and args.sites:
        raise rp.PartitionError("give --shard or --sites, not both")
    if args.shard:
        i, n = rp.parse_shard(args.shard)
        if args.list:  # every shard, this one marked (an empty one is no error here)
            print("\n".join(rp.listing(cfg, n, i)))
            return None
        return rp.shard(cfg, i, n)
    part = (
        rp.sites_partition(cfg, args.sites.split(","), args.config) if args.sites else rp.whole(cfg)
    )
    if args.list:
        print(part.describe())
    return part


def cmd_alerts(args) -> int:
    from datetime import UTC, datetime

    from foursave.rules.alerts import IncidentStore, acknowledge_incident

    cfg = _load(args.config)
    store = IncidentStore(cfg.services.rules.state_path)
    try:
        if args.action == "ack":
            if args.incident is None:
                print("foursave alerts ack: give the incident id", file=sys.stderr)
                return 2
            # no InfluxDB user at all: the rules engine writes the acknowledgement to
            # alert history on its next pass
            try:
                done = acknowledge_incident(
                    store,
                    None,
                    args.incident,
                    args.by,
                    args.comment or "",
                    app.clock(cfg, "rules").time(),
                )
            except (LookupError, ValueError) as exc:
                print(f"foursave alerts ack: {exc}", file=sys.stderr)
                return 2
            print(
                f"incident {done.incident.id} acknowledged by {done.incident.acked_by} "
                "(into alert history on the rules engine's next pass)"
            )
            return 0
        for i in store.all(None if args.all else "firing"):
            when = datetime.fromtimestamp(i.fired_at or i.pending_since, UTC).isoformat(
                timespec="seconds"
            )
            ack = f"  ack {i.acked_by}: {i.ack_comment}" if i.acked_by else ""
            detail = f"  {i.detail}" if i.detail else ""
            print(
                f"{i.id:>5} {i.state:<9} {i.rule_id:<22} {i.site}/{i.device:<14} since {when}"
                f"{detail}{ack}"
            )
    finally:
        store.close()
    return 0


def cmd_records(args) -> int:
    from pydantic import ValidationError

    from foursave.rules.records import RecordError, RecordIn, RecordStore, import_csv

    cfg = _load(args.config)
    store = RecordStore(cfg.services.rules.records_path)
    try:
        if args.action == "import":
            result = import_csv(store, args.file, args.by)
            if result.errors:
                print(
                    f"{args.file}: {len(result.errors)} problem(s); nothing imported:",
                    file=sys.stderr,
                )
                for e in result.errors:
                    print(f"  {e}", file=sys.stderr)
                return 2
            print(f"imported {len(result.added)} record(s) from {args.file}")
        elif args.action == "add":
            try:
                rid = store.add(
                    RecordIn(
                        site=args.site,
                        period=args.period,
                        kind=args.kind,
                        value=args.value,
                        entered_by=args.by,
                        evidence=args.evidence,
                        supersedes=args.supersedes,
                    )
                )
            except (ValidationError, RecordError, ValueError) as exc:
                print(f"foursave records add: {exc}", file=sys.stderr)
                return 2
            print(f"record {rid} stored")
        else:
            for r in store.history(args.site):
                print(
                    f"{r.id:>5} {r.site:<10} {r.period} {r.kind:<26} {r.value:>12g}  "
                    f"by {r.entered_by} at {r.entered_at}"
                    + (f"  corrects {r.supersedes}" if r.supersedes else "")
                    + (f"  [{r.evidence}]" if r.evidence else "")
                )
    finally:
        store.close()
    return 0


def _reader_login(cfg: Config) -> tuple[str, str] | None:
    """Grafana queries InfluxDB as the reader: its user and password, if it has one."""
    from foursave.core.secrets import Secrets

    user = cfg.services.influx_user("reader")
    password = Secrets.load(cfg.services.secrets_file).password("influxdb", user)
    return (user, password) if password else None


def cmd_dashboards(args) -> int:
    if args.action == "build":
        from foursave.dashboards.build import write_all

        for p in write_all():
            print(f"wrote {p}")
        return 0
    from grafana_client.client import GrafanaClientError

    from foursave.dashboards.build import dashboard_timezone
    from foursave.dashboards.push import push

    cfg = _load(args.config)
    token = os.environ.get("FOURSAVE_GRAFANA_TOKEN")
    credential: str | tuple[str, str]  # an API token, or a user and password
    if token:
        credential = token
    elif args.user:
        credential = (args.user, os.environ.get("FOURSAVE_GRAFANA_PASSWORD", ""))
    else:
        print(
            "foursave dashboards push: set FOURSAVE_GRAFANA_TOKEN, or --user with "
            "FOURSAVE_GRAFANA_PASSWORD",
            file=sys.stderr,
        )
        return 2
    try:
        for line in push(
            args.url,
            credential,
            args.influx_url or cfg.services.influxdb.url,
            cfg.services.influxdb.database,
            dashboard_timezone(cfg),
            _reader_login(cfg),
            retention=cfg.services.influxdb.retention.enabled,
        ):
            print(line)
    except (GrafanaClientError, OSError) as exc:
        print(f"foursave dashboards push: {args.url}: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_api(args) -> int:
    from foursave.api.keys import KeyRequestError
    from foursave.api.main import serve

    cfg = _load(args.config)
    host = args.host or cfg.services.api.host
    port = args.port or cfg.services.api.port
    app.influx(cfg, "reader").close()  # a secrets or CA file to fix is said before serving
    try:
        serve(cfg, app.api_app(cfg), host, port)
    except KeyRequestError as exc:
        print(f"foursave api: {cfg.services.api.bootstrap_key_env}: {exc}", file=sys.stderr)
        return 2
    return 0


def cmd_keys(args) -> int:
    from datetime import UTC, datetime

    from foursave.api.keys import BOOTSTRAP_ID, KeyRequestError, KeyStore

    cfg = _load(args.config)
    env = cfg.services.api.bootstrap_key_env
    try:
        # the bootstrap key as the API sees it: listed, and revocable by its id
        store = KeyStore(cfg.services.api.keys_path, os.environ.get(env))
    except KeyRequestError as exc:
        print(f"foursave keys: {env}: {exc}", file=sys.stderr)
        return 2
    try:
        if args.action == "create":
            if not args.role or not args.name:
                print("foursave keys create: give --role and --name", file=sys.stderr)
                return 2
            try:
                expires = datetime.fromisoformat(args.expires) if args.expires else None
            except ValueError:
                print(
                    f"foursave keys create: --expires {args.expires!r}: expected an ISO "
                    "date-time with its offset, e.g. 2026-12-31T23:59:59+08:00",
                    file=sys.stderr,
                )
                return 2
            try:
                info, key = store.create(args.name, args.role, args.by, expires)
            except KeyRequestError as exc:
                print(f"foursave keys create: {exc}", file=sys.stderr)
                return 2
            print(key)
            until = f", expires {info.expires_at}" if info.expires_at else ""
            print(
                f"(key {info.id} for {info.name!r}, role {info.role}{until}: "
                "shown once, stored hashed)",
                file=sys.stderr,
            )
        elif args.action == "revoke":
            revoked = store.revoke(args.id or "", by=args.by)
            if revoked is None:
                why = (
                    f"set {env} to the bootstrap key to revoke it"
                    if args.id == BOOTSTRAP_ID
                    else f"no key {args.id!r}"
                )
                print(f"foursave keys revoke: {why}", file=sys.stderr)
                return 2
            print(f"key {revoked.id} revoked at {revoked.revoked_at}")
        else:
            now = datetime.now(UTC)
            for k in store.all():
                if k.revoked_at:
                    state = f"revoked {k.revoked_at}"
                elif k.expires_at:
                    gone = datetime.fromisoformat(k.expires_at) <= now
                    state = f"{'expired' if gone else 'active, expires'} {k.expires_at}"
                else:
                    state = "active"
                print(
                    f"{k.id}  {k.role:<8} {k.name:<24} by {k.created_by} at {k.created_at}  {state}"
                )
    finally:
        store.close()
    return 0


def cmd_report(args) -> int:
    from datetime import datetime

    from foursave.core.influx import InfluxRejected, InfluxUnavailable
    from foursave.reports.build import ReportUnchanged
    from foursave.reports.cache import report_file

    cfg = _load(args.config)
    if args.month is not None and not 1 <= args.month <= 12:
        print(f"foursave report: --month {args.month} is not 1..12", file=sys.stderr)
        return 2
    try:
        with app.stores(cfg) as (influx, records, store):
            now = datetime.fromtimestamp(app.clock(cfg, "api").time()).astimezone()
            # from the report store while a frozen revision's inputs are unchanged
            data = report_file(
                cfg,
                influx,
                records,
                store,
                args.year,
                args.month,
                now,
                args.format,
                args.lang,
                recompute_reason=args.recompute,
                by=args.by,
            )
            body, filename = data.body, data.filename
    except (ReportUnchanged, ValueError) as exc:
        print(f"foursave report: {exc}", file=sys.stderr)
        return 2
    except (InfluxUnavailable, InfluxRejected) as exc:
        print(f"foursave report: InfluxDB {cfg.services.influxdb.url}: {exc}", file=sys.stderr)
        return 1
    out = Path(args.out or filename)
    out.write_bytes(body)
    state = (
        f"revision {data.revision} (frozen)" if data.closed else "period still open (provisional)"
    )
    print(f"{out}: {data.period}, {state}, fingerprint {data.fingerprint[:12]}")
    if data.later_data_note:
        print(f"note: {data.later_data_note}", file=sys.stderr)
    return 0


def cmd_bill(args) -> int:
    from foursave.core.influx import InfluxRejected, InfluxUnavailable
    from foursave.rules.bill import (
        BillingPeriodError,
        NoMeterData,
        bill_text,
        billing_periods,
        site_bill,
    )
    from foursave.rules.realbill import bill_checks
    from foursave.rules.tariff import NoTariff

    cfg = _load(args.config)
    site = next((s for s in cfg.sites if s.id == args.site), None)
    if site is None:
        print(
            f"foursave bill: unknown site {args.site!r}; sites: {[s.id for s in cfg.sites]}",
            file=sys.stderr,
        )
        return 2
    y, m = args.month
    now_ms = int(app.clock(cfg, "rules").time() * 1000)
    try:
        with app.stores(cfg) as (influx, records, _):
            texts = [
                bill_text(
                    site_bill(
                        cfg, influx, site, start, end, records, plan=args.plan, now_ms=now_ms
                    ),
                    args.lang,
                    site.name if args.lang == "zh-TW" else site.name_en or site.name,
                )
                for start, end in billing_periods(site, y, m, records)
            ]
            # the recorded Taipower bill, if any, against the rebuilt one
            texts += [c.detail for c in bill_checks(cfg, influx, site, y, m, records)]
    except (NoTariff, NoMeterData, BillingPeriodError) as exc:
        print(f"foursave bill: {exc}", file=sys.stderr)
        return 2
    except (InfluxUnavailable, InfluxRejected) as exc:
        print(f"foursave bill: InfluxDB {cfg.services.influxdb.url}: {exc}", file=sys.stderr)
        return 1
    if not texts:
        print(
            f"foursave bill: {site.id} {y}-{m:02d}: no billing period: its meter-reading date "
            "is recorded (electricity_bill_read_on) but not the previous month's",
            file=sys.stderr,
        )
        return 2
    print("\n\n".join(texts))
    return 0


def cmd_contract(args) -> int:
    from datetime import datetime

    from foursave.core.influx import InfluxRejected, InfluxUnavailable
    from foursave.core.periods import zone
    from foursave.rules.bill import NoMeterData
    from foursave.rules.contract import TooFewMonths, advice_text, advise, last_complete_month
    from foursave.rules.tariff import NoTariff

    cfg = _load(args.config)
    site = next((s for s in cfg.sites if s.id == args.site), None)
    if site is None:
        print(
            f"foursave contract: unknown site {args.site!r}; sites: {[s.id for s in cfg.sites]}",
            file=sys.stderr,
        )
        return 2
    if not 0 <= args.margin_pct <= 100:
        print(f"foursave contract: --margin-pct {args.margin_pct:g} is not 0..100", file=sys.stderr)
        return 2
    end = args.until
    if end is None:
        now = datetime.fromtimestamp(app.clock(cfg, "api").time(), zone(site.timezone))
        end = last_complete_month(now.date())
    try:
        with app.stores(cfg) as (influx, records, _):
            advice = advise(cfg, influx, site, end, args.months, args.margin_pct, records)
    except (NoTariff, NoMeterData, TooFewMonths) as exc:
        print(f"foursave contract: {exc}", file=sys.stderr)
        return 2
    except (InfluxUnavailable, InfluxRejected) as exc:
        print(f"foursave contract: InfluxDB {cfg.services.influxdb.url}: {exc}", file=sys.stderr)
        return 1
    print(advice_text(advice, args.lang))
    return 0


def _month(text: str) -> tuple[int, int]:
    from datetime import datetime

    try:
        if len(text) != 7:
            raise ValueError
        t = datetime.strptime(text, "%Y-%m")
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a month like 2025-07, got {text!r}") from None
    return t.year, t.month


def cmd_influx_setup(args) -> int:
    from foursave.core.influx import InfluxUnavailable
    from foursave.core.influxadmin import InfluxSetupError, setup

    cfg = _load(args.config)
    try:
        for line in setup(cfg.services):
            print(line)
    except InfluxSetupError as exc:
        print(f"foursave influx-setup: {exc}", file=sys.stderr)
        return 2
    except InfluxUnavailable as exc:
        print(f"foursave influx-setup: InfluxDB unavailable: {exc}", file=sys.stderr)
        return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="foursave", description=__doc__)
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)

    def add(name: str, func, help_: str, config: bool = True):
        sp = sub.add_parser(name, help=help_)
        if config:
            sp.add_argument("--config", default=DEFAULT_CONFIG, help="configuration YAML file")
        sp.set_defaults(func=func)
        return sp

    sp = add("check-config", cmd_check_config, "validate a configuration file", config=False)
    # --config like every other subcommand; the positional form stays for existing scripts
    sp.add_argument("--config", help=f"configuration YAML file (default {DEFAULT_CONFIG})")
    sp.add_argument("file", nargs="?", help="the same, given without --config")
    sp.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=argparse.SUPPRESS,  # foursave -v check-config says the same
        help="also each device's collector, and where the file gives it",
    )
    sp = add("sim", cmd_sim, "serve the simulated devices over Modbus")
    sp.add_argument("--device", action="append", help="only this device (repeatable)")
    sp = add(
        "capture",
        cmd_capture,
        "read a device's registers (read requests only) into a register dump for a bug "
        "report; 'simulate: {image: FILE}' serves it back",
        config=False,
    )
    sp.add_argument("--host", help="Modbus TCP: the device's or gateway's address")
    sp.add_argument("--port", type=int, default=502, help="Modbus TCP port (502)")
    sp.add_argument("--unit", type=_unit_id, required=True, help="unit id (slave id)")
    sp.add_argument("--serial", metavar="PORT", help="Modbus RTU: serial device, e.g. /dev/ttyUSB0")
    sp.add_argument("--baudrate", type=int, default=9600, help="--serial: baud rate (9600)")
    sp.add_argument("--parity", choices=["N", "E", "O"], default="N", help="--serial: parity (N)")
    sp.add_argument("--stopbits", type=int, choices=[1, 2], default=1, help="--serial: (1)")
    sp.add_argument("--bytesize", type=int, choices=[7, 8], default=8, help="--serial: (8)")
    sp.add_argument(
        "--rtu-over-tcp", action="store_true", help="RTU frames over TCP (serial gateways)"
    )
    sp.add_argument(
        "--profile",
        default="sunspec",
        help="'sunspec' (default: the model chain) or a register-map profile name "
        "(collector/profiles/): its points' registers",
    )
    sp.add_argument(
        "--base", type=_address, help="SunSpec base address (default: look at 40000, 0, 50000)"
    )
    sp.add_argument(
        "--timeout-s", type=float, default=2.0, help="seconds to wait for each answer (2)"
    )
    sp.add_argument(
        "--id", help="the dump's id (default: from the device's manufacturer and model)"
    )
    sp.add_argument(
        "--title", help="the dump's title (default: manufacturer, model, serial, firmware)"
    )
    sp.add_argument("--out", required=True, help="the dump file to write (JSON)")
    sp = add("collect", cmd_collect, "poll the devices and publish readings over MQTT")
    sp.add_argument(
        "--collector",
        metavar="ID",
        help="the collector to run, of a configuration with several (check-config lists them)",
    )
    sp.add_argument("--device", action="append", help="only this device (repeatable)")
    sp = add("ingest", cmd_ingest, "write readings from MQTT into InfluxDB")
    sp.add_argument(
        "--ingester",
        metavar="ID",
        help="run ingester ID of the configuration: services.ingester.id (the default) "
        "or one of services.ingester.instances; with services.ingester.shared_group "
        "they share the readings",
    )
    sp.add_argument(
        "--leave",
        action="store_true",
        help="end this ingester's broker session for good (it leaves its shared group) "
        "and exit; the collectors publish again what the broker held for it",
    )
    sp = add("rules", cmd_rules, "alerts, four-saving ledger, demand and PV performance")
    sp.add_argument("--once", action="store_true", help="one pass over the data present, then exit")
    sp.add_argument("--no-alerts", action="store_true", help="--once: derived results only")
    sp.add_argument(
        "--rebuild",
        action="store_true",
        help="--once: rebuild the daily rollup from the readings first (after late data, e.g. a backfill into the past)",
    )
    sp.add_argument("--from", dest="start", type=_date, help="first day (default: first data)")
    sp.add_argument("--to", type=_date, help="day after the last one (default: last data)")
    sp.add_argument(
        "--shard",
        metavar="I/N",
        help="only the sites shard I of N owns (rendezvous hashing of the site ids)",
    )
    sp.add_argument("--sites", metavar="A,B", help="only these sites (ids, comma-separated)")
    sp.add_argument(
        "--list", action="store_true", help="print the partition's sites (every shard's), then exit"
    )
    sp = add("alerts", cmd_alerts, "list or acknowledge alert incidents")
    sp.add_argument("action", choices=["list", "ack"])
    sp.add_argument("incident", nargs="?", type=int)
    sp.add_argument("--by", default=os.environ.get("USER", "unknown"))
    sp.add_argument("--comment")
    sp.add_argument("--all", action="store_true", help="list: also resolved and cancelled")
    sp = add("dashboards", cmd_dashboards, "build the Grafana JSON, or push it to a Grafana")
    sp.add_argument("action", choices=["build", "push"])
    sp.add_argument("--url", default="http://127.0.0.1:3000", help="push: Grafana's address")
    sp.add_argument("--user", help="push: basic-auth user (password: FOURSAVE_GRAFANA_PASSWORD)")
    sp.add_argument("--influx-url", help="push: InfluxDB as Grafana reaches it (default: config)")
    sp = add("records", cmd_records, "manual records: fuel, paper, bills, adjustments")
    sp.add_argument("action", choices=["import", "add", "list"])
    sp.add_argument("file", nargs="?", help="import: CSV file")
    sp.add_argument("--by", default=os.environ.get("USER", "unknown"), help="who enters them")
    sp.add_argument("--site")
    sp.add_argument("--period", help="month, e.g. 2025-07")
    sp.add_argument("--kind")
    sp.add_argument("--value", type=float)
    sp.add_argument("--evidence")
    sp.add_argument("--supersedes", type=int, help="id of the record this one corrects")
    sp = add("backfill", cmd_backfill, "write simulated history straight into InfluxDB")
    sp.add_argument("--from", dest="start", type=_date, required=True, help="first day (local)")
    sp.add_argument("--to", type=_date, required=True, help="day after the last one")
    sp.add_argument("--step-s", type=int, default=60, help="seconds between points (60)")
    sp.add_argument("--writers", type=int, default=2, help="parallel /write requests")
    sp.add_argument("--quiet", action="store_true", help="no progress bar")
    sp = add(
        "broker-config",
        cmd_broker_config,
        "mosquitto password file and ACL: an account per service, allowed only its job",
        config=False,
    )
    sp.add_argument(
        "--config",
        action="append",
        help=f"configuration YAML file (default {DEFAULT_CONFIG}); repeat for several on one broker",
    )
    sp.add_argument(
        "--bridged",
        action="append",
        help="a district's configuration whose broker bridges to this one "
        "(services.mqtt.bridge): its bridge account may forward that district's topics; repeat",
    )
    sp.add_argument(
        "--out", required=True, help="folder for passwd, acl, auth.conf (and bridge.conf)"
    )
    sp.add_argument(
        "--generate-missing",
        action="store_true",
        help="give accounts without a password a random one, written into the secrets file",
    )
    sp = add("demo", cmd_demo, "run everything on this machine with simulated devices")
    sp.add_argument("--var", default="var/demo", help="data directory for the demo services")
    sp.add_argument(
        "--history-step-s",
        type=int,
        default=300,
        help="seconds between history points (300; 60 for full resolution, slower to fill)",
    )
    sp.add_argument(
        "--no-history", action="store_true", help="live only: no history, no sample records"
    )
    sp = add("api", cmd_api, "serve the HTTP API, reports and the /display page")
    sp.add_argument("--host", help="address to listen on (default: services.api.host)")
    sp.add_argument("--port", type=int, help="port (default: services.api.port, 8000)")
    sp = add("keys", cmd_keys, "API keys: create (printed once), list, revoke")
    sp.add_argument("action", choices=["create", "list", "revoke"])
    sp.add_argument(
        "id",
        nargs="?",
        help="revoke: the key id (00000000: the bootstrap key from the environment)",
    )
    sp.add_argument("--role", choices=["viewer", "engineer", "auditor", "admin"])
    sp.add_argument("--name", help="create: who or what uses the key")
    sp.add_argument(
        "--expires",
        help="create: ISO date-time with its offset from which the key is refused "
        "(e.g. 2026-12-31T23:59:59+08:00; default: until revoked)",
    )
    sp.add_argument(
        "--by", default=os.environ.get("USER", "unknown"), help="who creates or revokes it"
    )
    add(
        "influx-setup",
        cmd_influx_setup,
        "InfluxDB 1.x: create the database and the admin, writer and reader users "
        "(passwords from the secrets; idempotent)",
    )
    sp = add("bill", cmd_bill, "the month's Taipower bill rebuilt from the main meters' data")
    sp.add_argument("--site", required=True, help="site id")
    sp.add_argument("--month", type=_month, required=True, help="billing month, e.g. 2025-07")
    sp.add_argument(
        "--plan",
        choices=["two_stage", "three_stage"],
        help="bill under this plan instead of the site's (its contracts carried over)",
    )
    sp.add_argument("--lang", choices=["zh-TW", "en"], default="en")
    sp = add(
        "contract",
        cmd_contract,
        "the contract capacity that would have minimised the last 12 or 24 months' bills",
    )
    sp.add_argument("--site", required=True, help="site id")
    sp.add_argument("--months", type=int, choices=[12, 24], default=12)
    sp.add_argument(
        "--margin-pct",
        type=float,
        default=0.0,
        help="safety margin: the contract is chosen on demand x (1 + margin)",
    )
    sp.add_argument(
        "--until", type=_month, help="last billing month (default: the last complete one)"
    )
    sp.add_argument("--lang", choices=["zh-TW", "en"], default="en")
    sp = add("report", cmd_report, "four-saving report file (monthly or annual)")
    sp.add_argument("--year", type=int, required=True)
    sp.add_argument("--month", type=int, help="1-12; omit for the annual report")
    sp.add_argument("--format", choices=["pdf", "xlsx", "csv"], default="pdf")
    sp.add_argument("--lang", choices=["zh-TW", "en"], default="zh-TW")
    sp.add_argument("--out", help="file to write (default: a name with period and revision)")
    sp.add_argument(
        "--recompute",
        metavar="REASON",
        help="closed period: issue a new revision from the data as it is now, with this reason",
    )
    sp.add_argument("--by", default=os.environ.get("USER", "unknown"), help="who recomputes")
    return p


def main(argv: list[str] | None = None) -> int:
    from foursave.core.secrets import SecretsError
    from foursave.core.tls import TlsSettingsError

    args = build_parser().parse_args(argv)
    _setup_logging(args.verbose)
    try:
        return args.func(args)
    except (SecretsError, TlsSettingsError) as exc:  # a secrets file or CA file to fix
        print(f"foursave {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())

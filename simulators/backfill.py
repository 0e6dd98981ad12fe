"""``foursave backfill``: years of simulated history straight into InfluxDB.

The same physics as the live simulators (``SiteModel.frame``), vectorised a week at a
time, written in the measurements and fields the collector produces, tagged
``source=backfill`` so history can be told from live data.  Counters start from each
device's commissioning date exactly as the live simulator's do, so live data continues
where history ends.  Line protocol is built while earlier batches are being written
(a small pool of writer threads), so the run is bound by InfluxDB, not by Python.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import numpy as np

from foursave.core.config import Config, Device
from foursave.core.glossary import FIELDS
from foursave.core.influx import InfluxClient, InfluxUnavailable
from foursave.core.late import late_marker
from foursave.core.retention import raw_from_ms
from foursave.simulators.registers import ProfileImage, SunSpecImage
from foursave.simulators.site import SiteModel, site_models

log = logging.getLogger("foursave.backfill")

COUNTERS = ("ac_energy_wh", "import_energy_wh", "export_energy_wh", "volume_m3")
SOURCE_TAG = "backfill"


@dataclass
class BackfillResult:
    lines: int
    seconds: float
    days: int

    @property
    def lines_per_s(self) -> float:
        return self.lines / self.seconds if self.seconds else 0.0


def _escape(s: str) -> str:
    return s.replace("\\", "\\\\").replace(",", r"\,").replace("=", r"\=").replace(" ", r"\ ")


# decimals written per field: finer than any simulated register's resolution
DECIMALS = {
    "power_factor": 4,
    "volume_m3": 4,
    "flow_m3h": 4,
    "dc_current_a": 3,
    "ac_current_a": 3,
    "current_a": 3,
    "ac_frequency_hz": 3,
    "frequency_hz": 3,
}


def device_lines(
    kind: str, tags: str, vals: dict[str, np.ndarray], ts_ms: np.ndarray, step: int
) -> list[str]:
    """Line protocol for one device, fields typed as the glossary says (floats without
    an "i" suffix, integers with it), one C-level %-format per line."""
    parts, columns = [], []
    for name, fdef in FIELDS[kind].items():
        if name not in vals:
            continue
        arr = vals[name][::step]
        if fdef.type == "int":
            parts.append(f"{name}=%di")
            columns.append(arr.astype(np.int64).tolist())
        else:
            parts.append(f"{name}=%.{DECIMALS.get(name, 2)}f")
            columns.append(arr.astype(float).tolist())
    template = f"{tags} {','.join(parts)} %d"
    columns.append(ts_ms[::step].tolist())
    return [template % row for row in zip(*columns, strict=True)]


def _chunks(start: date, end: date, days: int) -> Iterator[tuple[date, int]]:
    d = start
    while d < end:
        n = min(days, (end - d).days)
        yield d, n
        d += timedelta(days=n)


def generate(
    config: Config,
    start: date,
    end: date,
    step_s: int = 60,
    chunk_days: int = 7,
    window_ms: tuple[int, int] | None = None,
) -> Iterator[tuple[int, list[str]]]:
    """(days done, lines) per chunk for every simulated device of every site; with
    ``window_ms`` only the points stamped in [lo, hi) (epoch ms) of those days."""
    if step_s % 60 or step_s <= 0:
        raise ValueError("step must be a whole number of minutes")
    step = step_s // 60
    models = site_models(config)
    running: dict[str, dict[str, float]] = {}
    for sm in models.values():
        if sm.devices:
            running.update(sm.counters_at(start))
    done = 0
    for chunk_start, n in _chunks(start, end, chunk_days):
        lines: list[str] = []
        for sm in models.values():
            if not sm.devices:
                continue
            lines.extend(_site_lines(sm, chunk_start, n, step, running, window_ms))
        done += n
        yield done, lines


def _site_lines(
    sm: SiteModel,
    start: date,
    ndays: int,
    step: int,
    running: dict[str, dict[str, float]],
    window_ms: tuple[int, int] | None = None,
) -> list[str]:
    frame = sm.frame(start, ndays)
    ts_ms = frame.weather.index.as_unit("ms").asi8.astype(np.int64)
    keep = None
    if window_ms is not None:  # counters still integrate over the whole chunk
        keep = (ts_ms >= window_ms[0]) & (ts_ms < window_ms[1])
    out: list[str] = []
    for d in sm.devices:
        vals = dict(frame.devices[d.id])
        base = running.setdefault(d.id, {})
        image = _image(d)
        for name in COUNTERS:
            if name in vals:
                inc = vals[name]
                cum = np.cumsum(inc)
                start_val = base.get(name, 0.0)
                # the counter a reading shows at the start of each minute, as the
                # device's register carries it (live readings continue it exactly)
                vals[name] = image.quantize(name, start_val + np.concatenate(([0.0], cum[:-1])))
                base[name] = start_val + float(cum[-1])
        tags = f"{d.kind},device={_escape(d.id)}"
        if d.role:
            tags += f",role={_escape(d.role)}"
        tags += f",site={_escape(d.site)},source={SOURCE_TAG},step_s={step * 60}"
        if keep is None:
            out.extend(device_lines(d.kind, tags, vals, ts_ms, step))
        else:
            sub = {k: np.asarray(v)[keep] for k, v in vals.items()}
            out.extend(device_lines(d.kind, tags, sub, ts_ms[keep], step))
    return out


_IMAGES: dict[str, SunSpecImage | ProfileImage] = {}


def _image(device: Device) -> SunSpecImage | ProfileImage:
    """The device's register image (built once per device description)."""
    from foursave.simulators.server import register_image

    key = device.model_dump_json()
    if key not in _IMAGES:
        _IMAGES[key] = register_image(device)
    return _IMAGES[key]


def run_backfill(
    config: Config,
    start: date,
    end: date,
    *,
    step_s: int = 60,
    batch_lines: int = 5000,
    writers: int = 2,
    progress: Callable[[int, int, int], None] | None = None,
    influx: InfluxClient | None = None,
    window_ms: tuple[int, int] | None = None,
) -> BackfillResult:
    """Generate and write [start, end); ``progress(days_done, days_total, lines)``.
    ``window_ms`` (epoch ms, [lo, hi)) keeps only the points inside it: history that
    stops where live data begins, to the minute."""
    if end <= start:
        raise ValueError(f"--to ({end}) must be after --from ({start})")
    raw_from = raw_from_ms(config.services.influxdb.retention, int(time.time() * 1000))
    if raw_from is not None:
        # the raw policy refuses points older than it keeps (core/retention.py): history
        # from its start, an hour inside it
        lo = raw_from + 3_600_000
        if int(datetime(start.year, start.month, start.day, tzinfo=UTC).timestamp() * 1000) < lo:
            log.warning(
                "backfill: readings before %s are not stored: the raw readings are kept %d "
                "days (services.influxdb.retention.raw_days)",
                datetime.fromtimestamp(lo / 1000, UTC).isoformat(timespec="minutes"),
                config.services.influxdb.retention.raw_days,
            )
        window_ms = (max(lo, window_ms[0]), window_ms[1]) if window_ms else (lo, 2**62)
    total_days = (end - start).days
    own = influx is None
    clients = [InfluxClient.for_role(config.services, "writer") for _ in range(writers)]
    if influx is not None:
        clients[0].close()
        clients[0] = influx
    clients[0].create_database()
    clients[0].ensure_retention(int(time.time() * 1000))  # where an admin's is not needed
    q: queue.Queue[list[str] | None] = queue.Queue(maxsize=writers * 4)
    errors: list[BaseException] = []
    written = [0]
    lock = threading.Lock()

    def writer(client: InfluxClient) -> None:
        while True:
            batch = q.get()
            if batch is None:
                return
            delay = 0.5
            while True:
                try:
                    client.write(batch)
                    break
                except InfluxUnavailable as exc:
                    log.warning("InfluxDB unavailable, retrying: %s", exc)
                    time.sleep(delay)  # back off before retrying the same batch
                    delay = min(delay * 2, 30)
                except BaseException as exc:
                    errors.append(exc)
                    return
            with lock:
                written[0] += len(batch)

    threads = [threading.Thread(target=writer, args=(c,), daemon=True) for c in clients]
    for t in threads:
        t.start()
    t0 = time.monotonic()
    lines_total = 0
    try:
        for days_done, lines in generate(config, start, end, step_s, window_ms=window_ms):
            for i in range(0, len(lines), batch_lines):
                if errors:
                    raise errors[0]
                q.put(lines[i : i + batch_lines])
            lines_total += len(lines)
            if progress:
                progress(days_done, total_days, lines_total)
    finally:
        for _ in threads:
            q.put(None)
        for t in threads:
            t.join()
        if own:
            for c in clients:
                c.close()
        else:
            for c in clients[1:]:
                c.close()
    if errors:
        raise errors[0]
    if written[0]:
        _mark_late(config, influx, start, end)
    return BackfillResult(written[0], time.monotonic() - t0, total_days)


def _mark_late(config: Config, influx: InfluxClient | None, start: date, end: date) -> None:
    """History is late data by nature: one ``late_data`` marker (core/late.py) over
    [start, end), a day wider each side for the sites' zones, so the rollup rescans
    whichever of those days it had closed."""
    first_ms = int(datetime(start.year, start.month, start.day, tzinfo=UTC).timestamp() * 1000)
    last_ms = int(datetime(end.year, end.month, end.day, tzinfo=UTC).timestamp() * 1000)
    line = late_marker([first_ms - 86_400_000, last_ms + 86_400_000], int(time.time() * 1000))
    if line is None:
        return
    client = influx or InfluxClient.for_role(config.services, "writer")
    try:
        client.write([line])
    finally:
        if influx is None:
            client.close()

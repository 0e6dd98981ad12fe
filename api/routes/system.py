"""``/health`` (public, for orchestrators) and ``/metrics`` (Prometheus, any role)."""

from __future__ import annotations

from collections.abc import Iterator

from fastapi import APIRouter, Response
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from pydantic import BaseModel

from foursave.api.deps import AppState, Reader, State
from foursave.core.influx import InfluxRejected, InfluxUnavailable
from foursave.core.influxql import agg, select, time_range

router = APIRouter(tags=["system"])


class Health(BaseModel):
    status: str  # ok | degraded (the API answers; a dependency does not)
    influxdb: bool
    mqtt: bool
    display_snapshot_age_s: float | None


@router.get("/health")
def health(state: State) -> Health:
    """Liveness and the state of the API's own connections (no data, no login; InfluxDB
    is pinged at most once per ``services.api.health_max_age_s``)."""
    influx_ok = state.influx_health.state()
    mqtt_ok = state.mqtt_connected.is_set()
    last = state.snapshots.last_success_ms
    age = None if last is None else round(state.clock.time() - last / 1000, 1)
    return Health(
        status="ok" if influx_ok and mqtt_ok else "degraded",
        influxdb=influx_ok,
        mqtt=mqtt_ok,
        display_snapshot_age_s=age,
    )


class PipelineCollector:
    """Gauges read at scrape time from the retained status messages, the incident
    store and the rules engine's daily completeness."""

    def __init__(self, state: AppState):
        self.state = state

    def collect(self) -> Iterator[GaugeMetricFamily]:
        st = self.state
        devices, collectors, ingesters = st.live.copy()
        now_ms = st.clock.time() * 1000
        g = {
            name: GaugeMetricFamily(f"foursave_{name}", doc, labels=labels)
            for name, doc, labels in (
                ("device_online", "1 if the last poll answered", ["site", "device"]),
                ("device_poll_seconds", "duration of the last poll", ["site", "device"]),
                ("device_errors", "poll errors since the collector started", ["site", "device"]),
                ("device_reading_age_seconds", "time since the last reading", ["site", "device"]),
                ("collector_online", "1 while the collector is connected", ["collector"]),
                ("collector_spool_depth", "readings in the spool, not yet stored", ["collector"]),
                (
                    "collector_spool_unconfirmed",
                    "readings the broker took that no ingester confirmed yet",
                    ["collector"],
                ),
                (
                    "collector_spool_released",
                    "readings the broker took, released unconfirmed from a full spool",
                    ["collector"],
                ),
                ("collector_spool_dropped", "readings dropped from a full spool", ["collector"]),
                ("ingest_lag_seconds", "reading time to InfluxDB write", ["ingester"]),
                ("ingest_written", "points written since the ingester started", ["ingester"]),
                ("ingest_dead_letters", "messages set aside as invalid", ["ingester"]),
                ("ingest_queue", "messages waiting to be written", ["ingester"]),
                ("completeness_ratio", "share of expected readings today", ["site"]),
                ("alerts_firing", "incidents firing", ["site"]),
                ("display_snapshot_age_seconds", "age of the display snapshot", []),
            )
        }
        for key, b in devices.items():
            site, device = key.split("/", 1)
            lab = [site, device]
            if isinstance(b.get("online"), bool):
                g["device_online"].add_metric(lab, float(b["online"]))
            if isinstance(b.get("poll_ms"), int | float):
                g["device_poll_seconds"].add_metric(lab, b["poll_ms"] / 1000)
            if isinstance(b.get("errors"), int):
                g["device_errors"].add_metric(lab, b["errors"])
            if isinstance(b.get("last_reading_ts"), int):
                g["device_reading_age_seconds"].add_metric(
                    lab, max(0.0, (now_ms - b["last_reading_ts"]) / 1000)
                )
        for cid, b in collectors.items():
            g["collector_online"].add_metric([cid], float(b.get("state") == "online"))
            for f in ("spool_depth", "spool_unconfirmed", "spool_released", "spool_dropped"):
                if isinstance(b.get(f), int):
                    g[f"collector_{f}"].add_metric([cid], b[f])
        for iid, b in ingesters.items():
            if isinstance(b.get("lag_ms"), int | float):
                g["ingest_lag_seconds"].add_metric([iid], b["lag_ms"] / 1000)
            for f, name in (
                ("written", "ingest_written"),
                ("dead_letters", "ingest_dead_letters"),
                ("queue", "ingest_queue"),
            ):
                if isinstance(b.get(f), int):
                    g[name].add_metric([iid], b[f])
        try:
            rows = st.influx.rows(
                select(
                    agg("last", "completeness", "c"),
                    "ledger_daily",
                    where=[time_range(int(now_ms - 2 * 86_400_000))],
                    group_by=["site"],
                )
            )
        except (InfluxUnavailable, InfluxRejected):
            rows = []
        for r in rows:
            if r.get("c") is not None:
                g["completeness_ratio"].add_metric([r["site"]], r["c"])
        firing: dict[str, int] = {s.id: 0 for s in st.config.sites}
        for inc in st.incidents.all("firing"):
            firing[inc.site] = firing.get(inc.site, 0) + 1
        for site, n in firing.items():
            g["alerts_firing"].add_metric([site], n)
        if st.snapshots.last_success_ms is not None:
            g["display_snapshot_age_seconds"].add_metric(
                [], max(0.0, (now_ms - st.snapshots.last_success_ms) / 1000)
            )
        yield from g.values()


@router.get(
    "/metrics", response_class=Response, responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}}
)
def metrics(who: Reader, state: State) -> Response:
    """Pipeline metrics in the Prometheus text format (scrape with a viewer key as a
    bearer token)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(PipelineCollector(state))
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

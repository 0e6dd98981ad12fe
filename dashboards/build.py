"""Grafana dashboards as code (grafana-foundation-sdk, Grafana's own builders).

The SDK has no InfluxQL query type, so ``InfluxQL`` below is a small typed target
that serialises as Grafana's InfluxDB data source expects (``rawQuery`` InfluxQL).
Every panel names its unit; titles are zh-TW / English; ``$site`` and ``$device``
template variables come from InfluxDB tag values.  Queries are built with
``core/influxql.py`` like all of foursave's InfluxQL; Grafana's macros have their own
names there (``TIME_FILTER``, ``GRAFANA_INTERVAL``, ``grafana_match``).
``foursave dashboards build`` writes the JSON under ``dashboards/json/`` (committed)
and the provisioning files.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import stat, table, timeseries
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import (
    DataSourceRef,
    DataTransformerConfig,
    ValueMap,
    ValueMappingResult,
    VariableOption,
    VariableRefresh,
)
from sunspec2 import device as ss_device

from foursave.core.config import Config, Site
from foursave.core.glossary import KINDS
from foursave.core.influxql import (
    GRAFANA_INTERVAL,
    TIME_FILTER,
    Bucket,
    Cond,
    Query,
    agg,
    arith,
    column,
    eq,
    every,
    grafana_match,
    select,
    show_tag_values,
)
from foursave.core.reading import SEQ_FIELD
from foursave.core.retention import DAILY_RP, HOURLY_RP, RAW_MEASUREMENTS, RAW_RP, ROLLED_UP

DS_UID = "foursave-influxdb"
# the dashboards' time zone (days and hours on the time axis): the sites' zone, which
# ``foursave dashboards push`` takes from the configuration; the committed JSON has the
# configuration's default
DEFAULT_TIMEZONE: str = Site.model_fields["timezone"].default
DS = DataSourceRef(type_val="influxdb", uid=DS_UID)
OUT = Path(__file__).parent


@dataclass
class InfluxQLQuery(cogvariants.Dataquery):
    ref_id: str
    query: str
    result_format: str = "time_series"

    def to_json(self) -> dict[str, Any]:
        return {
            "refId": self.ref_id,
            "datasource": {"type": "influxdb", "uid": DS_UID},
            "query": self.query,
            "rawQuery": True,
            "resultFormat": self.result_format,
        }


class InfluxQL(cogbuilder.Builder[cogvariants.Dataquery]):
    def __init__(self, query: str, ref_id: str = "A", result_format: str = "time_series"):
        self._q = InfluxQLQuery(ref_id, query, result_format)

    def build(self) -> InfluxQLQuery:
        return self._q


# Results stamped at the start of their month (ledger rows, the month's demand) need a
# panel range that reaches back to it whatever range the dashboard shows: Grafana's
# per-panel relative time.  31 days always reach this month's first day.
MONTHLY_RANGE = "2y"  # monthly ledger rows: two years of bars against baseline and target
THIS_MONTH_RANGE = "31d"


def _ts(
    title: str, unit: str, *queries: str, h: int = 8, w: int = 12, time_from: str | None = None
) -> timeseries.Panel:
    p = timeseries.Panel().title(title).unit(unit).datasource(DS).height(h).span(w)
    if time_from:
        p = p.time_from(time_from)
    for i, q in enumerate(queries):
        p = p.with_target(InfluxQL(q, chr(65 + i)))
    return p


def _stat(
    title: str, unit: str, query: str, w: int = 6, time_from: str | None = None
) -> stat.Panel:
    p = stat.Panel().title(title).unit(unit).datasource(DS).height(5).span(w)
    if time_from:
        p = p.time_from(time_from)
    return p.with_target(InfluxQL(query))


def _table(title: str, unit: str, query: str, w: int = 24) -> table.Panel:
    return (
        table.Panel()
        .title(title)
        .unit(unit)
        .datasource(DS)
        .height(8)
        .span(w)
        .with_target(InfluxQL(query, result_format="table"))
    )


def _site_var(retention: bool = False) -> db.QueryVariable:
    return (
        db.QueryVariable("site")
        .label("案場 Site")
        .datasource(DS)
        .query(show_tag_values("meter", "site", rp=RAW_RP, qualify=retention))
        .refresh(VariableRefresh.ON_DASHBOARD_LOAD)
        .multi(False)
        .include_all(False)
    )


def _device_var(measurement: str, retention: bool = False) -> db.QueryVariable:
    return (
        db.QueryVariable("device")
        .label("設備 Device")
        .datasource(DS)
        .query(show_tag_values(measurement, "device", where=[SITE], rp=RAW_RP, qualify=retention))
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .multi(True)
        .include_all(True)
    )


RESOLUTION_VAR = "$rp"
# the resolution variable's choices: the readings, or the rollups kept for ever
RESOLUTIONS = (("raw", RAW_RP), ("1h", HOURLY_RP), ("1d", DAILY_RP))


def _resolution_var() -> db.CustomVariable:
    """``$rp``: which retention policy the reading panels read (core/retention.py).
    Grafana cannot change a query's measurement with the range, so the viewer picks:
    ``raw`` for days, ``1h`` for weeks and months, ``1d`` for years and for anything
    older than the raw readings kept.  The rollups have the readings' field names
    (the mean under the field's own), so each panel's query is the same on all three."""
    options = [
        VariableOption(selected=i == 0 or None, text=text, value=value)
        for i, (text, value) in enumerate(RESOLUTIONS)
    ]
    return (
        db.CustomVariable("rp")
        .label("解析度 Resolution")
        .values(",".join(f"{text} : {value}" for text, value in RESOLUTIONS))
        .current(VariableOption(selected=True, text=RESOLUTIONS[0][0], value=RAW_RP))
        .options(options)
    )


def _resolved(d: db.Dashboard, retention: bool) -> db.Dashboard:
    """The dashboard, with the ``$rp`` resolution variable when retention is on."""
    return d.with_variable(_resolution_var()) if retention else d


def sunspec_states() -> ValueMap:
    """SunSpec St as text, from model 103's own symbol table (pysunspec2)."""
    st = next(p for p in ss_device.get_model_def(103)["group"]["points"] if p["name"] == "St")
    colours = {"FAULT": "red", "THROTTLED": "orange", "MPPT": "green", "SLEEPING": "blue"}
    return ValueMap(
        {
            str(sym["value"]): ValueMappingResult(
                text=sym["name"], color=colours.get(sym["name"]), index=i
            )
            for i, sym in enumerate(st["symbols"])
        }
    )


SITE = grafana_match("site", "site")  # "site" =~ /^$site$/
DEVICE = grafana_match("device", "device")
INTERVAL = every(GRAFANA_INTERVAL)  # time($__interval)
DAY = every("1d")
MONTH = every("30d")


Select = Callable[..., Query]


def _selector(retention: bool) -> Select:
    """``select`` reading the readings where retention puts them (core/retention.py):
    a rolled-up measurement from ``"$rp"."m"`` (the dashboard's resolution: ``raw``,
    ``rollup_1h``, ``rollup_1d``), the other readings from ``"raw"."m"``, results
    where they always were; without retention, ``select`` as it is."""

    def sel(fields, measurement, **kw) -> Query:
        if retention and isinstance(measurement, str):
            if measurement in ROLLED_UP:
                kw.update(rp=RESOLUTION_VAR, qualify=True)
            elif measurement in RAW_MEASUREMENTS:
                kw.update(rp=RAW_RP, qualify=True)
        elif retention:  # several readings' kinds at once: what only the raw points hold
            kw.update(rp=RAW_RP, qualify=True)
        return select(fields, measurement, **kw)

    return sel


def _per(sel: Select, fields, measurement: str, bucket: Bucket, *conds: Cond, fill="none") -> Query:
    """The site's values per time bucket over the dashboard's range."""
    return sel(
        fields,
        measurement,
        where=[SITE, *conds, TIME_FILTER],
        group_by=[bucket],
        fill=fill,
    )


def _per_device(sel: Select, fields, measurement: str, bucket: Bucket) -> Query:
    """Per chosen device and time bucket."""
    return sel(
        fields,
        measurement,
        where=[SITE, DEVICE, TIME_FILTER],
        group_by=[bucket, "device"],
        fill="none",
    )


def _per_string(sel: Select, fields) -> Query:
    """Per chosen inverter, string (MPPT input) and time bucket."""
    return sel(
        fields,
        "inverter_string",
        where=[SITE, DEVICE, TIME_FILTER],
        group_by=[INTERVAL, "device", "string"],
        fill="none",
    )


def _per_item(fields) -> Query:
    """Monthly ledger rows per item."""
    return select(
        fields,
        "ledger",
        where=[SITE, eq("granularity", "month"), TIME_FILTER],
        group_by=[MONTH, "item"],
        fill="none",
    )


def facilities(tz: str = DEFAULT_TIMEZONE, retention: bool = False) -> db.Dashboard:
    sel = _selector(retention)
    return _resolved(
        db.Dashboard("設施總覽 Facilities overview")
        .uid("foursave-facilities")
        .tags(["foursave"])
        .time("now-24h", "now")
        .refresh("30s")
        .timezone(tz)
        .with_variable(_site_var(retention))
        .with_panel(
            _ts(
                "電力流 Power flow (grid import, PV, building load)",
                "watt",
                sel(
                    agg("mean", "active_power_w", "grid"),
                    "meter",
                    where=[SITE, eq("role", "main"), TIME_FILTER],
                    group_by=[INTERVAL],
                    fill="none",
                ),
                sel(
                    agg("sum", "p", "pv"),
                    sel(
                        agg("mean", "ac_power_w", "p"),
                        "inverter",
                        where=[SITE, TIME_FILTER],
                        group_by=[INTERVAL, "device"],
                        fill="none",
                    ),
                    where=[TIME_FILTER],
                    group_by=[INTERVAL],
                ),
                w=24,
            )
            # building load = grid import + the PV behind the meter
            .with_transformation(
                DataTransformerConfig(
                    id_val="calculateField",
                    options={
                        "mode": "binary",
                        "alias": "building load",
                        "binary": {"left": "grid", "operator": "+", "right": "pv"},
                    },
                )
            )
        )
        .with_panel(
            _ts(
                "15 分鐘需量 15-minute demand vs contract",
                "kwatt",
                _per(sel, agg("max", "demand_kw", "demand"), "demand", INTERVAL),
                _per(
                    sel,
                    agg("last", "contract_kw", "contract"),
                    "demand_month",
                    DAY,
                    fill="previous",
                ),
                _per(sel, agg("max", "forecast_kw", "forecast"), "demand_forecast", INTERVAL),
                time_from=THIS_MONTH_RANGE,  # the billing month, with its contract line
            )
        )
        .with_panel(
            _stat(
                "本月最大需量 Month's maximum demand",
                "kwatt",
                sel(agg("last", "max_demand_kw"), "demand_month", where=[SITE, TIME_FILTER]),
                time_from=THIS_MONTH_RANGE,
            )
        )
        .with_panel(
            _stat(
                "超約附加費估計 Over-contract surcharge (NT$)",
                "none",
                sel(agg("last", "surcharge_ntd"), "demand_month", where=[SITE, TIME_FILTER]),
                time_from=THIS_MONTH_RANGE,
            )
        )
        .with_panel(
            _ts(
                "每日用電 Daily energy",
                "kwatth",
                _per(
                    sel,
                    [
                        agg("sum", "electricity_kwh", "electricity"),
                        agg("sum", "pv_generation_kwh", "pv"),
                    ],
                    "ledger_daily",
                    DAY,
                ),
            )
        )
        .with_panel(
            _table(
                "設備狀態 Device status (online, poll latency, errors, values out of bounds)",
                "none",
                sel(
                    [agg("last", f, f) for f in ("online", "poll_ms", "errors", "out_of_bounds")],
                    "device_status",
                    where=[SITE, TIME_FILTER],
                    group_by=["device"],
                ),
            )
        )
        .with_panel(
            _table(
                "告警 Alerts firing or resolved",
                "none",
                sel(
                    [column(f) for f in ("event", "rule", "device", "value")],
                    "alert_events",
                    where=[SITE, TIME_FILTER],
                ),
            )
        ),
        retention,
    )


def solar(tz: str = DEFAULT_TIMEZONE, retention: bool = False) -> db.Dashboard:
    sel = _selector(retention)
    return _resolved(
        db.Dashboard("太陽能地標 Solar landmark")
        .uid("foursave-solar")
        .tags(["foursave"])
        .time("now-7d", "now")
        .refresh("1m")
        .timezone(tz)
        .with_variable(_site_var(retention))
        .with_variable(_device_var("inverter", retention))
        .with_panel(
            _ts(
                "交流功率 AC power per inverter",
                "watt",
                _per_device(sel, agg("mean", "ac_power_w"), "inverter", INTERVAL),
                w=24,
            )
        )
        .with_panel(
            _ts(
                "直流功率 DC power per inverter",
                "watt",
                _per_device(sel, agg("mean", "dc_power_w"), "inverter", INTERVAL),
            )
        )
        .with_panel(
            _ts(
                "運轉狀態 SunSpec state",
                "none",
                _per_device(sel, agg("last", "state"), "inverter", INTERVAL),
            ).mappings([sunspec_states()])
        )
        .with_panel(
            _ts(
                "組串直流功率 DC power per string (MPPT input)",
                "watt",
                _per_string(sel, agg("mean", "dc_power_w")),
            )
        )
        .with_panel(
            _ts(
                "組串電壓電流 String voltage and current",
                "volt",
                _per_string(
                    sel, [agg("mean", "dc_voltage_v", "V"), agg("mean", "dc_current_a", "A")]
                ),
            )
        )
        .with_panel(
            _table(
                "設備銘牌 Nameplate and firmware (last seen)",
                "none",
                sel(
                    [
                        agg("last", f, f)
                        for f in ("manufacturer", "model", "version", "serial", "rated_power_w")
                    ],
                    "device_info",
                    where=[SITE, DEVICE, TIME_FILTER],
                    group_by=["device"],
                ),
            )
        )
        .with_panel(
            _ts(
                "日射量 Irradiance (POA, GHI)",
                "Wm2",
                _per(
                    sel,
                    [agg("mean", "poa_irradiance_wm2", "poa"), agg("mean", "ghi_wm2", "ghi")],
                    "weather",
                    INTERVAL,
                ),
            )
        )
        .with_panel(
            _ts(
                "模組溫度 Module and ambient temperature",
                "celsius",
                _per(
                    sel,
                    [
                        agg("mean", "module_temp_c", "module"),
                        agg("mean", "ambient_temp_c", "ambient"),
                    ],
                    "weather",
                    INTERVAL,
                ),
            )
        )
        .with_panel(
            _ts(
                "每日發電小時 Daily specific yield (Y_f)",
                "h",
                _per_device(sel, agg("last", "y_f"), "pv_daily", DAY),
            )
        )
        .with_panel(
            _ts(
                "性能比 PR and temperature-corrected PR",
                "percentunit",
                sel(
                    [agg("mean", "pr", "PR"), agg("mean", "pr_temp", "PR (temp-corrected)")],
                    "pv_daily",
                    where=[SITE, DEVICE, TIME_FILTER],
                    group_by=[DAY],
                    fill="none",
                ),
            )
        )
        .with_panel(
            _stat(
                "本月太陽光電省下電費 PV value this month (NT$, consumed PV at TOU prices)",
                "none",
                sel(agg("last", "pv_value_ntd"), "pv_value_month", where=[SITE, TIME_FILTER]),
                time_from=THIS_MONTH_RANGE,
            )
        )
        .with_panel(
            _table(
                "太陽光電價值與需量降低 PV value per month and the demand it took off",
                "none",
                sel(
                    [
                        column(f)
                        for f in (
                            "pv_value_ntd",
                            "pv_consumed_kwh",
                            "pv_exported_kwh",
                            "pv_value_ntd_peak",
                            "pv_value_ntd_semi_peak",
                            "pv_value_ntd_sat_semi_peak",
                            "pv_value_ntd_off_peak",
                            "demand_reduction_kw_peak",
                            "demand_reduction_kw_semi_peak",
                            "over_contract_saved_ntd",
                            "bill_saved_ntd",
                        )
                    ],
                    "pv_value_month",
                    where=[SITE, TIME_FILTER],
                ),
            ).time_from(MONTHLY_RANGE)
        )
        .with_panel(
            _table(
                "變流器比較 Inverter comparison (clear days) and labels",
                "none",
                sel(
                    [
                        column(f)
                        for f in ("peer_ratio", "clipping_min", "outage_min", "availability")
                    ],
                    "pv_daily",
                    where=[SITE, DEVICE, TIME_FILTER, eq("clear_day", True)],
                ),
            )
        ),
        retention,
    )


def four_saving(tz: str = DEFAULT_TIMEZONE, retention: bool = False) -> db.Dashboard:
    sel = _selector(retention)

    def item(name: str, zh: str, unit: str) -> timeseries.Panel:
        return _ts(
            f"{zh} {name.capitalize()}: actual vs baseline and target",
            unit,
            _per(
                sel,
                [agg("last", f, f) for f in ("actual", "baseline", "target")],
                "ledger",
                MONTH,
                eq("item", name),
                eq("granularity", "month"),
            ),
            time_from=MONTHLY_RANGE,
        )

    return (
        db.Dashboard("四省 Four-saving")
        .uid("foursave-four-saving")
        .tags(["foursave"])
        .time("now-2y", "now")
        .timezone(tz)
        .with_variable(_site_var(retention))
        .with_panel(item("electricity", "省電", "kwatth"))
        .with_panel(item("water", "省水", "m3"))
        .with_panel(item("fuel", "省油", "litre"))
        .with_panel(
            _ts(
                "省紙 Online-signing rate vs target",
                "percentunit",
                _per(
                    sel,
                    [agg("last", "actual", "rate"), agg("last", "target_rate", "target")],
                    "ledger",
                    MONTH,
                    eq("item", "paper"),
                ),
                time_from=MONTHLY_RANGE,
            )
        )
        .with_panel(
            _ts(
                "能源使用強度 EUI (month, rolling 12 months)",
                "none",
                _per(
                    sel,
                    [
                        agg("last", "eui_kwh_m2", "EUI month"),
                        agg("last", "eui_rolling_12m_kwh_m2", "EUI 12 months"),
                    ],
                    "ledger",
                    MONTH,
                    eq("item", "electricity"),
                    eq("granularity", "month"),
                ),
                time_from=MONTHLY_RANGE,
            )
        )
        .with_panel(
            _ts(
                "碳排放 CO2e per item",
                "masskg",
                _per_item(agg("sum", "co2e_kg")),
                time_from=MONTHLY_RANGE,
            )
        )
        .with_panel(
            _ts(
                "節約率 Savings rate per item",
                "percentunit",
                _per_item(agg("last", "savings_rate")),
                time_from=MONTHLY_RANGE,
            )
        )
        .with_panel(
            _ts(
                "資料完整度 Data completeness",
                "percentunit",
                _per_item(agg("last", "completeness")),
                time_from=MONTHLY_RANGE,
            )
        )
    )


def alerts(tz: str = DEFAULT_TIMEZONE, retention: bool = False) -> db.Dashboard:
    sel = _selector(retention)
    return (
        db.Dashboard("告警 Alerts")
        .uid("foursave-alerts")
        .tags(["foursave"])
        .time("now-7d", "now")
        .refresh("30s")
        .timezone(tz)
        .with_variable(_site_var(retention))
        .with_panel(
            _stat(
                "告警事件 Firing events in range",
                "none",
                sel(
                    agg("count", "incident"),
                    "alert_events",
                    where=[SITE, eq("event", "firing"), TIME_FILTER],
                ),
                w=8,
            )
        )
        .with_panel(
            _ts(
                "告警歷史 Alert history by rule",
                "none",
                sel(
                    agg("count", "incident"),
                    "alert_events",
                    where=[SITE, TIME_FILTER],
                    group_by=[INTERVAL, "rule"],
                    fill="none",
                ),
                w=16,
            )
        )
        .with_panel(
            _table(
                "事件與確認 Events and acknowledgements",
                "none",
                sel(
                    [
                        column(f)
                        for f in (
                            "incident",
                            "event",
                            "rule",
                            "device",
                            "severity",
                            "value",
                            "detail",
                            "by",
                            "comment",
                        )
                    ],
                    "alert_events",
                    where=[SITE, TIME_FILTER],
                ),
            )
        )
    )


def pipeline(tz: str = DEFAULT_TIMEZONE, retention: bool = False) -> db.Dashboard:
    sel = _selector(retention)
    return (
        db.Dashboard("資料管線 Pipeline health")
        .uid("foursave-pipeline")
        .tags(["foursave"])
        .time("now-6h", "now")
        .refresh("30s")
        .timezone(tz)
        .with_panel(
            _ts(
                "暫存佇列 Collector spool: depth, unconfirmed, released and dropped",
                "none",
                sel(
                    [
                        agg("last", "spool_depth", "depth"),
                        agg("last", "spool_unconfirmed", "unconfirmed"),
                        agg("last", "spool_released", "released"),
                        agg("last", "spool_dropped", "dropped"),
                    ],
                    "collector_status",
                    where=[TIME_FILTER],
                    group_by=[INTERVAL, "collector"],
                    fill="none",
                ),
            )
        )
        .with_panel(
            _ts(
                "寫入延遲 Ingest lag",
                "ms",
                sel(
                    agg("mean", "lag_ms"),
                    "ingest_stats",
                    where=[TIME_FILTER],
                    group_by=[INTERVAL, "ingester"],
                    fill="none",
                ),
            )
        )
        .with_panel(
            _ts(
                "無效訊息 Dead letters and write retries",
                "none",
                sel(
                    [
                        agg("last", "dead_letters", "dead letters"),
                        agg("last", "write_retries", "retries"),
                    ],
                    "ingest_stats",
                    where=[TIME_FILTER],
                    group_by=[INTERVAL],
                    fill="none",
                ),
            )
        )
        .with_panel(
            # from the stored readings' seq (core/seqgaps.py): right with any number of
            # ingesters, where each member of a shared subscription sees only its share
            _table(
                "序號缺漏 Seq gaps per device (completeness)",
                "none",
                sel(
                    [
                        agg("count", SEQ_FIELD, "stored"),
                        arith(
                            arith(agg("spread", SEQ_FIELD), "-", agg("count", SEQ_FIELD)),
                            "+",
                            1,
                            "gaps",
                        ),
                    ],
                    KINDS,
                    where=[TIME_FILTER],
                    group_by=["device"],
                ),
                w=12,
            )
        )
        .with_panel(
            _ts(
                "輪詢時間 Poll latency per device",
                "ms",
                sel(
                    agg("mean", "poll_ms"),
                    "device_status",
                    where=[TIME_FILTER],
                    group_by=[INTERVAL, "device"],
                    fill="none",
                ),
            )
        )
    )


DASHBOARDS = {
    "facilities": facilities,
    "solar": solar,
    "four-saving": four_saving,
    "alerts": alerts,
    "pipeline": pipeline,
}


def dashboard_timezone(config: Config) -> str:
    """The sites' zone if they share one; else ``browser`` (each viewer's own), since
    a dashboard has one zone and no single site's fits them all."""
    zones = {site.timezone for site in config.sites}
    return zones.pop() if len(zones) == 1 else "browser"


def dashboard_json(
    name: str, tz: str = DEFAULT_TIMEZONE, retention: bool = False
) -> dict[str, Any]:
    """The dashboard ``name`` as Grafana's JSON; ``retention``: for a database with
    ``services.influxdb.retention`` on (the readings in ``raw``, ``$rp`` to pick the
    rollups); the committed JSON is without."""
    built = DASHBOARDS[name](tz, retention).build()
    return json.loads(json.dumps(built, cls=JSONEncoder, sort_keys=True))


def datasource_json(
    url: str = "http://influxdb:8086",
    database: str = "foursave",
    user: str | None = None,
    password: str | None = None,
) -> dict[str, Any]:
    """Grafana's InfluxDB (InfluxQL) data source; ``user`` and ``password`` are the
    InfluxDB reader's (Grafana keeps the password encrypted, ``secureJsonData``)."""
    ds: dict[str, Any] = {
        "name": "foursave InfluxDB",
        "uid": DS_UID,
        "type": "influxdb",
        "access": "proxy",
        "url": url,
        "jsonData": {"dbName": database, "httpMode": "POST", "timeInterval": "5s"},
        "isDefault": True,
    }
    if user is not None:
        ds["user"] = user
    if password is not None:
        ds["secureJsonData"] = {"password": password}
    return ds


def write_all(out: Path = OUT) -> list[Path]:
    """dashboards/json/*.json and Grafana provisioning files; deterministic."""
    written = []
    (out / "json").mkdir(parents=True, exist_ok=True)
    for name in DASHBOARDS:
        p = out / "json" / f"{name}.json"
        p.write_text(
            json.dumps(dashboard_json(name), indent=2, ensure_ascii=False, sort_keys=True) + "\n"
        )
        written.append(p)
    prov = out / "provisioning"
    (prov / "datasources").mkdir(parents=True, exist_ok=True)
    (prov / "dashboards").mkdir(parents=True, exist_ok=True)
    # Grafana fills these in from its environment (docker-compose.yml): the InfluxDB
    # reader, whose password never lands in a file
    ds = datasource_json(
        "${FOURSAVE_INFLUXDB_URL}",
        "${FOURSAVE_INFLUXDB_DATABASE}",
        "${FOURSAVE_INFLUXDB_USER}",
        "${FOURSAVE_INFLUXDB_PASSWORD}",
    )
    ds_file = prov / "datasources" / "foursave.yaml"
    import yaml

    ds_file.write_text(
        yaml.safe_dump({"apiVersion": 1, "datasources": [ds]}, sort_keys=True, allow_unicode=True)
    )
    db_file = prov / "dashboards" / "foursave.yaml"
    db_file.write_text(
        yaml.safe_dump(
            {
                "apiVersion": 1,
                "providers": [
                    {
                        "name": "foursave",
                        "folder": "foursave",
                        "type": "file",
                        "disableDeletion": True,
                        "allowUiUpdates": False,
                        "options": {"path": "/var/lib/grafana/dashboards/foursave"},
                    }
                ],
            },
            sort_keys=True,
        )
    )
    return [*written, ds_file, db_file]

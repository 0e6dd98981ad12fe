"""Grafana dashboards as code (grafana-foundation-sdk, Grafana's own builders).

The SDK has no InfluxQL query type, so ``InfluxQL`` below is a small typed target
that serialises as Grafana's InfluxDB data source expects (``rawQuery`` InfluxQL).
Every panel names its unit; titles are zh-TW / English; ``$site`` and ``$device``
template variables come from InfluxDB tag values.  ``foursave dashboards build``
writes the JSON under ``dashboards/json/`` (committed) and the provisioning files.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from foursave.core.config import Config, Site
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
    VariableRefresh,
)
from sunspec2 import device as ss_device

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


def _site_var() -> db.QueryVariable:
    return (
        db.QueryVariable("site")
        .label("案場 Site")
        .datasource(DS)
        .query('SHOW TAG VALUES FROM "meter" WITH KEY = "site"')
        .refresh(VariableRefresh.ON_DASHBOARD_LOAD)
        .multi(False)
        .include_all(False)
    )


def _device_var(measurement: str) -> db.QueryVariable:
    return (
        db.QueryVariable("device")
        .label("設備 Device")
        .datasource(DS)
        .query(
            f'SHOW TAG VALUES FROM "{measurement}" WITH KEY = "device" WHERE "site" =~ /^$site$/'
        )
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .multi(True)
        .include_all(True)
    )


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


SITE = '"site" =~ /^$site$/'
DEVICE = '"device" =~ /^$device$/'


def facilities(tz: str = DEFAULT_TIMEZONE) -> db.Dashboard:
    return (
        db.Dashboard("設施總覽 Facilities overview")
        .uid("foursave-facilities")
        .tags(["foursave"])
        .time("now-24h", "now")
        .refresh("30s")
        .timezone(tz)
        .with_variable(_site_var())
        .with_panel(
            _ts(
                "電力流 Power flow (grid import, PV, building load)",
                "watt",
                f'SELECT mean("active_power_w") AS "grid" FROM "meter" WHERE {SITE} AND "role" = \'main\' AND $timeFilter GROUP BY time($__interval) fill(none)',
                f'SELECT sum("p") AS "pv" FROM (SELECT mean("ac_power_w") AS "p" FROM "inverter" WHERE {SITE} AND $timeFilter GROUP BY time($__interval), "device" fill(none)) WHERE $timeFilter GROUP BY time($__interval)',
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
                f'SELECT max("demand_kw") AS "demand" FROM "demand" WHERE {SITE} AND $timeFilter GROUP BY time($__interval) fill(none)',
                f'SELECT last("contract_kw") AS "contract" FROM "demand_month" WHERE {SITE} AND $timeFilter GROUP BY time(1d) fill(previous)',
                f'SELECT max("forecast_kw") AS "forecast" FROM "demand_forecast" WHERE {SITE} AND $timeFilter GROUP BY time($__interval) fill(none)',
                time_from=THIS_MONTH_RANGE,  # the billing month, with its contract line
            )
        )
        .with_panel(
            _stat(
                "本月最大需量 Month's maximum demand",
                "kwatt",
                f'SELECT last("max_demand_kw") FROM "demand_month" WHERE {SITE} AND $timeFilter',
                time_from=THIS_MONTH_RANGE,
            )
        )
        .with_panel(
            _stat(
                "超約附加費估計 Over-contract surcharge (NT$)",
                "none",
                f'SELECT last("surcharge_ntd") FROM "demand_month" WHERE {SITE} AND $timeFilter',
                time_from=THIS_MONTH_RANGE,
            )
        )
        .with_panel(
            _ts(
                "每日用電 Daily energy",
                "kwatth",
                f'SELECT sum("electricity_kwh") AS "electricity", sum("pv_generation_kwh") AS "pv" FROM "ledger_daily" WHERE {SITE} AND $timeFilter GROUP BY time(1d) fill(none)',
            )
        )
        .with_panel(
            _table(
                "設備狀態 Device status (online, poll latency, errors)",
                "none",
                f'SELECT last("online") AS "online", last("poll_ms") AS "poll_ms", last("errors") AS "errors" FROM "device_status" WHERE {SITE} AND $timeFilter GROUP BY "device"',
            )
        )
        .with_panel(
            _table(
                "告警 Alerts firing or resolved",
                "none",
                f'SELECT "event", "rule", "device", "value" FROM "alert_events" WHERE {SITE} AND $timeFilter',
            )
        )
    )


def solar(tz: str = DEFAULT_TIMEZONE) -> db.Dashboard:
    return (
        db.Dashboard("太陽能地標 Solar landmark")
        .uid("foursave-solar")
        .tags(["foursave"])
        .time("now-7d", "now")
        .refresh("1m")
        .timezone(tz)
        .with_variable(_site_var())
        .with_variable(_device_var("inverter"))
        .with_panel(
            _ts(
                "交流功率 AC power per inverter",
                "watt",
                f'SELECT mean("ac_power_w") FROM "inverter" WHERE {SITE} AND {DEVICE} AND $timeFilter GROUP BY time($__interval), "device" fill(none)',
                w=24,
            )
        )
        .with_panel(
            _ts(
                "直流功率 DC power per inverter",
                "watt",
                f'SELECT mean("dc_power_w") FROM "inverter" WHERE {SITE} AND {DEVICE} AND $timeFilter GROUP BY time($__interval), "device" fill(none)',
            )
        )
        .with_panel(
            _ts(
                "運轉狀態 SunSpec state",
                "none",
                f'SELECT last("state") FROM "inverter" WHERE {SITE} AND {DEVICE} AND $timeFilter GROUP BY time($__interval), "device" fill(none)',
            ).mappings([sunspec_states()])
        )
        .with_panel(
            _ts(
                "日射量 Irradiance (POA, GHI)",
                "Wm2",
                f'SELECT mean("poa_irradiance_wm2") AS "poa", mean("ghi_wm2") AS "ghi" FROM "weather" WHERE {SITE} AND $timeFilter GROUP BY time($__interval) fill(none)',
            )
        )
        .with_panel(
            _ts(
                "模組溫度 Module and ambient temperature",
                "celsius",
                f'SELECT mean("module_temp_c") AS "module", mean("ambient_temp_c") AS "ambient" FROM "weather" WHERE {SITE} AND $timeFilter GROUP BY time($__interval) fill(none)',
            )
        )
        .with_panel(
            _ts(
                "每日發電小時 Daily specific yield (Y_f)",
                "h",
                f'SELECT last("y_f") FROM "pv_daily" WHERE {SITE} AND {DEVICE} AND $timeFilter GROUP BY time(1d), "device" fill(none)',
            )
        )
        .with_panel(
            _ts(
                "性能比 PR and temperature-corrected PR",
                "percentunit",
                f'SELECT mean("pr") AS "PR", mean("pr_temp") AS "PR (temp-corrected)" FROM "pv_daily" WHERE {SITE} AND {DEVICE} AND $timeFilter GROUP BY time(1d) fill(none)',
            )
        )
        .with_panel(
            _table(
                "變流器比較 Inverter comparison (clear days) and labels",
                "none",
                f'SELECT "peer_ratio", "clipping_min", "outage_min", "availability" FROM "pv_daily" WHERE {SITE} AND {DEVICE} AND $timeFilter AND "clear_day" = true',
            )
        )
    )


def four_saving(tz: str = DEFAULT_TIMEZONE) -> db.Dashboard:
    def item(name: str, zh: str, unit: str) -> timeseries.Panel:
        return _ts(
            f"{zh} {name.capitalize()}: actual vs baseline and target",
            unit,
            f'SELECT last("actual") AS "actual", last("baseline") AS "baseline", last("target") AS "target" FROM "ledger" WHERE {SITE} AND "item" = \'{name}\' AND "granularity" = \'month\' AND $timeFilter GROUP BY time(30d) fill(none)',
            time_from=MONTHLY_RANGE,
        )

    return (
        db.Dashboard("四省 Four-saving")
        .uid("foursave-four-saving")
        .tags(["foursave"])
        .time("now-2y", "now")
        .timezone(tz)
        .with_variable(_site_var())
        .with_panel(item("electricity", "省電", "kwatth"))
        .with_panel(item("water", "省水", "m3"))
        .with_panel(item("fuel", "省油", "litre"))
        .with_panel(
            _ts(
                "省紙 Online-signing rate vs target",
                "percentunit",
                f'SELECT last("actual") AS "rate", last("target_rate") AS "target" FROM "ledger" WHERE {SITE} AND "item" = \'paper\' AND $timeFilter GROUP BY time(30d) fill(none)',
                time_from=MONTHLY_RANGE,
            )
        )
        .with_panel(
            _ts(
                "能源使用強度 EUI (month, rolling 12 months)",
                "none",
                f'SELECT last("eui_kwh_m2") AS "EUI month", last("eui_rolling_12m_kwh_m2") AS "EUI 12 months" FROM "ledger" WHERE {SITE} AND "item" = \'electricity\' AND "granularity" = \'month\' AND $timeFilter GROUP BY time(30d) fill(none)',
                time_from=MONTHLY_RANGE,
            )
        )
        .with_panel(
            _ts(
                "碳排放 CO2e per item",
                "masskg",
                f'SELECT sum("co2e_kg") FROM "ledger" WHERE {SITE} AND "granularity" = \'month\' AND $timeFilter GROUP BY time(30d), "item" fill(none)',
                time_from=MONTHLY_RANGE,
            )
        )
        .with_panel(
            _ts(
                "節約率 Savings rate per item",
                "percentunit",
                f'SELECT last("savings_rate") FROM "ledger" WHERE {SITE} AND "granularity" = \'month\' AND $timeFilter GROUP BY time(30d), "item" fill(none)',
                time_from=MONTHLY_RANGE,
            )
        )
        .with_panel(
            _ts(
                "資料完整度 Data completeness",
                "percentunit",
                f'SELECT last("completeness") FROM "ledger" WHERE {SITE} AND "granularity" = \'month\' AND $timeFilter GROUP BY time(30d), "item" fill(none)',
                time_from=MONTHLY_RANGE,
            )
        )
    )


def alerts(tz: str = DEFAULT_TIMEZONE) -> db.Dashboard:
    return (
        db.Dashboard("告警 Alerts")
        .uid("foursave-alerts")
        .tags(["foursave"])
        .time("now-7d", "now")
        .refresh("30s")
        .timezone(tz)
        .with_variable(_site_var())
        .with_panel(
            _stat(
                "告警事件 Firing events in range",
                "none",
                f'SELECT count("incident") FROM "alert_events" WHERE {SITE} AND "event" = \'firing\' AND $timeFilter',
                w=8,
            )
        )
        .with_panel(
            _ts(
                "告警歷史 Alert history by rule",
                "none",
                f'SELECT count("incident") FROM "alert_events" WHERE {SITE} AND $timeFilter GROUP BY time($__interval), "rule" fill(none)',
                w=16,
            )
        )
        .with_panel(
            _table(
                "事件與確認 Events and acknowledgements",
                "none",
                f'SELECT "incident", "event", "rule", "device", "severity", "value", "by", "comment" FROM "alert_events" WHERE {SITE} AND $timeFilter',
            )
        )
    )


def pipeline(tz: str = DEFAULT_TIMEZONE) -> db.Dashboard:
    return (
        db.Dashboard("資料管線 Pipeline health")
        .uid("foursave-pipeline")
        .tags(["foursave"])
        .time("now-6h", "now")
        .refresh("30s")
        .timezone(tz)
        .with_panel(
            _ts(
                "暫存佇列 Collector spool depth and drops",
                "none",
                'SELECT last("spool_depth") AS "depth", last("spool_dropped") AS "dropped" FROM "collector_status" WHERE $timeFilter GROUP BY time($__interval), "collector" fill(none)',
            )
        )
        .with_panel(
            _ts(
                "寫入延遲 Ingest lag",
                "ms",
                'SELECT mean("lag_ms") FROM "ingest_stats" WHERE $timeFilter GROUP BY time($__interval), "ingester" fill(none)',
            )
        )
        .with_panel(
            _ts(
                "無效訊息 Dead letters and write retries",
                "none",
                'SELECT last("dead_letters") AS "dead letters", last("write_retries") AS "retries" FROM "ingest_stats" WHERE $timeFilter GROUP BY time($__interval) fill(none)',
            )
        )
        .with_panel(
            _table(
                "序號缺漏 Seq gaps per device (completeness)",
                "none",
                'SELECT last("received") AS "received", last("gaps") AS "gaps", last("duplicates") AS "duplicates" FROM "ingest_seq" WHERE $timeFilter GROUP BY "device"',
                w=12,
            )
        )
        .with_panel(
            _ts(
                "輪詢時間 Poll latency per device",
                "ms",
                'SELECT mean("poll_ms") FROM "device_status" WHERE $timeFilter GROUP BY time($__interval), "device" fill(none)',
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


def dashboard_json(name: str, tz: str = DEFAULT_TIMEZONE) -> dict[str, Any]:
    built = DASHBOARDS[name](tz).build()
    return json.loads(json.dumps(built, cls=JSONEncoder, sort_keys=True))


def datasource_json(
    url: str = "http://influxdb:8086", database: str = "foursave"
) -> dict[str, Any]:
    return {
        "name": "foursave InfluxDB",
        "uid": DS_UID,
        "type": "influxdb",
        "access": "proxy",
        "url": url,
        "jsonData": {"dbName": database, "httpMode": "POST", "timeInterval": "5s"},
        "isDefault": True,
    }


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
    ds = datasource_json("${FOURSAVE_INFLUXDB_URL}", "${FOURSAVE_INFLUXDB_DATABASE}")
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

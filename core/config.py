"""The one YAML file that describes sites, devices and services.

``load_config(path)`` returns a validated, frozen :class:`Config` or raises
:class:`ConfigError`, whose ``errors`` name the file, the line, the path inside the
file (``devices[3].port``) and what was expected.  Environment variables override the
service addresses so one file runs in compose, CI and tests alike (docs/design.md).
"""

from __future__ import annotations

import os
import re
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, Literal
from urllib.parse import SplitResult, urlsplit

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from foursave.core.glossary import FIELDS, SLUG_PATTERN, Bounds, device_bounds
from foursave.core.store import instance_path

SLUG = SLUG_PATTERN  # pydantic's Field(pattern=...) takes the pattern text
DEFAULT_CONFIG = "config/demo.yaml"

ProfileCheck = Callable[[str, str], "str | None"]
"""``check(profile, device_kind)``: what is wrong with a device's register-map profile
(``None`` when nothing).  Supplied by the collector, which owns the profiles."""
ImageCheck = Callable[[str, int], "str | None"]
# the rules' check of a site's tariff against rules/data/tariffs.yaml: (path, problem)s
TariffCheck = Callable[["SiteTariff"], "list[tuple[tuple[Any, ...], str]]"]
"""``check(path, unit_id)``: what is wrong with serving the register dump ``path`` as a
device of unit ``unit_id`` (``None`` when nothing).  Supplied by the simulators."""


def _check_port(parts: SplitResult) -> None:
    try:
        parts.port  # noqa: B018 - raises on a port that is not a number in 0..65535
    except ValueError:
        raise ValueError("the port must be a number from 1 to 65535") from None


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


MqttRole = Literal["collector", "ingester", "rules", "api", "reader"]
InfluxRole = Literal["admin", "writer", "reader"]


def _mqtt_url(v: str) -> str:
    parts = urlsplit(v)
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
        raise ValueError("expected mqtt://host:port or mqtts://host:port")
    _check_port(parts)
    return v


class MqttBridge(_Frozen):
    """A district's broker forwards its collectors' readings, statuses and presence to
    a central broker, and takes back their acknowledgements (and its sites' alerts):
    the mosquitto bridge ``foursave broker-config`` writes (docs/scale.md)."""

    name: str = Field(
        pattern=SLUG,
        description="the district: the bridge logs in to the central broker as "
        "bridge-<name>, with client id foursave-bridge-<name>",
    )
    url: str = Field(description="the central broker: mqtt://host:port or mqtts://host:port")
    ca_file: str | None = Field(
        None, description="mqtts: the CA the central broker's certificate is checked against"
    )
    cert_file: str | None = Field(None, description="mqtts: a client certificate (PEM)")
    key_file: str | None = Field(None, description="mqtts: the client certificate's key (PEM)")
    tls_verify: bool = Field(
        True, description="mqtts: check the central broker's certificate and host name"
    )
    keepalive_s: int = Field(
        30, ge=5, le=3600, description="a silent link is given up after 1.5 x this"
    )
    restart_timeout_s: tuple[int, int] = Field(
        (2, 30),
        description="reconnect after [base, cap] seconds: mosquitto waits a random time "
        "from base, growing up to cap, so districts do not all reconnect at once",
    )
    alerts: bool = Field(True, description="bring the alerts of this district's sites in")
    try_private: bool = Field(
        True,
        description="tell the central broker this client is a bridge (mosquitto's "
        "try_private); false for a broker that refuses such a connection",
    )

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        return _mqtt_url(v)

    @model_validator(mode="after")
    def _check(self) -> MqttBridge:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together")
        if not self.tls and (self.ca_file or self.cert_file):
            raise ValueError("ca_file, cert_file and key_file need an mqtts:// url")
        base, cap = self.restart_timeout_s
        if not 1 <= base <= cap:
            raise ValueError("restart_timeout_s: [base, cap] with 1 <= base <= cap")
        return self

    @property
    def tls(self) -> bool:
        return urlsplit(self.url).scheme == "mqtts"

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or "127.0.0.1"

    @property
    def port(self) -> int:
        return urlsplit(self.url).port or (8883 if self.tls else 1883)


class MqttService(_Frozen):
    url: str = Field(
        "mqtt://127.0.0.1:1883",
        description="mqtt://host:port, or mqtts://host:port (TLS, default port 8883)",
    )
    username: str | None = Field(
        None,
        description="one account for every service (a broker that issues a single one); "
        "without it each service uses its own (core/secrets.py)",
    )
    password_env: str | None = Field(
        None, description="with 'username': the environment variable that holds its password"
    )
    keepalive_s: int = Field(30, ge=5, le=3600)
    ca_file: str | None = Field(
        None,
        description="mqtts: the CA certificates the broker's certificate is checked against "
        "(default: the system's)",
    )
    cert_file: str | None = Field(None, description="mqtts: a client certificate (PEM)")
    key_file: str | None = Field(None, description="mqtts: the client certificate's key (PEM)")
    tls_verify: bool = Field(
        True,
        description="mqtts: check the broker's certificate and host name; false only for a "
        "development broker",
    )
    bridge: MqttBridge | None = Field(
        None, description="this (district) broker forwards to a central one (docs/scale.md)"
    )

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        return _mqtt_url(v)

    @model_validator(mode="after")
    def _tls(self) -> MqttService:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together")
        if not self.tls and (self.ca_file or self.cert_file):
            raise ValueError("ca_file, cert_file and key_file need an mqtts:// url")
        return self

    @property
    def tls(self) -> bool:
        return urlsplit(self.url).scheme == "mqtts"

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or "127.0.0.1"

    @property
    def port(self) -> int:
        return urlsplit(self.url).port or (8883 if self.tls else 1883)

    @property
    def password(self) -> str | None:
        return os.environ.get(self.password_env) if self.password_env else None


class InfluxUsers(_Frozen):
    """The InfluxDB users foursave's services log in as (passwords: core/secrets.py)."""

    admin: str = Field("foursave_admin", description="set-up only: creates the others")
    writer: str = Field("foursave_writer", description="the ingester and the rules engine")
    reader: str = Field("foursave_reader", description="the API and Grafana")


# The fewest days of raw readings the results recomputed from them need (README,
# "Retention"; tests/unit/test_retention_layout.py checks the parts against the rules):
DERIVED_WINDOW_DAYS = 62  # each rules pass recomputes this and last month from the
# readings (rules/engine.py derived_window): on the 31st after a 31-day month its first
# day is 61 days back, 62 with today
BILL_LEAD_DAYS = 39  # with meter-reading dates recorded, last month's bill period (at
# most 40 days, rules/bill.py BILLING_DAYS) begins up to 39 days before that month
RETENTION_MARGIN_DAYS = 7  # a rules engine stopped for a week still finds its inputs
MIN_RAW_DAYS = DERIVED_WINDOW_DAYS + BILL_LEAD_DAYS + RETENTION_MARGIN_DAYS


class InfluxRetention(_Frozen):
    """How long the raw readings are kept (core/retention.py: the retention policies,
    the hourly and daily rollups kept for ever).  Without ``raw_days`` everything is
    kept for ever in the database's default retention policy, as it always was."""

    raw_days: int | None = Field(
        None,
        le=36_500,
        description="days the raw readings are kept (retention policy 'raw'); the rules "
        "engine keeps hourly and daily rollups of them for ever; null: raw kept for ever; "
        f"at least {MIN_RAW_DAYS}",
    )

    @field_validator("raw_days")
    @classmethod
    def _long_enough(cls, v: int | None) -> int | None:
        if v is not None and v < MIN_RAW_DAYS:
            raise ValueError(
                f"{v} days is too short: each rules pass recomputes this and last month's "
                f"bills, demand and PV days from the raw readings, which reach back "
                f"{DERIVED_WINDOW_DAYS} days, and a bill period {BILL_LEAD_DAYS} days "
                f"before its month when meter-reading dates are recorded; with "
                f"{RETENTION_MARGIN_DAYS} days' margin keep at least {MIN_RAW_DAYS} "
                "(or null: for ever)"
            )
        return v

    @property
    def enabled(self) -> bool:
        return self.raw_days is not None


class InfluxService(_Frozen):
    url: str = "http://127.0.0.1:8086"
    database: str = Field("foursave", pattern=r"^[A-Za-z0-9_-]+$")
    username: str | None = None
    password_env: str | None = None
    token_env: str | None = Field(None, description="InfluxDB 2.x/3.x token, v1-compat API")
    users: InfluxUsers = InfluxUsers()
    ca_file: str | None = Field(
        None, description="https: the CA certificates InfluxDB's certificate is checked against"
    )
    tls_verify: bool = Field(
        True, description="https: check InfluxDB's certificate; false only for development"
    )
    retention: InfluxRetention = InfluxRetention()

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("expected http://host:port")
        _check_port(parts)
        return v.rstrip("/")

    @property
    def port(self) -> int:
        return urlsplit(self.url).port or 8086


class CollectorService(_Frozen):
    id: str = Field("collector-1", pattern=SLUG)
    clock: Literal["system", "simulated"] = Field(
        "system", description="stamp readings in real time, or in the simulators' time"
    )
    spool_path: str = "var/collector-spool.sqlite"
    spool_max_readings: int = Field(500_000, ge=10)
    status_interval_s: float = Field(30.0, gt=0)
    max_inflight: int = Field(1000, ge=1, le=65535)
    ack_timeout_s: float = Field(
        10.0,
        gt=0,
        description="a reading unconfirmed this long is published again once there is "
        "evidence it was lost (collector/publisher.py)",
    )


class CollectorShare(_Frozen):
    """One collector of several (top-level ``collectors:``): the devices it owns, by
    site and by device, and its own values of ``services.collector``'s settings (the
    rest it takes from there).  An entry with neither sites nor devices only sets the
    settings of a collector that ``collector_rule`` or a ``collector:`` key names."""

    id: str = Field(pattern=SLUG)
    sites: tuple[str, ...] = Field((), description="every device of these sites")
    devices: tuple[str, ...] = Field((), description="these devices, by id")
    # services.collector's settings, each for this collector only (None: that one's);
    # the same bounds (tests/unit/test_shard.py holds the two lists together)
    clock: Literal["system", "simulated"] | None = None
    spool_path: str | None = Field(None, description="may contain {id}, the collector's")
    spool_max_readings: int | None = Field(None, ge=10)
    status_interval_s: float | None = Field(None, gt=0)
    max_inflight: int | None = Field(None, ge=1, le=65535)
    ack_timeout_s: float | None = Field(None, gt=0)

    def settings(self) -> dict[str, Any]:
        """The settings this entry gives a value of its own."""
        own = self.model_dump(exclude={"id", "sites", "devices"}, exclude_none=True)
        return {k: v for k, v in own.items() if k in CollectorService.model_fields}


class UnknownCollector(ValueError):
    """A collector id the configuration does not have, or none given where several are."""


class IngesterService(_Frozen):
    id: str = Field(
        "ingester-1",
        pattern=SLUG,
        description="this ingester's id (tags, status topic); `foursave ingest --ingester "
        "ID` runs another one from the same file",
    )
    client_id: str = Field(
        "foursave-{id}",
        min_length=1,
        description="MQTT client id, its persistent session's name; {id} is the ingester "
        "id (without {id}, another ingester's is this one followed by -<ID>)",
    )
    instances: list[str] = Field(
        default_factory=list,
        description="ids of further ingesters run from this file (`foursave ingest "
        "--ingester ID`), each with its MQTT account ingester-<ID>, session and files",
    )
    mqtt_version: Literal["5", "3.1.1"] = Field(
        "5",
        description="MQTT protocol: 5 (session expiry set by session_expiry_s, SUBACK "
        "reasons) or 3.1.1 (paho reads each message for less CPU; the session never "
        "expires unless the broker's persistent_client_expiration says so)",
    )
    session_expiry_s: int | None = Field(
        3600,
        ge=1,
        le=4_294_967_294,
        description="MQTT 5 Session Expiry Interval: how long the broker keeps the session "
        "(subscription, queued readings) while the ingester is away; null: never expires; "
        "not for mqtt_version 3.1.1",
    )
    batch_max_lines: int = Field(5000, ge=1, le=100_000)
    batch_max_ms: int = Field(250, ge=1, le=60_000)
    dead_letter_path: str = Field(
        "var/dead-letters.sqlite",
        description="dead letters and seq state (SQLite); {id} is the ingester id",
    )
    retry_max_s: float = Field(30.0, gt=0)
    shared_group: str | None = Field(
        None,
        pattern=SLUG,
        description="ingesters with the same group share the readings between them "
        "(MQTT shared subscription $share/<group>/...); without one each gets them all",
    )
    future_tolerance_s: float = Field(
        300.0,
        gt=0,
        description="readings dated further ahead of the ingester's clock are refused",
    )

    @field_validator("instances")
    @classmethod
    def _instances(cls, v: list[str]) -> list[str]:
        for iid in v:
            if not re.match(SLUG, iid):
                raise ValueError(f"{iid!r} is not a lower-case slug (a-z, 0-9, - and _)")
        if len(set(v)) != len(v):
            raise ValueError("an ingester id is listed twice")
        return v

    @property
    def ids(self) -> list[str]:
        """Every ingester this file runs: ``id`` (the default) and the ``instances``."""
        return [self.id, *(i for i in self.instances if i != self.id)]


class SimulatorService(_Frozen):
    speed: float = Field(1.0, gt=0, description="simulated seconds per real second")
    start: str | None = Field(None, description="ISO date-time the simulated clock starts at")
    anchor: str | None = Field(
        None,
        description="real ISO date-time at which simulated time is 'start'; lets separate "
        "processes share the clock (FOURSAVE_SIM_ANCHOR)",
    )
    seed: int = 2026
    climate: Literal["tainan"] = "tainan"
    cache_dir: str | None = Field(
        "var/sim-cache",
        description="each site's daily counter totals, kept so a start integrates no past "
        "day (simulators/daycache.py); null: integrate from commissioning at every start",
    )

    @field_validator("start", "anchor")
    @classmethod
    def _start(cls, v: str | None) -> str | None:
        if v is not None:
            from foursave.core.clock import parse_start

            parse_start(v)  # ValueError names what is wrong
        return v

    control_host: str = "127.0.0.1"
    control_port: int | None = Field(
        15080, ge=0, le=65535, description="HTTP fault-injection interface; null: none"
    )


class RulesService(_Frozen):
    records_path: str = "var/records.sqlite"
    state_path: str = "var/rules-state.sqlite"
    alerts_path: str = Field(
        "config/alerts.yaml", description="alert rules and notification targets"
    )
    alert_interval_s: float = Field(10.0, gt=0, description="alert evaluation period")
    interval_s: float = Field(600.0, gt=0, description="ledger recomputation period")
    clock: Literal["system", "simulated"] = "system"
    smtp_password_env: str | None = None


class ApiService(_Frozen):
    """``foursave api``.  Security settings (README, "Security: API"):

    - ``max_body_bytes`` / ``max_import_bytes``: the largest request body (JSON routes /
      the CSV records import), enforced before the body is read: a larger
      ``Content-Length`` is refused with 413 at once, a streamed (chunked) body is
      counted and cut off with 413 where it passes the limit.  A body sent to a
      protected route without a valid API key is refused with 401 before it is read.
    - ``heavy_rate_per_s`` / ``heavy_burst``: a token bucket per API key over the
      expensive routes (reports, ``/series``, the records import); past it, 429 with
      ``Retry-After``.
    - ``trusted_proxies``: the only peers whose ``X-Forwarded-For`` / ``-Proto`` are
      believed (IP addresses or CIDR networks).  Empty (the default): the headers are
      ignored from everyone, loopback included, so a client cannot pick its own
      address for the display's rate limit.
    - ``health_max_age_s``: ``/health`` pings InfluxDB at most once per this many
      seconds and answers from the last result in between.
    """

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    keys_path: str = Field("var/api-keys.sqlite", description="API keys, stored hashed")
    reports_path: str = Field("var/reports.sqlite", description="frozen reports of closed periods")
    bootstrap_key_env: str = Field(
        "FOURSAVE_API_BOOTSTRAP_KEY",
        description="environment variable whose value, if set, is accepted as an admin key "
        "(hashed at start-up; for compose and first set-up)",
    )
    display_site: str | None = Field(None, description="site the display shows by default")
    display_refresh_s: float = Field(5.0, gt=0, description="display snapshot refresh period")
    display_stale_after_s: float = Field(
        900.0, gt=0, description="a display value older than this is shown as stale"
    )
    display_rate_per_s: float = Field(
        5.0, gt=0, description="display requests per second allowed per client address"
    )
    display_burst: int = Field(20, ge=1, description="display requests a client may burst")
    close_after_days: int = Field(
        10, ge=0, description="a month's report freezes this many days after it ends"
    )
    max_series_points: int = Field(10_000, ge=10, description="/series: most points per answer")
    max_series_days: int = Field(400, ge=1, description="/series: longest range")
    max_body_bytes: int = Field(
        1_048_576, ge=1024, description="largest request body (JSON) [bytes]; larger: 413"
    )
    max_import_bytes: int = Field(
        20 * 1_048_576, ge=1024, description="largest CSV records import [bytes]; larger: 413"
    )
    heavy_rate_per_s: float = Field(
        1.0, gt=0, description="report, series and import requests per second per API key"
    )
    heavy_burst: int = Field(
        30, ge=1, description="report, series and import requests an API key may burst"
    )
    trusted_proxies: tuple[str, ...] = Field(
        (),
        description="addresses or CIDR networks of reverse proxies whose X-Forwarded-For "
        "is believed; empty: the header is ignored from every peer",
    )
    health_max_age_s: float = Field(
        10.0, gt=0, description="/health pings InfluxDB at most once per this period [s]"
    )

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        import ipaddress

        for entry in v:
            try:
                ipaddress.ip_network(entry, strict=True)
            except ValueError as exc:
                raise ValueError(
                    f"{entry!r} is not an IP address or a CIDR network "
                    f"(e.g. 10.0.0.5 or 10.0.0.0/24): {exc}"
                ) from None
        return v


class Services(_Frozen):
    secrets_file: str | None = Field(
        None,
        description="YAML file of the services' passwords (core/secrets.py); "
        "FOURSAVE_SECRETS_FILE overrides it",
    )
    mqtt: MqttService = MqttService()
    influxdb: InfluxService = InfluxService()
    collector: CollectorService = CollectorService()
    ingester: IngesterService = IngesterService()
    simulator: SimulatorService = SimulatorService()
    rules: RulesService = RulesService()
    api: ApiService = ApiService()

    def mqtt_account(self, role: MqttRole) -> str:
        """The MQTT account ``role``'s process logs in as (core/secrets.py's table)."""
        if self.mqtt.username:
            return self.mqtt.username
        if role == "collector":
            return f"collector-{self.collector.id}"
        if role == "ingester":
            return f"ingester-{self.ingester.id}"
        return role

    def influx_user(self, role: InfluxRole) -> str:
        """The InfluxDB user ``role`` logs in as (``username`` overrides all three)."""
        return self.influxdb.username or getattr(self.influxdb.users, role)


class LedgerSettings(_Frozen):
    """How the four-saving ledger judges this site (presets: rules/data/factors.yaml)."""

    preset: Literal["plan_2011", "plan_2016"] = "plan_2016"
    base_year: int = Field(2024, ge=2000, le=2100, description="EUI base year (2016 plan)")
    exclusions: tuple[str, ...] = Field(
        ("ev_charging",), description="sub-meter roles subtracted from electricity"
    )
    parking_area_m2: float = Field(0.0, ge=0, description="indoor parking, excluded from EUI")
    water_factor_source: str | None = Field(
        None, description="where the tap-water CO2e factor comes from, if not the default"
    )


class SiteTariff(_Frozen):
    """The site's Taipower high-voltage contract (rules/data/tariffs.yaml; bills from
    ``foursave bill``).  The plan's contract types and the industry codes are checked
    against the tariff file (``foursave.app.load_config`` passes the check).  The three
    points ../shared/TARIFFS.md marks as ambiguous are choices, defaulting to its reading."""

    plan: Literal["two_stage", "three_stage"] = Field(
        description="three_stage: 三段式 (peak, semi_peak, sat_semi_peak, off_peak); "
        "two_stage: 二段式 (peak, sat_semi_peak, off_peak)"
    )
    contracts_kw: dict[str, float] = Field(
        description="contract capacity per contract type, kW: three_stage regular, "
        "semi_peak, saturday, off_peak; two_stage regular, non_summer, saturday, off_peak"
    )
    industry: str = Field(
        "831", description="行業別 printed on the bill (its price coefficient, e.g. 831 公共行政)"
    )
    over_contract_price: Literal["contract_type", "regular"] = Field(
        "contract_type",
        description="basic price an over-contract kW pays: the contract type covering its "
        "period (default, TARIFFS.md §4.5a) or the regular contract's for all periods",
    )
    over_contract_base: Literal["stacked", "regular"] = Field(
        "stacked",
        description="'10 % of contract capacity' is of the capacity stacked for the period "
        "(default) or of the regular contract only (TARIFFS.md §4.5b)",
    )
    power_factor_applies_to: Literal["basic_energy", "basic", "total"] = Field(
        "basic_energy",
        description="what the power-factor adjustment multiplies: basic + energy charges "
        "(default, TARIFFS.md §4.6), the basic charge only, or also the over-contract charge",
    )
    bill_difference_share: float = Field(
        0.02, gt=0, lt=1, description="rebuilt vs billed difference that raises an alert"
    )

    @field_validator("contracts_kw")
    @classmethod
    def _capacities(cls, v: dict[str, float]) -> dict[str, float]:
        bad = {k: kw for k, kw in v.items() if not (kw >= 0 and kw == int(kw))}
        if bad:
            raise ValueError(f"capacities are whole kW, 0 or more: {bad}")
        return v


class Site(_Frozen):
    id: str = Field(pattern=SLUG)
    name: str
    name_en: str | None = None
    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)
    timezone: str = Field("Asia/Taipei", description="IANA zone: local days, months and hours")
    floor_area_m2: float | None = Field(None, gt=0)
    contract_capacity_kw: float | None = Field(None, gt=0)
    pv_capacity_kwp: float | None = Field(None, gt=0)
    tariff: SiteTariff | None = Field(None, description="Taipower contract: the monthly bill")
    ledger: LedgerSettings = LedgerSettings()
    collector: str | None = Field(
        None, pattern=SLUG, description="the collector that polls every device of the site"
    )

    @field_validator("timezone")
    @classmethod
    def _zone(cls, v: str) -> str:
        from foursave.core.periods import zone

        zone(v)  # ValueError names the zone
        return v


class SerialLine(_Frozen):
    port: str = Field(description="serial device, e.g. /dev/ttyUSB0")
    baudrate: int = Field(9600, gt=0)
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1
    bytesize: Literal[7, 8] = 8


class Simulation(_Frozen):
    """How ``foursave sim`` and ``foursave backfill`` simulate this device (absent for
    real devices).  Models: ``pv`` (an inverter), load sub-meters ``hvac``,
    ``lighting``, ``plugs``, ``ev_charging`` (``load``: a generic office load),
    ``main`` (sum of the site's load meters + unmetered - PV behind it), ``pv_meter``
    (sum of the site's inverters), ``weather``, ``water``.

    Or ``image``: a register dump (``foursave capture``, ``../shared/devices/``) served
    as it is, without physics (``simulators/image.py``); a relative path is taken from
    the configuration file's folder.  A replayed device has no history to backfill."""

    model: (
        Literal[
            "pv",
            "hvac",
            "lighting",
            "plugs",
            "ev_charging",
            "load",
            "main",
            "pv_meter",
            "weather",
            "water",
        ]
        | None
    ) = None
    image: str | None = Field(
        None, description="register dump (JSON) to serve instead of a model with physics"
    )
    rated_power_w: float = Field(5000.0, gt=0, description="inverter AC rating or peak load")
    dc_kwp: float | None = Field(None, gt=0, description="pv: array size (default 1.2 x AC)")
    tilt_deg: float = Field(10.0, ge=0, le=90)
    azimuth_deg: float = Field(180.0, ge=0, lt=360, description="180 = facing south")
    behind_main: bool = Field(True, description="pv: the main meter sees this inverter")
    unmetered_w: float = Field(0.0, ge=0, description="main: load without a sub-meter")
    peak_flow_m3h: float = Field(2.0, gt=0)
    night_flow_m3h: float = Field(0.02, ge=0)
    commissioned: date = Field(date(2025, 1, 1), description="counters start from 0 here")
    sunspec_models: tuple[int, ...] | None = None
    listen_host: str = "127.0.0.1"
    listen_port: int | None = Field(None, ge=1, le=65535)
    serial_port: str | None = Field(None, description="rtu: the simulator's end of the line")

    @field_validator("image")
    @classmethod
    def _image_path(cls, v: str | None, info: ValidationInfo) -> str | None:
        """A relative path is the configuration file's neighbour, wherever the command
        runs (``parse_config``'s ``base_dir``)."""
        if v is None:
            return None
        if not v.strip():
            raise ValueError("expected the path of a register dump (JSON)")
        base = (info.context or {}).get("base_dir")
        path = Path(v).expanduser()
        # absolute: the configuration may be dumped and loaded again from elsewhere
        return str(path if path.is_absolute() or base is None else Path(base).absolute() / path)

    @model_validator(mode="after")
    def _model_or_image(self) -> Simulation:
        if (self.model is None) == (self.image is None):
            raise ValueError(
                "give 'model' (a simulated device with physics) or 'image' (a register "
                "dump to replay), one of them"
            )
        if self.image is not None:
            # a key of the physics with a value of its own (a dumped and reloaded
            # configuration carries every default: those mean nothing here either)
            physics = sorted(
                k
                for k in self.model_fields_set - _REPLAY_KEYS
                if getattr(self, k) != type(self).model_fields[k].default
            )
            if physics:
                raise ValueError(
                    f"{physics} describe a simulated model; a replayed image takes only "
                    f"{sorted(_REPLAY_KEYS)}"
                )
        return self


_REPLAY_KEYS = {"image", "listen_host", "listen_port", "serial_port"}


class ArraySpec(_Frozen):
    """The PV array behind an inverter, as installed (PV performance needs P0)."""

    dc_kwp: float = Field(gt=0, description="P0: array rated power at STC")
    tilt_deg: float = Field(10.0, ge=0, le=90)
    azimuth_deg: float = Field(180.0, ge=0, lt=360)
    gamma_pdc: float = Field(
        -0.0037, lt=0, gt=-0.02, description="power temperature coefficient [1/°C]"
    )


class FieldBounds(_Frozen):
    """A device's own bounds for one field: narrower than the glossary's, never wider."""

    min: float | None = None
    max: float | None = None


Transport = Literal["tcp", "rtu", "rtu-over-tcp"]
Kind = Literal["inverter", "meter", "weather", "water"]


class Device(_Frozen):
    id: str = Field(pattern=SLUG)
    site: str
    kind: Kind
    role: str | None = Field(None, pattern=SLUG)
    profile: str = Field(description="'sunspec' or a file name in collector/profiles/")
    transport: Transport = "tcp"
    host: str | None = None
    port: int = Field(502, ge=1, le=65535)
    serial: SerialLine | None = None
    unit_id: int = Field(1, ge=0, le=255, description="RTU: 1-247; Modbus TCP also 0 or 255")
    interval_s: float = Field(5.0, ge=0.05, le=86_400)
    timeout_s: float = Field(1.0, gt=0, le=60)
    retries: int = Field(2, ge=0, le=10)
    backoff_max_s: float = Field(60.0, gt=0)
    array: ArraySpec | None = Field(None, description="inverters: the array as installed")
    sunspec_base: int | None = Field(
        None,
        ge=0,
        le=65533,
        description="the address of the 'SunS' marker, as the vendor documents it (some "
        "meters use 4096); without it discovery tries 40000, 0 and 50000",
    )
    power_factor: Literal["auto", "percent", "ratio"] = Field(
        "auto",
        description="SunSpec: what the device's PF point holds; auto decides from W / VA "
        "and the value's magnitude (docs/design.md, 'Power factor')",
    )
    rated_power_w: float | None = Field(
        None,
        gt=0,
        description="rated power [W]: an inverter's AC rating (else SunSpec WRtg, model 120, "
        "when the device has it), a meter's CT or breaker rating; power reads at most "
        "1.5 x this, either sign (core/glossary.py, RATED_POWER_MULTIPLE)",
    )
    bounds: dict[str, FieldBounds] = Field(
        default_factory=dict,
        description="field -> {min, max}: narrower bounds than the glossary's (never wider); "
        "a value outside is left out of the reading and counted",
    )
    simulate: Simulation | None = None
    collector: str | None = Field(None, pattern=SLUG, description="the collector that polls it")

    def field_bounds(self, device_rating_w: float | None = None) -> dict[str, Bounds]:
        """The bounds each field of this device's readings must keep: the glossary's,
        narrowed by the rating (the configured one first, else ``device_rating_w``, what
        the device says of itself) and by ``bounds``."""
        narrow = {name: (b.min, b.max) for name, b in self.bounds.items()}
        return device_bounds(self.kind, self.rated_power_w or device_rating_w, narrow)

    @model_validator(mode="after")
    def _requirements(self) -> Device:
        problems = device_requirements(self.model_dump())
        if problems:
            raise ValueError(problems[0])
        return self


class Gateway(_Frozen):
    """A Modbus gateway (TCP to RS-485) or a serial line that several devices share, and
    how the collector paces it.  Devices join it by address: ``host`` and ``port``
    (transports ``tcp`` and ``rtu-over-tcp``) or ``serial_port`` (``rtu``).  A shared
    address without an entry gets these defaults: one connection, no pauses."""

    host: str | None = Field(None, description="the gateway's address, as its devices give it")
    port: int = Field(502, ge=1, le=65535)
    serial_port: str | None = Field(None, description="rtu: the serial line, e.g. /dev/ttyUSB0")
    max_connections: int = Field(
        1,
        ge=1,
        le=16,
        description="TCP connections the collector keeps to it at once, polling its units "
        "in parallel (many gateways accept 1 to 4); a serial line has one",
    )
    request_gap_s: float = Field(
        0.0,
        ge=0,
        le=10,
        description="pause after each answer (or timeout) before the next request on a connection",
    )
    connect_pause_s: float = Field(
        0.0, ge=0, le=60, description="pause after connecting before the first request"
    )
    isolate_failing_units: bool = Field(
        True,
        description="a unit that fails is not retried within its poll, and while it backs off "
        "it is polled only when no healthy unit is due (collector/line.py)",
    )

    @model_validator(mode="after")
    def _address(self) -> Gateway:
        if self.host is None and self.serial_port is None:
            raise ValueError("give 'host' (and 'port') for a gateway or 'serial_port' for a line")
        if self.host is not None and self.serial_port is not None:
            raise ValueError("give 'host' or 'serial_port', not both")
        if self.serial_port is not None:
            if "port" in self.model_fields_set:
                raise ValueError("a serial line has no 'port': 'serial_port' names it")
            if self.max_connections != 1:
                raise ValueError(
                    f"max_connections {self.max_connections}: a serial line is one connection"
                )
        return self

    def address(self) -> str:
        return self.serial_port if self.serial_port is not None else f"{self.host}:{self.port}"

    def serves(self, d: Device) -> bool:
        """Whether device ``d`` is behind this gateway (same host and port, or serial line)."""
        if d.transport == "rtu":
            return d.serial is not None and d.serial.port == self.serial_port
        return self.host is not None and (d.host, d.port) == (self.host, self.port)


def device_requirements(raw: Mapping[str, Any]) -> list[str]:
    """Keys a device needs together.  Also run on the raw file, before the fields are
    validated, so that a wrong field elsewhere in the device does not hide these."""
    problems = []
    transport = raw.get("transport", "tcp")
    if transport in ("tcp", "rtu-over-tcp") and not raw.get("host"):
        problems.append(f"transport {transport!r} needs 'host'")
    if transport == "rtu" and not raw.get("serial"):
        problems.append("transport 'rtu' needs a 'serial' section (port, baudrate, ...)")
    if raw.get("kind") == "meter" and not raw.get("role"):
        problems.append("a meter needs a 'role' (main, hvac, lighting, pv, ev_charging, ...)")
    return problems


COLLECTOR_RULES = {"by_site": "{site}"}
"""``collector_rule`` names and the pattern each stands for."""


class Config(_Frozen):
    services: Services = Services()
    sites: tuple[Site, ...] = Field(min_length=1)
    devices: tuple[Device, ...] = ()
    gateways: tuple[Gateway, ...] = Field(
        (), description="gateways and serial lines shared by several devices: their pacing"
    )
    collectors: tuple[CollectorShare, ...] = Field(
        (), description="several collectors: each one's sites and devices, and settings"
    )
    collector_rule: str | None = Field(
        None,
        description="the collector of every device no entry or key names: 'by_site' (the "
        "site's id) or a pattern of its id with {site}, e.g. 'tainan-{site}'",
    )
    _assignment: Assignment | None = PrivateAttr(None)

    @field_validator("collector_rule")
    @classmethod
    def _rule(cls, v: str | None) -> str | None:
        if v is None:
            return v
        try:
            parts = list(string.Formatter().parse(COLLECTOR_RULES.get(v, v)))
        except ValueError as exc:
            raise ValueError(f"not a pattern: {exc}") from None
        bad = [
            "{" + name + (f"!{conv}" if conv else "") + (f":{spec}" if spec else "") + "}"
            for _, name, spec, conv in parts
            if name is not None and (name != "site" or spec or conv)
        ]
        if bad:
            raise ValueError(
                f"{', '.join(bad)}: expected 'by_site' or a pattern of the collector id in "
                "which {site} stands for the device's site, e.g. 'tainan-{site}'"
            )
        return v

    @model_validator(mode="after")
    def _cross(self, info: ValidationInfo) -> Config:
        errors: list[tuple[tuple[Any, ...], str]] = []
        # register-map profiles are the collector's data: whoever loads the configuration
        # may pass their check in the validation context (foursave.app.load_config does)
        check_profile: ProfileCheck | None = (info.context or {}).get("check_profile")
        check_image: ImageCheck | None = (info.context or {}).get("check_image")
        check_tariff: TariffCheck | None = (info.context or {}).get("check_tariff")
        if check_tariff is not None:
            for i, st in enumerate(self.sites):
                if st.tariff is not None:
                    errors.extend(
                        (("sites", i, "tariff", *where), msg)
                        for where, msg in check_tariff(st.tariff)
                    )
        site_ids = [s.id for s in self.sites]
        for i, sid in enumerate(site_ids):
            if site_ids.index(sid) != i:
                errors.append((("sites", i, "id"), f"duplicate site id {sid!r}"))
        seen: dict[str, int] = {}
        endpoints: dict[tuple[object, ...], int] = {}
        for i, d in enumerate(self.devices):
            if d.id in seen:
                errors.append(
                    (
                        ("devices", i, "id"),
                        f"duplicate device id {d.id!r} (also devices[{seen[d.id]}])",
                    )
                )
            seen.setdefault(d.id, i)
            if d.site not in site_ids:
                errors.append(
                    (("devices", i, "site"), f"unknown site {d.site!r}; sites are {site_ids}")
                )
            # one unit may carry logical devices of different kinds (an inverter and its
            # meter in one SunSpec chain): each device entry takes the models of its kind
            ep = (
                d.transport,
                d.host,
                d.port,
                d.serial.port if d.serial else None,
                d.unit_id,
                d.kind,
            )
            if ep in endpoints:
                errors.append(
                    (
                        ("devices", i, "unit_id"),
                        f"same address, unit id and kind as devices[{endpoints[ep]}]",
                    )
                )
            endpoints.setdefault(ep, i)
            if check_profile is not None:
                problem = check_profile(d.profile, d.kind)
                if problem:
                    errors.append((("devices", i, "profile"), problem))
            errors.extend((("devices", i, *where), msg) for where, msg in bounds_problems(d))
            if check_image is not None and d.simulate is not None and d.simulate.image:
                problem = check_image(d.simulate.image, d.unit_id)
                if problem:
                    errors.append((("devices", i, "simulate", "image"), problem))
        errors.extend(gateway_problems(self))
        assignment, problems = collector_assignment(self)
        errors.extend(problems)
        if errors:
            raise _CrossErrors(errors)
        self._assignment = assignment
        return self

    def site(self, site_id: str) -> Site:
        return next(s for s in self.sites if s.id == site_id)

    def device(self, device_id: str) -> Device:
        return next(d for d in self.devices if d.id == device_id)

    def gateway_for(self, d: Device) -> Gateway | None:
        """The gateway or serial line entry device ``d`` is behind, if there is one."""
        return next((g for g in self.gateways if g.serves(d)), None)

    # ------------------------------------------------------------ collectors

    def _owners(self) -> Assignment:
        if self._assignment is None:  # a Config made without validation
            self._assignment = collector_assignment(self)[0]
        return self._assignment

    def collector_ids(self) -> list[str]:
        """Every collector of the configuration: those of ``collectors:`` in their
        order, then the others as they first own a device; without any assignment the
        one ``services.collector.id``."""
        a = self._owners()
        return [self.services.collector.id] if a.single else list(a.shares)

    def collector_of(self, device_id: str) -> str:
        """The collector that polls device ``device_id`` (``KeyError``: no such device)."""
        a = self._owners()
        if device_id not in a.owner:
            raise KeyError(f"no device {device_id!r} in the configuration")
        return self.services.collector.id if a.single else a.owner[device_id]

    def collector_reason(self, device_id: str) -> str:
        """Where the configuration gives device ``device_id`` its collector
        (``collectors[0].sites[1]``, ``devices[3].collector``, ``collector_rule``, ...)."""
        self.collector_of(device_id)
        return self._owners().why[device_id]

    def collector_devices(self, collector_id: str) -> list[Device]:
        """The devices collector ``collector_id`` polls, in the file's order."""
        self._known_collector(collector_id)
        a = self._owners()
        return list(self.devices) if a.single else [self.devices[i] for i in a.shares[collector_id]]

    def collector_settings(self, collector_id: str) -> CollectorService:
        """``services.collector`` as collector ``collector_id`` runs with it: its id,
        its ``collectors:`` entry's settings, ``{id}`` in ``spool_path`` replaced."""
        self._known_collector(collector_id)
        base = self.services.collector
        share = next((c for c in self.collectors if c.id == collector_id), None)
        own = share.settings() if share is not None else {}
        spool = instance_path(own.get("spool_path", base.spool_path), collector_id)
        return base.model_copy(update={**own, "id": collector_id, "spool_path": spool})

    def collector_setting_path(self, collector_id: str, name: str) -> str:
        """Where collector ``collector_id``'s setting ``name`` is given, for messages."""
        for i, c in enumerate(self.collectors):
            if c.id == collector_id and name in c.settings():
                return f"collectors[{i}].{name}"
        return f"services.collector.{name}"

    def for_collector(self, collector_id: str) -> Config:
        """This configuration as collector ``collector_id`` sees it: its settings in
        ``services.collector`` (so its MQTT account, client id, topics and spool are
        its own); ``collector_devices`` gives its devices."""
        services = self.services.model_copy(
            update={"collector": self.collector_settings(collector_id)}
        )
        return self.model_copy(update={"services": services})

    def pick_collector(self, requested: str | None) -> str:
        """The collector ``foursave collect`` runs: ``requested``, or the only one;
        ``UnknownCollector`` for an id the configuration does not have, or for none
        given where it has several (they are listed: none is run by default)."""
        ids = self.collector_ids()
        if requested is None:
            if len(ids) == 1:
                return ids[0]
            raise UnknownCollector(
                f"this configuration has {len(ids)} collectors: {_some(ids)}; name the one "
                "to run with --collector ID"
            )
        self._known_collector(requested)
        return requested

    def _known_collector(self, collector_id: str) -> None:
        ids = self.collector_ids()
        if collector_id not in ids:
            raise UnknownCollector(
                f"no collector {collector_id!r} in this configuration; its collectors are "
                f"{_some(ids)}"
            )


@dataclass(frozen=True)
class Assignment:
    """Which collector polls each device (``collector_assignment``)."""

    owner: dict[str, str]  # device id -> collector id
    why: dict[str, str]  # device id -> where the configuration says so
    shares: dict[str, tuple[int, ...]]  # every collector (listed ones first) -> its devices
    single: bool  # nothing assigns devices: services.collector.id owns them all


def _some(ids: list[str], most: int = 12) -> str:
    shown = ", ".join(ids[:most])
    return shown + (f" and {len(ids) - most} more" if len(ids) > most else "")


def _address(d: Device) -> str:
    """The gateway, serial line or device address a device is reached at."""
    return (d.serial.port if d.serial else "") if d.transport == "rtu" else f"{d.host}:{d.port}"


def collector_assignment(cfg: Config) -> tuple[Assignment, list[tuple[tuple[Any, ...], str]]]:
    """Which collector polls each device, and what is wrong with what the
    configuration says of it (path, message).  The one place this is decided
    (``Config.collector_of`` and ``collector_devices`` read it).

    A device's collector is named by the ``collectors:`` entry that lists it or its
    site, or by a ``collector:`` key on it or on its site; every such claim must name
    the same collector (a device two collectors own is refused, a device listed under
    another collector than its site's too).  A device nobody names goes to
    ``collector_rule``'s collector for its site; with no rule, it is refused.  With
    none of these in the file, ``services.collector.id`` owns every device, as a
    configuration of one collector always did."""
    problems: list[tuple[tuple[Any, ...], str]] = []
    site_ids = [s.id for s in cfg.sites]
    device_by_id = {d.id: d for d in cfg.devices}
    first_index: dict[str, int] = {}  # a duplicate id (refused) is one device here
    for i, d in enumerate(cfg.devices):
        first_index.setdefault(d.id, i)
    by_site: dict[str, list[Device]] = {}
    for d in cfg.devices:
        by_site.setdefault(d.site, []).append(d)
    keyed = any(s.collector for s in cfg.sites) or any(d.collector for d in cfg.devices)
    if not (cfg.collectors or cfg.collector_rule is not None or keyed):
        everyone = {d.id: cfg.services.collector.id for d in cfg.devices}
        all_ = {cfg.services.collector.id: tuple(range(len(cfg.devices)))}
        why = dict.fromkeys(everyone, "services.collector.id")
        return Assignment(everyone, why, all_, True), problems

    rule = COLLECTOR_RULES.get(cfg.collector_rule or "", cfg.collector_rule)
    rule_ids: dict[str, str] = {}  # site -> the collector the rule gives it
    if rule is not None:
        for sid in site_ids:
            cid = rule.format(site=sid)
            rule_ids[sid] = cid
            if not re.fullmatch(SLUG, cid):
                problems.append(
                    (
                        ("collector_rule",),
                        f"gives site {sid!r} the collector id {cid!r}: lower-case letters, "
                        "digits, '_' and '-' expected",
                    )
                )
    listed: dict[str, int] = {}
    for i, c in enumerate(cfg.collectors):
        if c.id in listed:
            problems.append(
                (
                    ("collectors", i, "id"),
                    f"duplicate collector id {c.id!r} (also collectors[{listed[c.id]}])",
                )
            )
        listed.setdefault(c.id, i)
    known = set(listed) | set(rule_ids.values())

    claims: dict[str, list[tuple[str, str]]] = {}  # device -> (collector, where)

    def claim(devices: list[Device], cid: str, where: Loc) -> None:
        for d in devices:
            claims.setdefault(d.id, []).append((cid, format_path(where)))

    troubled: set[int] = set()  # entries naming what is not there
    for i, c in enumerate(cfg.collectors):
        for field, ids, universe in (
            ("sites", c.sites, site_ids),
            ("devices", c.devices, list(device_by_id)),
        ):
            seen: dict[str, int] = {}
            for j, ref in enumerate(ids):
                where: Loc = ("collectors", i, field, j)
                if ref in seen:
                    problems.append(
                        (where, f"{ref!r} is also collectors[{i}].{field}[{seen[ref]}]")
                    )
                    continue
                seen[ref] = j
                if field == "sites" and ref in by_site:
                    claim(by_site[ref], c.id, where)
                elif field == "devices" and ref in device_by_id:
                    claim([device_by_id[ref]], c.id, where)
                elif field == "devices" or ref not in site_ids:
                    among = _some(site_ids if field == "sites" else sorted(universe))
                    troubled.add(i)
                    problems.append((where, f"unknown {field[:-1]} {ref!r}; {field} are {among}"))

    keyed_unknown: list[str] = []  # collector keys naming no collector (a typo of one?)

    def keyed_claim(cid: str | None, devices: list[Device], where: Loc) -> None:
        if cid is None:
            return
        if cfg.collectors and cid not in known:
            keyed_unknown.append(cid)
            problems.append(
                (where, f"unknown collector {cid!r}; collectors are {_some(sorted(known))}")
            )
            return
        claim(devices, cid, where)

    for k, s in enumerate(cfg.sites):
        keyed_claim(s.collector, by_site.get(s.id, []), ("sites", k, "collector"))
    for i, d in enumerate(cfg.devices):
        keyed_claim(d.collector, [d], ("devices", i, "collector"))

    owner: dict[str, str] = {}
    why = {}
    for i, d in enumerate(cfg.devices):
        said = claims.get(d.id, [])
        named = list(dict.fromkeys(cid for cid, _ in said))
        if len(named) > 1:
            first = {cid: next(w for c, w in said if c == cid) for cid in named}
            both = " and ".join(f"{cid!r} ({w})" for cid, w in first.items())
            problems.append(
                (
                    ("devices", i),
                    f"{d.id} is owned by collectors {both}; a device has one collector",
                )
            )
        elif named:
            owner[d.id], why[d.id] = named[0], said[0][1]
        elif rule is not None:
            owner[d.id], why[d.id] = (
                rule_ids.get(d.site) or rule.format(site=d.site),
                "collector_rule",
            )
        else:
            problems.append(
                (
                    ("devices", i),
                    f"no collector owns {d.id}: list it or its site under an entry of "
                    "'collectors', give it or its site a 'collector:', or set 'collector_rule'",
                )
            )
    members: dict[str, list[int]] = {cid: [] for cid in listed}
    for i, d in enumerate(cfg.devices):
        if owner.get(d.id) is not None and i == first_index[d.id]:
            members.setdefault(owner[d.id], []).append(i)
    owning = set(owner.values()) | {cid for said in claims.values() for cid, _ in said}
    for cid, i in listed.items():
        if cid not in owning and i not in troubled and not keyed_unknown:
            problems.append(
                (
                    ("collectors", i),
                    f"collector {cid!r} owns no device: give it 'sites' or 'devices' (or let "
                    "collector_rule or a 'collector:' key name it)",
                )
            )
    # a gateway or serial line is paced by the one collector that polls it
    first_at: dict[str, int] = {}
    for j, d in enumerate(cfg.devices):
        if d.id not in owner:
            continue
        addr = _address(d)
        if addr not in first_at:
            first_at[addr] = j
            continue
        d0 = cfg.devices[first_at[addr]]
        if owner[d.id] != owner[d0.id]:
            problems.append(
                (
                    ("devices", j),
                    f"reached at {addr} like devices[{first_at[addr]}], which collector "
                    f"{owner[d0.id]!r} owns, but collector {owner[d.id]!r} owns it; the "
                    "devices of one gateway or serial line go to one collector (it paces "
                    "the line)",
                )
            )
    shares = {cid: tuple(ids) for cid, ids in members.items()}
    return Assignment(owner, why, shares, False), problems


def gateway_problems(cfg: Config) -> list[tuple[tuple[Any, ...], str]]:
    """What is wrong between ``gateways`` and ``devices``: an address given twice, an
    entry no device is behind (a typo would leave its devices unpaced), devices that
    reach one gateway with different framings."""
    problems: list[tuple[tuple[Any, ...], str]] = []
    seen: dict[str, int] = {}
    for i, g in enumerate(cfg.gateways):
        where = ("gateways", i)
        if g.address() in seen:
            problems.append((where, f"{g.address()} is also gateways[{seen[g.address()]}]"))
            continue
        seen[g.address()] = i
        behind = [(j, d) for j, d in enumerate(cfg.devices) if g.serves(d)]
        if not behind:
            key = "serial.port" if g.serial_port is not None else "host and port"
            problems.append((where, f"no device is behind {g.address()} (devices join by {key})"))
            continue
        j0, d0 = behind[0]
        for j, d in behind[1:]:
            if d.transport != d0.transport:
                problems.append(
                    (
                        ("devices", j, "transport"),
                        f"{d.transport!r}, but devices[{j0}] reaches gateway {g.address()} "
                        f"over {d0.transport!r}; a gateway speaks one framing",
                    )
                )
    return problems


def bounds_problems(d: Device) -> list[tuple[tuple[str, ...], str]]:
    """What is wrong with a device's ``rated_power_w`` and ``bounds`` (path inside the
    device, message): a field its kind does not have, an empty range, or a range wider
    than the glossary's physical bounds (a device may only narrow them)."""
    problems: list[tuple[tuple[str, ...], str]] = []
    known = FIELDS[d.kind]
    if d.rated_power_w is not None and not any(f.rating_multiple for f in known.values()):
        problems.append((("rated_power_w",), f"a {d.kind} device has no power field to rate"))
    for name, b in d.bounds.items():
        fdef = known.get(name)
        if fdef is None:
            problems.append(
                (
                    ("bounds", name),
                    f"unknown field {name!r} for a {d.kind}; its fields are {sorted(known)}",
                )
            )
            continue
        physics = fdef.bounds
        why = f"the physical bounds of {name}, {physics.describe()} (core/glossary.py)"
        if b.min is None and b.max is None:
            problems.append((("bounds", name), "give 'min', 'max' or both"))
        elif b.min is not None and b.max is not None and b.min > b.max:
            problems.append((("bounds", name), f"min {b.min:g} is above max {b.max:g}"))
        if b.min is not None and physics.min is not None and b.min < physics.min:
            problems.append(
                (("bounds", name, "min"), f"{b.min:g} is below {why}; bounds only narrow")
            )
        if b.max is not None and physics.max is not None and b.max > physics.max:
            problems.append(
                (("bounds", name, "max"), f"{b.max:g} is above {why}; bounds only narrow")
            )
    return problems


class _CrossErrors(ValueError):
    def __init__(self, errors: list[tuple[tuple[Any, ...], str]]):
        super().__init__("; ".join(m for _, m in errors))
        self.errors = errors


# ---------------------------------------------------------------- errors and loading


@dataclass(frozen=True)
class ConfigIssue:
    file: str
    line: int | None
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.path or '(top level)'}: {self.message}"


class ConfigError(Exception):
    """A configuration file that cannot be used, with every problem found in it."""

    def __init__(self, issues: list[ConfigIssue]):
        self.issues = issues
        super().__init__("\n".join(str(i) for i in issues))


def format_path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


Loc = tuple[str | int, ...]  # a path inside the document: ("devices", 3, "profile")


def _line_index(
    node: yaml.Node,
    prefix: Loc = (),
    into: dict[Loc, int] | None = None,
    dups: list[tuple[Loc, int]] | None = None,
) -> dict[Loc, int]:
    """Map each path inside the YAML document to its 1-based line number; collect
    duplicate keys in ``dups`` (YAML would silently keep the last one)."""
    into = {} if into is None else into
    into[prefix] = node.start_mark.line + 1
    if len(prefix) > 50:
        raise ConfigError([ConfigIssue("", node.start_mark.line + 1, "", "nesting too deep")])
    if isinstance(node, yaml.MappingNode):
        seen_keys: set[str] = set()
        for key, value in node.value:
            k = (*prefix, key.value)
            if dups is not None and key.value in seen_keys:
                dups.append((k, key.start_mark.line + 1))
            seen_keys.add(key.value)
            into[k] = key.start_mark.line + 1
            _line_index(value, k, into, dups)
            into[k] = key.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _line_index(item, (*prefix, i), into, dups)
    return into


def _line_for(lines: Mapping[Loc, int], loc: Loc) -> int | None:
    loc = tuple(loc)
    while loc:
        if loc in lines:
            return lines[loc]
        loc = loc[:-1]
    return lines.get(())


_PYDANTIC_NOISE = re.compile(r"^(Value error|Assertion failed), ")


def _explain(err: Mapping[str, Any]) -> str:
    msg = _PYDANTIC_NOISE.sub("", err["msg"])
    kind = err.get("type", "")
    if kind == "extra_forbidden":
        return "unknown key (check the spelling; see config/demo.yaml for the keys)"
    if kind == "missing":
        return "required key is missing"
    if "input" in err and kind not in ("model_type", "dict_type"):
        given = err["input"]
        if not isinstance(given, (dict, list)):
            msg += f" (got {given!r})"
    return msg


def apply_env(raw: dict[str, Any], env: Mapping[str, str]) -> dict[str, Any]:
    """Let FOURSAVE_* environment variables override service addresses."""
    services = raw.setdefault("services", {}) or {}
    raw["services"] = services
    if not isinstance(services, dict):
        return raw
    overrides = {
        "FOURSAVE_MQTT_URL": ("mqtt", "url"),
        "FOURSAVE_MQTT_USERNAME": ("mqtt", "username"),
        "FOURSAVE_INFLUXDB_URL": ("influxdb", "url"),
        "FOURSAVE_INFLUXDB_DATABASE": ("influxdb", "database"),
        "FOURSAVE_INFLUXDB_USERNAME": ("influxdb", "username"),
        "FOURSAVE_SIM_ANCHOR": ("simulator", "anchor"),
    }
    for var, (section, key) in overrides.items():
        if env.get(var):
            sect = services.setdefault(section, {}) or {}
            if isinstance(sect, dict):
                sect[key] = env[var]
                services[section] = sect
    return raw


def parse_config(
    text: str,
    filename: str = "<config>",
    env: Mapping[str, str] | None = None,
    check_profile: ProfileCheck | None = None,
    *,
    base_dir: str | os.PathLike[str] | None = None,
    check_image: ImageCheck | None = None,
    check_tariff: TariffCheck | None = None,
) -> Config:
    """The configuration in ``text``.  ``base_dir`` is the folder a relative register
    dump (``simulate.image``) is taken from (``load_config``: the file's own); ``None``
    leaves it relative to the working directory."""
    try:
        node = yaml.compose(text)
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else None
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([ConfigIssue(filename, line, "", f"not valid YAML: {problem}")]) from None
    if not isinstance(raw, dict):
        raise ConfigError(
            [ConfigIssue(filename, 1, "", "expected a mapping with 'sites' and 'devices'")]
        )
    dups: list[tuple[Loc, int]] = []
    try:
        lines = _line_index(node, dups=dups) if node is not None else {}
    except (ConfigError, RecursionError):
        raise ConfigError(
            [ConfigIssue(filename, None, "", "aliases refer to themselves or nest too deep")]
        ) from None
    if dups:
        raise ConfigError(
            [ConfigIssue(filename, line, format_path(k), "key given twice") for k, line in dups]
        )
    if "services" in raw and not isinstance(raw["services"], dict):
        raise ConfigError(
            [ConfigIssue(filename, lines.get(("services",)), "services", "expected a mapping")]
        )
    raw = apply_env(raw, os.environ if env is None else env)
    early: list[ConfigIssue] = []
    devices = raw.get("devices")
    if isinstance(devices, list):
        for i, d in enumerate(devices):
            if isinstance(d, dict):
                for problem in device_requirements(d):
                    loc = ("devices", i)
                    early.append(
                        ConfigIssue(filename, _line_for(lines, loc), format_path(loc), problem)
                    )
    try:
        cfg = Config.model_validate(
            raw,
            context={
                "check_profile": check_profile,
                "check_image": check_image,
                "check_tariff": check_tariff,
                "base_dir": base_dir,
            },
        )
    except ValidationError as exc:
        issues = list(early)
        for err in exc.errors():
            ctx_err = (err.get("ctx") or {}).get("error")
            if isinstance(ctx_err, _CrossErrors):
                for loc, message in ctx_err.errors:
                    issues.append(
                        ConfigIssue(filename, _line_for(lines, loc), format_path(loc), message)
                    )
                continue
            where: Loc = tuple(err["loc"])
            issue = ConfigIssue(
                filename, _line_for(lines, where), format_path(where), _explain(err)
            )
            if issue not in issues:
                issues.append(issue)
        raise ConfigError(sorted(issues, key=lambda i: i.line or 0)) from None
    if early:
        raise ConfigError(early)
    return cfg


def load_config(
    path: str | os.PathLike[str],
    env: Mapping[str, str] | None = None,
    check_profile: ProfileCheck | None = None,
    *,
    check_image: ImageCheck | None = None,
    check_tariff: TariffCheck | None = None,
) -> Config:
    """The configuration in ``path``, or ``ConfigError`` naming every problem with its
    file, line and path.  Profiles are checked only when ``check_profile`` is given;
    ``foursave.app.load_config`` gives the collector's.  Register dumps
    (``simulate.image``, taken relative to the file's folder) are checked only when
    ``check_image`` is given."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([ConfigIssue(str(p), None, "", "file not found")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([ConfigIssue(str(p), None, "", f"cannot read: {exc}")]) from None
    return parse_config(
        text,
        str(p),
        env,
        check_profile,
        base_dir=p.parent,
        check_image=check_image,
        check_tariff=check_tariff,
    )

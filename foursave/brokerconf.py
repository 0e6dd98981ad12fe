"""``foursave broker-config``: mosquitto's password file and ACL, made from the
configuration (docs/security.md).

Each service logs in with an account of its own (``core/secrets.py``) and may do only
its job:

- a collector publishes readings and status for the devices it owns and its own
  presence (with its last will), and reads the acknowledgements meant for it; each
  collector of a configuration that has several (``Config.collector_ids``) has an
  account of its own (``collector-<id>``), for its own share of the devices only;
- an ingester reads readings and statuses, and publishes acknowledgements and its own
  status;
- the rules engine publishes alerts, and reads and writes the claims its partitions
  hold on their sites (``rules/claim.py``);
- the API reads statuses;
- ``reader`` (people, ``mosquitto_sub``, health checks) reads everything and writes
  nothing.

Whatever is not granted is refused: a publish with PUBACK reason 0x87 "not authorised"
(MQTT 5; a 3.1.1 client is not told), a subscription with SUBACK 0x87 (0x80 in 3.1.1).

The password file is in mosquitto 2's own format (``mosquitto_passwd``: PBKDF2-SHA512,
``$7$<iterations>$<salt>$<hash>``), with more iterations than its default of 101.

A district's broker may bridge to a central one (``services.mqtt.bridge``): the district's
files then include ``bridge.conf``, the mosquitto ``connection`` that forwards exactly
its collectors' topics out and brings their acknowledgements (and its sites' alerts)
back in; the central broker's files, made with the district's configuration as
``bridged``, let the bridge's account ``bridge-<name>`` do just that (docs/scale.md).
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets as random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from paho.mqtt.client import topic_matches_sub

from foursave.core.config import Config, MqttBridge
from foursave.core.secrets import Secrets, env_name, read_file, write_file
from foursave.core.topics import (
    PREFIX,
    READINGS_FILTER,
    RULES_PREFIX,
    STATUS_FILTER,
    ack_topic,
    alert_topic,
    bridge_topic,
    collector_topic,
    ingester_topic,
    reading_topic,
    status_topic,
)

PBKDF2_ITERATIONS = 10_000  # mosquitto_passwd's default is 101; mosquitto takes any count
ROLES = ("collector", "ingester", "rules", "api", "reader")


class BrokerConfigError(ValueError):
    pass


@dataclass(frozen=True)
class Grant:
    access: str  # "read" | "write" | "readwrite"
    topic: str


def collector_ids(config: Config) -> list[str]:
    """The collectors of ``config`` (``Config.collector_ids``)."""
    return config.collector_ids()


def owned_devices(config: Config, collector_id: str) -> list[tuple[str, str]]:
    """(site, device) of the devices ``collector_id`` polls (``Config.collector_devices``:
    all of them when the configuration names one collector); none for an id that is no
    collector of it."""
    if collector_id not in config.collector_ids():
        return []
    return [(d.site, d.id) for d in config.collector_devices(collector_id)]


def grants(config: Config) -> dict[str, list[Grant]]:
    """Account -> what it may read and write, for the services of ``config``."""
    svc = config.services
    # an account per collector (collector-<id>), each for its own devices' topics only
    collectors: list[tuple[str, list[Grant]]] = []
    for collector in config.collector_ids():
        mine = [Grant("write", collector_topic(collector)), Grant("read", ack_topic(collector))]
        for site, device in owned_devices(config, collector):
            mine += [
                Grant("write", reading_topic(site, device)),
                Grant("write", status_topic(site, device)),
            ]
        account = config.for_collector(collector).services.mqtt_account("collector")
        collectors.append((account, mine))
    out = dict(collectors)
    for iid in svc.ingester.ids:  # each ingester of the file its own account
        one = svc.model_copy(update={"ingester": svc.ingester.model_copy(update={"id": iid})})
        out[one.mqtt_account("ingester")] = [
            Grant("read", READINGS_FILTER),
            Grant("read", STATUS_FILTER),
            Grant("write", ack_topic("+")),
            Grant("write", ingester_topic(iid)),
        ]
    out |= {
        svc.mqtt_account("rules"): [
            Grant("write", alert_topic("+", "+")),
            Grant("readwrite", f"{RULES_PREFIX}/#"),
        ],
        svc.mqtt_account("api"): [Grant("read", STATUS_FILTER)],
        svc.mqtt_account("reader"): [Grant("read", f"{PREFIX}/#"), Grant("read", "$SYS/#")],
    }
    if len(out) < len(collectors) + len(svc.ingester.ids) + 3:  # + rules, api, reader
        raise BrokerConfigError(
            "services.mqtt.username gives every service one account: a broker with one "
            "account cannot keep the services apart, so there is no ACL to make for it"
        )
    return out


def acl_text(accounts: Mapping[str, Iterable[Grant]], source: str) -> str:
    lines = [
        f"# foursave MQTT ACL, made by `foursave broker-config` from {source}; do not edit,",
        "# make it again.  Whatever is not granted here is refused.",
    ]
    for account, gs in accounts.items():
        lines += ["", f"user {account}"]
        lines += [f"topic {g.access} {g.topic}" for g in gs]
    return "\n".join(lines) + "\n"


def hash_password(
    password: str, salt: bytes | None = None, iterations: int = PBKDF2_ITERATIONS
) -> str:
    """mosquitto 2's password hash (``mosquitto_passwd``'s ``$7$`` format)."""
    salt = salt if salt is not None else os.urandom(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def passwd_text(passwords: Mapping[str, str]) -> str:
    for account in passwords:
        if ":" in account or not account.strip():
            raise BrokerConfigError(
                f"MQTT account {account!r}: a name with ':' or blank cannot log in"
            )
    return "".join(f"{a}:{hash_password(p)}\n" for a, p in passwords.items())


def passwords(accounts: Iterable[str], secrets: Secrets) -> tuple[dict[str, str], list[str]]:
    """The accounts' passwords, and the accounts that have none."""
    found, missing = {}, []
    for account in accounts:
        pw = secrets.password("mqtt", account)
        if pw:
            found[account] = pw
        else:
            missing.append(account)
    return found, missing


def generate_missing(path: Path, accounts: Iterable[str]) -> list[str]:
    """Give every account without a password in the secrets file at ``path`` a random
    one (32 bytes, URL-safe); returns the accounts that got one."""
    current = read_file(path) if path.exists() else {}
    mqtt = dict(current.get("mqtt", {}))
    new = [a for a in accounts if a not in mqtt]
    for account in new:
        mqtt[account] = random.token_urlsafe(32)
    if new:
        write_file(path, {**current, "mqtt": mqtt})
    return new


# ------------------------------------------------------------------ district bridges

BRIDGE_QOS = 1  # readings are QoS 1 end to end; the bridge never lowers it


def bridge_account(name: str) -> str:
    """The account a district's bridge logs in to the central broker with."""
    return f"bridge-{name}"


def bridge_client_id(name: str) -> str:
    """The bridge's client id on the central broker: fixed, so its session persists."""
    return f"foursave-bridge-{name}"


@dataclass(frozen=True)
class BridgeTopics:
    out: list[str]  # exact topics this district publishes, forwarded to the central broker
    into: list[str]  # filters brought back from the central broker


@dataclass(frozen=True)
class Bridge:
    settings: MqttBridge
    topics: BridgeTopics
    messages_per_s: float  # readings and statuses this district publishes, about


def _bridge_of(config: Config, source: str) -> Bridge:
    settings = config.services.mqtt.bridge
    if settings is None:
        raise BrokerConfigError(f"{source}: services.mqtt.bridge is not set: nothing bridges")
    out, into, sites = [], [], []
    rate = 0.0
    for cid in collector_ids(config):
        out.append(collector_topic(cid))
        into.append(ack_topic(cid))
        for site, device in owned_devices(config, cid):
            out += [reading_topic(site, device), status_topic(site, device)]
            if site not in sites:
                sites.append(site)
    for d in config.devices:
        rate += 1 / d.interval_s + 1 / config.services.collector.status_interval_s
    if settings.alerts:
        into += [alert_topic(site, "+") for site in sites]
    # loop prevention: a topic forwarded out must never be brought back in (and out
    # again): the two lists are disjoint by construction unless names collide
    for topic in [*out, bridge_topic(settings.name)]:
        for f in into:
            if topic_matches_sub(f, topic):
                raise BrokerConfigError(
                    f"{source}: services.mqtt.bridge: {topic} would be forwarded to the central "
                    f"broker and brought back by {f}, a loop; rename the device, or set "
                    "services.mqtt.bridge.alerts: false"
                )
    return Bridge(settings, BridgeTopics(out, into), rate)


def bridges(configs: Iterable[tuple[str, Config]]) -> dict[str, Bridge]:
    """Bridge name -> the bridge the configurations of one (district) broker make, each
    given with its file (for errors); two naming the same bridge share it (their topics
    merged), and must then agree on its settings."""
    out: dict[str, Bridge] = {}
    for source, config in configs:
        if config.services.mqtt.bridge is None:
            continue
        b = _bridge_of(config, source)
        have = out.get(b.settings.name)
        if have is None:
            out[b.settings.name] = b
            continue
        if have.settings != b.settings:
            raise BrokerConfigError(
                f"{source}: two configurations name bridge {b.settings.name!r} with different "
                "settings (services.mqtt.bridge); one broker has one bridge of a name"
            )
        out[b.settings.name] = Bridge(
            have.settings,
            BridgeTopics(
                have.topics.out + [t for t in b.topics.out if t not in have.topics.out],
                have.topics.into + [t for t in b.topics.into if t not in have.topics.into],
            ),
            have.messages_per_s + b.messages_per_s,
        )
    return out


def bridged_grants(bridged: Mapping[str, Config]) -> dict[str, list[Grant]]:
    """For the central broker, given the districts' configurations by file: each
    district bridge's account may publish what the district's collectors publish (and
    its own state), and read what comes back."""
    out: dict[str, list[Grant]] = {}
    for source, config in bridged.items():
        if config.services.mqtt.bridge is None:
            raise BrokerConfigError(
                f"{source}: a bridged district's configuration needs services.mqtt.bridge "
                "(the district's bridge: its name and the central broker's url)"
            )
    for name, b in bridges(bridged.items()).items():
        out[bridge_account(name)] = [
            *(Grant("write", t) for t in b.topics.out),
            Grant("write", bridge_topic(name)),
            *(Grant("read", f) for f in b.topics.into),
        ]
    return out


def _existing(path: str | None, setting: str, source: str) -> str | None:
    if path is None:
        return None
    p = Path(path).resolve()
    if not p.is_file():
        raise BrokerConfigError(f"{source}: {setting} {path}: no such file")
    return str(p)


def bridge_conf_text(bridge: Bridge, password: str, source: str) -> str:
    """The mosquitto ``connection`` for ``bridge``, each setting with its reason."""
    b, t = bridge.settings, bridge.topics
    where = "services.mqtt.bridge"
    if password != password.strip() or "\n" in password or "\r" in password:
        # mosquitto.conf takes the rest of the line, blanks trimmed
        raise BrokerConfigError(
            f"MQTT account {bridge_account(b.name)}: a password that starts or ends with "
            "white space, or holds a line break, cannot be written into mosquitto.conf"
        )
    ca = _existing(b.ca_file, f"{where}.ca_file", source)
    cert = _existing(b.cert_file, f"{where}.cert_file", source)
    key = _existing(b.key_file, f"{where}.key_file", source)
    hour = bridge.messages_per_s * 3600
    lines = [
        f"# foursave: district {b.name}'s bridge to the central broker, made by",
        f"# `foursave broker-config` from {source}; do not edit, make it again.",
        "# mosquitto reads bridges only when it starts: restart it after a change (a",
        "# reload is not enough).  docs/scale.md explains every setting.",
        f"connection foursave-{b.name}",
        f"address {b.host}:{b.port}",
        "# A persistent session at both ends: the central broker keeps the bridge's",
        "# subscriptions (the acknowledgements) and queues for it while the link is down,",
        "# and this broker queues the readings taken meanwhile for the bridge.  This",
        "# broker's global settings bound that queue (max_queued_messages and",
        "# max_queued_bytes: foursave.conf sets no limit; mosquitto 2.0 has no setting per",
        "# bridge) and the bridge's window towards the central broker",
        "# (max_inflight_messages 10000 in foursave.conf: mosquitto's default of 20 would",
        "# carry at most 400 messages/s over a link with 50 ms round trips).",
        f"# This district publishes about {bridge.messages_per_s:.1f} messages/s (readings and",
        f"# statuses): an hour without the link queues about {hour:,.0f} of them here.",
        "# The collectors keep every reading in their spools until an ingester confirms",
        "# it, so even a queue that overflowed loses nothing: they publish again what",
        "# stays unconfirmed.",
        f"remote_clientid {bridge_client_id(b.name)}",
        f"local_clientid {bridge_client_id(b.name)}.local",
        "cleansession false",
        "local_cleansession false",
        f"remote_username {bridge_account(b.name)}",
        f"remote_password {password}",
        "# MQTT 3.1.1 with mosquitto's bridge flag: the central broker knows a bridge (loop",
        "# detection, retained flags kept: device statuses and presence are retained).",
        "bridge_protocol_version mqttv311",
        f"try_private {'true' if b.try_private else 'false'}",
        "start_type automatic",
        f"# The waits between reconnection attempts start at {b.restart_timeout_s[0]} s and"
        f" grow, at random, up to {b.restart_timeout_s[1]} s:",
        "# a link that comes back is used soon, and the districts do not all reconnect in",
        "# the same second after a central outage.",
        f"restart_timeout {b.restart_timeout_s[0]} {b.restart_timeout_s[1]}",
        f"# A link that goes silent (no reset) is given up after 1.5 x {b.keepalive_s} s.",
        f"keepalive_interval {b.keepalive_s}",
        "# No topic here was ever 'in' and then 'out': nothing to unsubscribe from.",
        "bridge_attempt_unsubscribe false",
        "# The link's state, retained on both brokers: 1 up, 0 down (the central broker",
        "# publishes the 0 as the bridge's last will).",
        "notifications true",
        f"notification_topic {bridge_topic(b.name)}",
    ]
    if b.tls:
        lines += [
            "# TLS: the central broker's certificate and host name are checked.",
            f"bridge_cafile {ca}" if ca else "bridge_capath /etc/ssl/certs",
            f"bridge_insecure {'false' if b.tls_verify else 'true'}",
            "bridge_tls_version tlsv1.2",
        ]
        if cert and key:
            lines += [f"bridge_certfile {cert}", f"bridge_keyfile {key}"]
    lines += [
        "# Out, QoS 1: exactly the topics this district's collectors publish (readings,",
        "# statuses, presence); never a wildcard and never $share/: a shared subscription",
        "# belongs to the ingesters, and the bridge publishes, it is no group member.",
        *(f"topic {topic} out {BRIDGE_QOS}" for topic in t.out),
        "# In, QoS 1: the ingesters' acknowledgements to these collectors (a reading",
        "# leaves a collector's spool only on one), and alerts of this district's sites.",
        "# Nothing is both in and out, so nothing can go round.",
        *(f"topic {f} in {BRIDGE_QOS}" for f in t.into),
    ]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Written:
    passwd: Path
    acl: Path
    conf: Path
    accounts: list[str]
    bridge: Path | None = None  # the district's bridge to the central broker


def merged_grants(configs: Iterable[Config]) -> dict[str, list[Grant]]:
    """The grants of several configurations on one broker (districts, a test session):
    an account named in more than one gets what each gives it."""
    out: dict[str, list[Grant]] = {}
    for config in configs:
        for account, gs in grants(config).items():
            have = out.setdefault(account, [])
            have += [g for g in gs if g not in have]
    return out


def write_broker_files(
    configs: Iterable[Config],
    secrets: Secrets,
    out: Path,
    source: str,
    *,
    logins: Mapping[str, tuple[str, list[Grant]]] | None = None,
    bridged: Mapping[str, Config] | None = None,
) -> Written:
    """Write ``passwd``, ``acl`` and ``auth.conf`` (the lines mosquitto.conf includes)
    into ``out`` for the services of ``configs``, plus ``logins`` (account -> password
    and grants) of no service (a liveness probe, a tool).  ``bridged``: districts whose
    brokers bridge to this one, by file (their bridge accounts); a configuration of ``configs``
    with ``services.mqtt.bridge`` gets ``bridge.conf``.  Every account needs a
    password (``BrokerConfigError`` names the missing ones and where they are looked
    for)."""
    configs = list(configs)
    accounts = merged_grants(configs)
    for account, gs in bridged_grants(bridged or {}).items():
        have = accounts.setdefault(account, [])
        have += [g for g in gs if g not in have]
    links = bridges((source, c) for c in configs)
    found, missing = passwords(accounts, secrets)
    link_pw, link_missing = passwords([bridge_account(n) for n in links], secrets)
    missing += [a for a in link_missing if a not in missing]
    for account, (password, gs) in (logins or {}).items():
        found[account] = password
        accounts[account] = gs
    if missing:
        where = ", ".join(env_name("mqtt", a) for a in missing)
        raise BrokerConfigError(
            f"no password for MQTT account(s) {', '.join(missing)}: set {where}, or add them "
            "under 'mqtt:' in the secrets file (FOURSAVE_SECRETS_FILE or services.secrets_file; "
            "`foursave broker-config --generate-missing` writes random ones there)"
        )
    # made before anything is written: a bridge that cannot be made leaves the old files
    link_text = "\n".join(
        bridge_conf_text(b, link_pw[bridge_account(n)], source) for n, b in links.items()
    )
    out.mkdir(parents=True, exist_ok=True)
    passwd, acl, conf = out / "passwd", out / "acl", out / "auth.conf"
    _write_private(passwd, passwd_text(found))
    _write_private(acl, acl_text(accounts, source))
    _write_private(
        conf,
        "# foursave: every client logs in, and may do only what the ACL grants\n"
        "per_listener_settings false\n"
        "allow_anonymous false\n"
        f"password_file {passwd.resolve()}\n"
        f"acl_file {acl.resolve()}\n",
    )
    bridge = out / "bridge.conf"
    if links:  # holds the bridge account's password: private like the others
        _write_private(bridge, link_text)
    else:
        bridge.unlink(missing_ok=True)  # an old bridge must not outlive its configuration
    return Written(passwd, acl, conf, list(accounts), bridge if links else None)


def _write_private(path: Path, text: str) -> None:
    """Readable by the owner and its group (mosquitto reads it as its own group)."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.chmod(tmp, 0o640)
    os.replace(tmp, path)  # mosquitto reloading on SIGHUP never reads half a file

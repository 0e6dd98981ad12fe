"""``foursave broker-config``: mosquitto's password file and ACL, made from the
configuration (docs/security.md).

Each service logs in with an account of its own (``core/secrets.py``) and may do only
its job:

- a collector publishes readings and status for the devices it owns and its own
  presence (with its last will), and reads the acknowledgements meant for it;
- an ingester reads readings and statuses, and publishes acknowledgements and its own
  status;
- the rules engine publishes alerts;
- the API reads statuses;
- ``reader`` (people, ``mosquitto_sub``, health checks) reads everything and writes
  nothing.

Whatever is not granted is refused: a publish with PUBACK reason 0x87 "not authorised"
(MQTT 5; a 3.1.1 client is not told), a subscription with SUBACK 0x87 (0x80 in 3.1.1).

The password file is in mosquitto 2's own format (``mosquitto_passwd``: PBKDF2-SHA512,
``$7$<iterations>$<salt>$<hash>``), with more iterations than its default of 101.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets as random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from foursave.core.config import Config
from foursave.core.secrets import Secrets, env_name, read_file, write_file
from foursave.core.topics import (
    PREFIX,
    READINGS_FILTER,
    STATUS_FILTER,
    ack_topic,
    alert_topic,
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


def owned_devices(config: Config, collector_id: str) -> list[tuple[str, str]]:
    """(site, device) of the devices ``collector_id`` polls: all of the configuration's,
    as long as one configuration names one collector."""
    if collector_id != config.services.collector.id:
        return []
    return [(d.site, d.id) for d in config.devices]


def grants(config: Config) -> dict[str, list[Grant]]:
    """Account -> what it may read and write, for the services of ``config``."""
    svc = config.services
    collector = svc.collector.id
    mine = [Grant("write", collector_topic(collector)), Grant("read", ack_topic(collector))]
    for site, device in owned_devices(config, collector):
        mine += [
            Grant("write", reading_topic(site, device)),
            Grant("write", status_topic(site, device)),
        ]
    out = {svc.mqtt_account("collector"): mine}
    for iid in svc.ingester.ids:  # each ingester of the file its own account
        one = svc.model_copy(update={"ingester": svc.ingester.model_copy(update={"id": iid})})
        out[one.mqtt_account("ingester")] = [
            Grant("read", READINGS_FILTER),
            Grant("read", STATUS_FILTER),
            Grant("write", ack_topic("+")),
            Grant("write", ingester_topic(iid)),
        ]
    out |= {
        svc.mqtt_account("rules"): [Grant("write", alert_topic("+", "+"))],
        svc.mqtt_account("api"): [Grant("read", STATUS_FILTER)],
        svc.mqtt_account("reader"): [Grant("read", f"{PREFIX}/#"), Grant("read", "$SYS/#")],
    }
    if len(out) < len(ROLES):
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


@dataclass(frozen=True)
class Written:
    passwd: Path
    acl: Path
    conf: Path
    accounts: list[str]


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
) -> Written:
    """Write ``passwd``, ``acl`` and ``auth.conf`` (the lines mosquitto.conf includes)
    into ``out`` for the services of ``configs``, plus ``logins`` (account -> password
    and grants) of no service (a liveness probe, a tool).  Every account needs a
    password (``BrokerConfigError`` names the missing ones and where they are looked
    for)."""
    accounts = merged_grants(configs)
    found, missing = passwords(accounts, secrets)
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
    return Written(passwd, acl, conf, list(accounts))


def _write_private(path: Path, text: str) -> None:
    """Readable by the owner and its group (mosquitto reads it as its own group)."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.chmod(tmp, 0o640)
    os.replace(tmp, path)  # mosquitto reloading on SIGHUP never reads half a file

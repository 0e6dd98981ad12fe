"""Passwords of foursave's MQTT accounts and InfluxDB users: from the environment or a
secrets file, never from the configuration (docs/security.md).

Every service has an account of its own, named from the configuration (each collector
of a configuration that has several too: ``Config.collector_ids``):

========================  ==================================  =====================
who                       MQTT account                        InfluxDB user
========================  ==================================  =====================
``foursave collect``      ``collector-<collector id>``        –
``foursave ingest``       ``ingester-<services.ingester.id>``    writer
``foursave rules``        ``rules``                           writer
``foursave api``          ``api``                             reader
people (mosquitto_sub)    ``reader``                          –
Grafana                   –                                   reader
set-up only               –                                   admin
========================  ==================================  =====================

A password is looked up, in this order, in

1. the environment: ``FOURSAVE_MQTT_PASSWORD_<ACCOUNT>`` or
   ``FOURSAVE_INFLUXDB_PASSWORD_<USER>``, the name upper-cased with every character
   other than a letter or digit made ``_`` (``collector-1`` → ``COLLECTOR_1``);
2. the secrets file named by ``FOURSAVE_SECRETS_FILE`` or ``services.secrets_file``, a
   YAML mapping ``{mqtt: {<account>: <password>}, influxdb: {<user>: <password>}}``.

No password found means no credentials are sent: right for a development broker or
database that asks for none, refused (and said so) by one that does.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml

Kind = Literal["mqtt", "influxdb"]
KINDS: tuple[Kind, ...] = ("mqtt", "influxdb")
SECRETS_FILE_ENV = "FOURSAVE_SECRETS_FILE"


class SecretsError(ValueError):
    """A secrets file that cannot be used; the message names the file and what is wrong."""


def env_name(kind: Kind, name: str) -> str:
    """The environment variable that holds ``name``'s password."""
    return f"FOURSAVE_{kind.upper()}_PASSWORD_{re.sub(r'[^A-Za-z0-9]', '_', name).upper()}"


@dataclass(frozen=True)
class Secrets:
    """The passwords one process can see: its environment and the secrets file."""

    env: Mapping[str, str] = field(default_factory=dict)
    file: Mapping[Kind, Mapping[str, str]] = field(default_factory=dict)
    path: str | None = None

    def password(self, kind: Kind, name: str) -> str | None:
        value = self.env.get(env_name(kind, name))
        if value:
            return value
        return self.file.get(kind, {}).get(name) or None

    @classmethod
    def load(cls, path: str | None, env: Mapping[str, str] | None = None) -> Secrets:
        """The secrets of ``env`` (default: this process's environment) and of the file
        at ``env[FOURSAVE_SECRETS_FILE]`` or else ``path``; no file, no file secrets."""
        env = dict(os.environ if env is None else env)
        path = env.get(SECRETS_FILE_ENV) or path
        return cls(env, read_file(Path(path)) if path else {}, path)


def read_file(path: Path) -> dict[Kind, dict[str, str]]:
    """The secrets file at ``path``, checked: a mapping of ``mqtt`` and ``influxdb`` to
    mappings of account names to passwords (strings), readable by its owner only."""
    try:
        st = path.stat()
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SecretsError(f"secrets file {path}: cannot be read ({exc.strerror})") from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO) and not _mounted_secret(path):
        raise SecretsError(
            f"secrets file {path}: others may read it (mode {stat.S_IMODE(st.st_mode):o}); "
            f"make it readable by its owner only: chmod 600 {path}"
        )
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SecretsError(f"secrets file {path}: not valid YAML ({exc})") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise SecretsError(f"secrets file {path}: expected a mapping with 'mqtt' and 'influxdb'")
    out: dict[Kind, dict[str, str]] = {}
    for key, accounts in raw.items():
        if key not in KINDS:
            raise SecretsError(f"secrets file {path}: unknown section {key!r} (mqtt, influxdb)")
        if not isinstance(accounts, dict):
            raise SecretsError(f"secrets file {path}: {key}: expected account: password pairs")
        for name, pw in accounts.items():
            if not isinstance(pw, str) or not pw:
                raise SecretsError(
                    f"secrets file {path}: {key}.{name}: the password must be a non-empty "
                    "string (quote it if YAML reads it as a number)"
                )
        out[key] = {str(k): v for k, v in accounts.items()}
    return out


def _mounted_secret(path: Path) -> bool:
    """Docker and Kubernetes mount secrets read-only for everyone in the container
    (/run/secrets): nobody else is there to read them."""
    return str(path.resolve()).startswith("/run/secrets/")


def write_file(path: Path, secrets: Mapping[Kind, Mapping[str, str]]) -> None:
    """Write a secrets file readable by its owner only (created so from the start)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        yaml.safe_dump({k: dict(v) for k, v in secrets.items()}, f, sort_keys=True)
    os.chmod(path, 0o600)

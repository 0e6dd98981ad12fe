"""The passwords of a systemd install, and each unit's share of them.

    /opt/foursave/venv/bin/python deploy/credentials.py --config /etc/foursave/foursave.yaml \
        --secrets /etc/foursave/secrets.yaml --out /etc/foursave/credentials

1. ``--secrets`` (core/secrets.py's format, mode 600) gets a random password for every
   MQTT account and InfluxDB user of the configuration that has none yet; passwords
   already there are kept, so running it again changes nothing.  It is what
   ``foursave broker-config`` and ``foursave influx-setup`` read (as root).
2. ``--out`` gets one file per unit, holding only the passwords that service logs in
   with; systemd hands it to the service (``LoadCredential=``) and
   ``FOURSAVE_SECRETS_FILE`` names it.  A broken-into API sees the reader's passwords,
   not the writer's or the collector's.

Run by deploy/install.sh; it needs the foursave package (the install's venv).
"""

from __future__ import annotations

import argparse
import secrets as random
import sys
from pathlib import Path

from foursave.app import load_config
from foursave.core.config import ConfigError, Services
from foursave.core.secrets import Kind, SecretsError, read_file, write_file

# unit -> (MQTT role, InfluxDB role or None): core/secrets.py's table
UNITS: dict[str, tuple[str, str | None]] = {
    "collect": ("collector", None),
    "ingest": ("ingester", "writer"),
    "rules": ("rules", "writer"),
    "api": ("api", "reader"),
}
MQTT_ROLES = ("collector", "ingester", "rules", "api", "reader")
INFLUX_ROLES = ("admin", "writer", "reader")


def ensure_passwords(path: Path, services: Services) -> list[str]:
    """Give every account of ``services`` without a password in ``path`` a random one;
    returns the ``kind:name`` of those that got one."""
    current = read_file(path) if path.exists() else {}
    wanted: dict[Kind, list[str]] = {
        "mqtt": [services.mqtt_account(r) for r in MQTT_ROLES],
        "influxdb": [services.influx_user(r) for r in INFLUX_ROLES],
    }
    out: dict[Kind, dict[str, str]] = {k: dict(v) for k, v in current.items()}
    new = []
    for kind, names in wanted.items():
        have = out.setdefault(kind, {})
        for name in dict.fromkeys(names):  # one account for all: once
            if not have.get(name):
                have[name] = random.token_urlsafe(32)
                new.append(f"{kind}:{name}")
    if new or not path.exists():
        write_file(path, out)
    return new


def unit_files(path: Path, services: Services, out: Path) -> list[Path]:
    """One secrets file per unit in ``out``, each with its service's passwords only."""
    all_ = read_file(path)
    out.mkdir(parents=True, exist_ok=True)
    out.chmod(0o700)
    written = []
    for unit, (mqtt_role, influx_role) in UNITS.items():
        account = services.mqtt_account(mqtt_role)
        mine: dict[Kind, dict[str, str]] = {"mqtt": {account: all_["mqtt"][account]}}
        if influx_role is not None:
            user = services.influx_user(influx_role)
            mine["influxdb"] = {user: all_["influxdb"][user]}
        target = out / f"{unit}.yaml"
        write_file(target, mine)
        written.append(target)
    return written


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True, help="the installed configuration")
    p.add_argument("--secrets", required=True, help="every password (root only)")
    p.add_argument("--out", required=True, help="folder for the units' credentials")
    args = p.parse_args(argv)
    try:
        services = load_config(args.config).services
        new = ensure_passwords(Path(args.secrets), services)
        files = unit_files(Path(args.secrets), services, Path(args.out))
    except (ConfigError, SecretsError) as exc:
        print(f"credentials: {exc}", file=sys.stderr)
        return 2
    if new:
        print(f"{args.secrets}: random passwords for {', '.join(new)}")
    print(f"{args.out}: {', '.join(f.name for f in files)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

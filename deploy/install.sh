#!/usr/bin/env bash
# foursave on one Debian 12 machine, without Docker: one command installs or updates it
# (deploy/README.md).  Run it from a checkout, as root:
#
#   sudo deploy/install.sh --config my-site.yaml [--tls-name HOST]... [--no-start]
#
#   --config FILE    the configuration to install as /etc/foursave/foursave.yaml
#                    (start from deploy/foursave.example.yaml); without it the one
#                    installed before is kept
#   --tls-name HOST  a name or address remote collectors (and Grafana) use for this
#                    machine, written into its certificate; repeatable (default:
#                    the host's fully qualified name)
#   --no-start       install and enable everything, start nothing
#
# Running it again is safe: it keeps the passwords, certificates and data it made
# before, adds what a changed configuration needs, installs the checkout's code and
# restarts the services.
set -euo pipefail

SRC=$(cd "$(dirname "$0")/.." && pwd)
PREFIX=/opt/foursave
VENV=$PREFIX/venv
ETC=/etc/foursave
STATE=/var/lib/foursave
UNITS=/etc/systemd/system
MOSQUITTO_AUTH=/etc/mosquitto/foursave
USER_NAME=foursave
PACKAGES=(python3 python3-venv mosquitto mosquitto-clients influxdb influxdb-client
  openssl curl fonts-arphic-uming)
SERVICES=(foursave-collect foursave-ingest foursave-rules foursave-api)

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }
die() {
  printf 'install.sh: %s\n' "$*" >&2
  exit 1
}

config=""
tls_names=()
start=1
while (($#)); do
  case $1 in
    --config)
      [[ $# -ge 2 ]] || die "--config needs a file"
      config=$2
      shift 2
      ;;
    --tls-name)
      [[ $# -ge 2 ]] || die "--tls-name needs a host name or address"
      tls_names+=("$2")
      shift 2
      ;;
    --no-start)
      start=0
      shift
      ;;
    -h | --help)
      sed -n '2,17p' "$0"
      exit 0
      ;;
    *) die "unknown argument $1 (--help lists them)" ;;
  esac
done

((EUID == 0)) || die "run it as root: sudo $0 $*"
[[ -z $config || -f $config ]] || die "--config $config: no such file"
[[ -n $config || -f $ETC/foursave.yaml ]] ||
  die "no configuration yet: give one with --config (start from deploy/foursave.example.yaml)"
((${#tls_names[@]})) || tls_names=("$(hostname -f 2>/dev/null || hostname)")

say "Debian packages"
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
fi

say "system user $USER_NAME and folders"
if ! getent passwd "$USER_NAME" >/dev/null; then
  useradd --system --user-group --home-dir "$STATE" --no-create-home \
    --shell /usr/sbin/nologin --comment "foursave services" "$USER_NAME"
fi
install -d -m 0755 "$PREFIX"
install -d -o root -g "$USER_NAME" -m 0750 "$ETC"
install -d -o root -g root -m 0700 "$ETC/credentials"
install -d -o "$USER_NAME" -g "$USER_NAME" -m 0750 "$STATE"

say "foursave into $VENV"
[[ -x $VENV/bin/python ]] || python3 -m venv "$VENV"
"$VENV/bin/pip" install --quiet --disable-pip-version-check -c "$SRC/constraints.txt" "$SRC"
# the checkout's code even when its version number did not change
"$VENV/bin/pip" install --quiet --disable-pip-version-check --no-deps --force-reinstall "$SRC"
FOURSAVE=$VENV/bin/foursave

say "configuration in $ETC"
if [[ -n $config ]]; then
  install -o root -g "$USER_NAME" -m 0640 "$config" "$ETC/foursave.yaml"
fi
if [[ ! -f $ETC/alerts.yaml ]]; then
  install -o root -g "$USER_NAME" -m 0640 "$SRC/config/alerts.yaml" "$ETC/alerts.yaml"
fi
# read as the services will read it: by the user foursave, from its own folder
(cd "$STATE" && runuser -u "$USER_NAME" -- "$FOURSAVE" check-config --config "$ETC/foursave.yaml")

say "certificates in $ETC/tls"
"$SRC/deploy/make-certs.sh" "$ETC/tls" "${tls_names[@]}"
chgrp "$USER_NAME" "$ETC/tls"
chmod 0750 "$ETC/tls"
install -d -m 0755 /etc/mosquitto/certs
install -o root -g root -m 0644 "$ETC/tls/ca.crt" /etc/mosquitto/certs/foursave-ca.crt
install -o root -g root -m 0644 "$ETC/tls/server.crt" /etc/mosquitto/certs/foursave-server.crt
install -o root -g mosquitto -m 0640 "$ETC/tls/server.key" /etc/mosquitto/certs/foursave-server.key
install -o root -g root -m 0644 "$ETC/tls/server.crt" /etc/influxdb/foursave-server.crt
install -o root -g influxdb -m 0640 "$ETC/tls/server.key" /etc/influxdb/foursave-server.key

say "passwords: $ETC/secrets.yaml, each unit's share in $ETC/credentials"
"$VENV/bin/python" "$SRC/deploy/credentials.py" --config "$ETC/foursave.yaml" \
  --secrets "$ETC/secrets.yaml" --out "$ETC/credentials"
export FOURSAVE_SECRETS_FILE=$ETC/secrets.yaml

say "mosquitto: accounts, ACL, TLS listener"
install -d -o root -g mosquitto -m 0750 "$MOSQUITTO_AUTH"
"$FOURSAVE" broker-config --config "$ETC/foursave.yaml" --out "$MOSQUITTO_AUTH"
chgrp mosquitto "$MOSQUITTO_AUTH"/*
chmod 0640 "$MOSQUITTO_AUTH"/*
install -o root -g root -m 0644 "$SRC/deploy/mosquitto/foursave.conf" /etc/mosquitto/conf.d/foursave.conf

say "InfluxDB: login required, HTTPS"
install -d -m 0755 "$UNITS/influxdb.service.d"
install -o root -g root -m 0644 "$SRC/deploy/influxdb/foursave.conf" "$UNITS/influxdb.service.d/foursave.conf"

say "systemd units"
install -o root -g root -m 0644 "$SRC"/deploy/systemd/foursave-*.service \
  "$SRC/deploy/systemd/foursave.target" "$UNITS/"
systemctl daemon-reload
systemctl enable --quiet mosquitto.service influxdb.service foursave.target "${SERVICES[@]/%/.service}"

if ((start == 0)); then
  say "installed; nothing started (--no-start)"
  exit 0
fi

say "starting mosquitto and InfluxDB"
systemctl restart mosquitto.service influxdb.service
deadline=$((SECONDS + 60))
until curl -sf --cacert "$ETC/tls/ca.crt" -o /dev/null https://localhost:8086/ping; do
  ((SECONDS < deadline)) || die "InfluxDB did not answer on https://localhost:8086 within 60 s (journalctl -u influxdb)"
  sleep 1
done

say "InfluxDB: database and users"
"$FOURSAVE" influx-setup --config "$ETC/foursave.yaml"

say "starting foursave"
systemctl restart foursave.target
systemctl --no-pager --lines=0 status foursave.target "${SERVICES[@]/%/.service}" || true
cat <<EOF

foursave runs: systemctl status foursave.target; logs: journalctl -u 'foursave-*'
  API and display   http://127.0.0.1:8000/display (put a TLS reverse proxy in front)
  an admin API key  runuser -u $USER_NAME -- $FOURSAVE keys create --config $ETC/foursave.yaml --role admin --name ops
  remote collectors mqtts://${tls_names[0]}:8883 with ca_file: a copy of $ETC/tls/ca.crt
  Grafana           the InfluxDB reader (foursave_reader unless the configuration names
                    another) and its password: $ETC/secrets.yaml, under influxdb:
EOF

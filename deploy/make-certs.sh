#!/usr/bin/env bash
# A private certificate authority and a server certificate for the broker's TLS
# listener and InfluxDB's HTTPS (deploy/README.md, "Certificates").
#
#   deploy/make-certs.sh DIR NAME [NAME...]
#
# writes DIR/ca.key, DIR/ca.crt (the CA: clients trust it, ca_file), DIR/server.key and
# DIR/server.crt (for NAME..., plus localhost and 127.0.0.1; a NAME that is an IPv4 or
# IPv6 address becomes an IP entry).  Files already there are kept: to use certificates
# of your own CA, put server.crt, server.key and ca.crt into DIR before the first run.
# To renew, remove server.crt and run it again.
set -euo pipefail

if (($# < 2)); then
  echo "usage: $0 DIR NAME [NAME...]" >&2
  exit 2
fi
dir=$1
shift
umask 077
mkdir -p "$dir"

ca_days=3650
server_days=825 # the longest validity browsers and most TLS clients accept

if [[ ! -f $dir/ca.crt ]]; then
  openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
    -keyout "$dir/ca.key" -out "$dir/ca.crt" -days "$ca_days" \
    -subj "/O=foursave/CN=foursave private CA $(hostname -s 2>/dev/null || echo host)" \
    -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -addext "subjectKeyIdentifier=hash"
  echo "$dir/ca.crt: new private CA"
fi

if [[ ! -f $dir/server.crt ]]; then
  if [[ ! -f $dir/ca.key ]]; then
    echo "$dir: ca.crt without ca.key and no server.crt: put your CA's server.crt and server.key there" >&2
    exit 1
  fi
  san="DNS:localhost,IP:127.0.0.1"
  for name in "$@"; do
    if [[ $name =~ ^[0-9.]+$ || $name == *:* ]]; then
      san+=",IP:$name"
    else
      san+=",DNS:$name"
    fi
  done
  ext=$(mktemp)
  trap 'rm -f "$ext" "$dir/server.csr"' EXIT
  printf '%s\n' \
    "basicConstraints=critical,CA:FALSE" \
    "keyUsage=critical,digitalSignature" \
    "extendedKeyUsage=serverAuth" \
    "subjectAltName=$san" \
    "subjectKeyIdentifier=hash" \
    "authorityKeyIdentifier=keyid,issuer" >"$ext"
  openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
    -keyout "$dir/server.key" -out "$dir/server.csr" -subj "/O=foursave/CN=$1"
  openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" \
    -CAcreateserial -days "$server_days" -extfile "$ext" -out "$dir/server.crt"
  echo "$dir/server.crt: for $san"
fi

# the keys stay private; the certificates are public
chmod 600 "$dir"/*.key
chmod 644 "$dir/ca.crt" "$dir/server.crt"

#!/usr/bin/env bash
# Writes a random value for every secret docker-compose.yml requires (each `${NAME:?...}`)
# into .env beside it, which `docker compose` reads.  Values already there are kept, so
# running it again only adds what is new.  .env is readable by its owner only.
#   docker/make-env.sh [ENV_FILE]      (default: .env next to docker-compose.yml)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
compose="$here/docker-compose.yml"
env_file=${1:-"$here/.env"}

umask 077
touch "$env_file"
chmod 600 "$env_file"

random_value() {
  # 40 letters and digits (about 238 bits): nothing that the compose file, a shell,
  # a command line or InfluxQL would read differently
  local v
  v=$(head -c 48 /dev/urandom | base64 -w0 | tr -d '+/=')
  printf '%s' "${v:0:40}"
}

added=()
while read -r name; do
  if ! grep -q "^${name}=" "$env_file"; then
    printf '%s=%s\n' "$name" "$(random_value)" >>"$env_file"
    added+=("$name")
  fi
done < <(grep -v '^ *#' "$compose" | grep -o '\${[A-Z0-9_]*:?' | sed 's/^\${//; s/:?$//' | sort -u)

if ((${#added[@]})); then
  echo "$env_file: random values for ${added[*]}"
else
  echo "$env_file: every secret already set"
fi

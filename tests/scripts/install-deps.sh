#!/usr/bin/env bash
# Installs what a fresh Debian 12 machine lacks to build, run and test pgbaas, and
# skips what is already there (a second run takes seconds). Needs root or sudo for apt.
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

updated=0
apt_install() {
    if [ "$updated" = 0 ]; then $SUDO apt-get update -qq; updated=1; fi
    $SUDO apt-get install -y -qq --no-install-recommends "$@"
}

if ! installed postgresql-15; then
    apt_install postgresql-15
fi
# The headers must match the installed server exactly, or apt upgrades the server.
pgver="$(dpkg-query -W -f='${Version}' postgresql-15)"
if ! installed postgresql-server-dev-15; then
    apt_install "postgresql-server-dev-15=${pgver}"
fi
missing=()
# postgresql-15-cron: pg_cron, for schedules (docs/schedules.md, tests/tests/schedules.rs).
# Operations (issue 19): haproxy (rolling restarts behind a balancer), patroni and
# etcd-server (failover), python3-venv (the OpenAPI tools' virtualenv below).
for p in libclang-dev clang cmake sudo make pkg-config postgresql-15-pgtap postgresql-15-cron wrk jq curl \
    haproxy patroni etcd-server python3-venv; do
    installed "$p" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    apt_install "${missing[@]}"
fi

# The OpenAPI tools (issue 19, tests/tests/openapi.rs): a validator, a client generator
# and schemathesis, pinned, in a virtualenv of their own (tests find it at this path).
. "$(dirname "${BASH_SOURCE[0]}")/pinned-venv.sh"
pinned_venv "${PGBAAS_VENV:-/opt/pgbaas-venv}" "openapi-spec-validator==0.9.0 openapi-python-client==0.29.1 schemathesis==4.32.5"

# The Parse door (issue 21, tests/tests/parse.rs): the official Parse JavaScript SDK,
# pinned by tests/parse-sdk/package-lock.json, driven by node (Node 20 is on the machine).
sdk="$(cd "$(dirname "${BASH_SOURCE[0]}")/../parse-sdk" && pwd)"
if ! grep -qs '"version": "8.6.0"' "$sdk/node_modules/parse/package.json"; then
    (cd "$sdk" && npm ci --no-audit --no-fund)
fi
# ... and Parse Server 9 itself (bench/parse, from its lock file; the benchmark's peer),
# for the differential test that runs the same scenarios against it.
peer="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../bench/parse" && pwd)"
if [ ! -d "$peer/node_modules/parse-server" ]; then
    (cd "$peer" && npm ci --no-audit --no-fund)
fi

# PostGIS: Parse Server on Postgres answers geo queries with it (the differential's geo
# scenario). --no-upgrade: it must not pull a newer postgresql-15 than the one installed.
if ! installed postgresql-15-postgis-3; then
    if [ "$updated" = 0 ]; then $SUDO apt-get update -qq; updated=1; fi
    $SUDO apt-get install -y -qq --no-install-recommends --no-upgrade postgresql-15-postgis-3
fi

PG_CONFIG="${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}"
if ! cargo pgrx --version 2>/dev/null | grep -q "0.18.1"; then
    cargo install cargo-pgrx --version 0.18.1 --locked
fi
if ! grep -qs '^pg15' "${PGRX_HOME:-$HOME/.pgrx}/config.toml"; then
    cargo pgrx init --pg15 "$PG_CONFIG"
fi
echo "install-deps: ok (postgresql-15 ${pgver}, $(cargo pgrx --version))"

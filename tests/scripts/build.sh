#!/usr/bin/env bash
# Builds the release extension into the system Postgres and the release binaries.
set -euo pipefail
cd "$(dirname "$0")/../.."
PG_CONFIG="${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}"
sudo_flag=()
if [ "$(id -u)" -ne 0 ]; then sudo_flag=(--sudo); fi
cargo pgrx install --release -p pgbaas --pg-config "$PG_CONFIG" "${sudo_flag[@]}"
cargo build --release -p pgbaas-proxy -p pgbaas-tests -p pgbaas-import

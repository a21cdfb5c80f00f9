#!/usr/bin/env bash
# The README's test command: every tier, non-zero exit on any failure.
#   1. cargo test        plain Rust logic of the proxy, the query language and email crates
#   2. cargo pgrx test   the extension's Rust logic and #[pg_test]s inside a backend
#   3. SQL regression    pgTAP files in sql/tests, against a fresh cluster
#   4. end to end        a real cluster, the real proxy binary, real HTTP; upgrade from
#                        the previous release, pg_dump/pg_restore (tests/tests/upgrade.rs)
set -euo pipefail
cd "$(dirname "$0")/../.."
bash tests/scripts/install-deps.sh

# Every tier's output also goes to a log, so the last line can total them.
log="$(mktemp /tmp/pgbaas-test-log-XXXXXX)"
tier() { "$@" 2>&1 | tee -a "$log"; }

echo "== tier 1: cargo test (proxy logic)"
tier cargo test --release -p pgbaas-proxy -p pgbaas-query -p pgbaas-email -p pgbaas-import

echo "== tier 2: cargo pgrx test (extension)"
if [ "$(id -u)" -eq 0 ]; then
    # Postgres refuses to run as root: pgrx runs it as user postgres in a dir it owns.
    pgdata="$(mktemp -d /tmp/pgbaas-pgrx-XXXXXX)"
    chown postgres:postgres "$pgdata"
    trap 'rm -rf "$pgdata"' EXIT
    tier cargo pgrx test -p pgbaas pg15 --runas postgres --pgdata "$pgdata"
else
    tier cargo pgrx test -p pgbaas pg15
fi

echo "== build: the pgrx test run installed its test build; install the release build"
bash tests/scripts/build.sh
# The previous release, for the upgrade test in tier 4 (tests/tests/upgrade.rs): built
# once into target/previous/ and reused. That test installs it for a while and puts this
# build back; cargo runs test binaries one at a time, so no other tier-4 test sees it.
echo "== build: the previous release (for the upgrade test)"
bash tests/scripts/previous-version.sh

echo "== tiers 3 and 4: SQL regression and end-to-end"
tier cargo test --release -p pgbaas-tests
# The realtime hub with its real start-up SQL, in process (proxy/src/realtime/hub/db_tests.rs):
# ignored in tier 1 because it needs the release extension installed (build.sh above).
tier cargo test --release -p pgbaas-proxy realtime::hub::db_tests -- --ignored
echo "== all tiers passed"
# One closing line over all tiers (cargo prints one "test result" per test binary).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "%d passed, %d failed\n", p, f }' "$log"
rm -f "$log"

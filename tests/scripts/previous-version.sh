#!/usr/bin/env bash
# Builds the previous release of the extension (the one upgrade scripts start from) as
# a pgrx package directory, once: tests/tests/upgrade.rs installs it, fills a database,
# then puts the current build back and runs ALTER EXTENSION pgbaas UPDATE.
#
#   tests/scripts/previous-version.sh      prints the package directory
#
# The source is `git archive` of the pinned release commit, so a fresh clone needs its
# history (a shallow CI clone must fetch that commit). It builds in a target dir of its
# own: sharing the workspace's would let the two builds overwrite each other's
# libpgbaas.so (a cdylib's file name carries no hash), and cargo, seeing its own
# fingerprint fresh, would then install the old library as the new one. The first build
# seeds that dir with a copy of target/release when there is one, so only pgbaas itself
# is compiled (dependencies at the same versions are reused); later runs reuse the package.
set -euo pipefail
cd "$(dirname "$0")/../.."
root="$PWD"
PREVIOUS_VERSION=0.15.0
PREVIOUS_COMMIT=09ff52d808d472d5d94c412b9c1798eec934a9c6
PG_CONFIG="${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}"
target="${CARGO_TARGET_DIR:-$root/target}"
base="$target/previous/$PREVIOUS_VERSION"
pkg="$base/pkg"

if [ -f "$base/done-$PREVIOUS_COMMIT" ]; then
    echo "$pkg"
    exit 0
fi
rm -rf "$base/src" "$pkg"
mkdir -p "$base/src"
if ! git -C "$root" cat-file -e "$PREVIOUS_COMMIT^{commit}" 2>/dev/null; then
    git -C "$root" fetch --quiet origin "$PREVIOUS_COMMIT" >&2
fi
# -m: sources dated now, not at the commit, so that nothing seeded below looks newer.
git -C "$root" archive "$PREVIOUS_COMMIT" | tar -x -m -C "$base/src"
if [ ! -d "$base/target/release" ] && [ -d "$target/release/deps" ]; then
    mkdir -p "$base/target/release"
    cp -a "$target/release/deps" "$target/release/build" "$target/release/.fingerprint" "$base/target/release/" >&2
    # Dependencies only, never the workspace's own crates: cargo identifies a workspace
    # member by its path relative to the workspace, so a seeded pgbaas fingerprint would
    # pass for the old source's, and the current libpgbaas.so would be packaged as the previous version.
    rm -rf "$base/target/release/.fingerprint"/pgbaas* "$base/target/release/build"/pgbaas* \
           "$base/target/release/deps"/*pgbaas*
fi
(cd "$base/src" && CARGO_TARGET_DIR="$base/target" \
    cargo pgrx package -p pgbaas --pg-config "$PG_CONFIG" --out-dir "$pkg" >&2)
# Under the install PG_CONFIG names (a private copy of Postgres too, as tools that
# isolate test runs use), so its sharedir, not /usr/share/postgresql/*.
ls "$pkg$("$PG_CONFIG" --sharedir)/extension/pgbaas--$PREVIOUS_VERSION.sql" >/dev/null
touch "$base/done-$PREVIOUS_COMMIT"
echo "$pkg"

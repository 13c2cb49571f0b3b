#!/usr/bin/env bash
# SQL conformance: DataFusion's own sqllogictest files (a selection, conformance/corpus.txt) run
# through a real server's Flight SQL and HTTP surfaces, every answer compared with in-process
# DataFusion of the same version. See docs/sql-conformance.md.
#
# Usage: bash tests/conformance.sh [--report FILE] [--only SUBSTRING]
#   --report FILE     where the Markdown report goes (default: CONFORMANCE.md)
#   --only SUBSTRING  run only the corpus files whose path contains SUBSTRING
# Expects a debug build of the workspace (tests/run.sh builds it; or `cargo build --workspace`).
# The .slt files come from the datafusion-sqllogictest crate of the DataFusion version in
# Cargo.lock, downloaded once from crates.io (pinned by its SHA-256) into the target dir.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
target="${CARGO_TARGET_DIR:-$root/target}"
report="$root/CONFORMANCE.md"
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --report) report="$2"; shift 2 ;;
    --only) extra+=(--only "$2"); shift 2 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done

# The crate of the DataFusion version the server is built with.
version=55.2.0
sha256=b270cea4d8c2b2c42773e60164204386fb97d7936736e5f126ac751b86d7dabe
locked=$(awk '/^name = "datafusion"$/ { getline; gsub(/"/, "", $3); print $3; exit }' Cargo.lock)
if [ "$locked" != "$version" ]; then
  echo "Cargo.lock has DataFusion $locked but tests/conformance.sh pins the sqllogictest files of $version:" >&2
  echo "update version and sha256 in tests/conformance.sh (sha256sum of the crate from crates.io)" >&2
  exit 1
fi
cache="$target/conformance"
corpus="$cache/datafusion-sqllogictest-$version/test_files"
if [ ! -d "$corpus" ]; then
  mkdir -p "$cache"
  crate="$cache/datafusion-sqllogictest-$version.crate"
  curl -fsSL --retry 3 -o "$crate.part" \
    "https://static.crates.io/crates/datafusion-sqllogictest/$version/download"
  echo "$sha256  $crate.part" | sha256sum -c --quiet -
  mv "$crate.part" "$crate"
  tar xzf "$crate" -C "$cache"
fi

for exe in dataport sql-conformance; do
  [ -x "$target/debug/$exe" ] || { echo "missing $target/debug/$exe: build the workspace first (cargo build --workspace)" >&2; exit 1; }
done
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$target/debug/sql-conformance" --bin "$target/debug/dataport" --corpus "$corpus" \
  --files conformance/corpus.txt --refuse conformance/must_refuse.txt --report "$report" \
  --work "$work" "${extra[@]}"

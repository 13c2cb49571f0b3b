#!/usr/bin/env bash
# The benchmark harness in one command: builds the binaries with the `profiling` profile (the
# release build plus line tables, so perf and flame graphs name functions and lines), prepares a
# pinned venv with DuckDB and pyarrow, and runs benches/bench.py (arguments are passed on, e.g.
# --scale 0.1).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
cargo build --profile profiling --workspace --quiet
venv=$(bash tests/venv.sh)
exec "$venv/bin/python" benches/bench.py --bin "${CARGO_TARGET_DIR:-$root/target}/profiling/dataport" "$@"

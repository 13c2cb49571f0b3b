#!/usr/bin/env bash
# The whole test suite: formatting, lints, dependency rules, Rust tests, and end-to-end tests
# through real clients (pyarrow, DuckDB, Python's csv/json) against the real binary.
# Usage: bash tests/run.sh            (everything)
#        bash tests/run.sh --rust     (skip the end-to-end suite)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

# Each step's duration is printed when the next starts, and all of them at the end.
durations=()
current=""
started=0
finish_step() {
  if [ -n "$current" ]; then
    local took=$(( $(date +%s) - started ))
    durations+=("$(printf '%5ds  %s' "$took" "$current")")
  fi
}
step() {
  finish_step
  current="$*"
  started=$(date +%s)
  printf '\n==> %s\n' "$*"
}
report_durations() {
  finish_step
  current=""
  printf '\n==> step durations\n'
  printf '%s\n' "${durations[@]}"
}
trap report_durations EXIT

step "cargo fmt --check"
cargo fmt --all -- --check


step "dependency rules"
dups=$(cargo tree --workspace -d -e normal --depth 0 --prefix none 2>/dev/null | grep -E '^(arrow|parquet|datafusion|sqlparser|tonic|object_store)(-[a-z-]+)? v' || true)
if [ -n "$dups" ]; then
  echo "these crates are built twice (one version of each must serve):"; echo "$dups"; exit 1
fi
forbid() { # crate, regex of forbidden dependencies
  local hits
  hits=$(cargo tree -p "$1" -e normal --prefix none 2>/dev/null | grep -E "^($2) v" | sort -u || true)
  if [ -n "$hits" ]; then echo "$1 must not depend on: $hits"; exit 1; fi
}
forbid dataport-common 'datafusion|arrow|parquet|tokio|reqwest|tonic|axum|clap|rusqlite|dataport-(state|auth|catalog|connectors|engine|web|flight|demo|client)'   # the bottom of the workspace
forbid dataport-state 'datafusion|arrow|parquet|tonic|axum|clap|argon2|jsonwebtoken|dataport-(auth|catalog|engine|web|flight|demo)'
forbid dataport-auth 'datafusion|arrow|parquet|tonic|axum|clap|dataport-(catalog|engine|web|flight|demo)'
forbid dataport-mail 'datafusion|arrow|parquet|tonic|axum|clap|rusqlite|dataport-(state|auth|catalog|connectors|engine|web|flight|demo|client)'   # mail knows messages and SMTP only
forbid dataport-notify 'datafusion|arrow|parquet|tonic|axum|clap|dataport-(catalog|connectors|engine|web|flight|demo|client)'   # scripts query the server as clients do
forbid dataport-memory 'datafusion|arrow|parquet|tonic|axum|clap|dataport-(catalog|connectors|engine|web|flight|demo|client|notify)'   # items, screen, collector: no serving, no SQL
forbid dataport-mcp 'datafusion|arrow|parquet|tonic|axum|hyper|reqwest|clap|rusqlite|dataport-(common|state|auth|catalog|connectors|engine|web|flight|demo|client|memory|notify)'   # the protocol and the tools' words: answers come from a Backend
forbid dataport-catalog 'dataport-engine|dataport-web|dataport-flight|axum|tonic|clap'
forbid dataport-connectors 'dataport-(auth|engine|web|flight|demo)|axum|tonic|arrow-flight|clap'
forbid dataport-engine 'dataport-(web|flight|connectors)|axum|tonic|arrow-flight|clap'   # sync jobs are composed by the binary
forbid dataport-flight 'dataport-(web|demo|connectors)|clap'   # (axum comes with tonic's router)
forbid dataport-web 'dataport-(flight|demo|connectors)|clap'
forbid dataport-benches 'dataport-(state|auth|catalog|connectors|engine|web|flight|demo|client)'   # the plain-DataFusion baseline
forbid dataport-client 'datafusion|arrow|parquet|object_store|dataport-(state|auth|catalog|connectors|engine|web|flight|demo)|axum|tonic|clap'   # the laptop: HTTP and the shared types only
forbid dataport-laptop 'datafusion|arrow|parquet|object_store|dataport-(state|auth|catalog|connectors|engine|web|flight|demo)|axum|tonic'   # the laptop binary
forbid dataport-conformance 'dataport-(web|flight|client|demo)'   # a client of the server, and in-process DataFusion
# The test helpers are a dev-dependency only: nothing that ships may link them.
users=$(cargo tree --workspace -e normal -i dataport-testkit --prefix none 2>/dev/null | grep -v '^dataport-testkit v' | sort -u || true)
if [ -n "$users" ]; then echo "dataport-testkit is for tests only, but these depend on it: $users"; exit 1; fi
echo "ok"

step "build, with clippy -D warnings on the workspace's crates"
# One build serves clippy, the tests, the end-to-end binary and the conformance runner. Clippy's
# driver compiles the workspace's own crates (cargo's RUSTC_WORKSPACE_WRAPPER, as `cargo clippy`
# sets it) and lints them while it does, so the dependencies are built once, not once more for
# a separate `cargo clippy` check build (ten minutes on two cores). `--all-targets` resolves
# features like `cargo test` does, so every artifact is shared.
if driver=$(rustup which clippy-driver 2>/dev/null || command -v clippy-driver); then
  export RUSTC_WORKSPACE_WRAPPER="$driver"
  export CLIPPY_ARGS="-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__"
  cargo build --workspace --all-targets --quiet
else
  echo "clippy-driver not found: linting with a separate cargo clippy"
  cargo clippy --workspace --all-targets --quiet -- -D warnings
  cargo build --workspace --all-targets --quiet
fi

if [ "${1:-}" != "--rust" ]; then
  step "the pinned Python venv (real clients; DuckDB for the client's offline tests too)"
  venv=$(bash tests/venv.sh)
fi

step "cargo test"
# `--tests`: the unit and integration tests; the doc examples are the next step.
cargo test --workspace --tests --quiet

step "cargo test --doc (the examples in the crates' documentation)"
# Same environment as the build: the libraries are not rebuilt, only the examples compiled.
cargo test --workspace --doc --quiet

[ "${1:-}" = "--rust" ] && exit 0

step "end-to-end tests (real clients)"
# The OpenID Connect provider the sign-in tests start (tests/oidc: oidc-provider, pinned).
[ -d tests/oidc/node_modules/oidc-provider ] || npm ci --prefix tests/oidc --no-audit --no-fund --silent
# axe-core, which the browser tests inject into pages (tests/browser, pinned).
[ -d tests/browser/node_modules/axe-core ] || npm ci --prefix tests/browser --no-audit --no-fund --silent
DATAPORT_BIN="${CARGO_TARGET_DIR:-$root/target}/debug/dataport" "$venv/bin/python" -m pytest tests/e2e -q -p no:cacheprovider

step "SQL conformance (DataFusion's sqllogictest files through Flight SQL and HTTP)"
conformance_report=$(mktemp)
if ! bash tests/conformance.sh --report "$conformance_report"; then
  sed -n '/^## Differences/,$p' "$conformance_report"
  exit 1
fi

step "benchmark harness smoke run (scale 0.01, one run; no timing is checked)"
bench_tmp=$(mktemp -d)
trap 'rm -rf "$bench_tmp" "$conformance_report"; report_durations' EXIT
"$venv/bin/python" benches/bench.py --scale 0.01 --runs 1 --data "$bench_tmp/data" \
  --out "$bench_tmp/BENCHMARKS.md" --bin "${CARGO_TARGET_DIR:-$root/target}/debug/dataport" >/dev/null
for section in "TPC-H, 22 queries" "Result transfer" "Profile of lineitem" "CSV to typed Parquet" "Concurrency"; do
  grep -q "$section" "$bench_tmp/BENCHMARKS.md" || { echo "benchmark section missing: $section"; exit 1; }
done

#!/usr/bin/env bash
# Prints the path of the pinned Python venv (tests/requirements.txt), creating or rebuilding
# it when the pins changed. Used by tests/run.sh and benches/run.sh.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="$root/.venv-test"
stamp="$venv/.requirements.sha256"
want=$(sha256sum "$root/tests/requirements.txt" | cut -d' ' -f1)
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  rm -rf "$venv"
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$root/tests/requirements.txt" >&2
  echo "$want" > "$stamp"
fi
echo "$venv"

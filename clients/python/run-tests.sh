#!/usr/bin/env bash
# Creates a virtualenv, installs herald-client with its test extras and runs
# the test suite against real herald processes (and nats-server for the
# cluster tests). Exits non-zero on any failure; a missing herald or
# nats-server binary is a failure, never a skip.
#
#   clients/python/run-tests.sh [pytest args...]
#   HERALD_BIN=/path/to/herald clients/python/run-tests.sh
set -euo pipefail
cd "$(dirname "$0")"
HERE=$(pwd)
VENV=${VENV:-"$HERE/.venv"}

if [ -z "${HERALD_BIN:-}" ]; then
  export HERALD_BIN="$HERE/../../target/debug/herald"
  if [ ! -x "$HERALD_BIN" ]; then
    echo "==> building herald (cargo build -p herald)"
    (cd ../.. && cargo build -p herald)
  fi
fi
[ -x "$HERALD_BIN" ] || { echo "herald binary not found at $HERALD_BIN" >&2; exit 1; }
if ! command -v nats-server >/dev/null && [ -z "${NATS_SERVER:-}" ] && [ ! -x /usr/sbin/nats-server ]; then
  echo "nats-server not found: apt-get install nats-server (or set NATS_SERVER)" >&2
  exit 1
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "==> creating $VENV"
  python3 -m venv "$VENV"
fi
echo "==> installing herald-client[test]"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e ".[test]"

echo "==> mypy --strict"
"$VENV/bin/python" -m mypy

echo "==> pytest (herald: $HERALD_BIN)"
exec "$VENV/bin/python" -m pytest "$@"

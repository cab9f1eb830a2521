#!/usr/bin/env bash
# Runs Herald's whole test suite on a fresh Debian machine: installs what the
# tests need (system packages, Node and Python test dependencies), builds once,
# then runs every test group against that build. A missing tool is an error,
# never a skip.
#
#   scripts/test-all.sh            # everything
#   SKIP_INSTALL=1 scripts/test-all.sh   # assume dependencies are installed
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}

step() { printf '\n==> %s\n' "$*"; }

install_system_packages() {
  local missing=()
  command -v nats-server >/dev/null || [ -x /usr/sbin/nats-server ] || missing+=(nats-server)
  # The deploy tests: haproxy -c, and local-cluster.sh behind HAProxy;
  # openssl and curl for its secrets, tokens and checks.
  command -v haproxy >/dev/null || [ -x /usr/sbin/haproxy ] || missing+=(haproxy)
  command -v openssl >/dev/null || missing+=(openssl)
  command -v curl >/dev/null || missing+=(curl)
  [ -x /usr/bin/chromium ] || missing+=(chromium)
  # The C toolchain builds jemalloc (Herald's allocator) and ring.
  command -v cc >/dev/null || missing+=(gcc)
  command -v make >/dev/null || missing+=(make)

  command -v node >/dev/null || missing+=(nodejs)
  command -v npm >/dev/null || missing+=(npm)
  python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)

  if ((${#missing[@]})); then
    step "installing system packages: ${missing[*]}"
    local sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    $sudo apt-get update
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y --no-install-recommends "${missing[@]}"
  fi
}

install_test_dependencies() {
  step "installing browser and JavaScript client test dependencies (npm)"
  (cd e2e/browser && npm ci --no-audit --no-fund)
  (cd clients/js && npm ci --no-audit --no-fund)
}

if [ -z "${SKIP_INSTALL:-}" ]; then
  install_system_packages
  install_test_dependencies
fi

step "formatting and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings

step "building (once, reused by every group below)"
cargo build --workspace --all-targets --locked
export HERALD_BIN="$ROOT/target/debug/herald"

step "Rust unit, property and integration tests (real herald processes)"
cargo test --workspace --locked

step "WebSocket conformance (Autobahn cases via kosoku, against /v1/echo)"
e2e/autobahn/run.sh

step "browser tests (headless Chromium)"
[ -x /usr/bin/chromium ] || { echo "chromium is required for the browser tests" >&2; exit 1; }
(cd e2e/browser && npm test)

step "JavaScript/TypeScript client (unit, Chromium, cluster)"
(cd clients/js && npm test)

step "Python client (pytest against real nodes and nats-server)"
clients/python/run-tests.sh

step "all tests passed"

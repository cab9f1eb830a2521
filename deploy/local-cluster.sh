#!/usr/bin/env bash
# Runs a 3-node Herald cluster on this machine by hand, with Debian's
# nats-server (apt-get install nats-server), until Ctrl-C.
#   deploy/local-cluster.sh            # nodes on 127.0.0.1:8081-8083
#   DATA=/tmp/herald-cluster deploy/local-cluster.sh
set -euo pipefail
cd "$(dirname "$0")/.."
NATS_BIN=$(command -v nats-server || echo /usr/sbin/nats-server)
[ -x "$NATS_BIN" ] || { echo "nats-server not found: apt-get install nats-server" >&2; exit 1; }
HERALD=${HERALD_BIN:-target/release/herald}
[ -x "$HERALD" ] || cargo build --release -p herald
DATA=${DATA:-$(mktemp -d /tmp/herald-cluster.XXXX)}
NATS_PORT=${NATS_PORT:-4222}
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

"$NATS_BIN" -a 127.0.0.1 -p "$NATS_PORT" >"$DATA/nats.log" 2>&1 & pids+=($!)
for i in 1 2 3; do
  "$HERALD" serve --listen "127.0.0.1:808$i" --data-dir "$DATA/n$i" \
    --nats "nats://127.0.0.1:$NATS_PORT" --node-id "n$i" >"$DATA/n$i.log" 2>&1 & pids+=($!)
done
for i in 1 2 3; do
  for _ in $(seq 1 100); do
    curl -fsS "http://127.0.0.1:808$i/readyz" >/dev/null 2>&1 && break
    sleep 0.1
  done
  echo "n$i: $(curl -s "http://127.0.0.1:808$i/readyz")"
done
echo "cluster up; logs and data in $DATA; Ctrl-C to stop"
if [ -n "${SMOKE:-}" ]; then
  # Publish through every node, read back from every node.
  for i in 1 2 3; do curl -fsS -X POST "http://127.0.0.1:808$i/v1/topics/smoke.t/messages" -d "via n$i" >/dev/null; done
  sleep 0.5
  for i in 1 2 3; do
    n=$(curl -fsS "http://127.0.0.1:808$i/v1/topics/smoke.t/messages" | grep -o '"seq"' | wc -l)
    echo "n$i holds $n messages"; [ "$n" = 3 ] || exit 1
  done
  exit 0
fi
wait

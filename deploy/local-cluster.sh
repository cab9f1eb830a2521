#!/usr/bin/env bash
# Runs the deploy topology on this machine, until Ctrl-C: a 3-server NATS
# cluster (Debian's nats-server with deploy/nats/nats.conf: routes, the
# `herald` user only), 3 Herald nodes with auth on, and HAProxy in front
# (Debian's haproxy with deploy/haproxy/haproxy.cfg).
#   deploy/local-cluster.sh                  # clients: http://127.0.0.1:8080 (HAProxy)
#   DATA=/tmp/herald-cluster deploy/local-cluster.sh   # data, logs, secrets kept there
#   SMOKE=1 deploy/local-cluster.sh          # start, check, stop (exit 0 = healthy)
# PORT_OFFSET=N adds N to every port (HAProxy 8080, stats 8404, nodes
# 8081-8083, NATS 4222-4224, routes 6222-6224, NATS monitoring 8222-8224).
# HERALD_BIN picks the binary (default target/release/herald, built if missing).
set -euo pipefail
cd "$(dirname "$0")/.."

fail() { echo "local-cluster: $*" >&2; exit 1; }
tool() { command -v "$1" 2>/dev/null || { [ -x "/usr/sbin/$1" ] && echo "/usr/sbin/$1"; } || fail "$1 not found: apt-get install $2"; }
NATS_BIN=$(tool nats-server nats-server)
HAPROXY_BIN=$(tool haproxy haproxy)
tool curl curl >/dev/null
tool openssl openssl >/dev/null
HERALD=${HERALD_BIN:-target/release/herald}
[ -x "$HERALD" ] || cargo build --release -p herald
DATA=${DATA:-$(mktemp -d /tmp/herald-cluster.XXXX)}
mkdir -p "$DATA" || fail "cannot create $DATA"
DATA=$(cd "$DATA" && pwd)
off=${PORT_OFFSET:-0}
LB_PORT=$((8080 + off)) STATS_PORT=$((8404 + off))

pids=()
cleanup() { [ ${#pids[@]} -eq 0 ] || kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT
trap 'exit 130' INT TERM

# Secrets as the deploy files get them (kept in DATA across runs).
deploy/make-secrets.sh "$DATA/secrets" 2>/dev/null
# Each process gets only the secret files it needs, as in compose. Called
# with `&`, so the sourcing happens in the background subshell, which the
# command then replaces (its PID is the program's, for cleanup).
with() {
  set -a
  for f in "${@:1:$#-1}"; do . "$DATA/secrets/$f.env"; done
  set +a
  eval "${*: -1}"
}

# Waits for `probe` to succeed, or fails naming `what` and its log.
wait_for() {
  local what=$1 log=$2 probe=$3 pid=$4
  for _ in $(seq 1 300); do
    eval "$probe" >/dev/null 2>&1 && return 0
    kill -0 "$pid" 2>/dev/null || { tail -n 30 "$log" >&2; fail "$what exited; log: $log"; }
    sleep 0.1
  done
  tail -n 30 "$log" >&2
  fail "$what not ready after 30 s; log: $log"
}

route_pw=$(sed -n 's/^NATS_ROUTE_PASSWORD=//p' "$DATA/secrets/routes.env")
routes=$(for i in 1 2 3; do printf 'nats-route://route:%s@127.0.0.1:%d,' "$route_pw" $((6221 + i + off)); done)
routes=${routes%,}
nats_urls=$(for i in 1 2 3; do printf 'nats://127.0.0.1:%d,' $((4221 + i + off)); done)
nats_urls=${nats_urls%,}

for i in 1 2 3; do
  with bus routes "exec '$NATS_BIN' -c deploy/nats/nats.conf -n nats$i -a 127.0.0.1 -p $((4221 + i + off)) \
    -m $((8221 + i + off)) --cluster nats://route:$route_pw@127.0.0.1:$((6221 + i + off)) --routes '$routes'" \
    >"$DATA/nats$i.log" 2>&1 &
  pids+=($!)
done
for i in 1 2 3; do
  wait_for "nats$i" "$DATA/nats$i.log" \
    "[ \"\$(curl -fsS 'http://127.0.0.1:$((8221 + i + off))/routez' | grep -o '\"num_routes\": *[0-9]*' | grep -o '[0-9]*$')\" = 2 ]" \
    "${pids[$((i - 1))]}"
done

for i in 1 2 3; do
  with herald bus "exec '$HERALD' serve --listen 127.0.0.1:$((8080 + i + off)) --data-dir '$DATA/n$i' \
    --nats '$nats_urls' --node-id n$i" >"$DATA/n$i.log" 2>&1 &
  pids+=($!)
done
for i in 1 2 3; do
  wait_for "node n$i" "$DATA/n$i.log" "curl -fsS http://127.0.0.1:$((8080 + i + off))/readyz" "${pids[$((i + 2))]}"
  echo "n$i: http://127.0.0.1:$((8080 + i + off)) $(curl -s "http://127.0.0.1:$((8080 + i + off))/readyz")"
done

HAPROXY_BIND=127.0.0.1:$LB_PORT HAPROXY_STATS_BIND=127.0.0.1:$STATS_PORT \
  HERALD_N1=127.0.0.1:$((8081 + off)) HERALD_N2=127.0.0.1:$((8082 + off)) HERALD_N3=127.0.0.1:$((8083 + off)) \
  "$HAPROXY_BIN" -db -f deploy/haproxy/haproxy.cfg >"$DATA/haproxy.log" 2>&1 &
pids+=($!)
# Up once its health checks (/readyz) passed on all three nodes.
wait_for haproxy "$DATA/haproxy.log" \
  "[ \"\$(curl -fsS 'http://127.0.0.1:$STATS_PORT/;csv' | grep -c '^herald,n[123],.*,UP,')\" = 3 ]" \
  "${pids[6]}"

echo "cluster up: clients -> http://127.0.0.1:$LB_PORT (HAProxy; stats http://127.0.0.1:$STATS_PORT)"
echo "NATS: $nats_urls; data, logs and secrets in $DATA"
echo "publisher API key and JWT secret: $DATA/secrets/herald.env (deploy/make-token.sh -e it to mint client tokens)"

if [ -n "${SMOKE:-}" ]; then
  key=$(sed -n 's/^HERALD_API_KEYS=//p' "$DATA/secrets/herald.env")
  token=$(deploy/make-token.sh -e "$DATA/secrets/herald.env" -s 'smoke.>' smoke-reader)
  topic="smoke.t$(date +%s%N)"
  code=$(curl -s -o /dev/null -w '%{http_code}' -X POST "http://127.0.0.1:$LB_PORT/v1/topics/$topic/messages" -d '"anonymous"')
  [ "$code" = 401 ] || fail "an anonymous publish got $code, not 401: auth is off"
  # Publish through every node and through HAProxy with the API key...
  for port in $((8081 + off)) $((8082 + off)) $((8083 + off)) $LB_PORT $LB_PORT $LB_PORT; do
    curl -fsS -H "Authorization: Bearer $key" -X POST "http://127.0.0.1:$port/v1/topics/$topic/messages" \
      -d "\"via $port\"" >/dev/null || fail "publish via port $port failed"
  done
  # ...and read all six back from every node and HAProxy with a minted JWT.
  for port in $((8081 + off)) $((8082 + off)) $((8083 + off)) $LB_PORT; do
    n=0
    for _ in $(seq 1 50); do
      n=$(curl -fsS -H "Authorization: Bearer $token" "http://127.0.0.1:$port/v1/topics/$topic/messages" | grep -o '"seq"' | wc -l)
      [ "$n" = 6 ] && break
      sleep 0.1
    done
    echo "port $port holds $n messages of $topic"
    [ "$n" = 6 ] || fail "port $port holds $n of 6 messages"
  done
  echo "smoke test passed"
  exit 0
fi
wait

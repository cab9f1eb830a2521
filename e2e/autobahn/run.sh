#!/usr/bin/env bash
# WebSocket conformance: runs the Autobahn|Testsuite cases (via kosoku) against
# herald's /v1/echo endpoint, which uses the same connection code path as
# /v1/ws. Compression cases (12.*, 13.*) are excluded: permessage-deflate is
# not implemented. Fails on any FAILED case, wrong close code, or a case in
# which the server did not close TCP itself right after the close handshake.
#   e2e/autobahn/run.sh            # uses $HERALD_BIN or target/debug/herald
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
HERALD=${HERALD_BIN:-$ROOT/target/debug/herald}
VENV=${VENV:-$ROOT/.venv-test}
[ -x "$HERALD" ] || { echo "herald binary not found at $HERALD (cargo build -p herald)" >&2; exit 1; }
if [ ! -x "$VENV/bin/kosoku" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$ROOT/e2e/autobahn/requirements.txt"
fi
WORK=$(mktemp -d)
"$HERALD" serve --listen 127.0.0.1:0 --data-dir "$WORK/data" --enable-echo >"$WORK/ready" 2>"$WORK/herald.log" &
PID=$!
trap 'kill $PID 2>/dev/null || true; wait $PID 2>/dev/null || true; rm -rf "$WORK"' EXIT
# The address is in the ready line, herald's only stdout (protocol-spec §15.7).
for _ in $(seq 1 100); do
  ADDR=$(grep '^{.*"listening"' "$WORK/ready" 2>/dev/null | sed -n 's/.*"addr":"\([^"]*\)".*/\1/p' | head -1 || true)
  [ -n "$ADDR" ] && break
  sleep 0.1
done
[ -n "${ADDR:-}" ] || { cat "$WORK/herald.log" >&2; echo "herald printed no ready line" >&2; exit 1; }
OUT=${AUTOBAHN_OUT:-$ROOT/.artifacts/autobahn}
rm -rf "$OUT"; mkdir -p "$OUT"
"$VENV/bin/kosoku" -m fuzzingclient -i '*' -x '12.*' -x '13.*' -p 2 -o "$OUT" "$ADDR/v1/echo" >"$OUT/summary.txt" 2>&1 || {
  tail -40 "$OUT/summary.txt" >&2
  echo "Autobahn conformance FAILED (reports in $OUT)" >&2
  exit 1
}
python3 - "$OUT" <<'PY'
import json, os, sys, collections
out = sys.argv[1]
cases = next(iter(json.load(open(os.path.join(out, "index.json"))).values()))
behaviour = collections.Counter(v["behavior"] for v in cases.values())
close = collections.Counter(v.get("behaviorClose") for v in cases.values())
print(f"autobahn: {len(cases)} cases; behavior {dict(behaviour)}; close {dict(close)}")
bad = [k for k, v in cases.items() if v["behavior"] in ("FAILED", "UNIMPLEMENTED") or v.get("behaviorClose") not in ("OK", "INFORMATIONAL")]
if bad or len(cases) < 250:
    sys.exit(f"autobahn: failing cases {bad[:20]}")
# The strict close check: after the close handshake the server closes TCP
# itself, at once (RFC 6455 7.1.1), so the test client never has to drop the
# connection or wait for it to drop.
late = []
for k, v in cases.items():
    report = json.load(open(os.path.join(out, v["reportfile"])))
    if report.get("droppedByMe") or report.get("wasServerConnectionDropTimeout") or report.get("wasCloseHandshakeTimeout"):
        late.append(k)
print(f"autobahn: {len(cases) - len(late)} of {len(cases)} cases closed TCP from the server side in time")
if late:
    sys.exit(f"autobahn: server did not drop TCP (in time) in {late[:20]}")
PY

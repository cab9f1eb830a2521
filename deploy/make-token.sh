#!/usr/bin/env bash
# Mints a client JWT (HS256) for Herald with openssl, signed with
# HERALD_JWT_SECRET (taken from the environment, or from the env file given
# with -e, e.g. deploy/secrets/herald.env).
#   deploy/make-token.sh -e deploy/secrets/herald.env -s 'chat.>' alice
#   deploy/make-token.sh -s 'orders.*,prices.>' -p 'orders.*' -t 3600 svc-orders
# -s / -p: topic patterns the token may subscribe to / publish to
# (comma-separated; default: subscribe to everything, publish nothing);
# -t: lifetime in seconds (default 86400). Prints the token.
# The secret is handed to openssl on its command line: mint tokens on a
# machine you trust; in production your identity provider issues them.
set -euo pipefail
subscribe='>' publish='' ttl=86400 env_file=''
while getopts 's:p:t:e:' opt; do
  case $opt in
    s) subscribe=$OPTARG ;;
    p) publish=$OPTARG ;;
    t) ttl=$OPTARG ;;
    e) env_file=$OPTARG ;;
    *) sed -n '2,12p' "$0" >&2; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
[ $# -eq 1 ] || { sed -n '2,12p' "$0" >&2; exit 2; }
subject=$1
if [ -n "$env_file" ]; then
  HERALD_JWT_SECRET=$(sed -n 's/^HERALD_JWT_SECRET=//p' "$env_file")
fi
[ -n "${HERALD_JWT_SECRET:-}" ] || { echo "make-token: HERALD_JWT_SECRET is not set" >&2; exit 1; }
case $ttl in ''|*[!0-9]*) echo "make-token: -t takes seconds" >&2; exit 2 ;; esac

# Subjects and patterns become JSON strings: refuse anything needing escapes.
for value in "$subject" "$subscribe" "$publish"; do
  case $value in *[\"\\]*) echo "make-token: no quotes or backslashes: $value" >&2; exit 2 ;; esac
done
json_list() {
  local out='' item
  local IFS=,
  for item in $1; do [ -n "$item" ] && out="$out${out:+,}\"$item\""; done
  printf '[%s]' "$out"
}
b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }

header=$(printf '{"alg":"HS256","typ":"JWT"}' | b64url)
claims=$(printf '{"sub":"%s","exp":%d,"subscribe":%s,"publish":%s}' \
  "$subject" "$(( $(date +%s) + ttl ))" "$(json_list "$subscribe")" "$(json_list "$publish")" | b64url)
signature=$(printf '%s.%s' "$header" "$claims" \
  | openssl dgst -sha256 -hmac "$HERALD_JWT_SECRET" -binary | b64url)
echo "$header.$claims.$signature"

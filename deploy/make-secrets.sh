#!/usr/bin/env bash
# Writes a fresh set of secrets for a Herald cluster into DIR (mode 0600):
#   herald.env  HERALD_JWT_SECRET (signs client JWTs, HS256) and
#               HERALD_API_KEYS (one publisher API key) — Herald nodes only
#   bus.env     HERALD_NATS_USER / HERALD_NATS_PASSWORD — Herald nodes and
#               the NATS servers (deploy/nats/nats.conf reads the password)
#   routes.env  NATS_ROUTE_PASSWORD — NATS servers only; with NATS hosts
#               given, also NATS_ROUTES (the --routes list, for systemd)
# Usage:
#   deploy/make-secrets.sh deploy/secrets                  # compose
#   deploy/make-secrets.sh deploy/k8s/secrets              # kustomize
#   deploy/make-secrets.sh /root/herald-secrets nats1.internal nats2.internal nats3.internal
# Existing files are kept (so a re-run never rotates a live secret);
# FORCE=1 overwrites them.
set -euo pipefail
[ $# -ge 1 ] || { sed -n '2,15p' "$0" >&2; exit 2; }
command -v openssl >/dev/null || { echo "make-secrets: openssl is required" >&2; exit 1; }
dir=$1; shift
umask 077
mkdir -p "$dir"
# A letter, then hex: the values go into env files and URLs without quoting,
# and nats-server parses a `$VAR`'s value as a config value, so one starting
# with a digit would be read as a number (or refused).
rand() { printf 's%s' "$(openssl rand -hex "$1")"; }

write() {
  local file="$dir/$1"; shift
  if [ -e "$file" ] && [ -z "${FORCE:-}" ]; then
    echo "make-secrets: keeping existing $file (FORCE=1 to overwrite)" >&2
    return
  fi
  printf '%s\n' "$@" >"$file"
  chmod 600 "$file"
  echo "make-secrets: wrote $file" >&2
}

write herald.env \
  "HERALD_JWT_SECRET=$(rand 32)" \
  "HERALD_API_KEYS=pub-$(rand 24)"
write bus.env \
  "HERALD_NATS_USER=herald" \
  "HERALD_NATS_PASSWORD=$(rand 24)"
route_password=$(rand 24)
routes=()
for host in "$@"; do
  case $host in *:*) ;; *) host="$host:6222" ;; esac
  routes+=("nats-route://route:$route_password@$host")
done
if [ ${#routes[@]} -gt 0 ]; then
  write routes.env "NATS_ROUTE_PASSWORD=$route_password" \
    "NATS_ROUTES=$(IFS=,; echo "${routes[*]}")"
else
  write routes.env "NATS_ROUTE_PASSWORD=$route_password"
fi

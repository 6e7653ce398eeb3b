#!/usr/bin/env bash
# auth_keys.sh — authenticated requests with an API key versus with a JWT, and the p99 of
# GET /v1/auth/me while 50 logins per second hammer auth (issue 3).
#
#   bench/auth_keys.sh [SECONDS]      (default 10 s per measurement)
#
# Both credentials go through the same route (GET /v1/auth/me) so the difference is the
# edge's credential check: a JWT is verified (Ed25519, then a per-thread cache), an API key
# is resolved through auth once and then served from the gateway's shared cache.
# Then: /v1/auth/me at a fixed 1000 rps alone, and again while h2load logs in at 50/s
# (Argon2id, ~25 ms of CPU each, on auth's bounded hashing pool).
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-10}
. bench/lib.sh
bench_need wrk h2load curl
bench_start

KEY=$(curl -fs -XPOST "$base/v1/auth/api-keys" -H "Authorization: Bearer $TOKEN" \
  -H 'content-type: application/json' -d '{"name":"bench"}' | json_field '["secret"]')

echo "# cairn bench: API key vs JWT, and /v1/auth/me under a login flood ($(date -u +%FT%TZ), $(nproc) cores, ${SECS}s per point)"
echo
echo "| credential | saturation rps (wrk -c32) | wrk p50 | wrk p99 | CPU us/req gateway | auth | postgres |"
echo "|---|---|---|---|---|---|---|"
set -- $(saturate /v1/auth/me -H "Authorization: Bearer $TOKEN"); SAT_J=$1
echo "| JWT (Bearer) | $1 | $2 | $3 | $4 | $5 | $6 |"
set -- $(saturate /v1/auth/me -H "X-API-Key: $KEY"); SAT_K=$1
echo "| API key (X-API-Key) | $1 | $2 | $3 | $4 | $5 | $6 |"
echo
echo "| credential | offered rps | p50 ms | p99 ms | max ms | 2xx/total |"
echo "|---|---|---|---|---|---|"
r=$((SAT_J / 2)); set -- $(fixed_rate /v1/auth/me $r -H "Authorization: Bearer $TOKEN")
echo "| JWT | $r (50 %) | $1 | $2 | $3 | $4 |"
r=$((SAT_K / 2)); set -- $(fixed_rate /v1/auth/me $r -H "X-API-Key: $KEY")
echo "| API key | $r (50 %) | $1 | $2 | $3 | $4 |"

echo
echo "| /v1/auth/me at 1000 rps | p50 ms | p99 ms | max ms | 2xx/total | logins ok/total (50/s) |"
echo "|---|---|---|---|---|---|"
set -- $(fixed_rate /v1/auth/me 1000 -H "Authorization: Bearer $TOKEN")
echo "| alone | $1 | $2 | $3 | $4 | - |"
printf '{"email":"%s","password":"%s"}' "$EMAIL" "$PASSWORD" >"$W/login.json"
llog=$(mktemp "$W/login.XXXXXX")
h2load --h1 -c 5 --rps 10 -D "$((SECS + 1))" -d "$W/login.json" -H 'content-type: application/json' \
  --log-file="$llog" "$base/v1/auth/login" >"$llog.out" 2>&1 &
LPID=$!
sleep 1
set -- $(fixed_rate /v1/auth/me 1000 -H "Authorization: Bearer $TOKEN")
wait $LPID || true
logins=$(h2_percentiles "$llog" | awk '{print $4}')
echo "| with 50 logins/s | $1 | $2 | $3 | $4 | $logins |"

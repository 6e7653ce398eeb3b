#!/usr/bin/env bash
# auth_me.sh — GET /v1/auth/me through the gateway versus the gateway's own /healthz
# (no upstream), measured in the same run on this machine.
#
#   bench/auth_me.sh [SECONDS]      (default 10 s per measurement)
#
# Starts a throwaway stack, one cairn-auth and one cairn-gateway (bench/lib.sh), then for
# each target:
#   1. saturation: wrk, 1 thread, 32 connections, HTTP/1.1 keep-alive
#   2. fixed rates at 25 %, 50 % and 75 % of that saturation: h2load --rps (HTTP/1.1,
#      10 clients), p50/p99/max from its per-request log
#   3. CPU per request of each process (gateway, auth, postgres) from /proc during the
#      saturation run: where the time goes (bench/profile_auth_me.sh goes deeper).
# Prints a markdown table; bench/RESULTS.md keeps the figures with this command.
# The machine has 2 cores shared by load generator and servers: read the figures as a
# comparison between the two targets, not as absolute capacity.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-10}
. bench/lib.sh
bench_need wrk h2load curl
bench_start

echo "# cairn bench: GET /v1/auth/me vs /healthz ($(date -u +%FT%TZ), $(nproc) cores, ${SECS}s per point)"
echo
echo "| target | saturation rps (wrk -c32) | wrk p50 | wrk p99 | CPU us/req gateway | auth | postgres |"
echo "|---|---|---|---|---|---|---|"
set -- $(saturate /healthz); SAT_H=$1
echo "| /healthz (no upstream) | $1 | $2 | $3 | $4 | $5 | $6 |"
set -- $(saturate /v1/auth/me -H "Authorization: Bearer $TOKEN"); SAT_M=$1
echo "| /v1/auth/me | $1 | $2 | $3 | $4 | $5 | $6 |"
echo
echo "| target | offered rps | p50 ms | p99 ms | max ms | 2xx/total |"
echo "|---|---|---|---|---|---|"
for pct in 25 50 75; do
  r=$((SAT_H * pct / 100)); set -- $(fixed_rate /healthz $r)
  echo "| /healthz | $r ($pct %) | $1 | $2 | $3 | $4 |"
done
for pct in 25 50 75; do
  r=$((SAT_M * pct / 100)); set -- $(fixed_rate /v1/auth/me $r -H "Authorization: Bearer $TOKEN")
  echo "| /v1/auth/me | $r ($pct %) | $1 | $2 | $3 | $4 |"
done

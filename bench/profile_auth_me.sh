#!/usr/bin/env bash
# profile_auth_me.sh — where the CPU of GET /v1/auth/me goes: perf (software clock; this VM
# has no hardware counters) on cairn-gateway and cairn-auth during a wrk -c32 run.
#
#   bench/profile_auth_me.sh [SECONDS]     (default 6 s of sampling)
#
# Prints the share of samples by shared object and the top symbols for each process.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-6}
. bench/lib.sh
bench_need wrk curl perf
bench_start
wrk -t1 -c32 -d$((SECS + 4))s -H "Authorization: Bearer $TOKEN" "$base/v1/auth/me" >"$W/wrk.txt" &
sleep 2
perf record -e cpu-clock -F 2000 -g -o "$W/gw.data" -p $GW_PID -- sleep "$SECS" >/dev/null 2>&1 &
perf record -e cpu-clock -F 2000 -g -o "$W/auth.data" -p $AUTH_PID -- sleep "$SECS" >/dev/null 2>&1
wait %2 2>/dev/null || true
sleep 3
grep Requests/sec "$W/wrk.txt"
for p in gw auth; do
  echo "== $p: by shared object"
  perf report -i "$W/$p.data" --no-children -g none --sort dso -q 2>/dev/null | head -10
  echo "== $p: top symbols"
  perf report -i "$W/$p.data" --no-children -g none --sort sym -q 2>/dev/null | head -15
done

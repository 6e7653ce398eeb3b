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
command -v perf >/dev/null || { echo "profile: perf missing (apt-get install linux-perf)"; exit 1; }
make -s all >/dev/null
W=$(mktemp -d /tmp/cairn-prof.XXXXXX); chmod 755 "$W"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  scripts/stack stop "$W/stack" >/dev/null 2>&1 || true
  rm -rf "$W"
}
trap cleanup EXIT
freeport() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
scripts/stack start "$W/stack" >/dev/null 2>&1
set -a; . "$W/stack/env"; set +a
RPC=$(freeport); HTTP=$(freeport)
CAIRN_AUTH_LISTEN=tcp://127.0.0.1:$RPC CAIRN_AUTH_ADMIN=127.0.0.1:$(freeport) CAIRN_LOG_LEVEL=warn \
  build/bin/cairn-auth >"$W/auth.log" 2>&1 & A=$!; pids+=($A)
CAIRN_HTTP_PORT=$HTTP CAIRN_GATEWAY_ADMIN=127.0.0.1:$(freeport) CAIRN_AUTH_ADDR=tcp://127.0.0.1:$RPC \
  CAIRN_THREADS=1 CAIRN_LOG_LEVEL=warn build/bin/cairn-gateway >/dev/null 2>"$W/gw.log" & G=$!; pids+=($G)
base=http://127.0.0.1:$HTTP
for i in $(seq 100); do curl -fs "$base/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
body='{"email":"prof@example.com","password":"correct horse battery staple"}'
curl -fs -XPOST "$base/v1/auth/register" -H 'content-type: application/json' -d "$body" >/dev/null
T=$(curl -fs -XPOST "$base/v1/auth/login" -H 'content-type: application/json' -d "$body" |
  /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
wrk -t1 -c32 -d$((SECS + 4))s -H "Authorization: Bearer $T" "$base/v1/auth/me" >"$W/wrk.txt" &
sleep 2
perf record -e cpu-clock -F 2000 -g -o "$W/gw.data" -p $G -- sleep "$SECS" >/dev/null 2>&1 &
perf record -e cpu-clock -F 2000 -g -o "$W/auth.data" -p $A -- sleep "$SECS" >/dev/null 2>&1
wait %2 2>/dev/null || true
sleep 3
grep Requests/sec "$W/wrk.txt"
for p in gw auth; do
  echo "== $p: by shared object"
  perf report -i "$W/$p.data" --no-children -g none --sort dso -q 2>/dev/null | head -10
  echo "== $p: top symbols"
  perf report -i "$W/$p.data" --no-children -g none --sort sym -q 2>/dev/null | head -15
done

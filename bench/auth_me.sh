#!/usr/bin/env bash
# auth_me.sh — GET /v1/auth/me through the gateway versus the gateway's own /healthz
# (no upstream), measured in the same run on this machine.
#
#   bench/auth_me.sh [SECONDS]      (default 10 s per measurement)
#
# Starts a throwaway stack (scripts/stack), one cairn-auth and one cairn-gateway on free
# ports, registers a user and logs in, then for each target:
#   1. saturation: wrk, 1 thread, 32 connections, HTTP/1.1 keep-alive
#   2. fixed rates at 25 %, 50 % and 75 % of that saturation: h2load --rps (HTTP/1.1,
#      10 clients), p50/p99/max from its per-request log
#   3. CPU per request of each process (gateway, auth, postgres) from /proc during the
#      saturation run: where the time goes.
# Prints a markdown table; bench/RESULTS.md keeps the figures with this command.
# The machine has 2 cores shared by load generator and servers: read the figures as a
# comparison between the two targets, not as absolute capacity.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-10}
for t in wrk h2load curl; do command -v $t >/dev/null || { echo "bench: $t missing (scripts/install-deps)"; exit 1; }; done
make -s all >/dev/null

W=$(mktemp -d /tmp/cairn-bench.XXXXXX)
chmod 755 "$W"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  scripts/stack stop "$W/stack" >/dev/null 2>&1 || true
  rm -rf "$W"
}
trap cleanup EXIT

freeport() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

scripts/stack start "$W/stack" >/dev/null
set -a; . "$W/stack/env"; set +a
RPC=$(freeport); RADM=$(freeport); HTTP=$(freeport); GADM=$(freeport)

CAIRN_AUTH_LISTEN=tcp://127.0.0.1:$RPC CAIRN_AUTH_ADMIN=127.0.0.1:$RADM CAIRN_LOG_LEVEL=warn \
  build/bin/cairn-auth >"$W/auth.log" 2>&1 &
AUTH_PID=$!; pids+=($AUTH_PID)
CAIRN_HTTP_PORT=$HTTP CAIRN_GATEWAY_ADMIN=127.0.0.1:$GADM CAIRN_AUTH_ADDR=tcp://127.0.0.1:$RPC \
  CAIRN_THREADS=${CAIRN_THREADS:-1} CAIRN_LOG_LEVEL=warn \
  build/bin/cairn-gateway >/dev/null 2>"$W/gateway.log" &
GW_PID=$!; pids+=($GW_PID)

base=http://127.0.0.1:$HTTP
for i in $(seq 100); do curl -fs "$base/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
curl -fs "$base/readyz" >/dev/null || { echo "bench: gateway not ready"; cat "$W"/*.log; exit 1; }

email="bench-$RANDOM$RANDOM@example.com"
curl -fs -XPOST "$base/v1/auth/register" -H 'content-type: application/json' \
  -d "{\"email\":\"$email\",\"password\":\"correct horse battery staple\"}" >/dev/null
TOKEN=$(curl -fs -XPOST "$base/v1/auth/login" -H 'content-type: application/json' \
  -d "{\"email\":\"$email\",\"password\":\"correct horse battery staple\"}" |
  /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')

PG_PIDS() { # the postmaster and its backends
  local pm
  pm=$(head -1 "$W/stack/pg/data/postmaster.pid" 2>/dev/null) || return 0
  echo "$pm"; pgrep -P "$pm" || true
}
cpu_ticks() { # sum of utime+stime of the given pids (and their threads)
  local s=0
  for p in "$@"; do
    [ -r /proc/$p/stat ] || continue
    s=$((s + $(awk '{print $14+$15}' /proc/$p/stat)))
  done
  echo $s
}
HZ=$(getconf CLK_TCK)

saturate() { # path [wrk args] -> prints: rps p50 p99 cpu_gw cpu_auth cpu_pg
  local path=$1; shift
  local g0 a0 p0 g1 a1 p1 out rps reqs
  g0=$(cpu_ticks $GW_PID); a0=$(cpu_ticks $AUTH_PID); p0=$(cpu_ticks $(PG_PIDS))
  out=$(wrk -t1 -c32 -d"${SECS}s" --latency "$@" "$base$path")
  g1=$(cpu_ticks $GW_PID); a1=$(cpu_ticks $AUTH_PID); p1=$(cpu_ticks $(PG_PIDS))
  rps=$(echo "$out" | awk '/Requests\/sec/ {print int($2)}')
  reqs=$(echo "$out" | awk '/requests in/ {print $1}')
  non2xx=$(echo "$out" | awk '/Non-2xx/ {print $NF}')
  [ -z "$non2xx" ] || { echo "bench: $path answered $non2xx non-2xx responses" >&2; exit 1; }
  local us="/usr/bin/python3 -c"
  echo "$rps $(echo "$out" | awk '$1=="50%" {print $2}') $(echo "$out" | awk '$1=="99%" {print $2}')" \
    "$($us "print(f'{($g1-$g0)/$HZ*1e6/$reqs:.1f}')")" \
    "$($us "print(f'{($a1-$a0)/$HZ*1e6/$reqs:.1f}')")" \
    "$($us "print(f'{($p1-$p0)/$HZ*1e6/$reqs:.1f}')")"
}

fixed_rate() { # path rate -> "p50 p99 max ok/total" in ms
  local path=$1 rate=$2; shift 2
  local clients=10 per
  per=$(( (rate + clients - 1) / clients ))
  rm -f "$W/h2.log"
  h2load --h1 -c $clients --rps "$per" -D "$SECS" --warm-up-time=1 --log-file="$W/h2.log" "$@" "$base$path" >"$W/h2.out" 2>&1 || true
  /usr/bin/python3 - "$W/h2.log" <<'PY'
import sys
rows=[l.split('\t') for l in open(sys.argv[1]) if l.strip()]
lat=sorted(int(r[2])/1000 for r in rows)
ok=sum(1 for r in rows if r[1].startswith('2'))
def pct(p): return lat[min(len(lat)-1,int(p*len(lat)))] if lat else float('nan')
print(f"{pct(0.50):.2f} {pct(0.99):.2f} {lat[-1] if lat else float('nan'):.2f} {ok}/{len(rows)}")
PY
}

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

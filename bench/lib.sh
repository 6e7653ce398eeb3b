# lib.sh — shared set-up for the bench scripts (sourced, not run): a throwaway stack,
# cairn-auth and cairn-gateway on free ports, a signed-in user, and the measurement
# helpers. After `bench_start`: $base (gateway URL), $W (work dir), $AUTH_PID, $GW_PID,
# $TOKEN (an access token), $EMAIL/$PASSWORD. Everything is stopped on exit.
#
# Knobs (set before bench_start):
#   BENCH_SERVICES="auth inference"  also start cairn-inference ($INFER_PID, its log
#                     $W/inference.log); the gateway then routes to it and is ready only
#                     once it reaches it. BENCH_INFERENCE_ENV=(VAR=value ...) adds to its env.
#   CAIRN_GATEWAY_CONFIG=FILE   (exported) the gateway's policy file; none by default.
#   CAIRN_BIN_DIR=DIR take the binaries from DIR and build nothing (default: make the
#                     binaries needed into build/bin).
#   BENCH_KEEP=1      keep the work dir and its logs on exit (PostgreSQL's data removed).
# bench_rm+=(PATH) has bench_cleanup remove PATH too (kept with BENCH_KEEP).

bench_need() { for t in "$@"; do command -v "$t" >/dev/null || { echo "bench: $t missing (scripts/install-deps)"; exit 1; }; done; }
freeport() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
json_field() { /usr/bin/python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }

bench_pids=()
bench_rm=()
INFER_PID=
BENCH_SERVICES=${BENCH_SERVICES:-auth}
BENCH_BIN=${CAIRN_BIN_DIR:-build/bin}
bench_has() { [[ " $BENCH_SERVICES " == *" $1 "* ]]; }
bench_cleanup() {
  local rc=$?
  for p in "${bench_pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ -z "${W:-}" ] || scripts/stack stop "$W/stack" >/dev/null 2>&1 || true
  if [ -n "${BENCH_KEEP:-}" ]; then
    [ -z "${W:-}" ] || rm -rf "$W/stack/pg/data"
    echo "bench: exit $rc; kept ${W:-} ${bench_rm[*]:-}" >&2
  else
    rm -rf ${W:+"$W"} ${bench_rm[@]+"${bench_rm[@]}"}
  fi
}

# bench_start [extra auth env...]: everything up and a user signed in.
bench_start() {
  mkdir -p build/bench
  cc -std=c11 -O2 -Wall -Wextra -Werror bench/loadgen.c -o build/bench/loadgen
  if [ -z "${CAIRN_BIN_DIR:-}" ]; then
    local bins=(build/bin/cairn-gateway) s
    for s in $BENCH_SERVICES; do bins+=("build/bin/cairn-$s"); done
    make -s "${bins[@]}" >/dev/null
  fi
  W=$(mktemp -d /tmp/cairn-bench.XXXXXX)
  chmod 755 "$W"
  trap bench_cleanup EXIT
  scripts/stack start "$W/stack" >/dev/null 2>&1
  set -a; . "$W/stack/env"; set +a
  local rpc events
  rpc=$(freeport); events=$(freeport)
  env CAIRN_AUTH_LISTEN=tcp://127.0.0.1:$rpc CAIRN_AUTH_ADMIN=127.0.0.1:$(freeport) \
    CAIRN_AUTH_EVENTS=tcp://127.0.0.1:$events CAIRN_LOG_LEVEL=warn "$@" \
    "$BENCH_BIN/cairn-auth" >"$W/auth.log" 2>&1 &
  AUTH_PID=$!; bench_pids+=($AUTH_PID)
  GW_ENV=(CAIRN_AUTH_ADDR=tcp://127.0.0.1:$rpc CAIRN_AUTH_EVENTS_ADDR=tcp://127.0.0.1:$events)
  if bench_has inference; then
    bench_inference inference ${BENCH_INFERENCE_ENV[@]+"${BENCH_INFERENCE_ENV[@]}"}
    GW_ENV+=(CAIRN_INFERENCE_ADDR=$INFER_ADDR CAIRN_READY_SERVICES=auth,inference)
  fi
  bench_gateway gateway
  EMAIL="bench-$RANDOM$RANDOM@example.com"
  PASSWORD="correct horse battery staple"
  curl -fs -XPOST "$base/v1/auth/register" -H 'content-type: application/json' \
    -d "{\"email\":\"$EMAIL\",\"password\":\"$PASSWORD\"}" >/dev/null
  TOKEN=$(curl -fs -XPOST "$base/v1/auth/login" -H 'content-type: application/json' \
    -d "{\"email\":\"$EMAIL\",\"password\":\"$PASSWORD\"}" | json_field '["access_token"]')
}

# bench_inference NAME [VAR=value...]: starts a cairn-inference on the bench's database (its
# log $W/NAME.log); sets INFER_PID, INFER_ADDR (its nng address) and INFER_ADMIN. A gateway
# started after it with CAIRN_INFERENCE_ADDR=$INFER_ADDR in GW_ENV sends predictions to it.
bench_inference() {
  local name=$1; shift
  INFER_ADDR=tcp://127.0.0.1:$(freeport)
  INFER_ADMIN=127.0.0.1:$(freeport)
  env CAIRN_INFERENCE_LISTEN=$INFER_ADDR CAIRN_INFERENCE_ADMIN=$INFER_ADMIN CAIRN_LOG_LEVEL=warn \
    "$@" "$BENCH_BIN/cairn-inference" >"$W/$name.log" 2>&1 &
  INFER_PID=$!; bench_pids+=($INFER_PID)
}

# bench_gateway NAME [VAR=value...]: starts one more cairn-gateway in front of the same
# services (its log $W/NAME.log) and waits until it is ready; sets GW_PID and base to it.
# bench_start calls it once; a bench comparing two gateway set-ups calls it again.
bench_gateway() {
  local name=$1 http; shift
  http=$(freeport)
  env CAIRN_HTTP_PORT=$http CAIRN_GATEWAY_ADMIN=127.0.0.1:$(freeport) CAIRN_THREADS=${CAIRN_THREADS:-1} \
    CAIRN_LOG_LEVEL=warn "${GW_ENV[@]}" "$@" "$BENCH_BIN/cairn-gateway" >/dev/null 2>"$W/$name.log" &
  GW_PID=$!; bench_pids+=($GW_PID)
  base=http://127.0.0.1:$http
  for _ in $(seq 300); do curl -fs "$base/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
  curl -fs "$base/readyz" >/dev/null || { echo "bench: $name not ready"; cat "$W"/*.log; exit 1; }
}

# CPU ticks (utime+stime) of the given pids.
cpu_ticks() {
  local s=0
  for p in "$@"; do
    [ -r /proc/$p/stat ] || continue
    s=$((s + $(awk '{print $14+$15}' /proc/$p/stat)))
  done
  echo $s
}
# pg_ticks: CPU ticks of PostgreSQL, the backends that have exited included: the postmaster
# reaps them, so theirs are in its cutime+cstime. (Summing only the live processes lost a
# backend that exited during a measurement, and the difference could go below zero.)
pg_ticks() {
  local pm s=0 p
  pm=$(head -1 "$W/stack/pg/data/postmaster.pid" 2>/dev/null) || { echo 0; return; }
  [ -r /proc/$pm/stat ] && s=$(awk '{print $14+$15+$16+$17}' /proc/$pm/stat)
  for p in $(pgrep -P "$pm"); do
    [ -r /proc/$p/stat ] && s=$((s + $(awk '{print $14+$15}' /proc/$p/stat)))
  done
  echo $s
}

# saturate PATH [wrk args] -> "rps p50 p99 cpu_gw cpu_auth cpu_pg" (CPU in us per request)
saturate() {
  local path=$1; shift
  local hz g0 a0 p0 g1 a1 p1 out rps reqs non2xx py=/usr/bin/python3
  hz=$(getconf CLK_TCK)
  g0=$(cpu_ticks $GW_PID); a0=$(cpu_ticks $AUTH_PID); p0=$(pg_ticks)
  out=$(wrk -t1 -c32 -d"${SECS}s" --latency "$@" "$base$path")
  g1=$(cpu_ticks $GW_PID); a1=$(cpu_ticks $AUTH_PID); p1=$(pg_ticks)
  rps=$(echo "$out" | awk '/Requests\/sec/ {print int($2)}')
  reqs=$(echo "$out" | awk '/requests in/ {print $1}')
  non2xx=$(echo "$out" | awk '/Non-2xx/ {print $NF}')
  [ -z "$non2xx" ] || { echo "bench: $path answered $non2xx non-2xx responses" >&2; exit 1; }
  echo "$rps $(echo "$out" | awk '$1=="50%" {print $2}') $(echo "$out" | awk '$1=="99%" {print $2}')" \
    "$($py -c "print(f'{($g1-$g0)/$hz*1e6/$reqs:.1f}')")" \
    "$($py -c "print(f'{($a1-$a0)/$hz*1e6/$reqs:.1f}')")" \
    "$($py -c "print(f'{($p1-$p0)/$hz*1e6/$reqs:.1f}')")"
}

# fixed_rate PATH RATE [-d BODY_FILE] [-H header]... -> "p50 p99 max ok/total" (ms):
# build/bench/loadgen (bench/loadgen.c), HTTP/1.1 keep-alive, one request every 1/RATE s
# on whichever of 32 connections is free, latency counted from when it was due, after 1 s
# of warm-up. (h2load --rps sent each of its connections' requests at the same instant,
# bursts of ten instead of a rate.) Not-ok = non-2xx, errors and unanswered.
fixed_rate() {
  local path=$1 rate=$2; shift 2
  local out
  out=$(build/bench/loadgen -R "$rate" -c 32 -D "$SECS" -w 1 "$@" "$base$path" 2>>"$W/loadgen.err") || true
  echo "$out" >>"$W/loadgen.out"
  echo "$out" | /usr/bin/python3 -c '
import json, sys
d = json.load(sys.stdin)
print("%.2f %.2f %.2f %d/%d" % (d["p50_ms"], d["p99_ms"], d["max_ms"], d["ok"], d["counted"] + d["unanswered"]))'
}

# h2_percentiles LOG... -> "p50 p99 max ok/total" (ms) over the requests of h2load logs.
h2_percentiles() {
  /usr/bin/python3 - "$@" <<'PY'
import sys
rows=[l.split('\t') for f in sys.argv[1:] for l in open(f) if l.strip()]
lat=sorted(int(r[2])/1000 for r in rows)
ok=sum(1 for r in rows if r[1].startswith('2'))
def pct(p): return lat[min(len(lat)-1,int(p*len(lat)))] if lat else float('nan')
print(f"{pct(0.50):.2f} {pct(0.99):.2f} {lat[-1] if lat else float('nan'):.2f} {ok}/{len(rows)}")
PY
}

# wrk_post_script BODIES [CONTENT_TYPE] -> path of a wrk Lua script that POSTs the lines of
# BODIES (one request body a line) in turn, each connection cycling through them.
wrk_post_script() {
  local bodies=$1 ctype=${2:-application/json} lua
  lua=$(mktemp "$W/post.XXXXXX.lua")
  cat >"$lua" <<LUA
local bodies = {}
for line in io.lines("$bodies") do if #line > 0 then bodies[#bodies + 1] = line end end
local i = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "$ctype"
request = function()
  i = i % #bodies + 1
  return wrk.format(nil, nil, nil, bodies[i])
end
LUA
  echo "$lua"
}

# saturate_procs PATH [wrk args] -> "rps p50 p99 non2xx cpu..." with the CPU in us per
# request of each entry of SAT_PROCS (pids, "pg" for the postmaster and its backends).
# Unlike saturate, non-2xx answers are counted, not fatal: the caller reports them.
SAT_PROCS=()
saturate_procs() {
  local path=$1; shift
  local hz out rps reqs non2xx i py=/usr/bin/python3 c0=() c1=() cpu=""
  hz=$(getconf CLK_TCK)
  _sat_ticks() { local p; for p in "${SAT_PROCS[@]}"; do
    if [ "$p" = pg ]; then pg_ticks; else cpu_ticks $p; fi; done; }
  c0=($(_sat_ticks))
  out=$(wrk -t1 -c32 -d"${SECS}s" --latency "$@" "$base$path")
  c1=($(_sat_ticks))
  echo "$out" >>"$W/wrk.out"
  rps=$(echo "$out" | awk '/Requests\/sec/ {print int($2)}')
  reqs=$(echo "$out" | awk '/requests in/ {print $1}')
  non2xx=$(echo "$out" | awk '/Non-2xx/ {print $NF}')
  for i in "${!SAT_PROCS[@]}"; do
    cpu+=" $($py -c "print(f'{(${c1[$i]}-${c0[$i]})/$hz*1e6/max($reqs,1):.1f}')")"
  done
  echo "$rps $(echo "$out" | awk '$1=="50%" {print $2}') $(echo "$out" | awk '$1=="99%" {print $2}') ${non2xx:-0}$cpu"
}

# sequential PATH [h2load args] -> "p50 p99 max ok/total" (ms): one client, one request
# at a time, for SECS seconds (SEQ_SECS overrides). SEQ_LOG, when set, names the file
# for h2load's per-request log.
sequential() {
  local path=$1 log; shift
  log=${SEQ_LOG:-$(mktemp "$W/h2seq.XXXXXX")}
  h2load --h1 -c 1 -D "${SEQ_SECS:-$SECS}" --warm-up-time=1 --log-file="$log" "$@" "$base$path" \
    >"$log.out" 2>&1 || true
  h2_percentiles "$log"
}

# stalls_line [SECONDS] -> one sentence: how often the host takes each CPU away
# (bench/stalls.c), to be run while nothing else is.
stalls_line() {
  build/bench/stalls -D "${1:-5}" | /usr/bin/python3 -c '
import json, sys
d = json.load(sys.stdin)
print("; ".join("CPU %d lost %.1f ms/s in %.1f gaps/s over %g ms (longest %.1f ms)"
                % (c["cpu"], c["lost_ms_per_s"], c["gaps_per_s"], d["gap_ms"], c["worst_ms"]) for c in d["cpus"]))'
}

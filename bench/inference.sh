#!/usr/bin/env bash
# inference.sh — XGBoost predict through the gateway versus raw in-process XGBoost,
# measured in one run on this machine (issue 4).
#
#   bench/inference.sh [SECONDS]      (default 10 s per measurement)
#
# 1. Trains a model with Debian's python3-xgboost (binary:logistic, 20 features, 100
#    rounds, max_depth 6, 10 000 synthetic rows, fixed seed), saved as JSON, and writes the
#    request bodies (rows of fixed-seed normals rounded to 4 decimals).
# 2. The floor: build/bench/inference_raw (bench/inference_raw.c) on that model: single-row
#    predictions from 2 threads sharing one booster, and a 1 000-row batch from one thread.
#    And the host's: build/bench/stalls (bench/stalls.c) spins on each CPU for 5 s and
#    reports the gaps in which the host ran something else (this VM reports no steal).
# 3. A throwaway stack with cairn-auth, cairn-inference and cairn-gateway (bench/lib.sh,
#    BENCH_SERVICES="auth inference"); a user signs up, creates model `bench`, uploads the
#    file as version 1 and points alias production at it. The answers to one row and to
#    the batch are checked against Python's XGBoost before anything is measured.
# 4. Through the gateway (HTTP/1.1 keep-alive, JWT):
#    - single row, POST /v1/models/bench:predict: saturation with wrk -t1 -c32 (cycling
#      1 024 distinct rows), CPU per request of each process; the same for the Open
#      Inference Protocol, POST /v2/models/bench/infer;
#    - single row at fixed rates 1 000, 2 000, 4 000 rps and 50 % of saturation:
#      build/bench/loadgen (bench/loadgen.c: requests evenly spaced at the rate over 32
#      keep-alive connections, latency from when each was due), p50/p99/max; before each,
#      the gateway alone at the same rate (GET /healthz, no service behind it);
#    - a 1 000-row batch, one client sending it back to back, in 5 rounds alternating with
#      the raw batch: p50/p99 and the median ratio to raw, as v1 JSON, as OIP binary
#      tensor data (Inference-Header-Content-Length) with a JSON answer, and binary both
#      ways (outputs[0].parameters.binary_data, as tritonclient asks by default);
#    - the same three batches in pairs (build/bench/batch_pair, bench/batch_pair.c): on
#      one thread for SECS seconds, 16 raw predictions of the request's rows, then 8
#      requests, and again; the median over the pairs of (median request / median raw,
#      each over the block's last 6) compares requests with raw batches measured within
#      ~60 ms, in the same phase of the host's speed.
#    The model keeps its default log_sample_rate (1: every prediction is logged) for all
#    of the above, the headline; a last saturation line repeats the single row with
#    log_sample_rate 0.01, the batch too, and the single row at 2 000 rps.
# 5. Placed: a new cairn-inference with CAIRN_CPUS=1 and a new gateway with CAIRN_CPUS=0 in
#    front of it (lib/cpus.h), the first pair stopped, every prediction logged: saturation,
#    fixed rates 1 000-4 000 rps, one client back to back, the binary batch (rounds and
#    pairs).
# Prints markdown tables; bench/RESULTS.md keeps the figures with this command. The
# machine has 2 cores shared by load generator and servers: read the figures as a
# comparison between rows of the same run, not as the capacity of a real host.
# BENCH_KEEP=1 keeps the work dir with every process's log (see bench/lib.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-10}
. bench/lib.sh
bench_need wrk h2load curl cc pkg-config
[ -x /usr/bin/python3 ] && /usr/bin/python3 -c 'import xgboost, numpy' 2>/dev/null ||
  { echo "bench: python3-xgboost missing (scripts/install-deps)"; exit 1; }
py=/usr/bin/python3

# --- the floor: raw XGBoost in-process
mkdir -p build/bench
cc -std=c11 -D_GNU_SOURCE -O2 -Wall -Wextra -Werror -pthread bench/inference_raw.c \
  -o build/bench/inference_raw $(pkg-config --cflags --libs xgboost) -lm
D=$(mktemp -d /tmp/cairn-bench-model.XXXXXX)
bench_rm+=("$D")
trap bench_cleanup EXIT
# Training runs in its own python (libgomp and fork do not mix; see tests/system/xgbmodels.py).
$py - "$D" <<'PY'
import json, os, sys
import numpy as np
import xgboost as xgb
d = sys.argv[1]
F, N, ROUNDS = 20, 10_000, 100
rng = np.random.default_rng(20261206)
X = rng.standard_normal((N, F)).astype(np.float32)
w = rng.standard_normal(F)
logit = X @ w + 0.5 * np.sin(3 * X[:, 0]) * X[:, 1] - 0.3 * X[:, 2] ** 2
y = (logit + rng.standard_normal(N) > 0).astype(np.float32)
params = {"objective": "binary:logistic", "max_depth": 6, "eta": 0.1, "tree_method": "hist",
          "nthread": 2, "seed": 1}
bst = xgb.train(params, xgb.DMatrix(X, label=y, nthread=2), ROUNDS)
bst.save_model(os.path.join(d, "model.json"))

# Request rows: 4 decimals, so the JSON text is exact as float32 on both sides.
R = np.round(rng.standard_normal((1024, F)), 4).astype(np.float32)
B = np.round(rng.standard_normal((1000, F)), 4).astype(np.float32)
def row(r): return "[" + ",".join(f"{float(v):.4f}" for v in r) + "]"
def v1(rows): return '{"instances":[' + ",".join(row(r) for r in rows) + "]}"
def oip(r):
    return ('{"inputs":[{"name":"input-0","shape":[1,%d],"datatype":"FP32","data":%s}]}'
            % (F, row(r)))
with open(os.path.join(d, "single.json"), "w") as f: f.write(v1(R[:1]))
with open(os.path.join(d, "singles.txt"), "w") as f: f.write("".join(v1([r]) + "\n" for r in R))
with open(os.path.join(d, "oip.json"), "w") as f: f.write(oip(R[0]))
with open(os.path.join(d, "oips.txt"), "w") as f: f.write("".join(oip(r) + "\n" for r in R))
with open(os.path.join(d, "batch.json"), "w") as f: f.write(v1(B))
# The same batch as binary tensor data: JSON header, then the rows as little-endian FP32.
hdr = json.dumps({"inputs": [{"name": "input-0", "shape": list(B.shape), "datatype": "FP32",
                              "parameters": {"binary_data_size": B.nbytes}}]}).encode()
with open(os.path.join(d, "batch.bin"), "wb") as f: f.write(hdr + B.astype("<f4").tobytes())
with open(os.path.join(d, "batch.bin.hlen"), "w") as f: f.write(str(len(hdr)))
# And asking for the output as binary tensor data too, as tritonclient does by default.
hdr = json.dumps({"inputs": [{"name": "input-0", "shape": list(B.shape), "datatype": "FP32",
                              "parameters": {"binary_data_size": B.nbytes}}],
                  "outputs": [{"name": "predict", "parameters": {"binary_data": True}}]}).encode()
with open(os.path.join(d, "batch.binout"), "wb") as f: f.write(hdr + B.astype("<f4").tobytes())
with open(os.path.join(d, "batch.binout.hlen"), "w") as f: f.write(str(len(hdr)))
pred = lambda A: bst.predict(xgb.DMatrix(A, nthread=1)).tolist()
with open(os.path.join(d, "expect.json"), "w") as f:
    json.dump({"single": pred(R[:1]), "batch": pred(B)}, f)
PY
RAW=$(build/bench/inference_raw "$D/model.json" -t 2 -d "$SECS" -b 1000)
raw() { echo "$RAW" | json_field "$1"; }
# The floor under every percentile below: how much of each CPU the host takes away while
# nothing else runs (bench/stalls.c; this VM does not report steal time).
cc -std=c11 -O2 -Wall -Wextra -Werror -pthread bench/stalls.c -o build/bench/stalls
cc -std=c11 -D_GNU_SOURCE -O2 -Wall -Wextra -Werror bench/batch_pair.c -o build/bench/batch_pair \
  $(pkg-config --cflags --libs xgboost) -lm
STALLS=$(stalls_line 5)

# --- the stack
BENCH_SERVICES="auth inference"
bench_start
auth=(-H "Authorization: Bearer $TOKEN")
api() { # METHOD PATH [curl args]: fails loudly with the answer
  local m=$1 p=$2 out code; shift 2
  out=$(curl -s -w '\n%{http_code}' -X"$m" "$base$p" "${auth[@]}" "$@")
  code=${out##*$'\n'}
  case $code in 2??) echo "${out%$'\n'*}" ;;
    *) echo "bench: $m $p -> $code: ${out%$'\n'*}" >&2; return 1 ;; esac
}
api POST /v1/models -H 'content-type: application/json' -d '{"name":"bench"}' >/dev/null
api POST /v1/models/bench/versions -H 'content-type: application/json' \
  --data-binary @"$D/model.json" >"$D/upload.out"
api PUT /v1/models/bench/aliases/production -H 'content-type: application/json' \
  -d '{"version":1}' >/dev/null
SAMPLE=$(api GET /v1/models/bench | json_field '.get("log_sample_rate", "default")')

# The answers must be XGBoost's before they are timed (routing may take a refresh).
check() { # PATH BODY EXPECT_KEY [header...]
  local out path=$1 body=$2 key=$3
  shift 3
  for _ in $(seq 50); do
    out=$(curl -s -XPOST "$base$path" "${auth[@]}" -H 'content-type: application/json' "$@" \
      --data-binary @"$body") && echo "$out" | grep -q '"model_version"' && break
    sleep 0.2
  done
  echo "$out" | $py -c '
import json, sys
doc = json.load(sys.stdin); want = json.load(open(sys.argv[1]))[sys.argv[2]]
got = doc["predictions"] if "predictions" in doc else doc["outputs"][0]["data"]
assert len(got) == len(want), (len(got), len(want))
bad = max(abs(a - b) for a, b in zip(got, want))
assert bad < 1e-6, f"differs from XGBoost by {bad}"
' "$D/expect.json" "$key" || { echo "bench: $path answered: ${out:0:400}" >&2; exit 1; }
}
HLEN=$(cat "$D/batch.bin.hlen")
BIN_HDR=(-H "Inference-Header-Content-Length: $HLEN" -H 'content-type: application/octet-stream')
BINOUT_HDR=(-H "Inference-Header-Content-Length: $(cat "$D/batch.binout.hlen")"
            -H 'content-type: application/octet-stream')
# The binary answer: its JSON part (Inference-Header-Content-Length bytes), then FP32.
check_binout() {
  curl -s -D "$D/binout.h" -o "$D/binout.out" -XPOST "$base/v2/models/bench/infer" "${auth[@]}" \
    "${BINOUT_HDR[@]}" --data-binary @"$D/batch.binout"
  $py - "$D/binout.h" "$D/binout.out" "$D/expect.json" <<'PY' || { echo "bench: binary output check failed" >&2; exit 1; }
import json, struct, sys
hdrs = dict(l.split(":", 1) for l in open(sys.argv[1]).read().splitlines()[1:] if ":" in l)
hlen = int(next(v for k, v in hdrs.items() if k.lower() == "inference-header-content-length"))
body = open(sys.argv[2], "rb").read(); want = json.load(open(sys.argv[3]))["batch"]
doc = json.loads(body[:hlen]); size = doc["outputs"][0]["parameters"]["binary_data_size"]
assert size == len(body) - hlen == 4 * len(want), (size, len(body), hlen)
got = struct.unpack("<%df" % len(want), body[hlen:])
bad = max(abs(a - b) for a, b in zip(got, want))
assert bad < 1e-6, f"differs from XGBoost by {bad}"
PY
}
check /v1/models/bench:predict "$D/single.json" single
check /v1/models/bench:predict "$D/batch.json" batch
check /v2/models/bench/infer "$D/oip.json" single
check /v2/models/bench/infer "$D/batch.bin" batch "${BIN_HDR[@]}"
check_binout

# cairn-inference's own view, from its /metrics: mean time per call waiting for a worker
# (queue), in XGBoost (compute) and from arrival to answer (total), and the prediction log.
snap() { curl -fs "http://$INFER_ADMIN/metrics" >"$1"; }
inside() { # BEFORE AFTER -> "queue_ms compute_ms total_ms calls logged dropped queued_now"
  $py - "$1" "$2" <<'PY'
import re, sys
def read(path):
    v = {}
    for line in open(path):
        m = re.match(r'(cairn_inference_\w+)(?:\{([^}]*)\})? (\S+)$', line.strip())
        if not m:
            continue
        name, labels, val = m.groups()
        st = re.search(r'stage="(\w+)"', labels or "")
        key = {"cairn_inference_predict_seconds_sum": "sum_", "cairn_inference_predict_seconds_count": "n_",
               "cairn_inference_log_written_total": "written", "cairn_inference_log_dropped_total": "dropped",
               "cairn_inference_log_queue": "queue"}.get(name)
        if key is None:
            continue
        if key.endswith("_"):
            key += st.group(1)
        v[key] = v.get(key, 0) + float(val)
    return v
a, b = read(sys.argv[1]), read(sys.argv[2])
d = lambda k: b.get(k, 0) - a.get(k, 0)
ms = lambda st: f"{d('sum_' + st) / max(d('n_' + st), 1) * 1e3:.3f}"
print(ms("queue"), ms("compute"), ms("total"), int(d("n_total")), int(d("written")),
      int(d("dropped")), int(b.get("queue", 0)))
PY
}

echo "# cairn bench: XGBoost predict through the gateway vs raw ($(date -u +%FT%TZ), $(nproc) cores, ${SECS}s per point)"
echo
echo "Model: binary:logistic, $(raw '["features"]') features, $(raw '["rounds"]') trees of depth <= 6," \
  "XGBoost $(raw '["xgboost"]'); log_sample_rate $SAMPLE; gateway CAIRN_THREADS=${CAIRN_THREADS:-1}."
echo
echo "| raw XGBoost (inference_raw, in-process) | per s | p50 | p99 |"
echo "|---|---|---|---|"
echo "| single row, 2 threads, one booster | $(raw '["single"]["per_s"]') | $(raw '["single"]["p50_us"]') µs | $(raw '["single"]["p99_us"]') µs |"
RAW_B=$(raw '["batch"]["p50_ms"]')
echo "| 1 000-row batch, 1 thread | $(raw '["batch"]["rows_per_s"]') rows | $RAW_B ms | - |"
echo
echo "Host stalls, idle machine (build/bench/stalls -D 5): $STALLS."
echo

SAT_PROCS=("$GW_PID" "$INFER_PID" "$AUTH_PID" pg)
V1=/v1/models/bench:predict
OIP=/v2/models/bench/infer
LOG_W=0 LOG_D=0 # prediction log rows written / dropped during the measurements
SAT=0
sat_row() { # LABEL PATH BODIES -> a table row; sets SAT (in the caller's shell)
  local out m
  snap "$W/m0"
  out=$(saturate_procs "$2" -s "$(wrk_post_script "$3")" "${auth[@]}")
  snap "$W/m1"
  m=$(inside "$W/m0" "$W/m1")
  set -- "$1" $out $m
  SAT=$2 LOG_W=$((LOG_W + ${14})) LOG_D=$((LOG_D + ${15}))
  ROW="| $1 | $2 | $3 | $4 | $5 | $6 | $7 | $8 | $9 | ${10} / ${11} / ${12} |"
}
SAT_HEAD="| saturation rps (wrk -c32) | wrk p50 | wrk p99 | non-2xx | CPU µs/req gateway | inference | auth | postgres | mean ms in cairn-inference: queue / XGBoost / total |
|---|---|---|---|---|---|---|---|---|---|"
echo "| single row through the gateway $SAT_HEAD"
sat_row "POST $V1" $V1 "$D/singles.txt"; SAT_V1=$SAT; echo "$ROW"
sat_row "POST $OIP (Open Inference Protocol)" $OIP "$D/oips.txt"; echo "$ROW"
echo

# Each rate is measured first on the gateway alone (GET /healthz, answered by the gateway
# without a service): the same client, connections and host, so the difference is what the
# predict adds.
RATE_HEAD="| offered rps | p50 ms | p99 ms | max ms | 2xx/total | mean ms in cairn-inference: queue / XGBoost / total | gateway alone (GET /healthz) p50 / p99 ms |
|---|---|---|---|---|---|---|---|"
rate_row() { # RATE LABEL -> ROW
  local alone out m
  alone=$(fixed_rate /healthz "$1")
  snap "$W/m0"
  out=$(fixed_rate $V1 "$1" -d "$D/single.json" -H 'content-type: application/json' "${auth[@]}")
  snap "$W/m1"
  m=$(inside "$W/m0" "$W/m1")
  set -- "$2" $out $m $alone
  LOG_W=$((LOG_W + ${10})) LOG_D=$((LOG_D + ${11}))
  ROW="| | $1 | $2 | $3 | $4 | $5 | $6 / $7 / $8 | ${13} / ${14} |"
}
seq_row() { # -> ROW: one client back to back
  local out m
  snap "$W/m0"
  out=$(sequential $V1 -d "$D/single.json" -H 'content-type: application/json' "${auth[@]}")
  snap "$W/m1"
  m=$(inside "$W/m0" "$W/m1")
  set -- $out $m
  LOG_W=$((LOG_W + ${9})) LOG_D=$((LOG_D + ${10}))
  ROW="| | one client back to back ($(echo "$4" | cut -d/ -f2) in ${SECS} s) | $1 | $2 | $3 | $4 | $5 / $6 / $7 | - |"
}
echo "| single row, POST $V1 $RATE_HEAD"
half=$((SAT_V1 / 2))
for r in $(printf '%s\n' 1000 2000 4000 "$half" | sort -n | uniq); do
  [ "$r" -gt 0 ] || continue
  label=$r; [ "$r" = "$half" ] && label="$r (50 % of saturation)"
  rate_row "$r" "$label"; echo "$ROW"
done
seq_row; echo "$ROW"
echo

# The host's speed drifts within a run (the raw batch has measured 1.3 ms and 2.3 ms a
# minute apart), so each batch row alternates with the raw batch: BATCH_ROUNDS rounds of
# one second of raw XGBoost, then SECS / BATCH_ROUNDS seconds (at least 2) of the row.
# p50 / raw is the median over the rounds of (the round's p50 / the raw p50 just before).
BATCH_ROUNDS=5
BATCH_HEAD="| p50 ms | p99 ms | max ms | 2xx/total | raw p50, median of rounds | p50 / raw p50, median of rounds | mean ms in cairn-inference: queue / XGBoost / total |
|---|---|---|---|---|---|---|---|"
batch_row() { # LABEL [PATH BODY header...] -> ROW (default: the JSON batch to v1 predict)
  local out m label=$1 path=${2:-$V1} body=${3:-$D/batch.json} logs=() raws=() p50s=()
  shift; shift 2 2>/dev/null || true
  [ $# -gt 0 ] || set -- -H 'content-type: application/json'
  local secs=$((SECS / BATCH_ROUNDS)) k r
  [ "$secs" -ge 2 ] || secs=2
  snap "$W/m0"
  for k in $(seq $BATCH_ROUNDS); do
    raws+=("$(build/bench/inference_raw "$D/model.json" -t 1 -d 1 -b 1000 | json_field '["batch"]["p50_ms"]')")
    logs+=("$(mktemp "$W/h2seq.XXXXXX")")
    r=$(SEQ_LOG=${logs[-1]} SEQ_SECS=$secs sequential "$path" -d "$body" "$@" "${auth[@]}")
    p50s+=("${r%% *}")
  done
  snap "$W/m1"
  out=$(h2_percentiles "${logs[@]}")
  m=$(inside "$W/m0" "$W/m1")
  local ratios
  ratios=$($py -c "
import statistics, sys
raw = [float(x) for x in sys.argv[1].split()]; p = [float(x) for x in sys.argv[2].split()]
print(f'{statistics.median(raw):.3f} {statistics.median(a / b for a, b in zip(p, raw)):.2f}x')" \
    "${raws[*]}" "${p50s[*]}")
  set -- "$label" $out $m $ratios
  LOG_W=$((LOG_W + ${10})) LOG_D=$((LOG_D + ${11}))
  ROW="| $1 | $2 | $3 | $4 | $5 | ${13} | ${14} | $6 / $7 / $8 |"
}
echo "| 1 000-row batch, one client back to back $BATCH_HEAD"
batch_row "POST $V1 ($(wc -c <"$D/batch.json") bytes of JSON)"; echo "$ROW"
batch_row "POST $OIP, binary tensor data ($(wc -c <"$D/batch.bin") bytes)" $OIP "$D/batch.bin" "${BIN_HDR[@]}"
echo "$ROW"
batch_row "POST $OIP, binary tensor data in and out" $OIP "$D/batch.binout" "${BINOUT_HDR[@]}"
echo "$ROW"
echo "| raw XGBoost (inference_raw -b 1000) at the start | $RAW_B | - | - | - | - | 1.00x | - |"
echo

# The same batches measured in pairs (bench/batch_pair.c): on one thread, 16 raw
# predictions of the request's rows, then 8 requests, and again for SECS seconds. The
# rounds above are seconds apart, and the host's speed moves in phases of seconds; a
# pair of blocks takes ~60 ms.
PAIR_HEAD="| pairs of blocks | raw p50 ms | p50 ms | p99 ms | p50 / raw p50 | median of pair ratios | the same, the half of pairs in the host's fastest phases (neighbours' raw up to) |
|---|---|---|---|---|---|---|---|"
pair_row() { # LABEL PATH BODY [header...] -> ROW
  local label=$1 path=$2 body=$3 out
  shift 3
  out=$(build/bench/batch_pair "$D/model.json" "$D/batch.bin" "$HLEN" "${base#http://}" "$path" \
    "$body" "$@" "${auth[@]}" -d "$SECS")
  ROW="| $label | $(echo "$out" | json_field '["blocks"]') | $(echo "$out" | json_field '["raw_p50_ms"]') |\
 $(echo "$out" | json_field '["p50_ms"]') | $(echo "$out" | json_field '["p99_ms"]') |\
 $(echo "$out" | json_field '["ratio_of_p50"]')x | **$(echo "$out" | json_field '["median_ratio"]')x** |\
 **$(echo "$out" | json_field '["fast_half_median_ratio"]')x** ($(echo "$out" | json_field '["fast_half_phase_ms"]') ms) |"
}
echo "| 1 000-row batch in pairs with raw XGBoost $PAIR_HEAD"
pair_row "POST $V1" $V1 "$D/batch.json" -H 'content-type: application/json'; echo "$ROW"
pair_row "POST $OIP, binary tensor data" $OIP "$D/batch.bin" "${BIN_HDR[@]}"; echo "$ROW"
pair_row "POST $OIP, binary tensor data in and out" $OIP "$D/batch.binout" "${BINOUT_HDR[@]}"
echo "$ROW"
echo

# The prediction log's share: the same saturation with 1 % of predictions logged, once
# what was logged so far is written (the log drains behind the load).
snap "$W/m0"
t0=$(date +%s)
for _ in $(seq 240); do
  snap "$W/m1"
  set -- $(inside "$W/m0" "$W/m1")
  [ "$7" -eq 0 ] && break
  sleep 0.5
done
echo "Prediction log (log_sample_rate 1) over the runs above: $LOG_W rows written during them," \
  "$LOG_D dropped; $5 more written in the $(($(date +%s) - t0)) s after, $7 still queued."
echo
api PATCH /v1/models/bench -H 'content-type: application/json' -d '{"log_sample_rate":0.01}' >/dev/null
sleep 2 # routing snapshots are refreshed by polling (CAIRN_INFERENCE_REFRESH_MS, default 1 s)
echo "| single row, log_sample_rate 0.01 $SAT_HEAD"
LOG_W=0 LOG_D=0
sat_row "POST $V1" $V1 "$D/singles.txt"; echo "$ROW"
echo
echo "| 1 000-row batch, log_sample_rate 0.01 $BATCH_HEAD"
batch_row "POST $V1"; echo "$ROW"
batch_row "POST $OIP, binary tensor data" $OIP "$D/batch.bin" "${BIN_HDR[@]}"; echo "$ROW"
echo
# The aim's point again with the log sampled: how much of the tail is the log's writing.
echo "| single row at 2000 rps, log_sample_rate 0.01 | p50 ms | p99 ms | max ms | 2xx/total | mean ms in cairn-inference: queue / XGBoost / total |"
echo "|---|---|---|---|---|---|"
snap "$W/m0"
out=$(fixed_rate $V1 2000 -d "$D/single.json" -H 'content-type: application/json' "${auth[@]}")
snap "$W/m1"
m=$(inside "$W/m0" "$W/m1")
set -- $out $m
LOG_W=$((LOG_W + ${9})) LOG_D=$((LOG_D + ${10}))
echo "| POST $V1 | $1 | $2 | $3 | $4 | $5 / $6 / $7 |"
echo
echo "Prediction log (log_sample_rate 0.01): $LOG_W rows written during these three runs, $LOG_D dropped."

# Placed: the same stack with each of our processes on its own CPU (CAIRN_CPUS, lib/cpus.h):
# a new cairn-inference on CPU 1 and a new gateway on CPU 0 in front of it, the first pair
# stopped; PostgreSQL, auth and the load generators stay where the kernel puts them. Every
# prediction logged again, as in the headline rows.
if [ "$(nproc)" -ge 2 ]; then
  api PATCH /v1/models/bench -H 'content-type: application/json' -d '{"log_sample_rate":1}' >/dev/null
  kill "$GW_PID" "$INFER_PID" 2>/dev/null || true
  bench_inference inference-placed CAIRN_CPUS=1
  GW_ENV=("${GW_ENV[@]/#CAIRN_INFERENCE_ADDR=*/CAIRN_INFERENCE_ADDR=$INFER_ADDR}")
  bench_gateway gateway-placed CAIRN_CPUS=0
  check /v1/models/bench:predict "$D/single.json" single
  check /v2/models/bench/infer "$D/batch.bin" batch "${BIN_HDR[@]}"
  check_binout
  SAT_PROCS=("$GW_PID" "$INFER_PID" "$AUTH_PID" pg)
  LOG_W=0 LOG_D=0
  echo "Placed: gateway CAIRN_CPUS=0, cairn-inference CAIRN_CPUS=1 (its default workers: 3), log_sample_rate 1."
  echo
  echo "| single row, placed $SAT_HEAD"
  sat_row "POST $V1" $V1 "$D/singles.txt"; echo "$ROW"
  sat_row "POST $OIP" $OIP "$D/oips.txt"; echo "$ROW"
  echo
  echo "| single row, placed, POST $V1 $RATE_HEAD"
  for r in 1000 2000 4000; do rate_row "$r" "$r"; echo "$ROW"; done
  seq_row; echo "$ROW"
  echo
  echo "| 1 000-row batch, placed $BATCH_HEAD"
  batch_row "POST $OIP, binary tensor data" $OIP "$D/batch.bin" "${BIN_HDR[@]}"; echo "$ROW"
  batch_row "POST $OIP, binary tensor data in and out" $OIP "$D/batch.binout" "${BINOUT_HDR[@]}"; echo "$ROW"
  echo
  echo "| 1 000-row batch in pairs with raw XGBoost, placed $PAIR_HEAD"
  pair_row "POST $OIP, binary tensor data in and out" $OIP "$D/batch.binout" "${BINOUT_HDR[@]}"
  echo "$ROW"
  echo
  echo "Prediction log (placed runs): $LOG_W rows written during them, $LOG_D dropped."
fi

#!/usr/bin/env bash
# Multi-core scaling: CPU per request with 1 worker on one core vs 2 workers on two, for
# tollgate (`--workers`) and, as the control, nginx (`worker_processes`).
#
#   bash bench/scaling.sh                # 3 alternating rounds of 10 s at c=64, default flags
#   ROUNDS=5 DURATION=10 bash bench/scaling.sh
#   ARGS="--analytics off" bash bench/scaling.sh
#
# A 2-core machine cannot keep the load generator off the gateway's cores when the gateway
# uses both, so throughput itself is not comparable between the two set-ups. What is: the
# gateway's CPU time per request (all its threads, from /proc). If a request costs the same
# CPU on two workers as on one, two cores serve twice the requests; the implied scaling is
# 2 × (CPU/request with 1 worker) / (CPU/request with 2 workers). wrk and mock-llm run on
# both cores in every measurement, so only the gateway's placement changes. nginx measured
# the same way shows how much the method itself costs (two busy cores shared with the load
# make every request a little dearer for any proxy).
#
# Prints a markdown table (median of the rounds); needs the release binaries, wrk and nginx
# (as bench/run.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
CONNS=${CONNS:-64}
TOLLGATE=${TOLLGATE:-target/release/tollgate}
MOCK=${MOCK:-target/release/mock-llm}
LOAD_CPUS=0,1
TMP=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$TMP"; }
trap cleanup EXIT
die() { echo "scaling.sh: $*" >&2; exit 1; }
[[ $(nproc) -ge 2 ]] || die "needs 2 cores"
for tool in wrk nginx taskset python3; do command -v $tool >/dev/null || die "$tool is missing (see bench/README.md, Setup)"; done
[[ -x $TOLLGATE && -x $MOCK ]] || die "build first: cargo build --release --bins --workspace"

free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }
# CPU seconds × CLK_TCK of the processes given (user + system, all threads).
ticks() { local t=0 p; for p in "$@"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done; echo $t; }

python3 bench/gen_bodies.py "$TMP/bodies" >/dev/null
MOCK_PORT=$(free_port)
taskset -c $LOAD_CPUS "$MOCK" --listen "127.0.0.1:$MOCK_PORT" --no-record >/dev/null 2>&1 &
PIDS+=($!)
wait_port "$MOCK_PORT" || die "mock-llm did not start"
python3 bench/gen_config.py --mock-port "$MOCK_PORT" >"$TMP/tollgate.yaml"

# Starts one proxy; sets URL, MAIN (to stop) and MEASURED (the processes whose CPU counts).
start() { # tollgate|nginx workers
  local port cpus mask
  port=$(free_port)
  if [[ $2 == 1 ]]; then cpus=0; mask=01; else cpus=0,1; mask="01 10"; fi
  if [[ $1 == tollgate ]]; then
    rm -rf "$TMP/data"
    taskset -c $cpus "$TOLLGATE" serve --config "$TMP/tollgate.yaml" --proxy-listen "127.0.0.1:$port" \
      --proxy-tls-listen off --admin-listen off --log-level warn --workers "$2" --data-dir "$TMP/data" \
      ${ARGS:-} >/dev/null 2>"$TMP/gateway.log" &
    MAIN=$!
    MEASURED=$MAIN
  else
    rm -rf "$TMP/nginx"; mkdir -p "$TMP/nginx/tmp"
    sed -e "s/@NGINX_PORT@/$port/g" -e "s/@MOCK_PORT@/$MOCK_PORT/g" -e "s/@NOFILE@/20000/g" \
      -e "s/@GATEWAY_CPU_MASK@/$mask/g" -e "s/^worker_processes 1;/worker_processes $2;/" \
      bench/nginx.conf >"$TMP/nginx/nginx.conf"
    taskset -c $cpus nginx -p "$TMP/nginx/" -c "$TMP/nginx/nginx.conf" -e "$TMP/nginx/error.log" >/dev/null 2>&1 &
    MAIN=$!
  fi
  PIDS+=("$MAIN")
  wait_port "$port" || die "$1 did not start"
  if [[ $1 == nginx ]]; then
    sleep 0.3
    MEASURED=$(pgrep -P "$MAIN" | tr '\n' ' ')
    [[ $(wc -w <<<"$MEASURED") == "$2" ]] || die "expected $2 nginx workers, found: $MEASURED"
  fi
  URL="http://127.0.0.1:$port/v1/chat/completions"
}

# One measurement: prints "requests/s CPU-µs-per-request".
measure() { # tollgate|nginx workers
  local c0 c1 out reqs
  start "$1" "$2"
  BENCH_BODY=$TMP/bodies/chat.json taskset -c $LOAD_CPUS wrk -t1 -c"$CONNS" -d1s -s bench/wrk.lua "$URL" >/dev/null 2>&1 || true
  # shellcheck disable=SC2086
  c0=$(ticks $MEASURED)
  out=$(BENCH_BODY=$TMP/bodies/chat.json taskset -c $LOAD_CPUS wrk -t1 -c"$CONNS" -d"${DURATION}s" -s bench/wrk.lua "$URL")
  # shellcheck disable=SC2086
  c1=$(ticks $MEASURED)
  kill "$MAIN"; wait "$MAIN" 2>/dev/null || true
  reqs=$(awk '/requests in/{print $1}' <<<"$out")
  [[ -n $reqs && $reqs -gt 0 ]] || die "$1 answered no requests"
  python3 -c "import os; t=os.sysconf('SC_CLK_TCK'); print(f'{$reqs/$DURATION:.0f} {($c1-$c0)/t*1e6/$reqs:.1f}')"
}

for r in $(seq "$ROUNDS"); do
  for who in tollgate nginx; do
    for w in 1 2; do
      read -r rps cpu < <(measure $who $w)
      echo "$who $w $rps $cpu" >>"$TMP/results"
      echo "round $r: $who, $w worker(s): $rps req/s, $cpu µs CPU/request" >&2
    done
  done
done

python3 - "$TMP/results" "$ROUNDS" "$DURATION" "$CONNS" "${ARGS:-}" <<'EOF'
import statistics, subprocess, sys
path, rounds, secs, conns, args = sys.argv[1:]
rows = [l.split() for l in open(path)]
def med(who, w, i):
    return statistics.median(float(r[i]) for r in rows if r[0] == who and r[1] == w)
rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
print(f"### Multi-core scaling, commit `{rev}` ({rounds} rounds × {secs} s, c={conns}, median; tollgate {('flags: ' + args) if args else 'default flags'})\n")
print("| proxy | 1 worker (CPU 0): CPU/request | 2 workers (CPU 0,1): CPU/request | implied scaling 2 × c1/c2 | req/s 1 → 2 workers (load shares the cores) | target | pass/fail |")
print("|---|---|---|---|---|---|---|")
for who in ("tollgate", "nginx"):
    c1, c2 = med(who, "1", 3), med(who, "2", 3)
    scaling = 2 * c1 / c2
    target, verdict = ("≥ 1.8×", "PASS" if scaling >= 1.8 else "**FAIL**") if who == "tollgate" else ("reported", "n/a")
    print(f"| {who} | {c1:.1f} µs | {c2:.1f} µs | {scaling:.2f}× | {med(who, '1', 2):,.0f} → {med(who, '2', 2):,.0f} | {target} | {verdict} |")
EOF

#!/usr/bin/env bash
# What metrics, file-log and usage analytics cost a request, measured A/B: two gateways run
# side by side on CPU 0 (A: observability off; B: prometheus on every switch, file-log and
# SQLite analytics), mock-llm and wrk on CPU 1, and c=1 rounds alternate between them, so
# a busy host disturbs both alike. Each round also measures mock-llm directly (D), so the
# latency each gateway adds (A-D, B-D) is known per round; the order of A and B flips every
# round (D A B, D B A, ...), so neither always runs right after the other. Prints each
# round, the medians, the ratios (of medians, and the median of the per-round ratios), and
# the CPU time of B's threads per request.
#
#   bash bench/observe-ab.sh [ROUNDS=5] [SECONDS=3] [CONNECTIONS=1]
#
# Environment: AB_BIN_A / AB_BIN_B (default target/release/tollgate; build it first with
# `cargo build --release --bin tollgate && cargo build --release -p mock-llm --bins`),
# AB_B_ARGS (B's observability flags; default `--analytics sqlite --data-dir <tmp>`),
# AB_FILE_LOG (B's file-log path; default a file in the temp dir; /dev/null takes the
# file system out of the picture), AB_SAME=1 (B runs A's config and flags too: an A/A run,
# which shows how far apart two identical gateways measure on this host), AB_DROP (plugins
# left out of B's config, e.g. `file-log` or `prometheus,file-log`: one part's cost alone),
# AB_BIN_C (a third gateway C: another build run with B's config and flags, its own file-log
# and data dir, measured in the same rounds; compares two builds of the "on" side),
# AB_RESTART=N (start every gateway afresh, on new ports, every N rounds: two identical
# gateways kept running measured up to 8 % apart here, an A/A bias of the process
# instance, so long comparisons restart them and let the rounds average it out),
# AB_RAW (where the printed report is also written, as <UTC>-observe-ab[-restart].txt;
# default bench/results/raw/, ignored by git: a run's output, not a record).
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${1:-5}
SECS=${2:-3}
CONNS=${3:-1}
BIN_A=${AB_BIN_A:-target/release/tollgate}
BIN_B=${AB_BIN_B:-target/release/tollgate}
for f in "$BIN_A" "$BIN_B" target/release/mock-llm; do
  [[ -x $f ]] || { echo "observe-ab: $f is missing (cargo build --release ...)" >&2; exit 1; }
done
for tool in wrk taskset python3; do
  command -v "$tool" >/dev/null || { echo "observe-ab: needs $tool (apt-get install -y wrk)" >&2; exit 1; }
done

RAW=${AB_RAW:-bench/results/raw}
REPORT=$RAW/$(date -u +%Y-%m-%dT%H%MZ)-observe-ab
if [[ ${AB_RESTART:-0} -gt 0 ]]; then REPORT+=-restart; fi
REPORT+=.txt
mkdir -p "$RAW"
T=$(mktemp -d /tmp/tollgate-ab.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$T"
}
trap cleanup EXIT
mkdir -p "$T/data"
cp "$BIN_A" "$T/a"
cp "$BIN_B" "$T/b"
BIN_C=${AB_BIN_C:-}
if [[ -n $BIN_C ]]; then
  [[ -x $BIN_C ]] || { echo "observe-ab: $BIN_C is missing" >&2; exit 1; }
  cp "$BIN_C" "$T/c"
  mkdir -p "$T/data-c"
fi
cp target/release/mock-llm "$T/mock"
python3 bench/gen_bodies.py "$T/bodies" >/dev/null

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}

MOCK_PORT=$(port)
taskset -c 1 "$T/mock" --listen "127.0.0.1:$MOCK_PORT" --no-record >"$T/mock.log" 2>&1 &
PIDS+=($!)
wait_port "$MOCK_PORT"
python3 bench/gen_config.py --mock-port "$MOCK_PORT" >"$T/off.yaml"
python3 bench/gen_config.py --mock-port "$MOCK_PORT" --observe "${AB_FILE_LOG:-$T/file-log.jsonl}" |
  AB_DROP=${AB_DROP:-} python3 -c '
import json, os, sys
drop = set(filter(None, os.environ["AB_DROP"].split(",")))
c = json.load(sys.stdin)
c["plugins"] = [p for p in c.get("plugins", []) if p["name"] not in drop]
json.dump(c, sys.stdout)' >"$T/on.yaml"
sed "s#${AB_FILE_LOG:-$T/file-log.jsonl}#${AB_FILE_LOG:-$T/file-log.jsonl}.c#" "$T/on.yaml" >"$T/on-c.yaml"

# shellcheck disable=SC2206
B_ARGS=(${AB_B_ARGS:---analytics sqlite --data-dir $T/data})
B_CONFIG=$T/on.yaml
if [[ ${AB_SAME:-0} == 1 ]]; then
  B_CONFIG=$T/off.yaml
  B_ARGS=(--analytics off)
fi
SIDES="A B"
if [[ -n $BIN_C ]]; then
  C_CONFIG=$T/on-c.yaml
  [[ ${AB_SAME:-0} == 1 ]] && C_CONFIG=$T/off.yaml
  # shellcheck disable=SC2206
  C_ARGS=(${B_ARGS[@]/$T\/data/$T/data-c})
  SIDES="A B C"
fi

# Starts (or restarts) the gateways on fresh ports, each warmed up for a second. Before a
# restart, B's and C's threads' CPU times so far are added to $T/threads.
GW_PIDS=()
start_gateways() {
  [[ ${#GW_PIDS[@]} -gt 0 ]] && { record_threads; kill "${GW_PIDS[@]}" 2>/dev/null || true; wait "${GW_PIDS[@]}" 2>/dev/null || true; }
  PORT_A=$(port)
  PORT_B=$(port)
  taskset -c 0 "$T/a" serve --config "$T/off.yaml" --proxy-listen "127.0.0.1:$PORT_A" \
    --proxy-tls-listen off --admin-listen off --log-level warn --analytics off >>"$T/a.log" 2>&1 &
  A_PID=$!
  taskset -c 0 "$T/b" serve --config "$B_CONFIG" --proxy-listen "127.0.0.1:$PORT_B" \
    --proxy-tls-listen off --admin-listen off --log-level warn "${B_ARGS[@]}" >>"$T/b.log" 2>&1 &
  B_PID=$!
  GW_PIDS=("$A_PID" "$B_PID")
  if [[ -n $BIN_C ]]; then
    PORT_C=$(port)
    taskset -c 0 "$T/c" serve --config "$C_CONFIG" --proxy-listen "127.0.0.1:$PORT_C" \
      --proxy-tls-listen off --admin-listen off --log-level warn "${C_ARGS[@]}" >>"$T/c.log" 2>&1 &
    C_PID=$!
    GW_PIDS+=("$C_PID")
  fi
  PIDS+=("${GW_PIDS[@]}")
  wait_port "$PORT_A"
  wait_port "$PORT_B"
  [[ -n $BIN_C ]] && wait_port "$PORT_C"
  load "$PORT_A" 1 "" >/dev/null
  load "$PORT_B" 1 "" >/dev/null
  [[ -n $BIN_C ]] && load "$PORT_C" 1 "" >/dev/null
  return 0
}
record_threads() {
  local side pid t
  for side in B ${BIN_C:+C}; do
    pid=$B_PID
    [[ $side == C ]] && pid=$C_PID
    for t in /proc/"$pid"/task/*; do
      echo "$side $(cat "$t/comm") $(awk '{print $14 + $15}' "$t/stat")"
    done
  done >>"$T/threads"
}

load() { # port seconds [--latency]
  BENCH_BODY=$T/bodies/chat.json taskset -c 1 wrk -t1 -c"$CONNS" -d"$2s" --timeout 10s $3 \
    -s bench/wrk.lua "http://127.0.0.1:$1/v1/chat/completions" 2>&1
}
start_gateways
steal() { awk '/^cpu /{print $9}' /proc/stat; }
for r in $(seq "$ROUNDS"); do
  if [[ $r -gt 1 && ${AB_RESTART:-0} -gt 0 && $(( (r - 1) % AB_RESTART )) -eq 0 ]]; then
    start_gateways >&2
  fi
  # D first, then the gateways in an order that rotates every round.
  read -ra sides <<<"$SIDES"
  k=$(( r % ${#sides[@]} ))
  order="D ${sides[*]:k} ${sides[*]:0:k}"
  for side in $order; do
    case $side in
      A) p=$PORT_A ;;
      B) p=$PORT_B ;;
      C) p=$PORT_C ;;
      D) p=$MOCK_PORT ;;
    esac
    s0=$(steal)
    out=$(load "$p" "$SECS" --latency | sed -n 's/^BENCH_JSON //p')
    s1=$(steal)
    echo "$r $side $((s1 - s0)) $out"
  done
done >"$T/rounds"
ticks=$(getconf CLK_TCK)
record_threads

python3 - "$T/rounds" "$T/threads" "$SECS" "$ticks" <<'EOF' | tee "$REPORT"
import json, statistics, sys
rounds, threads, secs, ticks = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
d = {"A": {}, "B": {}, "C": {}, "D": {}}
for line in open(rounds):
    r, side, steal, raw = line.split(" ", 3)
    j = json.loads(raw)
    lat = j["latency_us"]
    d[side][r] = j
    print(f"round {r} {side}: {j['rps']:.0f} req/s, p50 {lat['p50']} µs, p90 {lat['p90']} µs, "
          f"p99 {lat['p99']} µs (steal {float(steal) / secs:.1f} % of a CPU)")
med = {s: {k: statistics.median(x["latency_us"][k] for x in d[s].values()) for k in ("p50", "p90", "p99")}
       for s in d if d[s]}
sides = [s for s in "DABC" if d[s]]
rps = {s: statistics.median(x["rps"] for x in d[s].values()) for s in sides}
for s, name in (("D", "direct"), ("A", "off"), ("B", "on "), ("C", "on, C")):
    if s not in sides:
        continue
    m = med[s]
    print(f"{s} ({name}) median: p50 {m['p50']:.0f} µs, p90 {m['p90']:.0f} µs, p99 {m['p99']:.0f} µs, {rps[s]:.0f} req/s")
for s in sides[2:]:
    print(f"{s}/A: p50 {med[s]['p50'] / med['A']['p50']:.3f}, p99 {med[s]['p99'] / med['A']['p99']:.3f}, "
          f"mean latency (1/req/s) {rps['A'] / rps[s]:.3f}")
# The latency each gateway adds over mock-llm alone, paired within each round.
added = {s: [d[s][r]["latency_us"]["p50"] - d["D"][r]["latency_us"]["p50"] for r in d["D"]] for s in sides[1:]}
def compare(x, y):
    ratios = [b / a for a, b in zip(added[y], added[x]) if a > 0]
    mx, my = statistics.median(added[x]), statistics.median(added[y])
    print(f"added p50 over direct: {y} {my:.0f} µs, {x} {mx:.0f} µs, {x}/{y} {mx / my if my > 0 else float('nan'):.3f} "
          f"(median of the per-round ratios {statistics.median(ratios) if ratios else float('nan'):.3f}"
          + (f", quartiles {' – '.join(f'{q:.3f}' for q in statistics.quantiles(ratios, n=4)[::2])})"
             if len(ratios) >= 2 else ")"))
for x, y in (("B", "A"), ("C", "A"), ("C", "B")):
    if x in sides and y in sides:
        compare(x, y)
for s in sides[2:]:
    served = sum(x["requests"] for x in d[s].values())
    print(f"{s}'s threads, CPU per request over its {served} measured requests (warm-up included in CPU):")
    cpu = {}
    for line in open(threads):
        side, rest = line.split(" ", 1)
        if side == s:
            name, t = rest.rsplit(" ", 1)
            cpu[name] = cpu.get(name, 0.0) + float(t)
    for name, t in cpu.items():
        print(f"  {name}: {t / ticks / served * 1e6:.1f} µs")
EOF
echo "observe-ab: wrote $REPORT" >&2

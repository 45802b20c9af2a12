#!/usr/bin/env bash
# Instructions the gateway spends per request, counted by callgrind (deterministic, unlike
# wall-clock timings on a shared VM): `tollgate serve` under valgrind answers N chat requests
# over one connection from loadgen against mock-llm; run it for two N and divide the
# difference, which cancels start-up and shutdown.
#
#   bash bench/callgrind.sh [BIN]            # prints instructions/request (1200 vs 200 requests)
#   ARGS="--analytics off" bash bench/callgrind.sh   # extra `serve` arguments
#   EXTRA='    - name: rate-limiting
#         config: {hour: 1000000}' bash bench/callgrind.sh   # with a plugin on the route
#   OBSERVE=1 bash bench/callgrind.sh       # prometheus (every switch) + file-log on the route,
#                                           # log_statistics on; add ARGS="--analytics off" to
#                                           # leave out the (default) SQLite analytics
#   BEFORE_RUN='cmd' bash bench/callgrind.sh # runs cmd before each gateway start, e.g. to give
#                                           # `--store postgres` an empty database (each run's
#                                           # config names its own mock port):
#   ARGS="--store postgres --store-postgres postgres://postgres@127.0.0.1/tg_bench" \
#   BEFORE_RUN='psql -qh 127.0.0.1 -U postgres -c "DROP DATABASE IF EXISTS tg_bench" -c "CREATE DATABASE tg_bench"' \
#     bash bench/callgrind.sh                # a cluster node's cost per request
#   BODY=file bash bench/callgrind.sh        # another request body, e.g. the streaming one of
#                                           # `python3 bench/gen_bodies.py DIR` (DIR/stream.json)
#   STATS=1 bash bench/callgrind.sh          # log_statistics on, as bench/run.sh's route has it
#                                           # (a streamed answer's usage chunk asked for and
#                                           # stripped)
#   KEEP=dir bash bench/callgrind.sh         # keeps callgrind's files in dir/200 and dir/1200
#                                           # (one per thread) for callgrind_annotate
#
# Prints the total, then how it splits: the request path (the runtime's threads) and the
# log writers' threads (file-log, analytics, http-log), which work off the request path.
#
# Needs valgrind and the release binaries (cargo build --release --bins; cargo build
# --release -p mock-llm --bins).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-target/release/tollgate}
EXTRA=${EXTRA:-}
MOCK=target/release/mock-llm
LOADGEN=target/release/loadgen
port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
run() { # requests -> total instructions
    local n=$1 d mp gp mpid gpid
    d=$(mktemp -d)
    mp=$(port); gp=$(port)
    "$MOCK" --listen 127.0.0.1:$mp --no-record >/dev/null 2>&1 &
    mpid=$!
    local observe="" stats=""
    if [[ ${STATS:-0} == 1 ]]; then stats="logging: {log_statistics: true}, "; fi
    if [[ ${OBSERVE:-0} == 1 ]]; then
        stats="logging: {log_statistics: true}, "
        observe="    - name: prometheus
      config: {status_code_metrics: true, latency_metrics: true, bandwidth_metrics: true, ai_metrics: true}
    - name: file-log
      config: {path: $d/file-log.jsonl}"
    fi
    cat >"$d/kong.yaml" <<Y
_format_version: "3.0"
services:
- name: s
  url: http://127.0.0.1:$mp
  routes:
  - name: r
    paths: ["/v1/chat/completions"]
    plugins:
$EXTRA
$observe
    - name: ai-proxy
      config: {route_type: llm/v1/chat, ${stats}model: {provider: openai, name: gpt-4o, options: {upstream_url: "http://127.0.0.1:$mp/v1/chat/completions"}}}
Y
    if [[ -n ${BODY:-} ]]; then cp "$BODY" "$d/body.json"; else
        echo '{"model":"gpt-4o","messages":[{"role":"user","content":"hello there, how are you today?"}]}' >"$d/body.json"
    fi
    if [[ -n ${BEFORE_RUN:-} ]]; then eval "$BEFORE_RUN" >/dev/null; fi
    # One worker: with one per core (the default) the one connection lands on either, and
    # the count moves by ~250 instructions with it (the main thread allocates from glibc's
    # main arena, a worker thread from its own). ARGS may name another --workers.
    local workers="--workers 1"
    if [[ " ${ARGS:-} " == *" --workers"* ]]; then workers=""; fi
    TOLLGATE_PROXY_TLS_LISTEN=off valgrind --tool=callgrind --separate-threads=yes --callgrind-out-file="$d/cg.out" \
        "$BIN" serve --config "$d/kong.yaml" --proxy-listen 127.0.0.1:$gp --admin-listen off \
        --data-dir "$d/data" $workers ${ARGS:-} >/dev/null 2>"$d/vg.err" &
    gpid=$!
    for _ in $(seq 1 300); do curl -s -o /dev/null "http://127.0.0.1:$gp/" && break; sleep 0.1; done
    "$LOADGEN" --url "http://127.0.0.1:$gp/v1/chat/completions" --body-file "$d/body.json" \
        --connections 1 --requests "$n" >/dev/null 2>&1
    kill -INT $gpid; wait $gpid 2>/dev/null || true
    kill $mpid 2>/dev/null || true
    # One file per thread: a writer's thread is the one running its loop.
    local total=0 writers=0 f n
    for f in "$d"/cg.out-*; do
        n=$(grep -o 'summary: [0-9]*' "$f" | awk '{print $2}')
        total=$((total + n))
        if grep -qE 'file_log::(writer|Shared::write_pending)|analytics::(Writer::run|Store::insert)|http_log::.*run' "$f"; then
            writers=$((writers + n))
        fi
    done
    echo "$total $writers"
    if [[ -n ${KEEP:-} ]]; then mkdir -p "$KEEP/$1" && cp "$d"/cg.out-* "$KEEP/$1/"; fi
    rm -rf "$d"
}
read -r a aw < <(run 200)
read -r b bw < <(run 1200)
total=$(( (b - a) / 1000 ))
writers=$(( (bw - aw) / 1000 ))
echo "$total"
echo "request path: $((total - writers)), log writers: $writers" >&2

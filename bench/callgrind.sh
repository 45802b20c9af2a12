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
    - name: ai-proxy
      config: {route_type: llm/v1/chat, model: {provider: openai, name: gpt-4o, options: {upstream_url: "http://127.0.0.1:$mp/v1/chat/completions"}}}
Y
    echo '{"model":"gpt-4o","messages":[{"role":"user","content":"hello there, how are you today?"}]}' >"$d/body.json"
    TOLLGATE_PROXY_TLS_LISTEN=off valgrind --tool=callgrind --callgrind-out-file="$d/cg.out" \
        "$BIN" serve --config "$d/kong.yaml" --proxy-listen 127.0.0.1:$gp --admin-listen off \
        --data-dir "$d/data" ${ARGS:-} >/dev/null 2>"$d/vg.err" &
    gpid=$!
    for _ in $(seq 1 300); do curl -s -o /dev/null "http://127.0.0.1:$gp/" && break; sleep 0.1; done
    "$LOADGEN" --url "http://127.0.0.1:$gp/v1/chat/completions" --body-file "$d/body.json" \
        --connections 1 --requests "$n" >/dev/null 2>&1
    kill -INT $gpid; wait $gpid 2>/dev/null || true
    kill $mpid 2>/dev/null || true
    grep -o 'summary: [0-9]*' "$d/cg.out" | awk '{print $2}'
    rm -rf "$d"
}
a=$(run 200)
b=$(run 1200)
echo $(( (b - a) / 1000 ))

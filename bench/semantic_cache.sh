#!/usr/bin/env bash
# What ai-semantic-cache adds or saves per request, at one connection (loadgen, wall clock,
# microseconds): the same chat request through the gateway
#   - direct: a route without the cache (the gateway and mock-llm's answer);
#   - hit:    a route whose cache holds the answer (no upstream call, no embeddings call:
#             exact_caching);
#   - miss:   the same cache asked with `Cache-Control: no-cache` (cache_control: true), so
#             every request goes upstream and stores its answer again: the lookup's work
#             without the search, the upstream call, the store. The prompt's vector comes from
#             the embedder's own cache after the first request, so this leaves out the
#             embeddings provider's latency, which a real miss pays (a network call);
#   - embeddings call: that call alone, loadgen straight to mock-llm's embeddings (a real
#             miss ≈ miss + this, plus the provider's own time).
#
#   bash bench/semantic_cache.sh [SECONDS]     # default 5 s per case
#
# Needs the release binaries (cargo build --release --workspace --bins). Prints a markdown
# table; the gateway runs as the README starts it (default flags), mock-llm answers at once.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-5}
BIN=target/release/tollgate
MOCK=target/release/mock-llm
LOADGEN=target/release/loadgen
port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
TMP=$(mktemp -d)
MP=$(port); GP=$(port)
cleanup() { kill "${PIDS[@]}" 2>/dev/null || true; rm -rf "$TMP"; }
PIDS=()
trap cleanup EXIT

"$MOCK" --listen "127.0.0.1:$MP" --no-record >/dev/null 2>&1 &
PIDS+=($!)
cat >"$TMP/kong.yaml" <<EOF
_format_version: "3.0"
services:
  - name: llm
    url: http://unused.invalid
    routes:
      - name: direct
        paths: ["/direct"]
        plugins:
          - name: ai-proxy
            config: {route_type: llm/v1/chat, model: {provider: openai, name: gpt-4o, options: {upstream_url: "http://127.0.0.1:$MP/v1/chat/completions"}}}
      - name: cached
        paths: ["/cached"]
        plugins:
          - name: ai-semantic-cache
            config:
              exact_caching: true
              cache_control: true
              partition_by: route
              embeddings: {model: {provider: openai, name: text-embedding-3-small, options: {upstream_url: "http://127.0.0.1:$MP/v1/embeddings"}}}
              vectordb: {dimensions: 64, distance_metric: cosine, threshold: 0.1}
          - name: ai-proxy
            config: {route_type: llm/v1/chat, model: {provider: openai, name: gpt-4o, options: {upstream_url: "http://127.0.0.1:$MP/v1/chat/completions"}}}
EOF
echo '{"model":"gpt-4o","messages":[{"role":"user","content":"How do I write a loop in Python?"}]}' >"$TMP/body.json"
"$BIN" serve --config "$TMP/kong.yaml" --proxy-listen "127.0.0.1:$GP" --admin-listen off \
  --proxy-tls-listen off --data-dir "$TMP/data" >/dev/null 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do
  curl -s -o /dev/null "http://127.0.0.1:$GP/" && break
  sleep 0.1
done

measure() { # path [header]
  local extra=()
  [[ -n ${2:-} ]] && extra=(--header "$2")
  "$LOADGEN" --url "http://127.0.0.1:$GP$1" --body-file "$TMP/body.json" --connections 1 \
    --duration "$SECS" --warmup 1 "${extra[@]}"
}
# Fill the cache.
curl -s -o /dev/null -H 'content-type: application/json' --data @"$TMP/body.json" "http://127.0.0.1:$GP/cached"
sleep 0.5
status() { curl -s -o /dev/null -D - -H 'content-type: application/json' "$@" --data @"$TMP/body.json" \
  "http://127.0.0.1:$GP/cached" | tr -d '\r' | sed -n 's/^x-cache-status: //Ip'; }
[[ $(status) == Hit ]] || { echo "the cache did not answer the repeat" >&2; exit 1; }
[[ $(status -H 'cache-control: no-cache') == Refresh ]] || { echo "no-cache did not refresh" >&2; exit 1; }
direct=$(measure /direct)
hit=$(measure /cached)
miss=$(measure /cached 'cache-control: no-cache')
echo '{"model":"text-embedding-3-small","input":"How do I write a loop in Python?","dimensions":64}' >"$TMP/embed.json"
embed=$("$LOADGEN" --url "http://127.0.0.1:$MP/v1/embeddings" --body-file "$TMP/embed.json" \
  --connections 1 --duration "$SECS" --warmup 1)
python3 - "$direct" "$hit" "$miss" "$embed" <<'PY'
import json, sys
rows = [("direct (no cache plugin)", json.loads(sys.argv[1])),
        ("cache hit", json.loads(sys.argv[2])),
        ("cache miss (no-cache refresh)", json.loads(sys.argv[3])),
        ("embeddings call alone (mock-llm)", json.loads(sys.argv[4]))]
print("| case | requests | errors | p50 µs | p99 µs | mean µs |")
print("|---|---|---|---|---|---|")
for name, r in rows:
    l = r["latency_us"]
    print(f"| {name} | {r['requests']} | {r['errors']} | {l['p50']} | {l['p99']} | {l['mean']} |")
d, h, m, e = (r[1]["latency_us"]["p50"] for r in rows)
print(f"\nhit vs direct: {h - d:+d} µs at p50; miss vs direct: {m - d:+d} µs at p50 "
      f"({m + e - d:+d} µs with the embeddings call a new prompt pays)")
PY

#!/usr/bin/env bash
# End-to-end checks of Tollgate with the real clients (Codex CLI, OpenAI Python SDK)
# against mock-llm. Run from anywhere: `bash tests/e2e/run.sh`. See tests/e2e/README.md.
#
# Output: one `PASS: name` / `FAIL: name: detail` line per check, then a final line
# `N passed, M failed`. Exit status 0 only when nothing failed.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
cd "$ROOT"

CACHE=${E2E_CACHE:-${HOME:-/tmp}/.cache/tollgate-e2e}
CODEX_VERSION=0.169.0
CLAUDE_CODE_VERSION=2.1.197
# The realtime extra brings `websockets`, which the SDK's Realtime client needs; a spec
# naming openai without extras gets it added (openai==1.2.3 -> openai[realtime]==1.2.3).
OPENAI_PIP_SPEC=${E2E_OPENAI_PIP_SPEC:-openai}
case "$OPENAI_PIP_SPEC" in
    openai\[*) ;;
    openai|openai[=\<\>\!~\ ]*) OPENAI_PIP_SPEC="openai[realtime]${OPENAI_PIP_SPEC#openai}" ;;
esac
# The official MCP Python SDK, 1.x (2.x changed its client API).
MCP_PIP_SPEC=${E2E_MCP_PIP_SPEC:-mcp>=1.10,<2}
CODEX_TIMEOUT=${E2E_CODEX_TIMEOUT:-120}          # seconds for one `codex exec`
CLAUDE_TIMEOUT=${E2E_CLAUDE_TIMEOUT:-120}        # seconds for one `claude -p`
SDK_TIMEOUT=${E2E_SDK_TIMEOUT:-180}              # seconds for the whole SDK script
START_TIMEOUT=${E2E_START_TIMEOUT:-30}           # seconds for each server to be ready
BUILD_TIMEOUT=${E2E_BUILD_TIMEOUT:-3600}         # seconds for `cargo build --workspace --bins`
INSTALL_TIMEOUT=${E2E_INSTALL_TIMEOUT:-900}      # seconds for each npm / pip step
LOG_LEVEL=${E2E_LOG_LEVEL:-info}

PROVIDER_KEY=sk-e2e-provider                     # what the gateway sends upstream
CODEX_CLIENT_KEY=sk-e2e-codex-client-7f3a        # what Codex sends to the gateway
GOV_KEY=tg_e2e-gov-app-key-51c9                  # S4: the application's key (ApiKey header)
CURL_CLIENT_KEY=sk-e2e-curl-client-91c2          # what curl sends to the gateway
SDK_CLIENT_KEY=sk-client                         # what the SDK sends to the gateway

PASSED=0
FAILED=0
MOCK_PID=""
GW_PID=""
FINISHED=0
TMP=$(mktemp -d "${TMPDIR:-/tmp}/tollgate-e2e.XXXXXX")

log() { printf '[e2e] %s\n' "$*" >&2; }
pass() { PASSED=$((PASSED + 1)); printf 'PASS: %s\n' "$1"; }
fail() { FAILED=$((FAILED + 1)); printf 'FAIL: %s\n' "$*"; }

# Runs a command without the proxy variables, so loopback traffic never goes to a proxy.
no_proxy() {
    env -u HTTP_PROXY -u HTTPS_PROXY -u http_proxy -u https_proxy -u ALL_PROXY -u all_proxy \
        NO_PROXY=127.0.0.1,localhost no_proxy=127.0.0.1,localhost "$@"
}

stop_pid() {
    local pid=$1
    [ -n "$pid" ] || return 0
    kill "$pid" 2>/dev/null || return 0
    local i
    for i in $(seq 1 50); do
        kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
        sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    stop_pid "$GW_PID"
    stop_pid "$MOCK_PID"
    GW_PID=""
    MOCK_PID=""
    if [ "${E2E_KEEP:-0}" = 1 ] || [ "$FAILED" -gt 0 ]; then
        log "kept work dir $TMP"
    else
        rm -rf "$TMP"
    fi
}

show_file() { # title file [lines]
    local title=$1 file=$2 n=${3:-60}
    printf '\n----- %s (%s, last %s lines) -----\n' "$title" "$file" "$n"
    if [ -s "$file" ]; then tail -n "$n" "$file" | cut -c1-3000; else echo "(empty or missing)"; fi
}

# One line per file-log record with the fields the checks look at (payloads left out).
summarize_log() { # file
    printf '\n----- file-log %s, summary -----\n' "$1"
    [ -s "$1" ] || { echo "(empty or missing)"; return 0; }
    python3 - "$1" <<'EOF' || true
import json, sys
for n, line in enumerate(open(sys.argv[1], encoding="utf-8", errors="replace"), 1):
    try:
        r = json.loads(line)
    except ValueError as e:
        print(f"{n}: not JSON ({e}): {line[:300]!r}")
        continue
    p = (r.get("ai") or {}).get("proxy") or {}
    req, res = r.get("request") or {}, r.get("response") or {}
    print(f"{n}: {req.get('method')} {req.get('uri')} -> {res.get('status')} route={(r.get('route') or {}).get('name')}"
          f" upstream_uri={r.get('upstream_uri')} tried_targets={json.dumps(p.get('tried_targets'))}"
          f" meta={json.dumps(p.get('meta'))} usage={json.dumps(p.get('usage'))}"
          f" error={json.dumps(p.get('error'))}")
EOF
}

diagnostics() {
    show_file "gateway stderr" "$TMP/gateway.err" 80
    show_file "gateway stdout" "$TMP/gateway.out" 20
    show_file "mock-llm stderr" "$TMP/mock.err" 40
    show_file "mock-llm stdout" "$TMP/mock.out" 20
    show_file "codex stderr" "$TMP/codex.err" 60
    show_file "codex stdout" "$TMP/codex.out" 20
    summarize_log "$TMP/logs/codex.log"
    summarize_log "$TMP/logs/sdk.log"
    show_file "file-log codex.log, raw" "$TMP/logs/codex.log" 3
    show_file "file-log sdk.log, raw" "$TMP/logs/sdk.log" 5
    show_file "generated kong.yaml" "$TMP/kong.yaml" 200
    echo
}

# Prints the summary as the very last line and exits with the right status.
finish() {
    FINISHED=1
    trap - EXIT
    stop_pid "$GW_PID"; GW_PID=""
    stop_pid "$MOCK_PID"; MOCK_PID=""
    if [ "$FAILED" -gt 0 ]; then diagnostics; fi
    cleanup
    printf '%s passed, %s failed\n' "$PASSED" "$FAILED"
    if [ "$FAILED" -eq 0 ]; then exit 0; else exit 1; fi
}

on_exit() {
    local rc=$?
    [ "$FINISHED" = 1 ] && return
    if [ "$rc" -ne 0 ] && [ "$FAILED" -eq 0 ]; then
        fail "harness: script stopped with status $rc (line ${ERR_LINE:-?})"
    fi
    finish
}
trap 'ERR_LINE=$LINENO' ERR
trap on_exit EXIT
trap 'fail "harness: interrupted"; finish' INT TERM

# A setup step that failed: nothing after it can run.
die() { fail "$*"; finish; }

# Reads PASS:/FAIL: lines printed by a helper (python) and adds them to the counts.
count_results() { # file rc name
    local file=$1 rc=$2 name=$3 p f
    p=$(grep -c '^PASS: ' "$file" || true)
    f=$(grep -c '^FAIL: ' "$file" || true)
    PASSED=$((PASSED + p))
    FAILED=$((FAILED + f))
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
        fail "$name: helper exited with status $rc without reporting a failure"
    elif [ "$p" -eq 0 ] && [ "$f" -eq 0 ]; then
        fail "$name: helper reported no checks"
    fi
}

# ---------------------------------------------------------------------------
# 1. Binaries
# ---------------------------------------------------------------------------
if [ -n "${TOLLGATE_BIN:-}" ] && [ -n "${MOCK_LLM_BIN:-}" ]; then
    log "using TOLLGATE_BIN=$TOLLGATE_BIN MOCK_LLM_BIN=$MOCK_LLM_BIN"
else
    # The workspace's: a plain `cargo build --bins` here leaves mock-llm's binary stale.
    log "cargo build --workspace --bins"
    timeout -k 10 "$BUILD_TIMEOUT" cargo build --workspace --bins >"$TMP/build.log" 2>&1 \
        || { tail -n 40 "$TMP/build.log"; die "setup: cargo build --bins failed"; }
    TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
    TOLLGATE_BIN=${TOLLGATE_BIN:-$TARGET_DIR/debug/tollgate}
    MOCK_LLM_BIN=${MOCK_LLM_BIN:-$TARGET_DIR/debug/mock-llm}
fi
[ -x "$TOLLGATE_BIN" ] || die "setup: no executable tollgate at $TOLLGATE_BIN"
[ -x "$MOCK_LLM_BIN" ] || die "setup: no executable mock-llm at $MOCK_LLM_BIN"

# ---------------------------------------------------------------------------
# 2. Real clients, cached in $CACHE
# ---------------------------------------------------------------------------
mkdir -p "$CACHE"
CODEX_DIR=$CACHE/codex
CODEX=$CODEX_DIR/node_modules/.bin/codex

codex_ok() {
    [ -x "$CODEX" ] || return 1
    local v
    v=$(timeout 30 "$CODEX" --version 2>/dev/null) || return 1
    case "$v" in *"$CODEX_VERSION"*) return 0 ;; *) return 1 ;; esac
}

if codex_ok; then
    log "codex $CODEX_VERSION already in $CODEX_DIR"
else
    log "npm install @openai/codex@$CODEX_VERSION into $CODEX_DIR"
    mkdir -p "$CODEX_DIR"
    [ -f "$CODEX_DIR/package.json" ] || echo '{"name":"tollgate-e2e-codex","private":true}' >"$CODEX_DIR/package.json"
    (cd "$CODEX_DIR" && timeout -k 10 "$INSTALL_TIMEOUT" npm install --no-audit --no-fund --save-exact \
        --include=optional --loglevel=error "@openai/codex@$CODEX_VERSION") >"$TMP/npm.log" 2>&1 \
        || { tail -n 40 "$TMP/npm.log"; die "setup: npm install @openai/codex@$CODEX_VERSION failed"; }
    if ! codex_ok; then
        # The native binary lives in an optional per-platform package (npm alias
        # @openai/codex-<platform>-<arch> → @openai/codex@<version>-<platform>-<arch>);
        # some npm configurations (omit=optional) skip it, so ask for it by name.
        PLATFORM=$(node -p 'process.platform + "-" + process.arch')
        log "native binary missing; installing @openai/codex-$PLATFORM"
        (cd "$CODEX_DIR" && timeout -k 10 "$INSTALL_TIMEOUT" npm install --no-audit --no-fund --save-exact \
            --include=optional --loglevel=error \
            "@openai/codex-$PLATFORM@npm:@openai/codex@$CODEX_VERSION-$PLATFORM") >>"$TMP/npm.log" 2>&1 \
            || { tail -n 40 "$TMP/npm.log"; die "setup: npm install of the codex $PLATFORM binary failed"; }
    fi
    codex_ok || { tail -n 40 "$TMP/npm.log"; timeout 30 "$CODEX" --version || true;
                  die "setup: $CODEX --version does not report $CODEX_VERSION"; }
fi

CLAUDE_DIR=$CACHE/claude-code
CLAUDE=$CLAUDE_DIR/node_modules/.bin/claude
claude_ok() {
    [ -x "$CLAUDE" ] || return 1
    case "$(timeout 30 "$CLAUDE" --version 2>/dev/null)" in *"$CLAUDE_CODE_VERSION"*) return 0 ;; *) return 1 ;; esac
}
if claude_ok; then
    log "claude code $CLAUDE_CODE_VERSION already in $CLAUDE_DIR"
else
    log "npm install @anthropic-ai/claude-code@$CLAUDE_CODE_VERSION into $CLAUDE_DIR"
    mkdir -p "$CLAUDE_DIR"
    [ -f "$CLAUDE_DIR/package.json" ] || echo '{"name":"tollgate-e2e-claude-code","private":true}' >"$CLAUDE_DIR/package.json"
    # The native binary comes as an optional per-platform dependency.
    (cd "$CLAUDE_DIR" && timeout -k 10 "$INSTALL_TIMEOUT" npm install --no-audit --no-fund --save-exact \
        --include=optional --loglevel=error "@anthropic-ai/claude-code@$CLAUDE_CODE_VERSION") >"$TMP/npm-claude.log" 2>&1 \
        || { tail -n 40 "$TMP/npm-claude.log"; die "setup: npm install @anthropic-ai/claude-code@$CLAUDE_CODE_VERSION failed"; }
    claude_ok || { tail -n 40 "$TMP/npm-claude.log"; timeout 30 "$CLAUDE" --version || true;
                   die "setup: $CLAUDE --version does not report $CLAUDE_CODE_VERSION"; }
fi

VENV=$CACHE/venv
PY=$VENV/bin/python
if [ -x "$PY" ] && "$PY" -c 'import openai, websockets, mcp' 2>/dev/null; then
    log "openai $("$PY" -c 'import openai; print(openai.__version__)') already in $VENV"
else
    log "python3 -m venv $VENV && pip install $OPENAI_PIP_SPEC $MCP_PIP_SPEC"
    [ -x "$PY" ] || python3 -m venv "$VENV" >"$TMP/pip.log" 2>&1 \
        || { tail -n 40 "$TMP/pip.log"; die "setup: python3 -m venv failed"; }
    timeout -k 10 "$INSTALL_TIMEOUT" "$PY" -m pip install --disable-pip-version-check --quiet \
        "$OPENAI_PIP_SPEC" "$MCP_PIP_SPEC" >>"$TMP/pip.log" 2>&1 \
        || { tail -n 40 "$TMP/pip.log"; die "setup: pip install $OPENAI_PIP_SPEC $MCP_PIP_SPEC failed"; }
    "$PY" -c 'import openai' || die "setup: openai is not importable after pip install"
    "$PY" -c 'import mcp' || die "setup: mcp is not importable after pip install"
    "$PY" -c 'import websockets' 2>/dev/null \
        || die "setup: websockets (the SDK's Realtime client) is missing; give E2E_OPENAI_PIP_SPEC the [realtime] extra"
fi
log "clients: $(timeout 30 "$CODEX" --version 2>/dev/null), claude $(timeout 30 "$CLAUDE" --version 2>/dev/null), openai-python $("$PY" -c 'import openai; print(openai.__version__)')"

# ---------------------------------------------------------------------------
# 3. mock-llm + gateway on free loopback ports
# ---------------------------------------------------------------------------
# Waits (bounded) for a line matching an ERE in a file and prints its first match.
wait_for_line() { # file ere seconds pid
    local file=$1 ere=$2 secs=$3 pid=$4 i
    for i in $(seq 1 $((secs * 10))); do
        if [ -f "$file" ] && grep -Eq "$ere" "$file"; then
            grep -Eo "$ere" "$file" | head -n 1
            return 0
        fi
        kill -0 "$pid" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}

# Waits (bounded) until something answers HTTP on a URL.
wait_http() { # url seconds
    local url=$1 secs=$2 i code
    for i in $(seq 1 $((secs * 10))); do
        code=$(no_proxy curl -s -o /dev/null -m 2 -w '%{http_code}' "$url" 2>/dev/null || true)
        if [ -n "$code" ] && [ "$code" != 000 ]; then return 0; fi
        sleep 0.1
    done
    return 1
}

# Why a server is not up: it exited (with which status) or is still starting.
exit_reason() { # pid
    local rc=0
    if kill -0 "$1" 2>/dev/null; then
        echo "was still not ready after ${START_TIMEOUT}s"
    else
        wait "$1" 2>/dev/null || rc=$?
        echo "exited with status $rc"
    fi
}

mkdir -p "$TMP/logs" "$TMP/work"
log "work dir $TMP"

"$MOCK_LLM_BIN" --listen 127.0.0.1:0 >"$TMP/mock.out" 2>"$TMP/mock.err" &
MOCK_PID=$!
MOCK_URL=$(wait_for_line "$TMP/mock.out" 'http://127\.0\.0\.1:[0-9]+' "$START_TIMEOUT" "$MOCK_PID") \
    || die "setup: mock-llm $(exit_reason "$MOCK_PID") before printing its address"
MOCK_PORT=${MOCK_URL##*:}
wait_http "$MOCK_URL/health" "$START_TIMEOUT" || die "setup: mock-llm at $MOCK_URL does not answer"
log "mock-llm on $MOCK_URL"

sed -e "s#{MOCK}#$MOCK_URL#g" -e "s#{DIR}#$TMP/logs#g" -e "s#{PROVIDER_KEY}#$PROVIDER_KEY#g" \
    -e "s#{GOV_KEY}#$GOV_KEY#g" \
    "$HERE/kong.yaml.in" >"$TMP/kong.yaml"
"$TOLLGATE_BIN" validate "$TMP/kong.yaml" >"$TMP/validate.out" 2>&1 \
    || { cat "$TMP/validate.out"; die "setup: tollgate validate rejected the generated config"; }

"$TOLLGATE_BIN" serve --config "$TMP/kong.yaml" --proxy-listen 127.0.0.1:0 \
    --proxy-tls-listen 127.0.0.1:0 --data-dir "$TMP/data" \
    --admin-listen 127.0.0.1:0 --log-level "$LOG_LEVEL" >"$TMP/gateway.out" 2>"$TMP/gateway.err" &
GW_PID=$!
GW_URL=$(wait_for_line "$TMP/gateway.out" 'proxy on http://127\.0\.0\.1:[0-9]+' "$START_TIMEOUT" "$GW_PID") \
    || die "setup: tollgate $(exit_reason "$GW_PID") before printing its proxy address"
GW_URL=${GW_URL#proxy on }
wait_http "$GW_URL/" "$START_TIMEOUT" || die "setup: tollgate at $GW_URL does not answer"
log "tollgate proxy on $GW_URL"
GW_ADMIN_URL=$(wait_for_line "$TMP/gateway.out" 'admin on http://127\.0\.0\.1:[0-9]+' "$START_TIMEOUT" "$GW_PID") \
    || die "setup: tollgate did not print its admin address"
GW_ADMIN_URL=${GW_ADMIN_URL#admin on }
GW_TLS_URL=$(wait_for_line "$TMP/gateway.out" 'proxy tls on https://127\.0\.0\.1:[0-9]+' "$START_TIMEOUT" "$GW_PID") \
    || die "setup: tollgate did not print its TLS address"
GW_TLS_URL=https://${GW_TLS_URL#proxy tls on https://}
GW_CERT=$(sed -n 's/^tollgate tls generated a self-signed certificate: //p' "$TMP/gateway.out" | head -n 1)
[ -f "$GW_CERT" ] || die "setup: no generated certificate named in $(cat "$TMP/gateway.out")"
log "tollgate proxy tls on $GW_TLS_URL (certificate $GW_CERT)"

CODEX_LOG=$TMP/logs/codex.log
SDK_LOG=$TMP/logs/sdk.log
log_lines() { if [ -f "$1" ]; then wc -l <"$1" | tr -d ' '; else echo 0; fi; }

# ---------------------------------------------------------------------------
# 4. S1 with curl: POST /codex
# ---------------------------------------------------------------------------
code=$(no_proxy curl -sS -m 30 -o "$TMP/s1_curl.json" -D "$TMP/s1_curl.headers" -w '%{http_code}' \
    -X POST "$GW_URL/codex" -H 'content-type: application/json' \
    -H "authorization: Bearer $CURL_CLIENT_KEY" \
    --data '{"model":"gpt-4o","input":[{"role":"user","content":"Ping"}]}' 2>"$TMP/s1_curl.err" || true)
if [ "$code" = 200 ]; then
    pass "S1 curl: POST /codex -> 200"
else
    fail "S1 curl: POST /codex -> ${code:-no response} $(head -c 500 "$TMP/s1_curl.json" 2>/dev/null) $(cat "$TMP/s1_curl.err")"
fi
if "$PY" - "$TMP/s1_curl.json" <<'EOF' >"$TMP/s1_curl.check" 2>&1; then
import json, sys
b = json.load(open(sys.argv[1]))
assert b.get("object") == "response", f"object={b.get('object')!r}"
texts = [c.get("text") for o in b.get("output", []) if o.get("type") == "message"
         for c in o.get("content", []) if c.get("type") == "output_text"]
assert texts == ["Hello from mock-llm."], f"output_text parts={texts!r}"
u = b.get("usage") or {}
assert all(isinstance(u.get(k), int) for k in ("input_tokens", "output_tokens", "total_tokens")), f"usage={u!r}"
EOF
    pass "S1 curl: body is a Responses object with the mock's answer and usage"
else
    fail "S1 curl: response body: $(tail -n 1 "$TMP/s1_curl.check")"
fi

# ---------------------------------------------------------------------------
# 5. S1 with the real Codex CLI over HTTP + SSE
# ---------------------------------------------------------------------------
CODEX_HOME_DIR=$TMP/codex-home
mkdir -p "$CODEX_HOME_DIR"
cat >"$CODEX_HOME_DIR/config.toml" <<EOF
model = "gpt-4o"
model_provider = "gw"

[model_providers.gw]
name = "gateway"
base_url = "$GW_URL/codex"
env_key = "OPENAI_API_KEY"
wire_api = "responses"
# Fail fast instead of "Reconnecting… n/5" when something is wrong.
request_max_retries = 0
stream_max_retries = 0
EOF

before=$(log_lines "$CODEX_LOG")
rm -f "$TMP/last.txt"
codex_rc=0
(cd "$TMP/work" && no_proxy CODEX_HOME="$CODEX_HOME_DIR" OPENAI_API_KEY="$CODEX_CLIENT_KEY" \
    RUST_LOG="${E2E_CODEX_RUST_LOG:-warn}" \
    timeout -k 5 "$CODEX_TIMEOUT" "$CODEX" exec --skip-git-repo-check --ephemeral --sandbox read-only \
    -o "$TMP/last.txt" "Answer with one word. [mock:reply=pong-from-mock]" \
    </dev/null >"$TMP/codex.out" 2>"$TMP/codex.err") || codex_rc=$?
if [ "$codex_rc" -eq 0 ]; then
    pass "S1 codex: codex exec exited 0 within ${CODEX_TIMEOUT}s"
else
    fail "S1 codex: codex exec exited with status $codex_rc (124 = timeout after ${CODEX_TIMEOUT}s)"
fi
if [ -f "$TMP/last.txt" ] && grep -q 'pong-from-mock' "$TMP/last.txt"; then
    pass "S1 codex: last message (-o last.txt) is the mock's answer pong-from-mock"
else
    fail "S1 codex: last.txt does not contain pong-from-mock: '$(head -c 300 "$TMP/last.txt" 2>/dev/null || echo '<no file>')'"
fi

no_proxy "$PY" "$HERE/check_log.py" --log "$CODEX_LOG" --skip "$before" \
    --mock-host 127.0.0.1 --mock-port "$MOCK_PORT" \
    --secret "$PROVIDER_KEY" --secret "$CODEX_CLIENT_KEY" --secret "$CURL_CLIENT_KEY" \
    >"$TMP/check_log.out" 2>&1 && rc=0 || rc=$?
cat "$TMP/check_log.out"
count_results "$TMP/check_log.out" "$rc" "S1 file-log"

# ---------------------------------------------------------------------------
# 5b. Codex against chat-only dialects (Responses bridged by the gateway), with a tool
#     round trip: the mock calls Codex's first tool, Codex runs it and sends the result
#     back, the mock then answers with text.
# ---------------------------------------------------------------------------
BRIDGED_LOG=$TMP/logs/bridged.log
for dialect in claude chat gemini bedrock; do
    home=$TMP/codex-home-$dialect
    mkdir -p "$home"
    cat >"$home/config.toml" <<EOF
model = "claude-sonnet-4-5"
model_provider = "gw"

[model_providers.gw]
name = "gateway"
base_url = "$GW_URL/codex-$dialect"
env_key = "OPENAI_API_KEY"
wire_api = "responses"
request_max_retries = 0
stream_max_retries = 0
EOF
    before=$(log_lines "$BRIDGED_LOG")
    rm -f "$TMP/last-$dialect.txt"
    rc=0
    (cd "$TMP/work" && no_proxy CODEX_HOME="$home" OPENAI_API_KEY="$CODEX_CLIENT_KEY" \
        RUST_LOG="${E2E_CODEX_RUST_LOG:-warn}" \
        timeout -k 5 "$CODEX_TIMEOUT" "$CODEX" exec --skip-git-repo-check --ephemeral --sandbox read-only \
        -o "$TMP/last-$dialect.txt" "Use a tool, then answer. [mock:tool] [mock:reply=bridged-$dialect-pong]" \
        </dev/null >"$TMP/codex-$dialect.out" 2>"$TMP/codex-$dialect.err") || rc=$?
    if [ "$rc" -eq 0 ] && [ -f "$TMP/last-$dialect.txt" ] && grep -q "bridged-$dialect-pong" "$TMP/last-$dialect.txt"; then
        pass "codex via $dialect dialect: codex exec answered bridged-$dialect-pong"
    else
        fail "codex via $dialect dialect: rc=$rc last='$(head -c 300 "$TMP/last-$dialect.txt" 2>/dev/null || echo '<no file>')' stderr: $(tail -c 600 "$TMP/codex-$dialect.err" 2>/dev/null)"
    fi
    # Two upstream calls through the gateway: the tool call, then the answer to its result.
    sleep 0.5
    added=$(( $(log_lines "$BRIDGED_LOG") - before ))
    if [ "$added" -ge 2 ]; then
        pass "codex via $dialect dialect: tool round trip ($added requests logged)"
    else
        fail "codex via $dialect dialect: expected a tool round trip (>= 2 requests), $added logged"
    fi
done

# ---------------------------------------------------------------------------
# 5c. Codex over WebSocket (its default transport): a provider with
#     supports_websockets = true on S1's route and on the Claude-bridged route (with a tool
#     round trip, so the second turn's previous_response_id is rebuilt by the gateway), and
#     the built-in OpenAI provider pointed at the gateway with openai_base_url.
# ---------------------------------------------------------------------------
ws_sessions() { grep -Ec 'websocket (session|relay) ended' "$TMP/gateway.err" 2>/dev/null || true; }
for variant in s1 claude builtin; do
    home=$TMP/codex-home-ws-$variant
    mkdir -p "$home"
    case $variant in
        claude) route=codex-claude; prompt="Use a tool, then answer. [mock:tool] [mock:reply=ws-$variant-pong]" ;;
        *) route=codex; prompt="Answer with one word. [mock:reply=ws-$variant-pong]" ;;
    esac
    if [ "$variant" = builtin ]; then
        printf 'model = "gpt-4o"\nopenai_base_url = "%s"\n' "$GW_URL/$route" >"$home/config.toml"
    else
        printf '%s\n' 'model = "gpt-4o"' 'model_provider = "gw"' '' '[model_providers.gw]' \
            'name = "gateway"' "base_url = \"$GW_URL/$route\"" 'env_key = "OPENAI_API_KEY"' \
            'wire_api = "responses"' 'supports_websockets = true' 'request_max_retries = 0' \
            'stream_max_retries = 0' >"$home/config.toml"
    fi
    sessions_before=$(ws_sessions)
    rm -f "$TMP/last-ws-$variant.txt"
    rc=0
    (cd "$TMP/work" && no_proxy CODEX_HOME="$home" OPENAI_API_KEY="$CODEX_CLIENT_KEY" \
        RUST_LOG="${E2E_CODEX_RUST_LOG:-warn}" \
        timeout -k 5 "$CODEX_TIMEOUT" "$CODEX" exec --skip-git-repo-check --ephemeral --sandbox read-only \
        -o "$TMP/last-ws-$variant.txt" "$prompt" \
        </dev/null >"$TMP/codex-ws-$variant.out" 2>"$TMP/codex-ws-$variant.err") || rc=$?
    sleep 0.3
    sessions=$(( $(ws_sessions) - sessions_before ))
    if [ "$rc" -eq 0 ] && grep -q "ws-$variant-pong" "$TMP/last-ws-$variant.txt" 2>/dev/null && [ "$sessions" -ge 1 ]; then
        pass "codex over WebSocket ($variant): answered ws-$variant-pong through $sessions WebSocket session(s)"
    else
        fail "codex over WebSocket ($variant): rc=$rc sessions=$sessions last='$(head -c 300 "$TMP/last-ws-$variant.txt" 2>/dev/null || echo '<no file>')' stderr: $(tail -c 600 "$TMP/codex-ws-$variant.err" 2>/dev/null)"
    fi
done
if grep -q 'websocket session relayed' "$TMP/gateway.err"; then
    pass "codex over WebSocket (s1): relayed to the upstream's own WebSocket mode (mock-llm speaks it)"
else
    fail "codex over WebSocket (s1): no relayed session in the gateway log"
fi
if sed 's/\x1b\[[0-9;]*m//g' "$TMP/gateway.err" | grep 'websocket session ended' | grep -Eq 'frames=([3-9]|[1-9][0-9])'; then
    pass "codex over WebSocket (claude): the tool round trip went over one connection (3+ frames)"
else
    fail "codex over WebSocket (claude): no session with a tool round trip: $(grep 'websocket session ended' "$TMP/gateway.err" | tail -n 3)"
fi

# ---------------------------------------------------------------------------
# 5d. Codex over HTTPS to the TLS listener, trusting the generated self-signed certificate
#     through SSL_CERT_FILE (as the WSO2 how-to does): SSE and WebSocket (wss).
# ---------------------------------------------------------------------------
if no_proxy curl -s -o /dev/null -w '%{http_code}' --cacert "$GW_CERT" "$GW_TLS_URL/" | grep -q 404 \
   && ! no_proxy curl -s -o /dev/null "$GW_TLS_URL/" 2>/dev/null; then
    pass "TLS listener: curl trusts it with --cacert (Kong's 404 for /), and refuses it without"
else
    fail "TLS listener: unexpected curl results against $GW_TLS_URL"
fi
for variant in sse wss; do
    home=$TMP/codex-home-https-$variant
    mkdir -p "$home"
    ws=false
    [ "$variant" = wss ] && ws=true
    printf '%s\n' 'model = "gpt-4o"' 'model_provider = "gw"' '' '[model_providers.gw]' \
        'name = "gateway"' "base_url = \"$GW_TLS_URL/codex\"" 'env_key = "OPENAI_API_KEY"' \
        'wire_api = "responses"' "supports_websockets = $ws" 'request_max_retries = 0' \
        'stream_max_retries = 0' >"$home/config.toml"
    sessions_before=$(ws_sessions)
    rm -f "$TMP/last-https-$variant.txt"
    rc=0
    (cd "$TMP/work" && no_proxy CODEX_HOME="$home" OPENAI_API_KEY="$CODEX_CLIENT_KEY" SSL_CERT_FILE="$GW_CERT" \
        RUST_LOG="${E2E_CODEX_RUST_LOG:-warn}" \
        timeout -k 5 "$CODEX_TIMEOUT" "$CODEX" exec --skip-git-repo-check --ephemeral --sandbox read-only \
        -o "$TMP/last-https-$variant.txt" "Answer with one word. [mock:reply=https-$variant-pong]" \
        </dev/null >"$TMP/codex-https-$variant.out" 2>"$TMP/codex-https-$variant.err") || rc=$?
    sleep 0.3
    sessions=$(( $(ws_sessions) - sessions_before ))
    want_sessions=0
    [ "$variant" = wss ] && want_sessions=1
    if [ "$rc" -eq 0 ] && grep -q "https-$variant-pong" "$TMP/last-https-$variant.txt" 2>/dev/null \
       && { [ "$want_sessions" -eq 0 ] || [ "$sessions" -ge 1 ]; }; then
        pass "codex over HTTPS ($variant): answered https-$variant-pong via $GW_TLS_URL with SSL_CERT_FILE"
    else
        fail "codex over HTTPS ($variant): rc=$rc sessions=$sessions last='$(head -c 300 "$TMP/last-https-$variant.txt" 2>/dev/null || echo '<no file>')' stderr: $(tail -c 600 "$TMP/codex-https-$variant.err" 2>/dev/null)"
    fi
done

# ---------------------------------------------------------------------------
# 5e. S4 governance with the real Codex CLI: the application's key in an `ApiKey` header
#     (env_http_headers), a decorator, PII masking with the answer restored, a token quota.
#     Without the key Codex must fail with the gateway's 401.
# ---------------------------------------------------------------------------
GOV_LOG=$TMP/logs/gov.log
home=$TMP/codex-home-gov
mkdir -p "$home"
printf '%s\n' 'model = "gpt-4o"' 'model_provider = "gw"' '' '[model_providers.gw]' \
    'name = "gateway"' "base_url = \"$GW_URL/codex-gov\"" 'wire_api = "responses"' \
    'env_http_headers = { "ApiKey" = "E2E_GOV_API_KEY" }' \
    'http_headers = { "x-mock" = "reply=gov-pong for [EMAIL_1] about [TICKET_1]" }' \
    'request_max_retries = 0' 'stream_max_retries = 0' >"$home/config.toml"
gov_prompt="Answer with one word. My e-mail is bob.s4@example.com and my ticket is ACME-4242."
before=$(log_lines "$GOV_LOG")
rm -f "$TMP/last-gov.txt"
rc=0
(cd "$TMP/work" && no_proxy CODEX_HOME="$home" E2E_GOV_API_KEY="$GOV_KEY" OPENAI_API_KEY="" \
    RUST_LOG="${E2E_CODEX_RUST_LOG:-warn}" \
    timeout -k 5 "$CODEX_TIMEOUT" "$CODEX" exec --skip-git-repo-check --ephemeral --sandbox read-only \
    -o "$TMP/last-gov.txt" "$gov_prompt" \
    </dev/null >"$TMP/codex-gov.out" 2>"$TMP/codex-gov.err") || rc=$?
if [ "$rc" -eq 0 ] && grep -q 'gov-pong for bob.s4@example.com about ACME-4242' "$TMP/last-gov.txt" 2>/dev/null; then
    pass "S4 codex with ApiKey: answered, and the masked e-mail and ticket came back restored"
else
    fail "S4 codex with ApiKey: rc=$rc last='$(head -c 300 "$TMP/last-gov.txt" 2>/dev/null || echo '<no file>')' stderr: $(tail -c 600 "$TMP/codex-gov.err" 2>/dev/null)"
fi
sleep 0.3
if [ "$(log_lines "$GOV_LOG")" -gt "$before" ]; then
    tail -n +"$((before + 1))" "$GOV_LOG" >"$TMP/gov-new.log"
    if grep -q '"username":"codex-app"' "$TMP/gov-new.log"; then
        pass "S4 file-log: the request is attributed to consumer codex-app"
    else
        fail "S4 file-log: no consumer codex-app in $(head -c 400 "$TMP/gov-new.log")"
    fi
    if grep -q 'bob.s4@example.com' "$TMP/gov-new.log" || grep -q 'ACME-4242' "$TMP/gov-new.log" \
       || grep -q "$GOV_KEY" "$TMP/gov-new.log"; then
        fail "S4 file-log: the e-mail, ticket or key reached the log (so the upstream saw them)"
    else
        pass "S4 file-log: the upstream request held [EMAIL_1]/[TICKET_1], never the values or the key"
    fi
    if grep -q 'Follow the ACME engineering policy.' "$TMP/gov-new.log"; then
        pass "S4 file-log: the decorator's system text was sent upstream"
    else
        fail "S4 file-log: the decorator's text is not in the logged request"
    fi
else
    fail "S4 file-log: no record written to $GOV_LOG"
fi
rc=0
(cd "$TMP/work" && no_proxy CODEX_HOME="$home" OPENAI_API_KEY="" \
    RUST_LOG="${E2E_CODEX_RUST_LOG:-warn}" \
    timeout -k 5 "$CODEX_TIMEOUT" "$CODEX" exec --skip-git-repo-check --ephemeral --sandbox read-only \
    -o "$TMP/last-gov-nokey.txt" "$gov_prompt" \
    </dev/null >"$TMP/codex-gov-nokey.out" 2>"$TMP/codex-gov-nokey.err") || rc=$?
seen=$(grep -Eio '401[^"]{0,80}|unauthorized[^"]{0,80}|No API key found in request' \
    "$TMP/codex-gov-nokey.err" "$TMP/codex-gov-nokey.out" 2>/dev/null | head -n 1)
if [ "$rc" -ne 0 ] && [ -n "$seen" ]; then
    pass "S4 codex without ApiKey: refused, codex shows: $seen"
else
    fail "S4 codex without ApiKey: rc=$rc, no 401 visible: $(tail -c 600 "$TMP/codex-gov-nokey.err" 2>/dev/null)"
fi

# ---------------------------------------------------------------------------
# 5f. Claude Code (print mode) on providers without Anthropic's Messages API: Kong's
#     llm_format anthropic routes, the gateway translating Messages to OpenAI chat and to
#     Bedrock Converse. A text answer, then a tool round trip: the mock calls Bash, Claude
#     Code runs it and sends the output back as a tool_result.
# ---------------------------------------------------------------------------
CC_LOG=$TMP/logs/claude-code.log
run_claude() { # name route model prompt
    local name=$1 route=$2 model=$3 prompt=$4 home=$TMP/claude-home-$1
    mkdir -p "$home"
    (cd "$TMP/work" && no_proxy env -i PATH="$PATH" HOME="$home" \
        ANTHROPIC_BASE_URL="$GW_URL/$route" ANTHROPIC_API_KEY="$CURL_CLIENT_KEY" \
        CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1 DISABLE_AUTOUPDATER=1 \
        CLAUDE_CODE_MAX_RETRIES=0 CLAUDE_CODE_DISABLE_NONSTREAMING_FALLBACK=1 \
        timeout -k 5 "$CLAUDE_TIMEOUT" "$CLAUDE" -p "$prompt" --output-format json \
        --model "$model" --tools Bash --allowedTools Bash \
        </dev/null >"$TMP/claude-$name.out" 2>"$TMP/claude-$name.err")
}
claude_result() { # file -> "is_error num_turns result"
    "$PY" -c 'import json,sys; r=json.load(open(sys.argv[1])); print(r.get("is_error"), r.get("num_turns"), r.get("result"))' "$1" 2>/dev/null || true
}
for target in openai:cc-openai:gpt-4o bedrock:cc-bedrock:anthropic.claude-sonnet-4-5-v1:0; do
    name=${target%%:*}; rest=${target#*:}; route=${rest%%:*}; model=${rest#*:}
    before=$(log_lines "$CC_LOG")
    rc=0
    run_claude "$name-text" "$route" "$model" "Say hello. [mock:reply=cc-$name-hello]" || rc=$?
    got=$(claude_result "$TMP/claude-$name-text.out")
    if [ "$rc" -eq 0 ] && [ "$got" = "False 1 cc-$name-hello" ]; then
        pass "claude code via $name: text answer cc-$name-hello"
    else
        fail "claude code via $name: rc=$rc result='$got' out: $(head -c 400 "$TMP/claude-$name-text.out" 2>/dev/null) err: $(tail -c 400 "$TMP/claude-$name-text.err" 2>/dev/null)"
    fi
    rc=0
    run_claude "$name-tool" "$route" "$model" "Run a command, then answer. [mock:tool=Bash] [mock:reply=cc-$name-done]" || rc=$?
    got=$(claude_result "$TMP/claude-$name-tool.out")
    if [ "$rc" -eq 0 ] && [ "$got" = "False 2 cc-$name-done" ]; then
        pass "claude code via $name: tool round trip answered cc-$name-done in 2 turns"
    else
        fail "claude code via $name: tool round trip rc=$rc result='$got' out: $(head -c 400 "$TMP/claude-$name-tool.out" 2>/dev/null) err: $(tail -c 400 "$TMP/claude-$name-tool.err" 2>/dev/null)"
    fi
    sleep 0.5
    if "$PY" "$HERE/check_claude_log.py" "$CC_LOG" "$before" "$name" >"$TMP/claude-$name.check" 2>&1; then
        pass "claude code via $name: logged with usage, and Bash's output (mock-tool-ran) went back as a tool_result"
    else
        fail "claude code via $name: file-log: $(tail -n 2 "$TMP/claude-$name.check")"
    fi
done

# ---------------------------------------------------------------------------
# 6. S2 + chat/embeddings/responses with the OpenAI Python SDK
# ---------------------------------------------------------------------------
no_proxy timeout -k 5 "$SDK_TIMEOUT" "$PY" "$HERE/sdk_checks.py" --gateway "$GW_URL" \
    --log "$SDK_LOG" --api-key "$SDK_CLIENT_KEY" --secret "$PROVIDER_KEY" \
    >"$TMP/sdk.out" 2>&1 && rc=0 || rc=$?
cat "$TMP/sdk.out"
[ "$rc" -ne 124 ] || fail "SDK: sdk_checks.py timed out after ${SDK_TIMEOUT}s"
count_results "$TMP/sdk.out" "$rc" "SDK"

# ---------------------------------------------------------------------------
# 6b. OpenAI's other APIs (Kong's files, batches, assistants, audio, image and video route
#     types) with the OpenAI Python SDK through the gateway: the checks mock-llm's own SDK
#     smoke script makes, against the gateway's routes (and Azure's paths with AzureOpenAI).
# ---------------------------------------------------------------------------
no_proxy timeout -k 5 "$SDK_TIMEOUT" "$PY" "$ROOT/mock-llm/tests/sdk_smoke.py" "$GW_URL/v1" --e2e \
    --veo "$GW_URL/veo/v1" \
    >"$TMP/sdk-apis.out" 2>"$TMP/sdk-apis.err" && rc=0 || rc=$?
cat "$TMP/sdk-apis.out"
[ "$rc" -ne 124 ] || fail "SDK APIs: sdk_smoke.py timed out after ${SDK_TIMEOUT}s"
count_results "$TMP/sdk-apis.out" "$rc" "SDK APIs"
sleep 0.5
"$PY" "$HERE/check_api_log.py" "$TMP/logs/apis.log" "$PROVIDER_KEY" >"$TMP/api-log.out" 2>&1 && rc=0 || rc=$?
cat "$TMP/api-log.out"
count_results "$TMP/api-log.out" "$rc" "API file-log"

# ---------------------------------------------------------------------------
# 6c. MCP (ai-mcp-proxy) with the official MCP Python SDK: a REST API as tools, an MCP
#     server behind the gateway, and Kong's ACLs by consumer group.
# ---------------------------------------------------------------------------
no_proxy timeout -k 5 "$SDK_TIMEOUT" "$PY" "$HERE/mcp_checks.py" --gateway "$GW_URL" \
    >"$TMP/mcp.out" 2>"$TMP/mcp.err" && rc=0 || rc=$?
cat "$TMP/mcp.out"
[ "$rc" -ne 124 ] || fail "MCP: mcp_checks.py timed out after ${SDK_TIMEOUT}s"
[ "$rc" -eq 0 ] || tail -n 20 "$TMP/mcp.err"
count_results "$TMP/mcp.out" "$rc" "MCP"
sleep 0.5
if "$PY" - "$TMP/logs/mcp.log" <<'EOF' >"$TMP/mcp-audit.out" 2>&1; then
import json, sys
audits = [a for line in open(sys.argv[1]) for a in json.loads(line).get("ai", {}).get("mcp", {}).get("audit", [])]
want = [("Get users", "allow", "mcp-admin", "consumer_group"), ("Get users", "deny", "mcp-bob", "consumer")]
seen = [(a["primitive_name"], a["action"], a["consumer"]["name"], a["consumer"]["identifier"]) for a in audits]
missing = [w for w in want if w not in seen]
assert not missing, f"missing {missing}; audit entries: {seen}"
EOF
    pass "MCP: the file-log's ai.mcp.audit names the consumer (or group) and the tool of each ACL decision"
else
    fail "MCP: audit log: $(tail -n 3 "$TMP/mcp-audit.out")"
fi

# ---------------------------------------------------------------------------
# 7. Observability: Prometheus text at /metrics, usage analytics from this run, and the
#    dashboard rendered by headless Chromium (Debian's package, installed when missing).
# ---------------------------------------------------------------------------
sleep 1   # the analytics writer flushes every 500 ms
if no_proxy curl -sf "$GW_ADMIN_URL/metrics" -o "$TMP/metrics.txt" \
   && grep -q '^kong_ai_llm_tokens_total{' "$TMP/metrics.txt" \
   && grep -q '^kong_http_requests_total{' "$TMP/metrics.txt"; then
    pass "metrics: /metrics has kong_http_requests_total and kong_ai_llm_tokens_total from this run"
else
    fail "metrics: /metrics lacks the expected families: $(head -c 400 "$TMP/metrics.txt" 2>/dev/null)"
fi
if no_proxy curl -sf "$GW_ADMIN_URL/analytics/usage?group_by=consumer&bucket=minute" -o "$TMP/usage.json" \
   && "$PY" -c 'import json,sys; v=json.load(open(sys.argv[1])); t=v["totals"]; assert t["requests"]>0 and t["total_tokens"]>0, t; assert any(s["key"]=="codex-app" for s in v["series"]), [s["key"] for s in v["series"]]' "$TMP/usage.json"; then
    pass "analytics: /analytics/usage totals this run's requests and tokens, with consumer codex-app"
else
    fail "analytics: unexpected /analytics/usage: $(head -c 400 "$TMP/usage.json" 2>/dev/null)"
fi
CHROMIUM=$(command -v chromium || true)
if [ -z "$CHROMIUM" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    log "apt-get install chromium (for the dashboard check)"
    (DEBIAN_FRONTEND=noninteractive timeout -k 10 "$INSTALL_TIMEOUT" apt-get install -y -q chromium) >"$TMP/apt.log" 2>&1 \
        || (DEBIAN_FRONTEND=noninteractive timeout -k 10 "$INSTALL_TIMEOUT" apt-get update -q \
            && DEBIAN_FRONTEND=noninteractive timeout -k 10 "$INSTALL_TIMEOUT" apt-get install -y -q chromium) >>"$TMP/apt.log" 2>&1 || true
    CHROMIUM=$(command -v chromium || true)
fi
if [ -z "$CHROMIUM" ]; then
    fail "dashboard: no chromium (apt-get install chromium failed: $(tail -n 3 "$TMP/apt.log" 2>/dev/null))"
else
    chrome() { timeout -k 5 90 "$CHROMIUM" --headless=new --no-sandbox --disable-gpu --disable-dev-shm-usage \
        --hide-scrollbars --user-data-dir="$TMP/chromium-profile" --virtual-time-budget=15000 "$@"; }
    chrome --dump-dom "$GW_ADMIN_URL/dashboard#range=24h" >"$TMP/dashboard.html" 2>"$TMP/chromium.err" || true
    if "$PY" - "$TMP/dashboard.html" >"$TMP/dashboard.check" 2>&1 <<'PYEOF'
import re, sys
html = open(sys.argv[1], encoding="utf-8").read()
assert re.search(r'<body[^>]*data-ready="true"', html), "body not data-ready"
charts = dict(re.findall(r'data-chart="([a-z-]+)"[^>]*?data-rendered="(true|false)"', html))
points = dict(re.findall(r'data-chart="([a-z-]+)"[^>]*?data-points="(\d+)"', html))
need = ["tokens-by-consumer", "tokens-by-model", "requests", "latency", "top-consumers", "top-models"]
missing = [c for c in need if charts.get(c) != "true" or int(points.get(c, "0")) == 0]
assert not missing, f"not rendered with data: {missing}; seen {charts} {points}"
print("charts rendered:", ", ".join(f"{c}={points[c]} points" for c in need))
PYEOF
    then
        pass "dashboard: headless Chromium rendered it with this run's data ($(cat "$TMP/dashboard.check"))"
    else
        fail "dashboard: $(cat "$TMP/dashboard.check") chromium: $(tail -c 300 "$TMP/chromium.err" 2>/dev/null)"
    fi
    SHOT=${E2E_SCREENSHOT:-$TMP/dashboard.png}
    chrome --window-size=1600,2200 --screenshot="$SHOT" "$GW_ADMIN_URL/dashboard#range=24h" >/dev/null 2>>"$TMP/chromium.err" || true
    if [ -s "$SHOT" ]; then
        pass "dashboard: screenshot saved to $SHOT ($(wc -c <"$SHOT") bytes)"
    else
        fail "dashboard: no screenshot: $(tail -c 300 "$TMP/chromium.err" 2>/dev/null)"
    fi
fi

finish

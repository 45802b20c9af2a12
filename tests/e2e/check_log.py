#!/usr/bin/env python3
"""S1 file-log assertions for tests/e2e/run.sh (stdlib only).

Looks at the lines the Codex run added to the file-log (after --skip lines) and prints one
`PASS: name` or `FAIL: name: detail` line per check.
"""
import argparse
import json
import time

p = argparse.ArgumentParser()
p.add_argument("--log", required=True)
p.add_argument("--skip", type=int, default=0, help="lines written before the Codex run")
p.add_argument("--mock-host", required=True)
p.add_argument("--mock-port", type=int, required=True)
p.add_argument("--secret", action="append", default=[])
p.add_argument("--wait", type=float, default=10.0, help="seconds to wait for the log line")
args = p.parse_args()


def report(ok, name, detail=""):
    print(f"PASS: {name}" if ok else f"FAIL: {name}: {detail}", flush=True)


def read_lines():
    try:
        with open(args.log, encoding="utf-8") as f:
            return f.read().splitlines()
    except FileNotFoundError:
        return []


def short(v, n=600):
    s = json.dumps(v) if not isinstance(v, str) else v
    return s if len(s) <= n else s[:n] + "…"


# The log phase runs when the body ends, possibly just after the client has finished: wait
# (bounded) for a line from the Codex run whose target is the responses upstream.
def target_of(rec):
    tried = (((rec.get("ai") or {}).get("proxy") or {}).get("tried_targets")) or []
    return tried[0] if tried and isinstance(tried[0], dict) else None


deadline = time.monotonic() + args.wait
records, bad = [], []
while True:
    records, bad = [], []
    for i, line in enumerate(read_lines()[args.skip:]):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except ValueError as e:
            bad.append(f"line {args.skip + i + 1}: {e}")
    if any(target_of(r) for r in records) or time.monotonic() > deadline:
        break
    time.sleep(0.2)

report(not bad and records, "S1 file-log: the Codex run wrote JSON lines",
       f"{len(records)} JSON lines, unparsable: {bad[:3]}")


def matches(rec):
    t = target_of(rec)
    return (
        t is not None
        and t.get("upstream_uri") == "/v1/responses"
        and t.get("provider") == "openai"
        and t.get("host") == args.mock_host
        and t.get("port") == args.mock_port
        and t.get("upstream_scheme") == "http"
    )


hits = [r for r in records if matches(r)]
report(
    bool(hits),
    "S1 file-log: ai.proxy.tried_targets[0] = {upstream_uri: /v1/responses, provider: openai, "
    f"host: {args.mock_host}, port: {args.mock_port}, upstream_scheme: http}}",
    "no such line; tried_targets[0] seen: "
    + short([target_of(r) for r in records]),
)

rec = hits[-1] if hits else (records[-1] if records else {})
proxy = (rec.get("ai") or {}).get("proxy") or {}
usage, meta = proxy.get("usage"), proxy.get("meta")
report(
    isinstance(usage, dict) and usage.get("total_tokens", 0) > 0,
    "S1 file-log: ai.proxy.usage present with total_tokens > 0",
    f"usage={short(usage)}",
)
report(
    isinstance(meta, dict)
    and meta.get("provider_name") == "openai"
    and meta.get("request_model") == "gpt-4o"
    and meta.get("request_mode") == "stream",
    "S1 file-log: ai.proxy.meta present (provider_name openai, request_model gpt-4o, request_mode stream)",
    f"meta={short(meta)}",
)
report(
    (rec.get("response") or {}).get("status") == 200 and "error" not in proxy,
    "S1 file-log: the Codex request was logged with status 200 and no ai.proxy.error",
    f"response.status={(rec.get('response') or {}).get('status')!r} error={short(proxy.get('error'))}",
)

try:
    with open(args.log, encoding="utf-8", errors="replace") as f:
        raw = f.read()
except FileNotFoundError:
    raw = ""
leaked = [s for s in args.secret if s and s in raw]
report(
    raw != "" and not leaked,
    "S1 file-log: no provider or client key anywhere in the log file",
    f"found {leaked!r}" if leaked else "log file missing or empty",
)

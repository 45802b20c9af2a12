#!/usr/bin/env python3
"""Scenario S2 and OpenAI-SDK checks for tests/e2e/run.sh.

Drives the real `openai` Python package against the gateway and prints one `PASS: name` or
`FAIL: name: detail` line per check. Every call has a client timeout and no SDK retries.
"""
import argparse
import base64
import json
import math
import struct
import time
import traceback
import urllib.error
import urllib.request

import openai
from openai import OpenAI

p = argparse.ArgumentParser()
p.add_argument("--gateway", required=True, help="gateway base URL, e.g. http://127.0.0.1:8000")
p.add_argument("--log", required=True, help="file-log of the SDK routes")
p.add_argument("--api-key", default="sk-client")
p.add_argument("--secret", action="append", default=[], help="must never appear in the log")
args = p.parse_args()

TIMEOUT = 30.0
results = []


def report(ok, name, detail=""):
    results.append(ok)
    print(f"PASS: {name}" if ok else f"FAIL: {name}: {detail}", flush=True)


def check(name):
    """Runs the decorated function as one check; an exception or AssertionError fails it."""

    def wrap(fn):
        try:
            fn()
        except AssertionError as e:
            report(False, name, str(e) or "assertion failed")
        except openai.APIStatusError as e:
            body = e.response.text[:600] if e.response is not None else ""
            report(False, name, f"HTTP {e.status_code} from {e.request.url}: {body}")
        except Exception as e:  # noqa: BLE001 - any error is a failed check
            tb = traceback.format_exc(limit=3).strip().splitlines()
            report(False, name, f"{type(e).__name__}: {e} | {' / '.join(tb[-3:])}")
        else:
            report(True, name)
        return fn

    return wrap


def short(v, n=500):
    s = v if isinstance(v, str) else json.dumps(v, default=str)
    return s if len(s) <= n else s[:n] + "…"


def log_records():
    try:
        with open(args.log, encoding="utf-8") as f:
            return [json.loads(l) for l in f if l.strip()]
    except FileNotFoundError:
        return []


def wait_log(pred, secs=10.0):
    """The last log record matching pred, waiting (bounded) for the log phase."""
    deadline = time.monotonic() + secs
    while True:
        hits = [r for r in log_records() if pred(r)]
        if hits or time.monotonic() > deadline:
            return hits[-1] if hits else None
        time.sleep(0.2)


def route_name(rec):
    return (rec.get("route") or {}).get("name")


def meta(rec):
    return (((rec or {}).get("ai") or {}).get("proxy") or {}).get("meta") or {}


# S2: base_url ends with the model; the SDK posts to /gpt-4/chat/completions.
s2 = OpenAI(base_url=f"{args.gateway}/gpt-4", api_key=args.api_key, timeout=TIMEOUT, max_retries=0)
# The other routes live under /sdk (/sdk/embeddings, /sdk/responses).
sdk = OpenAI(base_url=f"{args.gateway}/sdk", api_key=args.api_key, timeout=TIMEOUT, max_retries=0)


@check("S2 SDK chat: base_url=/gpt-4 -> chat.completions.create answers with model gpt-4")
def _():
    r = s2.chat.completions.create(
        model="gpt-4",
        messages=[{"role": "user", "content": "Hi there [mock:reply=s2-dynamic-ok]"}],
    )
    assert r.object == "chat.completion", f"object={r.object!r}"
    assert r.choices and r.choices[0].message.content == "s2-dynamic-ok", (
        f"content={r.choices[0].message.content if r.choices else None!r}")
    assert r.model == "gpt-4", f"response model={r.model!r}"
    assert r.usage and r.usage.total_tokens > 0, f"usage={r.usage!r}"


@check("S2 file-log: the dynamic route logged ai.proxy.meta.request_model == gpt-4")
def _():
    rec = wait_log(lambda r: route_name(r) == "dynamic" and meta(r).get("request_mode") == "oneshot")
    assert rec is not None, f"no log line for route 'dynamic' in {args.log}"
    m = meta(rec)
    assert m.get("request_model") == "gpt-4", f"meta={short(m)}"
    assert m.get("provider_name") == "openai", f"meta={short(m)}"
    t = ((rec.get("ai") or {}).get("proxy") or {}).get("tried_targets") or [{}]
    assert t[0].get("upstream_uri") == "/v1/chat/completions", f"tried_targets={short(t)}"


@check("SDK chat stream: content chunks join to the reply, no usage-only chunk unless asked")
def _():
    chunks = list(s2.chat.completions.create(
        model="gpt-4",
        messages=[{"role": "user", "content": "Stream please [mock:reply=streamed reply from the mock]"}],
        stream=True,
    ))
    assert chunks, "no chunks"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "streamed reply from the mock", f"joined content={text!r}"
    empty = [c for c in chunks if not c.choices]
    assert not empty, f"{len(empty)} chunk(s) with empty choices sent to a client that did not ask: {short(empty[0].model_dump())}"
    with_usage = [c for c in chunks if getattr(c, "usage", None)]
    assert not with_usage, f"usage sent without include_usage: {short(with_usage[0].model_dump())}"
    assert all(c.model == "gpt-4" for c in chunks), f"models={sorted({c.model for c in chunks})}"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"], f"finish_reasons={finishes!r}"


@check("SDK chat stream + stream_options.include_usage: final chunk has choices [] and usage")
def _():
    chunks = list(s2.chat.completions.create(
        model="gpt-4",
        messages=[{"role": "user", "content": "Count [mock:reply=one two three]"}],
        stream=True,
        stream_options={"include_usage": True},
    ))
    assert chunks, "no chunks"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "one two three", f"joined content={text!r}"
    last = chunks[-1]
    assert last.choices == [], f"last chunk choices={short([c.model_dump() for c in last.choices])}"
    u = last.usage
    assert u is not None and u.prompt_tokens > 0 and u.completion_tokens > 0, f"usage={u!r}"
    assert u.total_tokens == u.prompt_tokens + u.completion_tokens, f"usage={u!r}"
    assert sum(1 for c in chunks if not c.choices) == 1, "more than one chunk with empty choices"


@check("SDK chat streams were logged with usage (gateway counted tokens in both streams)")
def _():
    recs = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        recs = [r for r in log_records() if route_name(r) == "dynamic" and meta(r).get("request_mode") == "stream"]
        if len(recs) >= 2:
            break
        time.sleep(0.2)
    assert len(recs) >= 2, f"{len(recs)} stream lines for route 'dynamic'"
    for r in recs[-2:]:
        u = ((r.get("ai") or {}).get("proxy") or {}).get("usage") or {}
        assert u.get("completion_tokens", 0) > 0 and u.get("total_tokens", 0) > 0, f"usage={short(u)}"


@check("SDK embeddings: default base64 encoding decodes to float vectors")
def _():
    raw = sdk.embeddings.with_raw_response.create(
        model="text-embedding-3-small", input=["hello world", "tollgate e2e"]
    )
    sent = json.loads(raw.http_response.request.content)
    assert sent.get("encoding_format") == "base64", f"SDK sent {short(sent)}"
    wire = raw.http_response.json()
    assert isinstance(wire["data"][0]["embedding"], str), (
        f"wire embedding is not a base64 string: {short(wire['data'][0]['embedding'])}")
    decoded = list(struct.unpack(f"<{len(base64.b64decode(wire['data'][0]['embedding'])) // 4}f",
                                 base64.b64decode(wire["data"][0]["embedding"])))
    r = raw.parse()
    assert len(r.data) == 2, f"{len(r.data)} embeddings"
    for d in r.data:
        v = d.embedding
        assert isinstance(v, list) and v and all(isinstance(x, float) and math.isfinite(x) for x in v), (
            f"embedding {d.index} is not a list of finite floats: {short(str(v))}")
        norm = math.sqrt(sum(x * x for x in v))
        assert abs(norm - 1.0) < 1e-3, f"embedding {d.index} norm={norm}"
    assert all(abs(a - b) < 1e-6 for a, b in zip(r.data[0].embedding, decoded)), (
        "SDK-decoded floats differ from the wire base64")
    assert r.model == "text-embedding-3-small", f"model={r.model!r}"
    assert r.usage.prompt_tokens > 0, f"usage={r.usage!r}"


@check("SDK embeddings: float encoding returns the same vectors")
def _():
    a = sdk.embeddings.create(model="text-embedding-3-small", input="hello world")
    b = sdk.embeddings.create(model="text-embedding-3-small", input="hello world", encoding_format="float")
    va, vb = a.data[0].embedding, b.data[0].embedding
    assert len(va) == len(vb) and all(abs(x - y) < 1e-6 for x, y in zip(va, vb)), (
        f"base64 {short(str(va))} != float {short(str(vb))}")


@check("SDK responses.create: output_text is the mock's answer")
def _():
    r = sdk.responses.create(model="gpt-4o", input="Say hi [mock:reply=responses-oneshot-ok]")
    assert r.object == "response", f"object={r.object!r}"
    assert r.output_text == "responses-oneshot-ok", f"output_text={r.output_text!r}"
    assert r.status == "completed", f"status={r.status!r}"
    assert r.usage and r.usage.total_tokens == r.usage.input_tokens + r.usage.output_tokens, f"usage={r.usage!r}"


@check("SDK responses.create(stream=True): output_text.delta events join to the answer, then response.completed")
def _():
    types, deltas, completed = [], [], None
    with sdk.responses.create(
        model="gpt-4o",
        input=[{"role": "user", "content": "Stream it [mock:reply=responses stream ok]"}],
        stream=True,
    ) as stream:
        for ev in stream:
            types.append(ev.type)
            if ev.type == "response.output_text.delta":
                deltas.append(ev.delta)
            elif ev.type == "response.completed":
                completed = ev.response
    assert types and types[0] == "response.created", f"first event={types[:1]!r}"
    assert "".join(deltas) == "responses stream ok", f"deltas={deltas!r}"
    assert "response.output_item.done" in types, f"types={types!r}"
    assert types[-1] == "response.completed", f"last event={types[-1:]!r}"
    assert completed is not None and completed.output_text == "responses stream ok", (
        f"completed.output_text={getattr(completed, 'output_text', None)!r}")
    u = completed.usage
    assert u and u.input_tokens > 0 and u.output_tokens > 0 and u.total_tokens == u.input_tokens + u.output_tokens, (
        f"usage={u!r}")


# The Realtime API over WebSocket: `client.realtime.connect` (openai >= 1.107, the GA
# protocol) or `client.beta.realtime.connect` (older releases, the beta protocol) opens
# <base_url>/realtime?model=… with the SDK's Authorization header.
rt = OpenAI(base_url=f"{args.gateway}/v1", api_key=args.api_key, timeout=TIMEOUT, max_retries=0)
rt_usage = {}


@check("SDK realtime.connect: session, conversation item, response deltas and response.done usage")
def _():
    ga = getattr(rt, "realtime", None)
    realtime = ga or rt.beta.realtime
    # The GA protocol names the session's type; the beta one has no such member.
    session = {"type": "realtime", "instructions": "Be brief."} if ga else {"instructions": "Be brief."}
    with realtime.connect(model="gpt-realtime") as conn:
        first = conn.recv()
        assert first.type == "session.created", f"first event={first.type!r}"
        conn.send({"type": "session.update", "session": session})
        ev = conn.recv()
        assert ev.type == "session.updated", f"after session.update: {ev.type!r}"
        conn.send({"type": "conversation.item.create", "item": {
            "type": "message", "role": "user",
            "content": [{"type": "input_text", "text": "Hi [mock:reply=realtime ok]"}]}})
        ev = conn.recv()
        assert ev.type == "conversation.item.created", f"after the item: {ev.type!r}"
        conn.send({"type": "response.create"})
        types, deltas, done = [], [], None
        deadline = time.monotonic() + TIMEOUT
        while done is None and time.monotonic() < deadline:
            ev = conn.recv()
            types.append(ev.type)
            if ev.type in ("response.output_text.delta", "response.text.delta"):
                deltas.append(ev.delta)
            elif ev.type == "response.done":
                done = ev.response
    assert types and types[0] == "response.created", f"types={types!r}"
    assert "".join(deltas) == "realtime ok", f"deltas={deltas!r}"
    assert done is not None and done.status == "completed", f"types={types!r}"
    u = done.usage
    assert u and u.total_tokens == u.input_tokens + u.output_tokens > 0, f"usage={u!r}"
    rt_usage["total"] = u.total_tokens


@check("SDK realtime file-log: one record for the response, with its usage and model")
def _():
    rec = wait_log(lambda r: route_name(r) == "sdk-realtime")
    assert rec is not None, f"no log line for route 'sdk-realtime' in {args.log}"
    ai = (rec.get("ai") or {}).get("proxy") or {}
    usage = ai.get("usage") or {}
    assert usage.get("total_tokens") == rt_usage.get("total"), f"usage={short(usage)} want {rt_usage}"
    assert meta(rec).get("request_model") == "gpt-realtime", f"meta={short(meta(rec))}"
    tried = (ai.get("tried_targets") or [{}])[0]
    assert tried.get("upstream_uri") == "/v1/realtime?model=gpt-realtime", f"tried={short(tried)}"
    assert tried.get("route_type") == "realtime/v1/realtime", f"tried={short(tried)}"


@check("SDK realtime: a plain HTTP request on the realtime route is 426 with a JSON body")
def _():
    req = urllib.request.Request(f"{args.gateway}/v1/realtime?model=gpt-realtime")
    try:
        urllib.request.urlopen(req, timeout=TIMEOUT)
        raise AssertionError("expected HTTP 426")
    except urllib.error.HTTPError as e:
        assert e.code == 426, f"status={e.code}"
        body = json.loads(e.read() or b"{}")
        assert (body.get("error") or {}).get("code") == "websocket_required", f"body={short(body)}"


@check("SDK file-log: every SDK request logged with status 200 and no key in the log")
def _():
    want = {"dynamic": 3, "sdk-embeddings": 3, "sdk-responses": 2, "sdk-realtime": 1}
    deadline = time.monotonic() + 10
    while True:
        recs = log_records()
        counts = {k: sum(1 for r in recs if route_name(r) == k) for k in want}
        if all(counts[k] >= n for k, n in want.items()) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert all(counts[k] >= n for k, n in want.items()), f"lines per route {counts}, want {want}"
    # The realtime route's 426 (a plain GET, on purpose) is the one expected refusal.
    expected = {("sdk-realtime", 426)}
    bad = [(route_name(r), (r.get("response") or {}).get("status")) for r in recs
           if (r.get("response") or {}).get("status") != 200
           and (route_name(r), (r.get("response") or {}).get("status")) not in expected]
    assert not bad, f"non-200 lines: {bad}"
    with open(args.log, encoding="utf-8", errors="replace") as f:
        raw = f.read()
    leaked = [s for s in [args.api_key, *args.secret] if s and s in raw]
    assert not leaked, f"found {leaked!r} in {args.log}"


print(f"# SDK checks with openai-python {openai.__version__}: {sum(results)} ok, "
      f"{len(results) - sum(results)} not ok", flush=True)

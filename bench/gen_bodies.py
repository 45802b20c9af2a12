#!/usr/bin/env python3
"""Writes the request bodies of the benchmarks into a directory.

    gen_bodies.py OUTDIR [--hold-delay-ms 500]

Each is a ~1 KB chat request (system + user message, `model` set). mock-llm reads its
`[mock:...]` markers from the prompt:

  chat.json    non-streaming
  stream.json  streaming, 20 content chunks (role chunk + 20 + finish chunk + [DONE])
  paced.json   streaming, 20 chunks, 5 ms between events; asks for include_usage itself
  hold.json    streaming, 20 chunks, --hold-delay-ms between events (a ~10 s stream at 500);
               asks for include_usage itself

paced/hold ask for the usage chunk themselves: mock-llm waits chunk_delay_ms before every
event, and the gateway (log_statistics on) asks upstream for the usage chunk when the client
did not, which would make its upstream stream one event (one delay) longer than nginx's and
direct's. With the client asking, all three paths get the same events from the mock.
stream.json does not ask, so the c=16 case exercises the gateway's add-and-strip path.
"""

import argparse
import json
import os
import sys

SYSTEM = (
    "You are a careful assistant for an engineering team. Answer concisely, prefer concrete "
    "steps over general advice, and say so when you are unsure instead of guessing. When code "
    "is involved, show the smallest change that fixes the problem and explain why it works. "
    "Keep answers under two hundred words unless the user asks for more detail. Use the metric "
    "system, ISO dates and 24-hour times. Do not repeat the question back to the user. If the "
    "request is ambiguous, state the assumption you made in one sentence at the start. Never "
    "invent API names, flags or file paths; if you do not know one, say what to look up. "
    "Format lists as short bullet points and avoid tables unless comparing three or more items."
)
USER = (
    "Our service returns HTTP 502 for about one request in a thousand under load, always on "
    "connections that were idle for a while. What are the three most likely causes and how do "
    "we confirm each one?"
)


def body(markers: str, stream: bool, include_usage: bool) -> dict:
    user = f"{USER} {markers}".rstrip()
    out = {
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": user},
        ],
        "temperature": 0.2,
        "max_tokens": 256,
    }
    if stream:
        out["stream"] = True
        if include_usage:
            out["stream_options"] = {"include_usage": True}
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("outdir")
    parser.add_argument("--hold-delay-ms", type=int, default=500)
    args = parser.parse_args()
    bodies = {
        "chat.json": body("", False, False),
        "stream.json": body("[mock:chunks=20]", True, False),
        "paced.json": body("[mock:chunks=20][mock:chunk_delay_ms=5]", True, True),
        "hold.json": body(
            f"[mock:chunks=20][mock:chunk_delay_ms={args.hold_delay_ms}]", True, True
        ),
    }
    os.makedirs(args.outdir, exist_ok=True)
    sizes = {}
    for name, value in bodies.items():
        data = json.dumps(value, separators=(",", ":")).encode()
        with open(os.path.join(args.outdir, name), "wb") as f:
            f.write(data)
        sizes[name] = len(data)
    json.dump(sizes, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

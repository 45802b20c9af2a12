#!/usr/bin/env python3
"""Drives mock-llm's non-chat OpenAI APIs with the official OpenAI Python SDK.

Not part of CI; a check that the mock is faithful enough for the real client.

    cargo run -p mock-llm -- --listen 127.0.0.1:9000 &
    python3 mock-llm/tests/sdk_smoke.py http://127.0.0.1:9000/v1

Needs `pip install openai`. Prints one line per SDK call and exits non-zero if
any failed. The gateway's end-to-end run (tests/e2e/run.sh) drives the same calls
through Tollgate: `--e2e` prints `PASS: …` / `FAIL: …` lines, `--azure URL` names
the Azure endpoint (default: the base URL without `/v1`), and `--veo URL` the base URL of a
Veo route (the Videos API translated to Gemini's jobs).
"""

import base64
import io
import json
import sys
import tempfile
import traceback
import urllib.request
import warnings
from pathlib import Path

from openai import AzureOpenAI, BadRequestError, NotFoundError, OpenAI

RESULTS = []


def check(name):
    """Runs the decorated function at once and records how it went."""

    def wrap(fn):
        try:
            detail = fn()
            RESULTS.append((name, True, detail or ""))
        except Exception as exc:  # noqa: BLE001 - report every failure
            RESULTS.append((name, False, f"{type(exc).__name__}: {exc}"))
            traceback.print_exc()
        return fn

    return wrap


def main(base_url, azure_endpoint=None, e2e=False, veo_url=None):
    # The Assistants and Sora APIs are deprecated; the SDK says so on every call.
    warnings.simplefilter("ignore", DeprecationWarning)
    client = OpenAI(base_url=base_url, api_key="sk-mock", max_retries=0)
    state = {}

    @check("files.create")
    def _():
        f = client.files.create(file=("notes.txt", b"hello\x00\xff world"), purpose="assistants")
        assert f.id.startswith("file-mock-") and f.bytes == 13 and f.filename == "notes.txt", f
        assert f.status == "processed" and f.purpose == "assistants"
        state["file"] = f.id
        return f.id

    @check("files.retrieve")
    def _():
        f = client.files.retrieve(state["file"])
        assert f.id == state["file"] and f.object == "file"

    @check("files.content")
    def _():
        data = client.files.content(state["file"]).read()
        assert data == b"hello\x00\xff world", data

    @check("files.list")
    def _():
        ids = [f.id for f in client.files.list()]
        assert state["file"] in ids, ids

    @check("files.delete")
    def _():
        d = client.files.delete(state["file"])
        assert d.deleted and d.id == state["file"]
        try:
            client.files.retrieve(state["file"])
        except NotFoundError as e:
            assert "No such File object" in str(e)
            return "then 404"
        raise AssertionError("retrieve after delete did not 404")

    @check("batches.create")
    def _():
        lines = [
            {"custom_id": f"req-{i}", "method": "POST", "url": "/v1/chat/completions",
             "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"say {i}"}]}}
            for i in range(3)
        ]
        jsonl = "\n".join(json.dumps(line) for line in lines).encode()
        f = client.files.create(file=("batch.jsonl", io.BytesIO(jsonl)), purpose="batch")
        b = client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions",
                                  completion_window="24h", metadata={"suite": "smoke"})
        assert b.status == "completed" and b.request_counts.total == 3, b
        assert b.request_counts.completed == 3 and b.metadata == {"suite": "smoke"}
        out = client.files.content(b.output_file_id).text.splitlines()
        rows = [json.loads(line) for line in out]
        assert [r["custom_id"] for r in rows] == ["req-0", "req-1", "req-2"]
        assert rows[0]["response"]["body"]["object"] == "chat.completion"
        assert rows[0]["response"]["body"]["usage"]["total_tokens"] > 0
        state["batch"] = b.id
        return f"{b.id}, {len(rows)} output lines"

    @check("batches.retrieve")
    def _():
        b = client.batches.retrieve(state["batch"])
        assert b.id == state["batch"] and b.status == "completed"

    @check("batches.list")
    def _():
        assert state["batch"] in [b.id for b in client.batches.list()]

    @check("batches.cancel")
    def _():
        b = client.batches.cancel(state["batch"])
        assert b.status == "cancelled" and b.cancelled_at, b

    @check("batches.create (unknown file -> 400)")
    def _():
        try:
            client.batches.create(input_file_id="file-nope", endpoint="/v1/chat/completions",
                                  completion_window="24h")
        except BadRequestError as e:
            return str(e.body)
        raise AssertionError("no 400")

    @check("images.generate")
    def _():
        r = client.images.generate(model="gpt-image-1", prompt="a red cat", n=2, size="1024x1024")
        assert len(r.data) == 2 and r.data[0].b64_json.startswith("iVBORw0KGgo")
        assert r.usage.total_tokens > 0 and r.usage.input_tokens_details.text_tokens == 3
        return f"usage {r.usage.total_tokens}"

    @check("images.generate (url)")
    def _():
        r = client.images.generate(model="dall-e-3", prompt="a dog", response_format="url")
        with urllib.request.urlopen(r.data[0].url) as response:
            png = response.read()
        assert png.startswith(b"\x89PNG"), png[:8]

    @check("images.edit")
    def _():
        png = client.images.generate(model="gpt-image-1", prompt="x").data[0].b64_json
        raw = base64.b64decode(png)
        r = client.images.edit(model="gpt-image-1", image=[("a.png", raw, "image/png"),
                                                           ("b.png", raw, "image/png")],
                               prompt="make it blue", mask=("m.png", raw, "image/png"))
        assert r.data[0].b64_json and r.usage.input_tokens_details.image_tokens > 0
        r = client.images.edit(model="gpt-image-1", image=("a.png", raw, "image/png"), prompt="x")
        assert len(r.data) == 1

    @check("audio.speech.create (streamed to a file)")
    def _():
        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / "out.mp3"
            speech = client.audio.speech.with_streaming_response
            with speech.create(model="gpt-4o-mini-tts", voice="alloy",
                               input="Hello there, world.") as response:
                assert response.headers["content-type"] == "audio/mpeg"
                response.stream_to_file(path)
            size = path.stat().st_size
            assert size > 1000 and path.read_bytes()[:2] == b"\xff\xfb"
            with speech.create(model="tts-1", voice="alloy", input="Hello there, world.") as response:
                chunks = list(response.iter_bytes(chunk_size=None))
            wav = client.audio.speech.create(model="tts-1", voice="nova", input="hi",
                                             response_format="wav")
            assert wav.content[:4] == b"RIFF"
            return f"{size} bytes in {len(chunks)} chunk(s)"

    @check("audio.transcriptions.create")
    def _():
        t = client.audio.transcriptions.create(model="gpt-4o-transcribe",
                                               file=("talk.mp3", b"\xff\xfb" * 600))
        assert t.text == "mock transcript of talk.mp3 (1200 bytes)", t.text
        assert t.usage.total_tokens > 0
        text = client.audio.transcriptions.create(model="whisper-1", file=("a.wav", b"x"),
                                                  response_format="text")
        assert text.strip() == "mock transcript of a.wav (1 bytes)", text
        v = client.audio.transcriptions.create(model="whisper-1", file=("a.wav", b"x"),
                                               response_format="verbose_json",
                                               timestamp_granularities=["word"])
        assert v.segments and v.words
        return t.text

    @check("audio.transcriptions.create (stream)")
    def _():
        events = list(client.audio.transcriptions.create(
            model="gpt-4o-mini-transcribe", file=("a.wav", b"xy"), stream=True))
        assert events[-1].type == "transcript.text.done", events
        return f"{len(events)} events"

    @check("audio.translations.create")
    def _():
        t = client.audio.translations.create(model="whisper-1", file=("fr.m4a", b"abc"))
        assert t.text == "mock transcript of fr.m4a (3 bytes)", t

    @check("beta.assistants.create/retrieve")
    def _():
        a = client.beta.assistants.create(model="gpt-4o", name="Helper", instructions="Be nice.")
        assert a.id.startswith("asst_mock_") and a.name == "Helper" and a.tools == []
        assert client.beta.assistants.retrieve(a.id).instructions == "Be nice."
        return a.id

    @check("beta.threads.create + messages")
    def _():
        t = client.beta.threads.create(messages=[{"role": "user", "content": "first"}])
        m = client.beta.threads.messages.create(t.id, role="user", content="second")
        assert m.content[0].text.value == "second"
        msgs = client.beta.threads.messages.list(t.id, order="asc")
        assert [x.content[0].text.value for x in msgs] == ["first", "second"]
        assert client.beta.threads.retrieve(t.id).id == t.id
        return t.id

    @check("videos.create/retrieve/download_content/delete")
    def _():
        v = client.videos.create(model="sora-2", prompt="a sunrise", seconds="8", size="1280x720")
        assert v.status == "completed" and v.progress == 100 and v.seconds == "8", v
        assert client.videos.retrieve(v.id).size == "1280x720"
        mp4 = client.videos.download_content(v.id).read()
        assert mp4[4:8] == b"ftyp" and len(mp4) > 4096
        assert v.id in [x.id for x in client.videos.list()]
        assert client.videos.delete(v.id).deleted
        return v.id

    @check("AzureOpenAI files.create + audio.speech (deployment path)")
    def _():
        azure = AzureOpenAI(azure_endpoint=azure_endpoint or base_url.removesuffix("/v1"), api_key="k",
                            api_version="2024-10-21", max_retries=0)
        raw = azure.files.with_raw_response.create(file=("a.jsonl", b"{}"), purpose="batch")
        assert raw.http_request.url.path == "/openai/files", raw.http_request.url
        assert azure.files.retrieve(raw.parse().id).filename == "a.jsonl"
        raw = azure.audio.speech.with_raw_response.create(model="tts", voice="alloy", input="hi")
        assert raw.http_request.url.path == "/openai/deployments/tts/audio/speech"
        assert raw.content[:2] == b"\xff\xfb"
        return str(raw.http_request.url)

    if veo_url:
        @check("videos on Veo (gemini, translated): create/retrieve/download_content")
        def _():
            veo = OpenAI(base_url=veo_url, api_key="unused", max_retries=0)
            v = veo.videos.create(model="veo-3.1-generate-preview", prompt="a sunrise",
                                  seconds="8", size="1280x720")
            assert v.status == "queued" and v.id.startswith("video_") and v.seconds == "8", v
            done = veo.videos.retrieve(v.id)
            assert done.status == "completed" and done.progress == 100, done
            mp4 = veo.videos.download_content(v.id).read()
            assert mp4[4:12] == b"ftypmp42", mp4[:16]
            return v.id

    width = max(len(name) for name, _, _ in RESULTS)
    for name, good, detail in RESULTS:
        if e2e:
            print(f"PASS: sdk api {name}" if good else f"FAIL: sdk api {name}: {detail}")
        else:
            print(f"{'ok  ' if good else 'FAIL'} {name:<{width}}  {detail}")
    return 0 if all(good for _, good, _ in RESULTS) else 1


if __name__ == "__main__":
    args = sys.argv[1:]
    e2e = "--e2e" in args
    azure = None
    if "--azure" in args:
        azure = args[args.index("--azure") + 1]
        del args[args.index("--azure"):args.index("--azure") + 2]
    veo = None
    if "--veo" in args:
        veo = args[args.index("--veo") + 1]
        del args[args.index("--veo"):args.index("--veo") + 2]
    args = [a for a in args if a != "--e2e"]
    sys.exit(main(args[0] if args else "http://127.0.0.1:9000/v1", azure, e2e, veo))

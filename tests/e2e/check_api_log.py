"""Checks the file-log of the OpenAI API route types (files, batches, audio, images…).

Usage: check_api_log.py LOG SECRET — every record names its route type's upstream path,
image and transcription answers logged their usage, and the provider key appears nowhere.
"""
import json
import sys

log, secret = sys.argv[1], sys.argv[2]
text = open(log, encoding="utf-8").read()
recs = [json.loads(line) for line in text.splitlines()]
ok = True


def check(name, cond, detail=""):
    global ok
    print(f"PASS: api file-log: {name}" if cond else f"FAIL: api file-log: {name}: {detail}")
    ok = ok and cond


check("records written", len(recs) >= 20, f"{len(recs)} records")
check("the provider key is not in the log", secret not in text)
by_path = {}
for r in recs:
    by_path.setdefault(r["request"]["uri"].split("?")[0], []).append(r)
for path in ["/v1/images/generations", "/v1/images/edits", "/v1/audio/transcriptions"]:
    used = [r["ai"]["proxy"]["usage"].get("total_tokens", 0) for r in by_path.get(path, [])
            if r["response"]["status"] == 200]
    check(f"{path} answers logged their usage", any(u > 0 for u in used), f"usage={used}")
uploads = [r for r in by_path.get("/v1/files", []) if r["request"]["method"] == "POST"]
check("uploads went to the files API", all(r["upstream_uri"] == "/v1/files" for r in uploads)
      and uploads, [r["upstream_uri"] for r in uploads])
speech = [r for r in recs if r["request"]["uri"].startswith("/openai/deployments/")]
check("azure speech went to its deployment with api-version",
      any("/openai/deployments/tts/audio/speech?api-version=" in r["upstream_uri"] for r in speech),
      [r["upstream_uri"] for r in speech])
sys.exit(0 if ok else 1)

"""Checks the file-log records of one Claude Code run through a translated route.

Usage: check_claude_log.py LOG SKIP PROVIDER — the records after the first SKIP lines must be
(besides HEAD warm-ups) three POSTs answered 200 (text answer, tool call, answer to the tool result) with usage, logged for
PROVIDER, and the last request must carry Bash's output back as a tool_result.
"""
import json
import sys

log, skip, provider = sys.argv[1], int(sys.argv[2]), sys.argv[3]
recs = [json.loads(line) for line in open(log, encoding="utf-8")][skip:]
# Claude Code first sends a HEAD to the base URL (a connection warm-up; LLM routes take POST
# only, and it ignores the 405).
heads = [r for r in recs if r["request"]["method"] == "HEAD"]
assert all(r["response"]["status"] == 405 for r in heads), [r["response"]["status"] for r in heads]
recs = [r for r in recs if r["request"]["method"] == "POST"]
assert len(recs) >= 3, f"{len(recs)} records"
for r in recs:
    assert r["response"]["status"] == 200, r["response"]["status"]
    proxy = r["ai"]["proxy"]
    assert proxy["usage"].get("total_tokens", 0) > 0, f"usage={proxy['usage']}"
    assert proxy["meta"]["provider_name"] == provider, proxy["meta"]
last = recs[-1]["ai"]["proxy"]["payload"]["request"]
assert "tool_result" in last and "mock-tool-ran" in last, last[-600:]
print("ok")

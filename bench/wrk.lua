-- wrk script for bench/run.sh: POSTs the JSON file named by $BENCH_BODY and, when done,
-- prints one line `BENCH_JSON {...}` with the raw figures (latencies in microseconds).
local path = os.getenv("BENCH_BODY")
if path == nil or path == "" then
  error("BENCH_BODY must name the request body file")
end
local file = assert(io.open(path, "rb"))
wrk.method = "POST"
wrk.body = file:read("*a")
file:close()
wrk.headers["Content-Type"] = "application/json"

function done(summary, latency, requests)
  local e = summary.errors
  local function pct(p)
    return string.format("%.0f", latency:percentile(p))
  end
  io.write("BENCH_JSON {",
    string.format('"requests":%d,"duration_us":%d,"bytes":%d,', summary.requests,
      summary.duration, summary.bytes),
    string.format('"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},',
      e.connect, e.read, e.write, e.status, e.timeout),
    string.format('"rps":%.1f,', summary.requests / (summary.duration / 1e6)),
    '"latency_us":{',
    '"min":', string.format("%.0f", latency.min), ',',
    '"mean":', string.format("%.1f", latency.mean), ',',
    '"stdev":', string.format("%.1f", latency.stdev), ',',
    '"p50":', pct(50), ',"p90":', pct(90), ',"p99":', pct(99), ',',
    '"max":', string.format("%.0f", latency.max), '}}\n')
end

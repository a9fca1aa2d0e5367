-- Cycles through "TOKEN PATH" lines from the file named after `--`, one request
-- each, so one wrk run spreads over many tenants and paths (memory and soak steps).
local reqs = {}
local n = 0
local i = 0

init = function(args)
  for line in io.lines(args[1]) do
    local token, path = line:match("^(%S+) (%S+)$")
    if token then
      n = n + 1
      reqs[n] = wrk.format("GET", path, { ["Authorization"] = "Bearer " .. token })
    end
  end
  assert(n > 0, "no requests in " .. args[1])
  i = math.random(n) - 1
end

request = function()
  i = i % n + 1
  return reqs[i]
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"bytes":%d,"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,' ..
    '"p50":%d,"p90":%d,"p99":%d,"p999":%d,"max":%d,"mean":%.1f}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9),
    latency.max, latency.mean))
end

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

-- The JSON summary for tests/load/run: the same done() as wrk-report.lua,
-- loaded from beside this file.
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "wrk-report.lua")

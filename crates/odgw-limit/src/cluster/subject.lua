-- One request of a caller against its inbound limit: GCRA answered at once.
--
-- KEYS[1]  the caller's theoretical arrival time (µs); the key name is a
--          hash, never the subject itself
-- ARGV     interval µs, burst tolerance µs
--
-- Returns 0 when the request may go, else the µs until one may.

if redis.replicate_commands then redis.replicate_commands() end

local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])

local tat = math.max(tonumber(redis.call('GET', KEYS[1])) or now, now)
local wait = tat - tolerance - now
if wait > 0 then
  return wait
end
local new_tat = tat + interval
-- A caller whose budget is full again is indistinguishable from a new one.
redis.call('SET', KEYS[1], new_tat, 'PX', math.max(1, math.ceil((new_tat - now) / 1000)))
return 0

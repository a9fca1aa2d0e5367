-- Open Dental answered 429: no request of the tenant starts before now +
-- delay, on any replica. An existing later pause is kept.
--
-- KEYS[1]  the tenant's state hash (see reserve.lua)
-- ARGV     delay µs, grace ms
--
-- The grace keeps the pause after it ends long enough for the burst it
-- spends to matter (the burst is only known when reserving).

if redis.replicate_commands then redis.replicate_commands() end

local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local delay = tonumber(ARGV[1])
local pause_end = now + delay
local current = tonumber(redis.call('HGET', KEYS[1], 'pause'))
if current and current >= pause_end then
  return 0
end
redis.call('HSET', KEYS[1], 'pause', pause_end)
local keep = math.ceil(delay / 1000) + tonumber(ARGV[2])
if redis.call('PTTL', KEYS[1]) < keep then
  redis.call('PEXPIRE', KEYS[1], keep)
end
return 1

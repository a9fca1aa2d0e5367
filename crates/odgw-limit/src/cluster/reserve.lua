-- Reserves a tenant's next upstream slot: GCRA (virtual scheduling), the same
-- rule as LocalPacer, on Redis's own clock so that clock skew between
-- replicas does not matter.
--
-- KEYS[1]  hash: tat (theoretical arrival time, µs), pause (upstream pause
--          end, µs), last (id of the newest reservation)
-- KEYS[2]  sorted set: reservations whose start lies in the future (the
--          waiting requests of every replica), scored by start (µs)
-- ARGV     interval µs, burst tolerance µs, max wait µs, queue depth, id
--
-- Returns {verdict, wait µs, previous tat, previous last}:
--   verdict 0 = start now, 1 = wait, 2 = would exceed max wait, 3 = queue full
-- A refusal reserves nothing (it only drops queue entries that have started).

-- TIME before a write needs effects replication on Redis < 5; later
-- versions always replicate effects (and keep this call as a no-op).
if redis.replicate_commands then redis.replicate_commands() end

local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local max_wait = tonumber(ARGV[3])
local depth = tonumber(ARGV[4])

local state = redis.call('HMGET', KEYS[1], 'tat', 'pause', 'last')
local tat = tonumber(state[1]) or now
local pause = tonumber(state[2])
local last = state[3] or ''
if pause and pause + tolerance > tat then
  -- The pause spends the whole burst: after it, requests are spaced again
  -- instead of arriving at Open Dental all at once. It stays a field of its
  -- own, so a waiter handing its slot back cannot undo it.
  tat = pause + tolerance
end

local start = math.max(tat - tolerance, now)
local wait = start - now
if wait > 0 then
  -- Reservations that have started are no longer waiting. A replica that
  -- died leaves nothing behind beyond its reservations' start times.
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
  if wait > max_wait then
    return {2, wait, 0, ''}
  end
  if redis.call('ZCARD', KEYS[2]) >= depth then
    return {3, wait, 0, ''}
  end
end

local new_tat = math.max(tat, start) + interval
redis.call('HSET', KEYS[1], 'tat', new_tat, 'last', ARGV[5])
-- Past its TAT (which lies beyond any pause) the state is the same as none.
redis.call('PEXPIRE', KEYS[1], math.ceil((new_tat - now) / 1000) + 1000)
if wait > 0 then
  redis.call('ZADD', KEYS[2], start, ARGV[5])
  redis.call('PEXPIRE', KEYS[2], math.ceil(wait / 1000) + 1000)
  return {1, wait, tat, last}
end
return {0, 0, tat, last}

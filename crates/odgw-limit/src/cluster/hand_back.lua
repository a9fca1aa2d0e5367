-- A waiter went away before its slot: it leaves the queue, and hands its slot
-- back if it still is the newest reservation (compare and set on `last`).
--
-- KEYS[1]  the tenant's state hash, KEYS[2] its queue (see reserve.lua)
-- ARGV     id, previous tat, previous last ('' and '' when unknown)
--
-- Returns 1 when the slot was handed back, 0 when it stays consumed.

redis.call('ZREM', KEYS[2], ARGV[1])
if ARGV[2] ~= '' and redis.call('HGET', KEYS[1], 'last') == ARGV[1] then
  -- The reservation before ours becomes the newest again, so it too can
  -- hand its slot back if it is abandoned.
  redis.call('HSET', KEYS[1], 'tat', ARGV[2], 'last', ARGV[3])
  return 1
end
return 0

-- ferrolimit: shared by every script (prepended by scripts.rs).
-- KEYS[1] holders  ZSET token -> lease expiry (ms, server clock)
-- KEYS[2] queue    ZSET token -> arrival sequence
-- KEYS[3] waiters  ZSET token -> waiter heartbeat expiry (ms, server clock)
-- KEYS[4] seq      STRING counter for arrival sequences
-- ARGV[1] wake channel, ARGV[2] max_running, ARGV[3] lease (ms); the rest per script.
local HOLDERS, QUEUE, WAITERS, SEQ = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local CHANNEL, MAX_RUNNING, LEASE = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- ZREM in chunks: unpack() of a long list would overflow Lua's C stack.
local function zrem_all(key, members)
  for i = 1, #members, 500 do
    redis.call('ZREM', key, unpack(members, i, math.min(i + 499, #members)))
  end
end

-- Drop expired leases and waiters that stopped heart-beating, then hand every free slot to the
-- head of the queue and tell the fleet which tokens were admitted.
local function admit(now)
  redis.call('ZREMRANGEBYSCORE', HOLDERS, '-inf', now)
  local dead = redis.call('ZRANGEBYSCORE', WAITERS, '-inf', now)
  if #dead > 0 then
    zrem_all(QUEUE, dead)
    zrem_all(WAITERS, dead)
  end
  local free = MAX_RUNNING - redis.call('ZCARD', HOLDERS)
  if free <= 0 then
    return
  end
  local heads = redis.call('ZRANGE', QUEUE, 0, free - 1)
  if #heads == 0 then
    return
  end
  for _, token in ipairs(heads) do
    redis.call('ZADD', HOLDERS, now + LEASE, token)
  end
  zrem_all(QUEUE, heads)
  zrem_all(WAITERS, heads)
  redis.call('PUBLISH', CHANNEL, table.concat(heads, ','))
end

-- Milliseconds until the earliest lease runs out (-1 with no holder): a waiter polls no later.
local function next_expiry(now)
  local first = redis.call('ZRANGE', HOLDERS, 0, 0, 'WITHSCORES')
  if #first == 0 then
    return -1
  end
  return math.max(0, tonumber(first[2]) - now)
end

-- ferrolimit: shared by every script (prepended by scripts.rs).
-- KEYS[1] holders  ZSET token -> lease expiry (ms, server clock)
-- KEYS[2] queue    ZSET token -> arrival sequence
-- KEYS[3] waiters  ZSET token -> waiter heartbeat expiry (ms, server clock)
-- KEYS[4] seq      STRING counter for arrival sequences
-- KEYS[5] epoch    STRING identity of the state: a new one means the state was created or lost
-- KEYS[6] recovering  STRING with a TTL of one lease after a loss: nobody is admitted meanwhile
-- KEYS[7] max_running  STRING the max_running of the last acquire, kept for one lease
-- ARGV[1] wake channel, ARGV[2] max_running, ARGV[3] lease (ms), ARGV[4] the caller's known
-- epoch ('' if none), ARGV[5] an epoch to use if there is none, ARGV[6] '1' if the caller held
-- state from before the current epoch; the rest per script. Every script's reply starts with
-- the current epoch.
local HOLDERS, QUEUE, WAITERS, SEQ, EPOCH_KEY, RECOVERING = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local MAX_RUNNING_KEY = KEYS[7]
local CHANNEL, MAX_RUNNING, LEASE = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local KNOWN_EPOCH, NEW_EPOCH = ARGV[4], ARGV[5]

-- A missing epoch means the state is new, or was lost (a restart without persistence, a flush).
-- If the caller knew an older epoch it was lost: for one lease nobody is admitted, while the
-- holders of the old epoch re-register their slots through renewal.
local function current_epoch()
  local epoch = redis.call('GET', EPOCH_KEY)
  if epoch then
    return epoch
  end
  redis.call('SET', EPOCH_KEY, NEW_EPOCH)
  if KNOWN_EPOCH ~= '' then
    redis.call('SET', RECOVERING, '1', 'PX', LEASE)
  end
  return NEW_EPOCH
end

local EPOCH = current_epoch()
-- Whether the caller's slots and places may predate a loss of the state.
local FROM_BEFORE_LOSS = (KNOWN_EPOCH ~= '' and KNOWN_EPOCH ~= EPOCH) or ARGV[6] == '1'

local function recovering()
  return redis.call('EXISTS', RECOVERING) == 1
end

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
  if recovering() then
    return
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

-- ferrolimit: shared by every script (prepended by scripts.rs).
-- KEYS[1] holders  ZSET token -> lease expiry (ms, server clock)
-- KEYS[2] queue    ZSET place -> -priority; a place is the arrival sequence (20 digits) then
--                  the token, so that equal priorities sort by arrival
-- KEYS[3] waiters  ZSET token -> waiter heartbeat expiry (ms, server clock)
-- KEYS[4] seq      STRING counter for arrival sequences
-- KEYS[5] epoch    STRING identity of the state: a new one means the state was created or lost
-- KEYS[6] recovering  STRING with a TTL of one lease after a loss: nobody is admitted meanwhile
-- KEYS[7] limit    STRING the fleet's max_running, then ' resized {n} at {ms}' if the n-th resize
--                  set it, {ms} being the resize's time (see ARGV[2])
-- KEYS[8] weights  HASH token -> weight, for the holders and waiters of a weight other than 1
-- KEYS[9] places   HASH token -> place in the queue
-- KEYS[10] used    STRING the slots held: the sum of the holders' weights
-- ARGV[1] wake channel, ARGV[2] the caller's max_running (stored if the state has no limit yet;
-- followed by '!' and the resize's time if it comes from a resize, which makes it the value of
-- that resize: see claim(); the time is in ms since the Unix epoch, on the clock of the process
-- that resized),
-- ARGV[3] lease (ms), ARGV[4] the caller's known epoch ('' if none), ARGV[5] an epoch to use if
-- there is none, ARGV[6] '1' if the caller held state from before the current epoch; the rest
-- per script. Every script's reply starts with the head {epoch, limit, resized, resized_at, ttl},
-- ttl being the milliseconds the state lives on without another script.
--
-- Every key expires once the state is idle: the scripts keep their common TTL beyond every lease
-- and heartbeat (see reply()).
local HOLDERS, QUEUE, WAITERS, SEQ, EPOCH_KEY, RECOVERING = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local LIMIT_KEY, WEIGHTS, PLACES, USED = KEYS[7], KEYS[8], KEYS[9], KEYS[10]
local CHANNEL, LEASE = ARGV[1], tonumber(ARGV[3])
local KNOWN_EPOCH, NEW_EPOCH = ARGV[4], ARGV[5]
local OWN_LIMIT, OWN_AT = string.match(ARGV[2], '^(%d+)!?(%d*)$')
OWN_AT = tonumber(OWN_AT) or 0
local OWN_FROM_RESIZE = OWN_AT > 0
local STATE_KEYS = {HOLDERS, QUEUE, WAITERS, SEQ, EPOCH_KEY, LIMIT_KEY, WEIGHTS, PLACES, USED}
local SEQ_DIGITS = 20

-- The keys this script wrote that it may have created: they get the state's TTL (see reply).
local DIRTY = {}
local function wrote(key)
  DIRTY[key] = true
end

-- Set by open(): the state's epoch, whether the caller's slots and places may predate a loss of
-- the state, the fleet's limit, and the number and time of the resize that set it (0: none).
local EPOCH, FROM_BEFORE_LOSS, LIMIT, RESIZED, RESIZED_AT

-- Stores LIMIT as the value of resize number RESIZED, made at RESIZED_AT.
local function store_resized()
  redis.call('SET', LIMIT_KEY, LIMIT .. ' resized ' .. RESIZED .. ' at ' .. RESIZED_AT)
  wrote(LIMIT_KEY)
end

-- A missing epoch means the state is new, expired idle, or was lost (a restart without
-- persistence, a flush). If the caller knew an older epoch (it sends one only while the state
-- cannot have expired) it was lost: for one lease nobody is admitted, while the holders of the
-- old epoch re-register their slots through renewal.
local function open()
  EPOCH = redis.call('GET', EPOCH_KEY)
  if not EPOCH then
    EPOCH = NEW_EPOCH
    redis.call('SET', EPOCH_KEY, EPOCH)
    wrote(EPOCH_KEY)
    if KNOWN_EPOCH ~= '' then
      redis.call('SET', RECOVERING, '1', 'PX', LEASE)
    end
  end
  FROM_BEFORE_LOSS = (KNOWN_EPOCH ~= '' and KNOWN_EPOCH ~= EPOCH) or ARGV[6] == '1'
  local limit = redis.call('GET', LIMIT_KEY)
  if not limit then
    limit = OWN_FROM_RESIZE and (OWN_LIMIT .. ' resized 1 at ' .. OWN_AT) or OWN_LIMIT
    redis.call('SET', LIMIT_KEY, limit)
    wrote(LIMIT_KEY)
  end
  LIMIT = tonumber(string.match(limit, '^%d+'))
  RESIZED = tonumber(string.match(limit, ' resized (%d+)')) or 0
  RESIZED_AT = tonumber(string.match(limit, ' at (%d+)$')) or 0
end

local function recovering()
  return redis.call('EXISTS', RECOVERING) == 1
end

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function weight_of(token)
  return tonumber(redis.call('HGET', WEIGHTS, token)) or 1
end

local function token_of(place)
  return string.sub(place, SEQ_DIGITS + 1)
end

-- The queued place with the highest priority, earliest first, or nil.
local function head_place()
  return redis.call('ZRANGE', QUEUE, 0, 0)[1]
end

-- The priority of the head of the queue (nil if empty).
local function head_priority()
  local first = redis.call('ZRANGE', QUEUE, 0, 0, 'WITHSCORES')
  if #first == 0 then
    return nil
  end
  return -tonumber(first[2])
end

local function used()
  return tonumber(redis.call('GET', USED)) or 0
end

-- A stored limit gives way, while the state is idle (no slot held, nobody queued: nobody to admit
-- or refuse), to a caller's own limit from a later resize (a built value, to any resize): stored
-- as a resize, which every process follows. So a resize reaches the keys its process uses after
-- it, even where another process had stored its built value or an earlier resize had set them;
-- the later of two resizes is never undone so. (Resizes by two processes within their clocks'
-- difference may be taken in either order.)
local function claim(running, waiting)
  if OWN_AT > RESIZED_AT and running == 0 and waiting == 0 and tonumber(OWN_LIMIT) ~= LIMIT then
    LIMIT, RESIZED, RESIZED_AT = tonumber(OWN_LIMIT), RESIZED + 1, OWN_AT
    store_resized()
  end
end

-- A slot of `weight` for `token`, leased until `expiry`.
local function hold(token, weight, expiry)
  redis.call('ZADD', HOLDERS, expiry, token)
  if weight ~= 1 then
    redis.call('HSET', WEIGHTS, token, weight)
    wrote(WEIGHTS)
  end
  redis.call('INCRBY', USED, weight)
  wrote(HOLDERS)
  wrote(USED)
end

-- Gives back `amount` of the slots `token` holds (all of them if amount is nil or at least its
-- weight). Returns the number given back (0 if it held none).
local function unhold(token, amount)
  if not redis.call('ZSCORE', HOLDERS, token) then
    return 0
  end
  local stored = tonumber(redis.call('HGET', WEIGHTS, token))
  local weight = stored or 1
  if amount and amount < weight then
    local left = weight - amount
    if left == 1 then
      redis.call('HDEL', WEIGHTS, token)
    else
      redis.call('HSET', WEIGHTS, token, left)
    end
  else
    amount = weight
    redis.call('ZREM', HOLDERS, token)
    if stored then
      redis.call('HDEL', WEIGHTS, token)
    end
  end
  redis.call('DECRBY', USED, amount)
  return amount
end

-- Queues `token` with `weight` and `priority`, behind everyone of the same or a higher priority.
local function enqueue(token, weight, priority, now)
  local place = string.format('%0' .. SEQ_DIGITS .. 'd', redis.call('INCR', SEQ)) .. token
  redis.call('ZADD', QUEUE, -priority, place)
  redis.call('HSET', PLACES, token, place)
  if weight ~= 1 then
    redis.call('HSET', WEIGHTS, token, weight)
    wrote(WEIGHTS)
  end
  redis.call('ZADD', WAITERS, now + LEASE, token)
  wrote(SEQ)
  wrote(QUEUE)
  wrote(PLACES)
  wrote(WAITERS)
end

-- Takes `token` (at `place`, if the caller knows it) out of the queue; true if it was queued.
-- `keep_weight`: its weight stays recorded (it is admitted, and holds that weight now).
local function dequeue(token, place, keep_weight)
  place = place or redis.call('HGET', PLACES, token)
  if not place then
    return false
  end
  redis.call('ZREM', QUEUE, place)
  redis.call('ZREM', WAITERS, token)
  redis.call('HDEL', PLACES, token)
  if not keep_weight then
    redis.call('HDEL', WEIGHTS, token)
  end
  return true
end

-- Drop expired leases and waiters that stopped heart-beating, then hand the free slots to the
-- head of the queue, in order, while its weight fits (head-of-line blocking: a heavy head is
-- never overtaken); a head heavier than the whole limit (after a shrink) is refused. Tells the
-- fleet which tokens were admitted, and which refused ('!{limit}!' before the token).
local function admit(now)
  for _, token in ipairs(redis.call('ZRANGEBYSCORE', HOLDERS, '-inf', now)) do
    unhold(token)
  end
  for _, token in ipairs(redis.call('ZRANGEBYSCORE', WAITERS, '-inf', now)) do
    dequeue(token)
  end
  if recovering() then
    return
  end
  local free = LIMIT - used()
  local woken = {}
  while true do
    local place = head_place()
    if not place then
      break
    end
    local token = token_of(place)
    local weight = weight_of(token)
    if weight > LIMIT then
      dequeue(token, place, false)
      woken[#woken + 1] = '!' .. LIMIT .. '!' .. token
    elseif weight <= free then
      dequeue(token, place, true)
      hold(token, weight, now + LEASE)
      free = free - weight
      woken[#woken + 1] = token
    else
      break
    end
  end
  if #woken > 0 then
    redis.call('PUBLISH', CHANNEL, table.concat(woken, ','))
  end
end

-- Milliseconds until the earliest lease runs out (-1 with no holder): a waiter polls no later.
local function next_expiry(now)
  local first = redis.call('ZRANGE', HOLDERS, 0, 0, 'WITHSCORES')
  if #first == 0 then
    return -1
  end
  return math.max(0, tonumber(first[2]) - now)
end

-- The latest score of a ZSET of expiries, or 0.
local function latest(key)
  local last = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
  return #last == 0 and 0 or tonumber(last[2])
end

-- Keeps the state alive, and returns the reply: the head followed by the values of `rest`. The
-- keys share one TTL that outlives every lease and heartbeat by one lease (at least three of the
-- caller's leases). It is extended (never shortened), for every key at once, only when less than
-- a lease of that margin is left; otherwise only the keys this script may have created get it.
local function reply(now, rest)
  local want = math.max(3 * LEASE, latest(HOLDERS) - now + LEASE, latest(WAITERS) - now + LEASE)
  local ttl = redis.call('PTTL', EPOCH_KEY)
  if ttl < want - LEASE then
    ttl = math.max(ttl, want)
    for _, key in ipairs(STATE_KEYS) do
      redis.call('PEXPIRE', key, ttl)
    end
  else
    for key in pairs(DIRTY) do
      if redis.call('PTTL', key) == -1 then
        redis.call('PEXPIRE', key, ttl)
      end
    end
  end
  local out = {EPOCH, LIMIT, RESIZED, RESIZED_AT, ttl}
  for _, value in ipairs(rest) do
    out[#out + 1] = value
  end
  return out
end

-- ARGV[7] token, ARGV[8] max_queued (-1: unbounded), ARGV[9] weight, ARGV[10] priority,
-- ARGV[11] '1' to take free slots only (never queue).
-- Returns the head then {status, running, waiting, next_expiry}: status 1 admitted, 0 queued, -1
-- queue full (waiting is then the depth the arrival would have made), -2 not admitted at once
-- (only slots), -3 the weight exceeds the limit.
local token, max_queued = ARGV[7], tonumber(ARGV[8])
local weight, priority, only_free = tonumber(ARGV[9]), tonumber(ARGV[10]), ARGV[11] == '1'
-- Before the state is made, the keys are checked: another program may be using them.
if redis.call('EXISTS', EPOCH_KEY) == 0 then
  local types = {'zset', 'zset', 'zset', 'string', 'string', 'string', 'string', 'hash', 'hash', 'string'}
  for i, want in ipairs(types) do
    local found = redis.call('TYPE', KEYS[i])['ok']
    if found ~= 'none' and found ~= want then
      return redis.error_reply('FERROLIMIT_WRONGTYPE Redis key ' .. KEYS[i] .. ' holds a ' .. found ..
        ', expected a ' .. want .. ' (is another program using this key?)')
    end
  end
end
open()
local now = now_ms()
admit(now)
local running, waiting = used(), redis.call('ZCARD', QUEUE)
claim(running, waiting)
if weight > LIMIT then
  return reply(now, {-3, running, waiting, 0})
end
-- Nobody is overtaken: the queue is empty, or (not for try_acquire) the arrival outranks
-- everyone in it, and the slots are free.
local leads = waiting == 0 or (not only_free and priority > head_priority())
if leads and running + weight <= LIMIT and not recovering() then
  hold(token, weight, now + LEASE)
  return reply(now, {1, running + weight, waiting, 0})
end
if only_free then
  return reply(now, {-2, running, waiting, 0})
end
if max_queued >= 0 and waiting >= max_queued then
  return reply(now, {-1, running, waiting + 1, 0})
end
enqueue(token, weight, priority, now)
return reply(now, {0, running, waiting + 1, next_expiry(now)})

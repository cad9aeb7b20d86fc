-- ARGV[7] token, ARGV[8] max_queued (-1: unbounded).
-- Returns {epoch, status, running, waiting, next_expiry}: status 1 admitted, 0 queued, -1 queue full
-- (waiting is then the depth the arrival would have made).
local token, max_queued = ARGV[7], tonumber(ARGV[8])
for i, want in ipairs({'zset', 'zset', 'zset', 'string', 'string', 'string'}) do
  local found = redis.call('TYPE', KEYS[i])['ok']
  if found ~= 'none' and found ~= want then
    return redis.error_reply('FERROLIMIT_WRONGTYPE Redis key ' .. KEYS[i] .. ' holds a ' .. found ..
      ', expected a ' .. want .. ' (is another program using this key?)')
  end
end
local now = now_ms()
admit(now)
local running, waiting = redis.call('ZCARD', HOLDERS), redis.call('ZCARD', QUEUE)
if waiting == 0 and running < MAX_RUNNING and not recovering() then
  redis.call('ZADD', HOLDERS, now + LEASE, token)
  return {EPOCH, 1, running + 1, 0, 0}
end
if max_queued >= 0 and waiting >= max_queued then
  return {EPOCH, -1, running, waiting + 1, 0}
end
redis.call('ZADD', QUEUE, redis.call('INCR', SEQ), token)
redis.call('ZADD', WAITERS, now + LEASE, token)
return {EPOCH, 0, running, waiting + 1, next_expiry(now)}

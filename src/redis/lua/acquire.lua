-- ARGV[7] token, ARGV[8] max_queued (-1: unbounded).
-- Returns {epoch, status, running, waiting, next_expiry, other_max_running}: status 1 admitted,
-- 0 queued, -1 queue full (waiting is then the depth the arrival would have made);
-- other_max_running is the max_running of the last acquire within a lease (-1: none), which
-- differs from ours when the processes sharing the key disagree on the limit.
local token, max_queued = ARGV[7], tonumber(ARGV[8])
for i, want in ipairs({'zset', 'zset', 'zset', 'string', 'string', 'string', 'string'}) do
  local found = redis.call('TYPE', KEYS[i])['ok']
  if found ~= 'none' and found ~= want then
    return redis.error_reply('FERROLIMIT_WRONGTYPE Redis key ' .. KEYS[i] .. ' holds a ' .. found ..
      ', expected a ' .. want .. ' (is another program using this key?)')
  end
end
local now = now_ms()
local other_max_running = tonumber(redis.call('GET', MAX_RUNNING_KEY)) or -1
redis.call('SET', MAX_RUNNING_KEY, MAX_RUNNING, 'PX', LEASE)
admit(now)
local running, waiting = redis.call('ZCARD', HOLDERS), redis.call('ZCARD', QUEUE)
if waiting == 0 and running < MAX_RUNNING and not recovering() then
  redis.call('ZADD', HOLDERS, now + LEASE, token)
  return {EPOCH, 1, running + 1, 0, 0, other_max_running}
end
if max_queued >= 0 and waiting >= max_queued then
  return {EPOCH, -1, running, waiting + 1, 0, other_max_running}
end
redis.call('ZADD', QUEUE, redis.call('INCR', SEQ), token)
redis.call('ZADD', WAITERS, now + LEASE, token)
return {EPOCH, 0, running, waiting + 1, next_expiry(now), other_max_running}

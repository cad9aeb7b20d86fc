-- A queued waiter's heartbeat and check. ARGV[7] token, ARGV[8] its weight, ARGV[9] its priority.
-- Returns the head then {status, next_expiry}: 1 admitted, 0 still queued (heartbeat renewed), -2
-- gone, -3 refused (a shrink left the limit below its weight). A place lost with the state goes
-- back in the queue, behind those queued since.
local token, weight, priority = ARGV[7], tonumber(ARGV[8]), tonumber(ARGV[9])
open()
local now = now_ms()
admit(now)
if redis.call('ZSCORE', HOLDERS, token) then
  return reply(now, {1, 0})
end
if weight > LIMIT then
  dequeue(token)
  return reply(now, {-3, 0})
end
if not redis.call('HEXISTS', PLACES, token) then
  if not FROM_BEFORE_LOSS then
    return reply(now, {-2, 0})
  end
  enqueue(token, weight, priority, now)
  admit(now)
  if redis.call('ZSCORE', HOLDERS, token) then
    return reply(now, {1, 0})
  end
end
redis.call('ZADD', WAITERS, now + LEASE, token)
return reply(now, {0, next_expiry(now)})

-- A queued waiter's heartbeat and check. ARGV[7] token.
-- Returns {epoch, status, next_expiry}: 1 admitted, 0 still queued (heartbeat renewed), -2 gone.
-- A place lost with the state goes back in the queue, behind those queued since.
local token = ARGV[7]
local now = now_ms()
admit(now)
if redis.call('ZSCORE', HOLDERS, token) then
  return {EPOCH, 1, 0}
end
if not redis.call('ZSCORE', QUEUE, token) then
  if not FROM_BEFORE_LOSS then
    return {EPOCH, -2, 0}
  end
  redis.call('ZADD', QUEUE, redis.call('INCR', SEQ), token)
end
redis.call('ZADD', WAITERS, now + LEASE, token)
return {EPOCH, 0, next_expiry(now)}

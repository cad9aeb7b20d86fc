-- A queued waiter's heartbeat and check. ARGV[4] token.
-- Returns {status, next_expiry}: 1 admitted, 0 still queued (heartbeat renewed), -2 gone.
local token = ARGV[4]
local now = now_ms()
admit(now)
if redis.call('ZSCORE', HOLDERS, token) then
  return {1, 0}
end
if not redis.call('ZSCORE', QUEUE, token) then
  return {-2, 0}
end
redis.call('ZADD', WAITERS, now + LEASE, token)
return {0, next_expiry(now)}

-- Fleet-wide counts, after expired leases and dead waiters are purged. Returns the head then
-- {running, waiting}. A state that does not exist is not created: its epoch reads as ''.
if redis.call('EXISTS', EPOCH_KEY) == 0 then
  return {'', tonumber(OWN_LIMIT), 0, 0, 0, 0, 0}
end
open()
local now = now_ms()
admit(now)
return reply(now, {used(), redis.call('ZCARD', QUEUE)})

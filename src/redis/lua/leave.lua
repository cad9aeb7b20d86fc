-- Release a slot or give up a place: removes only the caller's own token (the fencing token),
-- then passes any free slot on. ARGV[4] token. Returns 1 if the token held a slot.
local token = ARGV[4]
redis.call('ZREM', QUEUE, token)
redis.call('ZREM', WAITERS, token)
local held = redis.call('ZREM', HOLDERS, token)
admit(now_ms())
return held

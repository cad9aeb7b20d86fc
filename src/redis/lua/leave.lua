-- Release a slot or give up a place: removes only the caller's own token (the fencing token),
-- then passes any free slot on. ARGV[7] token. Returns {epoch, 1 if the token held a slot}.
local token = ARGV[7]
redis.call('ZREM', QUEUE, token)
redis.call('ZREM', WAITERS, token)
local held = redis.call('ZREM', HOLDERS, token)
admit(now_ms())
return {EPOCH, held}

-- Fleet-wide counts, after expired leases and dead waiters are purged. Returns {epoch, running, waiting}.
admit(now_ms())
return {EPOCH, redis.call('ZCARD', HOLDERS), redis.call('ZCARD', QUEUE)}

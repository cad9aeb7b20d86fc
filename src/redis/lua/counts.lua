-- Fleet-wide counts, after expired leases and dead waiters are purged. Returns {running, waiting}.
admit(now_ms())
return {redis.call('ZCARD', HOLDERS), redis.call('ZCARD', QUEUE)}

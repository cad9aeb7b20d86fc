-- Sets the fleet's max_running. ARGV[7] the new limit. A larger limit admits waiters at once; a
-- smaller one lets the holders finish, and refuses the waiters heavier than it. Returns the head.
open()
redis.call('SET', LIMIT_KEY, ARGV[7] .. ' resized')
wrote(LIMIT_KEY)
LIMIT, RESIZED = tonumber(ARGV[7]), 1
local now = now_ms()
admit(now)
return reply(now, {})

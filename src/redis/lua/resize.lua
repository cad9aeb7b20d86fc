-- Sets the fleet's max_running. ARGV[7] the new limit, ARGV[8] the resize's time (as in ARGV[2]:
-- the caller's own limit is this resize's value). A larger limit admits waiters at once; a
-- smaller one lets the holders finish, and refuses the waiters heavier than it (all of them, at
-- once: a resize reads the whole queue). Returns the head.
open()
LIMIT, RESIZED, RESIZED_AT = tonumber(ARGV[7]), RESIZED + 1, tonumber(ARGV[8])
store_resized()
local now = now_ms()
-- Every waiter heavier than the new limit is refused now, wherever it is in the queue.
local refused = {}
for _, place in ipairs(redis.call('ZRANGE', QUEUE, 0, -1)) do
  local token = token_of(place)
  if weight_of(token) > LIMIT then
    dequeue(token, place, false)
    refused[#refused + 1] = '!' .. LIMIT .. '!' .. token
  end
end
if #refused > 0 then
  redis.call('PUBLISH', CHANNEL, table.concat(refused, ','))
end
admit(now)
return reply(now, {})

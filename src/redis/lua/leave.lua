-- Release slots or give up a place: changes only the caller's own token (the fencing token),
-- then passes any free slot on. ARGV[7] token, ARGV[8] how many slots to give back ('' for all
-- it holds). Returns the head then {slots given back, 0 if the token held none}.
local token, amount = ARGV[7], tonumber(ARGV[8])
open()
dequeue(token)
local released = unhold(token, amount)
local now = now_ms()
admit(now)
return reply(now, {released})

-- Extend the leases of slots still held. ARGV[7..] pairs of token and weight. Returns the head then
-- {{1/0 per token}}: 0 means the lease had run out (it may already belong to someone else) and
-- is not renewed. While the state recovers from a loss, a slot held from before the loss is
-- registered again.
open()
local now = now_ms()
local reregister = FROM_BEFORE_LOSS and recovering()
local out = {}
for i = 7, #ARGV, 2 do
  local token = ARGV[i]
  local score = redis.call('ZSCORE', HOLDERS, token)
  if score and tonumber(score) > now then
    redis.call('ZADD', HOLDERS, now + LEASE, token)
    out[#out + 1] = 1
  elseif not score and reregister then
    hold(token, tonumber(ARGV[i + 1]), now + LEASE)
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
admit(now)
return reply(now, {out})

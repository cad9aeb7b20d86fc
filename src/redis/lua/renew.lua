-- Extend the leases of tokens still held. ARGV[7..] tokens. Returns {epoch, {1/0 per token}}: 0
-- means the lease had run out (it may already belong to someone else) and is not renewed. While
-- the state recovers from a loss, a slot held from before the loss is registered again.
local now = now_ms()
local reregister = FROM_BEFORE_LOSS and recovering()
local out = {}
for i = 7, #ARGV do
  local score = redis.call('ZSCORE', HOLDERS, ARGV[i])
  if (score and tonumber(score) > now) or (not score and reregister) then
    redis.call('ZADD', HOLDERS, now + LEASE, ARGV[i])
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
admit(now)
return {EPOCH, out}

-- Extend the leases of tokens still held. ARGV[4..] tokens. Returns a 1/0 per token: 0 means the
-- lease had run out (it may already belong to someone else) and is not renewed.
local now = now_ms()
local out = {}
for i = 4, #ARGV do
  local score = redis.call('ZSCORE', HOLDERS, ARGV[i])
  if score and tonumber(score) > now then
    redis.call('ZADD', HOLDERS, 'XX', now + LEASE, ARGV[i])
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
admit(now)
return out

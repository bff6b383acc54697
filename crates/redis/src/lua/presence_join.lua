-- Records one connection of a member on a channel; announces the member on
-- the channel's topic when it is its first connection anywhere.
--
-- KEYS[1] members hash (field "<conn> <presenceId>" -> member JSON)
-- KEYS[2] expiry zset (field -> expires at ms)
-- KEYS[3] counts hash (presenceId -> live connections)
-- ARGV[1] field  ARGV[2] presenceId  ARGV[3] member JSON  ARGV[4] expires at ms
-- ARGV[5] PUBLISH or SPUBLISH  ARGV[6] topic   ARGV[7] key ttl ms
-- Returns 1 when the member joined, 0 when it was already present.
local members, expiry, counts = KEYS[1], KEYS[2], KEYS[3]
local field, pid = ARGV[1], ARGV[2]
local joined = 0
if redis.call('ZSCORE', expiry, field) == false then
  redis.call('HSET', members, field, ARGV[3])
  if redis.call('HINCRBY', counts, pid, 1) == 1 then
    redis.call(ARGV[5], ARGV[6], 'j ' .. ARGV[3])
    joined = 1
  end
end
redis.call('ZADD', expiry, ARGV[4], field)
for _, key in ipairs(KEYS) do
  redis.call('PEXPIRE', key, ARGV[7])
end
return joined

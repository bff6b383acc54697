-- Every live connection's member JSON on a channel, in one round trip.
--
-- KEYS: members hash, expiry zset   ARGV[1] now ms
local fields = redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. ARGV[1], '+inf')
if #fields == 0 then
  return {}
end
return redis.call('HMGET', KEYS[1], unpack(fields))

-- Removes the connections whose gateway stopped refreshing them, announcing
-- each member that had no other connection left. Safe to run from every
-- gateway at once: each removal happens once.
--
-- KEYS: members hash, expiry zset, counts hash (see presence_join.lua)
-- ARGV[1] now ms  ARGV[2] PUBLISH or SPUBLISH  ARGV[3] topic
-- Returns the earliest remaining expiry in ms, or -1 when none is left.
local members, expiry, counts = KEYS[1], KEYS[2], KEYS[3]
local expired = redis.call('ZRANGEBYSCORE', expiry, '-inf', ARGV[1])
for _, field in ipairs(expired) do
  redis.call('ZREM', expiry, field)
  local member = redis.call('HGET', members, field)
  redis.call('HDEL', members, field)
  local pid = string.sub(field, string.find(field, ' ', 1, true) + 1)
  if redis.call('HINCRBY', counts, pid, -1) <= 0 then
    redis.call('HDEL', counts, pid)
    if member then
      redis.call(ARGV[2], ARGV[3], 'l ' .. member)
    end
  end
end
local next = redis.call('ZRANGE', expiry, 0, 0, 'WITHSCORES')
if #next == 0 then
  return -1
end
return tonumber(next[2])

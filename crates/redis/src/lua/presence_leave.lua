-- Forgets one connection of a member; announces the member's leave when it
-- was its last connection anywhere.
--
-- KEYS: members hash, expiry zset, counts hash (see presence_join.lua)
-- ARGV[1] field  ARGV[2] presenceId  ARGV[3] PUBLISH or SPUBLISH  ARGV[4] topic
-- Returns 1 when the member left.
local members, expiry, counts = KEYS[1], KEYS[2], KEYS[3]
local field, pid = ARGV[1], ARGV[2]
if redis.call('ZREM', expiry, field) == 0 then
  return 0
end
local member = redis.call('HGET', members, field)
redis.call('HDEL', members, field)
if redis.call('HINCRBY', counts, pid, -1) <= 0 then
  redis.call('HDEL', counts, pid)
  if member then
    redis.call(ARGV[3], ARGV[4], 'l ' .. member)
  end
  return 1
end
return 0

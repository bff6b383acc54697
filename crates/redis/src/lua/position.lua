-- The stream's current position, starting the stream when it has none.
--
-- KEYS[1] stream metadata hash   KEYS[2] stream
-- ARGV[1] epoch to use if the stream is new   ARGV[2] ttl ms
-- Returns {epoch, offset}.
local meta, stream = KEYS[1], KEYS[2]
local epoch = redis.call('HGET', meta, 'e')
if not epoch then
  epoch = ARGV[1]
  redis.call('DEL', stream)
  redis.call('HSET', meta, 'e', epoch, 'o', 0)
  redis.call('PEXPIRE', meta, ARGV[2])
  return {epoch, 0}
end
return {epoch, tonumber(redis.call('HGET', meta, 'o'))}

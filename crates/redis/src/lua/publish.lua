-- Numbers a publication, keeps it when the channel keeps history, and
-- publishes it to the channel's topic: the publish path's one round trip.
--
-- KEYS[1] stream metadata hash (e = epoch, o = top offset)
-- KEYS[2] stream of kept publications (id <offset>-1, fields d = body, t = ms)
-- ARGV[1] topic   ARGV[2] publication body (JSON)   ARGV[3] history size
-- ARGV[4] ttl ms  ARGV[5] now ms   ARGV[6] epoch to use if the stream is new
-- ARGV[7] PUBLISH or SPUBLISH
-- With an idempotency key: KEYS[3] the key's record, ARGV[8] its window in
-- ms, ARGV[9] the publication's message id.
-- Returns {offset, epoch, receivers}, or {-1, "<message id or -> <ms>", 0}
-- when the idempotency key was already used within its window.
local meta, stream = KEYS[1], KEYS[2]
local topic, body = ARGV[1], ARGV[2]
local size, ttl, now = tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]

if KEYS[3] then
  local first = redis.call('GET', KEYS[3])
  if first then
    return {-1, first, 0}
  end
end

local epoch = redis.call('HGET', meta, 'e')
if not epoch then
  -- A new (or lost) stream: its offsets start again under a new epoch, and
  -- nothing kept under an old one may survive.
  epoch = ARGV[6]
  redis.call('DEL', stream)
  redis.call('HSET', meta, 'e', epoch, 'o', 0)
end
local offset = redis.call('HINCRBY', meta, 'o', 1)
redis.call('PEXPIRE', meta, ttl)
if size > 0 then
  redis.call('XADD', stream, 'MAXLEN', size, offset .. '-1', 'd', body, 't', now)
  redis.call('PEXPIRE', stream, ttl)
end
local receivers = redis.call(ARGV[7], topic, 'p ' .. offset .. ' ' .. epoch .. ' ' .. body)
if KEYS[3] then
  local id = '-'
  if receivers > 0 or size > 0 then id = ARGV[9] end
  redis.call('SET', KEYS[3], id .. ' ' .. now, 'PX', ARGV[8])
end
return {offset, epoch, receivers}

-- Numbers a publication, keeps it when the channel keeps history, and
-- publishes it to the channel's topic: the publish path's one round trip.
-- On a channel with a definition it also appends the publication to its
-- app's dispatch stream (standalone Redis; on Redis Cluster the stream is
-- in another slot and `dispatch.lua` appends it).
--
-- KEYS[1] stream metadata hash (e = epoch, o = top offset)
-- KEYS[2] stream of kept publications (id <offset>-1, fields d = body, t = ms)
-- ARGV[1] topic   ARGV[2] publication body (JSON)   ARGV[3] history size
-- ARGV[4] ttl ms  ARGV[5] now ms   ARGV[6] epoch to use if the stream is new
-- ARGV[7] PUBLISH or SPUBLISH
-- ARGV[8] idempotency window ms, or '' for none; then KEYS[3] is the key's
--         record, and ARGV[9] the publication's message id
-- ARGV[10] dispatch head (JSON), or '' for none; then the last key is the
--          app's dispatch stream and ARGV[11] the most entries it may hold
-- Returns {offset, epoch, receivers}; {-1, "<message id or -> <ms>", 0}
-- when the idempotency key was already used within its window; {-2,
-- "full", 0} when the dispatch stream is full (nothing was done).
local meta, stream = KEYS[1], KEYS[2]
local topic, body = ARGV[1], ARGV[2]
local size, ttl, now = tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]
local idem = nil
if ARGV[8] ~= '' then idem = KEYS[3] end
local dispatch = nil
if ARGV[10] ~= '' then dispatch = KEYS[#KEYS] end

if idem then
  local first = redis.call('GET', idem)
  if first then
    return {-1, first, 0}
  end
end
if dispatch and redis.call('XLEN', dispatch) >= tonumber(ARGV[11]) then
  return {-2, 'full', 0}
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
if dispatch then
  redis.call('XADD', dispatch, '*', 'h', ARGV[10], 'd', body)
end
if idem then
  local id = '-'
  if receivers > 0 or size > 0 or dispatch then id = ARGV[9] end
  redis.call('SET', idem, id .. ' ' .. now, 'PX', ARGV[8])
end
return {offset, epoch, receivers}

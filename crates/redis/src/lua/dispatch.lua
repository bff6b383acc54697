-- Appends a publication to its app's dispatch stream (Redis Cluster, where
-- the stream is not in the channel's slot), unless the stream is full.
--
-- KEYS[1] the app's dispatch stream
-- ARGV[1] head (JSON)   ARGV[2] publication body (JSON)   ARGV[3] most entries
-- Returns 1, or -2 when the stream is full.
if redis.call('XLEN', KEYS[1]) >= tonumber(ARGV[3]) then
  return -2
end
redis.call('XADD', KEYS[1], '*', 'h', ARGV[1], 'd', ARGV[2])
return 1

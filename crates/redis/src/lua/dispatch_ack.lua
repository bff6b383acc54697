-- Acknowledges dispatch entries whose work is done (or durably scheduled)
-- and deletes them, so the stream holds only what is still to do.
--
-- KEYS[1] the app's dispatch stream   ARGV[1] group   ARGV[2..] entry ids
local n = 0
for i = 2, #ARGV do
  n = n + redis.call('XACK', KEYS[1], ARGV[1], ARGV[i])
  redis.call('XDEL', KEYS[1], ARGV[i])
end
return n

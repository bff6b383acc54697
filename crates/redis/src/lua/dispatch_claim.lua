-- Takes over entries of the dispatch stream that another worker read and
-- did not acknowledge within the idle time (it died, say).
--
-- KEYS[1] the app's dispatch stream
-- ARGV[1] group   ARGV[2] consumer   ARGV[3] idle ms   ARGV[4] most entries
-- Returns {id, head, body, id, head, body, ...}; entries trimmed away
-- while pending are acknowledged (there is nothing left to do for them).
local claimed = redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], '0-0', 'COUNT', ARGV[4])
local out = {}
for _, entry in ipairs(claimed[2]) do
  local id, fields = entry[1], entry[2]
  if fields then
    local h, d = nil, nil
    for i = 1, #fields, 2 do
      if fields[i] == 'h' then h = fields[i + 1] end
      if fields[i] == 'd' then d = fields[i + 1] end
    end
    if h and d then
      table.insert(out, id)
      table.insert(out, h)
      table.insert(out, d)
    end
  end
end
if claimed[3] then
  for _, id in ipairs(claimed[3]) do
    redis.call('XACK', KEYS[1], ARGV[1], id)
  end
end
return out

-- Kept publications after an offset, with the stream's position, in one
-- consistent read.
--
-- KEYS[1] stream metadata hash   KEYS[2] stream
-- ARGV[1] offset to read after   ARGV[2] most entries   ARGV[3] oldest ms kept
-- Returns {epoch or false, top, offset1, body1, offset2, body2, ...};
-- entries older than ARGV[3] are left out.
local meta, stream = KEYS[1], KEYS[2]
local epoch = redis.call('HGET', meta, 'e')
if not epoch then
  return {false, 0}
end
local top = tonumber(redis.call('HGET', meta, 'o'))
local after, limit, oldest = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local out = {epoch, top}
if after >= top then
  return out
end
local entries = redis.call('XRANGE', stream, (after + 1) .. '-0', '+', 'COUNT', limit)
for _, entry in ipairs(entries) do
  local fields = entry[2]
  local body, at = nil, 0
  for i = 1, #fields, 2 do
    if fields[i] == 'd' then body = fields[i + 1] end
    if fields[i] == 't' then at = tonumber(fields[i + 1]) end
  end
  if body and at >= oldest then
    local offset = string.match(entry[1], '^(%d+)')
    table.insert(out, tonumber(offset))
    table.insert(out, body)
  end
end
return out

-- One GCRA check of a cluster-wide limit, on Redis' own clock so that the
-- gateways' clocks do not matter. Mirrors herald_rate_limiter::gcra.
--
-- KEYS[1] the limit's theoretical arrival time (µs)
-- ARGV[1] emission interval (µs)   ARGV[2] window = interval * burst (µs)
-- Returns {allowed (1/0), remaining, retry after (µs), reset after (µs)}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval, window = tonumber(ARGV[1]), tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then
  tat = now
end
local new_tat = tat + interval
local allow_at = new_tat - window
if now < allow_at then
  return {0, 0, allow_at - now, tat - now}
end
local ahead = new_tat - now
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', math.floor(ahead / 1000) + 1)
return {1, math.floor((window - ahead) / interval), 0, ahead}

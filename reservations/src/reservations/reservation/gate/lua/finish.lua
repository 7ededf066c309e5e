-- Requests' outcomes are final in PostgreSQL: drop their markers, take them out of the event's line
-- and stop counting them as pending; then count them into the event's settle rate.
-- KEYS = event, line, unfinished, marker...; ARGV = the rate's time constant (s), then the
-- request ids of the markers, in order.
local settled = 0
for i = 2, #ARGV do
  settled = settled + redis.call('DEL', KEYS[i + 2])
end
redis.call('ZREM', KEYS[2], unpack(ARGV, 2))
redis.call('ZREM', KEYS[3], unpack(ARGV, 2))
if settled == 0 or redis.call('HEXISTS', KEYS[1], 'cap') == 0 then return 1 end
redis.call('HINCRBY', KEYS[1], 'pending', -settled)
-- The rate is an exponentially weighted count settled (rate_n) over the seconds it took (rate_s),
-- as of rate_at. Only time in which requests waited is measured (from rate_from, set while some
-- wait): time with none waiting says nothing of the pace, so a settle after it only starts the clock.
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + tonumber(time[2]) / 1000
local rate = redis.call('HMGET', KEYS[1], 'rate_n', 'rate_s', 'rate_from')
local from = tonumber(rate[3])
if from and now > from then
  local span = (now - from) / 1000
  local keep = math.exp(-span / tonumber(ARGV[1]))
  redis.call('HSET', KEYS[1],
    'rate_n', keep * (tonumber(rate[1]) or 0) + settled,
    'rate_s', keep * (tonumber(rate[2]) or 0) + span,
    'rate_at', now)
end
if redis.call('ZCARD', KEYS[2]) > 0 then
  redis.call('HSET', KEYS[1], 'rate_from', now)
else
  redis.call('HDEL', KEYS[1], 'rate_from')
end
return 1

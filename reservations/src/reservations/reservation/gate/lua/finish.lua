-- A request's outcome is final in PostgreSQL: drop its marker and stop counting it as pending.
-- KEYS = event, unfinished, marker...; ARGV = the request ids of the markers, in order.
local live = redis.call('HEXISTS', KEYS[1], 'cap') == 1
for i = 1, #ARGV do
  if redis.call('DEL', KEYS[i + 2]) == 1 and live then
    redis.call('HINCRBY', KEYS[1], 'pending', -1)
  end
end
redis.call('ZREM', KEYS[2], unpack(ARGV))
return 1

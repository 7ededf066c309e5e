-- Undo an admission whose message could not be queued: the request was never accepted.
-- KEYS = event, admitted, marker, unfinished, line; ARGV = user id, request id.
if redis.call('DEL', KEYS[3]) == 1 and redis.call('HEXISTS', KEYS[1], 'cap') == 1 then
  redis.call('HINCRBY', KEYS[1], 'accepted', -1)
  redis.call('HINCRBY', KEYS[1], 'pending', -1)
end
redis.call('ZREM', KEYS[4], ARGV[2])
redis.call('ZREM', KEYS[5], ARGV[2])
local holder = redis.call('HGET', KEYS[2], ARGV[1])
if holder then
  local id, n = string.match(holder, '^([^*]*)%*?(%d*)$')
  if id == ARGV[2] then
    redis.call('HDEL', KEYS[2], ARGV[1])
    if redis.call('HEXISTS', KEYS[1], 'taken') == 1 then
      redis.call('HINCRBY', KEYS[1], 'taken', -(tonumber(n) or 1))
    end
  end
end
return 1

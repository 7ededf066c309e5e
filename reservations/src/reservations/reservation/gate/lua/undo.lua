-- Undo an admission whose message could not be queued: the request was never accepted.
if redis.call('DEL', KEYS[3]) == 1 and redis.call('HEXISTS', KEYS[1], 'cap') == 1 then
  redis.call('HINCRBY', KEYS[1], 'accepted', -1)
  redis.call('HINCRBY', KEYS[1], 'pending', -1)
end
redis.call('ZREM', KEYS[4], ARGV[2])
redis.call('ZREM', KEYS[5], ARGV[2])
if redis.call('HGET', KEYS[2], ARGV[1]) == ARGV[2] then redis.call('HDEL', KEYS[2], ARGV[1]) end
return 1

-- A gate found behind its checkpoint (Redis came back from an older append-only file, or a
-- replica that missed writes took over): count on from the checkpoint, number past it.
if redis.call('HEXISTS', KEYS[1], 'cap') == 0 then return 0 end
local moved = 0
if tonumber(redis.call('HGET', KEYS[1], 'accepted') or '0') < tonumber(ARGV[1]) then
  redis.call('HSET', KEYS[1], 'accepted', ARGV[1])
  moved = 1
end
if tonumber(redis.call('HGET', KEYS[1], 'seq') or '0') < tonumber(ARGV[2]) then
  redis.call('HSET', KEYS[1], 'seq', ARGV[2] + ARGV[3])
  moved = 1
end
return moved

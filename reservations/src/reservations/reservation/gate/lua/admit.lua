if redis.call('EXISTS', KEYS[3]) == 0 then return {'NO_USER', 0} end
local state = redis.call('HMGET', KEYS[1], 'cap', 'wl')
local cap = state[1]
if not cap then return {'NO_EVENT', 0} end
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
redis.call('HINCRBY', KEYS[1], 'accepted', 1)
redis.call('HINCRBY', KEYS[1], 'pending', 1)
local verdict
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then
  verdict = 'DUPLICATE'
elseif redis.call('HLEN', KEYS[2]) >= tonumber(cap) then
  -- An event with a waitlist queues it: the workers put it in line, or give it a seat that
  -- came back meanwhile.
  if state[2] == '1' then verdict = 'WAITLISTED' else verdict = 'SOLD_OUT' end
else
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
  verdict = 'ADMITTED'
end
local marker = ARGV[4] .. ':' .. ARGV[1] .. ':' .. seq .. ':' .. ARGV[3] .. ':' .. verdict
redis.call('SET', KEYS[4], marker, 'EX', ARGV[5])
redis.call('ZADD', KEYS[5], ARGV[3], ARGV[2])
redis.call('ZADD', KEYS[6], seq, ARGV[2])
return {verdict, seq}

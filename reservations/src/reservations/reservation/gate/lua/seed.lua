-- Seed an event's state unless another request seeded it first. The admitted users are written
-- (HSETNX) before this runs; nothing is admitted meanwhile because the event has no capacity.
if redis.call('HEXISTS', KEYS[1], 'cap') == 1 then return 0 end
redis.call('HSET', KEYS[1], 'cap', ARGV[1], 'seq', ARGV[2], 'accepted', ARGV[3], 'pending', 0,
  'wl', ARGV[4])
return 1

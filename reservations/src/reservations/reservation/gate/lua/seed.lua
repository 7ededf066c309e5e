-- Seed an event's state unless another request seeded it first. The admitted users are written
-- (HSETNX) before this runs; nothing is admitted meanwhile because the event has no capacity.
-- KEYS = event, admitted; ARGV = capacity, last seq, accepted, waitlist (1/0), max per user.
if redis.call('HEXISTS', KEYS[1], 'cap') == 1 then return 0 end
local taken = 0
local holders = redis.call('HVALS', KEYS[2])
for _, holder in ipairs(holders) do
  taken = taken + (tonumber(string.match(holder, '%*(%d+)$')) or 1)
end
redis.call('HSET', KEYS[1], 'cap', ARGV[1], 'seq', ARGV[2], 'accepted', ARGV[3], 'pending', 0,
  'wl', ARGV[4], 'mpu', ARGV[5], 'taken', taken)
return 1

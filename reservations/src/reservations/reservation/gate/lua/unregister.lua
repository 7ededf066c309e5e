-- Take an event out of the registry if its count is the one ``retire.lua`` returned.
-- KEYS = registry; ARGV = event id, count.
local count = redis.call('ZSCORE', KEYS[1], ARGV[1])
if count and tonumber(count) == tonumber(ARGV[2]) then
  redis.call('ZREM', KEYS[1], ARGV[1])
  return 1
end
return 0

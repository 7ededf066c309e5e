-- Compare-and-delete seats: ARGV = user id, holder, user id, holder, ...; an empty holder
-- releases whoever holds the seat. Returns how many were released.
local released = 0
for i = 1, #ARGV, 2 do
  local holder = redis.call('HGET', KEYS[1], ARGV[i])
  if holder and (ARGV[i + 1] == '' or holder == ARGV[i + 1]) then
    redis.call('HDEL', KEYS[1], ARGV[i])
    released = released + 1
  end
end
return released

-- Compare-and-delete seats: KEYS = admitted, event; ARGV = user id, holder, user id, holder, ...
-- A holder matches the seat's request id (with or without its "*<n>" seat count); an empty
-- holder releases whoever holds the seat. Returns how many were released.
local released = 0
local seats = 0
for i = 1, #ARGV, 2 do
  local holder = redis.call('HGET', KEYS[1], ARGV[i])
  if holder then
    local id, n = string.match(holder, '^([^*]*)%*?(%d*)$')
    local wanted = string.match(ARGV[i + 1], '^([^*]*)')
    if wanted == '' or id == wanted then
      redis.call('HDEL', KEYS[1], ARGV[i])
      released = released + 1
      seats = seats + (tonumber(n) or 1)
    end
  end
end
if seats > 0 and redis.call('HEXISTS', KEYS[2], 'taken') == 1 then
  redis.call('HINCRBY', KEYS[2], 'taken', -seats)
end
return released

-- Give seats to users PostgreSQL says hold one and the gate forgot: KEYS = admitted, event;
-- ARGV = user id, holder, ... (a holder "<request id>*<n>" holds n seats).
local restored = 0
local seats = 0
for i = 1, #ARGV, 2 do
  if redis.call('HSETNX', KEYS[1], ARGV[i], ARGV[i + 1]) == 1 then
    restored = restored + 1
    seats = seats + (tonumber(string.match(ARGV[i + 1], '%*(%d+)$')) or 1)
  end
end
if seats > 0 and redis.call('HEXISTS', KEYS[2], 'taken') == 1 then
  redis.call('HINCRBY', KEYS[2], 'taken', seats)
end
return restored

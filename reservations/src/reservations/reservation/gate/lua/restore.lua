-- Give seats to users PostgreSQL says hold one and the gate forgot: ARGV = user id, holder, ...
local restored = 0
for i = 1, #ARGV, 2 do
  restored = restored + redis.call('HSETNX', KEYS[1], ARGV[i], ARGV[i + 1])
end
return restored

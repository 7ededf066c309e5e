-- KEYS: lease. ARGV: consumer, lease_ms, ids...
-- Extends only the leases this consumer still holds (XX on its own members), so a renewal can
-- never take back a message another consumer has reclaimed. Returns the ids no longer held.
local deadline = score(now_ms() + tonumber(ARGV[2]))
local members = {}
for i = 3, #ARGV do
    members[#members + 1] = ARGV[1] .. '|' .. ARGV[i]
end
local scores = redis.call('ZMSCORE', KEYS[1], unpack(members))
local renewed, lost = {}, {}
for i = 1, #members do
    if scores[i] then
        renewed[#renewed + 1] = deadline
        renewed[#renewed + 1] = members[i]
    else
        lost[#lost + 1] = ARGV[i + 2]
    end
end
if #renewed > 0 then
    redis.call('ZADD', KEYS[1], 'XX', unpack(renewed))
end
return lost

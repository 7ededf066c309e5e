-- KEYS: msg, dead, err. ARGV: ids, or none for (up to 1000 of) all.
local ids = ARGV
if #ids == 0 then
    ids = redis.call('ZRANGE', KEYS[2], 0, 999)
end
local deleted = 0
for _, id in ipairs(ids) do
    if redis.call('ZREM', KEYS[2], id) == 1 then
        redis.call('HDEL', KEYS[1], id)
        redis.call('HDEL', KEYS[3], id)
        deleted = deleted + 1
    end
end
return deleted

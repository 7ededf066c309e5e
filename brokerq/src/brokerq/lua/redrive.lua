-- KEYS: msg, ready, dead, err, wake. ARGV: ids, or none for (up to 1000 of) all.
-- Dead letters go back to waiting at their original rank, with a fresh try count.
local ids = ARGV
if #ids == 0 then
    ids = redis.call('ZRANGE', KEYS[3], 0, 999)
end
local moved = 0
for _, id in ipairs(ids) do
    if redis.call('ZREM', KEYS[3], id) == 1 then
        local v = redis.call('HGET', KEYS[1], id)
        if v then
            local _, prio = header(v)
            redis.call('HSET', KEYS[1], id, with_failures(v, 0))
            redis.call('ZADD', KEYS[2], rank(id, prio), id)
            redis.call('HDEL', KEYS[4], id)
            moved = moved + 1
        end
    end
end
if moved > 0 then
    wake(KEYS[5])
end
return moved

-- KEYS: msg, dead, err. ARGV: offset, limit.
-- Returns flat groups of (id, dead_at_ms, stored value, error).
local offset, limit = tonumber(ARGV[1]), tonumber(ARGV[2])
local page = redis.call('ZRANGE', KEYS[2], offset, offset + limit - 1, 'WITHSCORES')
local out = {}
for i = 1, #page, 2 do
    local id = page[i]
    out[#out + 1] = id
    out[#out + 1] = page[i + 1]
    out[#out + 1] = redis.call('HGET', KEYS[1], id) or ''
    out[#out + 1] = redis.call('HGET', KEYS[3], id) or ''
end
return out

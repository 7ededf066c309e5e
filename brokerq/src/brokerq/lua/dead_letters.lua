-- KEYS: msg, dead, err. ARGV: first and last index of the page.
-- Returns flat groups of (id, dead_at_ms, stored value, error).
-- The indexes go to ZRANGE as given: Lua's numbers are doubles, exact only up to 2^53.
local page = redis.call('ZRANGE', KEYS[2], ARGV[1], ARGV[2], 'WITHSCORES')
local out = {}
for i = 1, #page, 2 do
    local id = page[i]
    out[#out + 1] = id
    out[#out + 1] = page[i + 1]
    out[#out + 1] = redis.call('HGET', KEYS[1], id) or ''
    out[#out + 1] = redis.call('HGET', KEYS[3], id) or ''
end
return out

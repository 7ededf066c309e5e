-- KEYS: seq, msg, ready, delayed, wake, stats, then one dedup key per exactly-once message.
-- ARGV[1] = 'p': ARGV[2..] are payloads;
--           'd': ARGV[2] is the dedup window in ms for all, ARGV[3..] are payloads;
--           'x': groups of (payload, priority, delay_ms, dedup_ms, headers JSON or '').
-- Returns, space-separated (one reply for the client to parse, not one per message), for each
-- message its id, or '=' .. the id of the message it duplicates.
local now = now_ms()
local mode = ARGV[1]
local first = mode == 'd' and 3 or 2
local step = mode == 'x' and 5 or 1
local n = (#ARGV - first + 1) / step
local seq = redis.call('INCRBY', KEYS[1], n) - n
local was_empty = redis.call('EXISTS', KEYS[3]) == 0
local out, stored, ranked = {}, {}, {}
local dedup_key = 7
local delayed = false
for i = 0, n - 1 do
    local base = first + i * step
    seq = seq + 1
    local id = string.format('%d-%d', now, seq)
    local prio, delay, dedup_ms, headers = 0, 0, 0, ''
    if mode == 'd' then
        dedup_ms = tonumber(ARGV[2])
    elseif mode == 'x' then
        prio, delay, dedup_ms = tonumber(ARGV[base + 1]), tonumber(ARGV[base + 2]), tonumber(ARGV[base + 3])
        if ARGV[base + 4] ~= '' then
            headers = ' ' .. ARGV[base + 4]
        end
    end
    local duplicate = false
    if dedup_ms > 0 then
        local key = KEYS[dedup_key]
        dedup_key = dedup_key + 1
        if not redis.call('SET', key, id, 'NX', 'PX', dedup_ms) then
            duplicate = redis.call('GET', key)
        end
    end
    if duplicate then
        out[#out + 1] = '=' .. duplicate
    else
        stored[#stored + 1] = id
        stored[#stored + 1] = '0 ' .. prio .. headers .. '\n' .. ARGV[base]
        if delay > 0 then
            redis.call('ZADD', KEYS[4], score(now + delay), id)
            delayed = true
        else
            ranked[#ranked + 1] = score(seq - prio * PRIO_SPAN)
            ranked[#ranked + 1] = id
        end
        out[#out + 1] = id
    end
end
if #stored > 0 then
    redis.call('HSET', KEYS[2], unpack(stored))
    redis.call('HINCRBY', KEYS[6], 'produced', #stored / 2)
end
if #ranked > 0 then
    redis.call('ZADD', KEYS[3], unpack(ranked))
end
-- A delayed message may be due before the time the idle consumers are waiting for.
if (was_empty and #ranked > 0) or delayed then
    wake(KEYS[5])
end
return table.concat(out, ' ')

-- KEYS: seq, msg, ready, delayed, wake, stats, dedup generation a, dedup generation b, dedup meta.
-- ARGV[1] = 'p': ARGV[2..] are payloads;
--           'd': ARGV[2] is the dedup window in ms for all, then pairs (payload, dedup field);
--           'x': groups of (payload, priority, delay_ms, dedup_ms, headers JSON or '',
--                dedup field or '').
-- Returns, space-separated (one reply for the client to parse, not one per message), for each
-- message its id, or '=' .. the id of the message it duplicates.
--
-- Exactly-once state: two hashes, the current and the previous generation, field = the dedup
-- key, value = "<expiry ms> <id>". A produce is a duplicate while an unexpired entry exists in
-- either. New entries go to the current one. Once every entry of the previous generation has
-- expired (the meta's pexp), it is dropped and the current one becomes the previous: an entry is
-- never dropped before it expires, and no entry needs a key or a timer of its own.
local now = now_ms()
local mode = ARGV[1]
local first = mode == 'd' and 3 or 2
local step = mode == 'p' and 1 or (mode == 'd' and 2 or 6)
local field_at = mode == 'd' and 1 or 5
local n = (#ARGV - first + 1) / step
local seq = redis.call('INCRBY', KEYS[1], n) - n
local was_empty = redis.call('EXISTS', KEYS[3]) == 0
local out, stored, ranked = {}, {}, {}
local delayed = false

-- Look up every dedup field of the batch at once, in both generations.
local fields = {}
if mode ~= 'p' then
    for i = first + field_at, #ARGV, step do
        local f = ARGV[i]
        if f ~= '' then
            fields[#fields + 1] = f
        end
    end
end
local cur, cur_key, pexp, cexp, found_cur, found_prev
if #fields > 0 then
    local meta = redis.call('HMGET', KEYS[9], 'cur', 'pexp', 'cexp')
    cur = meta[1] or 'a'
    pexp, cexp = tonumber(meta[2]) or 0, tonumber(meta[3]) or 0
    if now >= pexp then
        -- Everything in the previous generation has expired: drop it and rotate.
        local old_prev = cur == 'a' and 'b' or 'a'
        redis.call('UNLINK', old_prev == 'a' and KEYS[7] or KEYS[8])
        cur, pexp, cexp = old_prev, cexp, 0
    end
    cur_key = cur == 'a' and KEYS[7] or KEYS[8]
    local prev_key = cur == 'a' and KEYS[8] or KEYS[7]
    found_cur = redis.call('HMGET', cur_key, unpack(fields))
    -- Most of the time there is no previous generation (it is dropped once all expired).
    found_prev = redis.call('EXISTS', prev_key) == 1 and redis.call('HMGET', prev_key, unpack(fields)) or {}
end

local function live_id(v)
    if not v then
        return nil
    end
    local sp = string.find(v, ' ', 1, true)
    if tonumber(string.sub(v, 1, sp - 1)) > now then
        return string.sub(v, sp + 1)
    end
    return nil
end

local seen, entries, j = {}, {}, 0

-- The id of the live message that already holds this dedup field (in this batch or before);
-- or nil, once the field is claimed for id until expiry ("<expiry> " is expiry_text).
local function claim(field, id, expiry, expiry_text)
    j = j + 1
    local duplicate = seen[field] or live_id(found_cur[j]) or live_id(found_prev[j])
    if not duplicate then
        seen[field] = id
        entries[#entries + 1] = field
        entries[#entries + 1] = expiry_text .. id
        if expiry > cexp then
            cexp = expiry
        end
    end
    return duplicate
end

if mode ~= 'x' then
    -- No priority, delay or headers: the common case, with the per-message work cut down.
    local expiry = mode == 'd' and now + tonumber(ARGV[2]) or 0
    local expiry_prefix = score(expiry) .. ' '
    for i = first, #ARGV, step do
        seq = seq + 1
        local id = string.format('%d-%d', now, seq)
        local duplicate = mode == 'd' and claim(ARGV[i + 1], id, expiry, expiry_prefix)
        if duplicate then
            out[#out + 1] = '=' .. duplicate
        else
            stored[#stored + 1] = id
            stored[#stored + 1] = '0 0\n' .. ARGV[i]
            ranked[#ranked + 1] = score(seq)
            ranked[#ranked + 1] = id
            out[#out + 1] = id
        end
    end
else
    for base = first, #ARGV, step do
        seq = seq + 1
        local id = string.format('%d-%d', now, seq)
        local prio, delay, dedup_ms = tonumber(ARGV[base + 1]), tonumber(ARGV[base + 2]), tonumber(ARGV[base + 3])
        local headers = ARGV[base + 4] ~= '' and ' ' .. ARGV[base + 4] or ''
        local field = ARGV[base + 5]
        local duplicate = nil
        if field ~= '' then
            local expiry = now + dedup_ms
            duplicate = claim(field, id, expiry, score(expiry) .. ' ')
        end
        if duplicate then
            out[#out + 1] = '=' .. duplicate
        else
            stored[#stored + 1] = id
            -- The priority as the client wrote it: formatting a Lua number is slow.
            stored[#stored + 1] = '0 ' .. ARGV[base + 1] .. headers .. '\n' .. ARGV[base]
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
end
if #fields > 0 then
    if #entries > 0 then
        redis.call('HSET', cur_key, unpack(entries))
    end
    redis.call('HSET', KEYS[9], 'cur', cur, 'pexp', score(pexp), 'cexp', score(cexp))
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

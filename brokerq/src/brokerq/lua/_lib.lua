-- Shared by every script (prepended when loaded).
-- A stored message is "<failures> <priority>[ <headers JSON>]\n<payload>"; its id is
-- "<produced_ms>-<seq>".
-- Waiting messages are ranked by seq - priority * 2^42: higher priority first, then arrival.
local PRIO_SPAN = 4398046511104

local function now_ms()
    local t = redis.call('TIME')
    return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function header(v)
    local failures, prio = string.match(v, '^(%d+) (%-?%d+)[ \n]')
    return tonumber(failures), tonumber(prio)
end

-- Scores are passed as strings: Lua's default number format keeps only 14 digits.
local function score(n)
    return string.format('%d', n)
end

local function rank(id, prio)
    return score(tonumber(string.match(id, '%-(%d+)$')) - prio * PRIO_SPAN)
end

local function with_failures(v, failures)
    return (string.gsub(v, '^%d+', tostring(failures), 1))
end

-- Consumers block on this list; one token is enough, each woken consumer passes it on.
local function wake(key)
    redis.call('LPUSH', key, 1)
    redis.call('LTRIM', key, 0, 0)
end

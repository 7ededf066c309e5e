-- KEYS: msg, ready, delayed, lease, dead, err, wake, stats
-- ARGV: consumer, fetch, lease_ms, max_attempts, #acks, #retries, #dead, #releases,
--       then ack ids, (id, delay_ms, error) retries, (id, reason) dead, release ids.
-- A lease is the member "<consumer>|<id>" of the lease zset, scored by its deadline: removing
-- exactly that member proves the consumer still held the message.
-- Returns {deliveries as id, value pairs; lost ids; wait hint ms}.
local now = now_ms()
local consumer = ARGV[1]
local fetch, lease_ms, max_attempts = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local n_ack, n_retry, n_dead, n_release = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local lost = {}
local counts = {processed = 0, retried = 0, redelivered = 0, dead_lettered = 0}

local function fail(id, reason, delay, counter, force_dead)
    local v = redis.call('HGET', KEYS[1], id)
    if not v then
        return
    end
    local failures = header(v) + 1
    redis.call('HSET', KEYS[1], id, with_failures(v, failures))
    redis.call('HSET', KEYS[6], id, reason)
    if force_dead or failures >= max_attempts then
        redis.call('ZADD', KEYS[5], score(now), id)
        counts.dead_lettered = counts.dead_lettered + 1
    elseif delay > 0 then
        redis.call('ZADD', KEYS[3], score(now + delay), id)
        counts[counter] = counts[counter] + 1
    else
        local _, prio = header(v)
        redis.call('ZADD', KEYS[2], rank(id, prio), id)
        counts[counter] = counts[counter] + 1
    end
end

local function owned(id)
    return redis.call('ZREM', KEYS[4], consumer .. '|' .. id) == 1
end

local i = 9
if n_ack > 0 then
    local members = {}
    for j = 0, n_ack - 1 do
        members[j + 1] = consumer .. '|' .. ARGV[i + j]
    end
    local scores = redis.call('ZMSCORE', KEYS[4], unpack(members))
    local done = {}
    for j = 1, n_ack do
        if scores[j] then
            done[#done + 1] = ARGV[i + j - 1]
        else
            lost[#lost + 1] = ARGV[i + j - 1]
            members[j] = nil
        end
    end
    if #done > 0 then
        local held = {}
        for j = 1, n_ack do
            if members[j] then
                held[#held + 1] = members[j]
            end
        end
        redis.call('ZREM', KEYS[4], unpack(held))
        redis.call('HDEL', KEYS[1], unpack(done))
        -- Errors are kept only for messages that failed once; usually there are none.
        if redis.call('EXISTS', KEYS[6]) == 1 then
            redis.call('HDEL', KEYS[6], unpack(done))
        end
        counts.processed = #done
    end
    i = i + n_ack
end
for _ = 1, n_retry do
    local id = ARGV[i]
    if owned(id) then
        fail(id, ARGV[i + 2], tonumber(ARGV[i + 1]), 'retried', false)
    else
        lost[#lost + 1] = id
    end
    i = i + 3
end
for _ = 1, n_dead do
    local id = ARGV[i]
    if owned(id) then
        fail(id, ARGV[i + 1], 0, 'retried', true)
    else
        lost[#lost + 1] = id
    end
    i = i + 2
end
for _ = 1, n_release do
    local id = ARGV[i]
    if owned(id) then
        local v = redis.call('HGET', KEYS[1], id)
        if v then
            local _, prio = header(v)
            redis.call('ZADD', KEYS[2], rank(id, prio), id)
        end
    else
        lost[#lost + 1] = id
    end
    i = i + 1
end

-- Leases whose consumer stopped renewing them (crashed, hung, partitioned): back to the queue.
local expired = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', score(now), 'LIMIT', 0, 100)
for _, member in ipairs(expired) do
    redis.call('ZREM', KEYS[4], member)
    local sep = string.find(member, '|', 1, true)
    local reason = 'lease expired: consumer ' .. string.sub(member, 1, sep - 1) .. ' stopped renewing it'
    fail(string.sub(member, sep + 1), reason, 0, 'redelivered', false)
end

local due = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', score(now), 'LIMIT', 0, 1000)
if #due > 0 then
    local ranked = {}
    for _, id in ipairs(due) do
        local v = redis.call('HGET', KEYS[1], id)
        if v then
            local _, prio = header(v)
            ranked[#ranked + 1] = rank(id, prio)
            ranked[#ranked + 1] = id
        end
    end
    redis.call('ZREM', KEYS[3], unpack(due))
    if #ranked > 0 then
        redis.call('ZADD', KEYS[2], unpack(ranked))
    end
end

local deliveries = {}
if fetch > 0 then
    -- ZRANGE and ZREMRANGEBYRANK rather than ZPOPMIN, whose reply formats every score.
    local ids = redis.call('ZRANGE', KEYS[2], 0, fetch - 1)
    if #ids > 0 then
        redis.call('ZREMRANGEBYRANK', KEYS[2], 0, #ids - 1)
        local leases = {}
        local deadline = score(now + lease_ms)
        for j = 1, #ids do
            leases[#leases + 1] = deadline
            leases[#leases + 1] = consumer .. '|' .. ids[j]
        end
        redis.call('ZADD', KEYS[4], unpack(leases))
        local values = redis.call('HMGET', KEYS[1], unpack(ids))
        for j = 1, #ids do
            if values[j] then
                deliveries[#deliveries + 1] = ids[j]
                deliveries[#deliveries + 1] = values[j]
            else
                redis.call('ZREM', KEYS[4], consumer .. '|' .. ids[j])
            end
        end
    end
end

for name, count in pairs(counts) do
    if count > 0 then
        redis.call('HINCRBY', KEYS[8], name, count)
    end
end
if redis.call('EXISTS', KEYS[2]) == 1 then
    wake(KEYS[7])
end

local hint = -1
local first = redis.call('ZRANGE', KEYS[3], 0, 0, 'WITHSCORES')
if #first > 0 then
    hint = tonumber(first[2]) - now
end
first = redis.call('ZRANGE', KEYS[4], 0, 0, 'WITHSCORES')
if #first > 0 then
    local until_expiry = tonumber(first[2]) - now + 1
    if hint < 0 or until_expiry < hint then
        hint = until_expiry
    end
end
if hint >= 0 and hint < 1 then
    hint = 1
end
return {deliveries, lost, hint}

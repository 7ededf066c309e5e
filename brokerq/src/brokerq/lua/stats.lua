-- KEYS: ready, lease, delayed, dead, stats
-- Returns {waiting, in_flight, delayed, dead, stats hash as pairs, head id or false, now_ms}.
local head = redis.call('ZRANGE', KEYS[1], 0, 0)
return {
    redis.call('ZCARD', KEYS[1]),
    redis.call('ZCARD', KEYS[2]),
    redis.call('ZCARD', KEYS[3]),
    redis.call('ZCARD', KEYS[4]),
    redis.call('HGETALL', KEYS[5]),
    head[1] or false,
    now_ms(),
}

-- An event with no unfinished request leaves the registry of events that recovery looks at:
-- first its flag here (a request admitted after this registers it again), then its entry in the
-- registry, by ``unregister.lua``, if the entry's count is still the one returned here (a
-- registration in between raised it: the entry stays).
-- KEYS = event, unfinished; returns the event's registration count, or false to keep the entry.
if redis.call('ZCARD', KEYS[2]) > 0 then return false end
local registration = redis.call('HGET', KEYS[1], 'reg')
if not registration then return false end
redis.call('HDEL', KEYS[1], 'reg')
return registration

-- KEYS = event, admitted, marker, unfinished, line (one event's keys: one Cluster slot); ARGV =
-- user id, request id, accepted at (ms), event id, marker TTL (s), quantity, registration (0, or
-- the event's count in the registry of events with unfinished requests, which the caller has
-- just raised).
-- A seat holder is "<request id>" for one seat, "<request id>*<n>" for n; ``taken`` counts seats.
local state = redis.call('HMGET', KEYS[1], 'cap', 'wl', 'taken', 'mpu', 'reg')
local cap = state[1]
if not cap then return {'NO_EVENT', 0} end
-- Recovery finds unfinished requests through the registry, a key of another slot. reg is the
-- event's count there when it was last registered; an event leaves the registry only through
-- ``retire.lua`` and ``unregister.lua``, which clear reg and then remove the entry only if its
-- count is still reg: while reg is set here, the event is in the registry.
local registration = tonumber(ARGV[7])
if registration > 0 then
  if not state[5] or registration > tonumber(state[5]) then
    redis.call('HSET', KEYS[1], 'reg', registration)
  end
elseif not state[5] then
  return {'UNREGISTERED', 0}
end
local quantity = tonumber(ARGV[6])
local taken = tonumber(state[3])
if not taken then
  -- A gate from before quantities: one seat per holder.
  taken = redis.call('HLEN', KEYS[2])
  redis.call('HSET', KEYS[1], 'taken', taken)
end
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
redis.call('HINCRBY', KEYS[1], 'accepted', 1)
redis.call('HINCRBY', KEYS[1], 'pending', 1)
local verdict
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then
  verdict = 'DUPLICATE'
elseif quantity > tonumber(state[4] or '1') then
  verdict = 'OVER_LIMIT'
elseif taken + quantity > tonumber(cap) then
  -- An event with a waitlist queues it: the workers put it in line, or give it a seat that
  -- came back meanwhile.
  if state[2] == '1' then verdict = 'WAITLISTED' else verdict = 'SOLD_OUT' end
else
  local holder = ARGV[2]
  if quantity > 1 then holder = holder .. '*' .. quantity end
  redis.call('HSET', KEYS[2], ARGV[1], holder)
  redis.call('HINCRBY', KEYS[1], 'taken', quantity)
  verdict = 'ADMITTED'
end
local marker = ARGV[4] .. ':' .. ARGV[1] .. ':' .. seq .. ':' .. ARGV[3] .. ':' .. verdict
if quantity > 1 then marker = marker .. ':' .. quantity end
redis.call('SET', KEYS[3], marker, 'EX', ARGV[5])
redis.call('ZADD', KEYS[4], ARGV[3], ARGV[2])
redis.call('ZADD', KEYS[5], seq, ARGV[2])
return {verdict, seq}

-- One Lua call that runs many BullMQ scripts: a consumer step or a batch of adds.
--
-- batch.py puts BullMQ's own scripts (bundled by the PyPI bullmq package, includes expanded)
-- in front of this file, each unchanged as the body of a function bq_<name>(KEYS, ARGV). Each
-- operation below is exactly the BullMQ script Node would run, with the keys Node would pass;
-- the batch only saves round trips and per-command client work, and makes a step atomic.
--
-- ARGV: key prefix of the queue (bull:<queue>:), timestamp, number of shared blobs, the blobs
-- (msgpack options reused by many operations), then the operations, each an op code and a fixed
-- number of arguments (a blob argument is a 1-based index into the blobs, 0 for none):
--
--   P kind (s/d/p), msgpacked add args, data, opts blob, custom id: add a job
--     -> {job id, 1 if deduplicated else 0} (or {negative code, 0})
--   F job id, target (completed/failed), value, opts blob, fields blob: moveToFinished
--   D job id, token, delay, fields blob: moveToDelayed (a retry after its backoff)
--   R job id, token, push command, fields blob: retryJob (a retry now)
--   W job id, token: moveJobFromActiveToWait (a release)
--   S max stalled count, stalled interval: moveStalledJobsToWait
--   A count, opts blob: moveToActive up to count times -> {jobs, last reply}
--
-- Returns one reply per operation, in order.
local rcall = redis.call
local base = ARGV[1]
local now = ARGV[2]
local nblobs = tonumber(ARGV[3])
local blobs = {}
for i = 1, nblobs do blobs[i] = ARGV[3 + i] end
local function blob(i)
  i = tonumber(i)
  if i == 0 then return nil end
  return blobs[i]
end
local function ks(names)
  local t = {}
  for i, n in ipairs(names) do t[i] = base .. n end
  return t
end
local ADD_KEYS = {
  s = {"wait", "paused", "meta", "id", "completed", "delayed", "active", "events", "marker"},
  d = {"marker", "meta", "id", "delayed", "completed", "events"},
  p = {"marker", "meta", "id", "prioritized", "delayed", "completed", "active", "events", "pc"},
}
local ADD_FN = {s = bq_addStandard, d = bq_addDelayed, p = bq_addPrioritized}
local ACTIVE_KEYS = ks({"wait", "active", "prioritized", "events", "stalled", "limiter",
  "delayed", "paused", "meta", "pc", "marker"})
local out = {}
local pos = 4 + nblobs
local n = #ARGV
while pos <= n do
  local op = ARGV[pos]
  local r
  if op == "P" then
    local kind, packed, data, opts, custom = ARGV[pos + 1], ARGV[pos + 2], ARGV[pos + 3],
      blob(ARGV[pos + 4]), ARGV[pos + 5]
    pos = pos + 6
    local before = tonumber(rcall("GET", base .. "id") or "0")
    local existed = custom ~= "" and rcall("EXISTS", base .. custom) == 1
    local id = ADD_FN[kind](ks(ADD_KEYS[kind]), {packed, data, opts})
    if type(id) == "number" and id < 0 then
      r = {id, 0}
    else
      local want = custom
      if custom == "" then want = tostring(before + 1) end
      id = tostring(id)
      r = {id, (existed or id ~= want) and 1 or 0}
    end
  elseif op == "F" then
    local id, target, value, opts, fields = ARGV[pos + 1], ARGV[pos + 2], ARGV[pos + 3],
      blob(ARGV[pos + 4]), blob(ARGV[pos + 5])
    pos = pos + 6
    local keys = ks({"wait", "active", "prioritized", "events", "stalled", "limiter", "delayed",
      "paused", "meta", "pc", target})
    keys[12] = base .. id
    keys[13] = base .. "metrics:" .. target
    keys[14] = base .. "marker"
    local prop = "failedReason"
    if target == "completed" then prop = "returnvalue" end
    r = bq_moveToFinished(keys, {id, now, prop, value, target, "", base, opts, fields})
  elseif op == "D" then
    local id, token, delay, fields = ARGV[pos + 1], ARGV[pos + 2], ARGV[pos + 3],
      blob(ARGV[pos + 4])
    pos = pos + 5
    local keys = ks({"marker", "active", "prioritized", "delayed"})
    keys[5] = base .. id
    local rest = ks({"events", "meta", "stalled", "wait", "limiter", "pc"})
    for i = 1, 6 do keys[5 + i] = rest[i] end
    r = bq_moveToDelayed(keys, {base, now, id, token, delay, "0", fields or "", "0"})
  elseif op == "R" then
    local id, token, push, fields = ARGV[pos + 1], ARGV[pos + 2], ARGV[pos + 3],
      blob(ARGV[pos + 4])
    pos = pos + 5
    local keys = ks({"active", "wait", "paused"})
    keys[4] = base .. id
    local rest = ks({"meta", "events", "delayed", "prioritized", "pc", "marker", "stalled"})
    for i = 1, 7 do keys[4 + i] = rest[i] end
    r = bq_retryJob(keys, {base, now, push, id, token, fields})
  elseif op == "W" then
    local id, token = ARGV[pos + 1], ARGV[pos + 2]
    pos = pos + 3
    r = bq_moveJobFromActiveToWait(ks({"active", "wait", "stalled", "paused", "meta", "limiter",
      "prioritized", "marker", "events"}), {id, token, base .. id})
  elseif op == "S" then
    local max, interval = ARGV[pos + 1], ARGV[pos + 2]
    pos = pos + 3
    r = bq_moveStalledJobsToWait(ks({"stalled", "wait", "active", "stalled-check", "meta",
      "paused", "marker", "events", "repeat"}), {max, base, now, interval})
  elseif op == "A" then
    local count, opts = tonumber(ARGV[pos + 1]), blob(ARGV[pos + 2])
    pos = pos + 3
    local jobs = {}
    local last = {0, 0, 0, 0}
    for _ = 1, count do
      local got = bq_moveToActive(ACTIVE_KEYS, {base, now, opts})
      if type(got[1]) ~= "table" then
        last = got
        break
      end
      jobs[#jobs + 1] = got
    end
    r = {jobs, last}
  else
    return redis.error_reply("brokerq bullmq batch: unknown op " .. tostring(op))
  end
  if r == nil then r = false end
  out[#out + 1] = r
end
return out

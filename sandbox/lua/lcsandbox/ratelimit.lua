-- Rate limits per location, as the API announces them:
--   burst: at most `limit` requests per `interval_ms`. window = "fixed" (the default): a window that
--          opens with the first request after the previous window ended (so a client that waits
--          Retry-After seconds always finds a fresh window). window = "sliding": exact, at most
--          `limit` accepted requests in ANY `interval_ms` (a log of the accepted ones), the strictest
--          a server can be: tests prove "no 429" against it;
--   daily: at most `daily` requests per UTC day.
-- A request refused with 429 does not count. With limits off nothing counts and nothing is refused,
-- but the headers are still sent (remaining = the full limit).
local M = {}

local floor, ceil, tostring = math.floor, math.ceil, tostring
-- ngx.now() is the time cached when the event loop last woke up; refresh it (a vDSO call) so that
-- a client that waited out a window exactly is not refused for a stale clock.
local now = os.time
if ngx then
  local ngx_now, update = ngx.now, ngx.update_time
  now = function() update() return ngx_now() end
end

M.config = { limit = 100, interval_ms = 10000, daily = 200000, enabled = true, window = "fixed" }
local counters = {} -- location -> { start, count, day, day_count, log = {times}, head = first live index }

-- The sandbox runs one nginx worker (bin/leadconnector-sandbox: worker_processes 1), so these counters are
-- the one budget of every connection to it.

function M.configure(t)
  local c = M.config
  if t.limit ~= nil then c.limit = t.limit end
  if t.interval_ms ~= nil then c.interval_ms = t.interval_ms end
  if t.daily ~= nil then c.daily = t.daily end
  if t.enabled ~= nil then c.enabled = t.enabled end
  if t.window ~= nil then
    if t.window ~= "fixed" and t.window ~= "sliding" then return nil, "rate_window must be fixed or sliding" end
    c.window = t.window
  end
  return true
end

function M.reset() counters = {} end

local function counter(loc, t)
  local k = counters[loc]
  local day = floor(t / 86400)
  if not k then
    k = { start = t, count = 0, day = day, day_count = 0 }
    counters[loc] = k
  end
  local w = M.config.interval_ms / 1000
  if M.config.window == "sliding" then
    -- exact: the accepted requests of (t - w, t]; the oldest is log[head]
    local log, head = k.log, k.head
    if not log then log, head = {}, 1 k.log = log end
    while head <= #log and log[head] <= t - w do log[head] = false head = head + 1 end
    if head > #log then
      log, head = {}, 1
      k.log = log
    elseif head > 1024 and head * 2 > #log then -- compact: keep only the live part
      local live = {}
      for i = head, #log do live[#live + 1] = log[i] end
      log, head = live, 1
      k.log = log
    end
    k.head = head
    k.count = #log - head + 1
    k.start = log[head] or t
  elseif t - k.start >= w then
    k.start, k.count = t, 0
  end
  if k.day ~= day then
    k.day, k.day_count = day, 0
  end
  return k
end

-- Fills h (a header table) with the X-RateLimit-* headers for loc. When take is true, counts one
-- request; returns nil when it must be refused, plus the Retry-After seconds.
function M.check(loc, h, take)
  local c = M.config
  local limit, daily = c.limit, c.daily
  h["X-RateLimit-Max"] = limit
  h["X-RateLimit-Interval-Milliseconds"] = c.interval_ms
  h["X-RateLimit-Limit-Daily"] = daily
  if not c.enabled or not loc then
    h["X-RateLimit-Remaining"] = limit
    h["X-RateLimit-Daily-Remaining"] = daily
    return true
  end
  local t = now()
  local k = counter(loc, t)
  local refused, retry
  if k.count >= limit then
    refused = true
    retry = (k.start + c.interval_ms / 1000) - t
  elseif k.day_count >= daily then
    refused = true
    retry = (k.day + 1) * 86400 - t
  elseif take then
    k.count = k.count + 1
    k.day_count = k.day_count + 1
    if k.log then k.log[#k.log + 1] = t end
  end
  local rem = limit - k.count
  h["X-RateLimit-Remaining"] = rem > 0 and rem or 0
  local drem = daily - k.day_count
  h["X-RateLimit-Daily-Remaining"] = drem > 0 and drem or 0
  if refused and take then
    local s = ceil(retry)
    h["Retry-After"] = tostring(s > 0 and s or 1)
    return nil
  end
  return true
end

--- Another sender of the same location spends n requests of its budget now (as many as the limits let
-- through). Returns how many were counted.
function M.spend(loc, n)
  local spent, h = 0, {}
  for _ = 1, n do
    if not M.check(loc, h, true) then break end
    spent = spent + 1
  end
  return spent
end

return M

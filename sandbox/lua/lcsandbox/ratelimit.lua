-- Rate limits per location, as the API announces them:
--   burst: at most `limit` requests per `interval_ms`, a FIXED window that opens with the first
--          request after the previous window ended (so a client that waits Retry-After seconds
--          always finds a fresh window);
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

M.config = { limit = 100, interval_ms = 10000, daily = 200000, enabled = true }
local counters = {} -- location -> { start, count, day, day_count }

function M.configure(t)
  local c = M.config
  if t.limit ~= nil then c.limit = t.limit end
  if t.interval_ms ~= nil then c.interval_ms = t.interval_ms end
  if t.daily ~= nil then c.daily = t.daily end
  if t.enabled ~= nil then c.enabled = t.enabled end
end

function M.reset() counters = {} end

local function counter(loc, t)
  local k = counters[loc]
  local day = floor(t / 86400)
  if not k then
    k = { start = t, count = 0, day = day, day_count = 0 }
    counters[loc] = k
  end
  if t - k.start >= M.config.interval_ms / 1000 then
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

return M

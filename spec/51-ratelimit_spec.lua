-- Rate limits (issue 4, item 2) against the sandbox's own limiter, set to a small burst: the client follows
-- X-RateLimit-Remaining / -Interval-Milliseconds and waits for the next window instead of sending into a 429;
-- the budget is per token, shared by every client of that token; client:rate_limit() says what the headers said;
-- a wait that would pass the deadline ends the call at once, without sending.
--
-- The sandbox counts per location and the library per token, so every test has its own token and location:
-- no test starts with a budget another one spent (limiters live as long as the Lua state's clients do).
local core = require "leadconnector.core"
local helpers = require "helpers"
local lch = require "lchelpers"

local S = lch.scale
local LIMIT, INTERVAL_MS = 5, 600

describe("rate limits #ratelimit", function()
  local sb
  local tokens = {}
  for i = 1, 12 do tokens[i] = ("ratelimit-token-%d"):format(i) end
  local next_token = 0
  local seq = 0

  local spec = {}
  for i, t in ipairs(tokens) do spec[i] = t .. "@loc_rl_" .. i end
  helpers.sandbox_suite(function(s) sb = s end, { tokens = spec, rate_limit = LIMIT, rate_interval_ms = INTERVAL_MS },
    { rate_limit = LIMIT, rate_interval_ms = INTERVAL_MS })

  -- A client with a token (and server-side location) no other test has used.
  local function fresh_token()
    next_token = next_token + 1
    return assert(tokens[next_token], "add tokens")
  end
  local function client(opts)
    local o = { token = fresh_token(), max_retries = 0 }
    for k, v in pairs(opts or {}) do o[k] = v end
    return lch.client(sb, o)
  end
  local function send(c, opts)
    seq = seq + 1
    return c:send_message({ type = "SMS", contactId = "contact_rl_" .. seq, message = "n" .. seq }, opts)
  end
  local function statuses()
    local n429, n = lch.count_429(sb)
    return n, n429
  end

  it("a loop through one client never gets a 429: it waits for the next window", function()
    local c = client()
    local t0 = core.now()
    for i = 1, 2 * LIMIT + 2 do
      local sent, err = send(c)
      assert.is_nil(err, "call " .. i .. ": " .. tostring(err))
      assert.is_string(sent.messageId)
    end
    local took = core.now() - t0
    c:close()
    local n, n429 = statuses()
    assert.equals(2 * LIMIT + 2, n)
    assert.equals(0, n429)
    -- 12 calls through windows of 5: two waits for a new window
    local min_wait = 2 * INTERVAL_MS / 1000 * 0.9
    assert.is_true(took >= min_wait, ("took %.2f s, expected at least %.2f s of waiting"):format(took, min_wait))
    assert.is_true(took < 10 * S, ("took %.2f s"):format(took))
  end)

  it("with rate_limit = false the same loop runs into the server's 429", function()
    local c = client { rate_limit = false }
    local got
    for _ = 1, LIMIT + 3 do
      local sent, err = send(c)
      if not sent then
        got = err
        break
      end
    end
    c:close()
    assert.is_not_nil(got, "no 429 without the limiter: the test's burst is not what it should be")
    assert.equals("rate_limited", got.kind)
    assert.equals(429, got.status)
    assert.is_true(got.retry_after >= 0 and got.retry_after <= 1)
    local _, n429 = statuses()
    assert.equals(1, n429)
  end)

  it("two clients of one token share the budget", function()
    local token = fresh_token()
    local a = lch.client(sb, { token = token, max_retries = 0 })
    local b = lch.client(sb, { token = token, max_retries = 0 })
    for _ = 1, LIMIT do assert(send(a)) end -- a spends the window
    local t0 = core.now()
    local sent, err = send(b) -- b has not seen a single header itself, yet waits
    local took = core.now() - t0
    assert.is_nil(err, tostring(err))
    assert.is_string(sent.messageId)
    assert.is_true(took >= INTERVAL_MS / 1000 * 0.5, ("b did not wait (%.3f s)"):format(took))
    -- alternating between them for two more windows: still no 429
    for i = 1, 2 * LIMIT do assert(send(i % 2 == 0 and a or b)) end
    a:close()
    b:close()
    local _, n429 = statuses()
    assert.equals(0, n429)
  end)

  it("another token's budget is its own: its client does not wait", function()
    local a = client()
    for _ = 1, LIMIT do assert(send(a)) end
    local other = client()
    local t0 = core.now()
    assert(send(other))
    local took = core.now() - t0
    a:close()
    other:close()
    assert.is_true(took < INTERVAL_MS / 1000 * 0.5 * S, ("waited %.3f s for another token's budget"):format(took))
  end)

  it("client:rate_limit() reports the headers' values", function()
    local c = client()
    local rl = c:rate_limit()
    assert.is_nil(rl.remaining) -- nothing seen yet
    assert.equals(0, rl.wait)
    assert(send(c))
    rl = c:rate_limit()
    assert.equals(LIMIT, rl.max)
    assert.equals(LIMIT - 1, rl.remaining)
    assert.equals(INTERVAL_MS, rl.interval_ms)
    assert.equals(200000, rl.daily_limit)
    assert.equals(200000 - 1, rl.daily_remaining)
    assert.equals(0, rl.wait)
    for _ = 2, LIMIT do assert(send(c)) end
    rl = c:rate_limit()
    assert.equals(0, rl.remaining)
    assert.is_true(rl.wait > 0 and rl.wait <= INTERVAL_MS / 1000 + 0.1, "wait " .. tostring(rl.wait))
    c:close()
  end)

  it("a wait past the deadline: rate_limited at once, nothing sent", function()
    sb:config { rate_limit = LIMIT, rate_interval_ms = 30000 }
    local c = client()
    for _ = 1, LIMIT do assert(send(c)) end
    local before = statuses()
    local t0 = core.now()
    local sent, err = send(c, { deadline = 2 })
    local took = core.now() - t0
    assert.is_nil(sent)
    assert.equals("rate_limited", err.kind)
    assert.is_nil(err.status)
    assert.equals(0, err.attempts)
    assert.is_false(err.request_sent)
    assert.is_true(err.retry_after > 2 and err.retry_after <= 30.1, tostring(err.retry_after))
    assert.equals("POST", err.method)
    assert.is_true(took < 0.5 * S, ("took %.2f s"):format(took))
    assert.equals(before, statuses())
    assert.is_truthy(tostring(err):find("deadline", 1, true), tostring(err))
    c:close()
  end)

  it("a 429's Retry-After holds back the token's next call", function()
    local c = client { rate_limit = true }
    sb:fault { method = "POST", path = "/conversations/messages", status = 429, headers = { ["Retry-After"] = "1" } }
    local _, err = send(c)
    assert.equals("rate_limited", err.kind)
    assert.equals(1, err.attempts) -- max_retries = 0
    local t0 = core.now()
    assert(send(c))
    local took = core.now() - t0
    c:close()
    assert.is_true(took >= 0.8 and took < 2 * S, ("took %.2f s"):format(took))
  end)

  it("the daily budget spent (the last answer said Daily-Remaining 0): rate_limited at once, nothing sent", function()
    local to_midnight = 86400 - os.time() % 86400 -- the daily count renews at 00:00 UTC
    if to_midnight < 10 then core.sleep(to_midnight + 1) end
    sb:config { rate_limit = 100, rate_interval_ms = 10000, daily_limit = 3 }
    local c = client { max_retries = 3, deadline = 5 }
    for _ = 1, 3 do assert(send(c)) end
    local before = statuses()
    for _ = 1, 2 do
      local t0 = core.now()
      local sent, err = send(c)
      local took = core.now() - t0
      assert.is_nil(sent)
      assert.equals("rate_limited", err.kind)
      assert.is_nil(err.status)
      assert.is_true(err.retry_after > 5 and err.retry_after <= 3600, tostring(err.retry_after))
      assert.equals(0, err.attempts)
      assert.is_false(err.request_sent)
      assert.is_true(took < 1 * S, ("took %.2f s"):format(took))
    end
    assert.equals(before, statuses()) -- the headers foretold the 429: it was never sent into
    c:close()
  end)
end)

-- Issue 10 items 5 and 6: the single-state limiter against an exact sliding window (the strictest server), 20 per
-- 2 s. Each test has its own limiter (limiter.process() is a new budget), so none starts with another's sends.
describe("the limiter against an exact sliding window #ratelimit", function()
  local limiter = require "leadconnector.limiter"
  local leadconnector_new = require("leadconnector").new
  local sb
  local LIM, WIN_MS = 20, 2000
  local seq = 0

  lazy_setup(function()
    sb = helpers.start_sandbox { rate_limit = LIM, rate_interval_ms = WIN_MS, args = { "--rate-window", "sliding" } }
  end)
  lazy_teardown(function() if sb then sb:stop() end end)
  before_each(function() sb:reset() end)

  local function client(opts)
    local o = { max_retries = 0, deadline = 60, limiter = limiter.process() }
    for k, v in pairs(opts or {}) do o[k] = v end
    return lch.client(sb, o)
  end
  local function sends(n)
    local calls = {}
    for i = 1, n do
      seq = seq + 1
      calls[i] = { "send_message", { type = "SMS", contactId = "c_sw_" .. seq, message = "m" .. i } }
    end
    return calls
  end
  local function count_429() return lch.count_429(sb) end
  local function all_ok(results, n)
    local ok = 0
    for i = 1, n do
      if results[i].value then ok = ok + 1 end
    end
    return ok
  end

  it("the limiter option takes only a backend; shdict needs nginx; bad backend options are refused", function()
    local c, err = leadconnector_new { token = "t", limiter = {} }
    assert.is_nil(c)
    assert.equals("invalid", err.kind)
    assert.equals("limiter", err.field)
    assert.has_error(function() limiter.shdict("leadconnector_limits") end)
    assert.has_error(function() limiter.process { fallback_share = 2 } end)
    assert.has_error(function() limiter.redis { timeout_ms = 0 } end)
    assert.has_error(function() limiter.redis { key = "" } end)
  end)

  it("the sandbox's sliding window is exact: the 21st request of any 2 s is refused", function()
    local c = client { rate_limit = false }
    local res = c:batch(sends(LIM + 5), { concurrency = 1 })
    c:close()
    local n429 = count_429()
    assert.equals(LIM, all_ok(res, LIM + 5))
    assert.equals(5, n429)
  end)

  it("a batch of 60 at concurrency 1 with a fresh limiter meets no 429 (was 40)", function()
    local c = client()
    local t0 = core.now()
    local res = c:batch(sends(60), { concurrency = 1 })
    local took = core.now() - t0
    c:close()
    assert.equals(0, (count_429()))
    assert.equals(60, all_ok(res, 60))
    -- 60 sends at 20 per 2 s: two full windows of waiting at least, and at least half the limit's throughput
    assert.is_true(took >= 2 * WIN_MS / 1000 * 0.95, ("took %.2f s"):format(took))
    assert.is_true(took <= 2 * (60 / LIM) * WIN_MS / 1000 * S, ("took %.2f s"):format(took))
  end)

  it("a batch of 100 at concurrency 16 meets no 429 (was 80)", function()
    local c = client()
    local res = c:batch(sends(100), { concurrency = 16 })
    c:close()
    assert.equals(0, (count_429()))
    assert.equals(100, all_ok(res, 100))
  end)

  it("single calls in a loop, then a batch, from one budget: no 429", function()
    local c = client()
    for _, call in ipairs(sends(15)) do assert(c:send_message(call[2])) end
    local res = c:batch(sends(30), { concurrency = 8 })
    c:close()
    assert.equals(0, (count_429()))
    assert.equals(30, all_ok(res, 30))
  end)

  it("an absurd X-RateLimit-Interval-Milliseconds blocks nothing for 10^20 s (issue 10 item 5)", function()
    local c = client()
    assert(c:send_message(sends(1)[1][2])) -- learns the real interval (2 s)
    sb:fault { method = "POST", path = "/conversations/messages", status = 429, headers = {
      ["X-RateLimit-Remaining"] = "0", ["X-RateLimit-Interval-Milliseconds"] = "99999999999999999999999" } }
    local _, err = c:send_message(sends(1)[1][2])
    assert.equals("rate_limited", err.kind)
    local rl = c:rate_limit()
    assert.is_true(rl.wait <= 3600, "wait " .. tostring(rl.wait))
    local t0 = core.now()
    local sent, err2 = c:send_message(sends(1)[1][2], { deadline = 10 })
    local took = core.now() - t0
    c:close()
    assert.is_nil(err2, tostring(err2))
    assert.is_string(sent.messageId)
    assert.is_true(took < 5 * S, ("took %.2f s"):format(took))
  end)

  it("an absurd Retry-After is capped at an hour, not honoured for ever", function()
    local c = client()
    assert(c:send_message(sends(1)[1][2]))
    sb:fault { method = "POST", path = "/conversations/messages", status = 429,
      headers = { ["Retry-After"] = "99999999999999999999" } }
    local _, err = c:send_message(sends(1)[1][2])
    assert.equals("rate_limited", err.kind)
    local rl = c:rate_limit()
    assert.is_true(rl.wait > 3000 and rl.wait <= 3600, "wait " .. tostring(rl.wait))
    local _, err2 = c:send_message(sends(1)[1][2], { deadline = 1 })
    c:close()
    assert.equals("rate_limited", err2.kind)
    assert.is_true(err2.retry_after <= 3600, tostring(err2.retry_after))
  end)

  it("another sender spending the budget slows ours down, without a 429", function()
    local c = client()
    assert(c:send_message(sends(1)[1][2])) -- the limits are known
    local spent = sb:control("POST", "/_sandbox/ratelimit/spend", { count = 15, location = "loc_sandbox" }).spent
    assert.equals(15, spent)
    local t0 = core.now()
    for _, call in ipairs(sends(10)) do
      local sent, err = c:send_message(call[2])
      assert.is_nil(err, tostring(err))
      assert.is_string(sent.messageId)
    end
    local took = core.now() - t0
    c:close()
    assert.equals(0, (count_429()))
    -- 1 + 15 of the window were spent: 4 more go at once, the other 6 wait for the window to pass
    assert.is_true(took >= WIN_MS / 1000 * 0.7, ("did not slow down: %.2f s"):format(took))
  end)
end)

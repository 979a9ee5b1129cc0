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

  lazy_setup(function()
    local spec = {}
    for i, t in ipairs(tokens) do spec[i] = t .. "@loc_rl_" .. i end
    sb = helpers.start_sandbox { tokens = spec, rate_limit = LIMIT, rate_interval_ms = INTERVAL_MS }
  end)

  lazy_teardown(function()
    if sb then sb:stop() end
  end)

  before_each(function()
    sb:reset()
    sb:config { rate_limit = LIMIT, rate_interval_ms = INTERVAL_MS }
  end)

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
    local n, n429 = 0, 0
    for _, r in ipairs(lch.api_requests(sb)) do
      n = n + 1
      if r.status == 429 then n429 = n429 + 1 end
    end
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

-- Regressions of the bugs the fuzzers found (fuzz/corpus/*/regress-* replays the same inputs at the C level):
-- numbers from answers, headers and options that are finite but huge, infinite or NaN. Each once reached an
-- out-of-range cast (undefined behaviour) or, for Retry-After: 1e999, blocked a token's limiter forever.
-- The ASan run of this file catches the C side; the assertions say what a user sees instead.
local core = require "leadconnector.core"
local leadconnector = require "leadconnector"
local helpers = require "helpers"
local lch = require "lchelpers"

local function one_line(s)
  assert.is_string(s)
  assert.is_true(#s <= 1024)
  assert.is_nil(s:find("%c"))
end

describe("regressions found by fuzzing", function()
  it("core.finish with a huge, infinite or NaN retry_after (fuzz_finish)", function()
    for _, ra in ipairs { 1e300, math.huge, 2 ^ 63, 2 ^ 64, 0 / 0 } do
      local v, err = core.finish("send", 429, '{"statusCode":429}', ra)
      assert.is_nil(v)
      assert.equals("rate_limited", err.kind)
      if ra == ra then assert.equals(ra, err.retry_after) else assert.is_nil(err.retry_after) end
      one_line(tostring(err))
    end
  end)

  it("tostring(err) whatever number a caller or a huge status puts in status and attempts (fuzz_finish)", function()
    local _, err = core.finish("message", math.maxinteger or 2 ^ 53, "")
    assert.equals("http", err.kind)
    one_line(tostring(err))
    for _, x in ipairs { 2 ^ 64, -2 ^ 64, 1e300, -1e300, math.huge, -math.huge, 0 / 0, -1, 0.5 } do
      err.status, err.attempts = x, x
      local s = tostring(err)
      one_line(s)
      assert.is_nil(s:find("attempts", 1, true), s) -- only a count from 2 to 1e9 is shown
    end
    err.status, err.attempts = 503, 3
    assert.is_truthy(tostring(err):find("HTTP 503", 1, true), tostring(err))
    assert.is_truthy(tostring(err):find("(3 attempts)", 1, true), tostring(err))
  end)

  it("a 2xx answer that is an error and echoes the token: redacted in err.body; a success is left as it came", function()
    local token = "pit-SECRET-echo-77"
    local _, err = core.finish("send", 201, '{"conversationId":"c1","echo":"' .. token .. '"}', nil, nil, token)
    assert.equals("decode", err.kind)
    assert.equals("[REDACTED]", err.body.echo)
    assert.is_nil(tostring(err):find(token, 1, true))
    _, err = core.finish("message", 200, '{"echo":["Bearer ' .. token .. '"]}', nil, nil, token)
    assert.equals("decode", err.kind)
    assert.equals("Bearer [REDACTED]", err.body.echo[1])
    local m = assert(core.finish("message", 200, '{"id":"m1","body":"' .. token .. '"}', nil, nil, token))
    assert.equals(token, m.body) -- a message that really says it is data, not an error
  end)

  it("a sequence key of 1e300 in an array field is refused, not cast (validate.c, LuaJIT build)", function()
    for _, t in ipairs { { [1e300] = "x" }, { [2 ^ 63] = "x" }, { [-2 ^ 63] = "x" }, { "a", [1e300] = "x" } } do
      local body, err = core.build_send { type = "SMS", contactId = "c", attachments = t }
      assert.is_nil(body)
      assert.equals("invalid", err.kind)
      assert.equals("attachments", err.field)
    end
  end)

  describe("over HTTP", function()
    local sb
    lazy_setup(function() sb = helpers.start_sandbox { rate_limit = false, tokens = { "regress-token" } } end)
    lazy_teardown(function() if sb then sb:stop() end end)
    before_each(function() sb:reset() end)

    it("Retry-After: 1e999 / inf / nan is no Retry-After: the token's limiter is not blocked (fuzz_headers)", function()
      for _, v in ipairs { "1e999", "inf", "Infinity", "nan", "-1", "0x1p9999" } do
        -- limiter off for this client (no waiting here); it still tells the token's shared limiter what it saw
        local c = lch.client(sb, { max_retries = 0, rate_limit = false })
        sb:fault { method = "GET", path = "/conversations/conv_demo_1", status = 429, headers = { ["Retry-After"] = v } }
        local _, err = c:get_conversation("conv_demo_1")
        assert.equals("rate_limited", err.kind)
        assert.is_nil(err.retry_after, v)
        -- a 429 without a usable Retry-After holds the token back for 1 s, not until the end of time
        assert.is_true(c:rate_limit().wait <= 1.05, v .. ": wait " .. tostring(c:rate_limit().wait))
        c:close()
      end
      local c = lch.client(sb, { max_retries = 0 }) -- limiter on: waits at most the 1 s, then sends
      local t0 = core.now()
      assert(c:get_conversation("conv_demo_1", { deadline = 5 }))
      assert.is_true(core.now() - t0 < 1.5 * lch.scale)
      c:close()
    end)

    it("a trace id header that echoes the token is redacted (fuzz_headers)", function()
      local c = lch.client(sb, { rate_limit = false })
      sb:fault { method = "GET", path = "/conversations/conv_demo_1", status = 400,
        headers = { ["X-Request-Id"] = "req-" .. sb.token .. "-1" } }
      local _, err = c:get_conversation("conv_demo_1")
      c:close()
      assert.equals("http", err.kind)
      assert.equals("req-[REDACTED]-1", err.trace_id)
      assert.is_nil(tostring(err):find(sb.token, 1, true))
    end)

    it("X-RateLimit-* values past 2^63 are reported as numbers (fuzz_headers)", function()
      local c = lch.client(sb, { rate_limit = false })
      sb:fault { method = "GET", path = "/conversations/conv_demo_1", status = 200, count = 1,
        body = { id = "conv_demo_1" },
        headers = { ["X-RateLimit-Max"] = "1" .. ("0"):rep(33), ["X-RateLimit-Limit-Daily"] = "18446744073709551616",
          ["X-RateLimit-Daily-Remaining"] = "1e999", ["X-RateLimit-Interval-Milliseconds"] = "inf" } }
      assert(c:get_conversation("conv_demo_1"))
      local rl = c:rate_limit()
      assert.equals(1e33, rl.max)
      assert.equals(2 ^ 64, rl.daily_limit)
      -- not numbers a header may give (only plain decimals are): not taken
      assert.is_nil(rl.daily_remaining)
      assert.is_nil(rl.interval_ms)
      c:close()
    end)

    it("timeouts and max_response_size of 1e300 mean 'no practical limit', not undefined behaviour", function()
      local c = assert(leadconnector.new { token = sb.token, base_url = sb.url, timeout = 1e300, connect_timeout = 1e300,
        deadline = 1e300, max_response_size = 1e300, rate_limit = false })
      assert.equals("conv_demo_1", assert(c:get_conversation("conv_demo_1")).id)
      assert.equals("conv_demo_1", assert(c:get_conversation("conv_demo_1", { timeout = 1e300, deadline = 1e300 })).id)
      c:close()
    end)
  end)
end)

-- Issue 10 ("never twice, never unbounded"), the libcurl side: what a hostile server or a crash under a warm
-- connection did to the library.
describe("issue 10 regressions (libcurl transport)", function()
  local fs = require "faultserver"
  local S = lch.scale
  local function send(c, o)
    return c:send_message({ type = "SMS", contactId = "c_issue10", message = "never twice" }, o)
  end
  local function client(srv, opts)
    local o = { token = "issue10-token", base_url = srv.url, timeout = 3 * S, connect_timeout = 1 * S,
      deadline = 10 * S, retry_base = 0.1, retry_cap = 0.2, max_retries = 4, rate_limit = false }
    for k, v in pairs(opts or {}) do o[k] = v end
    return assert(leadconnector.new(o))
  end

  describe("a send processed, then the connection dropped and the port refused for 50 ms", function()
    it("is stored once: the retry libcurl tried on a fresh connection does not make it 'never sent'", function()
      for _ = 1, 3 do
        local srv = fs.start("drop_refuse", 50)
        local c = client(srv)
        assert(send(c)) -- warms the connection (stored: 1)
        local v, err = send(c)
        c:close()
        local stored = srv:count()
        srv:stop()
        assert.is_nil(v)
        assert.equals("network", err.kind)
        assert.is_true(err.request_sent)
        assert.equals(1, err.attempts)
        assert.equals(2, stored, "the faulted send was stored " .. (stored - 1) .. " times")
      end
    end)

    it("with max_retries = 0 the error says request_sent = true", function()
      local srv = fs.start("drop_refuse", 50)
      local c = client(srv, { max_retries = 0 })
      assert(send(c))
      local _, err = send(c)
      c:close()
      srv:stop()
      assert.equals("network", err.kind)
      assert.is_true(err.request_sent)
      assert.truthy(err.message:find("may have been processed", 1, true))
    end)

    it("in a batch too: stored once, request_sent = true", function()
      local srv = fs.start("drop_refuse", 50)
      local c = client(srv)
      local r = c:batch { { "send_message", { type = "SMS", contactId = "c1", message = "warm" } } }
      assert(r[1].value)
      r = c:batch { { "send_message", { type = "SMS", contactId = "c1", message = "never twice" } } }
      c:close()
      local stored = srv:count()
      srv:stop()
      assert.is_nil(r[1].value)
      assert.equals("network", r[1].err.kind)
      assert.is_true(r[1].err.request_sent)
      assert.equals(2, stored)
    end)
  end)
end)

-- Issue 16 hands libcurl each request's URL already parsed (a URL handle, CURLOPT_CURLU) instead of the string.
-- The request must not change on the wire: libcurl's way of setting a path part alone would lower-case the
-- percent-encodings, and a URL handle reused from call to call could keep the previous call's query.
describe("the request target on the wire (libcurl transport)", function()
  local fs = require "faultserver"
  local core = require "leadconnector.core"
  local srv
  before_each(function() srv = fs.start("ok") end)
  after_each(function() srv:stop() end)
  local function client(base)
    return assert(leadconnector.new { token = "target-token", base_url = base or srv.url, rate_limit = false,
      max_retries = 0 })
  end

  it("keeps an id's percent-encodings as the library wrote them, upper-case hex and all", function()
    local c = client()
    assert.equals("a%2Fb%20c%3F", core.path_id("a/b c?"))
    c:get_message("a/b c?")
    assert.equals("/conversations/messages/a%2Fb%20c%3F", srv:last())
  end)

  it("puts a base URL's own path in front of every call's", function()
    local c = client(srv.url .. "/v1/api")
    c:get_message("m_1")
    assert.equals("/v1/api/conversations/messages/m_1", srv:last())
  end)

  it("sends each call's own query and no other, call after call on one connection", function()
    local c = client()
    c:get_messages("conv_1", { limit = 5 })
    assert.equals("/conversations/conv_1/messages?limit=5", srv:last())
    local m = c:get_message("m_2")
    assert.equals("/conversations/messages/m_2", srv:last())
    assert.equals("m_2", m and m.id)
    c:get_messages("conv_1", { limit = 7 })
    assert.equals("/conversations/conv_1/messages?limit=7", srv:last())
    local r = c:batch { { "get_message", "m_3" }, { "get_messages", "conv_2", { limit = 2 } } }
    assert.equals("m_3", r[1].value and r[1].value.id)
    local last = srv:last()
    assert.is_true(last == "/conversations/conv_2/messages?limit=2" or last == "/conversations/messages/m_3", last)
  end)
end)

describe("issue 10 regressions: redaction and batch options", function()
  -- an OAuth-style token: long, base64 with '/' and '+'
  local TOKEN = "eyJhbGciOiJSUzI1NiJ9." .. ("aB3/xY+9_q-Zk/"):rep(22) .. "Qw=="
  local sb
  lazy_setup(function() sb = helpers.start_sandbox { rate_limit = false, tokens = { TOKEN } } end)
  lazy_teardown(function() if sb then sb:stop() end end)
  before_each(function() sb:reset() end)
  local function client() return lch.client(sb, { token = TOKEN, rate_limit = false }) end
  local function no_token_in(err)
    for _, piece in ipairs { TOKEN:sub(1, 24), TOKEN:sub(100, 124), TOKEN:sub(-24) } do
      assert.is_nil(lch.find_in(err, piece), "token piece in " .. tostring(lch.find_in(err, piece)))
      assert.is_nil(tostring(err):find(piece, 1, true), "token piece in tostring(err)")
    end
  end

  it("a long token echoed in X-Request-Id is redacted before the id is cut", function()
    assert.is_true(#TOKEN > 300)
    local c = client()
    sb:fault { method = "GET", path = "/conversations/conv_demo_1", status = 400,
      headers = { ["X-Request-Id"] = "req-" .. TOKEN .. "-1" } }
    local _, err = c:get_conversation("conv_demo_1")
    c:close()
    assert.equals("http", err.kind)
    assert.equals("req-[REDACTED]-1", err.trace_id)
    no_token_in(err)
  end)

  it("a token echoed JSON-escaped (\\/ and \\uXXXX) is redacted from err.message, err.body and tostring", function()
    local c = client()
    -- cjson writes '/' as '\/': the raw text never has the token as it is
    sb:fault { method = "GET", path = "/conversations/conv_demo_1", status = 401,
      body = { message = "bad token " .. TOKEN, echo = { TOKEN } } }
    local _, err = c:get_conversation("conv_demo_1")
    assert.equals("auth", err.kind)
    assert.truthy(err.message:find("[REDACTED]", 1, true))
    no_token_in(err)
    local escaped = TOKEN:gsub("[/+]", function(ch) return ("\\u%04X"):format(ch:byte()) end)
    sb:fault { method = "GET", path = "/conversations/conv_demo_1", status = 422,
      body = '{"message":"token ' .. escaped .. ' refused","detail":"\\/' .. escaped .. '"}' }
    _, err = c:get_conversation("conv_demo_1")
    c:close()
    assert.equals("token [REDACTED] refused", err.message)
    no_token_in(err)
  end)

  it("batch concurrency of 1e300, 2^63, 1e15 runs the batch (clamped); NaN and inf are refused clearly", function()
    local c = lch.client(sb, { rate_limit = false })
    for _, n in ipairs { 1e300, 2 ^ 63, 1e15, 3.7, 0 } do
      local r = c:batch({ { "get_conversation", "conv_demo_1" }, { "get_conversation", "conv_demo_2" } },
        { concurrency = n })
      assert.equals("conv_demo_1", r[1].value.id, tostring(n))
      assert.equals("conv_demo_2", r[2].value.id, tostring(n))
    end
    for _, n in ipairs { 0 / 0, math.huge } do
      local ok, msg = pcall(c.batch, c, { { "get_conversation", "conv_demo_1" } }, { concurrency = n })
      assert.is_false(ok)
      assert.truthy(tostring(msg):find("'concurrency' must be a finite number", 1, true))
    end
    -- the session level too (the Lua layer clamps first; the C core must not cast out of range either)
    local values = c._session:batch({ { "conversation", "GET", "/conversations/conv_demo_1", false, false, false } }, 1e300)
    assert.equals("conv_demo_1", values[1].id)
    c:close()
  end)
end)

describe("issue 10 regressions: the sandbox launcher", function()
  local socket = require "socket"
  local LAUNCHER = "bin/leadconnector-sandbox"
  local function health(url)
    local host, port = url:match("^http://([^:]+):(%d+)")
    local c = socket.tcp()
    c:settimeout(1)
    if not c:connect(host, tonumber(port)) then c:close() return false end
    c:send("GET /_sandbox/health HTTP/1.0\r\nHost: x\r\n\r\n")
    local line = c:receive("*l")
    c:close()
    return line ~= nil and line:find(" 200 ", 1, true) ~= nil
  end
  -- starts the launcher in the background: its pid and URL
  local function launch(prefix)
    local out = prefix .. ".out"
    local pid = tonumber(helpers.sh(("env -u LD_PRELOAD -u ASAN_OPTIONS %s --prefix %s --no-rate-limit >%s 2>&1 </dev/null & echo $!")
      :format(LAUNCHER, prefix, out)):match("%d+"))
    local url
    for _ = 1, 200 do
      url = (helpers.read_file(out) or ""):match("LEADCONNECTOR_SANDBOX_URL=(%S+)")
      if url then break end
      socket.sleep(0.05)
    end
    assert(url, "the sandbox did not start: " .. tostring(helpers.read_file(out)))
    return pid, url
  end
  local function wait_until(f, seconds)
    local t = socket.gettime() + seconds
    while socket.gettime() < t do
      if f() then return true end
      socket.sleep(0.05)
    end
    return f()
  end

  it("kill -9 of the launcher stops nginx; a restart with the same --prefix works; no orphan worker answers", function()
    local prefix = helpers.sh("mktemp -d"):gsub("%s+$", "")
    local pid, url = launch(prefix)
    assert.is_true(health(url))
    local master1 = tonumber((helpers.read_file(prefix .. "/nginx.pid") or ""):match("%d+"))
    assert.truthy(master1)
    os.execute("kill -9 " .. pid)
    assert.is_true(wait_until(function() return not health(url) end, 10 * lch.scale), "nginx still answers")
    -- gone, not only silent: a master still exiting removes its nginx.pid, which may by then be the restart's
    assert.is_true(wait_until(function() return not helpers.alive(master1) end, 10 * lch.scale), "nginx did not exit")
    local pid2, url2 = launch(prefix)
    assert.is_true(health(url2))
    -- the master killed alone: its worker must not go on answering
    local master = tonumber((helpers.read_file(prefix .. "/nginx.pid") or ""):match("%d+"))
    assert.truthy(master)
    os.execute("kill -9 " .. master)
    assert.is_true(wait_until(function() return not health(url2) end, 10 * lch.scale), "an orphaned worker answers")
    assert.is_true(wait_until(function() return not helpers.alive(pid2) end, 10 * lch.scale))
    os.execute("rm -rf '" .. prefix .. "' '" .. prefix .. ".out'")
  end)

  -- A killed launcher's watchdog wakes up to 0.2 s after the kill, stops its nginx and removes what that nginx
  -- left. A restart with the same --prefix made in that time must keep its own pid file and FIFO: the watchdog
  -- used to remove them (the test above then read no nginx.pid, now and then). Made certain here by holding the
  -- watchdog stopped until the restart is up.
  it("a killed launcher's watchdog leaves a restart's pid file and FIFO alone", function()
    local prefix = helpers.sh("mktemp -d"):gsub("%s+$", "")
    local pid = launch(prefix)
    local watchdog, pid2
    finally(function() -- a failed assertion must not leave a sandbox running
      if watchdog then os.execute("kill -CONT " .. watchdog .. " 2>/dev/null") end
      if pid2 then os.execute("kill -TERM " .. pid2 .. " 2>/dev/null") end
    end)
    -- the launcher's children from /proc (no ps: under the ASan run it would inherit libasan and can hang)
    for p in (helpers.read_file(("/proc/%d/task/%d/children"):format(pid, pid)) or ""):gmatch("%d+") do
      if not (helpers.read_file("/proc/" .. p .. "/comm") or ""):find("^nginx") then watchdog = tonumber(p) end
    end
    assert.truthy(watchdog, "no watchdog under the launcher")
    os.execute("kill -STOP " .. watchdog)
    os.execute("kill -9 " .. pid)
    local url2
    pid2, url2 = launch(prefix) -- stops the first nginx itself (its pid file names it)
    assert.is_true(health(url2))
    local master2 = tonumber((helpers.read_file(prefix .. "/nginx.pid") or ""):match("%d+"))
    assert.truthy(master2)
    os.execute("kill -CONT " .. watchdog)
    assert.is_true(wait_until(function() return not helpers.alive(watchdog) end, 10 * lch.scale), "watchdog stays")
    assert.are.equal(master2, tonumber((helpers.read_file(prefix .. "/nginx.pid") or ""):match("%d+")),
      "the restart's nginx.pid was removed")
    assert.is_true(helpers.sh("test -p '" .. prefix .. "/nap.fifo' && echo fifo"):find("fifo", 1, true) ~= nil,
      "the restart's FIFO was removed")
    assert.is_true(health(url2))
    -- and the restart still cleans up after itself
    os.execute("kill -TERM " .. pid2)
    assert.is_true(wait_until(function() return not helpers.alive(pid2) end, 10 * lch.scale))
    assert.is_false(health(url2))
    assert.is_nil(helpers.read_file(prefix .. "/nginx.pid"))
    assert.is_true(helpers.sh("test -e '" .. prefix .. "/nap.fifo' || echo gone"):find("gone", 1, true) ~= nil)
    os.execute("rm -rf '" .. prefix .. "' '" .. prefix .. ".out'")
  end)
end)

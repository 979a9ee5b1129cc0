-- Never lose, never duplicate (issue 4): every fault the sandbox can inject, against each of send / get /
-- update-status, over a kept-alive connection (the case where libcurl would like to re-send by itself).
-- For each: the error kind (or success), err.attempts, how many requests reached the server, and for sends how
-- many messages the server stored -- never more than one, and exactly one when the fault came after the server
-- had done the work (`after = true`). Then Retry-After (seconds and HTTP date), X-RateLimit-Remaining: 0 with
-- the interval, max_retries and the deadline.
--
-- The rate limiter is per token and shared by every client of that token in the Lua state (spec files included),
-- and every client feeds it what answers say -- a 429 with Retry-After: 30 here would hold back a limiter-on client
-- of the same token in a later file. So this file's tokens are its own.
-- Tests whose answers are deliberately slow are tagged #slow (skipped under valgrind/ASan, where time is scaled).
local core = require "leadconnector.core"
local leadconnector = require "leadconnector"
local helpers = require "helpers"
local lch = require "lchelpers"

local S = lch.scale
local SEND_PATH = "/conversations/messages"
local GET_ID, GET_PATH = "msg_demo_1", "/conversations/messages/msg_demo_1"
local STATUS_ID, STATUS_PATH = "msg_demo_2", "/conversations/messages/msg_demo_2/status"
local TIMEOUT = 0.25 * S -- per attempt, for the "slow" faults (their answer comes after 5 timeouts)
local SLOW_MS = math.floor(TIMEOUT * 5000)
local TOKEN, LIMITER_TOKEN = "faults-token", "faults-limiter-token"

-- The three calls. `contact` is fresh for every send, so sb:messages(contact) counts exactly what it stored.
local OPS = {
  send = { method = "POST", path = SEND_PATH, retries_5xx = false,
    call = function(c, contact, o) return c:send_message({ type = "SMS", contactId = contact, message = "fault test" }, o) end },
  get = { method = "GET", path = GET_PATH, retries_5xx = true,
    call = function(c, _, o) return c:get_message(GET_ID, o) end },
  status = { method = "PUT", path = STATUS_PATH, retries_5xx = true,
    call = function(c, _, o) return c:update_message_status(STATUS_ID, { status = "read" }, o) end },
}
local OP_ORDER = { "send", "get", "status" }

-- Every fault, persistent (count = -1), with max_retries = 2: what each call must end with.
--   kind/status: the error; attempts[op]: err.attempts (3 = retried twice, 1 = not retried);
--   stored: messages the server keeps for a send (after = true: it did the work, then the answer went wrong).
local R, N = 3, 1 -- retried (1 + max_retries), not retried
local FAULTS = {
  { name = "429 with Retry-After: 0", fault = { status = 429, headers = { ["Retry-After"] = "0" } },
    kind = "rate_limited", status = 429, attempts = { send = R, get = R, status = R }, stored = 0, retry_after = 0 },
  { name = "429 without Retry-After", fault = { status = 429 },
    kind = "rate_limited", status = 429, attempts = { send = R, get = R, status = R }, stored = 0 },
  { name = "500", fault = { status = 500 },
    kind = "server", status = 500, attempts = { send = N, get = N, status = N }, stored = 0 },
  { name = "500 after processing", fault = { status = 500, after = true },
    kind = "server", status = 500, attempts = { send = N, get = N, status = N }, stored = 1 },
  { name = "502 HTML from a proxy", fault = { action = "html502" },
    kind = "server", status = 502, attempts = { send = N, get = R, status = R }, stored = 0 },
  { name = "502 HTML after processing", fault = { action = "html502", after = true },
    kind = "server", status = 502, attempts = { send = N, get = R, status = R }, stored = 1 },
  { name = "503", fault = { status = 503 },
    kind = "server", status = 503, attempts = { send = N, get = R, status = R }, stored = 0 },
  { name = "503 after processing", fault = { status = 503, after = true },
    kind = "server", status = 503, attempts = { send = N, get = R, status = R }, stored = 1 },
  { name = "504", fault = { status = 504 },
    kind = "server", status = 504, attempts = { send = N, get = R, status = R }, stored = 0 },
  { name = "504 after processing", fault = { status = 504, after = true },
    kind = "server", status = 504, attempts = { send = N, get = R, status = R }, stored = 1 },
  -- the slow server still stores the send once its delay is over: one message, never two
  { name = "an answer slower than the timeout #slow", fault = { delay_ms = SLOW_MS },
    kind = "timeout", attempts = { send = N, get = R, status = R }, stored = 1, sent = true },
  { name = "processed, then an answer slower than the timeout #slow", fault = { delay_ms = SLOW_MS, after = true },
    kind = "timeout", attempts = { send = N, get = R, status = R }, stored = 1, sent = true },
  { name = "connection dropped before processing", fault = { action = "drop" },
    kind = "network", attempts = { send = N, get = R, status = R }, stored = 0, sent = true },
  { name = "connection dropped after processing", fault = { action = "drop", after = true },
    kind = "network", attempts = { send = N, get = R, status = R }, stored = 1, sent = true },
  { name = "malformed JSON", fault = { action = "malformed" },
    kind = "decode", status = { send = 201, get = 200, status = 200 }, attempts = { send = N, get = N, status = N }, stored = 0 },
  { name = "malformed JSON after processing", fault = { action = "malformed", after = true },
    kind = "decode", status = { send = 201, get = 200, status = 200 }, attempts = { send = N, get = N, status = N }, stored = 1 },
  { name = "an empty 201", fault = { action = "empty201" },
    kind = "decode", status = 201, attempts = { send = N, get = N, status = N }, stored = 0 },
  { name = "an empty 201 after processing", fault = { action = "empty201", after = true },
    kind = "decode", status = 201, attempts = { send = N, get = N, status = N }, stored = 1 },
}

describe("faults #faults", function()
  local sb, client
  local seq = 0

  lazy_setup(function()
    sb = helpers.start_sandbox { rate_limit = false, tokens = { TOKEN, LIMITER_TOKEN } }
    assert(sb.token == TOKEN)
    client = lch.client(sb, { rate_limit = false, max_retries = 2, timeout = TIMEOUT, deadline = 20 * S })
  end)

  lazy_teardown(function()
    if client then client:close() end
    if sb then sb:stop() end
  end)

  local function fresh_contact()
    seq = seq + 1
    return ("contact_fault_%d_%d"):format(os.time(), seq)
  end

  local function api_requests(path, method)
    local n = 0
    for _, r in ipairs(lch.api_requests(sb)) do
      if r.path == path and r.method == method then n = n + 1 end
    end
    return n
  end

  -- Runs one call with `fault` registered for it, on a connection that is already open and idle (a first
  -- request opened it), which is the case where a transport might re-send on its own. Returns value, err,
  -- seconds taken, requests that reached the server for this call, messages stored for the send's contact.
  local function run(opname, fault, c, opts)
    local op = OPS[opname]
    c = c or client
    sb:reset()
    assert(c:get_conversation("conv_demo_1")) -- warm, kept-alive connection
    sb:clear_requests()
    if fault then
      local f = { method = op.method, path = op.path, count = -1 }
      for k, v in pairs(fault) do f[k] = v end
      sb:fault(f)
    end
    local contact = fresh_contact()
    local t0 = core.now()
    local value, err = op.call(c, contact, opts)
    local took = core.now() - t0
    sb:clear_faults()
    local stored
    if opname == "send" then
      -- a slow server stores the message when its delay is over: count after that
      if fault and fault.delay_ms then
        local left = t0 + fault.delay_ms / 1000 + 0.3 * S - core.now()
        if left > 0 then core.sleep(left) end
      end
      stored = #sb:messages(contact)
    end
    return value, err, took, api_requests(op.path, op.method), stored
  end

  describe("each fault, each call", function()
    for _, f in ipairs(FAULTS) do
      for _, opname in ipairs(OP_ORDER) do
        it(opname .. ": " .. f.name, function()
          local value, err, _, reached, stored = run(opname, f.fault)
          assert.is_nil(value)
          assert.is_true(leadconnector.is_error(err), tostring(err))
          assert.equals(f.kind, err.kind, tostring(err))
          local want_status = type(f.status) == "table" and f.status[opname] or f.status
          assert.equals(want_status, err.status)
          assert.equals(f.attempts[opname], err.attempts, tostring(err))
          assert.equals(OPS[opname].method, err.method)
          if f.sent then assert.is_true(err.request_sent) end
          if f.retry_after then assert.equals(f.retry_after, err.retry_after) end
          -- every attempt reached the server once; a send exactly once whatever happened
          if opname == "send" then
            assert.equals(f.attempts.send, reached)
          else
            -- libcurl may transparently repeat an idempotent request on a connection that died unused
            assert.is_true(reached >= err.attempts and reached <= 2 * err.attempts,
              ("%d requests for %d attempts"):format(reached, err.attempts))
          end
          if opname == "send" then
            assert.is_true(stored <= 1, "a send was stored " .. stored .. " times")
            assert.equals(f.stored, stored)
          end
          local s = tostring(err)
          assert.is_nil(s:find("[\r\n]"))
          if err.attempts > 1 then assert.is_truthy(s:find(err.attempts .. " attempts", 1, true), s) end
        end)
      end
    end

    for _, opname in ipairs(OP_ORDER) do
      it(opname .. ": connection refused (nothing listens): never left, so retried, a send included", function()
        local c = lch.client(sb, { base_url = "http://127.0.0.1:" .. lch.unused_port(), rate_limit = false,
          max_retries = 2 })
        local value, err = OPS[opname].call(c, fresh_contact(), nil)
        c:close()
        assert.is_nil(value)
        assert.equals("network", err.kind)
        assert.is_nil(err.status)
        assert.is_false(err.request_sent)
        assert.equals(3, err.attempts)
      end)
    end
  end)

  describe("a fault once, then the normal answer", function()
    -- Retried faults recover, and a send is stored exactly once; the others fail on the first attempt.
    local ONCE = {
      { name = "429 Retry-After: 0", fault = { status = 429, headers = { ["Retry-After"] = "0" } },
        recovers = { send = true, get = true, status = true } },
      { name = "502 HTML", fault = { action = "html502" }, recovers = { get = true, status = true } },
      { name = "503", fault = { status = 503 }, recovers = { get = true, status = true } },
      { name = "504", fault = { status = 504 }, recovers = { get = true, status = true } },
      { name = "drop", fault = { action = "drop" }, recovers = { get = true, status = true } },
      { name = "drop after processing", fault = { action = "drop", after = true }, recovers = { get = true, status = true },
        stored = 1 },
      { name = "slow #slow", fault = { delay_ms = SLOW_MS }, recovers = { get = true, status = true }, stored = 1 },
      { name = "500", fault = { status = 500 }, recovers = {} },
      { name = "malformed", fault = { action = "malformed" }, recovers = {} },
      { name = "empty 201", fault = { action = "empty201" }, recovers = {} },
    }
    for _, f in ipairs(ONCE) do
      for _, opname in ipairs(OP_ORDER) do
        it(opname .. ": " .. f.name, function()
          local fault = { count = 1 }
          for k, v in pairs(f.fault) do fault[k] = v end
          local value, err, _, reached, stored = run(opname, fault)
          if f.recovers[opname] then
            assert.is_nil(err, tostring(err))
            assert.is_not_nil(value)
            assert.is_true(reached >= 2)
            if opname == "send" then
              assert.equals(2, reached)
              assert.equals(1, stored)
              assert.is_string(value.messageId)
            end
          else
            assert.is_nil(value)
            assert.equals(1, err.attempts)
            if opname == "send" then
              assert.equals(1, reached)
              assert.equals(f.stored or 0, stored)
            end
          end
        end)
      end
    end
  end)

  describe("max_retries", function()
    for _, n in ipairs { 0, 1, 4 } do
      it("is respected: " .. n .. " (client option and per call)", function()
        local c = lch.client(sb, { rate_limit = false, max_retries = n })
        local _, err, _, reached = run("get", { status = 503 }, c)
        c:close()
        assert.equals(n + 1, err.attempts)
        assert.equals(n + 1, reached)
        _, err, _, reached = run("get", { status = 503 }, client, { max_retries = n })
        assert.equals(n + 1, err.attempts)
        assert.equals(n + 1, reached)
        _, err, _, reached = run("send", { status = 429, headers = { ["Retry-After"] = "0" } }, client, { max_retries = n })
        assert.equals(n + 1, err.attempts)
        assert.equals(n + 1, reached)
      end)
    end
  end)

  describe("Retry-After", function()
    it("in seconds: the retry waits that long (a send included, stored once)", function()
      local value, err, took, reached, stored = run("send", { status = 429, count = 1, headers = { ["Retry-After"] = "1" } })
      assert.is_nil(err, tostring(err))
      assert.is_string(value.messageId)
      assert.equals(2, reached)
      assert.equals(1, stored)
      assert.is_true(took >= 0.9 and took < 2.5 * S, ("took %.2f s"):format(took))
    end)

    it("#slow as an HTTP date: the retry waits until then", function()
      -- an HTTP date has whole seconds: 2 s ahead means a wait of 1 to 2 s
      local when = os.date("!%a, %d %b %Y %H:%M:%S GMT", os.time() + 2)
      local value, err, took, reached = run("get", { status = 429, count = 1, headers = { ["Retry-After"] = when } })
      assert.is_nil(err, tostring(err))
      assert.equals(GET_ID, value.id)
      assert.equals(2, reached)
      assert.is_true(took >= 0.9 and took < 3.5, ("took %.2f s"):format(took))
    end)

    it("on a 503 too: the read is retried after it", function()
      local value, err, took = run("get", { status = 503, count = 1, headers = { ["Retry-After"] = "1" } })
      assert.is_nil(err, tostring(err))
      assert.equals(GET_ID, value.id)
      assert.is_true(took >= 0.9 and took < 2.5 * S, ("took %.2f s"):format(took))
    end)

    it("longer than the deadline: the call ends at once instead of sleeping past it", function()
      local _, err, took, reached = run("get", { status = 429, headers = { ["Retry-After"] = "30" } }, client,
        { deadline = 10 }) -- not scaled: it must stay under the 30 s
      assert.equals("rate_limited", err.kind)
      assert.equals(30, err.retry_after)
      assert.equals(1, err.attempts)
      assert.equals(1, reached)
      assert.is_true(took < 1 * S, ("took %.2f s"):format(took))
    end)
  end)

  describe("X-RateLimit-Remaining: 0", function()
    local HDRS = { ["X-RateLimit-Remaining"] = "0", ["X-RateLimit-Interval-Milliseconds"] = "700" }

    it("on a 429 without Retry-After: the retry waits for the interval", function()
      local value, err, took, reached = run("get", { status = 429, count = 1, headers = HDRS })
      assert.is_nil(err, tostring(err))
      assert.equals(GET_ID, value.id)
      assert.equals(2, reached)
      assert.is_true(took >= 0.6 and took < 2 * S, ("took %.2f s"):format(took))
    end)

    it("on a success: with the limiter on, the next call waits for the interval", function()
      local c = lch.client(sb, { token = LIMITER_TOKEN, max_retries = 0 }) -- rate_limit on (the default)
      sb:reset()
      sb:fault { method = "GET", path = GET_PATH, status = 200, count = 1, headers = HDRS,
        body = { id = GET_ID, body = "x" } }
      assert(c:get_message(GET_ID))
      local t0 = core.now()
      assert(c:get_message(GET_ID))
      local took = core.now() - t0
      c:close()
      assert.is_true(took >= 0.6 and took < 2 * S, ("took %.2f s"):format(took))
    end)
  end)

  describe("the deadline bounds a call across its retries", function()
    it("retries that wait: stops before a wait would pass it", function()
      local _, err, took, reached = run("get", { status = 503, headers = { ["Retry-After"] = "1" } }, client,
        { deadline = 1.5, max_retries = 10 })
      assert.equals("server", err.kind)
      assert.equals(2, err.attempts) -- at 0 s and 1 s; the next would be at 2 s
      assert.equals(2, reached)
      assert.is_true(took >= 0.9 and took < 1.6 * S, ("took %.2f s"):format(took))
    end)

    it("slow answers: each attempt gets only what is left of the deadline #slow", function()
      local _, err, took = run("get", { delay_ms = 3000 }, client, { deadline = 0.6 * S, timeout = 10, max_retries = 10 })
      assert.equals("timeout", err.kind)
      assert.is_true(took < 0.6 * S + 0.3 * S, ("took %.2f s"):format(took))
    end)

    it("a send that may have arrived is not repeated, however much deadline is left #slow", function()
      local _, err, took, reached, stored = run("send", { delay_ms = 2000, after = true }, client,
        { deadline = 30, timeout = 0.3 * S, max_retries = 10 })
      assert.equals("timeout", err.kind)
      assert.equals(1, err.attempts)
      assert.equals(1, reached)
      assert.equals(1, stored)
      assert.is_true(took < 1 * S)
    end)
  end)
end)

-- "Processed, dropped, refused for a moment" (issue 10): the server does the work, its connection dies with no
-- answer and the port refuses connections for 50 ms (a crash and a restart under a warm kept-alive connection).
-- A transport that retries on a fresh connection by itself meets the refusal; the request must still count as
-- sent. Served by spec/faultserver.lua (the sandbox, being nginx, cannot stop listening for a moment).
local fs = require "faultserver"
local CRASH_OPS = {
  send = { method = "POST", call = { "send_message", { type = "SMS", contactId = "c_crash", message = "crash" } } },
  get = { method = "GET", call = { "get_message", "m_crash" } },
  status = { method = "PUT", call = { "update_message_status", "m_crash", { status = "read" } } },
}
local CRASH_CLIENT = { token = "crash-token", timeout = 3 * S, connect_timeout = 1 * S, deadline = 10 * S,
  retry_base = 0.1, retry_cap = 0.2, max_retries = 4, rate_limit = false }

-- What each call ends with, whichever transport: a send fails (network, sent, never repeated: the server has it
-- once); a read or status update is retried once the port listens again and succeeds.
local function check_crash(opname, d, processed)
  if opname == "send" then
    assert.is_false(d.ok, "a send that may have been processed succeeded on a second try")
    assert.equals("network", d.kind, tostring(d.message))
    assert.is_true(d.request_sent)
    assert.equals(1, d.attempts)
    assert.equals(2, processed, "warm-up + the faulted send: the server processed " .. processed)
  else
    assert.is_true(d.ok, tostring(d.message))
    assert.is_true(processed >= 3, "warm-up, the faulted request and its retry: " .. processed)
  end
end

describe("faults: processed, dropped, refused for 50 ms (libcurl) #faults", function()
  local describe_outcome = require "nginx.describe"
  for _, opname in ipairs(OP_ORDER) do
    it(opname, function()
      local op = CRASH_OPS[opname]
      local srv = fs.start("drop_refuse", 50, op.method)
      local o = { base_url = srv.url }
      for k, v in pairs(CRASH_CLIENT) do o[k] = v end
      local c = assert(leadconnector.new(o))
      local function call() return c[op.call[1]](c, op.call[2], op.call[3]) end
      assert(call()) -- warm
      local d = describe_outcome(call())
      c:close()
      local processed = srv:count(op.method)
      srv:stop()
      check_crash(opname, d, processed)
    end)
  end
end)

-- The same faults on the other transport: cosockets inside a real nginx (spec/nginx/server.lua, one worker), the
-- calls made there by spec/nginx/t.lua's /call, everything counted here.
describe("faults on cosockets inside nginx #faults #lua54only #nginx #slow", function()
  local ns = require "nginx.server"
  local sb, nx
  local seq = 0
  lazy_setup(function()
    sb = helpers.start_sandbox { rate_limit = false, tokens = { TOKEN, LIMITER_TOKEN } }
    nx = ns.start(sb)
  end)
  lazy_teardown(function()
    if nx then nx:stop() end
    if sb then sb:stop() end
  end)
  local NGX_CALL = {
    send = function(contact) return { "send_message", { type = "SMS", contactId = contact, message = "fault test" } } end,
    get = function() return { "get_message", GET_ID } end,
    status = function() return { "update_message_status", STATUS_ID, { status = "read" } } end,
  }
  local function requests_for(op)
    local n = 0
    for _, r in ipairs(lch.api_requests(sb)) do
      if r.path == op.path and r.method == op.method then n = n + 1 end
    end
    return n
  end

  describe("each fault, each call", function()
    for _, f in ipairs(FAULTS) do
      for _, opname in ipairs(OP_ORDER) do
        it(opname .. ": " .. f.name, function()
          local op = OPS[opname]
          sb:reset()
          sb:clear_requests()
          local fault = { method = op.method, path = op.path, count = -1 }
          for k, v in pairs(f.fault) do fault[k] = v end
          sb:fault(fault)
          seq = seq + 1
          local contact = ("contact_ngx_fault_%d_%d"):format(os.time(), seq)
          local t0 = core.now()
          local out = nx:json("POST", "/call", {
            client = { token = TOKEN, base_url = sb.url, rate_limit = false, max_retries = 2, timeout = TIMEOUT,
              deadline = 20 * S, retry_base = 0.001, retry_cap = 0.005 },
            -- the first call warms a pooled connection, as in the libcurl matrix
            calls = { { "get_conversation", "conv_demo_1" }, NGX_CALL[opname](contact) } })
          sb:clear_faults()
          local d = out.results[2]
          assert.is_true(out.results[1].ok)
          assert.is_false(d.ok)
          assert.equals(f.kind, d.kind, tostring(d.message))
          local want_status = type(f.status) == "table" and f.status[opname] or f.status
          assert.equals(want_status, d.status)
          assert.equals(f.attempts[opname], d.attempts, tostring(d.tostring))
          assert.equals(op.method, d.method)
          if f.sent then assert.is_true(d.request_sent) end
          if f.retry_after then assert.equals(f.retry_after, d.retry_after) end
          local reached = requests_for(op)
          if opname == "send" then
            assert.equals(f.attempts.send, reached)
            if f.fault.delay_ms then
              local left = t0 + f.fault.delay_ms / 1000 + 0.3 * S - core.now()
              if left > 0 then core.sleep(left) end
            end
            local stored = #sb:messages(contact)
            assert.is_true(stored <= 1, "a send was stored " .. stored .. " times")
            assert.equals(f.stored, stored)
          else
            assert.is_true(reached >= d.attempts and reached <= 2 * d.attempts,
              ("%d requests for %d attempts"):format(reached, d.attempts))
          end
        end)
      end
    end
  end)

  describe("processed, dropped, refused for 50 ms", function()
    for _, opname in ipairs(OP_ORDER) do
      it(opname, function()
        local op = CRASH_OPS[opname]
        local srv = fs.start("drop_refuse", 50, op.method)
        local client = { base_url = srv.url }
        for k, v in pairs(CRASH_CLIENT) do client[k] = v end
        local out = nx:json("POST", "/call", { client = client, calls = { op.call, op.call } })
        local processed = srv:count(op.method)
        srv:stop()
        assert.is_true(out.results[1].ok)
        check_crash(opname, out.results[2], processed)
      end)
    end
  end)
end)

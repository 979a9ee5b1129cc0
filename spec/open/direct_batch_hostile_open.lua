-- NOT RUN by the suite (no "_spec" in its name): a hostile review of direct-engine batches (2026-12-08), 16
-- tests. 15 pass; the two "deadline" runs fail on both engines: a batch runs past its deadline because each call's
-- time limit is counted from when it gets a slot, not from the round's start (Client:batch sets req[6] per round;
-- dconn_begin / CURLOPT_TIMEOUT_MS start the clock later). Move it back to spec/64-..._spec.lua with the fix.
-- Run: lua5.4 /usr/bin/busted --pattern=_open ... spec/open/direct_batch_hostile_open.lua
-- A hostile round against the direct engine's batches (commit bd1d0a9: csrc/http.c, "the direct engine's
-- batches"): many slots, each on its own connection made by its own multi handle, all driven from one poll by
-- dconn_step. The promises held to are a single call's: a send is never written twice (counted by the heads the
-- server saw, each send named by its own Version header so that even a head the server reset is counted), a read
-- whose kept-alive connection died with no answer byte goes again, each result is its own call's answer and in the
-- order of the calls, each call's time limit holds without burning CPU (os.clock against wall time), a connection
-- that cannot be made fails its calls unsent, at most `concurrency` connections, and the client stays usable.
-- Servers: spec/directserver.lua, and below a server of this file's own (plain or TLS, LuaSec, one coroutine per
-- connection) that can be restarted on the same port, logs to a file that outlives it, and resets idle
-- connections without a TLS close_notify. Everything talks to 127.0.0.1 only.
local leadconnector = require "leadconnector"
local core = require "leadconnector.core"
local ds = require "directserver"
local lch = require "lchelpers"
local helpers = require "helpers"
local socket = require "socket"

local S = lch.scale
local TOKEN = "tok-BatchHostile-0123456789abcdefJKL"

local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

local function client(url, opts)
  local o = { token = TOKEN, base_url = url, rate_limit = false, max_retries = 0, retry_base = 0.001,
    retry_cap = 0.005, timeout = 3 * S, connect_timeout = 2 * S, deadline = 10 * S }
  for k, v in pairs(opts or {}) do o[k] = v end
  return assert(leadconnector.new(o))
end

-- Servers of one test, stopped when it ends (busted keeps one `finally` per test: the last one stops them all).
local live = {}
local function track(srv)
  live[#live + 1] = srv
  finally(function()
    for _, s in ipairs(live) do s:stop() end
    live = {}
  end)
  return srv
end

-- Each send of this file is named by a number k: its message is "v<k>", and its Version header (which must look like
-- a date) is k's digits as one, so that the server knows which send it is from the head on, before the body.
local function version_of(k)
  return ("%04d-%02d-%02d"):format(math.floor(k / 10000), math.floor(k / 100) % 100, k % 100)
end
-- A directserver whose script starts with these: id_of(req) is a call's own name ("v<k>" for a send, a read's
-- last path segment), known from the head on; echo(req, st) is the answer naming it (a send's messageId is its
-- name, a read's id its id); mark_head(req) counts the head ("h:<id>") in log().marks.
local PRE = [[
local function id_of(req)
  if req.method == "POST" or req.method == "PUT" then
    local k = tonumber((tostring(req.headers.version):gsub("%-", "")), 10)
    return k and ("v" .. k) or "?"
  end
  return req.target:match("([^/?]+)$") or "?"
end
local function echo(req, st)
  if req.method == "POST" then
    return answer("201 Created", '{"conversationId":"c","messageId":"' .. esc(id_of(req)) .. '"}')
  end
  return default(req, st)
end
local function mark_head(req) return { mark = "h:" .. id_of(req) } end
]]
local function server(script) return track(ds.start(PRE .. script)) end

-- The send named by k (its message "v<k>", its Version header k as a date).
local function sms(k, extra)
  local o = { version = version_of(k) }
  for key, v in pairs(extra or {}) do o[key] = v end
  return { "send_message", { type = "SMS", contactId = "c1", message = "v" .. k }, o }
end
local function read(id, extra) return { "get_message", id, extra } end

-- Wall and CPU seconds of f() (CPU: this process only; servers are other processes), then f's results.
local function timed(f)
  local t0, c0 = socket.gettime(), os.clock()
  local v, err = f()
  return socket.gettime() - t0, os.clock() - c0, v, err
end

local function heads(log, id) return log.marks["h:" .. id] or 0 end
-- How many times the server read a request of `id` whole (its body too).
local function received(log, id)
  local n = 0
  for _, r in ipairs(log.requests) do
    local rid = (r.method == "POST" or r.method == "PUT") and ("v" .. tonumber((r.headers.version:gsub("%-", "")), 10))
      or r.target:match("([^/?]+)$")
    if rid == id then n = n + 1 end
  end
  return n
end

local function errstr(r) return r and r.err and tostring(r.err) or nil end

-- Every call of `calls` answered by its own answer, in order.
local function all_own(res, calls, what)
  assert.equals(#calls, #res, what)
  for i, c in ipairs(calls) do
    local r = res[i]
    assert.is_nil(errstr(r), (what or "") .. " entry " .. i)
    if c[1] == "send_message" then
      assert.equals(c[2].message, r.value.messageId, (what or "") .. " entry " .. i)
    else
      assert.equals(c[2], r.value.id, (what or "") .. " entry " .. i)
    end
  end
end

---------------------------------------------------------------------------------------------------------------------
describe("direct batches against a server that misbehaves at every point of an exchange", function()
  it("48 mixed calls at concurrency 12 (and an invalid entry), each call's first request met by one of eight " ..
    "behaviours (reset after the head, a cut status line, Connection: close, an HTTP/1.0 answer to EOF, a 100 " ..
    "Continue, a close with no answer, a cut body, none): reads all succeed, sends fail exactly where no answer " ..
    "came (request_sent, 1 attempt), every send's head seen once, each result its own, in order", function()
    local srv = server([[
local function case_of(id) return math.floor((tonumber(id:match("%d+")) - 1) / 2) % 8 end
return function(req, st)
  if not req.first then return echo(req, st) end
  local c, a = case_of(id_of(req)), echo(req, st)
  if c == 2 then return { "HTTP/1.1 200 OK\r\nContent-Le", "rst" } end
  if c == 3 then return { (a:gsub("Connection: keep%-alive", "Connection: close")), "close" } end
  if c == 4 then
    local body = a:match("\r\n\r\n(.*)$")
    return { "HTTP/1.0 " .. a:match("^HTTP/1%.1 ([^\r]*)") .. "\r\nContent-Type: application/json\r\n\r\n" .. body,
      "close" }
  end
  if c == 5 then return { "HTTP/1.1 100 Continue\r\n\r\n", { sleep = 0.03 }, a } end
  if c == 6 then return "close" end
  if c == 7 then return { (a:gsub("\r\n\r\n(.*)$", function(b) return "\r\n\r\n" .. b:sub(1, 5) end)), "close" } end
  return a
end, function(req, st)
  local id = id_of(req)
  req.first = not st[id]
  st[id] = true
  if req.first and case_of(id) == 1 then return { mark_head(req), "rst" } end
  return { mark_head(req) }
end]])
    local c = client(srv.url, { max_retries = 3 })
    local calls = {}
    for i = 1, 48 do calls[i] = (i % 2 == 1) and read("g" .. i) or sms(i) end
    table.insert(calls, 20, { "send_message", { type = "SMS" } }) -- invalid: no contactId
    local w, cpu, res = timed(function() return c:batch(calls, { concurrency = 12 }) end)
    assert.is_table(res)
    assert.equals(49, #res)
    assert.equals("invalid", res[20].err and res[20].err.kind, errstr(res[20]))
    local log = srv:log()
    local fail_cases = { [1] = true, [2] = true, [6] = true, [7] = true }
    for k, call in ipairs(calls) do
      if k ~= 20 then
        local r = res[k]
        local name = call[1] == "send_message" and call[2].message or call[2]
        local case = math.floor((tonumber(name:match("%d+")) - 1) / 2) % 8
        if call[1] == "get_message" then
          assert.is_nil(errstr(r), name .. " (case " .. case .. ")")
          assert.equals(name, r.value.id)
          assert.equals(fail_cases[case] and 2 or 1, heads(log, name), name .. " (case " .. case .. ")")
        else
          assert.equals(1, heads(log, name), "the send " .. name .. " (case " .. case .. ") went " ..
            heads(log, name) .. " times")
          if fail_cases[case] then
            assert.is_table(r.err, name .. " (case " .. case .. ") gave " .. tostring(r.value and r.value.messageId))
            assert.equals("network", r.err.kind, tostring(r.err))
            assert.is_true(r.err.request_sent, tostring(r.err))
            assert.equals(1, r.err.attempts, tostring(r.err))
          else
            assert.is_nil(errstr(r), name .. " (case " .. case .. ")")
            assert.equals(name, r.value.messageId)
          end
        end
      end
    end
    assert.is_true(lch.count(lch.connections_to(srv.port)) <= 12)
    assert.is_true(w < 3 * S, ("took %.2f s"):format(w))
    assert.is_true(cpu < 0.5 * w + 0.2 * S, ("CPU %.2f s in %.2f s"):format(cpu, w))
    -- still usable: a batch and a single call, each its own
    local again = { read("after1"), sms(1002), read("after3") }
    all_own(assert(c:batch(again, { concurrency = 12 })), again, "after")
    assert.equals("after4", assert(c:get_message("after4")).id)
  end)

  it("1 MB sends at concurrency 6, half of them answered 413 from their head before their body is read (the " ..
    "server then pausing 0.2 s; half of those say Connection: close and close after the pause, the others read " ..
    "on): the 413 is the call's, each send's head seen once, the others their own answers, none another's, and " ..
    "the next batch whole", function()
    local srv = server([[
return function(req, st)
  if req.early then return nil end -- answered from its head already
  return echo(req, st)
end, function(req, st)
  local k = tonumber(id_of(req):match("%d+"))
  if req.method == "POST" and k % 2 == 1 then
    req.early = true
    local a = answer("413 Payload Too Large", '{"statusCode":413,"message":"too big"}')
    if k % 4 == 1 then
      return { mark_head(req), (a:gsub("Connection: keep%-alive", "Connection: close")), { sleep = 0.2 }, "close" }
    end
    return { mark_head(req), a, { sleep = 0.2 } }
  end
  return { mark_head(req) }
end]])
    local c = client(srv.url, { max_retries = 3, timeout = 5 * S })
    local big = ("x"):rep(1024 * 1024)
    local calls = {}
    for i = 1, 12 do
      calls[i] = (i % 3 == 0) and read("g" .. i) or
        { "send_message", { type = "SMS", contactId = "c1", message = big }, { version = version_of(i) } }
    end
    local w, _, res = timed(function() return c:batch(calls, { concurrency = 6 }) end)
    local log = srv:log()
    for i = 1, 12 do
      if i % 3 == 0 then
        assert.is_nil(errstr(res[i]), "entry " .. i)
        assert.equals("g" .. i, res[i].value.id)
      else
        assert.equals(1, heads(log, "v" .. i), "the send v" .. i .. " went " .. heads(log, "v" .. i) .. " times")
        if i % 2 == 1 then
          assert.is_table(res[i].err, "entry " .. i)
          assert.equals("http", res[i].err.kind, tostring(res[i].err))
          assert.equals(413, res[i].err.status)
          assert.is_true(res[i].err.request_sent)
          assert.equals(1, res[i].err.attempts)
        else
          assert.is_nil(errstr(res[i]), "entry " .. i)
          assert.equals("v" .. i, res[i].value.messageId)
        end
      end
    end
    -- (1 MB fits in the loopback buffers: a 413 that kept its connection open, the server reading the rest of
    -- the body after its pause, leaves a connection that may be reused, and its next call waits for the pause)
    assert.is_true(w < 2 * S, ("took %.2f s"):format(w))
    local again = { read("n1"), sms(1002), read("n3") }
    all_own(assert(c:batch(again, { concurrency = 6 })), again, "next batch")
  end)
end)

---------------------------------------------------------------------------------------------------------------------
describe("direct batches: idle slot connections written to, closed or left hanging", function()
  it("stray bytes on every idle slot connection between batches (a second answer in the answer's own write, an " ..
    "answer 20 ms later, garbage, a lone CR LF): the next batch's sends each go once with their own answer, on " ..
    "fresh connections", function()
    local srv = server([[
local STRAY = 'HTTP/1.1 201 Created\r\nContent-Length: 42\r\n\r\n{"conversationId":"x","messageId":"STRAY"}'
return function(req, st)
  local a = echo(req, st)
  local k = tonumber(id_of(req):match("%d+"))
  if id_of(req):sub(1, 1) ~= "w" then return a end
  if k % 4 == 0 then return { a .. STRAY, { mark = "stray" } } end
  if k % 4 == 1 then return { a, { sleep = 0.02 }, STRAY, { mark = "stray" } } end
  if k % 4 == 2 then return { a, { sleep = 0.02 }, "\0garbage\255", { mark = "stray" } } end
  return { a, { sleep = 0.02 }, "\r\n", { mark = "stray" } }
end, function(req, st) return { mark_head(req) } end]])
    local c = client(srv.url, { max_retries = 3 })
    local warm = {}
    for i = 1, 8 do warm[i] = read("w" .. i) end
    all_own(assert(c:batch(warm, { concurrency = 8 })), warm, "warm")
    assert.equals(8, srv:log().accepts)
    srv:wait(function(l) return (l.marks.stray or 0) >= 8 end)
    local calls = {}
    for i = 1, 16 do calls[i] = (i % 4 == 0) and read("r" .. i) or sms(i) end
    local res = assert(c:batch(calls, { concurrency = 8 }))
    all_own(res, calls, "after the strays")
    local log = srv:log()
    for i = 1, 16 do
      if i % 4 ~= 0 then
        assert.equals(1, heads(log, "v" .. i), "v" .. i)
        assert.equals(1, received(log, "v" .. i), "v" .. i)
      end
    end
    assert.equals(16, log.accepts) -- no connection that had a stray was written to again
  end)

  it("a server that accepts two of four connections and never reads them, while the others work: the calls " ..
    "there time out on their own time limit (request_sent), reads go again and succeed, sends never go twice, " ..
    "the others are not held up, no CPU burnt", function()
    local srv = server([[
return function(req, st) return echo(req, st) end, function(req, st) return { mark_head(req) } end,
function(conn, st)
  if conn == 2 or conn == 3 then return { { sleep = 30 } } end
end]])
    local tmo = 0.5 * S
    local c = client(srv.url, { max_retries = 2, timeout = tmo })
    local calls = {}
    for i = 1, 12 do calls[i] = (i % 2 == 1) and read("g" .. i) or sms(i) end
    local w, cpu, res = timed(function() return c:batch(calls, { concurrency = 4 }) end)
    local log = srv:log()
    local timeouts = 0
    for i = 1, 12 do
      local r = res[i]
      if i % 2 == 1 then
        assert.is_nil(errstr(r), "entry " .. i)
        assert.equals("g" .. i, r.value.id)
      else
        local id = "v" .. i
        assert.is_true(heads(log, id) <= 1, id .. " went twice")
        if r.err then
          timeouts = timeouts + 1
          assert.equals("timeout", r.err.kind, tostring(r.err))
          assert.is_true(r.err.request_sent, tostring(r.err))
          assert.equals(1, r.err.attempts)
          assert.equals(0, heads(log, id)) -- on a connection the server never read
          assert.is_true(i <= 4, "entry " .. i .. " was not among the first four") -- the dead connections' calls
        else
          assert.equals(id, r.value.messageId)
          assert.equals(1, received(log, id))
        end
      end
    end
    assert.is_true(timeouts <= 2)
    assert.is_true(w >= tmo * 0.9, ("took %.2f s"):format(w)) -- two calls did wait for their time limit
    assert.is_true(w < tmo + 0.8 * S, ("took %.2f s"):format(w))
    assert.is_true(cpu < 0.3 * w, ("CPU %.2f s in %.2f s"):format(cpu, w))
  end)

  it("answers trickled a byte every 5 ms on some slots: those within the time limit are whole and the others " ..
    "are not held up; one trickled past its time limit (a byte every 0.1 s) ends as a timeout on time, with no " ..
    "CPU burnt", function()
    local srv = server([[
return function(req, st)
  local id = id_of(req)
  if id:find("^t") then return { { trickle = echo(req, st), step = 0.005 } } end
  if id:find("^T") then return { { trickle = echo(req, st), step = 0.1 } } end -- 13 s
  return echo(req, st)
end]])
    local calls = { read("t1"), read("f2"), read("t3"), sms(4), read("f5"), sms(6), read("f7"), read("f8") }
    local c = client(srv.url, { timeout = 3 * S })
    local w, cpu, res = timed(function() return c:batch(calls, { concurrency = 4 }) end)
    all_own(res, calls, "trickled")
    -- about 130 bytes each at 5 ms: 0.65 s; the two trickles run at once, the rest beside them
    assert.is_true(w < 0.65 + 0.6 * S, ("took %.2f s"):format(w))
    assert.is_true(cpu < 0.5 * w, ("CPU %.2f s in %.2f s"):format(cpu, w))
    local tmo = 0.3 * S
    local c2 = client(srv.url, { timeout = tmo })
    local slow = { read("f9"), read("T10"), sms(11) }
    w, cpu, res = timed(function() return c2:batch(slow, { concurrency = 3 }) end)
    assert.equals("f9", res[1].value and res[1].value.id, errstr(res[1]))
    assert.equals("v11", res[3].value and res[3].value.messageId, errstr(res[3]))
    assert.equals("timeout", res[2].err and res[2].err.kind, errstr(res[2]) or "the trickle was taken whole")
    assert.is_true(res[2].err.request_sent)
    assert.is_true(w >= tmo * 0.9 and w < tmo + 0.4 * S, ("took %.2f s"):format(w))
    assert.is_true(cpu < 0.5 * w, ("CPU %.2f s in %.2f s"):format(cpu, w))
  end)
end)

---------------------------------------------------------------------------------------------------------------------
describe("direct batches: how many connections", function()
  it("three calls at concurrency 1, 64 and 256: one, then three connections (never more than the calls), " ..
    "reused by the next batches; results in order", function()
    local srv = server([[return function(req, st) return { { sleep = 0.05 }, echo(req, st) } end]])
    local c = client(srv.url)
    local calls = { read("a"), sms(2), read("c") }
    all_own(assert(c:batch(calls, { concurrency = 1 })), calls, "concurrency 1")
    assert.equals(1, srv:log().accepts)
    calls = { read("d"), sms(5), read("f") }
    all_own(assert(c:batch(calls, { concurrency = 64 })), calls, "concurrency 64")
    assert.equals(3, srv:log().accepts)
    calls = { sms(7), read("h"), sms(9) }
    all_own(assert(c:batch(calls, { concurrency = 256 })), calls, "concurrency 256")
    assert.equals(3, srv:log().accepts)
    assert.equals(3, c._session:stats().connects)
    assert.is_true(lch.count(lch.connections_to(srv.port)) <= 3)
  end)

  it("300 mixed calls at concurrency 256, twice: at most 256 connections, all of them reused the second time, " ..
    "each send once, each result its own", function()
    local srv = server([[return function(req, st) return echo(req, st) end]])
    local c = client(srv.url, { timeout = 5 * S, connect_timeout = 4 * S })
    for round = 1, 2 do
      local calls = {}
      for i = 1, 300 do calls[i] = (i % 3 == 0) and sms(round * 1000 + i) or read(("g%d-%d"):format(round, i)) end
      all_own(assert(c:batch(calls, { concurrency = 256 })), calls, "round " .. round)
      local log = srv:log()
      assert.is_true(log.accepts <= 256, "accepts: " .. log.accepts)
      assert.is_true(lch.count(lch.connections_to(srv.port)) <= 256)
    end
    local log = srv:log()
    local seen = {}
    for _, r in ipairs(log.requests) do
      if r.method == "POST" then
        local v = r.headers.version
        assert.is_nil(seen[v], v .. " received twice")
        seen[v] = true
      end
    end
    assert.equals(200, lch.count(seen))
  end)
end)

---------------------------------------------------------------------------------------------------------------------
describe("direct batches: answers that end their connection, or say much", function()
  it("every answer says Connection: close but the server keeps the connection open and reading: no connection " ..
    "carries a second request; HTTP/1.0 answers with no length (body to EOF) are whole", function()
    local srv = server([[
return function(req, st)
  local a = echo(req, st)
  local k = tonumber(id_of(req):match("%d+"))
  if k % 2 == 0 then return (a:gsub("Connection: keep%-alive", "Connection: close")) end -- and stays open
  local body = a:match("\r\n\r\n(.*)$")
  return { "HTTP/1.0 " .. a:match("^HTTP/1%.1 ([^\r]*)") .. "\r\nContent-Type: application/json\r\n\r\n", { sleep = 0.02 },
    body, { sleep = 0.02 }, "close" }
end]])
    local c = client(srv.url, { max_retries = 3 })
    local calls = {}
    for i = 1, 16 do calls[i] = (i % 3 == 0) and sms(i) or read("g" .. i) end
    all_own(assert(c:batch(calls, { concurrency = 4 })), calls, "first")
    calls = {}
    for i = 17, 24 do calls[#calls + 1] = (i % 3 == 0) and sms(i) or read("g" .. i) end
    all_own(assert(c:batch(calls, { concurrency = 4 })), calls, "second")
    local log = srv:log()
    for _, r in ipairs(log.requests) do
      assert.equals(1, r.n, ("connection %d carried a second request (%s %s)"):format(r.conn, r.method, r.target))
    end
    assert.equals(24, log.accepts)
  end)

  it("100 Continue before each answer (some with X-RateLimit-Remaining: 0 in the interim head): whole answers on " ..
    "kept connections; the batch's Remaining is the smallest of the final answers, whichever finished last", function()
    local srv = server([[
local REM = { r1 = 50, r2 = 7, r3 = 90, r4 = 3, r5 = 60, r6 = 20 }
local SLEEP = { r1 = 0.10, r2 = 0.15, r3 = 0.25, r4 = 0.02, r5 = 0.05, r6 = 0.20 }
return function(req, st)
  local id = id_of(req)
  local a = echo(req, st):gsub("\r\n\r\n", ("\r\nX-RateLimit-Remaining: %d\r\nX-RateLimit-Interval-Milliseconds: 10000\r\n\r\n"):format(REM[id] or 100), 1)
  return { "HTTP/1.1 100 Continue\r\nX-RateLimit-Remaining: 0\r\n\r\n", { sleep = SLEEP[id] or 0 }, a }
end]])
    local c = client(srv.url)
    local reqs = {}
    for i = 1, 6 do reqs[i] = { "message", "GET", "/conversations/messages/r" .. i, false, false, false } end
    local values, errors, remaining, interval = c._session:batch(reqs, 6)
    for i = 1, 6 do
      assert.is_nil(errors[i] and tostring(errors[i]))
      assert.equals("r" .. i, values[i].id)
    end
    assert.equals(3, remaining)
    assert.equals(10000, interval)
    -- through the client: the same connections, each answer its own
    local calls = { read("r1"), sms(2), read("r3") }
    all_own(assert(c:batch(calls, { concurrency = 6 })), calls, "client batch")
    assert.equals(6, srv:log().accepts)
  end)

  it("answers past max_response_size on some slots (a long Content-Length, chunked, to EOF, a 500's long body): " ..
    "those calls fail, the others are whole, no send goes twice, and the next batch is whole", function()
    local big = ("y"):rep(200 * 1024)
    local srv = server(([[
local BIG = %q
return function(req, st)
  local id = id_of(req)
  if id == "cl" then return answer("200 OK", '{"id":"cl","body":"' .. BIG .. '"}') end
  if id == "chunked" then
    local b = '{"id":"chunked","body":"' .. BIG .. '"}'
    return ("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n%%x\r\n%%s\r\n0\r\n\r\n"):format(#b, b)
  end
  if id == "eof" then
    return { "HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n{\"id\":\"eof\",\"body\":\"" .. BIG .. "\"}", "close" }
  end
  if id == "v77" then return answer("201 Created", '{"conversationId":"c","messageId":"' .. BIG .. '"}') end
  if id == "e500" then return answer("500 Internal Server Error", '{"message":"' .. BIG .. '"}') end
  return echo(req, st)
end, function(req, st) return { mark_head(req) } end]]):format(big))
    local c = client(srv.url, { max_retries = 2, max_response_size = 64 * 1024 })
    local calls = { read("g1"), read("cl"), sms(1), read("chunked"), read("eof"), sms(77), read("g2"),
      read("e500"), sms(2) }
    local res = assert(c:batch(calls, { concurrency = 4 }))
    for _, i in ipairs { 1, 3, 7, 9 } do assert.is_nil(errstr(res[i]), "entry " .. i) end
    assert.equals("g1", res[1].value.id)
    assert.equals("v1", res[3].value.messageId)
    assert.equals("g2", res[7].value.id)
    assert.equals("v2", res[9].value.messageId)
    for _, i in ipairs { 2, 4, 5, 6 } do
      assert.is_table(res[i].err, "entry " .. i .. " was taken whole")
      assert.equals("decode", res[i].err.kind, tostring(res[i].err))
      assert.matches("max_response_size", tostring(res[i].err))
      assert.is_true(res[i].err.request_sent)
    end
    assert.is_table(res[8].err)
    assert.equals(500, res[8].err.status, tostring(res[8].err))
    local log = srv:log()
    for _, id in ipairs { "v1", "v77", "v2" } do assert.equals(1, heads(log, id), id) end
    local again = {}
    for i = 1, 8 do again[i] = (i % 2 == 0) and sms(100 + i) or read("n" .. i) end
    all_own(assert(c:batch(again, { concurrency = 4 })), again, "next batch")
  end)
end)

---------------------------------------------------------------------------------------------------------------------
describe("direct batches: the batch's deadline", function()
  for _, engine in ipairs { "direct", "libcurl" } do
    it("three reads at concurrency 1 against a server that never answers, deadline 0.6 s, timeout 5 s: the batch " ..
      "ends by its deadline (each call 'across all its attempts and waits'), not three time limits later " ..
      "(engine " .. engine .. ")", function()
      local srv = server([[return function(req, st) return { { sleep = 30 } } end]])
      local dl = 0.6 * S
      local c = client(srv.url, { engine = engine, timeout = 5 * S, deadline = 30 * S })
      local calls = { read("a"), read("b"), read("c") }
      local w, cpu, res = timed(function() return c:batch(calls, { concurrency = 1, deadline = dl }) end)
      for i = 1, 3 do
        assert.is_table(res[i].err, "entry " .. i)
        assert.equals("timeout", res[i].err.kind, tostring(res[i].err))
      end
      assert.is_true(w < dl + 0.5 * S, ("the batch took %.2f s; its deadline was %.2f s"):format(w, dl))
      assert.is_true(cpu < 0.3 * w, ("CPU %.2f s in %.2f s"):format(cpu, w))
    end)
  end
end)

---------------------------------------------------------------------------------------------------------------------
describe("direct batches: connections that cannot be made", function()
  it("a listener that never accepts, its backlog full: calls whose connection was never made fail as unsent " ..
    "timeouts on the connect time limit, none goes twice, the batch ends on time", function()
    local file = os.tmpname()
    helpers.write_file(file, [[
local socket = require "socket"
local s = assert(socket.bind("127.0.0.1", 0, 1))
local _, port = s:getsockname()
io.stdout:write(port, "\n")
io.stdout:flush()
socket.sleep(tonumber(arg[1]))
]])
    local p = assert(io.popen(("exec %s sh -c %s"):format(helpers.CLEAN_ENV, q(("echo $$; exec %s %s " .. math.ceil(10 + 5 * S))
      :format(lch.interpreter, q(file)))), "r"))
    local pid = tonumber(p:read("*l"))
    local port = tonumber(p:read("*l"))
    os.remove(file)
    track({ stop = function()
      if p then
        os.execute("kill " .. pid .. " 2>/dev/null")
        p:close()
        p = nil
      end
    end })
    assert(port, "the listener did not start")
    local ctmo = 0.4 * S
    local c = client("http://127.0.0.1:" .. port, { connect_timeout = ctmo, timeout = 1 * S, max_retries = 0 })
    local calls = {}
    for i = 1, 8 do calls[i] = (i % 2 == 0) and sms(i) or read("g" .. i) end
    local w, cpu, res = timed(function() return c:batch(calls, { concurrency = 8 }) end)
    local unsent = 0
    for i = 1, 8 do
      local e = res[i].err
      assert.is_table(e, "entry " .. i)
      assert.equals("timeout", e.kind, tostring(e))
      if e.request_sent == false then unsent = unsent + 1 end
    end
    -- at most backlog + 1 connections (2 on Linux) complete without an accept
    assert.is_true(unsent >= 5, unsent .. " of 8 unsent")
    assert.is_true(w < 1 * S + 0.5 * S, ("took %.2f s"):format(w))
    assert.is_true(cpu < 0.3 * w, ("CPU %.2f s in %.2f s"):format(cpu, w))
  end)

  it("an https base URL against a server that accepts and never speaks TLS: every call of the batch fails on " ..
    "the connect time limit as unsent, at once together, no CPU burnt while the handshakes wait; one that answers " ..
    "the handshake with plain HTTP: network, unsent, at once", function()
    local srv = server([[
return function(req, st) return echo(req, st) end, nil, function(conn, st) return { { sleep = 30 } } end]])
    local ctmo = 1 * S
    local c = client("https://127.0.0.1:" .. srv.port, { connect_timeout = ctmo, timeout = 3 * S })
    local calls = {}
    for i = 1, 6 do calls[i] = (i % 2 == 0) and sms(i) or read("g" .. i) end
    local w, cpu, res = timed(function() return c:batch(calls, { concurrency = 6 }) end)
    for i = 1, 6 do
      local e = res[i].err
      assert.is_table(e, "entry " .. i)
      assert.equals("timeout", e.kind, tostring(e))
      assert.is_false(e.request_sent, tostring(e))
    end
    assert.is_true(w >= ctmo * 0.9 and w < ctmo + 0.5 * S, ("took %.2f s"):format(w))
    -- (each TLS handle loads the CA bundle: about 30 ms of CPU a connection, whatever the wait)
    assert.is_true(cpu < 0.5 * w, ("CPU %.2f s in %.2f s"):format(cpu, w))
    assert.equals(6, srv:log().accepts)
    local plain = server([[
return function(req, st) return echo(req, st) end, nil,
function(conn, st) return { "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n", "close" } end]])
    local c2 = client("https://127.0.0.1:" .. plain.port, { connect_timeout = 2 * S, max_retries = 0 })
    w, cpu, res = timed(function() return c2:batch(calls, { concurrency = 3 }) end)
    for i = 1, 6 do
      local e = res[i].err
      assert.is_table(e, "entry " .. i)
      assert.equals("network", e.kind, tostring(e))
      assert.is_false(e.request_sent, tostring(e))
    end
    assert.is_true(w < 1 * S, ("took %.2f s"):format(w))
    assert.equals(0, plain:count())
  end)
end)

---------------------------------------------------------------------------------------------------------------------
describe("direct batches: each call's own time limit", function()
  it("calls with their own timeouts (0.3 s, 0.6 s, the batch's 3 s) against a server that answers only the fast " ..
    "ones: each ends on its own limit; at concurrency 3 the batch takes the longest, at concurrency 1 their sum", function()
    local srv = server([[
return function(req, st)
  if id_of(req):find("^slow") then return { { sleep = 30 } } end
  return echo(req, st)
end]])
    local c = client(srv.url, { timeout = 3 * S })
    local t1, t2 = 0.3 * S, 0.6 * S
    local calls = { read("slow1", { timeout = t1 }), read("fast2"), read("slow3", { timeout = t2 }), sms(4) }
    for _, conc in ipairs { 3, 1 } do
      local w, cpu, res = timed(function() return c:batch(calls, { concurrency = conc }) end)
      assert.equals("timeout", res[1].err and res[1].err.kind, errstr(res[1]))
      assert.equals("fast2", res[2].value and res[2].value.id, errstr(res[2]))
      assert.equals("timeout", res[3].err and res[3].err.kind, errstr(res[3]))
      assert.equals("v4", res[4].value and res[4].value.messageId, errstr(res[4]))
      local want = conc == 3 and t2 or t1 + t2
      assert.is_true(w >= want * 0.9 and w < want + 0.4 * S, ("concurrency %d: took %.2f s, want %.2f s"):format(conc,
        w, want))
      assert.is_true(cpu < 0.3 * w, ("CPU %.2f s in %.2f s"):format(cpu, w))
    end
  end)
end)

---------------------------------------------------------------------------------------------------------------------
-- A server of this file's own, in another process: plain or TLS (LuaSec), one coroutine per connection, on a port
-- of its choosing or a given one (to restart on the same port), logging to a file that outlives it, one event a
-- line: "accept", "head <METHOD> <id>" (a send's id is "v<k>", from its Version header; a read's its last path
-- segment), "done <METHOD> <id>", "idle-reset", "killed", "closed" (by the client, or it failed). A send whose k ends in 90 to 99 is reset (no TLS
-- close_notify) once its head is read. With IDLE > 0, a connection with no new request IDLE seconds after an answer is reset the same way.
local XSERVER = [==[
local socket = require "socket"
local PORT, LOG, IDLE, CERT, KEY = tonumber(arg[1]), arg[2], tonumber(arg[3]), arg[4], arg[5]
local ssl, ctx
if CERT and CERT ~= "" then
  ssl = require "ssl"
  ctx = assert(ssl.newcontext { mode = "server", protocol = "any", key = KEY, certificate = CERT })
end
local lst = assert(socket.bind("127.0.0.1", PORT))
lst:settimeout(0)
local _, port = lst:getsockname()
local logf = assert(io.open(LOG, "a"))
local function event(s) logf:write(s, "\n") logf:flush() end
io.stdout:write(port, "\n")
io.stdout:flush()
local keep, conns = {}, {}
local last = socket.gettime()

local function kill(c) -- a reset; for TLS, the descriptor closed under the TLS object: no close_notify
  local t = socket.tcp()
  t:setfd(c:getfd())
  t:setoption("linger", { on = true, timeout = 0 })
  t:close()
  keep[#keep + 1] = c
end
local function wait(what, until_t, c) return coroutine.yield(what, until_t, c) end
local function again(err) return err == "timeout" or err == "wantread" or err == "wantwrite" end

-- More bytes into st.buf: true; false when st.until_t passed first; nil when the connection ended.
local function fill(st)
  while true do
    local data, err, part = st.c:receive(65536)
    data = data or part
    if data and #data > 0 then st.buf = st.buf .. data return true end
    if not again(err) then return nil end
    if not (ssl and st.c:dirty()) then
      if not wait(err == "wantwrite" and "w" or "r", st.until_t, st.c) then return false end
    end
  end
end
local function send_all(c, data)
  local i = 1
  while i <= #data do
    local n, err, lastp = c:send(data, i)
    if n then i = n + 1
    elseif again(err) then
      i = (lastp or (i - 1)) + 1
      wait(err == "wantread" and "r" or "w", socket.gettime() + 5, c)
    else return nil end
  end
  return true
end

local function serve(c)
  if ssl then
    c = assert(ssl.wrap(c, ctx))
    c:settimeout(0)
    while true do
      local ok, err = c:dohandshake()
      if ok then break end
      if not again(err) or not wait(err == "wantwrite" and "w" or "r", socket.gettime() + 5, c) then
        keep[#keep + 1] = c
        event("closed")
        return
      end
    end
  end
  local st = { c = c, buf = "" }
  local served = 0
  while true do
    st.until_t = socket.gettime() + ((served > 0 and IDLE > 0) and IDLE or 30)
    local he = st.buf:find("\r\n\r\n", 1, true)
    while not he do
      local r = fill(st)
      if r == false and #st.buf == 0 and served > 0 and IDLE > 0 then kill(c) event("idle-reset") return end
      if not r then c:close() event("closed") return end
      st.until_t = socket.gettime() + 30
      he = st.buf:find("\r\n\r\n", 1, true)
    end
    local head = st.buf:sub(1, he - 1)
    local method, target = head:match("^(%u+) (%S+)")
    local len = tonumber(head:match("\r\n[Cc]ontent%-[Ll]ength:%s*(%d+)")) or 0
    local k = tonumber(((head:match("\r\n[Vv]ersion:%s*([%d%-]+)") or ""):gsub("%-", "")), 10)
    local id = (method == "POST" or method == "PUT") and ("v" .. tostring(k)) or (target:match("([^/?]+)$") or "?")
    event("head " .. method .. " " .. id)
    if method == "POST" and k and k % 100 >= 90 then kill(c) event("killed") return end
    while #st.buf < he + 3 + len do
      if not fill(st) then c:close() event("closed") return end
    end
    st.buf = st.buf:sub(he + 4 + len)
    event("done " .. method .. " " .. id)
    local body = method == "POST" and ('{"conversationId":"c","messageId":"' .. id .. '"}') or
      ('{"id":"' .. id .. '","type":1,"body":"b"}')
    if not send_all(c, ("HTTP/1.1 %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"):format(
      method == "POST" and "201 Created" or "200 OK", #body, body)) then c:close() event("closed") return end
    served = served + 1
  end
end

while socket.gettime() - last < 30 do
  local readers, writers = { lst }, {}
  local now = socket.gettime()
  local wake = now + 0.5
  for _, w in pairs(conns) do
    if w.want == "r" then readers[#readers + 1] = w.c elseif w.want == "w" then writers[#writers + 1] = w.c end
    if w.until_t and w.until_t < wake then wake = w.until_t end
  end
  local r, wr = socket.select(readers, writers, math.max(0, wake - now))
  local ready = {}
  for _, s in ipairs(r) do ready[s] = true end
  for _, s in ipairs(wr) do ready[s] = true end
  if ready[lst] then
    local c = lst:accept()
    if c then
      c:settimeout(0)
      c:setoption("tcp-nodelay", true)
      last = socket.gettime()
      event("accept")
      conns[coroutine.create(serve)] = { c = c, want = "start" }
    end
  end
  now = socket.gettime()
  for co, w in pairs(conns) do
    local go, arg
    if w.want == "start" then go, arg = true, w.c
    elseif ready[w.c] then go, arg = true, true
    elseif w.until_t and now >= w.until_t then go, arg = true, false end
    if go then
      local ok, want, until_t, sock = coroutine.resume(co, arg)
      if not ok or coroutine.status(co) == "dead" then
        conns[co] = nil
        if not ok then io.stderr:write("xserver: ", tostring(want), "\n") end
      else
        w.want, w.until_t = want, until_t
        if sock then w.c = sock end
      end
    end
  end
end
os.exit(0, false)
]==]

-- Starts XSERVER: { url, port, events() -> { [event] = count }, wait(event, n), stop(), log }
local function xserver(opts)
  opts = opts or {}
  local file = os.tmpname()
  local log = opts.log or os.tmpname()
  helpers.write_file(file, XSERVER)
  local p = assert(io.popen(("exec %s sh -c %s"):format(helpers.CLEAN_ENV, q(("echo $$; exec %s %s %d %s %s %s %s")
    :format(lch.interpreter, q(file), opts.port or 0, q(log), tostring(opts.idle or 0), q(opts.cert or ""),
      q(opts.key or "")))), "r"))
  local pid = tonumber(p:read("*l"))
  local port = tonumber(p:read("*l"))
  os.remove(file)
  assert(port, "the server did not start")
  local srv = { port = port, log = log, url = (opts.cert and "https" or "http") .. "://127.0.0.1:" .. port }
  function srv.events()
    local ev = {}
    for l in io.lines(log) do ev[l] = (ev[l] or 0) + 1 end
    return ev
  end
  function srv.wait(what, n)
    local stop = socket.gettime() + 5 * S
    while (srv.events()[what] or 0) < n do
      assert(socket.gettime() < stop, "the server: no " .. what .. " (" .. n .. "): " .. helpers.read_file(log):gsub("\n", " "))
      socket.sleep(0.005)
    end
  end
  function srv.stop()
    if p then
      if pid then os.execute("kill " .. pid .. " 2>/dev/null") end
      p:close()
      p = nil
    end
  end
  return track(srv)
end

describe("direct batches: a server restarted on the same port", function()
  it("batches of sends and reads; the server stops (every slot connection closed), a batch while it is down " ..
    "fails unsent; it restarts on the same port and the next batch is whole: each send received once", function()
    local log = os.tmpname()
    finally(function() os.remove(log) end)
    local srv = xserver({ log = log })
    local port = srv.port
    local c = client(srv.url, { max_retries = 2 })
    local function calls_of(tag, base)
      local calls = {}
      for i = 1, 12 do calls[i] = (i % 2 == 0) and sms(base + i) or read(tag .. i) end
      return calls
    end
    local calls = calls_of("a", 100)
    all_own(assert(c:batch(calls, { concurrency = 6 })), calls, "before")
    srv.stop()
    local down = calls_of("b", 200)
    local w, _, res = timed(function() return c:batch(down, { concurrency = 6 }) end)
    for i = 1, 12 do
      local e = res[i].err
      assert.is_table(e, "entry " .. i)
      assert.equals("network", e.kind, tostring(e))
      assert.is_false(e.request_sent, tostring(e))
    end
    assert.is_true(w < 1 * S, ("took %.2f s"):format(w))
    xserver({ log = log, port = port })
    calls = calls_of("c", 300)
    all_own(assert(c:batch(calls, { concurrency = 6 })), calls, "after the restart")
    assert.equals("d1", assert(c:get_message("d1")).id)
    local ev = srv.events() -- the log file: both runs of the server
    for _, base in ipairs { 100, 300 } do
      for i = 2, 12, 2 do assert.equals(1, ev["head POST v" .. (base + i)], "v" .. (base + i)) end
    end
    for i = 2, 12, 2 do assert.is_nil(ev["head POST v" .. (200 + i)]) end
  end)
end)

describe("direct batches over TLS (a LuaSec server resetting without close_notify)", function()
  local dir, cert, key
  lazy_setup(function()
    if not select(2, core.curl_version()) or not pcall(require, "ssl") then return end
    dir = helpers.sh("mktemp -d \"${TMPDIR:-/tmp}/lc-batch-tls.XXXXXX\""):gsub("%s+$", "")
    cert, key = dir .. "/cert.pem", dir .. "/key.pem"
    assert(os.execute("cd " .. q(dir) .. " && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 " ..
      "-nodes -keyout key.pem -out cert.pem -days 2 -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 " ..
      ">/dev/null 2>&1"), "openssl failed")
  end)
  lazy_teardown(function()
    if dir then os.execute("rm -rf " .. q(dir)) end
  end)

  it("three batches at concurrency 4, every idle connection reset 0.15 s after its answer, sends reset after " ..
    "their head among them: each send's head seen once, the reset ones network with request_sent, the others " ..
    "their own answers", function()
    if not dir then return pending("libcurl without TLS, or no LuaSec") end
    local srv = xserver({ cert = cert, key = key, idle = 0.15 })
    local c = client(srv.url, { ca_file = cert, max_retries = 3, timeout = 3 * S })
    local resets = 0
    for round = 1, 3 do
      local calls = {}
      for i = 1, 10 do
        calls[i] = (i % 2 == 1) and read(("g%d-%d"):format(round, i)) or
          sms(round * 100 + ((i == 4 or i == 8) and 90 or 0) + i)
      end
      local res = assert(c:batch(calls, { concurrency = 4 }))
      for i, r in ipairs(res) do
        local name = calls[i][1] == "send_message" and calls[i][2].message or calls[i][2]
        if calls[i][1] == "send_message" and tonumber(name:sub(2)) % 100 >= 90 then
          assert.is_table(r.err, name .. " gave " .. tostring(r.value and r.value.messageId))
          assert.equals("network", r.err.kind, tostring(r.err))
          assert.is_true(r.err.request_sent, tostring(r.err))
          assert.equals(1, r.err.attempts)
        else
          assert.is_nil(errstr(r), name)
          assert.equals(name, r.value.id or r.value.messageId)
        end
      end
      -- every connection left open is reset while idle before the next round
      local ev = srv.events()
      local open = (ev.accept or 0) - (ev["idle-reset"] or 0) - (ev.killed or 0) - (ev.closed or 0)
      srv.wait("idle-reset", (ev["idle-reset"] or 0) + open)
      resets = srv.events()["idle-reset"]
    end
    assert.is_true(resets >= 4)
    local ev = srv.events()
    for round = 1, 3 do
      for i = 2, 10, 2 do
        local name = "v" .. (round * 100 + ((i == 4 or i == 8) and 90 or 0) + i)
        assert.equals(1, ev["head POST " .. name] or 0, name .. " went " .. tostring(ev["head POST " .. name]) ..
          " times")
      end
    end
    assert.is_true(lch.count(lch.connections_to(srv.port)) <= 4)
  end)
end)

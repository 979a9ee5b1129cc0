-- A second hostile round against commit 184708b (the fixes of spec 58's findings):
--  * direct_exchange reads while it writes (an answer before the whole body is the call's; the connection is then
--    not reused);
--  * h1.c and the cosocket reader (lua/leadconnector/ngx.lua read_answer) refuse a Transfer-Encoding other than
--    chunked, chunk sizes followed by anything but white space, ';' or the line's end, data past a chunk's size and
--    a 101;
--  * libcurl_fresh(): before libcurl's own engine runs (batches, uploads, proxies, engine = "libcurl"), every idle
--    socket of the session is polled, and libcurl's cached connections are all dropped if one is readable.
-- The promises held to: a POST never goes twice, no call waits past its timeout or burns CPU while it waits (os.clock
-- around calls that wait), the token never shows, a call never takes another request's answer, an answer that came
-- is not lost. Servers are raw ones in other processes: spec/directserver.lua, a server here that resets every idle
-- connection on command (for batches), and a TLS server here (LuaSec) that can reset a connection without a TLS
-- close_notify; the cosocket reader is fed answers split at every place (stand-in socket) and, inside a real nginx,
-- split into separate packets.
--
-- What this file found (2026-12-08, libcurl 7.88.1 and 8.14.1, OpenSSL 3.0):
--  * over TLS the direct engine counted a request as "not sent" although megabytes of it had left: curl_easy_send
--    over OpenSSL writes a large buffer record after record and says CURLE_AGAIN with 0 bytes, or fails, without
--    saying what went, so `off` stayed 0. A kept-alive connection reset after the server read a send's head: the
--    "dead connection that took nothing" path wrote the send again on a fresh connection (max_retries = 0: the server
--    read the POST twice, the call returned the second answer); on a fresh connection the reset or a timeout while
--    writing was request_sent = false and the Lua layer sent the POST again; a 413 sent from the head before the
--    server closed was never read. Fixed in 593e5f1 (one TLS record a write; any write that did not fail outright
--    counts as sent) while this file was being written: the four "over TLS" tests with "the POST read once" fail on
--    02916ef and pass since. Plain http never showed it (send() reports partial writes).
--  * batches close one of their connections after each batch and open a new one in the next (pre-existing, not
--    184708b's; see the last describe block): fails on purpose until fixed. On libcurl 8.14 the same cause also makes
--    a batch of 40 at concurrency 8 open more than 8 connections (the 40-sends test's accept count).
-- Not a bug, a limit of HTTP/1.1 keep-alive: a stray answer a server writes on an idle connection that arrives only
-- after the next request was written (Nagle holding it behind an unacknowledged segment, say) is read as that
-- request's answer on either engine; the TLS server below sets TCP_NODELAY so that its strays arrive at once.
local leadconnector = require "leadconnector"
local core = require "leadconnector.core"
local ds = require "directserver"
local lch = require "lchelpers"
local helpers = require "helpers"
local socket = require "socket"
local cjson = require "cjson"

local S = lch.scale
local TOKEN = "tok-Hostile2-0123456789abcdefQRS"
local ENGINES = { "direct", "libcurl" }
local MSG_BODY = '{"id":"m1","type":1,"body":"b"}'
local HUGE = ("x"):rep(8 * 1024 * 1024)

local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

local function client(url, opts) return ds.client(url, TOKEN, opts) end

local function stats(c) return c._session:stats() end

local function send(c, message, copts)
  return c:send_message({ type = "SMS", contactId = "c1", message = message or "hello" }, copts)
end

local function fails(kind, v, err)
  assert.is_nil(v)
  assert.is_table(err, "no error object")
  assert.equals(kind, err.kind, tostring(err))
  return err
end

-- Wall and CPU seconds of f() (CPU: this process only; the servers are other processes), then f's results.
local function timed(f)
  local t0, c0 = socket.gettime(), os.clock()
  local v, err = f()
  return socket.gettime() - t0, os.clock() - c0, v, err
end

-- Servers of one test, stopped when it ends.
local function track(srv) return ds.track(srv, finally) end
local function server(script) return ds.for_test(script, finally) end

-- The number of times the server's script saw a request head of `method` (on_head marks "head_<METHOD>"), read
-- whole or not.
local function heads(srv, method) return srv:log().marks["head_" .. method] or 0 end
local MARK_HEADS = "local function mark(req) return { mark = \"head_\" .. req.method } end\n"

---------------------------------------------------------------------------------------------------------------------
describe("direct engine, round 2: an answer that comes while the request is written (plain http)", function()
  for _, engine in ipairs(ENGINES) do
    it("a 201 from the head with keep-alive, the server then pausing 0.5 s before it reads the rest: the 201 is " ..
      "the call's, the POST read once, and the next call its own answer -- on a new connection for the direct " ..
      "engine, which did not write the whole body (engine " .. engine .. ")", function()
      local srv = server(MARK_HEADS .. [[
return function(req, st)
  if req.method == "POST" and req.seq == 1 then return nil end -- answered from its head already
  return default(req, st)
end, function(req, st)
  if req.method == "POST" and not st.early then
    st.early = true
    return { mark(req), answer("201 Created", '{"conversationId":"c","messageId":"EARLY"}'), { sleep = 0.5 } }
  end
  return { mark(req) }
end]])
      local c = client(srv.url, { engine = engine, max_retries = 3 })
      local w, cpu, v, err = timed(function() return send(c, HUGE) end)
      assert.is_nil(err and tostring(err))
      assert.equals("EARLY", v.messageId)
      local m, err2 = c:get_message("after")
      assert.is_nil(err2 and tostring(err2))
      assert.equals("after", m.id)
      assert.equals(1, heads(srv, "POST"))
      if engine == "direct" then
        assert.is_true(w < 0.3 * S, ("took %.2f s"):format(w)) -- the answer, not the server's pause
        assert.equals(2, srv:log().accepts) -- the send's connection was not reused: its body was cut
        assert.equals(2, stats(c).connects)
        assert.equals(0, srv:count("POST")) -- (the server found the connection closed before the body's end)
      else
        -- libcurl's engine writes the rest of the body after a 2xx, then may keep the connection
        assert.is_true(srv:log().accepts <= 2)
      end
      assert.is_true(cpu < 1 * S, ("CPU %.2f s"):format(cpu))
    end)

    it("a 413 from the head, then the server stops reading for 2 s before it reads the rest: the 413 at once, " ..
      "not after the server's pause (engine " .. engine .. ")", function()
      local srv = server(MARK_HEADS .. [[
return function(req, st) return default(req, st) end, function(req, st)
  if req.method == "POST" then
    return { mark(req), answer("413 Payload Too Large", '{"statusCode":413,"message":"too big"}'), { sleep = 2 } }
  end
  return { mark(req) }
end]])
      local c = client(srv.url, { engine = engine, max_retries = 3, timeout = 5 * S })
      local w, _, v, err = timed(function() return send(c, HUGE) end)
      fails("http", v, err)
      assert.equals(413, err.status)
      assert.is_true(err.request_sent)
      assert.is_true(w < 1 * S, ("took %.2f s"):format(w))
      assert.equals(1, heads(srv, "POST"))
    end)

    it("a 100 Continue from the head, then nothing and no more reading: timeout on time, request_sent, the head " ..
      "read once, no CPU burnt while waiting (engine " .. engine .. ")", function()
      local srv = server(MARK_HEADS .. [[
return default, function(req, st) return { mark(req), "HTTP/1.1 100 Continue\r\n\r\n", { sleep = 30 } } end]])
      local tmo = 0.5 * S
      local c = client(srv.url, { engine = engine, timeout = tmo, max_retries = 3 })
      local w, cpu, v, err = timed(function() return send(c, HUGE) end)
      fails("timeout", v, err)
      assert.is_true(err.request_sent)
      assert.equals(1, err.attempts)
      assert.is_true(w >= tmo * 0.9 and w < tmo + 0.5 * S, ("took %.2f s"):format(w))
      assert.is_true(cpu < 0.4 * w, ("CPU %.2f s in %.2f s"):format(cpu, w))
      assert.equals(1, heads(srv, "POST"))
      assert.equals(1, srv:log().accepts)
    end)

    it("100 Continues trickled from the head while the server does not read: timeout on time, no CPU burnt " ..
      "(engine " .. engine .. ")", function()
      local srv = server([[
return default, function(req, st)
  return { { trickle = ("HTTP/1.1 100 Continue\r\n\r\n"):rep(40), step = 0.002 }, { sleep = 30 } }
end]])
      local tmo = 0.5 * S
      local c = client(srv.url, { engine = engine, timeout = tmo })
      local w, cpu, v, err = timed(function() return send(c, HUGE) end)
      fails("timeout", v, err)
      assert.is_true(err.request_sent)
      assert.is_true(w < tmo + 0.5 * S, ("took %.2f s"):format(w))
      assert.is_true(cpu < 0.4 * w, ("CPU %.2f s in %.2f s"):format(cpu, w))
    end)

    it("a 100 Continue from the head, the body then read and a 201: the 201, the POST once, kept alive (engine " ..
      engine .. ")", function()
      local srv = server([[
return default, function(req, st)
  if req.method == "POST" then return "HTTP/1.1 100 Continue\r\n\r\n" end
end]])
      local c = client(srv.url, { engine = engine })
      local v, err = send(c, HUGE)
      assert.is_nil(err and tostring(err))
      assert.equals("m1", v.messageId)
      assert.equals("x", assert(c:get_message("x")).id)
      assert.equals(1, srv:count("POST"))
    end)

    it("the head of a 413 from the request's head, its body never, the server not reading: timeout on time, no " ..
      "CPU burnt (engine " .. engine .. ")", function()
      local srv = server([[
return default, function(req, st)
  return { "HTTP/1.1 413 Too Large\r\nContent-Length: 10\r\n\r\n", { sleep = 30 } }
end]])
      local tmo = 0.5 * S
      local c = client(srv.url, { engine = engine, timeout = tmo })
      local w, cpu, v, err = timed(function() return send(c, HUGE) end)
      fails("timeout", v, err)
      assert.is_true(err.request_sent)
      assert.is_true(w < tmo + 0.5 * S, ("took %.2f s"):format(w))
      assert.is_true(cpu < 0.4 * w, ("CPU %.2f s in %.2f s"):format(cpu, w))
    end)

    for _, bad in ipairs {
      { "a status line that is none", "HTTP/1.1 41X nope\r\nContent-Length: 2\r\n\r\n{}" },
      { "Transfer-Encoding gzip", "HTTP/1.1 413 Too Large\r\nTransfer-Encoding: gzip\r\n\r\n2\r\n{}\r\n0\r\n\r\n" },
      { "a 101", "HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n" },
      { "a chunk size 0x2", "HTTP/1.1 413 Too Large\r\nTransfer-Encoding: chunked\r\n\r\n0x2\r\n{}\r\n0\r\n\r\n" },
    } do
      it("a malformed early answer (" .. bad[1] .. "), the server then not reading: network at once, request_sent, " ..
        "sent once though max_retries = 3, the next call on a new connection (engine " .. engine .. ")", function()
        local srv = server(MARK_HEADS .. ([[
return default, function(req, st)
  if req.method == "POST" and not st.bad then st.bad = true return { mark(req), %q, { sleep = 30 } } end
  return { mark(req) }
end]]):format(bad[2]))
        local c = client(srv.url, { engine = engine, max_retries = 3, timeout = 0.6 * S })
        local w, _, v, err = timed(function() return send(c, HUGE) end)
        if engine == "direct" then
          fails("network", v, err)
          assert.is_true(w < 1 * S, ("took %.2f s"):format(w))
        else -- libcurl's engine reads these its own way (spec 58): an error all the same, the send made once
          assert.is_nil(v)
          assert.is_table(err)
        end
        assert.is_true(err.request_sent)
        assert.equals(1, err.attempts)
        assert.equals(1, heads(srv, "POST"))
        assert.equals("after", assert(c:get_message("after")).id)
        assert.equals(2, srv:log().accepts)
      end)
    end

    it("an early answer with another answer behind it in the same write: the first is the call's, the next call " ..
      "is not answered by the second (engine " .. engine .. ")", function()
      local srv = server([[
return default, function(req, st)
  if req.method == "POST" and not st.done then
    st.done = true
    return { answer("413 Payload Too Large", '{"message":"first"}') ..
      answer("200 OK", '{"id":"WRONG","type":1,"body":""}'), { sleep = 30 } }
  end
end]])
      local c = client(srv.url, { engine = engine, timeout = 2 * S })
      local err = fails("http", send(c, HUGE))
      assert.equals(413, err.status)
      local m, err2 = c:get_message("mine")
      assert.is_nil(err2 and tostring(err2))
      assert.equals("mine", m.id)
    end)

    it("an early 413 that echoes the token in its reason, X-Trace-Id and body, then a reset: not in the error " ..
      "(engine " .. engine .. ")", function()
      local srv = server([[
return default, function(req, st)
  local T = req.headers.authorization:match("^Bearer (.*)$")
  return { answer("413 " .. T, '{"statusCode":413,"message":"' .. T .. '","token":"' .. T .. '"}',
    "X-Trace-Id: " .. T .. "\r\nX-Request-Id: " .. T .. "\r\n"), { sleep = 0.05 }, "rst" }
end]])
      local c = client(srv.url, { engine = engine })
      local err = fails("http", send(c, HUGE))
      assert.equals(413, err.status)
      assert.is_nil(lch.find_in(err, TOKEN), "the token is in " .. tostring(lch.find_in(err, TOKEN)))
      assert.is_nil(tostring(err):find(TOKEN:sub(1, 12), 1, true), tostring(err))
    end)

    it("a kept-alive connection half-closed by the server while a send is written, with no answer: network, " ..
      "request_sent, the head read once though max_retries = 3, quickly (engine " .. engine .. ")", function()
      local srv = server(MARK_HEADS .. [[
return default, function(req, st)
  if req.method == "POST" then return { mark(req), "shutdown", { sleep = 30 } } end
  return { mark(req) }
end]])
      local c = client(srv.url, { engine = engine, max_retries = 3, timeout = 0.6 * S })
      assert(c:get_message("warm"))
      local w, cpu, v, err = timed(function() return send(c, HUGE) end)
      if engine == "libcurl" and err and err.kind == "timeout" then
        -- libcurl's engine notices the half-close only at its timeout: slower, but sent once all the same, and
        -- the wait for that timeout must not burn CPU
        assert.is_true(cpu < 0.4 * w + 0.2 * S, ("CPU %.2f s in %.2f s"):format(cpu, w))
      else
        -- quick: the call is mostly the work of writing the body, so its CPU is bounded by its wall time alone
        fails("network", v, err)
        assert.is_true(w < 0.3 * S, ("took %.2f s"):format(w))
      end
      assert.is_true(err.request_sent)
      assert.equals(1, err.attempts)
      assert.equals(1, heads(srv, "POST"))
    end)

    it("a kept-alive connection reset by the server after the head of a send (max_retries = 0): network, " ..
      "request_sent, the head read once -- not written again on a fresh connection (engine " .. engine .. ")",
      function()
        local srv = server(MARK_HEADS .. [[
return default, function(req, st)
  if req.method == "POST" and not st.reset then st.reset = true return { mark(req), "rst" } end
  return { mark(req) }
end]])
        local c = client(srv.url, { engine = engine })
        assert(c:get_message("warm"))
        local err = fails("network", send(c, HUGE))
        assert.is_true(err.request_sent)
        assert.equals(1, heads(srv, "POST"))
        assert.equals(0, srv:count("POST"))
      end)
  end
end)

---------------------------------------------------------------------------------------------------------------------
-- A server that resets every connection it holds when told to (a control port): "idle connections reset between
-- batches". It reads requests as they come on any number of connections and answers each at once: a send with its
-- message as messageId (each message's count is logged), a GET with its id.
local RSERVER = [==[
local socket = require "socket"
local cjson = require "cjson"
local lst = assert(socket.bind("127.0.0.1", 0))
local ctl = assert(socket.bind("127.0.0.1", 0))
lst:settimeout(0)
ctl:settimeout(0)
local _, port = lst:getsockname()
local _, cport = ctl:getsockname()
io.stdout:write(port, " ", cport, "\n")
io.stdout:flush()
local conns = {}
local log = { accepts = 0, messages = {}, requests = 0, resets = 0 }
local last = socket.gettime()
local function reply(c, status, body)
  c:settimeout(5)
  c:send(("HTTP/1.1 %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"):format(status, #body, body))
  c:settimeout(0)
end
local function serve(c, st)
  while true do
    local he = st.buf:find("\r\n\r\n", 1, true)
    if not he then return end
    local head = st.buf:sub(1, he - 1)
    local len = tonumber(head:match("\r\n[Cc]ontent%-[Ll]ength:%s*(%d+)")) or 0
    if #st.buf < he + 3 + len then return end
    local body = st.buf:sub(he + 4, he + 3 + len)
    st.buf = st.buf:sub(he + 4 + len)
    local method, target = head:match("^(%u+) (%S+)")
    log.requests = log.requests + 1
    if method == "POST" and target:find("/upload$") then -- a multipart upload: its file's content is its name
      local m = body:match("UPLOAD%-[%w%-]+") or "?"
      log.messages[m] = (log.messages[m] or 0) + 1
      reply(c, "200 OK", '{"uploadedFiles":{"note.txt":"https://files.test/' .. m .. '"}}')
    elseif method == "POST" then
      local m = cjson.decode(body).message
      log.messages[m] = (log.messages[m] or 0) + 1
      reply(c, "201 Created", '{"conversationId":"c","messageId":"' .. m .. '"}')
    else
      reply(c, "200 OK", '{"id":"' .. target:match("([^/]+)$") .. '","type":1,"body":"b"}')
    end
  end
end
while socket.gettime() - last < 60 do
  local readers = { lst, ctl }
  for c in pairs(conns) do readers[#readers + 1] = c end
  local ready = socket.select(readers, nil, 0.5)
  for _, s in ipairs(ready) do
    if s == lst then
      local c = lst:accept()
      if c then
        c:settimeout(0)
        conns[c] = { buf = "" }
        log.accepts = log.accepts + 1
        last = socket.gettime()
      end
    elseif s == ctl then
      local c = ctl:accept()
      if c then
        c:settimeout(2)
        local cmd = c:receive("*l")
        last = socket.gettime()
        if cmd == "reset" then
          local n = 0
          for k in pairs(conns) do
            k:setoption("linger", { on = true, timeout = 0 })
            k:close()
            n = n + 1
          end
          conns = {}
          log.resets = log.resets + n
          c:send(n .. "\n")
        elseif cmd == "log" then
          c:send(cjson.encode(log) .. "\n")
        elseif cmd == "quit" then
          c:send("bye\n")
          c:close()
          os.exit(0)
        end
        c:close()
      end
    elseif conns[s] then
      local data, err, part = s:receive(65536)
      data = data or part
      if data and #data > 0 then
        conns[s].buf = conns[s].buf .. data
        last = socket.gettime()
        serve(s, conns[s])
      end
      if err == "closed" then
        s:close()
        conns[s] = nil
      end
    end
  end
end
]==]

local RServer = {}
RServer.__index = RServer
local function rserver()
  local file = os.tmpname()
  helpers.write_file(file, RSERVER)
  local p = assert(io.popen(("%s %s %s"):format(helpers.CLEAN_ENV, lch.interpreter, file), "r"))
  local port, cport = (p:read("*l") or ""):match("^(%d+) (%d+)$")
  os.remove(file)
  assert(port, "the resetting server did not start")
  return track(setmetatable({ url = "http://127.0.0.1:" .. port, cport = tonumber(cport), _p = p }, RServer))
end
function RServer:ctl(cmd)
  local c = socket.tcp()
  c:settimeout(5)
  assert(c:connect("127.0.0.1", self.cport))
  c:send(cmd .. "\n")
  local line = c:receive("*l")
  c:close()
  return line
end
function RServer:log()
  local line = self:ctl("log")
  assert(line, "the resetting server: no log")
  return cjson.decode(line)
end
function RServer:reset() return tonumber(self:ctl("reset")) end
function RServer:stop()
  if self._p then
    pcall(self.ctl, self, "quit")
    self._p:close()
    self._p = nil
  end
end

describe("a batch's connections and a single call's, after idle connections were reset, stray-written or closed",
  function()
  it("a direct call's connection reset while idle: the next batch still reuses its own idle connection " ..
    "(the single call's socket is not the batch's), and the next direct call makes a new one", function()
    for _, how in ipairs { [["rst"]], [["close"]], [["shutdown", { mark = "ended" }]],
      [['HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\n{}', { mark = "ended" }]] } do
      local srv = server(([[
return function(req, st)
  local a = default(req, st)
  if req.target:find("direct", 1, true) then return { a, { sleep = 0.02 }, %s } end
  return a
end]]):format(how))
      local c = client(srv.url)
      assert.equals("b1", assert(c:batch { { "get_message", "b1" } })[1].value.id)
      assert.equals("direct1", assert(c:get_message("direct1")).id)
      srv:wait(function(l) return l.closed >= 1 or (l.marks.ended or 0) >= 1 end)
      local r = assert(c:batch({ { "get_message", "b2" }, { "send_message", { type = "SMS", contactId = "c",
        message = "m" } } }, { concurrency = 1 }))
      assert.equals("b2", r[1].value.id, how)
      assert.equals("m1", r[2].value.messageId, how)
      assert.equals(2, srv:log().accepts, how) -- the batch's connection kept: no new one for the batch
      assert.equals("direct2", assert(c:get_message("direct2")).id)
      assert.equals(3, srv:log().accepts, how)
      assert.equals(3, stats(c).connects, how) -- the batch's one, the single calls' two
      assert.equals(1, srv:count("POST"), how)
      srv:stop()
    end
  end)

  it("a batch's idle connection reset while the single calls' is healthy: the batch takes a new one, and the " ..
    "single calls' connection is untouched (the next direct call reuses it)", function()
    local srv = server([[
return function(req, st)
  local a = default(req, st)
  if req.target:find("batch", 1, true) then return { a, { sleep = 0.02 }, "rst" } end
  return a
end]])
    local c = client(srv.url)
    assert.equals("direct1", assert(c:get_message("direct1")).id)
    assert.equals("batch1", assert(c:batch { { "get_message", "batch1" } })[1].value.id)
    srv:wait(function(l) return l.closed >= 1 end)
    local r = assert(c:batch { { "send_message", { type = "SMS", contactId = "c", message = "m" } } })[1]
    assert.is_nil(r.err and tostring(r.err))
    assert.equals("m1", r.value.messageId)
    assert.equals(3, srv:log().accepts)
    assert.equals("direct2", assert(c:get_message("direct2")).id)
    assert.equals(3, srv:log().accepts) -- the single calls' connection lived through the batch's drop
    assert.equals(3, stats(c).connects)
    assert.equals(1, srv:count("POST"))
  end)

  it("a batch of 40 sends, concurrency 8, three times, every idle connection reset between the batches (a direct " ..
    "send between them too): every send received exactly once, each with its own answer", function()
    local srv = rserver()
    local c = client(srv.url)
    for round = 1, 3 do
      local calls = {}
      for i = 1, 40 do
        calls[i] = { "send_message", { type = "SMS", contactId = "c", message = ("r%d-%d"):format(round, i) } }
      end
      local res = assert(c:batch(calls, { concurrency = 8 }))
      for i, r in ipairs(res) do
        assert.is_nil(r.err and tostring(r.err), ("round %d, entry %d"):format(round, i))
        assert.equals(("r%d-%d"):format(round, i), r.value.messageId)
      end
      local d, derr = send(c, "direct-" .. round)
      assert.is_nil(derr and tostring(derr))
      assert.equals("direct-" .. round, d.messageId)
      assert.is_true(srv:reset() >= 2) -- the batch's and the single calls' connections
    end
    local log = srv:log()
    local n = 0
    for m, count in pairs(log.messages) do
      n = n + 1
      assert.equals(1, count, m)
    end
    assert.equals(3 * 41, n)
    assert.is_true(log.accepts <= 3 * (8 + 1), "accepts: " .. log.accepts)
  end)

  it("engine = \"libcurl\" single calls, and uploads of a direct client, after the server reset their idle " ..
    "connection: each send and upload received once, each its own answer", function()
    local srv = rserver()
    local lc = client(srv.url, { engine = "libcurl" })
    local dc = client(srv.url) -- uploads go through libcurl's engine
    local function upload(c, name)
      return c:upload_attachments({ conversationId = "c1", contactId = "k1", locationId = "l1" },
        { { name = "note.txt", content = name, content_type = "text/plain" } })
    end
    for round = 1, 3 do
      assert.equals("g" .. round, assert(lc:get_message("g" .. round)).id)
      assert(upload(dc, "UPLOAD-w" .. round))
      assert.equals("d" .. round, assert(dc:get_message("d" .. round)).id)
      assert.is_true(srv:reset() >= 2)
      local v, err = send(lc, "s" .. round)
      assert.is_nil(err and tostring(err))
      assert.equals("s" .. round, v.messageId)
      local u, uerr = upload(dc, "UPLOAD-u" .. round)
      assert.is_nil(uerr and tostring(uerr))
      assert.equals("https://files.test/UPLOAD-u" .. round, u.uploadedFiles["note.txt"])
      assert.equals("e" .. round, assert(dc:get_message("e" .. round)).id)
      assert.is_true(srv:reset() >= 2)
    end
    local log = srv:log()
    for round = 1, 3 do
      for _, m in ipairs { "s" .. round, "UPLOAD-w" .. round, "UPLOAD-u" .. round } do
        assert.equals(1, log.messages[m], m)
      end
    end
  end)

  for _, how in ipairs {
    { "reset", [[{ a, { sleep = 0.02 }, "rst" }]] },
    { "closed after a 408", [[{ a, { sleep = 0.02 },
      "HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", "close" }]] },
    { "a stray answer written on it", [[{ a, { sleep = 0.02 },
      'HTTP/1.1 201 Created\r\nContent-Length: 42\r\n\r\n{"conversationId":"x","messageId":"STRAY"}',
      { mark = "ended" } }]] },
  } do
    it("through a proxy (libcurl's engine), the proxy's idle connection " .. how[1] .. ": the send goes once, " ..
      "on a new connection, with its own answer", function()
      local srv = server(MARK_HEADS .. ([[
return function(req, st)
  req.target = req.target:gsub("^http://[^/]+", "")
  local a = default(req, st)
  if req.seq == 1 then return %s end
  return a
end, function(req, st) return { mark(req) } end]]):format(how[2]))
      local c = client("http://api.example.test", { proxy = srv.url })
      assert.equals("libcurl", stats(c).engine)
      assert.equals("warm", assert(c:get_message("warm")).id)
      srv:wait(function(l) return l.closed >= 1 or (l.marks.ended or 0) >= 1 end)
      local v, err = send(c)
      assert.is_nil(err and tostring(err))
      assert.equals("m1", v.messageId)
      assert.equals(1, heads(srv, "POST"))
      assert.equals(2, srv:log().accepts)
      local head = srv:log().requests[2].head
      assert.truthy(head:find("^POST http://api%.example%.test/conversations/messages HTTP/1%.1\r"), head)
    end)
  end
end)

---------------------------------------------------------------------------------------------------------------------
-- A TLS server (LuaSec, in another process) that serves one connection at a time: GETs and POSTs answered as the
-- usual server does, except the first POST, whose fate `first` decides once its head is read:
--   "hold": never read again (the client's write blocks);      "reset": a TCP reset, no TLS close_notify;
--   "early413-close": a 413, then closed (LuaSec's close);     "early413-hold": a 413, then never read again;
--   "none": answered as usual.
-- `idle` decides what happens to a connection after each answer: "none" (the next request is waited for),
-- "reset" (reset 0.15 s later if no request came: an idle connection dropped without close_notify), "stray" (a
-- stray answer written on it 20 ms later). Events go to a log file, one a line: accept, head GET, head POST,
-- done POST, idle-reset, stray.
local TLSSERVER = [==[
local socket = require "socket"
local ssl = require "ssl"
local CERT, KEY, FIRST, IDLE, LOG = arg[1], arg[2], arg[3], arg[4], arg[5]
local ctx = assert(ssl.newcontext { mode = "server", protocol = "any", key = KEY, certificate = CERT })
local lst = assert(socket.bind("127.0.0.1", 0))
lst:settimeout(0.2)
-- a small receive buffer (no autotuning), inherited by every connection: a body the server stops reading cannot all
-- fit in the buffers between the two, so the client's write of 8 MB never completes
lst:setoption("recv-buffer-size", 65536)
local _, port = lst:getsockname()
local logf = assert(io.open(LOG, "a"))
local function event(s) logf:write(s, "\n") logf:flush() end
io.stdout:write(port, "\n")
io.stdout:flush()
local keep, posts = {}, 0 -- connections left alone stay referenced: never collected, never closed
local function kill(c) -- the descriptor closed under the TLS object with a reset: no close_notify
  local t = socket.tcp()
  t:setfd(c:getfd())
  t:setoption("linger", { on = true, timeout = 0 })
  t:close()
  keep[#keep + 1] = c
end
local E413 = 'HTTP/1.1 413 Payload Too Large\r\nContent-Type: application/json\r\nContent-Length: 42\r\n\r\n' ..
  '{"statusCode":413,"message":"too large!!"}'
local STRAY = 'HTTP/1.1 201 Created\r\nContent-Length: 42\r\n\r\n{"conversationId":"x","messageId":"STRAY"}'
local function serve(c)
  local wait = 1
  while true do
    c:settimeout(wait)
    local line, err = c:receive("*l")
    if not line then
      if (err == "timeout" or err == "wantread") and IDLE == "reset" then kill(c) event("idle-reset") return end
      keep[#keep + 1] = c
      return
    end
    local len = 0
    c:settimeout(3)
    while true do
      local h = c:receive("*l")
      if not h then keep[#keep + 1] = c return end
      if h == "" or h == "\r" then break end
      local n = h:match("^[Cc]ontent%-[Ll]ength:%s*(%d+)")
      if n then len = tonumber(n) end
    end
    local method, target = line:match("^(%u+) (%S+)")
    event("head " .. method)
    if method == "POST" then
      posts = posts + 1
      if posts == 1 then
        if FIRST == "hold" then keep[#keep + 1] = c return end
        if FIRST == "reset" then kill(c) return end
        if FIRST == "early413-close" then c:send(E413) c:close() return end
        if FIRST == "early413-hold" then c:send(E413) keep[#keep + 1] = c return end
      end
    end
    local got = 0
    while got < len do
      local d, _, part = c:receive(math.min(65536, len - got))
      d = d or part
      if not d or #d == 0 then keep[#keep + 1] = c return end
      got = got + #d
    end
    if method == "POST" then event("done POST") end
    local body = method == "POST" and ('{"conversationId":"c","messageId":"m' .. posts .. '"}') or
      ('{"id":"' .. target:match("([^/]+)$") .. '","type":1,"body":"b"}')
    c:send(("HTTP/1.1 %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"):format(
      method == "POST" and "201 Created" or "200 OK", #body, body))
    if IDLE == "stray" then
      socket.sleep(0.02)
      c:send(STRAY)
      event("stray")
    end
    wait = IDLE == "none" and 1 or 0.15
  end
end
local last = socket.gettime()
while socket.gettime() - last < 20 do
  local raw = lst:accept()
  if raw then
    last = socket.gettime()
    event("accept")
    raw:setoption("tcp-nodelay", true) -- a stray answer leaves at once, before its event is logged
    local c = assert(ssl.wrap(raw, ctx))
    c:settimeout(3)
    if c:dohandshake() then serve(c) else keep[#keep + 1] = c end
  end
end
os.exit(0, false)
]==]

describe("direct engine over TLS (a LuaSec server that can reset without close_notify) #slow", function()
  local dir, cert, key
  lazy_setup(function()
    if not select(2, core.curl_version()) or not pcall(require, "ssl") then return end
    dir = helpers.sh("mktemp -d \"${TMPDIR:-/tmp}/lc-hostile-tls.XXXXXX\""):gsub("%s+$", "")
    cert, key = dir .. "/cert.pem", dir .. "/key.pem"
    assert(os.execute("cd " .. q(dir) .. " && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 " ..
      "-nodes -keyout key.pem -out cert.pem -days 2 -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 " ..
      ">/dev/null 2>&1"), "openssl failed")
  end)
  lazy_teardown(function()
    if dir then os.execute("rm -rf " .. q(dir)) end
  end)

  -- { url, events() -> { [event] = count }, wait(event, n) }
  local function tls_server(first, idle)
    local file, log = os.tmpname(), os.tmpname()
    helpers.write_file(file, TLSSERVER)
    -- its pid first (the shell's, which exec keeps), to stop it by that id
    local p = assert(io.popen(("%s sh -c %s"):format(helpers.CLEAN_ENV, q(("echo $$; exec %s %s %s %s %s %s %s")
      :format(lch.interpreter, q(file), q(cert), q(key), first, idle or "none", q(log)))), "r"))
    local pid = tonumber(p:read("*l"))
    local port = tonumber(p:read("*l"))
    os.remove(file)
    assert(port, "the TLS server did not start")
    local srv = { url = "https://127.0.0.1:" .. port }
    function srv.events()
      local ev = {}
      for l in io.lines(log) do ev[l] = (ev[l] or 0) + 1 end
      return ev
    end
    function srv.wait(what, n)
      local stop = socket.gettime() + 5
      while (srv.events()[what] or 0) < n do
        assert(socket.gettime() < stop, "the TLS server: no " .. what)
        socket.sleep(0.005)
      end
    end
    function srv:stop()
      if p then
        if pid then os.execute("kill " .. pid .. " 2>/dev/null") end
        p:close()
        p = nil
        os.remove(log)
      end
    end
    return track(srv)
  end

  local function tls_client(srv, opts)
    opts = opts or {}
    opts.ca_file = cert
    return client(srv.url, opts)
  end

  for _, engine in ipairs(ENGINES) do
    it("a send of 8 MB whose body the server stops reading after the head, on a fresh connection (max_retries = " ..
      "2): timeout on time, request_sent = true, one attempt, the head read once, no CPU burnt (engine " ..
      engine .. ")", function()
      if not dir then return pending("libcurl without TLS, or no LuaSec") end
      local srv = tls_server("hold")
      local tmo = 0.5 * S
      local c = tls_client(srv, { engine = engine, max_retries = 2, timeout = tmo })
      local w, cpu, v, err = timed(function() return send(c, HUGE) end)
      assert.equals(1, srv.events()["head POST"], "the POST went " .. tostring(srv.events()["head POST"]) ..
        " times; the call gave " .. (v and ("messageId " .. tostring(v.messageId)) or tostring(err)))
      fails("timeout", v, err)
      assert.is_true(err.request_sent, tostring(err))
      assert.equals(1, err.attempts, tostring(err))
      assert.equals(1, srv.events().accept)
      assert.is_true(w < 2 * tmo + 0.5 * S, ("took %.2f s"):format(w))
      assert.is_true(cpu < 0.5 * w, ("CPU %.2f s in %.2f s"):format(cpu, w))
    end)

    it("a send of 8 MB on a kept-alive connection the server resets after reading its head (max_retries = 0): " ..
      "network, request_sent = true, the POST read once -- not written again on a fresh connection (engine " ..
      engine .. ")", function()
      if not dir then return pending("libcurl without TLS, or no LuaSec") end
      local srv = tls_server("reset")
      local c = tls_client(srv, { engine = engine })
      assert.equals("warm", assert(c:get_message("warm")).id)
      local v, err = send(c, HUGE)
      assert.equals(1, srv.events()["head POST"], "the POST went " .. tostring(srv.events()["head POST"]) ..
        " times; the call gave " .. (v and ("messageId " .. tostring(v.messageId)) or tostring(err)))
      fails("network", v, err)
      assert.is_true(err.request_sent, tostring(err))
      -- (libcurl's engine opens a connection for its own second attempt, which the pre-request callback stops)
      if engine == "direct" then assert.equals(1, srv.events().accept) end
    end)

    it("a send of 8 MB on a fresh connection the server resets after reading its head (max_retries = 2): " ..
      "network, request_sent = true, the POST read once (engine " .. engine .. ")", function()
      if not dir then return pending("libcurl without TLS, or no LuaSec") end
      local srv = tls_server("reset")
      local c = tls_client(srv, { engine = engine, max_retries = 2 })
      local v, err = send(c, HUGE)
      assert.equals(1, srv.events()["head POST"], "the POST went " .. tostring(srv.events()["head POST"]) ..
        " times; the call gave " .. (v and ("messageId " .. tostring(v.messageId)) or tostring(err)))
      fails("network", v, err)
      assert.is_true(err.request_sent, tostring(err))
      assert.equals(1, err.attempts)
    end)

    for _, first in ipairs { "early413-close", "early413-hold" } do
      it("a 413 answered from the head of an 8 MB send, then the server " .. (first == "early413-close" and
        "closes" or "stops reading") .. " (max_retries = 2): kind http, status 413, quickly, the POST read once " ..
        "(engine " .. engine .. ")", function()
        if not dir then return pending("libcurl without TLS, or no LuaSec") end
        local srv = tls_server(first)
        local c = tls_client(srv, { engine = engine, max_retries = 2, timeout = 2 * S })
        local w, _, v, err = timed(function() return send(c, HUGE) end)
        assert.equals(1, srv.events()["head POST"], "the POST went " .. tostring(srv.events()["head POST"]) ..
          " times; the call gave " .. (v and ("messageId " .. tostring(v.messageId)) or tostring(err)))
        if engine == "libcurl" and first == "early413-close" and err and err.kind == "network" then
          -- libcurl's engine reports its failed write when the reset comes first (not this file's subject)
        else
          fails("http", v, err)
          assert.equals(413, err.status)
        end
        assert.is_true(err.request_sent)
        assert.equals(1, err.attempts)
        assert.is_true(w < 1 * S, ("took %.2f s"):format(w))
      end)
    end

    it("the server resets each idle connection (no close_notify): every send goes once, on a new connection, " ..
      "with its own answer (engine " .. engine .. ")", function()
      if not dir then return pending("libcurl without TLS, or no LuaSec") end
      local srv = tls_server("none", "reset")
      local c = tls_client(srv, { engine = engine })
      for round = 1, 2 do
        assert.equals("g" .. round, assert(c:get_message("g" .. round)).id)
        srv.wait("idle-reset", 2 * round - 1)
        local v, err = send(c)
        assert.is_nil(err and tostring(err))
        assert.equals("m" .. round, v.messageId)
        srv.wait("idle-reset", 2 * round)
      end
      local ev = srv.events()
      assert.equals(2, ev["head POST"])
      assert.equals(2, ev["done POST"])
      assert.equals(4, ev.accept)
    end)

    it("the server writes a stray answer on each idle connection: every call gets its own answer, each send " ..
      "goes once (engine " .. engine .. ")", function()
      if not dir then return pending("libcurl without TLS, or no LuaSec") end
      local srv = tls_server("none", "stray")
      local c = tls_client(srv, { engine = engine })
      assert.equals("g1", assert(c:get_message("g1")).id)
      srv.wait("stray", 1)
      local v, err = send(c)
      assert.is_nil(err and tostring(err))
      assert.equals("m1", v.messageId)
      srv.wait("stray", 2)
      assert.equals("g2", assert(c:get_message("g2")).id)
      assert.equals(1, srv.events()["head POST"])
    end)
  end

  it("a batch after the server reset its idle TLS connection (no close_notify): the send goes once, its own " ..
    "answer; then a direct call, once too", function()
    if not dir then return pending("libcurl without TLS, or no LuaSec") end
    local srv = tls_server("none", "reset")
    local c = tls_client(srv)
    assert.equals("b1", assert(c:batch { { "get_message", "b1" } })[1].value.id)
    srv.wait("idle-reset", 1)
    local r = assert(c:batch { { "send_message", { type = "SMS", contactId = "c", message = "hi" } } })[1]
    assert.is_nil(r.err and tostring(r.err))
    assert.equals("m1", r.value.messageId)
    srv.wait("idle-reset", 2)
    local v, err = send(c)
    assert.is_nil(err and tostring(err))
    assert.equals("m2", v.messageId)
    assert.equals(2, srv.events()["head POST"])
  end)
end)

---------------------------------------------------------------------------------------------------------------------
-- Chunked answers as a network splits them: the cosocket reader (stand-in socket, every split in two and three
-- places), the direct engine and libcurl's (the pieces as separate packets), and the cosocket transport inside nginx.
local CHUNKED_HEAD = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
local REST = MSG_BODY:sub(3)
-- { name, pieces, ok }: pieces are the packets; ok: the answer is MSG_BODY, else it must be refused (network)
local SPLIT = {
  { "'2;ext' cut inside its extension, the data's line end cut between CR and LF, a size line without its end",
    { CHUNKED_HEAD .. "2;ex", "t=1\r\n" .. MSG_BODY:sub(1, 2), "\r", ("\n%x"):format(#REST), "\r\n" .. REST,
      "\r\n0", "\r\n", "\r\n" }, true },
  { "the data whole in one packet, its line end alone in the next, white space before ';'",
    { CHUNKED_HEAD .. ("%x \t;a=\"b;c\"\r\n"):format(#MSG_BODY) .. MSG_BODY, "\r\n", "0;z\r\nX-T: 1\r\n\r\n" }, true },
  { "the size's digits cut, an extension's ';' first in a packet",
    { CHUNKED_HEAD .. "1", "e", ";q\r\n" .. MSG_BODY:sub(1, 30) .. "\r\n",
      ("%x\r\n"):format(#MSG_BODY - 30) .. MSG_BODY:sub(31) .. "\r\n0\r\n", "\r\n" }, true },
  { "data past the chunk's size, in the packet after the data", { CHUNKED_HEAD .. "2\r\n" .. MSG_BODY:sub(1, 2),
    "XY\r\n" .. ("%x"):format(#REST) .. "\r\n" .. REST .. "\r\n0\r\n\r\n" }, false },
  { "'0x2' cut after its 0", { CHUNKED_HEAD .. "0", "x2\r\n{}\r\n0\r\n\r\n" }, false },
  { "a size followed by a word, cut after the size", { CHUNKED_HEAD .. "2 ", "junk\r\n{}\r\n0\r\n\r\n" }, false },
}

describe("chunked answers split anywhere: the cosocket reader (plain Lua, stand-in socket)", function()
  local M = require "leadconnector.ngx"
  local read_answer = assert(M._read_answer)
  -- A stand-in cosocket over `data` that never hands out bytes across a cut (cuts: sorted positions after which a
  -- packet ends).
  local function read(data, cuts)
    local pos, k = 1, 1
    local sock = {}
    function sock:settimeout() end
    function sock:receiveany(max)
      if pos > #data then return nil, "closed" end
      while cuts[k] and cuts[k] < pos do k = k + 1 end
      local stop = math.min(#data, pos + max - 1, cuts[k] or #data)
      local s = data:sub(pos, stop)
      pos = stop + 1
      return s
    end
    local h, kind, msg = read_answer(sock, "GET", 1024 * 1024, core.now() + 60, "api.test")
    if h then return ("ok %d %s %s"):format(h.status, h.body, tostring(h.keep)) end
    return kind .. " " .. tostring(msg)
  end
  for _, case in ipairs(SPLIT) do
    it(case[1] .. ": " .. (case[3] and "taken" or "refused") .. " however the bytes come", function()
      local data = table.concat(case[2])
      local whole = read(data, {})
      if case[3] then
        assert.equals("ok 200 " .. MSG_BODY .. " true", whole)
      else
        assert.truthy(whole:find("^network "), whole)
      end
      -- the packets as given, byte by byte, then every cut in two and three pieces
      local at, given = 0, {}
      for i = 1, #case[2] - 1 do
        at = at + #case[2][i]
        given[i] = at
      end
      assert.equals(whole, read(data, given), "as given")
      local each = {}
      for i = 1, #data do each[i] = i end
      assert.equals(whole, read(data, each), "byte by byte")
      local start = #CHUNKED_HEAD - 8 -- (the head is read the same way in every case)
      for i = start, #data - 1 do
        assert.equals(whole, read(data, { i }), "cut at " .. i)
        for j = i + 1, #data - 1 do
          local got = read(data, { i, j })
          if got ~= whole then assert.equals(whole, got, ("cut at %d and %d"):format(i, j)) end
        end
      end
    end)
  end
end)

describe("chunked answers in separate packets: the direct engine and libcurl's", function()
  for _, engine in ipairs(ENGINES) do
    for _, case in ipairs(SPLIT) do
      it(case[1] .. ": " .. (case[3] and "taken" or "refused") .. ", and the next call its own answer (engine " ..
        engine .. ")", function()
        local actions = {}
        for i, p in ipairs(case[2]) do
          actions[#actions + 1] = ("%q"):format(p)
          if i < #case[2] then actions[#actions + 1] = "{ sleep = 0.05 }" end -- past a delayed ACK: a packet each
        end
        local srv = server(([[
return function(req, st)
  if req.seq == 1 then return { %s } end
  return default(req, st)
end]]):format(table.concat(actions, ", ")))
        local c = client(srv.url, { engine = engine })
        local v, err = c:get_message("m1")
        if case[3] then
          assert.is_nil(err and tostring(err))
          assert.equals("m1", v.id)
        elseif engine == "direct" then
          fails("network", v, err)
          assert.is_true(err.request_sent)
        end -- (libcurl's engine reads some of these its own way: spec 58)
        assert.equals("after", assert(c:get_message("after")).id)
      end)
    end
  end
end)

describe("chunked answers in separate packets: the cosocket transport inside nginx #lua54only #nginx #slow", function()
  local ns = require "nginx.server"
  local nx, srv
  lazy_setup(function()
    local actions = {}
    for n, case in ipairs(SPLIT) do
      local a = {}
      for i, p in ipairs(case[2]) do
        a[#a + 1] = ("%q"):format(p)
        if i < #case[2] then a[#a + 1] = "{ sleep = 0.05 }" end
      end
      actions[n] = "{ " .. table.concat(a, ", ") .. " }"
    end
    srv = ds.start(([[
local CASES = { %s }
return function(req, st)
  local n = tonumber(req.target:match("/case(%%d+)$"))
  if n then return CASES[n] end
  return default(req, st)
end]]):format(table.concat(actions, ",\n")))
    nx = ns.start { url = srv.url, token = TOKEN }
  end)
  lazy_teardown(function()
    if nx then nx:stop() end
    if srv then srv:stop() end
  end)
  for n, case in ipairs(SPLIT) do
    it(case[1] .. ": " .. (case[3] and "taken" or "refused") .. ", and the next call its own answer", function()
      local out = nx:json("POST", "/call", { client = { base_url = srv.url, token = TOKEN, rate_limit = false,
        max_retries = 0, timeout = 3 }, calls = { { "get_message", "case" .. n }, { "get_message", "after" } } })
      assert.equals("ngx", out.transport)
      local r = out.results
      if case[3] then
        assert.is_true(r[1].ok, tostring(r[1].message))
        assert.equals("m1", r[1].id)
        assert.same({ id = "m1", type = 1, body = "b" }, { id = r[1].fields.id, type = r[1].fields.type,
          body = r[1].fields.body })
      else
        assert.is_false(r[1].ok)
        assert.equals("network", r[1].kind, tostring(r[1].message))
        assert.is_true(r[1].request_sent)
      end
      assert.is_true(r[2].ok, tostring(r[2].message))
      assert.equals("after", r[2].id)
    end)
  end
end)

---------------------------------------------------------------------------------------------------------------------
-- Not 184708b's, found while counting the batches' connections above: libcurl keeps at most 4 idle connections per
-- transfer still attached to the multi handle (CURLMOPT_MAXCONNECTS unset), and a batch's transfers are detached as
-- they finish, so the last one to finish (alone) hands its connection back into a cache of `concurrency` with room
-- for 4: libcurl closes the oldest, and the next batch opens a new one. README ("Batches", and commit 2ef75aa):
-- at most `concurrency` connections, none new once they exist.
describe("batches keep their connections from one batch to the next", function()
  it("three batches of 8 sends at concurrency 8, the last of each finishing alone 0.1 s after the others: no " ..
    "connection closed by the client, none made after the first batch", function()
    local srv = server([[
return function(req, st)
  local a = default(req, st)
  if req.body:find("slow", 1, true) then return { { sleep = 0.1 }, a } end
  return a
end]])
    local c = client(srv.url)
    for round = 1, 3 do
      local calls = {}
      for i = 1, 8 do
        calls[i] = { "send_message", { type = "SMS", contactId = "c", message = i == 8 and "slow" or "quick" } }
      end
      for i, r in ipairs(c:batch(calls, { concurrency = 8 })) do
        assert.is_nil(r.err and tostring(r.err), ("round %d, entry %d"):format(round, i))
      end
    end
    socket.sleep(0.05) -- (a close takes a moment to reach the server's log)
    local log = srv:log()
    assert.equals(0, log.closed, "connections closed by the client between batches")
    assert.equals(8, log.accepts)
    assert.equals(24, srv:count("POST"))
  end)
end)

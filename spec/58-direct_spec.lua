-- The curl transport's direct engine (commit 4ddd7c2, csrc/http.c "the direct engine" and csrc/h1.c): libcurl only
-- connects, the core writes the request and reads the answer. A hostile user's tests of the library's promises on
-- it: a send never goes twice, reads are retried on a fresh connection when a kept-alive one turns out dead, a
-- connection is reused unless the answer says otherwise, time limits hold, the token never shows in an error, and
-- `engine = "libcurl"` gives the same results for the same answers. Every server is a raw one in another process on
-- 127.0.0.1 (spec/directserver.lua): it logs what it read and answers byte for byte what each test says.
--
-- Tests that failed when this file was written (2026-12-07, libcurl 7.88.1; each is a broken promise, kept failing
-- on purpose until it is fixed):
--  * the direct engine writes a send's whole body before it reads anything: a 413 (or any answer) sent from the
--    request's head, before the server stops reading, is lost -- a network error, or a timeout ("writing the
--    request" tests); libcurl's engine returns the 413;
--  * libcurl's engine (engine = "libcurl", and every batch, even of a direct client, until batches took the direct
--    engine too) reuses a kept-alive connection
--    that the server reset, or left a stray answer or a 408 on, while it was idle: the send is lost (request_sent =
--    true although never received), or returns the stray answer or the 408 as its own (libcurl 8.14 passes these);
--  * the engines read some answers differently: trailers (libcurl's engine takes X-Trace-Id, X-RateLimit-* and a bad
--    Content-Length from them), a header without a colon, a NUL byte in the head, a chunk-size line over 1 KiB,
--    "0x2" or " 2 " as a chunk size, Transfer-Encoding gzip, a 101: the direct engine follows the cosocket
--    reader's rules (lua/leadconnector/ngx.lua), libcurl's engine libcurl's.
local leadconnector = require "leadconnector"
local core = require "leadconnector.core"
local ds = require "directserver"
local lch = require "lchelpers"
local socket = require "socket"

local S = lch.scale
local TOKEN = "tok-Direct-0123456789abcdefXYZ"
local ENGINES = { "direct", "libcurl" }

local function client(srv, opts) return ds.client(srv.url, TOKEN, opts) end

local function stats(c) return c._session:stats() end

local function send(c, copts)
  return c:send_message({ type = "SMS", contactId = "c1", message = "hello" }, copts)
end

local function server(script) return ds.for_test(script, finally) end

-- The source of a script: the raw `first` answer (then `after`: "close", "rst", ... or nothing) to request number
-- `which` (default 1) of the whole server, the usual answers to every other.
local function raw_script(first, after, which)
  return ([[
local RAW, AFTER, WHICH = %q, %s, %d
return function(req, st)
  if req.seq == WHICH then
    if AFTER then return { RAW, AFTER } end
    return RAW
  end
  return default(req, st)
end]]):format(first, after and ("%q"):format(after) or "nil", which or 1)
end

local function fails(kind, v, err)
  assert.is_nil(v)
  assert.is_table(err, "no error object")
  assert.equals(kind, err.kind, tostring(err))
  return err
end

local MSG_BODY = '{"id":"m1","type":1,"body":"b"}'

---------------------------------------------------------------------------------------------------------------------
describe("direct engine: the connection is kept alive", function()
  it("20 calls of every method on one connection: stats() says 1 connect, the server 1 accept", function()
    local srv = server()
    local c = client(srv)
    assert.same("direct", stats(c).engine)
    for i = 1, 5 do
      assert.equals("g" .. i, assert(c:get_message("g" .. i)).id)
      assert.is_string(assert(send(c)).messageId)
      assert.is_string(assert(c:update_message_status("g" .. i, { status = "read" })).messageId)
      assert.equals("k" .. i, assert(c:get_conversation("k" .. i)).id)
    end
    assert.equals(1, stats(c).connects)
    local log = srv:log()
    assert.equals(1, log.accepts)
    assert.equals(20, #log.requests)
    c:close()
  end)

  it("engine = \"libcurl\" keeps its connection too (1 accept), and stats() says so", function()
    local srv = server()
    local c = client(srv, { engine = "libcurl" })
    for i = 1, 10 do assert.equals("g" .. i, assert(c:get_message("g" .. i)).id) end
    local st = stats(c)
    assert.equals("libcurl", st.engine)
    assert.equals(0, st.connects)
    assert.equals(1, srv:log().accepts)
  end)

  it("a proxy makes single calls take libcurl's engine", function()
    local c = assert(leadconnector.new { token = TOKEN, base_url = "http://127.0.0.1:9", proxy = "http://127.0.0.1:9" })
    assert.equals("libcurl", stats(c).engine)
  end)

  it("the request the direct engine writes: the same target, headers and body as libcurl's", function()
    local heads = {}
    for _, engine in ipairs(ENGINES) do
      local srv = server()
      local c = client(srv, { engine = engine, base_url = srv.url .. "/api/v9" })
      assert(c:get_message("a b/c%d"))
      assert(send(c))
      assert(c:update_message_status("m 1", { status = "read" }, { version = "2021-07-28" }))
      local out = {}
      for i, r in ipairs(srv:log().requests) do
        local lines = {}
        for l in r.head:gmatch("[^\n]+") do
          l = l:gsub("\r$", "")
          -- the port differs between the two servers
          lines[#lines + 1] = l:gsub("^Host: 127%.0%.0%.1:%d+$", "Host: 127.0.0.1:PORT")
        end
        local first = table.remove(lines, 1)
        table.sort(lines)
        out[i] = { first = first, headers = lines, body = r.body }
      end
      heads[engine] = out
    end
    assert.same(heads.libcurl, heads.direct)
    local d = heads.direct
    assert.equals("GET /api/v9/conversations/messages/a%20b%2Fc%25d HTTP/1.1", d[1].first)
    assert.equals("POST /api/v9/conversations/messages HTTP/1.1", d[2].first)
    assert.truthy(d[3].first:find("^PUT /api/v9/conversations/messages/m%%201/status HTTP/1.1$"), d[3].first)
    local h3 = table.concat(d[3].headers, "\n")
    assert.truthy(h3:find("Version: 2021-07-28", 1, true), h3)
    assert.truthy(h3:find("Authorization: Bearer " .. TOKEN, 1, true), h3)
    assert.is_nil(h3:find("Expect:", 1, true), h3)
  end)
end)

---------------------------------------------------------------------------------------------------------------------
describe("direct engine: a kept-alive connection the server ended while it was idle", function()
  -- Each answer, then the server ends the connection as `how` says; the test waits until it has before the next
  -- call. A send must then go out on a fresh connection, once, and succeed.
  local HOW = {
    close = [[{ ANSWER, "close" }]],
    rst = [[{ ANSWER, { sleep = 0.02 }, "rst" }]],
    ["half-close (shutdown)"] = [[{ ANSWER, "shutdown", { mark = "ended" } }]],
    ["a 408 left on it, then closed"] = [[{ ANSWER, { sleep = 0.02 },
      "HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", "close" }]],
    ["a stray answer left on it (kept open)"] = [[{ ANSWER, { sleep = 0.02 },
      'HTTP/1.1 201 Created\r\nContent-Length: 42\r\n\r\n{"conversationId":"x","messageId":"STRAY"}', { mark = "ended" } }]],
  }
  for _, engine in ipairs(ENGINES) do
    for how, actions in pairs(HOW) do
      it(how .. ": GET and POST succeed, each POST received exactly once (engine " .. engine .. ")", function()
        local srv = server(([[
return function(req, st)
  local ANSWER = default(req, st)
  return %s
end]]):format(actions))
        local c = client(srv, { engine = engine, max_retries = 0 })
        local ended = 0
        local function wait_ended()
          ended = ended + 1
          srv:wait(function(l) return l.closed >= ended or (l.marks.ended or 0) >= ended end)
        end
        local ids = {}
        for round = 1, 2 do
          local m, err = c:get_message("r" .. round)
          assert.is_nil(err and tostring(err))
          assert.equals("r" .. round, m.id)
          wait_ended()
          local sent, serr = send(c)
          assert.is_nil(serr and tostring(serr))
          assert.is_string(sent.messageId)
          assert.not_equals("STRAY", sent.messageId)
          ids[#ids + 1] = sent.messageId
          wait_ended()
        end
        local log = srv:log()
        assert.equals(2, srv:count("POST"))
        assert.equals(2, srv:count("GET"))
        assert.same({ "m1", "m2" }, ids)
        assert.equals(4, log.accepts)
        if engine == "direct" then assert.equals(4, stats(c).connects) end
      end)
    end
  end
end)

-- A batch takes the client's engine (the direct engine's batch slots: one connection per concurrent call, each
-- checked before it is reused; libcurl's multi interface for engine = "libcurl"): the same promises hold on both.
describe("a batch after the server ended its kept-alive connection",
  function()
    local HOW = {
      close = [[{ ANSWER, "close" }]],
      rst = [[{ ANSWER, { sleep = 0.02 }, "rst" }]],
      ["a 408 left on it, then closed"] = [[{ ANSWER, { sleep = 0.02 },
        "HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", "close" }]],
      ["a stray answer left on it"] = [[{ ANSWER, { sleep = 0.02 },
        'HTTP/1.1 201 Created\r\nContent-Length: 42\r\n\r\n{"conversationId":"x","messageId":"STRAY"}',
        { mark = "ended" } }]],
    }
    for how, actions in pairs(HOW) do for _, engine in ipairs(ENGINES) do
      it(how .. ": the batch's send is received once and gets its own answer (engine " .. engine .. ")", function()
        local srv = server(([[
return function(req, st)
  local ANSWER = default(req, st)
  if req.seq > 1 then return ANSWER end
  return %s
end]]):format(actions))
        local c = client(srv, { max_retries = 3, engine = engine })
        assert.equals("warm", assert(c:batch { { "get_message", "warm" } })[1].value.id)
        srv:wait(function(l) return l.closed >= 1 or (l.marks.ended or 0) >= 1 end)
        local r = assert(c:batch { { "send_message", { type = "SMS", contactId = "c1", message = "hi" } } })[1]
        assert.is_nil(r.err and tostring(r.err))
        assert.equals("m1", r.value.messageId)
        assert.equals(1, srv:count("POST"))
        -- the direct engine's batch made both connections itself (libcurl's engine counts none)
        assert.equals(engine == "direct" and 2 or 0, stats(c).connects)
      end)
    end end
  end)

---------------------------------------------------------------------------------------------------------------------
describe("direct engine: a connection that dies after the request was written, before any answer", function()
  for _, engine in ipairs(ENGINES) do
    for _, how in ipairs { "close", "rst" } do
      it(("a send on a kept-alive connection, then %s: network, request_sent, received once, never re-sent " ..
        "(max_retries = 3; engine %s)"):format(how, engine), function()
        local srv = server(([[
return function(req, st)
  if req.method == "POST" and not st.dropped then st.dropped = true return %q end
  return default(req, st)
end]]):format(how))
        local c = client(srv, { engine = engine, max_retries = 3 })
        assert(c:get_message("warm"))
        local err = fails("network", send(c))
        assert.is_true(err.request_sent)
        assert.equals(1, err.attempts)
        assert.is_nil(err.status)
        assert.equals(1, srv:count("POST"))
        -- the client is fine afterwards: a new connection, its own answer
        assert.equals("after", assert(c:get_message("after")).id)
        assert.equals(1, srv:count("POST"))
      end)

      it(("a send on a fresh connection, then %s: network, request_sent, received once (engine %s)"):format(how,
        engine), function()
        local srv = server(([[
return function(req, st)
  if req.method == "POST" and not st.dropped then st.dropped = true return %q end
  return default(req, st)
end]]):format(how))
        local c = client(srv, { engine = engine, max_retries = 3 })
        local err = fails("network", send(c))
        assert.is_true(err.request_sent)
        assert.equals(1, srv:count("POST"))
        assert.equals(1, srv:log().accepts)
      end)

      for _, m in ipairs {
        { "GET", function(c) return c:get_message("again") end, function(v) return v.id == "again" end },
        { "PUT", function(c) return c:update_message_status("again", { status = "read" }) end,
          function(v) return type(v.messageId) == "string" end },
        { "DELETE", function(c) return c:delete_conversation("again") end, function(v) return v ~= nil end },
      } do
        it(("a %s on a kept-alive connection, then %s: sent again on a fresh connection, no Lua retry needed " ..
          "(engine %s)"):format(m[1], how, engine), function()
          local srv = server(([[
return function(req, st)
  if req.seq > 1 and req.method == %q and not st.dropped then st.dropped = true return %q end
  if req.method == "DELETE" then return answer("200 OK", "{}") end
  return default(req, st)
end]]):format(m[1], how))
          local c = client(srv, { engine = engine, max_retries = 0 })
          assert(c:get_conversation("warm"))
          local v, err = m[2](c)
          assert.is_nil(err and tostring(err))
          assert.is_true(m[3](v))
          assert.equals(m[1] == "GET" and 3 or 2, srv:count(m[1])) -- (the first GET warmed the connection)
          assert.equals(2, srv:log().accepts)
        end)
      end
    end

    it("a GET whose every connection dies before an answer: a network error, sent twice at most (engine " ..
      engine .. ")", function()
      local srv = server([[
return function(req, st)
  if req.seq == 1 then return default(req, st) end
  return "close"
end]])
      local c = client(srv, { engine = engine, max_retries = 0 })
      assert(c:get_message("warm"))
      local err = fails("network", c:get_message("dead"))
      assert.is_true(err.request_sent)
      assert.equals(2, srv:count("GET") - 1)
    end)
  end
end)

---------------------------------------------------------------------------------------------------------------------
describe("direct engine: answers that end the connection, or not", function()
  local CASES = {
    { "Connection: close", "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: " .. #MSG_BODY .. "\r\n\r\n" ..
      MSG_BODY, 2 },
    { "HTTP/1.0 without keep-alive", "HTTP/1.0 200 OK\r\nContent-Length: " .. #MSG_BODY .. "\r\n\r\n" .. MSG_BODY, 2 },
    { "HTTP/1.0 with Connection: keep-alive", "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: " ..
      #MSG_BODY .. "\r\n\r\n" .. MSG_BODY, 1 },
    { "Connection: Keep-Alive, Close (mixed case, a list)", "HTTP/1.1 200 OK\r\nconnection: Keep-Alive, Close\r\n" ..
      "Content-Length: " .. #MSG_BODY .. "\r\n\r\n" .. MSG_BODY, 2 },
    { "a body read to the end of the connection", "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n" ..
      MSG_BODY, 2, "close" },
    { "bytes after the answer, in the same write", "HTTP/1.1 200 OK\r\nContent-Length: " .. #MSG_BODY ..
      "\r\n\r\n" .. MSG_BODY .. 'HTTP/1.1 200 OK\r\nContent-Length: 33\r\n\r\n{"id":"WRONG","type":1,"body":""}', 2 },
    { "a chunked answer with extensions and trailers, kept alive", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n" ..
      "\r\n5;name=\"v;x\"\r\n" .. MSG_BODY:sub(1, 5) .. "\r\n" .. ("%x"):format(#MSG_BODY - 5) .. " ; e=1 \r\n" ..
      MSG_BODY:sub(6) .. "\r\n0;last\r\nX-Trailer: t\r\nExpires: never\r\n\r\n", 1 },
    { "a 100 and a 103 with headers before the answer, kept alive", "HTTP/1.1 100 Continue\r\n\r\n" ..
      "HTTP/1.1 103 Early Hints\r\nLink: </x>; rel=preload\r\nX-RateLimit-Remaining: 1\r\n\r\n" ..
      "HTTP/1.1 200 OK\r\nContent-Length: " .. #MSG_BODY .. "\r\n\r\n" .. MSG_BODY, 1 },
  }
  for _, engine in ipairs(ENGINES) do
    for _, case in ipairs(CASES) do
      it(case[1] .. (": the answer, then %d connection(s) for two calls, the second its own answer (engine %s)")
        :format(case[3], engine), function()
        local srv = server(raw_script(case[2], case[4]))
        local c = client(srv, { engine = engine })
        local m, err = c:get_message("m1")
        assert.is_nil(err and tostring(err))
        assert.equals("m1", m.id)
        local m2, err2 = c:get_message("second")
        assert.is_nil(err2 and tostring(err2))
        assert.equals("second", m2.id)
        assert.equals(case[3], srv:log().accepts)
        if engine == "direct" then assert.equals(case[3], stats(c).connects) end
      end)
    end

    it("bytes after the answer that come later (a separate write): the next call is not answered by them (engine " ..
      engine .. ")", function()
      local srv = server([[
return function(req, st)
  if req.seq == 1 then
    return { default(req, st), { sleep = 0.03 },
      'HTTP/1.1 200 OK\r\nContent-Length: 33\r\n\r\n{"id":"WRONG","type":1,"body":""}', { mark = "extra" } }
  end
  return default(req, st)
end]])
      local c = client(srv, { engine = engine })
      assert.equals("first", assert(c:get_message("first")).id)
      srv:wait(function(l) return (l.marks.extra or 0) >= 1 end)
      local m, err = c:get_message("second")
      assert.is_nil(err and tostring(err))
      assert.equals("second", m.id)
      assert.equals(2, srv:log().accepts)
    end)

    it("a 204: no body read, the connection kept, the next call its own answer (engine " .. engine .. ")", function()
      local srv = server([[
return function(req, st)
  if req.method == "DELETE" then return "HTTP/1.1 204 No Content\r\nX-RateLimit-Remaining: 7\r\n\r\n" end
  return default(req, st)
end]])
      local c = client(srv, { engine = engine })
      local v, err = c:delete_conversation("k1")
      assert.is_nil(err and tostring(err))
      assert.is_not_nil(v)
      assert.equals(7, c:rate_limit().remaining)
      assert.equals("next", assert(c:get_message("next")).id)
      assert.equals(1, srv:log().accepts)
    end)

    it("a 204 with a body it must not have: the next call is not answered by it (engine " .. engine .. ")", function()
      local srv = server([[
return function(req, st)
  if req.method == "DELETE" then
    return 'HTTP/1.1 204 No Content\r\nContent-Length: 33\r\n\r\n{"id":"WRONG","type":1,"body":""}'
  end
  return default(req, st)
end]])
      local c = client(srv, { engine = engine })
      assert(c:delete_conversation("k1"))
      assert.equals("next", assert(c:get_message("next")).id)
    end)
  end
end)

---------------------------------------------------------------------------------------------------------------------
describe("direct engine: time limits", function()
  local ANSWER = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: " .. #MSG_BODY ..
    "\r\nX-Pad: " .. ("p"):rep(40) .. "\r\n\r\n" .. MSG_BODY
  for _, engine in ipairs(ENGINES) do
    it("an answer trickled one byte at a time, quicker than the timeout: the answer (engine " .. engine .. ")",
      function()
        local srv = server(([[
return function(req, st)
  if req.seq == 1 then return { { trickle = %q, step = 0.002 } } end
  return default(req, st)
end]]):format(ANSWER))
        local c = client(srv, { engine = engine, timeout = 5 * S })
        assert.equals("m1", assert(c:get_message("m1")).id)
        assert.equals("m2", assert(c:get_message("m2")).id)
        assert.equals(1, srv:log().accepts)
      end)

    it("an answer trickled slower than the timeout: kind timeout, on time, and the next call gets its own answer " ..
      "(engine " .. engine .. ")", function()
      -- the trickle's pace scaled with the timeout (under valgrind both are longer): it always outlasts it
      local srv = server(([[
return function(req, st)
  if req.seq == 1 then return { { trickle = %q, step = %g } } end
  return default(req, st)
end]]):format(ANSWER, 0.02 * S))
      local tmo = 0.4 * S
      local c = client(srv, { engine = engine, timeout = tmo })
      local t0 = socket.gettime()
      local err = fails("timeout", c:get_message("m1"))
      local took = socket.gettime() - t0
      assert.is_true(err.request_sent)
      assert.is_true(took >= tmo * 0.9 and took < tmo + 0.5 * S, ("took %.3f s, timeout %.3f s"):format(took, tmo))
      local m, err2 = c:get_message("second")
      assert.is_nil(err2 and tostring(err2))
      assert.equals("second", m.id)
    end)

    it("a send answered after the timeout: timeout, request_sent, received once though max_retries = 3 (engine " ..
      engine .. ")", function()
      local srv = server(([[
return function(req, st)
  if req.method == "POST" and req.seq == 1 then return { { sleep = %g }, default(req, st) } end
  return default(req, st)
end]]):format(1.0 * S))
      local c = client(srv, { engine = engine, timeout = 0.3 * S, max_retries = 3 })
      local err = fails("timeout", send(c))
      assert.is_true(err.request_sent)
      assert.equals(1, srv:count("POST"))
      -- the late answer (m1) must not be taken for the next send's
      local sent = assert(send(c))
      assert.equals("m2", sent.messageId)
    end)

    it("a server that accepts and never answers: timeout on time (engine " .. engine .. ")", function()
      local srv = server([[return function(req, st) return { { sleep = 30 } } end]])
      local tmo = 0.3 * S
      local c = client(srv, { engine = engine, timeout = tmo })
      local t0 = socket.gettime()
      local err = fails("timeout", c:get_message("m1"))
      assert.is_true(socket.gettime() - t0 < tmo + 0.5 * S)
      assert.is_true(err.request_sent)
    end)

    it("a chunked answer of 200 KiB with extensions, in writes of odd sizes: whole (engine " .. engine .. ")",
      function()
        local srv = server([[
local parts, body = {}, {}
for i = 1, 40 do
  local data = ("%05d"):format(i) .. ("d"):rep(5000)
  body[#body + 1] = data
  parts[#parts + 1] = ("%x;n=%d;q=\"a b\"\r\n"):format(#data, i) .. data .. "\r\n"
end
local json = '{"id":"m1","type":1,"body":"' .. table.concat(body) .. '"}'
local prefix, suffix = '{"id":"m1","type":1,"body":"', '"}'
local raw = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" ..
  ("%x\r\n"):format(#prefix) .. prefix .. "\r\n" .. table.concat(parts) ..
  ("%x\r\n"):format(#suffix) .. suffix .. "\r\n0;end\r\nX-T: 1\r\n\r\n"
return function(req, st)
  if req.seq > 1 then return default(req, st) end
  local out, at, size = {}, 1, 1
  while at <= #raw do
    out[#out + 1] = raw:sub(at, at + size - 1)
    out[#out + 1] = { sleep = 0.0005 }
    at = at + size
    size = (size * 7 + 3) % 20011 + 1
  end
  return out
end]])
        local c = client(srv, { engine = engine })
        local m, err = c:get_message("m1")
        assert.is_nil(err and tostring(err))
        assert.equals(40 * 5005, #m.body)
        assert.equals("00040", m.body:sub(-5005, -5001))
        assert.equals("after", assert(c:get_message("after")).id)
        assert.equals(1, srv:log().accepts)
      end)

    it("an endless flood of 1xx heads: refused past 64 KiB of heads, no hang (engine " .. engine .. ")", function()
      local one = "HTTP/1.1 100 Continue\r\nX-A: " .. ("a"):rep(100) .. "\r\n\r\n"
      local srv = server(([[
return function(req, st)
  local t = {}
  for i = 1, 2000 do t[i] = %q end
  return { table.concat(t), { sleep = 5 } }
end]]):format(one))
      local c = client(srv, { engine = engine, timeout = 3 * S })
      local t0 = socket.gettime()
      local err = fails("network", c:get_message("m1"))
      assert.is_true(socket.gettime() - t0 < 2 * S)
      assert.truthy(tostring(err):find("65536 bytes of headers", 1, true), tostring(err))
    end)
  end
end)

---------------------------------------------------------------------------------------------------------------------
describe("direct engine: size limits", function()
  for _, engine in ipairs(ENGINES) do
    it("a head of more than 64 KiB, in many lines or one: refused (engine " .. engine .. ")", function()
      local many = {}
      for i = 1, 70 do many[i] = ("X-H%d: %s\r\n"):format(i, ("h"):rep(1000)) end
      for _, head in ipairs { table.concat(many), "X-Huge: " .. ("h"):rep(70 * 1024) .. "\r\n" } do
        local srv = server(raw_script("HTTP/1.1 200 OK\r\n" .. head .. "Content-Length: " .. #MSG_BODY ..
          "\r\n\r\n" .. MSG_BODY))
        local c = client(srv, { engine = engine })
        local err = fails("network", c:get_message("m1"))
        assert.truthy(tostring(err):find("65536 bytes of headers", 1, true), tostring(err))
        assert.is_true(err.request_sent)
        assert.equals("after", assert(c:get_message("after")).id)
      end
    end)

    it("a head of 60 KiB: taken (engine " .. engine .. ")", function()
      local many = {}
      for i = 1, 60 do many[i] = ("X-H%d: %s\r\n"):format(i, ("h"):rep(1000)) end
      local srv = server(raw_script("HTTP/1.1 200 OK\r\n" .. table.concat(many) .. "Content-Length: " .. #MSG_BODY ..
        "\r\n\r\n" .. MSG_BODY))
      local c = client(srv, { engine = engine })
      assert.equals("m1", assert(c:get_message("m1")).id)
    end)

    it("trailers of more than 64 KiB: refused (engine " .. engine .. ")", function()
      local t = {}
      for i = 1, 70 do t[i] = ("X-T%d: %s\r\n"):format(i, ("t"):rep(1000)) end
      local srv = server(raw_script("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" ..
        ("%x"):format(#MSG_BODY) .. "\r\n" .. MSG_BODY .. "\r\n0\r\n" .. table.concat(t) .. "\r\n"))
      local c = client(srv, { engine = engine })
      fails("network", c:get_message("m1"))
      assert.equals("after", assert(c:get_message("after")).id)
    end)

    local BIG = '{"id":"m1","type":1,"body":"' .. ("b"):rep(300) .. '"}'
    for _, case in ipairs {
      { "a Content-Length past max_response_size", "HTTP/1.1 200 OK\r\nContent-Length: " .. #BIG .. "\r\n\r\n" .. BIG },
      { "a chunked body past max_response_size", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" ..
        "40\r\n" .. BIG:sub(1, 64) .. "\r\n" .. ("%x"):format(#BIG - 64) .. "\r\n" .. BIG:sub(65) .. "\r\n0\r\n\r\n" },
      { "a body read to close past max_response_size", "HTTP/1.1 200 OK\r\n\r\n" .. BIG, "close" },
      { "a Content-Length of 30 digits", "HTTP/1.1 200 OK\r\nContent-Length: " .. ("9"):rep(30) .. "\r\n\r\n" .. BIG },
      { "a chunk of 16 hex digits", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\n" .. BIG },
    } do
      it(case[1] .. ": decode error naming the cap, the next call on a new connection (engine " .. engine .. ")",
        function()
          local srv = server(raw_script(case[2], case[3]))
          local c = client(srv, { engine = engine, max_response_size = 100 })
          local v, err = c:get_message("m1")
          if engine == "libcurl" and case[1]:find("16 hex", 1, true) and err and err.kind == "network" then
            -- libcurl's engine refuses a chunk size past 2^63 as malformed: refused too, if not as cosockets do
          else
            fails("decode", v, err)
            assert.truthy(tostring(err):find("max_response_size", 1, true), tostring(err))
            assert.equals(200, err.status)
          end
          assert.equals("after", assert(c:get_message("after")).id)
          assert.equals(2, srv:log().accepts)
        end)
    end

    it("a body of exactly max_response_size bytes is taken, one byte more is not, in every framing (engine " ..
      engine .. ")", function()
      for _, framing in ipairs { "length", "chunked", "close" } do
        for _, extra in ipairs { 0, 1 } do
          local body = MSG_BODY:sub(1, -2) .. (" "):rep(extra) .. "}"
          local raw
          if framing == "length" then
            raw = "HTTP/1.1 200 OK\r\nContent-Length: " .. #body .. "\r\n\r\n" .. body
          elseif framing == "chunked" then
            raw = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" .. ("%x"):format(#body) .. "\r\n" ..
              body .. "\r\n0\r\n\r\n"
          else
            raw = "HTTP/1.1 200 OK\r\n\r\n" .. body
          end
          local srv = server(raw_script(raw, framing == "close" and "close" or nil))
          local c = client(srv, { engine = engine, max_response_size = #MSG_BODY })
          local v, err = c:get_message("m1")
          if extra == 0 then
            assert.is_nil(err and tostring(err), framing)
            assert.equals("m1", v.id, framing)
          else
            fails("decode", v, err)
          end
          assert.equals("a", assert(c:get_message("a")).id) -- (an answer under the cap)
          srv:stop()
        end
      end
    end)

    it("an error answer past max_response_size is still classified by its status (engine " .. engine .. ")", function()
      local body = '{"statusCode":404,"message":"' .. ("n"):rep(300) .. '"}'
      local srv = server(raw_script("HTTP/1.1 404 Not Found\r\nContent-Length: " .. #body .. "\r\n\r\n" .. body))
      local c = client(srv, { engine = engine, max_response_size = 100 })
      local err = fails("not_found", c:get_message("m1"))
      assert.equals(404, err.status)
      assert.equals("after", assert(c:get_message("after")).id)
    end)
  end
end)

---------------------------------------------------------------------------------------------------------------------
describe("direct engine: the token", function()
  -- Answers that echo the token back everywhere a server could put it. None may bring it into an error.
  local ECHO = {
    { "in a 400's reason and JSON body", [[answer("400 Bad " .. T, '{"statusCode":400,"message":"bad token ' .. T ..
      '","error":"' .. T .. '"}', "X-Trace-Id: " .. T .. "\r\n")]] },
    { "in a 401's body as an array and in X-Request-Id", [[answer("401 " .. T, '{"statusCode":401,"message":["' ..
      T .. '","x"]}', "X-Request-Id: Bearer " .. T .. "\r\n")]] },
    { "in a 500's HTML", [["HTTP/1.1 500 " .. T .. "\r\nContent-Type: text/html\r\nContent-Length: " ..
      #("<html>" .. T .. "</html>") .. "\r\n\r\n<html>" .. T .. "</html>"]] },
    { "JSON-escaped in a body", [[answer("403 Forbidden", '{"message":"' ..
      T:gsub(".", function(ch) return ("\\u%04x"):format(ch:byte()) end) .. '"}')]] },
    { "in a malformed status line", [["HTTP/1.1 2000 " .. T .. "\r\nContent-Length: 2\r\n\r\n{}"]] },
    { "in a lower-case status line", [["http/1.1 404 " .. T .. "\r\nContent-Length: 2\r\n\r\n{}"]] },
    { "as a Content-Length", [["HTTP/1.1 200 OK\r\nContent-Length: " .. T .. "\r\n\r\n{}"]] },
    { "in a chunk's size line and a trailer", [["HTTP/1.1 404 x\r\nTransfer-Encoding: chunked\r\n\r\n2;" .. T ..
      "\r\n{}\r\n0\r\nX-Trace-Id: " .. T .. "\r\n\r\n"]] },
    { "as a chunk size", [["HTTP/1.1 404 x\r\nTransfer-Encoding: chunked\r\n\r\n" .. T .. "\r\n{}\r\n0\r\n\r\n"]] },
    { "in a 1xx, then closed", [[{ "HTTP/1.1 100 " .. T .. "\r\nX-Trace-Id: " .. T .. "\r\n\r\n", "close" }]] },
    { "in a 2xx that is not the JSON expected", [[answer("200 OK", "not json " .. T)]] },
    { "in a 429's Retry-After", [[answer("429 " .. T, '{"message":"' .. T .. '"}', "Retry-After: " .. T .. "\r\n")]] },
  }
  for _, engine in ipairs(ENGINES) do
    for _, case in ipairs(ECHO) do
      it("echoed " .. case[1] .. ": not in the error (engine " .. engine .. ")", function()
        local srv = server(([[
return function(req, st)
  local T = req.headers.authorization:match("^Bearer (.*)$")
  return %s
end]]):format(case[2]))
        local c = client(srv, { engine = engine })
        for _, call in ipairs { function() return c:get_message("m1") end, function() return send(c) end } do
          local v, err = call()
          assert.is_nil(v)
          assert.is_table(err)
          assert.is_nil(lch.find_in(err, TOKEN), "the token is in " .. tostring(lch.find_in(err, TOKEN)))
          assert.is_nil(tostring(err):find(TOKEN, 1, true), tostring(err))
          -- a cut token must not leave its start either
          assert.is_nil(tostring(err):find(TOKEN:sub(1, 12), 1, true), tostring(err))
        end
      end)
    end

    it("a token with / + = echoed JSON-escaped (\\/ and \\u002b) in a body: not in the error (engine " .. engine ..
      ")", function()
      local tok = "eyJhbGciOi.J9/abc+def/ghi==.x/y"
      local srv = server([[
return function(req, st)
  local T = req.headers.authorization:match("^Bearer (.*)$")
  local escaped = T:gsub("/", "\\/"):gsub("%+", "\\u002b")
  return answer("401 Unauthorized", '{"statusCode":401,"message":"Invalid token: ' .. escaped .. '","token":"' ..
    escaped .. '"}', "X-Trace-Id: " .. T .. "\r\n")
end]])
      local c = client(srv, { engine = engine, token = tok })
      local err = fails("auth", c:get_message("m1"))
      assert.is_nil(lch.find_in(err, tok), "the token is in " .. tostring(lch.find_in(err, tok)))
      assert.is_nil(lch.find_in(err, "abc+def/ghi"), "the token is in " .. tostring(lch.find_in(err, "abc+def/ghi")))
      assert.is_nil(tostring(err):find("abc+def", 1, true), tostring(err))
    end)

    it("set_token: the next call on the same connection carries the new token; false carries none (engine " ..
      engine .. ")", function()
      local srv = server()
      local c = client(srv, { engine = engine })
      assert(c:get_message("a"))
      assert.is_true(c._session:set_token("second-token-42"))
      assert(c:get_message("b"))
      assert.is_true(c._session:set_token(false))
      assert(c:get_message("c"))
      assert.is_true(c._session:set_token(TOKEN))
      assert(send(c))
      local r = srv:log().requests
      assert.equals("Bearer " .. TOKEN, r[1].headers.authorization)
      assert.equals("Bearer second-token-42", r[2].headers.authorization)
      assert.is_nil(r[3].headers.authorization)
      assert.equals("Bearer " .. TOKEN, r[4].headers.authorization)
      assert.equals(1, srv:log().accepts)
      -- a token that could split the header is refused, and the old one stays
      local ok, err = c._session:set_token("evil\r\nX-Injected: 1")
      assert.is_nil(ok)
      assert.equals("invalid", err.kind)
      assert(c:get_message("d"))
      r = srv:log().requests
      assert.equals("Bearer " .. TOKEN, r[5].headers.authorization)
      assert.is_nil(r[5].headers["x-injected"])
    end)
  end
end)

---------------------------------------------------------------------------------------------------------------------
describe("direct engine: the engine option", function()
  it("\"bogus\", a number, or with transport \"ngx\": invalid, naming the option", function()
    for _, opts in ipairs {
      { engine = "bogus" }, { engine = "DIRECT" }, { engine = "" }, { engine = 1 }, { engine = true },
      { engine = "direct", transport = "ngx" }, { engine = "libcurl", transport = "ngx" },
    } do
      opts.token, opts.base_url = TOKEN, "http://127.0.0.1:9"
      local c, err = leadconnector.new(opts)
      assert.is_nil(c)
      assert.equals("invalid", err.kind, tostring(err))
      assert.truthy(tostring(err):find("engine", 1, true), tostring(err))
    end
  end)

  it("\"direct\" and \"libcurl\" are taken, and stats() says which runs", function()
    for _, e in ipairs(ENGINES) do
      local c = assert(leadconnector.new { token = TOKEN, base_url = "http://127.0.0.1:9", engine = e })
      assert.equals(e, stats(c).engine)
      assert.equals(0, stats(c).connects)
    end
  end)

  it("a refused connection: request_sent = false, and a send is retried then (nothing left)", function()
    for _, e in ipairs(ENGINES) do
      local c = assert(leadconnector.new { token = TOKEN, base_url = "http://127.0.0.1:" .. lch.unused_port(),
        engine = e, max_retries = 2, retry_base = 0.001, retry_cap = 0.002, rate_limit = false })
      local err = fails("network", send(c))
      assert.is_false(err.request_sent, e)
      assert.equals(3, err.attempts, e)
      assert.is_nil(tostring(err):find(TOKEN, 1, true))
    end
  end)
end)

---------------------------------------------------------------------------------------------------------------------
describe("direct engine: the same results as libcurl's for the same answers", function()
  -- A fourth field: where the direct engine keeps the cosocket reader's rule and libcurl's engine does otherwise,
  -- what the direct engine must give (only the fields named; ABSENT: the field must be nil), instead of libcurl's.
  local ABSENT = {}
  local ANSWERS = {
    { "a plain 200", "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: " .. #MSG_BODY ..
      "\r\nX-RateLimit-Max: 100\r\nX-RateLimit-Remaining: 42\r\nX-RateLimit-Interval-Milliseconds: 10000\r\n" ..
      "X-RateLimit-Limit-Daily: 200000\r\nX-RateLimit-Daily-Remaining: 199000\r\n\r\n" .. MSG_BODY },
    { "a 404 with X-Trace-Id", "HTTP/1.1 404 Not Found\r\nX-Trace-Id: trace-1\r\nContent-Length: 43\r\n\r\n" ..
      '{"statusCode":404,"message":"gone","x":"y"}' },
    { "a 404 with X-Request-Id", "HTTP/1.1 404 Not Found\r\nx-request-id: req-2\r\nContent-Length: 2\r\n\r\n{}" },
    { "a 429 with Retry-After and rate-limit headers", "HTTP/1.1 429 Too Many Requests\r\nRetry-After: 7\r\n" ..
      "X-RateLimit-Remaining: 0\r\nX-RateLimit-Interval-Milliseconds: 10000\r\nContent-Length: 2\r\n\r\n{}" },
    { "a 503 with an HTTP-date Retry-After", "HTTP/1.1 503 Unavailable\r\nRetry-After: Wed, 21 Oct 2015 07:28:00 GMT" ..
      "\r\nContent-Length: 5\r\n\r\nbusy!" },
    { "a 500 in HTML", "HTTP/1.1 500 Internal\r\nContent-Type: text/html\r\nContent-Length: 13\r\n\r\n<h1>oops</h1>" },
    { "a 422 whose message is an array", "HTTP/1.1 422 Unprocessable\r\nContent-Length: 42\r\n\r\n" ..
      '{"statusCode":422,"message":["a","b"],"x":1}' },
    { "chunked with extensions and trailers", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" ..
      ("%x"):format(#MSG_BODY) .. ";a=b;c\r\n" .. MSG_BODY .. "\r\n0;z\r\nX-T: 1\r\n\r\n" },
    { "chunked, X-Trace-Id and X-RateLimit-Remaining as trailers", "HTTP/1.1 404 Not Found\r\nTransfer-Encoding: " ..
      "chunked\r\n\r\n2\r\n{}\r\n0\r\nX-Trace-Id: in-trailer\r\nX-RateLimit-Remaining: 3\r\n\r\n", nil,
      -- trailers are not headers of the answer (libcurl's engine reads them as if they were)
      { ok = false, kind = "not_found", status = 404, trace_id = ABSENT, last = {} } },
    { "chunked, a bad Content-Length as a trailer", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" ..
      ("%x"):format(#MSG_BODY) .. "\r\n" .. MSG_BODY .. "\r\n0\r\nContent-Length: nope\r\n\r\n", nil,
      { ok = true } },
    { "a 1xx with X-Trace-Id, then a 404 without", "HTTP/1.1 103 Hints\r\nX-Trace-Id: interim\r\n" ..
      "X-RateLimit-Remaining: 1\r\n\r\nHTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\n{}" },
    { "a 1xx, then the connection closed", "HTTP/1.1 100 Continue\r\n\r\n", "close" },
    { "Transfer-Encoding chunked and a Content-Length", "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n" ..
      "Transfer-Encoding: chunked\r\n\r\n" .. ("%x"):format(#MSG_BODY) .. "\r\n" .. MSG_BODY .. "\r\n0\r\n\r\n" },
    { "two different Content-Lengths", "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: " .. #MSG_BODY ..
      "\r\n\r\n" .. MSG_BODY },
    { "an HTTP/1.0 answer read to close", "HTTP/1.0 200 OK\r\n\r\n" .. MSG_BODY, "close" },
    { "bare LF line ends", "HTTP/1.1 200 OK\nContent-Length: " .. #MSG_BODY .. "\n\n" .. MSG_BODY },
    { "a status line without a reason", "HTTP/1.1 200\r\nContent-Length: " .. #MSG_BODY .. "\r\n\r\n" .. MSG_BODY },
    { "a header line without a colon", "HTTP/1.1 200 OK\r\nno colon here\r\nContent-Length: " .. #MSG_BODY ..
      "\r\n\r\n" .. MSG_BODY },
    { "a Content-Length of 0 on a read", "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n" },
    { "a body shorter than its Content-Length", "HTTP/1.1 200 OK\r\nContent-Length: 500\r\n\r\n" .. MSG_BODY,
      "close" },
    { "a chunk size of 17 digits (leading zeros)", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" ..
      ("0"):rep(15) .. ("%02x"):format(#MSG_BODY) .. "\r\n" .. MSG_BODY .. "\r\n0\r\n\r\n" },
    { "a chunk not followed by its line end", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" ..
      ("%x"):format(#MSG_BODY) .. "\r\n" .. MSG_BODY .. "XY\r\n0\r\n\r\n" },
    { "a chunk size line of 2 KiB", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" ..
      ("%x"):format(#MSG_BODY) .. ";" .. ("e"):rep(2048) .. "\r\n" .. MSG_BODY .. "\r\n0\r\n\r\n", nil,
      { ok = false, kind = "network" } }, -- a chunk-size line holds 1 KiB at most, as on cosockets
    { "the connection closed in the status line", "HTTP/1.1 2", "close" },
    { "the connection reset after the head", "HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n", "rst" },
    { "a 101 Switching Protocols", "HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\nHTTP/1.1 200 OK\r\n" ..
      "Content-Length: " .. #MSG_BODY .. "\r\n\r\n" .. MSG_BODY, nil,
      { ok = false, kind = "network" } }, -- refused at once (libcurl's engine waits for the timeout)
    { "a NUL byte in a header's value", "HTTP/1.1 404 Not Found\r\nX-Trace-Id: a\0b\r\nContent-Length: 2\r\n\r\n{}" },
    { "a NUL byte in the status line's reason", "HTTP/1.1 404 Not\0Found\r\nContent-Length: 2\r\n\r\n{}" },
    { "Transfer-Encoding: gzip, chunked (a coding never asked for)", "HTTP/1.1 404 Not Found\r\n" ..
      "Transfer-Encoding: gzip, chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n" },
    { "a chunk size written 0x2", "HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n0x2\r\n{}\r\n0\r\n\r\n" },
    { "a chunk size with white space around it", "HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n" ..
      " 2 \r\n{}\r\n0\r\n\r\n", nil, { ok = false, kind = "not_found", status = 404 } }, -- as on cosockets
    { "a 304", "HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n" },
    { "a 301 with a Location (never followed)", "HTTP/1.1 301 Moved\r\nLocation: http://127.0.0.1:9/x\r\n" ..
      "Content-Length: 2\r\n\r\n{}" },
  }
  local function outcome(c, v, err)
    local remaining, interval, retry_after = c._session:last()
    local rl = c:rate_limit()
    local o = { last = { remaining, interval, retry_after and math.floor(retry_after / 60) },
      rl = { rl.max, rl.remaining, rl.interval_ms, rl.daily_limit, rl.daily_remaining } }
    if v ~= nil then
      o.ok = true
      o.value = type(v) == "userdata" and v:to_table() or v
    else
      o.ok = false
      o.kind, o.status, o.request_sent, o.trace_id, o.body = err.kind, err.status, err.request_sent, err.trace_id,
        err.body
      o.retry_after = err.retry_after and math.floor(err.retry_after / 60)
    end
    return o
  end
  for _, a in ipairs(ANSWERS) do
    it(a[1] .. ": the same outcome on both engines, and the next call its own answer", function()
      local got, msgs = {}, {}
      for _, engine in ipairs(ENGINES) do
        local srv = server(raw_script(a[2], a[3]))
        local c = client(srv, { engine = engine, timeout = 1 * S })
        local v, err = c:get_message("m1")
        got[engine] = outcome(c, v, err)
        msgs[engine] = err and tostring(err) or "ok"
        local m, err2 = c:get_message("after")
        assert.is_nil(err2 and tostring(err2))
        assert.equals("after", m.id)
        c:close()
      end
      if a[4] then
        for k, want in pairs(a[4]) do
          if want == ABSENT then want = nil end
          assert.same(want, got.direct[k], k .. " of direct: " .. msgs.direct)
        end
      else
        assert.same(got.libcurl, got.direct, "libcurl: " .. msgs.libcurl .. "\ndirect: " .. msgs.direct)
      end
    end)
  end
end)

---------------------------------------------------------------------------------------------------------------------
describe("direct engine: writing the request", function()
  -- A send of 8 MB: the request does not fit in the socket's buffers, so the engine waits to write the rest.
  local HUGE = ("x"):rep(8 * 1024 * 1024)
  local function huge_send(c) return c:send_message { type = "SMS", contactId = "c1", message = HUGE } end
  for _, engine in ipairs(ENGINES) do
    it("an 8 MB send, written in many pieces: the answer, the body whole (engine " .. engine .. ")", function()
      local srv = server()
      local c = client(srv, { engine = engine, timeout = 10 * S })
      local sent, err = huge_send(c)
      assert.is_nil(err and tostring(err))
      assert.equals("m1", sent.messageId)
      assert.equals(#HUGE + 44, #srv:log().requests[1].body)
    end)

    it("a send whose body the server never reads: timeout on time, request_sent, one connection though " ..
      "max_retries = 3 (engine " .. engine .. ")", function()
      local srv = server([[return default, function(req, st) return { { sleep = 30 } } end]])
      local tmo = 0.4 * S
      local c = client(srv, { engine = engine, timeout = tmo, max_retries = 3 })
      local t0 = socket.gettime()
      local err = fails("timeout", huge_send(c))
      assert.is_true(socket.gettime() - t0 < tmo + 0.5 * S)
      assert.is_true(err.request_sent)
      assert.equals(1, srv:log().accepts)
    end)

    it("a send reset by the server after its head: network, request_sent, one connection though max_retries = 3 " ..
      "(engine " .. engine .. ")", function()
      local srv = server([[return default, function(req, st) return "rst" end]])
      local c = client(srv, { engine = engine, max_retries = 3 })
      local err = fails("network", huge_send(c))
      assert.is_true(err.request_sent)
      assert.equals(1, srv:log().accepts)
      assert.is_nil(tostring(err):find(TOKEN, 1, true))
    end)

    -- A server (or a proxy in front of the API) that refuses a send from its head: the 413 comes while the body is
    -- still being written, then the server closes without reading the rest, or stops reading and waits. libcurl's
    -- engine reads while it writes and returns the 413 (kind http, README: 413 is an "http" error); an engine that
    -- only writes until the write fails loses the answer and reports a network error instead, or waits for the
    -- whole timeout.
    for _, how in ipairs { "closes at once", "half-closes, then closes 0.3 s later", "stops reading and waits" } do
      it("a 413 answered from the head of an 8 MB send, then the server " .. how .. ": kind http, status 413, " ..
        "quickly (engine " .. engine .. ")", function()
        local srv = server(([[
local HOW = %q
local A = 'HTTP/1.1 413 Payload Too Large\r\nConnection: close\r\nContent-Type: application/json\r\n' ..
  'Content-Length: 42\r\n\r\n{"statusCode":413,"message":"too large!!"}'
return function(req, st) return "close" end, function(req, st)
  if HOW == "closes at once" then return { A, "close" } end
  if HOW:find("^half") then return { A, "shutdown", { sleep = 0.3 }, "close" } end
  return { A, { sleep = 30 } }
end]]):format(how))
        local c = client(srv, { engine = engine, timeout = 1 * S, max_retries = 3 })
        local t0 = socket.gettime()
        local err = fails("http", huge_send(c))
        assert.equals(413, err.status)
        assert.is_true(err.request_sent)
        assert.is_true(socket.gettime() - t0 < 0.25 * S, ("took %.2f s"):format(socket.gettime() - t0))
        assert.equals(1, srv:log().accepts)
      end)
    end

    it("a 413 answered from the head, the rest of the body read and thrown away (nginx's lingering close): " ..
      "kind http, status 413 (engine " .. engine .. ")", function()
      local srv = server([[
return function(req, st) return "close" end, function(req, st)
  return 'HTTP/1.1 413 Payload Too Large\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}'
end]])
      local c = client(srv, { engine = engine, max_retries = 3 })
      local err = fails("http", huge_send(c))
      assert.equals(413, err.status)
      assert.equals(1, srv:log().accepts)
    end)

    it("a call's own timeout option is the limit (engine " .. engine .. ")", function()
      local srv = server([[return function(req, st) return { { sleep = 5 }, default(req, st) } end]])
      local c = client(srv, { engine = engine, timeout = 5 * S })
      local t0 = socket.gettime()
      fails("timeout", c:get_message("m1", { timeout = 0.2 * S }))
      assert.is_true(socket.gettime() - t0 < 0.7 * S)
    end)
  end
end)

---------------------------------------------------------------------------------------------------------------------
-- A child process for what might crash: a crash there is a failed test, not the end of this run.
local function child(source, ...)
  local file = os.tmpname()
  local f = assert(io.open(file, "wb"))
  f:write(("package.path, package.cpath = %q, %q\n"):format(package.path, package.cpath), source)
  f:close()
  local args = {}
  for i, a in ipairs { ... } do args[i] = "'" .. tostring(a) .. "'" end
  local p = assert(io.popen(("%s %s %s 2>&1; echo \"exit=$?\""):format(lch.interpreter, file, table.concat(args, " "))))
  local out = p:read("*a")
  p:close()
  os.remove(file)
  return out
end

describe("direct engine: a session without a token (OAuth's token requests: token = false)", function()
  it("answers with X-Trace-Id or X-Request-Id, on both engines: no crash, the id read, no Authorization sent",
    function()
      local srv = server([[
return function(req, st)
  if req.target == "/oauth/token" then
    return answer("404 Not Found", '{"message":"x"}', "X-Trace-Id: trace-" .. req.seq .. "\r\n")
  elseif req.target == "/oauth/again" then
    return answer("404 Not Found", '{"message":"x"}', "X-Request-Id: req-" .. req.seq .. "\r\n")
  end
  return answer("200 OK", '{"a":1}', "X-Request-Id: req-" .. req.seq .. "\r\nX-Trace-Id: t\r\n")
end]])
      local out = child([[
local core = require "leadconnector.core"
for _, engine in ipairs { "direct", "libcurl" } do
  local s = assert(core.session { base_url = arg[1], version = "2021-07-28", user_agent = "ua", token = false,
    engine = engine, timeout = 3, max_response_size = 1024 * 1024 })
  local v, err = s:call("raw", "POST", "/oauth/token", "grant_type=x", "2021-07-28", 3,
    "application/x-www-form-urlencoded")
  print(engine, s:stats().engine, v, err and err.kind, err and err.trace_id)
  v, err = s:call("raw", "GET", "/oauth/whatever")
  print(engine, v and v.a, err and tostring(err))
  assert(s:set_token("now-a-token"))
  assert(s:set_token(false))
  v, err = s:call("raw", "GET", "/oauth/again")
  print(engine, v, err and err.trace_id)
end
]], srv.url)
      assert.equals(table.concat({
        "direct\tdirect\tnil\tnot_found\ttrace-1",
        "direct\t1\tnil",
        "direct\tnil\treq-3",
        "libcurl\tlibcurl\tnil\tnot_found\ttrace-4",
        "libcurl\t1\tnil",
        "libcurl\tnil\treq-6",
        "exit=0", "" }, "\n"), (out:gsub("\t1%.0\t", "\t1\t")))
      for _, r in ipairs(srv:log().requests) do assert.is_nil(r.headers.authorization) end
    end)
end)

---------------------------------------------------------------------------------------------------------------------
describe("direct engine: a fork", function()
  -- LuaJIT's FFI calls fork(2): the parent makes a client and a kept-alive connection, then parent and child
  -- make calls at the same time. Each must get its own answers, and the child must never use (or end) the parent's
  -- connection.
  local FORK = [[
local url, mode = arg[1], arg[2]
local ffi = require "ffi"
ffi.cdef [=[ int fork(void); int waitpid(int pid, int *status, int options); void _exit(int status); ]=]
local leadconnector = require "leadconnector"
local c = assert(leadconnector.new { token = "fork-token", base_url = url, timeout = 3, deadline = 5, max_retries = 0,
  rate_limit = false })
assert(c:get_message("parent-0").id == "parent-0")
local function run(who, n)
  local ok, bad = 0, {}
  if mode == "batch" then -- n calls in batches of 5, three at a time: the batch's own connections
    for b = 0, n / 5 - 1 do
      local calls = {}
      for i = 1, 5 do calls[i] = { "get_message", who .. "-" .. (b * 5 + i) } end
      local res = assert(c:batch(calls, { concurrency = 3 }))
      for i = 1, 5 do
        local r = res[i]
        if r.value and r.value.id == calls[i][2] then ok = ok + 1 else bad[#bad + 1] = r.value and r.value.id or tostring(r.err) end
      end
    end
    return ok, table.concat(bad, ",")
  end
  for i = 1, n do
    local id = who .. "-" .. i
    local m, err = c:get_message(id)
    if m and m.id == id then ok = ok + 1 else bad[#bad + 1] = m and m.id or tostring(err) end
  end
  return ok, table.concat(bad, ",")
end
if mode == "batch" then -- the parent's batch connections exist before the fork
  assert(#c:batch({ { "get_message", "parent-w1" }, { "get_message", "parent-w2" }, { "get_message", "parent-w3" } },
    { concurrency = 3 }) == 3)
end
local pid = ffi.C.fork()
if pid == 0 then
  if mode == "calls" or mode == "batch" then
    local ok, bad = run("child", 30)
    io.stdout:write("child ", ok, " ", bad, "\n")
    io.stdout:flush()
    ffi.C._exit(0)
  end
  os.exit(0, true) -- the state closed: the client's __gc runs in the child
end
local ok, bad = run("parent", 30)
local st = ffi.new("int[1]")
ffi.C.waitpid(pid, st, 0)
io.stdout:write("parent ", ok, " ", bad, " connects=", c._session:stats().connects, " child_status=", st[0], "\n")
]]
  local TITLE = {
    calls = "parent and child call at once: each its own answers on its own connection",
    batch = "parent and child run batches at once (the parent's batch connections made before the fork): each its " ..
      "own answers on its own connections",
    exit = "a child that only exits (its __gc): the parent's kept-alive connection is untouched",
  }
  for _, mode in ipairs { "calls", "batch", "exit" } do
    it(TITLE[mode], function()
      local so = "build/luajit/leadconnector/core.so"
      local found = os.execute("command -v luajit >/dev/null 2>&1") -- true (5.2+) or 0 (5.1) when found
      if found ~= true and found ~= 0 then return pending("no luajit") end
      if not io.open(so) then return pending("no " .. so .. " (make luajit)") end
      if io.popen("find " .. so .. " -newer csrc/http.c"):read("*a") == "" then
        return pending(so .. " is older than csrc/http.c (make luajit)")
      end
      local srv = server()
      local file = os.tmpname()
      local f = assert(io.open(file, "wb"))
      f:write(('package.path = "./lua/?.lua;./lua/?/init.lua;" .. package.path\n' ..
        'package.cpath = "./build/luajit/?.so;" .. package.cpath\n'), FORK)
      f:close()
      local p = assert(io.popen(("env -u LD_PRELOAD luajit %s %s %s 2>&1"):format(file, srv.url, mode)))
      local out = p:read("*a")
      p:close()
      os.remove(file)
      local log = srv:log()
      if mode == "calls" then
        assert.truthy(out:find("child 30 \n", 1, true), out)
        assert.equals(2, log.accepts, out)
      elseif mode == "batch" then -- the parent's single one and three for batches; the child's three
        assert.truthy(out:find("child 30 \n", 1, true), out)
        assert.equals(7, log.accepts, out)
      else
        assert.equals(1, log.accepts, out)
      end
      assert.truthy(out:find(("parent 30  connects=%d child_status=0"):format(mode == "batch" and 4 or 1), 1, true), out)
      -- no connection carried both a parent's and a child's request
      local who = {}
      for _, r in ipairs(log.requests) do
        local w = r.target:match("/messages/(%a+)%-")
        who[r.conn] = who[r.conn] or w
        assert.equals(who[r.conn], w, "connection " .. r.conn .. " carried requests of both")
      end
    end)
  end
end)

---------------------------------------------------------------------------------------------------------------------
describe("direct engine: over TLS (an nginx front with a fresh certificate)", function()
  local helpers = require "helpers"
  local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end
  local up, front
  lazy_setup(function()
    if not select(2, core.curl_version()) then return end
    up = ds.start()
    local dir = helpers.sh("mktemp -d \"${TMPDIR:-/tmp}/lc-direct-tls.XXXXXX\""):gsub("%s+$", "")
    front = { dir = dir, cert = dir .. "/cert.pem", port = helpers.free_port() }
    front.url = "https://127.0.0.1:" .. front.port
    assert(os.execute("cd " .. q(dir) .. " && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 " ..
      "-nodes -keyout key.pem -out cert.pem -days 2 -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 " ..
      ">/dev/null 2>&1"), "openssl failed")
    os.execute("mkdir -p " .. q(dir .. "/tmp"))
    -- idle connections are closed after 150 ms, and every connection after 5 requests
    helpers.write_file(dir .. "/nginx.conf", ([[
daemon off;
master_process off;
worker_processes 1;
pid @D@/nginx.pid;
error_log @D@/error.log warn;
events { worker_connections 64; }
http {
  access_log off;
  client_body_temp_path @D@/tmp/body;
  proxy_temp_path @D@/tmp/proxy;
  fastcgi_temp_path @D@/tmp/fastcgi;
  uwsgi_temp_path @D@/tmp/uwsgi;
  scgi_temp_path @D@/tmp/scgi;
  server {
    listen 127.0.0.1:@PORT@ ssl;
    ssl_certificate @D@/cert.pem;
    ssl_certificate_key @D@/key.pem;
    keepalive_timeout 150ms;
    keepalive_requests 5;
    location / {
      proxy_pass @UP@;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
]]):gsub("@D@", dir):gsub("@PORT@", tostring(front.port)):gsub("@UP@", up.url))
    local script = ("nginx -p %s -c %s/nginx.conf -e %s/error.log >%s/stderr.log 2>&1 & n=$!; " ..
      "while kill -0 %d 2>/dev/null && kill -0 $n 2>/dev/null; do sleep 0.3; done; kill -TERM $n 2>/dev/null; wait $n")
      :format(q(dir), q(dir), q(dir), q(dir), helpers.my_pid())
    front.watcher = tonumber(helpers.sh((helpers.CLEAN_ENV .. " sh -c %s >/dev/null 2>&1 </dev/null & echo $!")
      :format(q(script))):match("%d+"))
    local deadline = socket.gettime() + 20
    while true do
      local c = socket.tcp()
      c:settimeout(0.2)
      local ok = c:connect("127.0.0.1", front.port)
      c:close()
      if ok then break end
      if socket.gettime() > deadline or not helpers.alive(front.watcher) then
        error("nginx (TLS) did not start: " .. (helpers.read_file(dir .. "/stderr.log") or "") ..
          (helpers.read_file(dir .. "/error.log") or ""))
      end
      socket.sleep(0.05)
    end
  end)
  lazy_teardown(function()
    if front then
      local pid = tonumber((helpers.read_file(front.dir .. "/nginx.pid") or ""):match("%d+"))
      if pid then os.execute("kill -TERM " .. pid .. " 2>/dev/null") end
      local t = socket.gettime() + 5
      while front.watcher and helpers.alive(front.watcher) and socket.gettime() < t do socket.sleep(0.05) end
      os.execute("rm -rf " .. q(front.dir))
    end
    if up then up:stop() end
  end)

  for _, engine in ipairs(ENGINES) do
    it("kept alive over TLS; after the server closed it while idle, a send goes once on a new connection; " ..
      "the 5-request limit is followed (engine " .. engine .. ")", function()
      if not front then return pending("libcurl without TLS") end
      local c = client({ url = front.url }, { engine = engine, ca_file = front.cert })
      local posts = up:count("POST")
      for i = 1, 4 do assert.equals("a" .. i, assert(c:get_message("a" .. i)).id) end
      if engine == "direct" then assert.equals(1, stats(c).connects) end
      socket.sleep(0.4) -- past nginx's keepalive_timeout: it closed the connection
      local sent, err = send(c)
      assert.is_nil(err and tostring(err))
      assert.is_string(sent.messageId)
      assert.equals(posts + 1, up:count("POST"))
      for i = 1, 6 do assert.equals("b" .. i, assert(c:get_message("b" .. i)).id) end
      if engine == "direct" then assert.equals(3, stats(c).connects) end
      socket.sleep(0.4)
      local err2 = select(2, send(c))
      assert.is_nil(err2 and tostring(err2))
      assert.equals(posts + 2, up:count("POST"))
      c:close()
    end)
  end

  for _, engine in ipairs(ENGINES) do
    it("https to a server that never speaks TLS: timeout within the call's timeout, request_sent = false (engine " ..
      engine .. ")", function()
      if not front then return pending("libcurl without TLS") end
      local srv = server([[
local function never(req, st) return { { sleep = 30 } } end
return never, never]])
      local tmo = 0.3 * S
      local c = client({ url = "https://127.0.0.1:" .. srv.port }, { engine = engine, timeout = tmo,
        connect_timeout = 5 * S, ca_file = front.cert })
      local t0 = socket.gettime()
      local err = fails("timeout", send(c))
      assert.is_true(socket.gettime() - t0 < tmo + 0.5 * S, ("took %.2f s"):format(socket.gettime() - t0))
      assert.is_false(err.request_sent)
    end)

    it("https to a server that answers plain HTTP at once: network, request_sent = false (engine " .. engine .. ")",
      function()
        if not front then return pending("libcurl without TLS") end
        local srv = server([[
return function() return "close" end, nil, function(conn, st)
  return { "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}", "close" }
end]])
        local c = client({ url = "https://127.0.0.1:" .. srv.port }, { engine = engine, ca_file = front.cert })
        local err = fails("network", send(c))
        assert.is_false(err.request_sent)
        assert.equals(0, srv:count())
      end)
  end

  it("a certificate it cannot verify: network, nothing sent, a send retried as never sent", function()
    if not front then return pending("libcurl without TLS") end
    local posts = up:count("POST")
    local c = client({ url = front.url }, { max_retries = 1 })
    local err = fails("network", send(c))
    assert.is_false(err.request_sent)
    assert.equals(2, err.attempts)
    assert.equals(0, stats(c).connects)
    assert.equals(posts, up:count("POST"))
  end)
end)

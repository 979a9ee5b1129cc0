-- The curl transport's direct engine (commit 4ddd7c2, csrc/http.c "the direct engine" and csrc/h1.c): libcurl only
-- connects, the core writes the request and reads the answer. A hostile user's tests of the library's promises on
-- it: a send never goes twice, reads are retried on a fresh connection when a kept-alive one turns out dead, a
-- connection is reused unless the answer says otherwise, time limits hold, the token never shows in an error, and
-- `engine = "libcurl"` gives the same results for the same answers. Every server is a raw one in another process on
-- 127.0.0.1 (spec/directserver.lua): it logs what it read and answers byte for byte what each test says.
local leadconnector = require "leadconnector"
local core = require "leadconnector.core"
local ds = require "directserver"
local lch = require "lchelpers"
local socket = require "socket"

local S = lch.scale
local TOKEN = "tok-Direct-0123456789abcdefXYZ"
local ENGINES = { "direct", "libcurl" }

local function client(srv, opts)
  local o = { token = TOKEN, base_url = srv.url, rate_limit = false, max_retries = 0, retry_base = 0.001,
    retry_cap = 0.005, timeout = 3 * S, connect_timeout = 2 * S, deadline = 10 * S }
  for k, v in pairs(opts or {}) do o[k] = v end
  return assert(leadconnector.new(o))
end

local function stats(c) return c._session:stats() end

local function send(c, copts)
  return c:send_message({ type = "SMS", contactId = "c1", message = "hello" }, copts)
end

-- A server for this test only, stopped when the test ends whatever happens.
local function server(script)
  local srv = ds.start(script)
  finally(function() srv:stop() end)
  return srv
end

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
      'HTTP/1.1 201 Created\r\nContent-Length: 43\r\n\r\n{"conversationId":"x","messageId":"STRAY"}', { mark = "ended" } }]],
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
  if req.method == %q and not st.dropped then st.dropped = true return %q end
  if req.method == "DELETE" then return answer("200 OK", "{}") end
  return default(req, st)
end]]):format(m[1], how))
          local c = client(srv, { engine = engine, max_retries = 0 })
          assert(c:get_conversation("warm"))
          local v, err = m[2](c)
          assert.is_nil(err and tostring(err))
          assert.is_true(m[3](v))
          assert.equals(2, srv:count(m[1]))
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
      "\r\n\r\n" .. MSG_BODY .. 'HTTP/1.1 200 OK\r\nContent-Length: 31\r\n\r\n{"id":"WRONG","type":1,"body":""}', 2 },
    { "a chunked answer with extensions and trailers, kept alive", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n" ..
      "\r\n5;name=\"v;x\"\r\n" .. MSG_BODY:sub(1, 5) .. "\r\n" .. ("%x"):format(#MSG_BODY - 5) .. " ; e=1 \r\n" ..
      MSG_BODY:sub(6) .. "\r\n0;last\r\nX-Trailer: t\r\nExpires: never\r\n\r\n", 1 },
    { "a 100 and a 103 with headers before the answer, kept alive", "HTTP/1.1 100 Continue\r\n\r\n" ..
      "HTTP/1.1 103 Early Hints\r\nLink: </x>; rel=preload\r\nConnection: close\r\n\r\n" ..
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
      local srv = server(([[
return function(req, st)
  if req.seq == 1 then return { { trickle = %q, step = 0.02 } } end
  return default(req, st)
end]]):format(ANSWER))
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
      local srv = server([[
return function(req, st)
  if req.method == "POST" and req.seq == 1 then return { { sleep = 1.0 }, default(req, st) } end
  return default(req, st)
end]])
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
          local err = fails("decode", c:get_message("m1"))
          assert.truthy(tostring(err):find("max_response_size", 1, true), tostring(err))
          assert.equals(200, err.status)
          assert.equals("after", assert(c:get_message("after")).id)
          assert.equals(2, srv:log().accepts)
        end)
    end

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
      (#T + 20) .. "\r\n\r\n<html>" .. T .. "</html>\r\n\r\n\r\n"]] },
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
      "chunked\r\n\r\n2\r\n{}\r\n0\r\nX-Trace-Id: in-trailer\r\nX-RateLimit-Remaining: 3\r\n\r\n" },
    { "chunked, a bad Content-Length as a trailer", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" ..
      ("%x"):format(#MSG_BODY) .. "\r\n" .. MSG_BODY .. "\r\n0\r\nContent-Length: nope\r\n\r\n" },
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
      ("%x"):format(#MSG_BODY) .. ";" .. ("e"):rep(2048) .. "\r\n" .. MSG_BODY .. "\r\n0\r\n\r\n" },
    { "the connection closed in the status line", "HTTP/1.1 2", "close" },
    { "the connection reset after the head", "HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n", "rst" },
    { "a 101 Switching Protocols", "HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\nHTTP/1.1 200 OK\r\n" ..
      "Content-Length: " .. #MSG_BODY .. "\r\n\r\n" .. MSG_BODY },
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
        local c = client(srv, { engine = engine })
        local v, err = c:get_message("m1")
        got[engine] = outcome(c, v, err)
        msgs[engine] = err and tostring(err) or "ok"
        local m, err2 = c:get_message("after")
        assert.is_nil(err2 and tostring(err2))
        assert.equals("after", m.id)
        c:close()
      end
      assert.same(got.libcurl, got.direct, "libcurl: " .. msgs.libcurl .. "\ndirect: " .. msgs.direct)
    end)
  end
end)

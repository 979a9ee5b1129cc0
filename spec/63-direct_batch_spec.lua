-- Batches on the direct engine (csrc/http.c, "the direct engine's batches"): each concurrent call of a batch has a
-- connection of its own, made by libcurl (a multi handle per connection, so they are made in parallel) and kept
-- between batches; the core writes and reads them all from one poll, with the single call's steps (dconn_step).
-- What a user relies on: calls really run at once, connections are reused and never more than the concurrency, a
-- read whose kept-alive connection turns out dead goes again on a fresh one while a send never goes twice, one
-- slow call times out alone, a connection that cannot be made fails its calls as unsent, and a malformed request
-- list raises before anything is written. Every server is a raw one in another process on 127.0.0.1
-- (spec/directserver.lua).
local ds = require "directserver"
local lch = require "lchelpers"
local socket = require "socket"

local S = lch.scale
local TOKEN = "tok-Batch-0123456789abcdefXYZ"

local function client(url, opts) return ds.client(url, TOKEN, opts) end
local function server(script) return ds.for_test(script, finally) end

local function reads(prefix, n)
  local calls = {}
  for i = 1, n do calls[i] = { "get_message", prefix .. i } end
  return calls
end

local function sms(text) return { "send_message", { type = "SMS", contactId = "c1", message = text } } end

describe("direct engine batches", function()
  it("24 reads at concurrency 8 from a server that takes 0.2 s an answer: three rounds' time, not 24, on 8 " ..
    "connections made at once, each answer its own", function()
    local srv = server([[return function(req, st) return { { sleep = 0.2 }, default(req, st) } end]])
    local c = client(srv.url)
    local t0 = socket.gettime()
    local res = assert(c:batch(reads("r", 24), { concurrency = 8 }))
    local took = socket.gettime() - t0
    for i = 1, 24 do
      assert.is_nil(res[i].err and tostring(res[i].err))
      assert.equals("r" .. i, res[i].value.id)
    end
    assert.is_true(took < 3 * 0.2 + 1.2 * S, ("took %.2f s (one at a time: 4.8 s)"):format(took))
    assert.equals(8, srv:log().accepts)
    assert.equals(8, c._session:stats().connects)
    assert.equals("direct", c._session:stats().engine)
  end)

  it("a second batch reuses the first one's connections; a smaller one uses some of them; a single call keeps " ..
    "its own", function()
    local srv = server()
    local c = client(srv.url)
    assert(c:batch(reads("a", 12), { concurrency = 4 }))
    assert.equals(4, srv:log().accepts)
    local res = assert(c:batch(reads("b", 12), { concurrency = 4 }))
    assert.equals("b12", res[12].value.id)
    assert(c:batch(reads("c", 3), { concurrency = 2 }))
    assert.equals(4, srv:log().accepts)
    assert.equals("s1", assert(c:get_message("s1")).id)
    assert.equals(5, srv:log().accepts)
    -- no connection carried two requests at once: each request came after the previous one on it was answered
    local per = {}
    for _, r in ipairs(srv:log().requests) do
      per[r.conn] = (per[r.conn] or 0) + 1
      assert.equals(per[r.conn], r.n)
    end
  end)

  it("kept-alive connections the server closed while idle: the next batch's reads and sends each go once, on " ..
    "fresh connections, each with its own answer", function()
    local srv = server([[
return function(req, st)
  if req.target:find("warm", 1, true) then return { default(req, st), { sleep = 0.02 }, "close" } end
  return default(req, st)
end]])
    local c = client(srv.url, { max_retries = 3 })
    assert(c:batch(reads("warm", 4), { concurrency = 4 }))
    srv:wait(function(l) return l.closed >= 4 end)
    local calls = { sms("one"), { "get_message", "g1" }, sms("two"), { "get_message", "g2" } }
    local res = assert(c:batch(calls, { concurrency = 4 }))
    for i = 1, 4 do assert.is_nil(res[i].err and tostring(res[i].err)) end
    assert.equals("g1", res[2].value.id)
    assert.equals("g2", res[4].value.id)
    assert.equals(2, srv:count("POST"))
    assert.equals(8, srv:log().accepts)
  end)

  it("a kept-alive connection that dies under the request with no answer byte: a read goes again on a fresh " ..
    "connection, a send never (network, request_sent = true, received once, though max_retries = 3)", function()
    local srv = server([[
return function(req, st)
  if req.n > 1 and not st[req.method] then st[req.method] = true return "close" end
  return default(req, st)
end]])
    local c = client(srv.url, { max_retries = 3 })
    assert(c:batch(reads("warm", 2), { concurrency = 2 }))
    local res = assert(c:batch({ { "get_message", "g1" }, sms("once") }, { concurrency = 2 }))
    assert.is_nil(res[1].err and tostring(res[1].err))
    assert.equals("g1", res[1].value.id)
    local err = res[2].err
    assert.is_table(err)
    assert.equals("network", err.kind, tostring(err))
    assert.is_true(err.request_sent)
    assert.equals(1, err.attempts)
    assert.equals(1, srv:count("POST"))
    assert.equals(4, srv:count("GET")) -- two warm ones, g1 twice: once on the dead connection, once again
    assert.equals(3, srv:log().accepts) -- the warm batch's two, and one fresh for g1 (none for the send)
  end)

  it("one call that gets no answer times out on its own time limit while the others finish; the batch waits " ..
    "for nothing else", function()
    local srv = server([[
return function(req, st)
  if req.target:find("slow", 1, true) then return { { sleep = 30 } } end
  return default(req, st)
end]])
    local c = client(srv.url, { timeout = 0.5 * S })
    local calls = reads("f", 6)
    calls[3] = { "get_message", "slow" }
    local t0 = socket.gettime()
    local res = assert(c:batch(calls, { concurrency = 3 }))
    local took = socket.gettime() - t0
    for i = 1, 6 do
      if i == 3 then
        assert.equals("timeout", res[i].err and res[i].err.kind, tostring(res[i].err))
        assert.is_true(res[i].err.request_sent)
      else
        assert.equals("f" .. i, res[i].value.id)
      end
    end
    assert.is_true(took >= 0.45 * S and took < 0.5 * S + 1.0 * S, ("took %.2f s"):format(took))
  end)

  it("a connection refused: every call fails at once as a network error with request_sent = false", function()
    local c = client("http://127.0.0.1:" .. lch.unused_port())
    local res = assert(c:batch({ { "get_message", "a" }, sms("x"), { "get_message", "b" } }, { concurrency = 2 }))
    for i = 1, 3 do
      local err = res[i].err
      assert.is_table(err)
      assert.equals("network", err.kind, tostring(err))
      assert.is_false(err.request_sent)
    end
  end)

  it("a malformed request list (the session's own batch) raises before any request is written", function()
    local srv = server()
    local c = client(srv.url)
    local ok, err = pcall(c._session.batch, c._session, {
      { "message", "GET", "/conversations/messages/one", false, false, false },
      { "message", "GET", "/conversations/messages/two", false, false, false },
      42,
    }, 2)
    assert.is_false(ok)
    assert.matches("batch request 3 is not a table", tostring(err))
    ok, err = pcall(c._session.batch, c._session, {
      { "message", "GET", "/conversations/messages/one", false, false, false },
      { "message", "GET", "/conversations/messages/two", false, "bad\r\nversion", false },
    }, 2)
    assert.is_false(ok)
    assert.matches("version", tostring(err))
    -- the client is usable after both, and the server saw nothing before this call
    assert.equals("after", assert(c:get_message("after")).id)
    assert.equals(1, srv:count())
  end)

  it("a batch of 60 sends at concurrency 16, the server closing every third connection after an answer that says " ..
    "so: each send received exactly once, each with its own answer, on a fresh connection after each close", function()
    local srv = server([[
return function(req, st)
  if req.conn % 3 == 0 then return { (default(req, st):gsub("Connection: keep%-alive", "Connection: close")), "close" } end
  return default(req, st)
end]])
    local c = client(srv.url, { max_retries = 3 })
    local calls = {}
    for i = 1, 60 do calls[i] = sms("s" .. i) end
    local res = assert(c:batch(calls, { concurrency = 16 }))
    local ids = {}
    for i = 1, 60 do
      assert.is_nil(res[i].err and tostring(res[i].err), "entry " .. i)
      local id = res[i].value.messageId
      assert.is_nil(ids[id], "answer " .. id .. " given twice")
      ids[id] = true
    end
    assert.equals(60, srv:count("POST"))
    local seen = {}
    for _, r in ipairs(srv:log().requests) do
      local text = r.body:match('"message":"(s%d+)"')
      assert.is_nil(seen[text], text .. " received twice")
      seen[text] = true
    end
  end)
end)

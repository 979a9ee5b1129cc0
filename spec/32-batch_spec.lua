-- client:batch on the libcurl transport (issue 5, item 2), against the sandbox over real HTTP on 127.0.0.1:
-- results in the order of the calls, one per call, each exactly what the same call made alone returns; per-item
-- errors that leave the other items alone; calls that really are in flight together, over at most `concurrency`
-- connections of the client's one connection cache; the retry rules of a call made alone (a send is never sent
-- twice); and the rate limiter shared with the client's other calls.
-- (The same batch on cosockets inside nginx is in 60-nginx_spec.lua.)
local core = require "leadconnector.core"
local helpers = require "helpers"
local lch = require "lchelpers"

local S = lch.scale

describe("client:batch #batch", function()
  local sb, client

  lch.suite(function(s, c) sb, client = s, c end)

  local function sms(contact, text)
    return { "send_message", { type = "SMS", contactId = contact, message = text } }
  end

  -- What a call gave, as something busted can compare: a value's fields, or an error's kind and status.
  local function outcome(value, err)
    if value ~= nil then
      local t = core.typeof(value) and value:to_table() or value
      return { ok = true, kind = core.typeof(value) or type(value), value = t }
    end
    return { ok = false, kind = err.kind, status = err.status, request_sent = err.request_sent }
  end

  it("returns one result per call, in the order of the calls, each what the call alone returns", function()
    local calls = {
      { "get_message", "msg_demo_1" },
      { "get_conversation", "conv_demo_2" },
      { "get_message", "msg_demo_3" },
      { "get_message", "no_such_message" },
      { "update_message_status", "msg_demo_2", { status = "read" } },
      { "get_conversation", "conv_demo_3" },
      { "get_message", "msg_demo_5" },
    }
    local results = client:batch(calls, { concurrency = 4 })
    assert.equals(#calls, #results)
    sb:reset() -- the same state again for the calls one by one
    local alone = {
      outcome(client:get_message("msg_demo_1")),
      outcome(client:get_conversation("conv_demo_2")),
      outcome(client:get_message("msg_demo_3")),
      outcome(client:get_message("no_such_message")),
      outcome(client:update_message_status("msg_demo_2", { status = "read" })),
      outcome(client:get_conversation("conv_demo_3")),
      outcome(client:get_message("msg_demo_5")),
    }
    for i = 1, #calls do
      local r = results[i]
      assert.is_table(r, "result " .. i)
      assert.is_true((r.value == nil) ~= (r.err == nil), "result " .. i .. " has exactly one of value and err")
      assert.same(alone[i], outcome(r.value, r.err), "result " .. i)
    end
    assert.equals("Message", core.typeof(results[1].value))
    assert.equals("msg_demo_1", results[1].value.id)
    assert.equals("Conversation", core.typeof(results[2].value))
    assert.equals("conv_demo_2", results[2].value.id)
    assert.equals("not_found", results[4].err.kind)
    assert.equals(404, results[4].err.status)
    assert.equals("GET", results[4].err.method)
    assert.equals("msg_demo_2", results[5].value.messageId)
  end)

  it("sends every message of a batch exactly once, and gives each its own ids", function()
    local calls = {}
    for i = 1, 12 do calls[i] = sms("contact_batch_" .. (i % 3), "batch " .. i) end
    local results = client:batch(calls, { concurrency = 5 })
    local ids = {}
    for i = 1, 12 do
      local r = results[i]
      assert.is_nil(r.err, "send " .. i .. ": " .. tostring(r.err))
      assert.is_string(r.value.messageId)
      assert.is_nil(ids[r.value.messageId], "two sends got one id")
      ids[r.value.messageId] = i
    end
    local stored = 0
    for c = 0, 2 do
      for _, m in ipairs(sb:messages("contact_batch_" .. c)) do
        local i = assert(ids[m.id], "a stored message no result names")
        assert.equals("batch " .. i, m.body) -- result i is the answer to call i
        stored = stored + 1
      end
    end
    assert.equals(12, stored)
    assert.equals(12, #lch.api_requests(sb))
  end)

  it("an invalid call gets its own error, is never sent, and the others go ahead", function()
    local calls = {
      { "get_message", "msg_demo_1" },
      { "send_message", { type = "Pigeon", contactId = "contact_demo_1", message = "x" } },
      { "get_message", "" },
      { "update_message_status", "msg_demo_1", { status = "sideways" } },
      { "get_message", "msg_demo_2", { timeout = -1 } },
      sms("contact_demo_2", "valid"),
    }
    local results = client:batch(calls, { concurrency = 3 })
    assert.equals("msg_demo_1", results[1].value.id)
    for _, i in ipairs { 2, 3, 4, 5 } do
      assert.is_nil(results[i].value, "call " .. i)
      assert.equals("invalid", results[i].err.kind, "call " .. i)
      assert.is_false(results[i].err.request_sent, "call " .. i)
      assert.equals(0, results[i].err.attempts, "call " .. i)
    end
    assert.equals("type", results[2].err.field)
    assert.equals("id", results[3].err.field)
    assert.equals("status", results[4].err.field)
    assert.equals("timeout", results[5].err.field)
    assert.is_string(results[6].value.messageId)
    local reqs = lch.api_requests(sb)
    assert.equals(2, #reqs) -- the two valid calls, nothing else
    local paths = { reqs[1].method .. " " .. reqs[1].path, reqs[2].method .. " " .. reqs[2].path }
    table.sort(paths)
    assert.same({ "GET /conversations/messages/msg_demo_1", "POST /conversations/messages" }, paths)
  end)

  it("an empty batch returns an empty list and sends nothing", function()
    assert.same({}, client:batch({}, { concurrency = 4 }))
    assert.equals(0, #lch.api_requests(sb))
  end)

  it("raises for what is a mistake in the program, not in the data", function()
    assert.has_error(function() client:batch("get_message") end)
    assert.has_error(function() client:batch({ "get_message" }) end) -- an entry that is not a table
    assert.has_error(function() client:batch({ { "delete_everything", "x" } }) end)
    assert.has_error(function() client:batch({ { "get_message", "msg_demo_1" } }, { concurency = 4 }) end)
    assert.has_error(function() client:batch({ { "get_message", "msg_demo_1" } }, { concurrency = "4" }) end)
    assert.has_error(function() client.batch({ { "get_message", "msg_demo_1" } }) end) -- . instead of :
    assert.equals(0, #lch.api_requests(sb)) -- and nothing was sent before it raised
  end)

  it("has the calls in flight together: a slow answer does not hold up the others #slow", function()
    local delay = 0.6 * S
    local n = 6
    sb:fault { method = "GET", path_pattern = "^/conversations/messages/", count = n, delay_ms = math.floor(delay * 1000) }
    local calls = {}
    for i = 1, n do calls[i] = { "get_message", "msg_demo_" .. i % 5 + 1 } end
    local t0 = core.now()
    local results = client:batch(calls, { concurrency = n })
    local took = core.now() - t0
    for i = 1, n do assert.is_nil(results[i].err, "call " .. i .. ": " .. tostring(results[i].err)) end
    -- The server saw every request arrive before it answered the first one (it answers after `delay`).
    local reqs = lch.api_requests(sb)
    assert.equals(n, #reqs)
    local first, last = math.huge, -math.huge
    for _, r in ipairs(reqs) do
      local h, m, sec = r.time:match("T(%d%d):(%d%d):(%d%d%.%d+)Z$") -- the sandbox logs ISO 8601 times, in ms
      local t = tonumber(h) * 3600 + tonumber(m) * 60 + tonumber(sec)
      first, last = math.min(first, t), math.max(last, t)
    end
    if last - first > 43200 then last, first = first + 86400, last end -- the test ran across midnight UTC
    assert.is_true(last - first < delay, ("the requests arrived over %.2f s"):format(last - first))
    assert.is_true(took < n * delay / 2, ("took %.2f s: the calls ran one after another"):format(took))
  end)

  -- The session waits on its sockets itself and tells libcurl which are ready, at most 16 per wait: more answers
  -- ready at once than that must all still be read, on the next waits, none left behind or lost.
  it("reads every answer when 40 come ready together, more than one wait hands to libcurl", function()
    local c = lch.client(sb, { rate_limit = false })
    local n = 40
    sb:fault { method = "GET", path_pattern = "^/conversations/messages/", count = n, delay_ms = math.floor(0.3 * S * 1000) }
    local calls = {}
    for i = 1, n do calls[i] = { "get_message", "msg_demo_" .. i % 5 + 1 } end
    local results = c:batch(calls, { concurrency = n })
    for i = 1, n do
      assert.is_nil(results[i].err, "call " .. i .. ": " .. tostring(results[i].err))
      assert.equals("msg_demo_" .. i % 5 + 1, results[i].value.id)
    end
    assert.equals(n, #lch.api_requests(sb))
    -- and the session goes on as usual after it: a single call, then a batch again
    assert.equals("msg_demo_2", assert(c:get_message("msg_demo_2")).id)
    assert.equals("msg_demo_3", c:batch({ { "get_message", "msg_demo_3" } })[1].value.id)
    c:close()
  end)

  it("concurrency = 1 runs the calls one at a time #slow", function()
    local delay = 0.15 * S
    sb:fault { method = "GET", path_pattern = "^/conversations/messages/", count = 4, delay_ms = math.floor(delay * 1000) }
    local calls = {}
    for i = 1, 4 do calls[i] = { "get_message", "msg_demo_" .. i } end
    local t0 = core.now()
    local results = client:batch(calls, { concurrency = 1 })
    local took = core.now() - t0
    for i = 1, 4 do assert.equals("msg_demo_" .. i, results[i].value.id) end
    assert.is_true(took >= 4 * delay * 0.9, ("took %.2f s for 4 answers of %.2f s each"):format(took, delay))
  end)

  -- The batch's connections are kept between batches (the direct engine's slots, or libcurl's one cache); single
  -- calls keep one of their own: at most `concurrency` + 1, and none new once they exist.
  it("uses at most `concurrency` connections, kept between batches", function()
    local c = lch.client(sb)
    local before = lch.connections_to(sb.port)
    local function mine()
      local set = {}
      for inode in pairs(lch.connections_to(sb.port)) do
        if not before[inode] then set[inode] = true end
      end
      return set
    end
    assert(c:get_message("msg_demo_1")) -- the sequential call's connection
    local first = mine()
    assert.equals(1, lch.count(first))
    local calls = {}
    for i = 1, 40 do calls[i] = { "get_message", "msg_demo_" .. i % 5 + 1 } end
    for _ = 1, 3 do
      local results = c:batch(calls, { concurrency = 4 })
      for i = 1, #calls do assert.is_nil(results[i].err, tostring(results[i].err)) end
    end
    local now = mine()
    local batch_conns = 0
    for inode in pairs(now) do if not first[inode] then batch_conns = batch_conns + 1 end end
    assert.is_true(batch_conns >= 1 and batch_conns <= 4, batch_conns .. " batch connections for concurrency 4")
    for inode in pairs(first) do assert.is_true(now[inode] ~= nil, "the single calls' connection was not kept") end
    local batch_conc1 = c:batch({ { "get_message", "msg_demo_1" } }, { concurrency = 1 })
    assert.is_nil(batch_conc1[1].err)
    assert(c:get_message("msg_demo_2")) -- the sequential call after the batches: no new connection either
    local after = mine()
    for inode in pairs(after) do assert.is_true(now[inode] ~= nil, "a new connection was opened") end
    c:close()
    assert.equals(0, lch.count(mine())) -- close() lets every connection of the client go
  end)

  describe("retries, as for a call made alone", function()
    it("a read that met a 503 is tried again and succeeds", function()
      local c = lch.client(sb, { max_retries = 2 })
      sb:fault { method = "GET", path = "/conversations/messages/msg_demo_3", count = 1, status = 503 }
      local results = c:batch({ { "get_message", "msg_demo_1" }, { "get_message", "msg_demo_3" } }, { concurrency = 2 })
      c:close()
      assert.equals("msg_demo_1", results[1].value.id)
      assert.equals("msg_demo_3", results[2].value.id)
      assert.equals(3, #lch.api_requests(sb))
    end)

    it("a send that met a 503 is not sent again: the message may already be queued", function()
      local c = lch.client(sb, { max_retries = 2 })
      sb:fault { method = "POST", path = "/conversations/messages", count = 1, status = 503, after = true }
      local results = c:batch({ sms("contact_retry_1", "once") }, { concurrency = 2 })
      c:close()
      assert.is_nil(results[1].value)
      assert.equals("server", results[1].err.kind)
      assert.equals(503, results[1].err.status)
      assert.equals(1, results[1].err.attempts)
      assert.equals(1, #sb:messages("contact_retry_1")) -- stored once, by the one request
      assert.equals(1, #lch.api_requests(sb))
    end)

    it("a send refused with 429 is sent again after Retry-After, and stored once", function()
      local c = lch.client(sb, { max_retries = 2 })
      sb:fault { method = "POST", path = "/conversations/messages", count = 1, status = 429, headers = { ["Retry-After"] = "1" } }
      local t0 = core.now()
      local results = c:batch({ sms("contact_retry_2", "after 429"), { "get_message", "msg_demo_1" } }, { concurrency = 2 })
      local took = core.now() - t0
      c:close()
      assert.is_nil(results[1].err, tostring(results[1].err))
      assert.is_string(results[1].value.messageId)
      assert.equals("msg_demo_1", results[2].value.id)
      assert.equals(1, #sb:messages("contact_retry_2"))
      assert.is_true(took >= 0.9, ("took %.2f s: Retry-After: 1 was not honoured"):format(took))
    end)

    it("a call whose answer is slower than its timeout fails alone with kind timeout", function()
      local c = lch.client(sb, { timeout = 0.3 * S })
      sb:fault { method = "GET", path = "/conversations/messages/msg_demo_2", count = 1, delay_ms = math.floor(1500 * S) }
      local results = c:batch({ { "get_message", "msg_demo_1" }, { "get_message", "msg_demo_2" }, { "get_message", "msg_demo_3" } },
        { concurrency = 3 })
      c:close()
      assert.equals("msg_demo_1", results[1].value.id)
      assert.equals("timeout", results[2].err.kind)
      assert.is_true(results[2].err.request_sent)
      assert.equals("msg_demo_3", results[3].value.id)
    end)

    it("an entry's own max_retries and deadline apply to it alone", function()
      local c = lch.client(sb, { max_retries = 2 })
      sb:fault { method = "GET", path = "/conversations/messages/msg_demo_1", count = 1, status = 503 }
      sb:fault { method = "GET", path = "/conversations/messages/msg_demo_2", count = 1, status = 503 }
      sb:fault { method = "GET", path = "/conversations/messages/msg_demo_3", count = 1, delay_ms = math.floor(3000 * S) }
      local t0 = core.now()
      local results = c:batch({
        { "get_message", "msg_demo_1", { max_retries = 0 } }, -- its 503 stands
        { "get_message", "msg_demo_2" },                      -- the batch's max_retries: retried
        { "get_message", "msg_demo_3", { deadline = 0.4 * S } }, -- gives up long before the slow answer
      }, { concurrency = 3 })
      local took = core.now() - t0
      c:close()
      assert.equals("server", results[1].err.kind)
      assert.equals(503, results[1].err.status)
      assert.equals(1, results[1].err.attempts)
      assert.equals("msg_demo_2", results[2].value.id)
      assert.equals("timeout", results[3].err.kind)
      assert.equals(1, results[3].err.attempts)
      assert.is_true(took < 2.5 * S, ("took %.2f s: the entry's deadline was not kept"):format(took))
    end)

    it("a connection dropped without an answer fails that send as request_sent, never resent", function()
      local c = lch.client(sb, { max_retries = 3 })
      sb:fault { method = "POST", path = "/conversations/messages", count = 1, action = "drop", after = true }
      local results = c:batch({ sms("contact_retry_3", "dropped"), sms("contact_retry_4", "fine") }, { concurrency = 2 })
      c:close()
      local dropped, fine = results[1], results[2]
      assert.equals("network", dropped.err.kind)
      assert.is_true(dropped.err.request_sent)
      assert.equals(1, #sb:messages("contact_retry_3")) -- processed once by the server, never sent again
      assert.is_string(fine.value.messageId)
      assert.equals(1, #sb:messages("contact_retry_4"))
    end)
  end)
end)

describe("client:batch and the rate limiter #batch #ratelimit", function()
  local LIMIT, INTERVAL_MS = 5, 700
  local sb

  lazy_setup(function()
    sb = helpers.start_sandbox { tokens = { "batch-rl-1@loc_brl_1", "batch-rl-2@loc_brl_2" }, rate_limit = LIMIT,
      rate_interval_ms = INTERVAL_MS }
  end)

  lazy_teardown(function()
    if sb then sb:stop() end
  end)

  it("never sends more than the window allows: a batch larger than the budget waits, and meets no 429", function()
    local c = lch.client(sb, { token = "batch-rl-1", max_retries = 0 })
    assert(c:send_message { type = "SMS", contactId = "contact_brl", message = "first" }) -- the client learns the budget
    local calls = {}
    for i = 1, 5 * LIMIT do calls[i] = { "send_message", { type = "SMS", contactId = "contact_brl", message = "m" .. i } } end
    local t0 = core.now()
    local results = c:batch(calls, { concurrency = 8 })
    local took = core.now() - t0
    c:close()
    for i = 1, #calls do assert.is_nil(results[i].err, "call " .. i .. ": " .. tostring(results[i].err)) end
    assert.equals(1 + 5 * LIMIT, #sb:messages("contact_brl")) -- each sent once
    local n429 = 0
    for _, r in ipairs(lch.api_requests(sb)) do
      if r.status == 429 then n429 = n429 + 1 end
    end
    assert.equals(0, n429)
    -- 1 + 25 requests through windows of 5: at least five waits for a new window
    assert.is_true(took >= 4 * INTERVAL_MS / 1000 * 0.9, ("took %.2f s"):format(took))
  end)

  it("shares the budget with the client's other calls and with other clients of the token", function()
    local a = lch.client(sb, { token = "batch-rl-2", max_retries = 0 })
    local b = lch.client(sb, { token = "batch-rl-2", max_retries = 0 })
    local sent = assert(a:send_message { type = "SMS", contactId = "contact_brl_2", message = "x" })
    for _ = 2, LIMIT do assert(a:get_message(sent.messageId)) end -- a spends the whole window
    local rl = b:rate_limit()
    assert.is_true(rl.wait > 0, "b does not know the window is spent")
    local t0 = core.now()
    local results = b:batch({ { "get_message", sent.messageId }, { "get_conversation", sent.conversationId } },
      { concurrency = 2 })
    local took = core.now() - t0
    a:close()
    b:close()
    assert.is_nil(results[1].err, tostring(results[1].err))
    assert.equals(sent.messageId, results[1].value.id)
    assert.equals(sent.conversationId, results[2].value.id)
    assert.is_true(took >= INTERVAL_MS / 1000 * 0.5, ("took %.2f s: the batch did not wait for the window"):format(took))
  end)
end)

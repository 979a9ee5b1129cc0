-- The four endpoints end to end over real HTTP on 127.0.0.1 against the sandbox (API.md §1 and §2): what the
-- server received (body, headers), what the library gave back, and that one client keeps one connection.
local core = require "leadconnector.core"
local leadconnector = require "leadconnector"
local lch = require "lchelpers"

local TYPES = { "SMS", "RCS", "Email", "WhatsApp", "IG", "FB", "Custom", "Live_Chat", "TIKTOK" }

describe("client against the sandbox", function()
  local sb, client

  lch.suite(function(s, c) sb, client = s, c end)

  local function last_request()
    local reqs = sb:requests()
    return reqs[#reqs], #reqs
  end

  -- The stored message as the sandbox holds it (its own answer shape), found by id.
  local function stored(contact, id)
    for _, m in ipairs(sb:messages(contact)) do
      if m.id == id then return m end
    end
  end

  describe("send_message", function()
    for _, ty in ipairs(TYPES) do
      it("sends a " .. ty .. " message and reads it back", function()
        local contact = "contact_t_" .. ty
        local text = "hello " .. ty .. "\nsecond line"
        local sent, err = client:send_message { type = ty, contactId = contact, message = text }
        assert.is_nil(err)
        assert.equals("table", type(sent))
        assert.is_string(sent.messageId)
        assert.is_string(sent.conversationId)
        assert.equals("pending", sent.status)
        assert.is_string(sent.msg)
        local req = last_request()
        assert.equals("POST", req.method)
        assert.equals("/conversations/messages", req.path)
        assert.same({ type = ty, contactId = contact, message = text }, req.body)
        assert.equals(201, req.status)

        local msg = assert(client:get_message(sent.messageId))
        assert.equals(sent.messageId, msg.id)
        assert.equals(sent.conversationId, msg.conversationId)
        assert.equals(contact, msg.contactId)
        assert.equals(text, msg.body)
        assert.equals("outbound", msg.direction)
        assert.is_truthy(tostring(msg.messageType):find("^TYPE_"))
        assert.is_true(lch.is_integer(msg.type))
        -- the object holds exactly what the server has
        assert.same(stored(contact, sent.messageId), msg:to_table())
      end)
    end

    it("Email field group", function()
      local fields = {
        type = "Email", contactId = "contact_demo_2", subject = "Invoice 1002", html = "<p>Attached.</p>",
        emailFrom = "billing@x.test", emailTo = "ada@x.test", emailCc = { "cc1@x.test", "cc2@x.test" },
        emailBcc = {}, emailReplyMode = "reply_all", threadId = "thread_1", replyMessageId = "msg_demo_4",
        attachments = { "https://x.test/invoice-1002.pdf" }, templateId = "tpl_1", subType = "Email",
      }
      local sent = assert(client:send_message(fields))
      assert.is_string(sent.emailMessageId)
      assert.equals("conv_demo_2", sent.conversationId)
      local req = last_request()
      assert.same(fields, req.body)
      assert.is_truthy(req.raw_body:find('"emailBcc":[]', 1, true))
      local msg = assert(client:get_message(sent.messageId))
      assert.equals("TYPE_EMAIL", msg.messageType)
      assert.equals("<p>Attached.</p>", msg.body)
      assert.equals("text/html", msg.contentType)
      assert.same({ "https://x.test/invoice-1002.pdf" }, msg.attachments)
      assert.same({ sent.emailMessageId }, msg.meta.email.messageIds)
      assert.equals("Invoice 1002", msg.meta.email.subject)
    end)

    it("scheduling field group", function()
      local at = 4102444800 -- 2100-01-01, an integer
      local fields = { type = "SMS", contactId = "contact_demo_1", message = "later", scheduledTimestamp = at,
        usesNativeSchedulingAi = false, optimizationPeriod = "48h" }
      local sent = assert(client:send_message(fields))
      local req = last_request()
      assert.same(fields, req.body)
      assert.is_false(req.body.usesNativeSchedulingAi)
      assert.is_truthy(req.raw_body:find('"scheduledTimestamp":4102444800[,}]'), req.raw_body)
      local msg = assert(client:get_message(sent.messageId))
      assert.equals("scheduled", msg.status)
      assert.equals(at, msg.meta.scheduledTimestamp)
      assert.is_true(lch.is_integer(msg.meta.scheduledTimestamp))
    end)

    it("forward field group", function()
      local fields = { type = "Email", contactId = "contact_demo_2", message = "fwd", forward = {
        isForwarded = true, forwardWholeThread = false, messageId = "msg_demo_3", emailMessageId = "emsg_demo_3",
        sourceContactId = "contact_demo_2", sourceConversationId = "conv_demo_2", toEmail = "boss@x.test",
        recipientContactId = "contact_demo_1", recipientConversationId = "conv_demo_1" } }
      assert(client:send_message(fields))
      local req = last_request()
      assert.same(fields, req.body)
      assert.is_false(req.body.forward.forwardWholeThread)
    end)

    it("provider field group and an explicit status", function()
      local fields = { type = "Custom", contactId = "contact_demo_1", message = "via provider",
        conversationProviderId = "provider_sandbox", customSubtypeId = "sub_1", fromNumber = "+15550100",
        toNumber = "+15550199", appointmentId = "appt_1", status = "delivered" }
      local sent = assert(client:send_message(fields))
      assert.equals("delivered", sent.status)
      assert.same(fields, last_request().body)
      local msg = assert(client:get_message(sent.messageId))
      assert.equals("provider_sandbox", msg.conversationProviderId)
      assert.equals("delivered", msg.status)
    end)

    it("a large message (2 MB) goes out whole", function()
      local text = ("0123456789abcdef"):rep(2 * 65536) .. "\226\130\172"
      local sent = assert(client:send_message { type = "Email", contactId = "contact_demo_2", html = text })
      local req = last_request()
      assert.equals(#req.raw_body, tonumber(req.headers["content-length"]))
      assert.equals(text, req.body.html)
      assert.equals(text, assert(client:get_message(sent.messageId)).body)
    end)

    it("passes through answer fields: messageIds, forwardData and ones added later", function()
      sb:fault { method = "POST", path = "/conversations/messages", status = 201, body = {
        conversationId = "conv_x", messageId = "m1", messageIds = { "m1", "m2" }, msg = "ok",
        forwardData = { forwarded = true }, newThing = 3 } }
      local sent = assert(client:send_message { type = "SMS", contactId = "c", message = "x" })
      assert.equals("m1", sent.messageId)
      assert.same({ "m1", "m2" }, sent.messageIds)
      assert.same({ forwarded = true }, sent.forwardData)
      assert.equals(3, sent.newThing)
    end)
  end)

  describe("get_message", function()
    it("reads every field of a seeded email, nested meta included", function()
      local m = assert(client:get_message("msg_demo_3"))
      assert.equals("Message", leadconnector.typeof(m))
      assert.equals("msg_demo_3", m.id)
      assert.equals(3, m.type)
      assert.is_true(lch.is_integer(m.type))
      assert.equals("TYPE_EMAIL", m.messageType)
      assert.equals("loc_sandbox", m.locationId)
      assert.equals("contact_demo_2", m.contactId)
      assert.equals("conv_demo_2", m.conversationId)
      assert.equals("2024-03-28T09:00:00.000Z", m.dateAdded)
      assert.equals("<p>Your invoice is attached.</p>", m.body)
      assert.equals("outbound", m.direction)
      assert.equals("delivered", m.status)
      assert.equals("text/html", m.contentType)
      assert.same({ "https://example.com/sandbox/invoice-1001.pdf" }, m.attachments)
      assert.same({ "emsg_demo_3" }, m.meta.email.messageIds)
      assert.equals("Invoice 1001", m.meta.email.subject)
      assert.equals("app", m.source)
      assert.equals("user_demo_1", m.userId)
      local req = last_request()
      assert.equals("GET", req.method)
      assert.equals("/conversations/messages/msg_demo_3", req.path)
    end)

    it("an empty attachments array reads as an empty table", function()
      local m = assert(client:get_message("msg_demo_1"))
      assert.same({}, m.attachments)
      assert.same({}, m.meta)
      assert.equals("TYPE_SMS", m.messageType)
      assert.equals(2, m.type)
    end)

    it("reads call meta (callDuration a number, callStatus)", function()
      sb:fault { method = "GET", path = "/conversations/messages/call_1", status = 200, body = {
        id = "call_1", type = 1, messageType = "TYPE_CALL", direction = "inbound", status = "delivered",
        meta = { callDuration = 67, callStatus = "completed" } } }
      local m = assert(client:get_message("call_1"))
      assert.equals(67, m.meta.callDuration)
      assert.equals("completed", m.meta.callStatus)
    end)
  end)

  describe("update_message_status", function()
    it("marks an inbound message read and the conversation's unreadCount follows", function()
      assert.equals(1, assert(client:get_conversation("conv_demo_1")).unreadCount)
      local r, err = client:update_message_status("msg_demo_2", { status = "read" })
      assert.is_nil(err)
      assert.equals("table", type(r))
      assert.equals("msg_demo_2", r.messageId)
      assert.equals("conv_demo_1", r.conversationId)
      assert.equals("read", r.status)
      local req = last_request()
      assert.equals("PUT", req.method)
      assert.equals("/conversations/messages/msg_demo_2/status", req.path)
      assert.same({ status = "read" }, req.body)
      assert.equals("read", assert(client:get_message("msg_demo_2")).status)
      local conv = assert(client:get_conversation("conv_demo_1"))
      assert.equals(0, conv.unreadCount)
      assert.is_true(lch.is_integer(conv.unreadCount))
      assert(client:update_message_status("msg_demo_2", { status = "delivered" }))
      assert.equals(1, assert(client:get_conversation("conv_demo_1")).unreadCount)
    end)

    it("sends a provider error", function()
      local e = { code = "30007", type = "carrier", message = "Message filtered" }
      local r = assert(client:update_message_status("msg_demo_1", { status = "failed", error = e }))
      assert.equals("failed", r.status)
      assert.same({ status = "failed", error = e }, last_request().body)
      local m = assert(client:get_message("msg_demo_1"))
      assert.equals("failed", m.status)
      assert.same(e, m.meta.error)
    end)

    it("sends recipients as objects and as strings, and emailMessageId", function()
      local recips = { { emailId = "ada@x.test", status = "delivered" }, { emailId = "bob@x.test", status = "opened" } }
      local r = assert(client:update_message_status("msg_demo_3",
        { status = "delivered", emailMessageId = "emsg_demo_3", recipients = recips }))
      assert.equals("emsg_demo_3", r.emailMessageId)
      assert.same({ status = "delivered", emailMessageId = "emsg_demo_3", recipients = recips }, last_request().body)
      assert.same(recips, assert(client:get_message("msg_demo_3")).meta.recipients)

      assert(client:update_message_status("msg_demo_3", { status = "read", recipients = { "ada@x.test" } }))
      assert.same({ "ada@x.test" }, last_request().body.recipients)
      assert.same({ "ada@x.test" }, assert(client:get_message("msg_demo_3")).meta.recipients)
    end)

    it("an unknown message is not_found", function()
      local r, err = client:update_message_status("no_such_msg", { status = "read" })
      assert.is_nil(r)
      assert.equals("not_found", err.kind)
      assert.equals(404, err.status)
    end)
  end)

  describe("get_conversation", function()
    it("reads every field", function()
      local c = assert(client:get_conversation("conv_demo_3"))
      assert.equals("Conversation", leadconnector.typeof(c))
      assert.equals("conv_demo_3", c.id)
      assert.equals("contact_demo_3", c.contactId)
      assert.equals("loc_sandbox", c.locationId)
      assert.is_false(c.deleted)
      assert.is_true(c.inbox)
      assert.equals(3, c.type)
      assert.is_true(lch.is_integer(c.type))
      assert.equals(1, c.unreadCount)
      assert.equals("user_demo_1", c.assignedTo)
      assert.is_true(c.starred)
      local req = last_request()
      assert.equals("GET", req.method)
      assert.equals("/conversations/conv_demo_3", req.path)
    end)

    it("an email conversation with nothing unread", function()
      local c = assert(client:get_conversation("conv_demo_2"))
      assert.equals(2, c.type)
      assert.equals(0, c.unreadCount)
      assert.is_false(c.starred)
      assert.is_nil(c.assignedTo)
    end)

    it("a send to a new contact starts a conversation that can be read", function()
      local sent = assert(client:send_message { type = "FB", contactId = "contact_new_fb", message = "hi" })
      local c = assert(client:get_conversation(sent.conversationId))
      assert.equals(sent.conversationId, c.id)
      assert.equals("contact_new_fb", c.contactId)
      assert.equals(3, c.type)
      assert.equals(0, c.unreadCount)
    end)
  end)

  describe("headers the server saw", function()
    local UA_PATTERN = "^leadconnector%-lua/([^ ]+) %((.-); libcurl/([^)]+)%)$"

    local function check_common(req, version)
      local h = req.headers
      assert.equals("Bearer [redacted]", h.authorization) -- the sandbox redacts the token in its log
      assert.equals(version, h.version)
      assert.equals("application/json", h.accept)
      assert.is_nil(h.expect)
      local ua_v, lua_v, curl_v = h["user-agent"]:match(UA_PATTERN)
      assert.equals(core.version, ua_v)
      assert.equals(leadconnector._VERSION, ua_v)
      assert.equals((type(jit) == "table" and jit.version) or _VERSION, lua_v)
      assert.equals((core.curl_version()), curl_v)
    end

    it("on all four calls, Content-Type only with a body", function()
      local sent = assert(client:send_message { type = "SMS", contactId = "contact_demo_1", message = "h" })
      assert(client:get_message(sent.messageId))
      assert(client:update_message_status(sent.messageId, { status = "delivered" }))
      assert(client:get_conversation(sent.conversationId))
      local reqs = sb:requests()
      assert.equals(4, #reqs)
      for i, req in ipairs(reqs) do
        check_common(req, "2021-04-15")
        if i == 1 or i == 3 then
          assert.equals("application/json", req.headers["content-type"])
          assert.equals(tostring(#req.raw_body), req.headers["content-length"])
        else
          assert.is_nil(req.headers["content-type"])
          assert.is_nil(req.raw_body)
        end
      end
    end)

    it("the token the client holds is the one sent: a wrong one gets 401", function()
      local other = lch.client(sb, { token = "not-the-sandbox-token" })
      local m, err = other:get_message("msg_demo_1")
      other:close()
      assert.is_nil(m)
      assert.equals("auth", err.kind)
      assert(client:get_message("msg_demo_1"))
    end)

    it("Version: per client, and per call over it", function()
      local c28 = lch.client(sb, { version = "2021-07-28" })
      assert(c28:get_message("msg_demo_1"))
      assert(c28:send_message({ type = "SMS", contactId = "contact_demo_1", message = "v" }))
      assert(c28:get_conversation("conv_demo_1", { version = "2021-04-15" }))
      assert(c28:get_conversation("conv_demo_1"))
      assert(client:update_message_status("msg_demo_2", { status = "read" }, { version = "2021-07-28" }))
      assert(client:send_message({ type = "SMS", contactId = "contact_demo_1", message = "v" }, { version = "2021-07-28" }))
      assert(client:get_message("msg_demo_2"))
      c28:close()
      local got = {}
      for i, req in ipairs(sb:requests()) do
        check_common(req, req.headers.version)
        got[i] = req.headers.version
      end
      assert.same({ "2021-07-28", "2021-07-28", "2021-04-15", "2021-07-28", "2021-07-28", "2021-07-28", "2021-04-15" },
        got)
      -- the per-call PUT and POST still carried their body headers
      assert.equals("application/json", sb:requests()[5].headers["content-type"])
      assert.equals("application/json", sb:requests()[6].headers["content-type"])
    end)

    it("User-Agent: the application's own name comes first", function()
      local c = lch.client(sb, { user_agent = "acme-crm/2.3" })
      assert(c:get_message("msg_demo_1"))
      c:close()
      local ua = last_request().headers["user-agent"]
      assert.equals("acme-crm/2.3 ", ua:sub(1, 13))
      assert.is_truthy(ua:sub(14):find(UA_PATTERN), ua)
    end)
  end)

  describe("keep-alive", function()
    it("many calls on one client reuse one connection; a new client opens another", function()
      local before = lch.connections_to(sb.port) -- other clients' idle connections, if any
      local c = lch.client(sb)
      local seen = {}
      local function sample()
        for inode in pairs(lch.connections_to(sb.port)) do
          if not before[inode] then seen[inode] = true end
        end
      end
      local sent = assert(c:send_message { type = "SMS", contactId = "contact_demo_1", message = "k" })
      sample()
      assert.equals(1, lch.count(seen))
      for i = 1, 8 do
        assert(c:get_message(sent.messageId))
        sample()
        assert(c:update_message_status(sent.messageId, { status = i % 2 == 0 and "read" or "delivered" }))
        sample()
        assert(c:get_conversation(sent.conversationId))
        sample()
        assert(c:send_message { type = "Email", contactId = "contact_demo_2", message = "k" .. i })
        sample()
      end
      assert.equals(1, lch.count(seen))
      assert.equals(33, #sb:requests())
      c:close()
      local after = {}
      for inode in pairs(lch.connections_to(sb.port)) do
        if not before[inode] then after[inode] = true end
      end
      assert.equals(0, lch.count(after)) -- close() let the connection go

      local c2 = lch.client(sb)
      assert(c2:get_message("msg_demo_1"))
      local fresh = {}
      for inode in pairs(lch.connections_to(sb.port)) do
        if not before[inode] and not seen[inode] then fresh[inode] = true end
      end
      c2:close()
      assert.equals(1, lch.count(fresh)) -- the method does see a new connection
    end)

    it("a connection the server closed while idle is replaced, for a send too", function()
      local port, wait = lch.closing_server(3)
      assert(port, "the test server did not start")
      local c = lch.client(sb, { base_url = "http://127.0.0.1:" .. port, rate_limit = false })
      for i = 1, 3 do
        local sent, err = c:send_message { type = "SMS", contactId = "c", message = "after idle " .. i }
        assert.is_nil(err)
        assert.equals("m" .. i, sent.messageId) -- answered on connection i: the old one was closed meanwhile
        require("socket").sleep(0.4) -- the server closes 50 ms after answering
      end
      c:close()
      wait()
    end)

    it("a base_url with a trailing slash gives the same paths", function()
      local c = lch.client(sb, { base_url = sb.url .. "/" })
      assert(c:get_message("msg_demo_1"))
      c:close()
      assert.equals("/conversations/messages/msg_demo_1", last_request().path)
    end)

    it("#lua54only a client in a <close> variable is closed when the scope ends", function()
      local fn = assert(load([[
        local lch, sb = ...
        local kept
        do
          local c <close> = lch.client(sb)
          assert(c:get_message("msg_demo_1"))
          kept = c
        end
        return kept
      ]]))
      local before = lch.count(lch.connections_to(sb.port))
      local c = fn(lch, sb)
      assert.has_error(function() c:get_message("msg_demo_1") end)
      assert.is_true(lch.count(lch.connections_to(sb.port)) <= before)
    end)

    it("a closed client raises on use", function()
      local c = lch.client(sb)
      c:close()
      c:close() -- idempotent
      assert.has_error(function() c:get_message("msg_demo_1") end)
    end)
  end)

  describe("rate_limit()", function()
    it("reports the last X-RateLimit-* values the server sent", function()
      local c = lch.client(sb)
      assert.same({ wait = 0 }, c:rate_limit())
      assert(c:get_message("msg_demo_1"))
      local rl = c:rate_limit()
      c:close()
      assert.equals(100, rl.max)
      assert.equals(100, rl.remaining) -- limits are off in this sandbox: remaining stays full
      assert.equals(10000, rl.interval_ms)
      assert.equals(200000, rl.daily_limit)
      assert.equals(200000, rl.daily_remaining)
      -- the limiter counts this process's own sends of the last 10 s (every test of this file used the token):
      -- a server that says "100 left" does not make it forget them
      assert.is_true(rl.wait >= 0 and rl.wait <= 10.1, tostring(rl.wait))
    end)
  end)

  describe("rate limiting", function()
    it("waits for the next window instead of running into a 429", function()
      sb:config { rate_limit = 2, rate_interval_ms = 300 }
      finally(function() sb:config { rate_limit = false } end)
      local c = lch.client(sb)
      local t0 = core.now()
      for _ = 1, 5 do assert(c:get_message("msg_demo_1")) end
      local took = core.now() - t0
      c:close()
      local statuses = {}
      for i, r in ipairs(sb:requests()) do statuses[i] = r.status end
      assert.same({ 200, 200, 200, 200, 200 }, statuses)
      assert.is_true(took >= 0.55, "took " .. took) -- two full windows waited out
    end)
  end)

  it("tostring(client) names the endpoint, not the token", function()
    local s = tostring(client)
    assert.is_truthy(s:find(sb.url, 1, true))
    assert.is_nil(s:find(sb.token, 1, true))
    assert.is_nil(s:find("[\r\n]"))
  end)
end)

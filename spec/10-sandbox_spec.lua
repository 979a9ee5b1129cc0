-- The sandbox (bin/leadconnector-sandbox), over real HTTP on 127.0.0.1.
local helpers = require "helpers"
local cjson = require "cjson"
local socket = require "socket"

local ISO_MS = "^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d%d%dZ$"
local JSON_CT = "application/json; charset=utf-8"

local function contains(list, s)
  for _, v in ipairs(list) do if v == s then return true end end
  return false
end

local function tmpname()
  local p = os.tmpname()
  os.remove(p)
  return p
end

describe("sandbox", function()
  local sb

  helpers.sandbox_suite(function(s) sb = s end,
    { rate_limit = false, tokens = { "sandbox-token", "other-token@loc_other" } },
    { rate_limit = false, rate_interval_ms = 10000, daily_limit = 200000 })

  local function send(body, headers)
    return sb:request("POST", "/conversations/messages", body, headers)
  end

  describe("launcher", function()
    it("printed a loopback URL and the first token", function()
      assert.matches("^http://127%.0%.0%.1:%d+$", sb.url)
      assert.equals("sandbox-token", sb.token)
      assert.is_true(sb.port > 0)
      assert.is_true(helpers.alive(sb.pid))
    end)

    it("documents every option in --help", function()
      local p = io.popen(helpers.CLEAN_ENV .. " " .. helpers.sandbox_bin() .. " --help; echo rc=$?")
      local text = p:read("*a")
      p:close()
      for _, opt in ipairs({ "--host", "--port", "--token", "--state", "--rate-limit", "--rate-interval-ms",
        "--no-rate-limit", "--daily-limit", "--prefix", "--max-messages", "--exit-with", "--remove-prefix" }) do
        assert.truthy(text:find(opt, 1, true), "missing in --help: " .. opt)
      end
      assert.matches("rc=0\n$", text)
    end)

    it("refuses an unknown option", function()
      local p = io.popen(helpers.CLEAN_ENV .. " " .. helpers.sandbox_bin() .. " --no-such-option 2>&1; echo rc=$?")
      local text = p:read("*a")
      p:close()
      assert.matches("unknown option: %-%-no%-such%-option", text)
      assert.matches("rc=2", text)
    end)

    it("keeps a connection alive across requests (HTTP/1.1)", function()
      local c = assert(socket.connect("127.0.0.1", sb.port))
      c:settimeout(5)
      local statuses = {}
      for i = 1, 3 do
        assert(c:send("GET /conversations/messages/msg_demo_" .. i .. " HTTP/1.1\r\nHost: x\r\n" ..
          "Authorization: Bearer sandbox-token\r\nVersion: 2021-04-15\r\n\r\n"))
        local status = assert(c:receive("*l"))
        local len
        while true do
          local line = assert(c:receive("*l"))
          if line == "" then break end
          len = len or tonumber(line:match("^[Cc]ontent%-[Ll]ength:%s*(%d+)"))
          assert.is_nil(line:lower():match("^connection:%s*close"))
        end
        local body = cjson.decode((assert(c:receive(len))))
        statuses[i] = status:match("%d%d%d") .. " " .. body.id
      end
      c:close()
      assert.same({ "200 msg_demo_1", "200 msg_demo_2", "200 msg_demo_3" }, statuses)
    end)
  end)

  describe("get message", function()
    it("answers a seeded message with every field of the spec", function()
      local status, m, h, raw = sb:request("GET", "/conversations/messages/msg_demo_2")
      assert.equals(200, status)
      assert.equals(JSON_CT, h["content-type"])
      assert.equals("msg_demo_2", m.id)
      assert.equals(2, m.type)
      assert.equals("TYPE_SMS", m.messageType)
      assert.equals("loc_sandbox", m.locationId)
      assert.equals("contact_demo_1", m.contactId)
      assert.equals("conv_demo_1", m.conversationId)
      assert.equals("2024-03-27T18:20:02.000Z", m.dateAdded)
      assert.equals("Yes please, is Friday at 10 possible?", m.body)
      assert.equals("inbound", m.direction)
      assert.equals("delivered", m.status)
      assert.equals("text/plain", m.contentType)
      assert.equals("table", type(m.meta))
      assert.truthy(raw:find('"attachments":[]', 1, true), raw)
      assert.truthy(raw:find('"meta":{}', 1, true), raw)
      assert.truthy(raw:find('"contentType":"text/plain"', 1, true), "slashes must not be escaped: " .. raw)
    end)

    it("answers 404 with the API's body for an unknown id", function()
      local status, body, h = sb:request("GET", "/conversations/messages/nope")
      assert.equals(404, status)
      assert.equals(JSON_CT, h["content-type"])
      assert.same({ statusCode = 404, message = "Message not found", error = "Not Found" }, body)
    end)

    it("decodes a percent-encoded id as one path segment", function()
      local status, body = sb:request("GET", "/conversations/messages/msg_demo_1%2Fstatus")
      assert.equals(404, status)
      assert.equals("Message not found", body.message)
      status, body = sb:request("GET", "/conversations/messages/msg%5Fdemo%5F1")
      assert.equals(200, status)
      assert.equals("msg_demo_1", body.id)
    end)
  end)

  describe("send message", function()
    it("stores the message in a new conversation and answers 201 like the API", function()
      local status, r, h = send({ type = "SMS", contactId = "contact_new", message = "Hello there" })
      assert.equals(201, status)
      assert.equals(JSON_CT, h["content-type"])
      assert.matches("^%w+$", r.messageId)
      assert.equals(20, #r.messageId)
      assert.matches("^%w+$", r.conversationId)
      assert.equals("pending", r.status)
      assert.equals("Message queued successfully.", r.msg)
      assert.is_nil(r.emailMessageId)

      local s2, m = sb:request("GET", "/conversations/messages/" .. r.messageId)
      assert.equals(200, s2)
      assert.equals(r.messageId, m.id)
      assert.equals(r.conversationId, m.conversationId)
      assert.equals("contact_new", m.contactId)
      assert.equals("loc_sandbox", m.locationId)
      assert.equals("Hello there", m.body)
      assert.equals("outbound", m.direction)
      assert.equals("pending", m.status)
      assert.equals("TYPE_SMS", m.messageType)
      assert.equals(2, m.type)
      assert.equals("api", m.source)
      assert.equals("text/plain", m.contentType)
      assert.matches(ISO_MS, m.dateAdded)

      local s3, c = sb:request("GET", "/conversations/" .. r.conversationId)
      assert.equals(200, s3)
      assert.same({
        id = r.conversationId, contactId = "contact_new", locationId = "loc_sandbox", deleted = false,
        inbox = true, type = 1, unreadCount = 0, starred = false,
      }, c)
    end)

    it("puts a contact's messages in one conversation", function()
      local _, a = send({ type = "SMS", contactId = "contact_demo_1", message = "one" })
      local _, b = send({ type = "WhatsApp", contactId = "contact_demo_1", message = "two" })
      assert.equals("conv_demo_1", a.conversationId)
      assert.equals("conv_demo_1", b.conversationId)
      local bodies = {}
      for _, m in ipairs(sb:messages("contact_demo_1")) do bodies[#bodies + 1] = m.body end
      assert.same({ "Hi Ada, thanks for your enquiry! Would you like to book a visit?",
        "Yes please, is Friday at 10 possible?", "one", "two" }, bodies)
    end)

    local channels = {
      { "SMS", "TYPE_SMS", 2, 1 }, { "RCS", "TYPE_RCS", 42, 1 }, { "Email", "TYPE_EMAIL", 3, 2 },
      { "WhatsApp", "TYPE_WHATSAPP", 19, 1 }, { "IG", "TYPE_INSTAGRAM", 18, 3 }, { "FB", "TYPE_FACEBOOK", 11, 3 },
      { "Custom", "TYPE_CUSTOM_PROVIDER_SMS", 22, 1 }, { "Live_Chat", "TYPE_LIVE_CHAT", 29, 1 },
      { "TIKTOK", "TYPE_TIKTOK", 37, 1 },
    }
    for _, ch in ipairs(channels) do
      it("maps type " .. ch[1] .. " to " .. ch[2] .. " and a type " .. ch[4] .. " conversation", function()
        local contact = "contact_" .. ch[1]
        local status, r = send({ type = ch[1], contactId = contact, message = "hi", subject = "s" })
        assert.equals(201, status)
        local _, m = sb:request("GET", "/conversations/messages/" .. r.messageId)
        assert.equals(ch[2], m.messageType)
        assert.equals(ch[3], m.type)
        local _, c = sb:request("GET", "/conversations/" .. r.conversationId)
        assert.equals(ch[4], c.type)
        if ch[1] == "Email" then
          assert.matches("^%w+$", r.emailMessageId)
          assert.same({ r.emailMessageId }, m.meta.email.messageIds)
        else
          assert.is_nil(r.emailMessageId)
        end
      end)
    end

    it("accepts a send without subType and status, and keeps the ones given", function()
      local status = send({ type = "SMS", contactId = "c1" })
      assert.equals(201, status)
      local s2, r = send({ type = "Email", subType = "Email", contactId = "c1", status = "delivered",
        html = "<p>Hi</p>", attachments = { "https://example.com/a.pdf" } })
      assert.equals(201, s2)
      assert.equals("delivered", r.status)
      local _, m = sb:request("GET", "/conversations/messages/" .. r.messageId)
      assert.equals("delivered", m.status)
      assert.equals("<p>Hi</p>", m.body)
      assert.equals("text/html", m.contentType)
      assert.same({ "https://example.com/a.pdf" }, m.attachments)
    end)

    it("keeps an empty attachments list as []", function()
      local _, r = send('{"type":"SMS","contactId":"c1","message":"x","attachments":[]}')
      local _, _, _, raw = sb:request("GET", "/conversations/messages/" .. r.messageId)
      assert.truthy(raw:find('"attachments":[]', 1, true), raw)
    end)

    it("answers 422 with an array of class-validator messages", function()
      local status, body, h = send({
        type = "Fax", contactId = 5, attachments = "a.pdf", emailCc = { 1 }, scheduledTimestamp = "soon",
        usesNativeSchedulingAi = "no", status = "sent", emailReplyMode = "all", optimizationPeriod = "12h",
        forward = { forwardWholeThread = "yes" },
      })
      assert.equals(422, status)
      assert.equals(JSON_CT, h["content-type"])
      assert.equals(422, body.statusCode)
      assert.equals("Unprocessable Entity", body.error)
      assert.equals("table", type(body.message))
      local expected = {
        "type must be one of the following values: SMS, RCS, Email, WhatsApp, IG, FB, Custom, Live_Chat, TIKTOK",
        "contactId must be a string",
        "attachments must be an array",
        "each value in emailCc must be a string",
        "scheduledTimestamp must be a number conforming to the specified constraints",
        "emailReplyMode must be one of the following values: reply, reply_all",
        "forward.isForwarded should not be empty",
        "forward.forwardWholeThread must be a boolean value",
        "status must be one of the following values: delivered, failed, pending, read",
        "usesNativeSchedulingAi must be a boolean value",
        "optimizationPeriod must be one of the following values: 24h, 48h, 72h",
      }
      for _, msg in ipairs(expected) do
        assert.is_true(contains(body.message, msg), "missing: " .. msg .. " in " .. cjson.encode(body.message))
      end
      assert.equals(6, #sb:messages()) -- the seed's, nothing more
    end)

    it("requires type and contactId", function()
      local status, body = send({})
      assert.equals(422, status)
      assert.is_true(contains(body.message, "type should not be empty"))
      assert.is_true(contains(body.message, "contactId should not be empty"))
      status, body = send({ type = "SMS", contactId = "" })
      assert.equals(422, status)
      assert.same({ "contactId should not be empty" }, body.message)
    end)

    it("treats JSON null as absent", function()
      local status = send('{"type":"SMS","contactId":"c1","message":null,"status":null}')
      assert.equals(201, status)
      status = send('{"type":null,"contactId":"c1"}')
      assert.equals(422, status)
    end)

    it("answers 400 for a body that is not JSON, or not an object", function()
      local status, body = send('{"type": "SMS",')
      assert.equals(400, status)
      assert.equals(400, body.statusCode)
      assert.equals("string", type(body.message))
      status, body = send('["SMS"]')
      assert.equals(400, status)
      assert.equals("Request body must be a JSON object", body.message)
    end)

    it("does not read a body sent without a JSON Content-Type", function()
      local status, body = send('{"type":"SMS","contactId":"c1"}', { ["Content-Type"] = "text/plain" })
      assert.equals(422, status)
      assert.is_true(contains(body.message, "contactId should not be empty"))
    end)
  end)

  describe("update message status", function()
    it("updates the status, keeps error and recipients, and answers like a send", function()
      local status, r = sb:request("PUT", "/conversations/messages/msg_demo_3/status", {
        status = "failed",
        error = { code = "1", type = "saas", message = "There was an error from the provider" },
        emailMessageId = "emsg_demo_3",
        recipients = { "a@example.com", { emailId = "b@example.com", status = "delivered" } },
      })
      assert.equals(200, status)
      assert.equals("conv_demo_2", r.conversationId)
      assert.equals("msg_demo_3", r.messageId)
      assert.equals("failed", r.status)
      assert.equals("emsg_demo_3", r.emailMessageId)
      local _, m = sb:request("GET", "/conversations/messages/msg_demo_3")
      assert.equals("failed", m.status)
      assert.same({ code = "1", type = "saas", message = "There was an error from the provider" }, m.meta.error)
      assert.same({ "a@example.com", { emailId = "b@example.com", status = "delivered" } }, m.meta.recipients)
      assert.equals("emsg_demo_3", m.meta.emailMessageId)
      assert.same({ "emsg_demo_3" }, m.meta.email.messageIds)
    end)

    it("validates the body", function()
      local status, body = sb:request("PUT", "/conversations/messages/msg_demo_1/status", {})
      assert.equals(422, status)
      assert.is_true(contains(body.message, "status should not be empty"))
      status, body = sb:request("PUT", "/conversations/messages/msg_demo_1/status", { status = "sent" })
      assert.equals(422, status)
      assert.same({ "status must be one of the following values: delivered, failed, pending, read" }, body.message)
      status, body = sb:request("PUT", "/conversations/messages/msg_demo_1/status",
        { status = "read", error = { code = 1, type = "saas" }, recipients = { 5 }, emailMessageId = 7 })
      assert.equals(422, status)
      assert.is_true(contains(body.message, "error.code must be a string"))
      assert.is_true(contains(body.message, "error.message should not be empty"))
      assert.is_true(contains(body.message, "each value in recipients must be a string or an object {emailId, status}"))
      assert.is_true(contains(body.message, "emailMessageId must be a string"))
      local _, m = sb:request("GET", "/conversations/messages/msg_demo_1")
      assert.equals("delivered", m.status)
    end)

    it("answers 404 for an unknown message", function()
      local status, body = sb:request("PUT", "/conversations/messages/nope/status", { status = "read" })
      assert.equals(404, status)
      assert.same({ statusCode = 404, message = "Message not found", error = "Not Found" }, body)
    end)
  end)

  describe("get conversation", function()
    local function unread(id)
      local status, c = sb:request("GET", "/conversations/" .. (id or "conv_demo_1"))
      assert.equals(200, status)
      return c.unreadCount
    end

    it("answers a seeded conversation with the fields of the spec", function()
      local status, c, h = sb:request("GET", "/conversations/conv_demo_3")
      assert.equals(200, status)
      assert.equals(JSON_CT, h["content-type"])
      assert.same({
        id = "conv_demo_3", contactId = "contact_demo_3", locationId = "loc_sandbox", deleted = false,
        inbox = true, type = 3, unreadCount = 1, assignedTo = "user_demo_1", starred = true,
      }, c)
    end)

    it("counts unread inbound messages: reads decrement, unreads and new inbound increment", function()
      assert.equals(1, unread())
      sb:request("PUT", "/conversations/messages/msg_demo_2/status", { status = "read" })
      assert.equals(0, unread())
      sb:request("PUT", "/conversations/messages/msg_demo_2/status", { status = "read" })
      assert.equals(0, unread())
      sb:request("PUT", "/conversations/messages/msg_demo_1/status", { status = "read" }) -- outbound
      assert.equals(0, unread())
      sb:request("PUT", "/conversations/messages/msg_demo_2/status", { status = "delivered" })
      assert.equals(1, unread())
      sb:request("POST", "/conversations/messages/inbound", { type = "SMS", contactId = "contact_demo_1",
        conversationId = "conv_demo_1", conversationProviderId = "provider_sandbox", message = "again" })
      assert.equals(2, unread())
      send({ type = "SMS", contactId = "contact_demo_1", message = "outbound does not count" })
      assert.equals(2, unread())
    end)

    it("answers 404 for an unknown conversation", function()
      local status, body = sb:request("GET", "/conversations/nope")
      assert.equals(404, status)
      assert.same({ statusCode = 404, message = "Conversation not found", error = "Not Found" }, body)
    end)
  end)

  describe("add inbound message", function()
    local base = { type = "SMS", contactId = "contact_demo_3", conversationId = "conv_demo_3",
      conversationProviderId = "provider_sandbox", message = "Are you there?" }

    it("stores an inbound message and answers like the API", function()
      local status, r = sb:request("POST", "/conversations/messages/inbound", base)
      assert.equals(201, status)
      assert.is_true(r.success)
      assert.equals("conv_demo_3", r.conversationId)
      assert.equals("contact_demo_3", r.contactId)
      assert.equals("string", type(r.message))
      assert.matches(ISO_MS, r.dateAdded)
      local _, m = sb:request("GET", "/conversations/messages/" .. r.messageId)
      assert.equals("inbound", m.direction)
      assert.equals("Are you there?", m.body)
      assert.equals("TYPE_SMS", m.messageType)
      assert.equals("provider_sandbox", m.conversationProviderId)
      assert.equals(r.dateAdded, m.dateAdded)
      local _, c = sb:request("GET", "/conversations/conv_demo_3")
      assert.equals(2, c.unreadCount)
    end)

    it("keeps a given date, direction and call data", function()
      local body = {}
      for k, v in pairs(base) do body[k] = v end
      body.type, body.date, body.direction = "Call", "2025-01-02T03:04:05.000Z", "outbound"
      body.call = { from = "+15550001", to = "+15550002", status = "completed" }
      local status, r = sb:request("POST", "/conversations/messages/inbound", body)
      assert.equals(201, status)
      local _, m = sb:request("GET", "/conversations/messages/" .. r.messageId)
      assert.equals("2025-01-02T03:04:05.000Z", m.dateAdded)
      assert.equals("outbound", m.direction)
      assert.equals("TYPE_CALL", m.messageType)
      assert.equals(1, m.type)
      assert.equals("completed", m.meta.callStatus)
    end)

    it("validates against ProcessMessageBodyDto", function()
      local status, body = sb:request("POST", "/conversations/messages/inbound",
        { type = "Pigeon", contactId = "contact_demo_3", date = "yesterday", call = { status = "ringing" } })
      assert.equals(422, status)
      assert.is_true(contains(body.message, "conversationId should not be empty"))
      assert.is_true(contains(body.message, "conversationProviderId should not be empty"))
      assert.is_true(contains(body.message, "date must be a valid ISO 8601 date string"))
      assert.is_true(contains(body.message,
        "call.status must be one of the following values: pending, completed, answered, busy, no-answer, failed, canceled, voicemail"))
      assert.truthy(body.message[1]:find("^type must be one of the following values: SMS, RCS, Email"))
    end)

    it("answers 404 for an unknown conversation and 400 for another contact's", function()
      local body = {}
      for k, v in pairs(base) do body[k] = v end
      body.conversationId = "nope"
      local status, r = sb:request("POST", "/conversations/messages/inbound", body)
      assert.equals(404, status)
      assert.equals("Conversation not found", r.message)
      body.conversationId, body.contactId = "conv_demo_3", "contact_demo_1"
      status, r = sb:request("POST", "/conversations/messages/inbound", body)
      assert.equals(400, status)
      assert.equals(400, r.statusCode)
      assert.equals(0, #sb:messages("contact_demo_3") - 1) -- only the seeded one
    end)
  end)

  describe("checks", function()
    local UNAUTHORIZED = { statusCode = 401, message = "Invalid token: access token is invalid", error = "Unauthorized" }

    it("answers 401 without an accepted bearer token", function()
      for _, auth in ipairs({ false, "Bearer wrong", "Basic c2FuZGJveA==", "sandbox-token", "Bearer " }) do
        local status, body, h = sb:request("GET", "/conversations/messages/msg_demo_1", nil, { Authorization = auth })
        assert.equals(401, status, tostring(auth))
        assert.same(UNAUTHORIZED, body)
        assert.equals(JSON_CT, h["content-type"])
      end
      local status = sb:request("GET", "/conversations/messages/msg_demo_1", nil, { authorization = "bearer sandbox-token" })
      assert.equals(200, status)
    end)

    it("keeps each token's location apart", function()
      local status = sb:request("GET", "/conversations/messages/msg_demo_1", nil, { Authorization = "Bearer other-token" })
      assert.equals(404, status)
      local s2, r = send({ type = "SMS", contactId = "contact_demo_1", message = "x" }, { Authorization = "Bearer other-token" })
      assert.equals(201, s2)
      assert.are_not.equal("conv_demo_1", r.conversationId)
      local _, m = sb:request("GET", "/conversations/messages/" .. r.messageId, nil, { Authorization = "Bearer other-token" })
      assert.equals("loc_other", m.locationId)
      assert.equals(404, (sb:request("GET", "/conversations/messages/" .. r.messageId)))
    end)

    it("answers 400 for a missing or unknown Version header", function()
      local status, body = sb:request("GET", "/conversations/messages/msg_demo_1", nil, { Version = false })
      assert.equals(400, status)
      assert.equals(400, body.statusCode)
      assert.equals("Version header was not found", body.message)
      status, body = sb:request("GET", "/conversations/messages/msg_demo_1", nil, { Version = "2023-02-21" })
      assert.equals(400, status)
      assert.matches("2023%-02%-21", body.message)
      status = sb:request("GET", "/conversations/messages/msg_demo_1", nil, { Version = "2021-07-28" })
      assert.equals(200, status)
    end)

    it("answers 404 for unknown routes and methods", function()
      for _, r in ipairs({ { "GET", "/nope" }, { "DELETE", "/conversations/messages/msg_demo_1" },
        { "GET", "/conversations/messages" }, { "POST", "/conversations/messages/msg_demo_1/status" } }) do
        local status, body = sb:request(r[1], r[2])
        assert.equals(404, status)
        assert.same({ statusCode = 404, message = "Cannot " .. r[1] .. " " .. r[2], error = "Not Found" }, body)
      end
    end)
  end)

  describe("rate limits", function()
    local NAMES = { "x-ratelimit-max", "x-ratelimit-remaining", "x-ratelimit-interval-milliseconds",
      "x-ratelimit-limit-daily", "x-ratelimit-daily-remaining" }

    it("sends the X-RateLimit-* headers on every answer", function()
      sb:config({ rate_limit = 100 })
      local cases = {
        { "GET", "/conversations/messages/msg_demo_1" }, { "GET", "/conversations/messages/nope" },
        { "POST", "/conversations/messages", {} }, { "GET", "/nope" },
      }
      for _, c in ipairs(cases) do
        local _, _, h = sb:request(c[1], c[2], c[3])
        for _, n in ipairs(NAMES) do assert.matches("^%d+$", h[n], c[2] .. " " .. n) end
        assert.equals("100", h["x-ratelimit-max"])
        assert.equals("10000", h["x-ratelimit-interval-milliseconds"])
        assert.equals("200000", h["x-ratelimit-limit-daily"])
      end
      local _, _, h = sb:request("GET", "/conversations/messages/msg_demo_1", nil, { Authorization = false })
      for _, n in ipairs(NAMES) do assert.matches("^%d+$", h[n], "401 " .. n) end
    end)

    it("counts down per location and answers 429 with Retry-After past the burst limit", function()
      sb:config({ rate_limit = 3, rate_interval_ms = 1500 })
      local remaining = {}
      for i = 1, 3 do
        local status, _, h = sb:request("GET", "/conversations/messages/msg_demo_1")
        assert.equals(200, status)
        remaining[i] = tonumber(h["x-ratelimit-remaining"])
      end
      assert.same({ 2, 1, 0 }, remaining)
      local status, body, h = sb:request("GET", "/conversations/messages/msg_demo_1")
      assert.equals(429, status)
      assert.same({ statusCode = 429, message = "Too Many Requests" }, body)
      local retry = tonumber(h["retry-after"])
      assert.is_true(retry >= 1 and retry <= 2, tostring(h["retry-after"]))
      assert.equals("0", h["x-ratelimit-remaining"])
      -- another location has its own window
      assert.equals(201, (send({ type = "SMS", contactId = "c1", message = "y" }, { Authorization = "Bearer other-token" })))
      -- and after the window, requests pass again
      socket.sleep(1.6)
      assert.equals(200, (sb:request("GET", "/conversations/messages/msg_demo_1")))
    end)

    it("enforces the daily limit", function()
      sb:config({ rate_limit = 100, daily_limit = 2 })
      assert.equals(200, (sb:request("GET", "/conversations/messages/msg_demo_1")))
      local status, _, h = sb:request("GET", "/conversations/messages/msg_demo_1")
      assert.equals(200, status)
      assert.equals("0", h["x-ratelimit-daily-remaining"])
      status, _, h = sb:request("GET", "/conversations/messages/msg_demo_1")
      assert.equals(429, status)
      assert.is_true(tonumber(h["retry-after"]) >= 1)
    end)

    it("can be switched off at run time", function()
      sb:config({ rate_limit = 1 })
      assert.equals(200, (sb:request("GET", "/conversations/messages/msg_demo_1")))
      assert.equals(429, (sb:request("GET", "/conversations/messages/msg_demo_1")))
      local cfg = sb:config({ rate_limit = false })
      assert.is_false(cfg.rate_limit)
      for _ = 1, 5 do assert.equals(200, (sb:request("GET", "/conversations/messages/msg_demo_1"))) end
    end)

    it("refuses a bad config", function()
      local status = sb:request("POST", "/_sandbox/config", { rate_limit = -1 })
      assert.equals(400, status)
      status = sb:request("POST", "/_sandbox/config", { daily_limit = "lots" })
      assert.equals(400, status)
    end)
  end)

  describe("faults", function()
    local SEND = { type = "SMS", contactId = "contact_fault", message = "fault test" }
    local function stored() return #sb:messages("contact_fault") end

    it("answers a chosen status, body and headers to the next N matching requests, then normally", function()
      local faults = sb:fault({ method = "POST", path = "/conversations/messages", count = 2, status = 503,
        body = { statusCode = 503, message = "down for a moment" }, headers = { ["Retry-After"] = "7" } })
      assert.equals(1, #faults)
      assert.equals(2, faults[1].remaining)
      -- a GET is not matched
      assert.equals(200, (sb:request("GET", "/conversations/messages/msg_demo_1")))
      for _ = 1, 2 do
        local status, body, h = send(SEND)
        assert.equals(503, status)
        assert.same({ statusCode = 503, message = "down for a moment" }, body)
        assert.equals("7", h["retry-after"])
        assert.equals(JSON_CT, h["content-type"])
      end
      assert.equals(0, stored())
      assert.equals(201, (send(SEND)))
      assert.equals(1, stored())
    end)

    it("uses a string body as is, and a default JSON body when none is given", function()
      sb:fault({ status = 500, body = "oops", content_type = "text/plain" })
      sb:fault({ status = 409 })
      local status, body, h = send(SEND)
      assert.equals(500, status)
      assert.equals("oops", body)
      assert.equals("text/plain", h["content-type"])
      status, body = send(SEND)
      assert.equals(409, status)
      assert.same({ statusCode = 409, message = "Conflict" }, body)
    end)

    it("matches in order of registration, with path_pattern", function()
      sb:fault({ path_pattern = "^/conversations/messages/[^/]+$", status = 502 })
      sb:fault({ path_pattern = "^/conversations/", status = 504 })
      assert.equals(502, (sb:request("GET", "/conversations/messages/msg_demo_1")))
      assert.equals(504, (sb:request("GET", "/conversations/messages/msg_demo_1")))
      assert.equals(200, (sb:request("GET", "/conversations/messages/msg_demo_1")))
    end)

    it("drops the connection without an answer", function()
      sb:fault({ method = "POST", path = "/conversations/messages", action = "drop" })
      local status, err = send(SEND)
      assert.is_nil(status)
      assert.equals("closed", err)
      assert.equals(0, stored())
    end)

    it("with after=true, stores the message and then drops the answer", function()
      sb:fault({ method = "POST", path = "/conversations/messages", action = "drop", after = true })
      local status, err = send(SEND)
      assert.is_nil(status)
      assert.equals("closed", err)
      assert.equals(1, stored())
      assert.equals("fault test", sb:messages("contact_fault")[1].body)
    end)

    it("with after=true and a status, stores the message but answers the status", function()
      sb:fault({ method = "POST", path = "/conversations/messages", status = 500, after = true })
      assert.equals(500, (send(SEND)))
      assert.equals(1, stored())
    end)

    it("sends malformed (truncated) JSON", function()
      sb:fault({ method = "POST", path = "/conversations/messages", action = "malformed" })
      local status, body, h, raw = send(SEND)
      assert.equals(201, status)
      assert.equals(JSON_CT, h["content-type"])
      assert.equals("string", type(body))
      assert.matches('^{"', raw)
      assert.is_false(pcall(cjson.decode, raw))
      assert.equals(0, stored())
    end)

    it("with after=true, truncates the real answer", function()
      sb:fault({ path_pattern = "^/conversations/messages/", action = "malformed", after = true })
      local status, _, _, raw = sb:request("GET", "/conversations/messages/msg_demo_1")
      assert.equals(200, status)
      assert.is_false(pcall(cjson.decode, raw))
      local _, _, _, full = sb:request("GET", "/conversations/messages/msg_demo_1")
      assert.equals(full:sub(1, #raw), raw)
      assert.is_true(#raw < #full)
    end)

    it("answers an HTML 502 like a proxy", function()
      sb:fault({ action = "html502" })
      local status, body, h = sb:request("GET", "/conversations/conv_demo_1")
      assert.equals(502, status)
      assert.matches("^text/html", h["content-type"])
      assert.matches("<title>502 Bad Gateway</title>", body)
    end)

    it("answers an empty 201, without storing, or after storing with after=true", function()
      sb:fault({ method = "POST", action = "empty201" })
      local status, body, h = send(SEND)
      assert.equals(201, status)
      assert.equals("", body)
      assert.equals("0", h["content-length"])
      assert.equals(0, stored())
      sb:fault({ method = "POST", action = "empty201", after = true })
      status, body = send(SEND)
      assert.equals(201, status)
      assert.equals("", body)
      assert.equals(1, stored())
    end)

    it("waits delay_ms, then answers normally", function()
      sb:fault({ method = "GET", delay_ms = 300 })
      local t0 = socket.gettime()
      local status, m = sb:request("GET", "/conversations/messages/msg_demo_1")
      local took = socket.gettime() - t0
      assert.equals(200, status)
      assert.equals("msg_demo_1", m.id)
      assert.is_true(took >= 0.29, "took " .. took)
      t0 = socket.gettime()
      assert.equals(200, (sb:request("GET", "/conversations/messages/msg_demo_1")))
      assert.is_true(socket.gettime() - t0 < 0.29)
    end)

    it("can delay a fault: stored, then the answer is late and lost", function()
      sb:fault({ method = "POST", delay_ms = 200, action = "drop", after = true })
      local t0 = socket.gettime()
      local status = send(SEND)
      assert.is_nil(status)
      assert.is_true(socket.gettime() - t0 >= 0.19)
      assert.equals(1, stored())
    end)

    it("lists, clears, and refuses bad specs", function()
      sb:fault({ status = 503, count = -1 })
      sb:fault({ action = "drop", method = "PUT" })
      local status, list = sb:request("GET", "/_sandbox/faults")
      assert.equals(200, status)
      assert.equals(2, #list.faults)
      assert.equals(503, (sb:request("GET", "/conversations/conv_demo_1")))
      assert.equals(503, (sb:request("GET", "/conversations/conv_demo_1"))) -- count -1: every time
      assert.equals(2, sb:clear_faults().cleared)
      assert.equals(200, (sb:request("GET", "/conversations/conv_demo_1")))
      for _, bad in ipairs({ {}, { action = "explode" }, { status = 99 }, { status = 503, count = 0 },
        { action = "drop", status = 503 }, { status = 503, path_pattern = "[" }, { status = 503, path = "nope" } }) do
        local s, body = sb:request("POST", "/_sandbox/faults", bad)
        assert.equals(400, s, cjson.encode(bad))
        assert.equals("string", type(body.message))
      end
      assert.equals(0, #select(2, sb:request("GET", "/_sandbox/faults")).faults)
    end)

    it("are cleared by reset", function()
      sb:fault({ status = 503 })
      sb:reset()
      assert.equals(200, (sb:request("GET", "/conversations/conv_demo_1")))
    end)
  end)

  describe("control endpoints", function()
    it("reset restores the seed data", function()
      send({ type = "SMS", contactId = "contact_demo_1", message = "extra" })
      sb:request("PUT", "/conversations/messages/msg_demo_2/status", { status = "read" })
      assert.equals(3, #sb:messages("contact_demo_1"))
      sb:reset()
      assert.equals(2, #sb:messages("contact_demo_1"))
      local _, c = sb:request("GET", "/conversations/conv_demo_1")
      assert.equals(1, c.unreadCount)
      local _, m = sb:request("GET", "/conversations/messages/msg_demo_2")
      assert.equals("delivered", m.status)
    end)

    it("logs API requests, newest last, without the token", function()
      sb:clear_requests()
      local raw_body = '{"type":"SMS","contactId":"c1","message":"logged","attachments":[]}'
      send(raw_body, { ["X-Trace"] = "t1" })
      sb:request("GET", "/conversations/messages/nope?x=1")
      local log = sb:requests()
      assert.equals(2, #log)
      local first, second = log[1], log[2]
      assert.equals("POST", first.method)
      assert.equals("/conversations/messages", first.path)
      assert.equals(201, first.status)
      assert.equals("logged", first.body.message)
      assert.equals(raw_body, first.raw_body)
      assert.equals("t1", first.headers["x-trace"])
      assert.equals("2021-04-15", first.headers["version"])
      assert.equals("Bearer [redacted]", first.headers["authorization"])
      assert.equals("loc_sandbox", first.location)
      assert.equals("/conversations/messages/nope?x=1", second.path)
      assert.equals(404, second.status)
      local _, _, _, raw = sb:request("GET", "/_sandbox/requests", nil, {})
      assert.is_nil(raw:find("sandbox-token", 1, true))
      sb:clear_requests()
      assert.equals(0, #sb:requests())
    end)

    it("records faults and dropped answers in the log", function()
      sb:clear_requests()
      sb:fault({ action = "drop" })
      sb:request("GET", "/conversations/conv_demo_1")
      local log = sb:requests()
      assert.equals(1, #log)
      assert.equals("drop", log[1].fault)
      assert.equals(444, log[1].status)
    end)

    it("keeps only the last 1000 requests #slow", function()
      sb:clear_requests()
      for i = 1, 1005 do sb:request("GET", "/conversations/x" .. i) end
      local log = sb:requests()
      assert.equals(1000, #log)
      assert.equals("/conversations/x6", log[1].path)
      assert.equals("/conversations/x1005", log[1000].path)
    end)

    it("lists stored messages by contact", function()
      local list = sb:messages("contact_demo_2")
      assert.equals(2, #list)
      assert.equals("msg_demo_3", list[1].id)
      assert.equals("msg_demo_4", list[2].id)
      assert.equals(0, #sb:messages("nobody"))
      assert.equals(6, #sb:messages())
    end)

    it("answers 404 for an unknown control endpoint", function()
      local status = sb:request("GET", "/_sandbox/nope")
      assert.equals(404, status)
    end)
  end)
end)

describe("sandbox process", function()
  it("keeps its data in --state across a restart, written atomically", function()
    local state = tmpname()
    local sb = helpers.start_sandbox({ state = state })
    local ok, err = pcall(function()
      local _, r = sb:request("POST", "/conversations/messages", { type = "SMS", contactId = "persist", message = "kept" })
      sb:request("PUT", "/conversations/messages/" .. r.messageId .. "/status", { status = "failed",
        error = { code = "30003", type = "carrier", message = "Unreachable" } })
      sb:request("PUT", "/conversations/messages/msg_demo_2/status", { status = "read" })
      sb:stop()
      local f = assert(io.open(state, "rb"))
      local doc = cjson.decode(f:read("*a"))
      f:close()
      assert.equals("kept", doc.messages[r.messageId].body)
      local dir, base = state:match("^(.*)/([^/]+)$")
      local p = io.popen("ls -a " .. dir)
      for name in p:lines() do
        assert.is_nil(name:find(base .. ".tmp", 1, true), "temp file left: " .. name)
      end
      p:close()

      sb = helpers.start_sandbox({ state = state })
      local status, m = sb:request("GET", "/conversations/messages/" .. r.messageId)
      assert.equals(200, status)
      assert.equals("kept", m.body)
      assert.equals("failed", m.status)
      assert.equals("30003", m.meta.error.code)
      assert.truthy(select(4, sb:request("GET", "/conversations/messages/" .. r.messageId)):find('"attachments":[]', 1, true))
      local _, c = sb:request("GET", "/conversations/conv_demo_1")
      assert.equals(0, c.unreadCount)
      -- a new message lands in the same conversation as before the restart
      local _, r2 = sb:request("POST", "/conversations/messages", { type = "SMS", contactId = "persist", message = "again" })
      assert.equals(r.conversationId, r2.conversationId)
    end)
    sb:stop()
    os.remove(state)
    assert(ok, err)
  end)

  it("refuses to start on a state file that is not its own", function()
    local state = tmpname()
    local f = assert(io.open(state, "w"))
    f:write("not json")
    f:close()
    local ok, err = pcall(helpers.start_sandbox, { state = state })
    os.remove(state)
    assert.is_false(ok)
    assert.matches("is not a sandbox state file", err)
  end)

  it("stops on SIGTERM and SIGINT: no process left, its temp dir removed", function()
    for _, sig in ipairs({ "TERM", "INT" }) do
      local out = tmpname()
      local p = io.popen(helpers.CLEAN_ENV .. " " .. helpers.sandbox_bin() .. " >" .. out .. " 2>&1 </dev/null & echo $!")
      local pid = tonumber(p:read("*l"))
      p:close()
      finally(function()
        if helpers.alive(pid) then os.execute("kill -KILL " .. pid) end
        os.remove(out)
      end)
      local url
      for _ = 1, 500 do
        local f = io.open(out)
        local text = f and f:read("*a") or ""
        if f then f:close() end
        url = text:match("LEADCONNECTOR_SANDBOX_URL=(%S+)")
        if url then break end
        socket.sleep(0.02)
      end
      assert.truthy(url, "no URL printed")
      -- find nginx (a child of the launcher) and its prefix directory
      local children = io.open("/proc/" .. pid .. "/task/" .. pid .. "/children"):read("*a")
      local master, prefix
      finally(function()
        if master and helpers.alive(master) then os.execute("kill -KILL " .. master) end
      end)
      for c in children:gmatch("%d+") do
        local cmd = (io.open("/proc/" .. c .. "/cmdline") or { read = function() return "" end }):read("*a")
        if cmd:find("nginx", 1, true) then
          master = tonumber(c)
          -- nginx rewrites its title: "nginx: master process nginx -p PREFIX -c ..."
          prefix = cmd:match("%-p[%s%z]+([^%s%z]+)")
        end
      end
      assert.truthy(master, "nginx not found among " .. children)
      local workers = io.open("/proc/" .. master .. "/task/" .. master .. "/children"):read("*a")
      local worker = tonumber(workers:match("%d+"))
      assert.truthy(worker)
      assert.is_true(helpers.alive(worker))
      assert.truthy(io.open(prefix .. "/nginx.conf"))

      os.execute("kill -" .. sig .. " " .. pid)
      for _ = 1, 500 do
        if not helpers.alive(pid) then break end
        socket.sleep(0.02)
      end
      os.remove(out)
      assert.is_false(helpers.alive(pid), sig)
      assert.is_false(helpers.alive(master), sig)
      assert.is_false(helpers.alive(worker), sig)
      assert.is_nil(io.open(prefix .. "/nginx.conf"), "prefix left behind: " .. prefix)
    end
  end)

  it("stops with the process given to --exit-with", function()
    local p = io.popen("sleep 30 >/dev/null & echo $!")
    local sleeper = tonumber(p:read("*l"))
    p:close()
    local sb = helpers.start_sandbox({ args = { "--exit-with", tostring(sleeper) } })
    assert.is_true(helpers.alive(sb.pid))
    os.execute("kill " .. sleeper)
    local gone = false
    for _ = 1, 150 do
      if not helpers.alive(sb.pid) then gone = true break end
      socket.sleep(0.02)
    end
    sb:stop()
    assert.is_true(gone)
  end)

  it("listens on a fixed --port, and fails clearly when it is taken", function()
    local port = helpers.free_port()
    local sb = helpers.start_sandbox({ port = port })
    local ok, err = pcall(function()
      assert.equals(port, sb.port)
      assert.equals("http://127.0.0.1:" .. port, sb.url)
      local ok2, err2 = pcall(helpers.start_sandbox, { port = port, timeout = 10 })
      assert.is_false(ok2)
      assert.matches("Address already in use", err2)
    end)
    sb:stop()
    assert(ok, err)
  end)

  it("gives two sandboxes started with port 0 different ports", function()
    local a = helpers.start_sandbox()
    local b = helpers.start_sandbox()
    local pa, pb = a.port, b.port
    local sa = a:request("GET", "/conversations/messages/msg_demo_1")
    a:stop()
    local sbb = b:request("GET", "/conversations/messages/msg_demo_1")
    b:stop()
    assert.are_not.equal(pa, pb)
    assert.equals(200, sa)
    assert.equals(200, sbb)
    assert.is_false(helpers.alive(a.pid))
    assert.is_false(helpers.alive(b.pid))
  end)
end)

-- Every operation of API.md §4 against the sandbox, over real HTTP with spec/helpers.lua's raw
-- client (not the library): routing from the catalogue, state, paging, uploads, validation, limits.
local helpers = require "helpers"
local cjson = require "cjson"

local JSON_CT = "application/json; charset=utf-8"

local function urlencode(s)
  return (tostring(s):gsub("[^%w%-%._~]", function(ch) return ("%%%02X"):format(ch:byte()) end))
end

local function qs(t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  table.sort(keys)
  local out = {}
  for _, k in ipairs(keys) do out[#out + 1] = urlencode(k) .. "=" .. urlencode(t[k]) end
  return "?" .. table.concat(out, "&")
end

local function contains(list, s)
  for _, v in ipairs(list) do if v == s then return true end end
  return false
end

-- A multipart/form-data body: fields { {name, value} ... }, files { {field, filename, content_type, data} ... }
local function multipart(fields, files, boundary)
  boundary = boundary or "lcspecBoundary7MA4YWxkTrZu0gW"
  local out = {}
  for _, f in ipairs(fields) do
    out[#out + 1] = "--" .. boundary .. "\r\nContent-Disposition: form-data; name=\"" .. f[1] .. "\"\r\n\r\n" .. f[2] .. "\r\n"
  end
  for _, f in ipairs(files) do
    out[#out + 1] = "--" .. boundary .. "\r\nContent-Disposition: form-data; name=\"" .. f[1] ..
      "\"; filename=\"" .. f[2] .. "\"\r\nContent-Type: " .. f[3] .. "\r\n\r\n" .. f[4] .. "\r\n"
  end
  out[#out + 1] = "--" .. boundary .. "--\r\n"
  return table.concat(out), "multipart/form-data; boundary=" .. boundary
end

describe("sandbox operations", function()
  local sb

  helpers.sandbox_suite(function(s) sb = s end,
    { rate_limit = false, tokens = { "sandbox-token", "other-token@loc_other" } },
    { rate_limit = false, rate_interval_ms = 10000, daily_limit = 200000 })

  local function req(method, path, body, headers) return sb:request(method, path, body, headers) end
  local function send(body) return req("POST", "/conversations/messages", body) end
  local function inject(t) return sb:inbound(t) end

  describe("routing", function()
    it("tells literal segments from ids, and answers 404 for a method no operation has", function()
      for _, r in ipairs({ { "GET", "/conversations/messages" }, { "GET", "/conversations/messages/inbound" },
        { "DELETE", "/conversations/search" }, { "PATCH", "/conversations/conv_demo_1" },
        { "GET", "/conversations//messages" } }) do
        local status, body = req(r[1], r[2])
        assert.equals(404, status, r[1] .. " " .. r[2])
        assert.same({ statusCode = 404, message = "Cannot " .. r[1] .. " " .. r[2], error = "Not Found" }, body)
      end
    end)

    -- Every operation of the catalogue, its path template filled with ids that exist.
    local catalogue = require "leadconnector.catalogue"
    local IDS = { conversationId = "conv_demo_1", messageId = "msg_demo_6", locationId = "loc_sandbox",
      id = "msg_demo_1", emailMessageId = "emsg_demo_3" }
    local function every_route()
      local out = {}
      for _, op in ipairs(catalogue.operations) do
        out[#out + 1] = { op.method, (op.path:gsub("{(%w+)}", function(n) return IDS[n] end)), op.name }
      end
      assert.equals(29, #out)
      return out
    end

    it("checks the token and the Version on every route", function()
      for _, r in ipairs(every_route()) do
        local status, body = req(r[1], r[2], nil, { Authorization = "Bearer nope" })
        assert.equals(401, status, r[3])
        assert.equals("Invalid token: access token is invalid", body.message)
        status, body = req(r[1], r[2], nil, { Version = false })
        assert.equals(400, status, r[3])
        assert.equals("Version header was not found", body.message)
      end
    end)

    it("answers 422 naming every missing required field, on every route with a body or a query", function()
      local operations = require "lcsandbox.operations"
      local rules = require "lcsandbox.rules"
      local n = 0
      for _, r in ipairs(every_route()) do
        local h = operations.handlers[r[3]]
        -- the query is checked first (an operation with both answers the query's messages alone)
        local schema = (h.query and rules.queries[h.query]) or (h.body and rules.schemas[h.body])
        if schema and #schema.required > 0 then
          n = n + 1
          local body = h.body and {} or nil
          local path = r[2]:gsub("%?.*$", "")
          local status, answer = req(r[1], path, body)
          assert.equals(422, status, r[3])
          assert.equals("Unprocessable Entity", answer.error)
          for _, field in ipairs(schema.required) do
            assert.is_true(contains(answer.message, field .. " should not be empty"), r[3] .. ": " .. field ..
              " in " .. cjson.encode(answer.message))
          end
        end
      end
      assert.equals(18, n) -- (the multipart upload's fields are checked in "uploads")
    end)

    it("counts every route against the rate limit, and faults every route", function()
      sb:config({ rate_limit = 1000, rate_interval_ms = 600000 })
      local remaining = 1000
      for _, r in ipairs(every_route()) do
        local status, body, h = req(r[1], r[2])
        assert.is_true(status ~= 401 and status ~= 429, r[3] .. " answered " .. tostring(status))
        assert.is_falsy(type(body) == "table" and tostring(body.message):match("^Cannot "), r[3] .. " was not routed")
        remaining = remaining - 1
        assert.equals(tostring(remaining), h["x-ratelimit-remaining"], r[3])
      end
      sb:fault({ count = 29, status = 418, body = { statusCode = 418, message = "teapot" } })
      for _, r in ipairs(every_route()) do
        local status, body = req(r[1], r[2])
        assert.equals(418, status, r[3])
        assert.equals("teapot", body.message)
      end
      assert.equals(0, #sb:control("GET", "/_sandbox/faults").faults)
    end)

    it("applies the rate limit and faults to the new routes too", function()
      sb:config({ rate_limit = 2, rate_interval_ms = 60000 })
      local path = "/conversations/conv_demo_1/messages"
      assert.equals(200, (req("GET", path)))
      local _, _, h = req("GET", path)
      assert.equals("0", h["x-ratelimit-remaining"])
      local status, _, h2 = req("GET", path)
      assert.equals(429, status)
      assert.truthy(tonumber(h2["retry-after"]))
      sb:config({ rate_limit = false })
      sb:fault({ method = "DELETE", path_pattern = "^/conversations/messages/[^/]+/schedule$", status = 503 })
      assert.equals(503, (req("DELETE", "/conversations/messages/msg_demo_1/schedule")))
      assert.equals(400, (req("DELETE", "/conversations/messages/msg_demo_1/schedule")))
    end)

    it("refuses another location's locationId with 403", function()
      local status, body = req("GET", "/conversations/search?locationId=loc_other")
      assert.equals(403, status)
      assert.equals("The token does not have access to this location", body.message)
      status = req("POST", "/conversations/", { locationId = "loc_other", contactId = "c9" })
      assert.equals(403, status)
    end)
  end)

  describe("conversations", function()
    it("create, read, update and delete a conversation", function()
      local status, r = req("POST", "/conversations/", { locationId = "loc_sandbox", contactId = "contact_crud" })
      assert.equals(201, status)
      assert.is_true(r.success)
      local c = r.conversation
      assert.equals("contact_crud", c.contactId)
      assert.equals("loc_sandbox", c.locationId)
      assert.is_false(c.deleted)
      assert.matches("^%d%d%d%d%-", c.dateAdded)
      assert.matches("^%d%d%d%d%-", c.lastMessageDate)

      local s2, again = req("POST", "/conversations/", { locationId = "loc_sandbox", contactId = "contact_crud" })
      assert.equals(400, s2)
      assert.equals("Conversation already exists", again.message)
      assert.equals(c.id, again.conversationId)

      local s3, u = req("PUT", "/conversations/" .. c.id, { locationId = "loc_sandbox", starred = true, unreadCount = 3 })
      assert.equals(200, s3)
      assert.is_true(u.success)
      assert.is_true(u.conversation.starred)
      assert.equals(3, u.conversation.unreadCount)
      local _, got = req("GET", "/conversations/" .. c.id)
      assert.is_true(got.starred)
      assert.equals(3, got.unreadCount)

      -- a send to that contact goes into it
      local _, sent = send({ type = "SMS", contactId = "contact_crud", message = "hi" })
      assert.equals(c.id, sent.conversationId)

      local s4, d = req("DELETE", "/conversations/" .. c.id)
      assert.equals(200, s4)
      assert.same({ success = true }, d)
      assert.equals(404, (req("GET", "/conversations/" .. c.id)))
      assert.equals(404, (req("GET", "/conversations/messages/" .. sent.messageId)))
      assert.equals(404, (req("DELETE", "/conversations/" .. c.id)))
    end)

    it("never counts below zero unread after unreadCount was set by hand", function()
      assert.equals(200, (req("PUT", "/conversations/conv_demo_1", { locationId = "loc_sandbox", unreadCount = 0 })))
      assert.equals(200, (req("PUT", "/conversations/messages/msg_demo_2/status", { status = "read" })))
      local _, c = req("GET", "/conversations/conv_demo_1")
      assert.equals(0, c.unreadCount)
      assert.equals(200, (req("PUT", "/conversations/messages/msg_demo_2/status", { status = "delivered" })))
      _, c = req("GET", "/conversations/conv_demo_1")
      assert.equals(1, c.unreadCount)
      local status, bad = req("PUT", "/conversations/conv_demo_1", { locationId = "loc_sandbox", unreadCount = -1 })
      assert.equals(400, status)
      assert.equals("unreadCount must be a whole number >= 0", bad.message)
    end)

    it("validates create and update bodies", function()
      local status, body = req("POST", "/conversations/", { contactId = 3 })
      assert.equals(422, status)
      assert.is_true(contains(body.message, "locationId should not be empty"))
      assert.is_true(contains(body.message, "contactId must be a string"))
      status, body = req("PUT", "/conversations/conv_demo_1", { locationId = "loc_sandbox", starred = "yes", unreadCount = "2" })
      assert.equals(422, status)
      assert.same({ "unreadCount must be a number conforming to the specified constraints",
        "starred must be a boolean value" }, body.message)
      assert.equals(404, (req("PUT", "/conversations/nope", { locationId = "loc_sandbox" })))
    end)

    it("searches with the spec's filters, the live sort array and total", function()
      local status, r = req("GET", "/conversations/search" .. qs({ locationId = "loc_sandbox" }))
      assert.equals(200, status)
      assert.equals(4, r.total)
      assert.equals(4, #r.conversations)
      local ids = {}
      for i, c in ipairs(r.conversations) do
        ids[i] = c.id
        assert.equals("table", type(c.sort))
        assert.equals(1, #c.sort)
        assert.equals(c.lastMessageDate, c.sort[1])
        for _, f in ipairs({ "id", "contactId", "locationId", "lastMessageBody", "lastMessageType", "type",
          "unreadCount", "fullName", "contactName", "email", "phone" }) do
          assert.not_nil(c[f], f)
        end
      end
      assert.same({ "conv_demo_4", "conv_demo_3", "conv_demo_2", "conv_demo_1" }, ids) -- newest first
      assert.equals("TYPE_FB_MESSENGER", r.conversations[2].type)
      assert.equals("Yes please, is Friday at 10 possible?", r.conversations[4].lastMessageBody)
      assert.equals("TYPE_SMS", r.conversations[4].lastMessageType)
      assert.equals("Ada Lovelace", r.conversations[4].fullName)

      local function search(q)
        q.locationId = "loc_sandbox"
        local s, page = req("GET", "/conversations/search" .. qs(q))
        assert.equals(200, s)
        local out = {}
        for i, c in ipairs(page.conversations) do out[i] = c.id end
        return out, page
      end
      assert.same({ "conv_demo_1", "conv_demo_2", "conv_demo_3", "conv_demo_4" }, (search({ sort = "asc" })))
      assert.same({ "conv_demo_2" }, (search({ contactId = "contact_demo_2" })))
      assert.same({ "conv_demo_3" }, (search({ assignedTo = "user_x,user_demo_1" })))
      assert.same({ "conv_demo_3" }, (search({ status = "starred" })))
      assert.same({ "conv_demo_3", "conv_demo_1" }, (search({ status = "unread" })))
      assert.same({ "conv_demo_1" }, (search({ query = "FRIDAY at 10" })))
      assert.same({ "conv_demo_2" }, (search({ query = "babbage" })))
      assert.same({ "conv_demo_3", "conv_demo_2", "conv_demo_1" }, (search({ lastMessageDirection = "inbound" })))
      assert.same({ "conv_demo_4" }, (search({ lastMessageDirection = "outbound" })))
      assert.same({ "conv_demo_4" }, (search({ lastMessageType = "TYPE_CALL" })))
      assert.same({ "conv_demo_4" }, (search({ id = "conv_demo_4" })))
      -- page by page: startAfterDate is the last result's sort value
      local p1, page1 = search({ limit = 3 })
      assert.same({ "conv_demo_4", "conv_demo_3", "conv_demo_2" }, p1)
      assert.equals(4, page1.total)
      local p2, page2 = search({ limit = 3, startAfterDate = page1.conversations[3].sort[1] })
      assert.same({ "conv_demo_1" }, p2)
      assert.equals(4, page2.total)
      assert.same({}, (search({ limit = 3, startAfterDate = page2.conversations[1].sort[1] })))
    end)

    it("gives conversations whose last messages share a millisecond distinct sort values", function()
      for i = 1, 6 do
        inject({ contactId = "same_ms_" .. i, message = "m" .. i, date = "2025-01-01T00:00:00.000Z" })
      end
      local seen, after, n = {}, nil, 0
      repeat
        local q = { locationId = "loc_sandbox", limit = 2, startDate = 1735689600000, endDate = 1735689600999 }
        if after then q.startAfterDate = after end
        local _, page = req("GET", "/conversations/search" .. qs(q))
        assert.equals(6, page.total)
        for _, c in ipairs(page.conversations) do
          assert.is_nil(seen[c.id])
          seen[c.id] = true
          n = n + 1
          after = c.sort[1]
        end
      until #page.conversations < 2
      assert.equals(6, n)
    end)

    it("validates the search query", function()
      local status, body = req("GET", "/conversations/search?limit=ten&sort=up&lastMessageType=TYPE_FAX&startDate=x")
      assert.equals(422, status)
      assert.equals("Unprocessable Entity", body.error)
      for _, m in ipairs({ "locationId should not be empty", "limit must be a number conforming to the specified constraints",
        "sort must be one of the following values: asc, desc", "startDate must be a number conforming to the specified constraints" }) do
        assert.is_true(contains(body.message, m), m .. " in " .. cjson.encode(body.message))
      end
      status, body = req("GET", "/conversations/search?locationId=loc_sandbox&startAfterDate=yesterday")
      assert.equals(422, status)
      assert.matches("startAfterDate must be a number", body.message[1])
      status, body = req("GET", "/conversations/search?locationId=loc_sandbox&locationId=loc_sandbox")
      assert.equals(422, status)
      assert.same({ "locationId must be a string" }, body.message)
    end)
  end)

  describe("messages of a conversation", function()
    local function fill(n)
      local ids = {}
      for i = 1, n do
        local _, r = send({ type = "SMS", contactId = "contact_pages", message = "m" .. i })
        ids[i] = r.messageId
      end
      return ids
    end

    it("answers the live nested shape by default, newest first, 20 a page", function()
      local ids = fill(23)
      local _, conv = send({ type = "SMS", contactId = "contact_pages", message = "last" })
      ids[24] = conv.messageId
      local status, r, h = req("GET", "/conversations/" .. conv.conversationId .. "/messages")
      assert.equals(200, status)
      assert.equals(JSON_CT, h["content-type"])
      assert.is_nil(r.nextPage)
      local page = r.messages
      assert.is_true(page.nextPage)
      assert.equals(20, #page.messages)
      assert.equals(ids[24], page.messages[1].id)
      assert.equals(ids[5], page.messages[20].id)
      assert.equals(ids[5], page.lastMessageId)
      local s2, r2 = req("GET", "/conversations/" .. conv.conversationId .. "/messages" .. qs({ lastMessageId = page.lastMessageId }))
      assert.equals(200, s2)
      assert.is_false(r2.messages.nextPage)
      assert.equals(4, #r2.messages.messages)
      assert.equals(ids[1], r2.messages.messages[4].id)
      assert.equals(ids[1], r2.messages.lastMessageId)
    end)

    it("answers the documented flat shape when configured, with limit and an exact last page", function()
      assert.equals("flat", sb:config({ messages_shape = "flat" }).messages_shape)
      local ids = fill(6)
      local _, r = req("GET", "/conversations/messages/" .. ids[1])
      local path = "/conversations/" .. r.conversationId .. "/messages"
      local s, p1 = req("GET", path .. qs({ limit = 3 }))
      assert.equals(200, s)
      assert.is_true(p1.nextPage)
      assert.same({ ids[6], ids[5], ids[4] }, { p1.messages[1].id, p1.messages[2].id, p1.messages[3].id })
      local _, p2 = req("GET", path .. qs({ limit = 3, lastMessageId = p1.lastMessageId }))
      assert.is_false(p2.nextPage) -- exactly 6: the second page is the last
      assert.same({ ids[3], ids[2], ids[1] }, { p2.messages[1].id, p2.messages[2].id, p2.messages[3].id })
      local _, _, _, raw = req("GET", "/conversations/conv_demo_1/messages?type=TYPE_EMAIL")
      assert.truthy(raw:find('"messages":[]', 1, true), raw)
      assert.truthy(raw:find('"lastMessageId":null', 1, true), raw)
      sb:reset() -- back to the live shape
      local _, nested = req("GET", "/conversations/conv_demo_1/messages")
      assert.is_nil(nested.nextPage)
      assert.equals(2, #nested.messages.messages)
      assert.equals("nested", sb:control("GET", "/_sandbox/config").messages_shape)
    end)

    it("shows a provider's add_inbound_message in get_messages and the unread count", function()
      local status, r = req("POST", "/conversations/messages/inbound", { type = "SMS", conversationId = "conv_demo_3",
        contactId = "contact_demo_3", conversationProviderId = "provider_sandbox", message = "reply from the provider" })
      assert.equals(201, status)
      local _, page = req("GET", "/conversations/conv_demo_3/messages")
      assert.equals(r.messageId, page.messages.messages[1].id)
      assert.equals("reply from the provider", page.messages.messages[1].body)
      local _, c = req("GET", "/conversations/conv_demo_3")
      assert.equals(2, c.unreadCount)
      local _, found = req("GET", "/conversations/search" .. qs({ locationId = "loc_sandbox", query = "from the provider" }))
      assert.equals(1, found.total)
      assert.equals("conv_demo_3", found.conversations[1].id)
    end)

    it("orders a conversation's messages by date, also when one comes in with an earlier date", function()
      local late = inject({ contactId = "contact_dates", message = "late", date = "2025-05-01T00:00:00.000Z" })
      local early = inject({ contactId = "contact_dates", message = "early", date = "2025-04-01T00:00:00.000Z" })
      local middle = inject({ contactId = "contact_dates", message = "middle", date = "2025-04-15T00:00:00.000Z" })
      local _, page = req("GET", "/conversations/" .. late.conversationId .. "/messages")
      local bodies = {}
      for i, m in ipairs(page.messages.messages) do bodies[i] = m.body end
      assert.same({ "late", "middle", "early" }, bodies)
      local _, found = req("GET", "/conversations/search" .. qs({ locationId = "loc_sandbox", contactId = "contact_dates" }))
      assert.equals("late", found.conversations[1].lastMessageBody)
      assert.equals(1746057600000, found.conversations[1].sort[1])
      assert.truthy(early.messageId and middle.messageId)
    end)

    it("filters by type, shows injected inbound messages and counts them unread", function()
      local r = inject({ contactId = "contact_demo_1", message = "are you there?" })
      assert.equals("conv_demo_1", r.conversationId)
      local _, page = req("GET", "/conversations/conv_demo_1/messages")
      assert.equals(r.messageId, page.messages.messages[1].id)
      assert.equals("inbound", page.messages.messages[1].direction)
      local _, c = req("GET", "/conversations/conv_demo_1")
      assert.equals(2, c.unreadCount)
      local _, calls = req("GET", "/conversations/conv_demo_4/messages?type=TYPE_CALL,TYPE_SMS")
      assert.equals(1, #calls.messages.messages)
      assert.equals("msg_demo_6", calls.messages.messages[1].id)
      local status, bad = req("GET", "/conversations/conv_demo_1/messages?type=TYPE_SMS,TYPE_FAX&limit=x")
      assert.equals(422, status)
      assert.is_true(contains(bad.message, "limit must be a number conforming to the specified constraints"))
      assert.equals(400, (req("GET", "/conversations/conv_demo_1/messages?lastMessageId=msg_demo_5")))
      assert.equals(404, (req("GET", "/conversations/nope/messages")))
    end)

    it("exports a location's messages page by page with nextCursor", function()
      local seen, cursor, pages = {}, nil, 0
      for i = 1, 12 do send({ type = "SMS", contactId = "contact_export", message = "e" .. i }) end
      repeat
        local q = { locationId = "loc_sandbox", limit = 10 }
        if cursor then q.cursor = cursor end
        local status, r = req("GET", "/conversations/messages/export" .. qs(q))
        assert.equals(200, status)
        assert.equals(18, r.total)
        pages = pages + 1
        for _, m in ipairs(r.messages) do
          assert.is_nil(seen[m.id])
          seen[m.id] = true
        end
        cursor = r.nextCursor
      until cursor == cjson.null
      assert.equals(2, pages)
      local n = 0
      for _ in pairs(seen) do n = n + 1 end
      assert.equals(18, n)

      local _, email = req("GET", "/conversations/messages/export" .. qs({ locationId = "loc_sandbox", channel = "Email",
        sortOrder = "asc", limit = 10 }))
      assert.equals(2, email.total)
      assert.equals("msg_demo_3", email.messages[1].id)
      assert.equals(cjson.null, email.nextCursor)
      local _, dated = req("GET", "/conversations/messages/export" .. qs({ locationId = "loc_sandbox",
        startDate = "2024-03-28T00:00:00.000Z", endDate = "2024-03-29T23:59:59.000Z" }))
      assert.equals(3, dated.total)
      local status, body = req("GET", "/conversations/messages/export" .. qs({ locationId = "loc_sandbox", limit = 5 }))
      assert.equals(422, status)
      assert.same({ "limit must not be less than 10" }, body.message)
      status, body = req("GET", "/conversations/messages/export" .. qs({ locationId = "loc_sandbox", cursor = "garbage!" }))
      assert.equals(400, status)
      assert.equals("Invalid cursor", body.message)
    end)
  end)

  describe("sending", function()
    it("schedules a message, cancels it once, and refuses to cancel what is not scheduled", function()
      local _, r = send({ type = "SMS", contactId = "contact_demo_1", message = "later",
        scheduledTimestamp = os.time() + 3600 })
      local _, m = req("GET", "/conversations/messages/" .. r.messageId)
      assert.equals("scheduled", m.status)
      local status, c = req("DELETE", "/conversations/messages/" .. r.messageId .. "/schedule")
      assert.equals(200, status)
      assert.same({ status = 200, message = "Scheduled message cancelled successfully" }, c)
      assert.equals(404, (req("GET", "/conversations/messages/" .. r.messageId)))
      local s2, again = req("DELETE", "/conversations/messages/" .. r.messageId .. "/schedule")
      assert.equals(404, s2)
      assert.equals("Message not found", again.message)
      local s3, sent = req("DELETE", "/conversations/messages/msg_demo_1/schedule")
      assert.equals(400, s3)
      assert.same({ statusCode = 400, message = "Only scheduled messages can be cancelled", error = "Bad Request" }, sent)
      assert.equals(200, (req("GET", "/conversations/messages/msg_demo_1")))
    end)

    it("stores an email readable by get_email, and cancels a scheduled email by its email id", function()
      local _, r = send({ type = "Email", contactId = "contact_demo_2", subject = "Hello", html = "<p>Hi</p>",
        emailFrom = "me@example.com", emailTo = "charles@example.com", emailCc = { "cc@example.com" },
        scheduledTimestamp = os.time() + 3600 })
      local status, e = req("GET", "/conversations/messages/email/" .. r.emailMessageId)
      assert.equals(200, status)
      assert.equals(r.emailMessageId, e.id)
      assert.equals("conv_demo_2", e.conversationId)
      assert.equals("Hello", e.subject)
      assert.equals("<p>Hi</p>", e.body)
      assert.equals("me@example.com", e.from)
      assert.same({ "charles@example.com" }, e.to)
      assert.same({ "cc@example.com" }, e.cc)
      assert.equals("scheduled", e.status)
      assert.equals("outbound", e.direction)
      local s2, seed = req("GET", "/conversations/messages/email/emsg_demo_4")
      assert.equals(200, s2)
      assert.equals("emsg_demo_3", seed.replyToMessageId)
      assert.equals(200, (req("DELETE", "/conversations/messages/email/" .. r.emailMessageId .. "/schedule")))
      assert.equals(404, (req("GET", "/conversations/messages/email/" .. r.emailMessageId)))
      assert.equals(404, (req("DELETE", "/conversations/messages/email/" .. r.emailMessageId .. "/schedule")))
      assert.equals(400, (req("DELETE", "/conversations/messages/email/emsg_demo_3/schedule")))
      assert.equals(404, (req("GET", "/conversations/messages/email/msg_demo_3")))
    end)

    it("adds an outbound call and a review reply to a conversation", function()
      local status, r = req("POST", "/conversations/messages/outbound", { type = "Call", conversationId = "conv_demo_1",
        conversationProviderId = "provider_sandbox", date = "2025-02-01T10:00:00.000Z",
        call = { from = "+1555", to = "+1666", status = "completed" } })
      assert.equals(201, status)
      assert.is_true(r.success)
      assert.equals("contact_demo_1", r.contactId)
      local _, m = req("GET", "/conversations/messages/" .. r.messageId)
      assert.equals("TYPE_CALL", m.messageType)
      assert.equals("outbound", m.direction)
      assert.equals("completed", m.meta.callStatus)
      assert.equals("2025-02-01T10:00:00.000Z", m.dateAdded)
      local s2, bad = req("POST", "/conversations/messages/outbound", { type = "SMS", conversationId = "conv_demo_1" })
      assert.equals(422, s2)
      assert.is_true(contains(bad.message, "type must be one of the following values: Call"))
      assert.is_true(contains(bad.message, "conversationProviderId should not be empty"))

      local s3, rr = req("POST", "/conversations/messages/review-reply", { conversationId = "conv_demo_3",
        locationId = "loc_sandbox", message = "Thanks for the review!" })
      assert.equals(201, s3)
      assert.equals("conv_demo_3", rr.conversationId)
      local _, rm = req("GET", "/conversations/messages/" .. rr.messageId)
      assert.equals("TYPE_REVIEW", rm.messageType)
      assert.equals("Thanks for the review!", rm.body)
      assert.equals(404, (req("POST", "/conversations/messages/review-reply", { conversationId = "nope",
        locationId = "loc_sandbox", message = "x" })))
    end)

    it("sets a message's attachments, except on calls", function()
      local status, r = req("PUT", "/conversations/messages/msg_demo_1/attachments", { attachments = { "https://x/a.png" } })
      assert.equals(200, status)
      assert.is_true(r.success)
      local _, m = req("GET", "/conversations/messages/msg_demo_1")
      assert.same({ "https://x/a.png" }, m.attachments)
      assert.equals(403, (req("PUT", "/conversations/messages/msg_demo_6/attachments", { attachments = {} })))
      local s2, bad = req("PUT", "/conversations/messages/msg_demo_1/attachments", { attachments = { 1 } })
      assert.equals(422, s2)
      assert.same({ "each value in attachments must be a string" }, bad.message)
      assert.equals(404, (req("PUT", "/conversations/messages/nope/attachments", { attachments = {} })))
    end)

    it("takes live chat typing events (isTyping a boolean, or the spec's string)", function()
      local body = { locationId = "loc_sandbox", isTyping = true, visitorId = "v1", conversationId = "conv_demo_1" }
      local status, r = req("POST", "/conversations/providers/live-chat/typing", body)
      assert.equals(201, status)
      assert.same({ success = true }, r)
      assert.is_true(sb:control("GET", "/_sandbox/typing?conversationId=conv_demo_1").isTyping)
      body.isTyping = "false"
      assert.equals(201, (req("POST", "/conversations/providers/live-chat/typing", body)))
      assert.is_false(sb:control("GET", "/_sandbox/typing?conversationId=conv_demo_1").isTyping)
      body.isTyping = 1
      local s2, bad = req("POST", "/conversations/providers/live-chat/typing", body)
      assert.equals(422, s2)
      assert.same({ "isTyping must be a boolean value" }, bad.message)
    end)
  end)

  describe("calls", function()
    it("answers the seed call's recording as raw audio and its transcription as JSON and text", function()
      local status, body, h = req("GET", "/conversations/messages/msg_demo_6/locations/loc_sandbox/recording")
      assert.equals(200, status)
      assert.equals("audio/x-wav", h["content-type"])
      assert.equals("attachment; filename=audio.wav", h["content-disposition"])
      assert.equals("RIFF", body:sub(1, 4))
      assert.equals(tonumber(h["content-length"]), #body)
      local s2, t = req("GET", "/conversations/locations/loc_sandbox/messages/msg_demo_6/transcription")
      assert.equals(200, s2)
      assert.equals(2, #t)
      assert.equals("Hello, this is Alan returning your call.", t[1].transcript)
      for _, f in ipairs({ "mediaChannel", "sentenceIndex", "startTime", "endTime", "confidence" }) do
        assert.equals("number", type(t[1][f]), f)
      end
      local s3, text, h3 = req("GET", "/conversations/locations/loc_sandbox/messages/msg_demo_6/transcription/download")
      assert.equals(200, s3)
      assert.equals("text/plain; charset=utf-8", h3["content-type"])
      assert.matches("Hello, this is Alan returning your call%.", text)
      assert.matches("Friday at ten", text)
      assert.equals(403, (req("GET", "/conversations/messages/msg_demo_6/locations/loc_other/recording")))
      assert.equals(404, (req("GET", "/conversations/messages/msg_demo_1/locations/loc_sandbox/recording")))
      assert.equals(404, (req("GET", "/conversations/locations/loc_sandbox/messages/msg_demo_1/transcription")))
    end)

    it("serves recordings and transcriptions injected through the control endpoints", function()
      local bytes = "\0\1\2\255binary audio\r\n"
      local r = inject({ contactId = "contact_call", type = "Call", call = { status = "answered" },
        transcription = { { mediaChannel = 1, sentenceIndex = 1, startTime = 0, endTime = 1, transcript = "hi", confidence = 1 } } })
      assert.equals(#bytes, sb:recording(r.messageId, bytes, "audio/mpeg").size)
      local s2, body, h = req("GET", "/conversations/messages/" .. r.messageId .. "/locations/loc_sandbox/recording")
      assert.equals(200, s2)
      assert.equals("audio/mpeg", h["content-type"])
      assert.equals(bytes, body)
      local _, text = req("GET", "/conversations/locations/loc_sandbox/messages/" .. r.messageId .. "/transcription/download")
      assert.equals("[0-1] hi\n", text)
      local _, m = req("GET", "/conversations/messages/" .. r.messageId)
      assert.equals("TYPE_CALL", m.messageType)
      assert.equals("answered", m.meta.callStatus)
      sb:transcription(r.messageId, { { mediaChannel = 2, sentenceIndex = 1, startTime = 5, endTime = 7,
        transcript = "replaced", confidence = 0.5 } })
      local _, t = req("GET", "/conversations/locations/loc_sandbox/messages/" .. r.messageId .. "/transcription")
      assert.equals("replaced", t[1].transcript)
      local c = sb:inbound({ contactId = "contact_call2", type = "Call", recording = { content_type = "audio/ogg",
        base64 = "T2dnUw==" } })
      local _, ogg, h2 = req("GET", "/conversations/messages/" .. c.messageId .. "/locations/loc_sandbox/recording")
      assert.equals("OggS", ogg)
      assert.equals("audio/ogg", h2["content-type"])
    end)
  end)

  describe("uploads", function()
    local FIELDS = { { "conversationId", "conv_demo_1" }, { "contactId", "contact_demo_1" }, { "locationId", "loc_sandbox" } }

    local function upload(fields, files, boundary)
      local body, ct = multipart(fields, files, boundary)
      return req("POST", "/conversations/messages/upload", body, { ["Content-Type"] = ct })
    end

    it("stores multipart files and serves them at the uploadedFiles URLs", function()
      local png = "\137PNG\r\n\26\n" .. ("\0\255"):rep(500)
      local status, r = upload(FIELDS, { { "fileAttachment", "pic.png", "image/png", png },
        { "fileAttachment", "notes one.txt", "text/plain", "line 1\r\n--not a boundary\r\n" } })
      assert.equals(200, status)
      local url = r.uploadedFiles["pic.png"]
      assert.matches("^http://127%.0%.0%.1:%d+/_sandbox/files/%w+/pic%.png$", url)
      local path = url:match("^http://[^/]+(/.*)$")
      local s2, got, h = req("GET", path, nil, { Authorization = false })
      assert.equals(200, s2)
      assert.equals("image/png", h["content-type"])
      assert.equals(png, got)
      local tpath = r.uploadedFiles["notes one.txt"]:match("^http://[^/]+(/.*)$")
      assert.matches("notes%%20one%.txt$", tpath)
      local _, txt = req("GET", tpath)
      assert.equals("line 1\r\n--not a boundary\r\n", txt)
      -- the URLs go into a message's attachments
      local _, sent = send({ type = "SMS", contactId = "contact_demo_1", attachments = { url } })
      local _, m = req("GET", "/conversations/messages/" .. sent.messageId)
      assert.same({ url }, m.attachments)
      -- the log shows the fields and the files, not a decoded body
      local e
      for _, entry in ipairs(sb:requests()) do
        if entry.path == "/conversations/messages/upload" then e = entry end
      end
      assert.equals("conv_demo_1", e.body.conversationId)
      assert.equals("pic.png", e.body.files[1].filename)
    end)

    it("answers the limits as the API does: 5 files, 5 MB each", function()
      local six = {}
      for i = 1, 6 do six[i] = { "fileAttachment", "f" .. i .. ".txt", "text/plain", "x" } end
      local status, body = upload(FIELDS, six)
      assert.equals(400, status)
      assert.matches("Too many files", body.message)
      local five = { six[1], six[2], six[3], six[4], six[5] }
      assert.equals(200, (upload(FIELDS, five)))
      local group = { FIELDS[1], FIELDS[2], FIELDS[3], { "isGroupSms", "true" } }
      status, body = upload(group, { six[1], six[2] })
      assert.equals(400, status)
      assert.matches("at most 1 per request", body.message)
      assert.equals(200, (upload(group, { six[1] })))
      local big = ("a"):rep(5 * 1024 * 1024 + 1)
      status, body = upload(FIELDS, { { "fileAttachment", "big.bin", "application/octet-stream", big } })
      assert.equals(413, status)
      assert.equals(413, body.statusCode)
      assert.matches("File too large", body.message)
      local exact = ("a"):rep(5 * 1024 * 1024)
      assert.equals(200, (upload(FIELDS, { { "fileAttachment", "max.bin", "application/octet-stream", exact } })))
    end)

    it("validates the form fields and the body's encoding", function()
      local status, body = upload({ { "conversationId", "conv_demo_1" } }, { { "fileAttachment", "a.txt", "text/plain", "x" } })
      assert.equals(422, status)
      assert.is_true(contains(body.message, "contactId should not be empty"))
      assert.is_true(contains(body.message, "locationId should not be empty"))
      status = upload(FIELDS, { { "other", "a.txt", "text/plain", "x" } })
      assert.equals(400, status)
      status = upload(FIELDS, {})
      assert.equals(400, status)
      status = req("POST", "/conversations/messages/upload", { conversationId = "conv_demo_1" })
      assert.equals(415, status)
      status, body = req("POST", "/conversations/messages/upload", "--b\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\nno end",
        { ["Content-Type"] = "multipart/form-data; boundary=b" })
      assert.equals(400, status)
      assert.matches("Malformed multipart body", body.message)
      local fields = { { "conversationId", "conv_demo_2" }, { "contactId", "contact_demo_1" }, { "locationId", "loc_sandbox" } }
      assert.equals(400, (upload(fields, { { "fileAttachment", "a.txt", "text/plain", "x" } })))
    end)

    it("initiates, receives and completes a large upload", function()
      local status, r = req("POST", "/conversations/messages/upload/initiate", { locationId = "loc_sandbox",
        conversationId = "conv_demo_1", filename = "video.mp4", contentType = "video/mp4", fileSize = 1000, channel = "SMS" })
      assert.equals(200, status)
      for _, f in ipairs({ "uploadUrl", "uploadId", "filePath", "expiresAt", "maxFileSize" }) do assert.not_nil(r[f], f) end
      local done = { uploadId = r.uploadId, filePath = r.filePath, locationId = "loc_sandbox",
        conversationId = "conv_demo_1", filename = "video.mp4" }
      local s1, early = req("POST", "/conversations/messages/upload/complete", done)
      assert.equals(400, s1)
      assert.matches("not been uploaded", early.message)
      local bytes = ("\0video"):rep(2000)
      local put = r.uploadUrl:match("^http://[^/]+(/.*)$")
      assert.equals(200, (req("PUT", put, bytes, { ["Content-Type"] = "video/mp4", Authorization = false })))
      local s2, c = req("POST", "/conversations/messages/upload/complete", done)
      assert.equals(200, s2)
      assert.equals(#bytes, c.metadata.size)
      assert.equals("video/mp4", c.metadata.contentType)
      local _, got = req("GET", c.uploadedFiles["video.mp4"]:match("^http://[^/]+(/.*)$"))
      assert.equals(bytes, got)
      assert.equals(404, (req("POST", "/conversations/messages/upload/complete", done)))
      local s3 = req("POST", "/conversations/messages/upload/initiate", { locationId = "loc_sandbox",
        conversationId = "conv_demo_1", filename = "huge.mp4", contentType = "video/mp4", fileSize = 1e12, channel = "SMS" })
      assert.equals(413, s3)
      local s4, bad = req("POST", "/conversations/messages/upload/initiate", { locationId = "loc_sandbox" })
      assert.equals(422, s4)
      assert.is_true(contains(bad.message, "filename should not be empty"))
    end)
  end)

  describe("preferences", function()
    it("creates, lists and updates custom subtypes", function()
      local Q = "?locationId=loc_sandbox"
      local status, r = req("POST", "/conversations/preferences/custom-subtypes" .. Q,
        { name = "Newsletter", channel = "email", language = "en", description = "Monthly news" })
      assert.equals(201, status)
      local s = r.customSubtype
      assert.equals("Newsletter", s.name)
      assert.is_false(s.archived)
      assert.equals(409, (req("POST", "/conversations/preferences/custom-subtypes" .. Q,
        { name = "Newsletter", channel = "email", language = "en" })))
      local s2, u = req("PUT", "/conversations/preferences/custom-subtypes/" .. s.id .. Q, { archived = true, name = "News" })
      assert.equals(200, s2)
      assert.is_true(u.customSubtype.archived)
      local _, list = req("GET", "/conversations/preferences/custom-subtypes" .. Q)
      assert.equals(1, #list.customSubtypes)
      assert.equals("News", list.customSubtypes[1].name)
      assert.equals(404, (req("PUT", "/conversations/preferences/custom-subtypes/nope" .. Q, {})))
      local s3, bad = req("POST", "/conversations/preferences/custom-subtypes" .. Q,
        { name = ("n"):rep(101), channel = "fax" })
      assert.equals(422, s3)
      assert.same({ "name must be shorter than or equal to 100 characters",
        "channel must be one of the following values: email, sms", "language must be a string",
        "language should not be empty" }, bad.message)
      local s4, noloc = req("GET", "/conversations/preferences/custom-subtypes")
      assert.equals(422, s4)
      assert.same({ "locationId must be a string", "locationId should not be empty" }, noloc.message)
    end)

    it("changes and reports a contact's email subscriptions", function()
      local _, created = req("POST", "/conversations/preferences/custom-subtypes?locationId=loc_sandbox",
        { name = "Offers", channel = "email", language = "en" })
      local sid = created.customSubtype.id
      local path = "/conversations/preferences/unsubscriptions/status" .. qs({ locationId = "loc_sandbox", contactId = "contact_demo_1" })
      local status, st = req("GET", path)
      assert.equals(200, status)
      assert.equals(2, #st.subscriptions)
      assert.equals("subscribed", st.subscriptions[1].subtype_status)
      local change = "/conversations/preferences/unsubscriptions/user-change"
      local base = { locationId = "loc_sandbox", contactId = "contact_demo_1", email = "ada@example.com" }
      local function act(a)
        local b = {}
        for k, v in pairs(base) do b[k] = v end
        b.subscription_action = a
        return req("POST", change, b)
      end
      assert.equals(201, (act({ type = "default", subtype_name = "One on One", subtype_status = "unsubscribed" })))
      local s2, r2 = act({ type = "custom", subtype_id = sid, subtype_status = "unsubscribed" })
      assert.equals(201, s2)
      assert.is_true(r2.unsubscribedAll)
      local _, st2 = req("GET", path)
      assert.equals("unsubscribed", st2.subscriptions[1].subtype_status)
      assert.equals("unsubscribed", st2.subscriptions[2].subtype_status)
      assert.equals("ada@example.com", st2.email)
      assert.equals(201, (act({ type = "resub_all", subtype_status = "subscribed" })))
      local _, st3 = req("GET", path)
      assert.is_false(st3.unsubscribedAll)
      assert.equals(404, (act({ type = "custom", subtype_id = "nope", subtype_status = "subscribed" })))
      local s4, bad = act({ type = "weekly", subtype_status = "maybe" })
      assert.equals(422, s4)
      assert.same({ "subscription_action.type must be one of the following values: default, custom, resub_all",
        "subscription_action.subtype_status must be one of the following values: subscribed, unsubscribed" }, bad.message)
      assert.equals(422, (req("GET", "/conversations/preferences/unsubscriptions/status?locationId=loc_sandbox")))
    end)
  end)

  describe("control endpoints", function()
    it("refuse a bad messages_shape and a bad injection", function()
      local status, body = sb:request("POST", "/_sandbox/config", { messages_shape = "deep" })
      assert.equals(400, status)
      assert.matches("messages_shape", body.message)
      status = sb:request("POST", "/_sandbox/inbound", { message = "no contact" })
      assert.equals(400, status)
      status = sb:request("PUT", "/_sandbox/messages/nope/recording", "x")
      assert.equals(404, status)
    end)

    it("forget a message's email record with the message past --max-messages", function()
      local sb2 = helpers.start_sandbox({ rate_limit = false, max_messages = 3 })
      local ok, err = pcall(function()
        local ids = {}
        for i = 1, 4 do
          local _, r = sb2:request("POST", "/conversations/messages", { type = "Email", contactId = "cm", subject = "s" .. i })
          ids[i] = r
        end
        assert.equals(404, (sb2:request("GET", "/conversations/messages/" .. ids[1].messageId)))
        assert.equals(404, (sb2:request("GET", "/conversations/messages/email/" .. ids[1].emailMessageId)))
        local s, e = sb2:request("GET", "/conversations/messages/email/" .. ids[4].emailMessageId)
        assert.equals(200, s)
        assert.equals("s4", e.subject)
        local _, page = sb2:request("GET", "/conversations/" .. ids[4].conversationId .. "/messages")
        assert.equals(3, #page.messages.messages)
        assert.is_false(page.messages.nextPage)
      end)
      sb2:stop()
      assert(ok, err)
    end)

    it("keep emails, subtypes and transcriptions in --state across a restart", function()
      local state = os.tmpname()
      os.remove(state)
      local sb2 = helpers.start_sandbox({ rate_limit = false, state = state })
      local ok, err = pcall(function()
        local _, r = sb2:request("POST", "/conversations/messages", { type = "Email", contactId = "cs", subject = "kept" })
        sb2:request("POST", "/conversations/preferences/custom-subtypes?locationId=loc_sandbox",
          { name = "Kept", channel = "sms", language = "en" })
        sb2:stop()
        sb2 = helpers.start_sandbox({ rate_limit = false, state = state })
        local s, e = sb2:request("GET", "/conversations/messages/email/" .. r.emailMessageId)
        assert.equals(200, s)
        assert.equals("kept", e.subject)
        local _, l = sb2:request("GET", "/conversations/preferences/custom-subtypes?locationId=loc_sandbox")
        assert.equals("Kept", l.customSubtypes[1].name)
        assert.equals(200, (sb2:request("GET", "/conversations/messages/msg_demo_6/locations/loc_sandbox/recording")))
        local _, page = sb2:request("GET", "/conversations/search?locationId=loc_sandbox")
        assert.equals(5, page.total)
      end)
      sb2:stop()
      os.remove(state)
      assert(ok, err)
    end)
  end)
end)

describe("sandbox store", function()
  it("calls store.on_message once for every message it creates, from one place", function()
    local store = require "lcsandbox.store"
    local seen = {}
    store.on_message = function(m, c, how) seen[#seen + 1] = { m.id, c.id, how } end
    local ok, err = pcall(function()
      store.seed()
      assert.equals(6, #seen)
      assert.equals("seed", seen[1][3])
      seen = {}
      local s = store.send("loc_sandbox", { type = "SMS", contactId = "contact_demo_1", message = "x" })
      store.inbound("loc_sandbox", { type = "SMS", conversationId = "conv_demo_1", contactId = "contact_demo_1",
        conversationProviderId = "p" })
      store.outbound_call("loc_sandbox", { type = "Call", conversationId = "conv_demo_1", conversationProviderId = "p" })
      store.review_reply("loc_sandbox", { conversationId = "conv_demo_3", locationId = "loc_sandbox", message = "r" })
      store.inject("loc_sandbox", { contactId = "someone" })
      assert.same({ "sent", "inbound", "outbound_call", "review_reply", "injected" },
        { seen[1][3], seen[2][3], seen[3][3], seen[4][3], seen[5][3] })
      assert.equals(s.messageId, seen[1][1])
      assert.equals("conv_demo_1", seen[1][2])
    end)
    store.on_message = nil
    store.seed()
    assert(ok, err)
  end)
end)

describe("sandbox routes", function()
  local routes = require "lcsandbox.routes"
  local unescape = function(s) return (s:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end)) end
  local router = routes.build({ operations = {
    { name = "get_one", method = "GET", path = "/things/{thingId}" },
    { name = "search", method = "GET", path = "/things/search" },
    { name = "create", method = "POST", path = "/things/" },
    { name = "sub", method = "GET", path = "/things/{thingId}/parts/{partId}" },
  } })

  it("matches literals before parameters, ignores one trailing slash, decodes each segment", function()
    assert.equals("search", (routes.match(router, "GET", "/things/search", unescape)))
    local name, params, args = routes.match(router, "GET", "/things/a%2Fb/parts/p%20q", unescape)
    assert.equals("sub", name)
    assert.same({ thingId = "a/b", partId = "p q" }, params)
    assert.same({ "a/b", "p q" }, args)
    assert.equals("create", (routes.match(router, "POST", "/things", unescape)))
    assert.equals("create", (routes.match(router, "POST", "/things/", unescape)))
    assert.equals("get_one", (routes.match(router, "GET", "/things/x/", unescape)))
    assert.is_nil(routes.match(router, "GET", "/things/search/parts/x", unescape))
    assert.is_nil(routes.match(router, "DELETE", "/things/x", unescape))
    assert.is_nil(routes.match(router, "GET", "/things//parts/x", unescape))
    assert.is_nil(routes.match(router, "GET", "/other", unescape))
  end)

  it("refuses a catalogue with two operations on one method and path", function()
    assert.has_error(function()
      routes.build({ operations = { { name = "a", method = "GET", path = "/x/{id}" }, { name = "b", method = "GET", path = "/x/{other}" } } })
    end)
  end)
end)

-- Validation (API.md §1 field lists, §2 "Invalid input ... is refused before any byte is sent").
-- Two levels: the C core's body builders (core.build_send / core.build_status: what JSON leaves), and the client
-- against the sandbox, whose request log proves that a refused call sent nothing and what an accepted one sent.
local cjson = require "cjson"
local core = require "leadconnector.core"
local leadconnector = require "leadconnector"
local lch = require "lchelpers"

local function base(extra)
  local t = { type = "SMS", contactId = "contact_demo_1" }
  for k, v in pairs(extra or {}) do t[k] = v end
  return t
end

-- Builds a send body and returns the JSON text and its decoded form (fails the test if refused).
local function send_json(fields, allow)
  local json, err = core.build_send(fields, allow)
  assert(json, err and tostring(err))
  return json, cjson.decode(json)
end

local function status_json(fields, allow)
  local json, err = core.build_status(fields, allow)
  assert(json, err and tostring(err))
  return json, cjson.decode(json)
end

-- Expects a refusal of kind invalid naming `field` (err.field and in the message).
local function refused(field, json, err)
  assert.is_nil(json)
  assert.is_true(core.is_error(err), "not an error object: " .. tostring(err))
  assert.equals("invalid", err.kind)
  assert.equals(field, err.field)
  assert.is_truthy(err.message:find(field, 1, true), "message does not name " .. field .. ": " .. err.message)
  assert.is_false(err.request_sent)
  return err
end

local SEND_STRINGS = { "subType", "appointmentId", "emailFrom", "html", "message", "subject", "replyMessageId",
  "templateId", "threadId", "conversationProviderId", "emailTo", "customSubtypeId", "fromNumber", "toNumber" }
local FORWARD_STRINGS = { "messageId", "emailMessageId", "sourceContactId", "sourceConversationId", "toEmail",
  "recipientContactId", "recipientConversationId" }

describe("send body (core.build_send)", function()
  it("needs type and contactId", function()
    refused("type", core.build_send({ contactId = "c1" }))
    refused("contactId", core.build_send({ type = "SMS" }))
    refused("type", core.build_send({}))
    local _, t = send_json({ type = "SMS", contactId = "c1" })
    assert.same({ type = "SMS", contactId = "c1" }, t)
  end)

  it("sends nothing the caller did not give", function()
    local json = send_json(base())
    assert.same({ type = "SMS", contactId = "contact_demo_1" }, cjson.decode(json))
    assert.is_nil(json:find("subType", 1, true))
    assert.is_nil(json:find("status", 1, true))
  end)

  it("accepts every message type and nothing else", function()
    for _, ty in ipairs { "SMS", "RCS", "Email", "WhatsApp", "IG", "FB", "Custom", "Live_Chat", "TIKTOK" } do
      local _, t = send_json(base { type = ty })
      assert.equals(ty, t.type)
    end
    for _, bad in ipairs { "sms", "GMB", "WebChat", "Call", "", "SMS ", "Live Chat" } do
      local err = refused("type", core.build_send(base { type = bad }))
      assert.is_truthy(err.message:find("TIKTOK", 1, true), err.message) -- names the allowed values
    end
    refused("type", core.build_send(base { type = 1 }))
    refused("type", core.build_send(base { type = true }))
  end)

  it("checks each enum: emailReplyMode, optimizationPeriod, status", function()
    local enums = {
      emailReplyMode = { ok = { "reply", "reply_all" }, bad = { "Reply", "replyAll", "all" } },
      optimizationPeriod = { ok = { "24h", "48h", "72h" }, bad = { "12h", "24", "96h" } },
      status = { ok = { "delivered", "failed", "pending", "read" }, bad = { "sent", "opened", "READ", "" } },
    }
    for field, e in pairs(enums) do
      for _, v in ipairs(e.ok) do
        local _, t = send_json(base { [field] = v })
        assert.equals(v, t[field])
      end
      for _, v in ipairs(e.bad) do refused(field, core.build_send(base { [field] = v })) end
      refused(field, core.build_send(base { [field] = 24 }))
      refused(field, core.build_send(base { [field] = {} }))
    end
  end)

  it("contactId: a non-empty string without control characters", function()
    refused("contactId", core.build_send(base { contactId = "" }))
    refused("contactId", core.build_send(base { contactId = 42 }))
    refused("contactId", core.build_send(base { contactId = {} }))
    refused("contactId", core.build_send(base { contactId = "c\n1" }))
    refused("contactId", core.build_send(base { contactId = "c\0001" }))
    refused("contactId", core.build_send(base { contactId = "c\1271" }))
    local err = select(2, core.build_send(base { contactId = "secret\r\nvalue" }))
    assert.is_nil(tostring(err):find("secret", 1, true)) -- the value itself is not echoed
  end)

  it("every string field takes a string and refuses other types", function()
    for _, f in ipairs(SEND_STRINGS) do
      local _, t = send_json(base { [f] = "v-" .. f })
      assert.equals("v-" .. f, t[f])
      refused(f, core.build_send(base { [f] = 12 }))
      refused(f, core.build_send(base { [f] = true }))
      refused(f, core.build_send(base { [f] = { "x" } }))
      local err = refused(f, core.build_send(base { [f] = function() end }))
      assert.is_truthy(err.message:find("string", 1, true))
    end
  end)

  it("message text keeps newlines, quotes, backslashes and Unicode exactly", function()
    local text = 'line 1\nline 2\t"quoted" \\ back/slash \226\130\172 \240\159\152\128'
    local json, t = send_json(base { message = text, html = "<p>a</p>\r\n" })
    assert.equals(text, t.message)
    assert.equals("<p>a</p>\r\n", t.html)
    assert.is_nil(json:find("\n", 1, true)) -- escaped inside the JSON text
  end)

  it("refuses strings that are not UTF-8", function()
    refused("message", core.build_send(base { message = "caf\233" }))
    refused("subject", core.build_send(base { subject = "\255\254" }))
    refused("message", core.build_send(base { message = "\237\160\128" })) -- a UTF-16 surrogate
  end)

  describe("string arrays (attachments, emailCc, emailBcc)", function()
    for _, f in ipairs { "attachments", "emailCc", "emailBcc" } do
      it(f .. ": empty table leaves as [] and values keep their order", function()
        local json, t = send_json(base { [f] = {} })
        assert.is_truthy(json:find('"' .. f .. '":[]', 1, true), json)
        assert.is_nil(json:find('"' .. f .. '":{}', 1, true))
        assert.same({}, t[f])
        json, t = send_json(base { [f] = { "b@x.test", "a@x.test", "c@x.test" } })
        assert.is_truthy(json:find('"' .. f .. '":["b@x.test","a@x.test","c@x.test"]', 1, true), json)
        assert.same({ "b@x.test", "a@x.test", "c@x.test" }, t[f])
      end)
      it(f .. ": refuses non-arrays and non-string elements", function()
        refused(f, core.build_send(base { [f] = "a@x.test" }))
        refused(f, core.build_send(base { [f] = 3 }))
        refused(f, core.build_send(base { [f] = { to = "a@x.test" } }))
        refused(f, core.build_send(base { [f] = { "a", nil, "c" } }))
        refused(f, core.build_send(base { [f] = { [0] = "a" } }))
        refused(f, core.build_send(base { [f] = { "a", x = "b" } }))
        refused(f .. "[2]", core.build_send(base { [f] = { "a", 2 } }))
        refused(f .. "[1]", core.build_send(base { [f] = { {} } }))
        refused(f .. "[3]", core.build_send(base { [f] = { "a", "b", "\255" } }))
      end)
    end
  end)

  describe("numbers (scheduledTimestamp)", function()
    it("integers leave as integers", function()
      for _, v in ipairs { 0, 1, 1700000000, 4102444800, -5 } do
        local json = send_json(base { scheduledTimestamp = v })
        assert.equals(("%d"):format(v), json:match('"scheduledTimestamp":([^,}]+)'))
      end
    end)

    it("#lua54only integers beyond 2^53 leave exact", function()
      local v = math.tointeger(9007199254740993)
      local json = send_json(base { scheduledTimestamp = v })
      assert.is_truthy(json:find('"scheduledTimestamp":9007199254740993[,}]'), json)
    end)

    it("floats round-trip to the same double", function()
      for _, v in ipairs { 1.5, 0.1, 1 / 3, 1700000000.25, 2 ^ -40, 1e-300, 1.7976931348623157e308, -2.5 } do
        local json, t = send_json(base { scheduledTimestamp = v })
        assert.equals(v, t.scheduledTimestamp)
        assert.equals(v, tonumber(json:match('"scheduledTimestamp":([^,}]+)')))
      end
    end)

    it("refuses NaN, infinities and non-numbers", function()
      refused("scheduledTimestamp", core.build_send(base { scheduledTimestamp = 0 / 0 }))
      refused("scheduledTimestamp", core.build_send(base { scheduledTimestamp = math.huge }))
      refused("scheduledTimestamp", core.build_send(base { scheduledTimestamp = -math.huge }))
      refused("scheduledTimestamp", core.build_send(base { scheduledTimestamp = "1700000000" }))
      refused("scheduledTimestamp", core.build_send(base { scheduledTimestamp = true }))
    end)
  end)

  it("booleans: true and false both leave, nothing else is a boolean", function()
    local json, t = send_json(base { usesNativeSchedulingAi = false })
    assert.is_truthy(json:find('"usesNativeSchedulingAi":false', 1, true), json)
    assert.is_false(t.usesNativeSchedulingAi)
    _, t = send_json(base { usesNativeSchedulingAi = true })
    assert.is_true(t.usesNativeSchedulingAi)
    refused("usesNativeSchedulingAi", core.build_send(base { usesNativeSchedulingAi = "false" }))
    refused("usesNativeSchedulingAi", core.build_send(base { usesNativeSchedulingAi = 0 }))
  end)

  describe("forward object", function()
    it("takes every field of the forward config", function()
      local fwd = { isForwarded = false, forwardWholeThread = false }
      for _, f in ipairs(FORWARD_STRINGS) do fwd[f] = "v-" .. f end
      local json, t = send_json(base { forward = fwd })
      assert.same(fwd, t.forward)
      assert.is_truthy(json:find('"isForwarded":false', 1, true))
      assert.is_truthy(json:find('"forwardWholeThread":false', 1, true))
    end)
    it("needs isForwarded, a boolean", function()
      refused("forward.isForwarded", core.build_send(base { forward = {} }))
      refused("forward.isForwarded", core.build_send(base { forward = { messageId = "m1" } }))
      refused("forward.isForwarded", core.build_send(base { forward = { isForwarded = "true" } }))
      refused("forward.forwardWholeThread",
        core.build_send(base { forward = { isForwarded = true, forwardWholeThread = 1 } }))
    end)
    it("checks the types of its string fields", function()
      for _, f in ipairs(FORWARD_STRINGS) do
        refused("forward." .. f, core.build_send(base { forward = { isForwarded = true, [f] = 5 } }))
      end
    end)
    it("must be a table", function()
      refused("forward", core.build_send(base { forward = true }))
      refused("forward", core.build_send(base { forward = "yes" }))
    end)
    it("refuses unknown keys inside it, unless allowed", function()
      local json, err = core.build_send(base { forward = { isForwarded = true, bogus = 1 } })
      assert.is_nil(json)
      assert.equals("invalid", err.kind)
      assert.is_truthy(err.message:find("forward.bogus", 1, true), err.message)
      local _, t = send_json(base { forward = { isForwarded = true, bogus = 1 } }, true)
      assert.equals(1, t.forward.bogus)
    end)
  end)

  describe("unknown keys", function()
    it("are refused, naming the key and the way out", function()
      local json, err = core.build_send(base { mesage = "typo" })
      assert.is_nil(json)
      assert.equals("invalid", err.kind)
      assert.is_truthy(err.message:find("mesage", 1, true), err.message)
      assert.is_truthy(err.message:find("allow_unknown", 1, true), err.message)
      assert.is_false(err.request_sent)
    end)
    it("are sent as given with allow_unknown", function()
      local _, t = send_json(base { newField = "x", newNumber = 2.5, newFlag = false, newList = { "a", "b" },
        newObj = { k = "v" } }, true)
      assert.equals("x", t.newField)
      assert.equals(2.5, t.newNumber)
      assert.is_false(t.newFlag)
      assert.same({ "a", "b" }, t.newList)
      assert.same({ k = "v" }, t.newObj)
    end)
    it("numbers inside unknown tables round-trip too", function()
      local vals = { 1 / 3, 0.1, 1234567890123456, 2 ^ -30, 1e300 }
      local json, t = send_json(base { newObj = { list = vals, deep = { x = 1 / 7 } }, newTop = 1 / 7 }, true)
      for i, v in ipairs(vals) do assert.equals(v, t.newObj.list[i], json) end
      assert.equals(1 / 7, t.newObj.deep.x)
      assert.equals(1 / 7, t.newTop)
      assert.is_nil(json:find("e+15", 1, true), json) -- the 16-digit integer is written out, not rounded
      local _, err = core.build_send(base { newObj = { x = 0 / 0 } }, true)
      assert.equals("invalid", err.kind)
      _, err = core.build_send(base { newObj = { [true] = 1 } }, true)
      assert.equals("invalid", err.kind)
      _, err = core.build_send(base { newObj = { "a", nil, "c" } }, true)
      assert.equals("invalid", err.kind)
    end)

    it("#lua54only integers inside unknown tables leave exact", function()
      local v = math.tointeger(9007199254740993)
      local json = send_json(base { newObj = { id = v } }, true)
      assert.is_truthy(json:find('"id":9007199254740993', 1, true), json)
    end)

    it("known fields are still checked with allow_unknown", function()
      refused("type", core.build_send(base { type = "Fax", newField = "x" }, true))
      refused("contactId", core.build_send({ type = "SMS", newField = "x" }, true))
    end)
    it("values that JSON cannot hold are refused even with allow_unknown", function()
      local _, err = core.build_send(base { newField = function() end }, true)
      assert.equals("invalid", err.kind)
      _, err = core.build_send(base { newField = 0 / 0 }, true)
      assert.equals("invalid", err.kind)
      _, err = core.build_send(base { newField = "\255" }, true)
      assert.equals("invalid", err.kind)
    end)
    it("non-string keys are refused", function()
      local json, err = core.build_send({ type = "SMS", contactId = "c1", "positional" })
      assert.is_nil(json)
      assert.equals("invalid", err.kind)
      json, err = core.build_send({ type = "SMS", contactId = "c1", [true] = 1 }, true)
      assert.is_nil(json)
      assert.equals("invalid", err.kind)
    end)
  end)

  it("a non-table is a misuse and raises", function()
    assert.has_error(function() core.build_send("SMS") end)
    assert.has_error(function() core.build_send(nil) end)
    assert.has_error(function() core.build_status(42) end)
  end)
end)

describe("update-status body (core.build_status)", function()
  it("needs status, one of the four", function()
    refused("status", core.build_status({}))
    for _, s in ipairs { "delivered", "failed", "pending", "read" } do
      local _, t = status_json({ status = s })
      assert.same({ status = s }, t)
    end
    for _, s in ipairs { "sent", "opened", "Read", "" } do refused("status", core.build_status({ status = s })) end
    refused("status", core.build_status({ status = 1 }))
  end)

  it("error: an object of strings code, type, message", function()
    local e = { code = "30007", type = "carrier", message = "Filtered by carrier" }
    local _, t = status_json({ status = "failed", error = e })
    assert.same(e, t.error)
    refused("error", core.build_status({ status = "failed", error = "boom" }))
    refused("error.code", core.build_status({ status = "failed", error = { code = 30007 } }))
    refused("error.type", core.build_status({ status = "failed", error = { type = false } }))
    refused("error.message", core.build_status({ status = "failed", error = { message = {} } }))
    local json, err = core.build_status({ status = "failed", error = { code = "1", detail = "x" } })
    assert.is_nil(json)
    assert.is_truthy(err.message:find("error.detail", 1, true), err.message)
  end)

  it("emailMessageId: a string id", function()
    local _, t = status_json({ status = "read", emailMessageId = "em1" })
    assert.equals("em1", t.emailMessageId)
    refused("emailMessageId", core.build_status({ status = "read", emailMessageId = 1 }))
    refused("emailMessageId", core.build_status({ status = "read", emailMessageId = "" }))
    refused("emailMessageId", core.build_status({ status = "read", emailMessageId = "a\tb" }))
  end)

  it("recipients: strings, {emailId, status} objects, or both", function()
    local _, t = status_json({ status = "delivered", recipients = { "a@x.test", "b@x.test" } })
    assert.same({ "a@x.test", "b@x.test" }, t.recipients)
    _, t = status_json({ status = "delivered",
      recipients = { { emailId = "a@x.test", status = "delivered" }, { emailId = "b@x.test", status = "bounced" } } })
    assert.same({ { emailId = "a@x.test", status = "delivered" }, { emailId = "b@x.test", status = "bounced" } },
      t.recipients)
    _, t = status_json({ status = "delivered", recipients = { "a@x.test", { emailId = "b@x.test" } } })
    assert.same({ "a@x.test", { emailId = "b@x.test" } }, t.recipients)
    local json = status_json({ status = "delivered", recipients = {} })
    assert.is_truthy(json:find('"recipients":[]', 1, true), json)
  end)

  it("recipients: refuses what is neither", function()
    refused("recipients", core.build_status({ status = "read", recipients = "a@x.test" }))
    refused("recipients", core.build_status({ status = "read", recipients = { a = "x" } }))
    refused("recipients[2]", core.build_status({ status = "read", recipients = { "a", 2 } }))
    refused("recipients[1]", core.build_status({ status = "read", recipients = { true } }))
    refused("recipients[1].emailId", core.build_status({ status = "read", recipients = { { emailId = 7 } } }))
    refused("recipients[2].status",
      core.build_status({ status = "read", recipients = { "a", { emailId = "b", status = false } } }))
    local json, err = core.build_status({ status = "read", recipients = { { emailId = "a", bogus = 1 } } })
    assert.is_nil(json)
    assert.is_truthy(err.message:find("recipients[1].bogus", 1, true), err.message)
  end)

  it("unknown keys are refused, and sent with allow_unknown", function()
    local json, err = core.build_status({ status = "read", reason = "x" })
    assert.is_nil(json)
    assert.is_truthy(err.message:find("reason", 1, true))
    local _, t = status_json({ status = "read", reason = "x" }, true)
    assert.equals("x", t.reason)
  end)
end)

describe("ids in paths (core.path_id)", function()
  it("leaves unreserved characters alone", function()
    assert.equals("ve9EPM428h8vShlRW1KT", core.path_id("ve9EPM428h8vShlRW1KT"))
    assert.equals("a-b_c.d~e", core.path_id("a-b_c.d~e"))
    assert.equals("...", core.path_id("..."))
  end)
  it("percent-encodes everything else into one segment", function()
    assert.equals("a%2Fb", core.path_id("a/b"))
    assert.equals("a%2Fb%2Fc", core.path_id("a/b/c"))
    assert.equals("x%3Fy%3Dz%23f", core.path_id("x?y=z#f"))
    assert.equals("100%25", core.path_id("100%"))
    assert.equals("a%20b%2Bc", core.path_id("a b+c"))
    assert.equals("%C3%A9", core.path_id("\195\169"))
    assert.equals("%5C%3B%40%3A", core.path_id("\\;@:"))
  end)
  it("puts the path's own text around the encoded id when given (what the methods use)", function()
    assert.equals("/conversations/messages/m1", core.path_id("m1", "id", "/conversations/messages/"))
    assert.equals("/conversations/messages/a%2Fb/status",
      core.path_id("a/b", "messageId", "/conversations/messages/", "/status"))
    assert.equals("/c/%C3%A9x%20y", core.path_id("\195\169x y", "id", "/c/"))
    local seg, err = core.path_id("..", "conversationId", "/conversations/")
    assert.is_nil(seg)
    assert.equals("conversationId", err.field)
  end)
  it("refuses non-strings, empty ids, control characters and dot segments", function()
    for _, bad in ipairs { { 1 }, { nil }, { {} }, { true }, { "" }, { "a\nb" }, { "a\0b" }, { "\r" }, { "a\127" },
      { "." }, { ".." } } do
      local seg, err = core.path_id(bad[1], "messageId")
      assert.is_nil(seg)
      assert.equals("invalid", err.kind)
      assert.equals("messageId", err.field)
      assert.is_truthy(err.message:find("messageId", 1, true))
      assert.is_false(err.request_sent)
    end
  end)
end)

describe("ids that hold dot segments (core.path_id)", function()
  -- Servers and proxies that decode %2F before normalising the path (nginx does, for $uri and proxy_pass with a
  -- URI) would turn "x/../../conversations/c1" into another endpoint: such ids are refused, not encoded.
  it("refuses an id with a . or .. segment between slashes", function()
    for _, bad in ipairs { "../conv_demo_1", "a/..", "a/../b", "./a", "a/./b", "a/.", "../../conversations/c1",
      "a//../b" } do
      local seg, err = core.path_id(bad, "id")
      assert.is_nil(seg, bad)
      assert.equals("invalid", err.kind)
      assert.equals("id", err.field)
    end
  end)
  it("still takes slashes and dots that are not segments of their own", function()
    assert.equals("a..b%2F..c", core.path_id("a..b/..c"))
    assert.equals("...%2F....", core.path_id(".../...."))
    assert.equals(".a%2Fb.", core.path_id(".a/b."))
  end)
end)

describe("tokens (core.check_token)", function()
  it("accepts printable tokens, refuses the rest without echoing them", function()
    assert.is_true(core.check_token("pit-0123abcd-ef45-6789"))
    for _, bad in ipairs { "", "SECRET with space", "SECRET\r\nX-Injected: 1", "SECRET\0", "SECRET\t",
      "SECRET\127", "SECRET\195\169" } do
      local ok, err = core.check_token(bad)
      assert.is_nil(ok)
      assert.equals("invalid", err.kind)
      assert.equals("token", err.field)
      assert.is_nil(tostring(err):find("SECRET", 1, true))
      assert.is_nil(lch.find_in(err, "SECRET"))
    end
    local ok, err = core.check_token(123)
    assert.is_nil(ok)
    assert.equals("invalid", err.kind)
  end)
end)

describe("the client refuses invalid input before sending anything", function()
  local sb, client

  lch.suite(function(s, c) sb, client = s, c end, nil, { max_retries = 2 })

  -- Runs fn (which must return nil, err), checks the refusal, and that the sandbox received no request.
  local function nothing_sent(field, fn)
    local value, err = fn()
    assert.is_nil(value)
    assert.is_true(leadconnector.is_error(err), "not an error object: " .. tostring(err))
    assert.equals("invalid", err.kind)
    if field then
      assert.equals(field, err.field)
      assert.is_truthy(err.message:find(field, 1, true), err.message)
    end
    assert.is_false(err.request_sent)
    assert.equals(0, err.attempts)
    assert.same({}, sb:requests())
    return err
  end

  it("send_message: missing and bad fields", function()
    nothing_sent("type", function() return client:send_message { contactId = "contact_demo_1" } end)
    nothing_sent("contactId", function() return client:send_message { type = "SMS" } end)
    nothing_sent("contactId", function() return client:send_message { type = "SMS", contactId = "" } end)
    nothing_sent("type", function() return client:send_message { type = "Fax", contactId = "c" } end)
    nothing_sent("status", function() return client:send_message(base { status = "sent" }) end)
    nothing_sent("emailCc[1]", function() return client:send_message(base { emailCc = { 1 } }) end)
    nothing_sent("forward.isForwarded", function() return client:send_message(base { forward = {} }) end)
    nothing_sent("scheduledTimestamp", function() return client:send_message(base { scheduledTimestamp = "soon" }) end)
    nothing_sent("usesNativeSchedulingAi", function() return client:send_message(base { usesNativeSchedulingAi = 1 }) end)
    local err = nothing_sent(nil, function() return client:send_message(base { mesage = "hi" }) end)
    assert.is_truthy(err.message:find("mesage", 1, true))
    assert.equals("POST", err.method)
    assert.equals("/conversations/messages", err.path)
  end)

  it("send_message: unknown keys go out with the per-call allow_unknown", function()
    local sent, err = client:send_message(base { message = "hi", newField = "x", newList = {} },
      { allow_unknown = true })
    assert.is_nil(err)
    assert.is_string(sent.messageId)
    local reqs = sb:requests()
    assert.equals(1, #reqs)
    assert.equals("x", reqs[1].body.newField)
    -- and the next call without it refuses again: the option is per call
    sb:clear_requests()
    nothing_sent(nil, function() return client:send_message(base { newField = "x" }) end)
  end)

  it("send_message: an empty array field reaches the server as []", function()
    assert(client:send_message(base { message = "hi", attachments = {}, emailCc = {}, emailBcc = {} }))
    local raw = sb:requests()[1].raw_body
    assert.is_truthy(raw:find('"attachments":[]', 1, true), raw)
    assert.is_truthy(raw:find('"emailCc":[]', 1, true), raw)
    assert.is_truthy(raw:find('"emailBcc":[]', 1, true), raw)
  end)

  it("send_message: integers, floats and false reach the server unchanged", function()
    assert(client:send_message(base { message = "n", scheduledTimestamp = 1700000000, usesNativeSchedulingAi = false,
      forward = { isForwarded = false } }))
    local r = sb:requests()[1]
    assert.is_truthy(r.raw_body:find('"scheduledTimestamp":1700000000[,}]'), r.raw_body)
    assert.is_false(r.body.usesNativeSchedulingAi)
    assert.is_false(r.body.forward.isForwarded)
    sb:reset()
    assert(client:send_message(base { message = "f", scheduledTimestamp = 1700000000.125 }))
    assert.equals(1700000000.125, sb:requests()[1].body.scheduledTimestamp)
  end)

  it("update_message_status: bad fields", function()
    nothing_sent("status", function() return client:update_message_status("msg_demo_2", {}) end)
    nothing_sent("status", function() return client:update_message_status("msg_demo_2", { status = "opened" }) end)
    nothing_sent("error.code", function()
      return client:update_message_status("msg_demo_2", { status = "failed", error = { code = 1 } })
    end)
    nothing_sent("recipients[1]", function()
      return client:update_message_status("msg_demo_2", { status = "read", recipients = { 5 } })
    end)
    local err = nothing_sent(nil, function()
      return client:update_message_status("msg_demo_2", { status = "read", extra = 1 })
    end)
    assert.equals("PUT", err.method)
    assert.equals("/conversations/messages/{messageId}/status", err.path)
  end)

  it("update_message_status: unknown keys go out with allow_unknown", function()
    assert(client:update_message_status("msg_demo_2", { status = "read", extra = "x" }, { allow_unknown = true }))
    local reqs = sb:requests()
    assert.equals(1, #reqs)
    assert.equals("x", reqs[1].body.extra)
  end)

  it("ids: non-string, empty, control characters, dot segments", function()
    local bad = { 123, true, {}, "", "a\nb", "a\rb", "msg\0x", "a\127", ".", ".." }
    for i = 1, #bad + 1 do
      local id = bad[i] -- the last round is nil
      nothing_sent("id", function() return client:get_message(id) end)
      nothing_sent("messageId", function() return client:update_message_status(id, { status = "read" }) end)
      nothing_sent("conversationId", function() return client:get_conversation(id) end)
    end
  end)

  it("ids with dot segments are refused before sending", function()
    nothing_sent("id", function() return client:get_message("../../conversations/conv_demo_1") end)
    nothing_sent("messageId", function() return client:update_message_status("../msg_demo_1", { status = "read" }) end)
    nothing_sent("conversationId", function() return client:get_conversation("x/../../conversations/conv_demo_1") end)
  end)

  it("ids never leave their path segment", function()
    local cases = {
      { "a/b", "a%2Fb" }, { "conv_demo_1/messages", "conv_demo_1%2Fmessages" }, { ".../x", "...%2Fx" },
      { "x?y=1#f", "x%3Fy%3D1%23f" }, { "100%", "100%25" }, { "a b", "a%20b" }, { "\195\169", "%C3%A9" },
      { "msg_demo_1/status", "msg_demo_1%2Fstatus" },
    }
    for _, c in ipairs(cases) do
      sb:clear_requests()
      local m, err = client:get_message(c[1])
      assert.is_nil(m)
      assert.equals("not_found", err.kind) -- it reached the get-message route, with an id that does not exist
      local conv
      conv, err = client:get_conversation(c[1])
      assert.is_nil(conv)
      assert.equals("not_found", err.kind)
      local up
      up, err = client:update_message_status(c[1], { status = "read" })
      assert.is_nil(up)
      assert.equals("not_found", err.kind)
      local reqs = sb:requests()
      assert.equals(3, #reqs)
      assert.equals("/conversations/messages/" .. c[2], reqs[1].path)
      assert.equals("GET", reqs[1].method)
      assert.equals("/conversations/" .. c[2], reqs[2].path)
      assert.equals("/conversations/messages/" .. c[2] .. "/status", reqs[3].path)
      assert.equals("PUT", reqs[3].method)
      -- the server's answer is the route's own "not found", not "Cannot GET ..." of some other path
      assert.equals("Message not found", err.message)
    end
  end)

  it("plain ids pass unchanged", function()
    local m = assert(client:get_message("msg_demo_1"))
    assert.equals("msg_demo_1", m.id)
    assert.equals("/conversations/messages/msg_demo_1", sb:requests()[1].path)
  end)

  it("a misuse raises instead of returning an error", function()
    assert.has_error(function() client:send_message("SMS") end)
    assert.has_error(function() client:send_message() end)
    assert.has_error(function() client:update_message_status("msg_demo_1", "read") end)
    assert.has_error(function() client.get_message("msg_demo_1") end)
    assert.has_error(function() client.send_message(base()) end)
    assert.has_error(function() client:get_message("msg_demo_1", "opts") end)
    assert.same({}, sb:requests())
  end)

  describe("per-call options", function()
    local cases = {
      { { timeout = "1" }, "timeout" }, { { bogus = true }, "bogus" }, { { version = "2021-4-15" }, "version" },
      { { version = "2021-04-15\r\nX: y" }, "version" }, { { allow_unknown = "yes" }, "allow_unknown" },
      { { max_retries = -1 }, "max_retries" }, { { deadline = 0 / 0 }, "deadline" },
      { { timeout = math.huge }, "timeout" }, { { version = 20210415 }, "version" },
    }
    for _, c in ipairs(cases) do
      it("refuses " .. c[2] .. " (" .. tostring(next(c[1]) and c[1][next(c[1])]):gsub("[\r\n]", " ") .. ")", function()
        nothing_sent(c[2], function() return client:get_message("msg_demo_1", c[1]) end)
        nothing_sent(c[2], function() return client:get_conversation("conv_demo_1", c[1]) end)
        nothing_sent(c[2], function() return client:send_message(base { message = "x" }, c[1]) end)
        nothing_sent(c[2], function() return client:update_message_status("msg_demo_2", { status = "read" }, c[1]) end)
      end)
    end
  end)
end)

describe("leadconnector.new refuses bad options", function()
  local function bad_new(field, opts)
    local c, err = leadconnector.new(opts)
    assert.is_nil(c)
    assert.is_true(leadconnector.is_error(err))
    assert.equals("invalid", err.kind)
    assert.equals(field, err.field)
    assert.is_truthy(err.message:find(field, 1, true), err.message)
    return err
  end

  it("token: required, a printable string", function()
    bad_new("token", {})
    bad_new("token", { token = 42 })
    bad_new("token", { token = "" })
    for _, t in ipairs { "SECRET tok", "SECRET\r\nX-Evil: 1", "SECRET\0", "SECRET\n" } do
      local err = bad_new("token", { token = t })
      assert.is_nil(tostring(err):find("SECRET", 1, true), tostring(err))
      assert.is_nil(lch.find_in(err, "SECRET"))
    end
  end)

  it("unknown options and wrong types", function()
    bad_new("tokn", { token = "t", tokn = "t" })
    bad_new("timeout", { token = "t", timeout = "5" })
    bad_new("timeout", { token = "t", timeout = -1 })
    bad_new("timeout", { token = "t", timeout = 0 / 0 })
    bad_new("connect_timeout", { token = "t", connect_timeout = math.huge })
    bad_new("max_retries", { token = "t", max_retries = "2" })
    bad_new("verify", { token = "t", verify = "no" })
    bad_new("rate_limit", { token = "t", rate_limit = 100 })
    bad_new("deadline", { token = "t", deadline = {} })
  end)

  it("base_url, version, user_agent, transport, proxy, ca_file", function()
    bad_new("base_url", { token = "t", base_url = "ftp://services.leadconnectorhq.com" })
    bad_new("base_url", { token = "t", base_url = "services.leadconnectorhq.com" })
    bad_new("base_url", { token = "t", base_url = "http://a b" })
    bad_new("base_url", { token = "t", base_url = "http://host/x?y=1" })
    bad_new("base_url", { token = "t", base_url = "http://host\r\n/" })
    bad_new("version", { token = "t", version = "v2" })
    bad_new("version", { token = "t", version = "2021-04-15\n" })
    bad_new("user_agent", { token = "t", user_agent = "app\r\nX-Evil: 1" })
    bad_new("user_agent", { token = "t", user_agent = "" })
    bad_new("transport", { token = "t", transport = "socket" })
    bad_new("proxy", { token = "t", proxy = "http://p\n" })
    bad_new("ca_file", { token = "t", ca_file = "/etc/ssl/x\0y" })
  end)

  it("a non-table raises", function()
    assert.has_error(function() leadconnector.new("token") end)
    assert.has_error(function() leadconnector.new() end)
  end)

  it("good options make a client", function()
    local c = assert(leadconnector.new { token = "t", base_url = "http://127.0.0.1:1/", version = "2021-07-28",
      timeout = 1.5, connect_timeout = 0.5, max_retries = 0, user_agent = "myapp/1.0", verify = true })
    c:close()
  end)
end)

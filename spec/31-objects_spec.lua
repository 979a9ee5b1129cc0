-- Message and Conversation objects (API.md §2: userdata made by the C core; fields with the API's names, nested
-- tables reachable, later fields readable, read-only, tostring one line, :to_table() a plain copy, == by id).
-- Made through core.finish (the answer-to-result step every transport shares), core.wrap, and from the sandbox.
local cjson = require "cjson"
local core = require "leadconnector.core"
local leadconnector = require "leadconnector"
local lch = require "lchelpers"

local MESSAGE = {
  id = "ve9EPM428h8vShlRW1KT", type = 3, messageType = "TYPE_EMAIL", locationId = "loc1", contactId = "c1",
  conversationId = "conv1", dateAdded = "2024-03-28T09:00:00.000Z", body = "Hello,\nsee you \"soon\"\r\n\tbye",
  direction = "outbound", status = "delivered", contentType = "text/html", attachments = { "https://x.test/a.pdf" },
  meta = { callDuration = 42, callStatus = "completed", email = { messageIds = { "em1", "em2" } } },
  source = "api", userId = "u1", conversationProviderId = "p1", chatWidgetId = "w1",
}
local CONVERSATION = {
  id = "conv1", contactId = "c1", locationId = "loc1", deleted = false, inbox = true, type = 1, unreadCount = 2,
  assignedTo = "u1", starred = false,
}

local function message(extra)
  local t = {}
  for k, v in pairs(MESSAGE) do t[k] = v end
  for k, v in pairs(extra or {}) do t[k] = v end
  return assert(core.finish("message", 200, cjson.encode(t)))
end

local function conversation(extra)
  local t = {}
  for k, v in pairs(CONVERSATION) do t[k] = v end
  for k, v in pairs(extra or {}) do t[k] = v end
  return assert(core.finish("conversation", 200, cjson.encode(t)))
end

describe("Message", function()
  it("is userdata of its own type", function()
    local m = message()
    assert.equals("userdata", type(m))
    assert.equals("Message", leadconnector.typeof(m))
    assert.equals("leadconnector.Message", getmetatable(m))
    assert.is_nil(leadconnector.typeof({ id = "x" }))
    assert.is_nil(leadconnector.typeof("x"))
  end)

  it("reads every field with the API's name and type", function()
    local m = message()
    for _, k in ipairs { "id", "messageType", "locationId", "contactId", "conversationId", "dateAdded", "body",
      "direction", "status", "contentType", "source", "userId", "conversationProviderId", "chatWidgetId" } do
      assert.equals(MESSAGE[k], m[k])
    end
    assert.equals(3, m.type)
    assert.is_true(lch.is_integer(m.type))
    assert.same({ "https://x.test/a.pdf" }, m.attachments)
    assert.equals(42, m.meta.callDuration)
    assert.is_true(lch.is_integer(m.meta.callDuration))
    assert.equals("completed", m.meta.callStatus)
    assert.same({ "em1", "em2" }, m.meta.email.messageIds)
    assert.equals("em2", m.meta.email.messageIds[2])
    assert.is_nil(m.nosuchfield)
    assert.is_nil(m[1])
  end)

  it("#lua54only keeps integers integers and floats floats", function()
    local m = message { meta = { callDuration = 42.5, n = 7 } }
    assert.equals("float", math.type(m.meta.callDuration))
    assert.equals("integer", math.type(m.meta.n))
    assert.equals("integer", math.type(m.type))
  end)

  it("reads fields the API adds later, nested ones included", function()
    local m = message { sentiment = "positive", score = 0.75, flags = { pinned = true, tags = { "a", "b" } } }
    assert.equals("positive", m.sentiment)
    assert.equals(0.75, m.score)
    assert.is_true(m.flags.pinned)
    assert.same({ "a", "b" }, m.flags.tags)
  end)

  it("JSON null fields read as nil, false stays false", function()
    local m = assert(core.finish("message", 200, '{"id":"m1","userId":null,"meta":{"x":null,"y":false}}'))
    assert.is_nil(m.userId)
    assert.is_nil(m.meta.x)
    assert.is_false(m.meta.y)
  end)

  it("gives copies of nested tables: mutating them does not change the object", function()
    local m = message()
    local meta = m.meta
    meta.callStatus = "changed"
    meta.email.messageIds[1] = "changed"
    meta.injected = true
    local att = m.attachments
    att[1] = "changed"
    att[2] = "added"
    assert.equals("completed", m.meta.callStatus)
    assert.same({ "em1", "em2" }, m.meta.email.messageIds)
    assert.is_nil(m.meta.injected)
    assert.same({ "https://x.test/a.pdf" }, m.attachments)
    assert.are_not.equal(m.meta, m.meta) -- a fresh copy each time
  end)

  it("is read-only", function()
    local m = message()
    assert.has_error(function() m.body = "x" end)
    assert.has_error(function() m.newfield = 1 end)
    assert.has_error(function() m.meta = {} end)
    assert.has_error(function() rawset(m, "body", "x") end)
    assert.has_error(function() setmetatable(m, {}) end)
    local ok, err = pcall(function() m.status = "read" end)
    assert.is_false(ok)
    assert.is_truthy(tostring(err):find("read-only", 1, true))
    assert.equals("delivered", m.status)
  end)

  it("tostring is one line, even when the body has newlines", function()
    local m = message()
    local s = tostring(m)
    assert.is_nil(s:find("[\r\n]"))
    assert.is_truthy(s:find("^leadconnector%.Message"))
    assert.is_truthy(s:find("ve9EPM428h8vShlRW1KT", 1, true))
    assert.is_truthy(s:find("TYPE_EMAIL", 1, true))
    assert.is_truthy(s:find("Hello,", 1, true))
    assert.is_nil(s:find("%c"))
  end)

  it("tostring stays short when the body is long", function()
    local m = message { body = ("x"):rep(100000) .. "\n" }
    local s = tostring(m)
    assert.is_true(#s < 600)
    assert.is_nil(s:find("[\r\n]"))
  end)

  it(":to_table() gives a plain deep copy", function()
    local m = message()
    local t = m:to_table()
    assert.equals("table", type(t))
    assert.is_nil(getmetatable(t))
    assert.same(MESSAGE, t)
    t.body = "changed"
    t.meta.email.messageIds[1] = "changed"
    t.extra = 1
    assert.equals(MESSAGE.body, m.body)
    assert.same({ "em1", "em2" }, m.meta.email.messageIds)
    assert.is_nil(m.extra)
    assert.same(MESSAGE, m:to_table()) -- a new copy each time
  end)

  it("== compares ids", function()
    local a, b = message(), message { body = "other body" }
    local c = message { id = "another" }
    assert.is_true(a == b)
    assert.is_false(a == c)
    assert.is_true(a ~= c)
    assert.is_true(a == a)
  end)

  it("a message and a conversation with the same id are not equal", function()
    local m = message { id = "same" }
    local c = conversation { id = "same" }
    assert.is_false(m == c)
    assert.is_false(c == m)
    assert.is_false(m == "same")
    assert.is_false(m == m:to_table())
  end)

  it("#lua54only pairs walks the fields, on a copy", function()
    local m = message()
    local seen = {}
    for k, v in pairs(m) do seen[k] = v end
    assert.same(MESSAGE, seen)
    for _, v in pairs(m) do
      if type(v) == "table" then v.mutated = true end
    end
    assert.is_nil(m.meta.mutated)
    assert.is_nil(m.attachments.mutated)
  end)

  it("an answer wrapped one level down is unwrapped", function()
    local m = assert(core.finish("message", 200, cjson.encode({ message = { id = "m9", body = "b" }, traceId = "t" })))
    assert.equals("m9", m.id)
    assert.equals("b", m.body)
  end)
end)

describe("Conversation", function()
  it("reads every field with the API's name and type", function()
    local c = conversation()
    assert.equals("userdata", type(c))
    assert.equals("Conversation", leadconnector.typeof(c))
    assert.equals("leadconnector.Conversation", getmetatable(c))
    for k, v in pairs(CONVERSATION) do assert.equals(v, c[k]) end
    assert.is_false(c.deleted)
    assert.is_false(c.starred)
    assert.is_true(lch.is_integer(c.unreadCount))
    assert.is_true(lch.is_integer(c.type))
  end)

  it("reads fields the API adds later", function()
    local c = conversation { lastMessageBody = "hi", followers = { "u2" } }
    assert.equals("hi", c.lastMessageBody)
    assert.same({ "u2" }, c.followers)
  end)

  it("is read-only, tostring one line, to_table a copy, == by id", function()
    local c = conversation()
    assert.has_error(function() c.unreadCount = 0 end)
    assert.equals(2, c.unreadCount)
    local s = tostring(c)
    assert.is_truthy(s:find("^leadconnector%.Conversation"))
    assert.is_truthy(s:find("conv1", 1, true))
    assert.is_nil(s:find("[\r\n]"))
    local t = c:to_table()
    assert.same(CONVERSATION, t)
    t.unreadCount = 99
    assert.equals(2, c.unreadCount)
    assert.is_true(c == conversation { unreadCount = 5 })
    assert.is_false(c == conversation { id = "conv2" })
  end)

  it("#lua54only pairs walks the fields", function()
    local seen = {}
    for k, v in pairs(conversation()) do seen[k] = v end
    assert.same(CONVERSATION, seen)
  end)
end)

describe("core.wrap", function()
  it("builds the same objects from a table", function()
    local src = { id = "m1", body = "b", meta = { k = { 1, 2 } } }
    local m = core.wrap("message", src)
    assert.equals("Message", core.typeof(m))
    assert.equals("b", m.body)
    assert.same({ k = { 1, 2 } }, m.meta)
    local c = core.wrap("conversation", { id = "c1" })
    assert.equals("Conversation", core.typeof(c))
    assert.is_false(m == c)
    assert.has_error(function() core.wrap("contact", {}) end)
    assert.has_error(function() core.wrap("message", "x") end)
  end)
end)

describe("objects from the sandbox", function()
  local sb, client

  lch.suite(function(s, c) sb, client = s, c end)

  it("a field the API adds later is readable from a real answer", function()
    sb:fault { method = "GET", path = "/conversations/messages/m_new", status = 200, body = {
      id = "m_new", body = "hi", direction = "inbound", status = "read", messageType = "TYPE_SMS", type = 2,
      reactions = { { emoji = "thumbs_up", count = 2 } }, translatedBody = "salut", meta = { email = { messageIds = {} } },
    } }
    local m = assert(client:get_message("m_new"))
    assert.equals("m_new", m.id)
    assert.equals("salut", m.translatedBody)
    assert.equals("thumbs_up", m.reactions[1].emoji)
    assert.equals(2, m.reactions[1].count)
    assert.same({}, m.meta.email.messageIds)
    assert.has_error(function() m.translatedBody = "x" end)
  end)

  it("two reads of one message are ==, different messages are not", function()
    local a = assert(client:get_message("msg_demo_1"))
    local b = assert(client:get_message("msg_demo_1"))
    local c = assert(client:get_message("msg_demo_2"))
    assert.is_true(a == b)
    assert.is_false(a == c)
    local conv = assert(client:get_conversation("conv_demo_1"))
    assert.is_false(a == conv)
    assert.equals(a.conversationId, conv.id)
  end)

  it("the send answer is a plain table", function()
    local sent = assert(client:send_message { type = "SMS", contactId = "contact_demo_1", message = "x" })
    assert.equals("table", type(sent))
    assert.is_nil(getmetatable(sent))
    sent.messageId = "mine" -- the caller's own table
    assert.equals("mine", sent.messageId)
  end)
end)

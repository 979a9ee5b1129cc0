-- Every operation of the catalogue over real HTTP (a scripted server in another process, spec/opshelpers.lua):
-- the request each method sends (method, path with its ids encoded, query string, body, Content-Type), the answer
-- shapes (pages of userdata, both get_messages shapes, tables, raw bytes), the paging iterators over several
-- requests, the multipart upload and its limits, query validation, and the never-twice rule for every POST.
local cjson = require "cjson"
local leadconnector = require "leadconnector"
local catalogue = require "leadconnector.catalogue"
local ops = require "opshelpers"
local lch = require "lchelpers"

local function json(t) return { status = 200, body = cjson.encode(t) } end

local function client_for(srv, o)
  local opts = { token = "ops-token", base_url = srv.url, max_retries = 0, rate_limit = false,
    timeout = 5 * lch.scale, retry_base = 0.001, retry_cap = 0.002 }
  for k, v in pairs(o or {}) do opts[k] = v end
  return assert(leadconnector.new(opts))
end

local OP = {}
for _, op in ipairs(catalogue.operations) do OP[op.name] = op end

describe("operations: the requests they send", function()
  local srv, client
  before_each(function()
    srv = ops.server { json { ok = true } }
    client = client_for(srv)
  end)
  after_each(function()
    client:close()
    srv:stop()
  end)

  it("DELETE goes out as DELETE without a body, ids percent-encoded in the path", function()
    local r, err = client:cancel_scheduled_message("m 1/é")
    assert.is_nil(err)
    assert.same({ ok = true }, r)
    local req = srv:requests()[1]
    assert.equals("DELETE", req.method)
    assert.equals("/conversations/messages/m%201%2F%C3%A9/schedule", req.target)
    assert.equals("", req.body)
    assert.is_nil(req.headers["content-type"])
  end)

  it("two ids go where the template says, in API.md's argument order", function()
    assert(client:get_message_transcription("loc1", "msg2"))
    assert(client:get_message_recording("loc1", "msg2"))
    local reqs = srv:requests()
    assert.equals("/conversations/locations/loc1/messages/msg2/transcription", reqs[1].target)
    assert.equals("/conversations/messages/msg2/locations/loc1/recording", reqs[2].target)
  end)

  it("a positional query argument goes in the query string (get_custom_subtypes, update_custom_subtype)", function()
    assert(client:get_custom_subtypes("loc 1"))
    assert(client:update_custom_subtype("st1", "loc1", { name = "News" }))
    local reqs = srv:requests()
    assert.equals("/conversations/preferences/custom-subtypes?locationId=loc%201", reqs[1].target)
    assert.equals("PUT", reqs[2].method)
    assert.equals("/conversations/preferences/custom-subtypes/st1?locationId=loc1", reqs[2].target)
    assert.same({ name = "News" }, cjson.decode(reqs[2].body))
    assert.equals("application/json", reqs[2].headers["content-type"])
  end)

  it("query values are percent-encoded, numbers go as integers, booleans as words, in the schema's order", function()
    assert(client:search_conversations { locationId = "l&1", query = "a b=c?", limit = 20, startDate = 1.5e12 })
    local req = srv:requests()[1]
    assert.equals("/conversations/search?locationId=l%261&query=a%20b%3Dc%3F&limit=20&startDate=1500000000000",
      req.target)
  end)

  it("an array goes as repeated parameters; allow_unknown sends unknown names, encoded too", function()
    assert(client:get_messages("c1", { limit = 5, ["x y"] = { "a", "b&" } }, { allow_unknown = true }))
    local req = srv:requests()[1]
    assert.equals("/conversations/c1/messages?limit=5&x%20y=a&x%20y=b%26", req.target)
  end)

  it("get_messages' type filter takes several types at once, as its example does (\"TYPE_SMS,TYPE_CALL\")", function()
    assert(client:get_messages("c1", { type = "TYPE_SMS,TYPE_CALL" }))
    assert.equals("/conversations/c1/messages?type=TYPE_SMS%2CTYPE_CALL", srv:requests()[1].target)
    for _, bad in ipairs { "TYPE_SMS,", "TYPE_SMS,TYPE_NOPE", ",TYPE_SMS", "" } do
      local r, err = client:get_messages("c1", { type = bad })
      assert.is_nil(r, bad)
      assert.equals("type", err.field)
    end
    assert.equals(1, #srv:requests())
  end)

  it("every POST sends its JSON body with Content-Type application/json", function()
    assert(client:create_conversation { locationId = "loc1", contactId = "ct1" })
    assert(client:live_chat_typing { locationId = "loc1", isTyping = true, visitorId = "v", conversationId = "c" })
    local reqs = srv:requests()
    assert.equals("POST", reqs[1].method)
    assert.equals("/conversations/", reqs[1].target)
    assert.same({ locationId = "loc1", contactId = "ct1" }, cjson.decode(reqs[1].body))
    assert.is_true(cjson.decode(reqs[2].body).isTyping)
    assert.equals("application/json", reqs[2].headers["content-type"])
  end)
end)

describe("operations: what is refused before sending", function()
  local srv, client
  before_each(function()
    srv = ops.server { json { ok = true } }
    client = client_for(srv)
  end)
  after_each(function()
    client:close()
    srv:stop()
  end)

  local function refused(field, r, err)
    assert.is_nil(r)
    assert.equals("invalid", err.kind)
    assert.equals(field, err.field)
    assert.is_false(err.request_sent)
    return err
  end

  it("query: unknown names, wrong types, values outside an enum, missing required ones", function()
    local e = refused("limt", client:get_messages("c1", { limt = 5 }))
    assert.matches("unknown query parameter 'limt'", e.message, 1, true)
    e = refused("limit", client:get_messages("c1", { limit = "5" }))
    assert.matches("query parameter 'limit' must be a number, got string", e.message, 1, true)
    e = refused("sort", client:search_conversations { locationId = "l", sort = "up" })
    assert.matches("must be one of asc, desc", e.message, 1, true)
    e = refused("locationId", client:search_conversations {})
    assert.matches("query parameter 'locationId' is required", e.message, 1, true)
    refused("locationId", client:search_conversations())
    refused("locationId", client:search_conversations { locationId = "" })
    refused("locationId", client:search_conversations { locationId = "a\r\nb" })
    refused("limit", client:get_messages("c1", { limit = 0 / 0 }))
    refused("limit", client:get_messages("c1", { limit = math.huge }))
    refused("limit", client:get_messages("c1", { limit = { 1, 2 } }))
    refused("lastMessageId", client:get_messages("c1", { lastMessageId = "\255" }))
    assert.equals(0, #srv:requests())
  end)

  it("path ids: empty, dot segments, control characters; the error names the parameter", function()
    refused("conversationId", client:delete_conversation(""))
    refused("messageId", client:cancel_scheduled_message(".."))
    refused("locationId", client:get_message_recording("a\0b", "m1"))
    refused("messageId", client:get_message_recording("l1", 42))
    refused("emailMessageId", client:cancel_scheduled_email("x/../y"))
    assert.equals(0, #srv:requests())
  end)

  it("bodies: required fields, types and enums of every operation's schema", function()
    refused("contactId", client:create_conversation { locationId = "loc1" })
    refused("isTyping", client:live_chat_typing { locationId = "l", isTyping = "true", visitorId = "v", conversationId = "c" })
    refused("type", client:add_outbound_call { type = "SMS", conversationId = "c", conversationProviderId = "p" })
    refused("direction", client:add_inbound_message { type = "SMS", conversationId = "c", contactId = "ct",
      conversationProviderId = "p", direction = "sideways" })
    refused("call.status", client:add_outbound_call { type = "Call", conversationId = "c", conversationProviderId = "p",
      call = { status = "ringing" } })
    local e = refused("name", client:create_custom_subtype("loc1", { name = ("x"):rep(101), channel = "sms", language = "en" }))
    assert.matches("at most 100 bytes", e.message, 1, true)
    refused("subscription_action.subtype_status", client:change_subscription { locationId = "l", contactId = "c",
      email = "e", subscription_action = { type = "default" } })
    refused("attachments", client:add_message_attachments("m1", { attachments = { a = 1 } }))
    assert.equals(0, #srv:requests())
  end)

  it("allow_unknown: strings and keys nested inside unknown fields must still be UTF-8 (issue 10 item 11)", function()
    local e = refused("extra.inner", client:create_conversation({ locationId = "l", contactId = "c",
      extra = { inner = "\255\254" } }, { allow_unknown = true }))
    assert.matches("not valid UTF-8", e.message, 1, true)
    refused("extra", client:create_conversation({ locationId = "l", contactId = "c", extra = { ["k\255"] = 1 } },
      { allow_unknown = true }))
    refused("extra[2]", client:create_conversation({ locationId = "l", contactId = "c", extra = { "ok", "\192" } },
      { allow_unknown = true }))
    refused("free.x", client:update_conversation("c1", { locationId = "l", feedback = {}, free = { x = 0 / 0 } },
      { allow_unknown = true }))
    assert.equals(0, #srv:requests())
    -- and valid nested values go out as given
    assert(client:create_conversation({ locationId = "l", contactId = "c", extra = { inner = "é", list = { 1, "b" } } },
      { allow_unknown = true }))
    local body = cjson.decode(srv:requests()[1].body)
    assert.same({ inner = "é", list = { 1, "b" } }, body.extra)
  end)

  it("misuse raises: a non-table where a table is required, a method called with a dot", function()
    assert.has_error(function() client:create_conversation("x") end)
    assert.has_error(function() client:get_messages("c1", "limit=5") end)
    assert.has_error(function() client.delete_conversation("c1") end)
    assert.has_error(function() client:upload_attachments({}, "file") end)
    assert.has_error(function() client:batch { { "upload_attachments", {}, {} } } end)
    assert.equals(0, #srv:requests())
  end)
end)

describe("operations: answers", function()
  local srv, client
  after_each(function()
    if client then client:close() end
    if srv then srv:stop() end
  end)

  local MSGS = { { id = "m1", body = "a", direction = "inbound" }, { id = "m2", body = "b", direction = "outbound" } }

  it("get_messages reads the documented flat page and the live nested one, returning the flat page", function()
    srv = ops.server {
      json { lastMessageId = "m2", nextPage = true, messages = MSGS },
      json { messages = { lastMessageId = "m2", nextPage = false, messages = MSGS } },
    }
    client = client_for(srv)
    for _, more in ipairs { true, false } do
      local page, err = client:get_messages("c1")
      assert.is_nil(err)
      assert.equals("m2", page.lastMessageId)
      assert.equals(more, page.nextPage)
      assert.equals(2, #page.messages)
      assert.equals("Message", leadconnector.typeof(page.messages[1]))
      assert.equals("b", page.messages[2].body)
    end
  end)

  it("search: a page of Conversation userdata with total; create/update: the conversation as a Conversation", function()
    srv = ops.server {
      json { conversations = { { id = "c1", contactId = "x", sort = { 17 } }, { id = "c2" } }, total = 2 },
      { status = 201, body = cjson.encode { success = true, conversation = { id = "c9", locationId = "l" } } },
    }
    client = client_for(srv)
    local page = assert(client:search_conversations { locationId = "l" })
    assert.equals(2, page.total)
    assert.equals("Conversation", leadconnector.typeof(page.conversations[2]))
    assert.same({ 17 }, page.conversations[1].sort)
    local made = assert(client:create_conversation { locationId = "l", contactId = "x" })
    assert.is_true(made.success)
    assert.equals("Conversation", leadconnector.typeof(made.conversation))
    assert.equals("c9", made.conversation.id)
  end)

  it("export: messages as Message userdata, nextCursor and total as given", function()
    srv = ops.server { json { messages = MSGS, nextCursor = "cur2", total = 7 } }
    client = client_for(srv)
    local page = assert(client:export_messages { locationId = "l" })
    assert.equals("cur2", page.nextCursor)
    assert.equals(7, page.total)
    assert.equals("m1", page.messages[1].id)
  end)

  it("recording and transcript download come back as bytes with their content type", function()
    local audio = "RIFF\0\1\2\255WAVE"
    srv = ops.server {
      { status = 200, body = audio, headers = { ["Content-Type"] = "audio/x-wav" } },
      { status = 200, body = "hello there\n", headers = { ["Content-Type"] = "text/plain; charset=utf-8" } },
    }
    client = client_for(srv)
    local rec = assert(client:get_message_recording("l1", "m1"))
    assert.equals(audio, rec.body)
    assert.equals("audio/x-wav", rec.content_type)
    local tr = assert(client:download_message_transcription("l1", "m1"))
    assert.equals("hello there\n", tr.body)
    assert.equals("text/plain; charset=utf-8", tr.content_type)
  end)

  it("a table answer with an empty body is an empty table; an error answer keeps the error model", function()
    srv = ops.server { { status = 200, body = "" }, { status = 404, body = '{"statusCode":404,"message":"No such"}' } }
    client = client_for(srv)
    assert.same({}, assert(client:delete_conversation("c1")))
    local r, err = client:get_email("e1")
    assert.is_nil(r)
    assert.equals("not_found", err.kind)
    assert.equals("No such", err.message)
    assert.equals("GET", err.method)
  end)

  it("a page answer that is not a page is a decode error", function()
    srv = ops.server { json { messages = "nope" } }
    client = client_for(srv)
    local r, err = client:export_messages { locationId = "l" }
    assert.is_nil(r)
    assert.equals("decode", err.kind)
  end)
end)

describe("paging iterators", function()
  local srv, client
  after_each(function()
    if client then client:close() end
    if srv then srv:stop() end
  end)

  local function msgs(from, to)
    local t = {}
    for i = from, to do t[#t + 1] = { id = "m" .. i, body = "b" .. i } end
    return t
  end

  it("each_message: one page per request, following lastMessageId while nextPage is true (both shapes)", function()
    srv = ops.server {
      json { lastMessageId = "m2", nextPage = true, messages = msgs(1, 2) },
      json { messages = { lastMessageId = "m4", nextPage = true, messages = msgs(3, 4) } },
      json { lastMessageId = "m5", nextPage = false, messages = msgs(5, 5) },
    }
    client = client_for(srv)
    local seen = {}
    local it = client:each_message("c1", { limit = 2 })
    assert.equals(0, #srv:requests()) -- lazy: nothing asked before the loop does
    for msg, err in it do
      assert.is_nil(err)
      assert.equals("Message", leadconnector.typeof(msg))
      seen[#seen + 1] = msg.id
      if #seen == 1 then assert.equals(1, #srv:requests()) end
    end
    assert.same({ "m1", "m2", "m3", "m4", "m5" }, seen)
    local reqs = srv:requests()
    assert.equals(3, #reqs)
    assert.is_nil(reqs[1].query.lastMessageId)
    assert.equals("m2", reqs[2].query.lastMessageId)
    assert.equals("m4", reqs[3].query.lastMessageId)
    assert.equals("2", reqs[3].query.limit)
  end)

  it("each_message: a failure reaches the loop once, then the loop ends", function()
    srv = ops.server {
      json { lastMessageId = "m2", nextPage = true, messages = msgs(1, 2) },
      { status = 500, body = '{"message":"boom"}' },
      json { lastMessageId = "m9", nextPage = false, messages = msgs(9, 9) },
    }
    client = client_for(srv)
    local items, errs = 0, {}
    for msg, err in client:each_message("c1") do
      if msg then items = items + 1 else errs[#errs + 1] = err end
    end
    assert.equals(2, items)
    assert.equals(1, #errs)
    assert.equals("server", errs[1].kind)
    assert.equals(2, #srv:requests())
  end)

  it("each_conversation: the last result's sort value goes as startAfterDate; a short page ends it", function()
    local function convs(from, to)
      local t = {}
      for i = from, to do t[#t + 1] = { id = "c" .. i, sort = { 1700000000000 + i } } end
      return t
    end
    srv = ops.server {
      json { conversations = convs(1, 3), total = 10 },
      json { conversations = convs(4, 6), total = 10 },
      json { conversations = convs(7, 8), total = 10 },
    }
    client = client_for(srv)
    local ids = {}
    for conv, err in client:each_conversation { locationId = "loc1", limit = 3 } do
      assert.is_nil(err)
      ids[#ids + 1] = conv.id
    end
    assert.same({ "c1", "c2", "c3", "c4", "c5", "c6", "c7", "c8" }, ids)
    local reqs = srv:requests()
    assert.equals(3, #reqs)
    assert.equals("1700000000003", reqs[2].query.startAfterDate)
    assert.equals("1700000000006", reqs[3].query.startAfterDate)
    assert.equals("loc1", reqs[3].query.locationId)
  end)

  it("each_conversation stops once total results were seen, and at an empty page", function()
    srv = ops.server {
      json { conversations = { { id = "a", sort = { 1 } }, { id = "b", sort = { 2 } } }, total = 2 },
      json { conversations = {}, total = 2 },
    }
    client = client_for(srv)
    local n = 0
    for _ in client:each_conversation { locationId = "l", limit = 2 } do n = n + 1 end
    assert.equals(2, n)
    assert.equals(1, #srv:requests())
  end)

  it("each_exported_message follows nextCursor until it is null", function()
    srv = ops.server {
      json { messages = msgs(1, 2), nextCursor = "k1", total = 4 },
      json { messages = msgs(3, 4), nextCursor = cjson.null, total = 4 },
    }
    client = client_for(srv)
    local ids = {}
    for m in client:each_exported_message { locationId = "l" } do ids[#ids + 1] = m.id end
    assert.same({ "m1", "m2", "m3", "m4" }, ids)
    local reqs = srv:requests()
    assert.equals(2, #reqs)
    assert.equals("k1", reqs[2].query.cursor)
  end)

  it("iterators validate like the methods: a bad query is the loop's one failure, nothing sent", function()
    srv = ops.server { json {} }
    client = client_for(srv)
    local got = {}
    for m, err in client:each_exported_message { limit = 10 } do got[#got + 1] = { m, err } end
    assert.equals(1, #got)
    assert.is_false(got[1][1])
    assert.equals("invalid", got[1][2].kind)
    assert.equals(0, #srv:requests())
  end)
end)

describe("uploads", function()
  local srv, client
  before_each(function()
    srv = ops.server { json { uploadedFiles = { ["a.txt"] = "https://cdn.example/a.txt" } } }
    client = client_for(srv)
  end)
  after_each(function()
    client:close()
    srv:stop()
  end)

  it("upload_attachments sends multipart/form-data: the fields, then each file in fileAttachment", function()
    local path = os.tmpname()
    local fh = assert(io.open(path, "wb"))
    local png = "\137PNG\r\n\26\n" .. ("\0\255"):rep(100)
    fh:write(png)
    fh:close()
    local r, err = client:upload_attachments(
      { conversationId = "c1", contactId = "ct1", locationId = "l1", attachmentUrls = { "https://x/1", "https://x/2" } },
      { { name = 'we"ird.txt', content = "hello\r\n--not-a-boundary\r\n", content_type = "text/plain" },
        { path = path, name = "pic.png" } })
    os.remove(path)
    assert.is_nil(err)
    assert.equals("https://cdn.example/a.txt", r.uploadedFiles["a.txt"])
    local req = srv:requests()[1]
    assert.equals("POST", req.method)
    assert.equals("/conversations/messages/upload", req.target)
    local ct = req.headers["content-type"]
    assert.matches("^multipart/form%-data; boundary=", ct)
    local parts = ops.parse_multipart(req.body, ct)
    local fields, files = {}, {}
    for _, p in ipairs(parts) do
      if p.filename then files[#files + 1] = p else
        fields[p.name] = fields[p.name] and (type(fields[p.name]) == "table" and fields[p.name] or { fields[p.name] }) or p.data
        if type(fields[p.name]) == "table" and fields[p.name][#fields[p.name]] ~= p.data then
          fields[p.name][#fields[p.name] + 1] = p.data
        end
      end
    end
    assert.equals("c1", fields.conversationId)
    assert.equals("l1", fields.locationId)
    assert.same({ "https://x/1", "https://x/2" }, fields.attachmentUrls)
    assert.equals(2, #files)
    assert.equals("fileAttachment", files[1].name)
    assert.equals("we%22ird.txt", files[1].filename)
    assert.equals("text/plain", files[1].content_type)
    assert.equals("hello\r\n--not-a-boundary\r\n", files[1].data)
    assert.equals("pic.png", files[2].filename)
    assert.equals("image/png", files[2].content_type)
    assert.equals(png, files[2].data)
  end)

  it("the limits (5 files, 5 MB each) and bad files are refused before anything is sent", function()
    local F = { conversationId = "c1", contactId = "ct1", locationId = "l1" }
    local six = {}
    for i = 1, 6 do six[i] = { name = i .. ".txt", content = "x" } end
    local r, err = client:upload_attachments(F, six)
    assert.is_nil(r)
    assert.equals("invalid", err.kind)
    assert.matches("at most 5 files", err.message, 1, true)
    r, err = client:upload_attachments(F, { { name = "big.bin", content = ("x"):rep(5 * 1024 * 1024 + 1) } })
    assert.is_nil(r)
    assert.matches("larger than the limit", err.message, 1, true)
    local big = os.tmpname()
    local fh = assert(io.open(big, "wb"))
    fh:write(("y"):rep(5 * 1024 * 1024 + 1))
    fh:close()
    r, err = client:upload_attachments(F, { { path = big } })
    os.remove(big)
    assert.is_nil(r)
    assert.equals("files[1]", err.field)
    r, err = client:upload_attachments(F, { { path = "/nonexistent/file" } })
    assert.equals("invalid", err.kind)
    r, err = client:upload_attachments(F, { { name = "a\r\nb", content = "x" } })
    assert.equals("invalid", err.kind)
    r, err = client:upload_attachments(F, {})
    assert.equals("invalid", err.kind)
    r, err = client:upload_attachments({ conversationId = "c1" }, { { name = "a", content = "x" } })
    assert.equals("contactId", err.field)
    assert.equals(0, #srv:requests())
    -- exactly at the limits goes
    local five = {}
    for i = 1, 5 do five[i] = { name = i .. ".bin", content = ("z"):rep(i == 5 and 5 * 1024 * 1024 or 10) } end
    assert(client:upload_attachments(F, five))
    assert.equals(1, #srv:requests())
  end)
end)

describe("never twice: every POST of the catalogue", function()
  -- A POST whose request went out and got no answer, or a 5xx, is not sent again whatever max_retries says;
  -- reads, PUTs and DELETEs are retried.
  local ARGS = {
    create_conversation = { { locationId = "l", contactId = "c" } },
    send_message = { { type = "SMS", contactId = "c" } },
    add_inbound_message = { { type = "SMS", conversationId = "c", contactId = "ct", conversationProviderId = "p" } },
    add_outbound_call = { { type = "Call", conversationId = "c", conversationProviderId = "p" } },
    send_review_reply = { { conversationId = "c", locationId = "l", message = "m" } },
    upload_attachments = { { conversationId = "c", contactId = "ct", locationId = "l" }, { { name = "a", content = "x" } } },
    initiate_upload = { { locationId = "l", conversationId = "c", filename = "f", contentType = "t", channel = "SMS" } },
    complete_upload = { { uploadId = "u", filePath = "p", locationId = "l", conversationId = "c", filename = "f" } },
    live_chat_typing = { { locationId = "l", isTyping = false, visitorId = "v", conversationId = "c" } },
    create_custom_subtype = { "l", { name = "n", channel = "sms", language = "en" } },
    change_subscription = { { locationId = "l", contactId = "c", email = "e",
      subscription_action = { type = "resub_all", subtype_status = "subscribed" } } },
  }

  it("has arguments for every POST", function()
    for _, op in ipairs(catalogue.operations) do
      if op.method == "POST" then assert.truthy(ARGS[op.name], op.name) end
    end
  end)

  for _, op in ipairs(catalogue.operations) do
    if op.method == "POST" then
      for _, fault in ipairs { { drop = true }, { status = 503, body = "{}" }, { status = 500, body = "<html>" } } do
        it(op.name .. (fault.drop and ": no answer" or (": HTTP " .. fault.status)) .. " -> sent once", function()
          local srv = ops.server { fault, json { messageId = "m", conversationId = "c" } }
          local client = client_for(srv, { max_retries = 3 })
          local a = ARGS[op.name]
          local r, err = client[op.name](client, a[1], a[2])
          local n = #srv:requests()
          client:close()
          srv:stop()
          assert.is_nil(r)
          assert.equals(fault.drop and "network" or "server", err.kind)
          assert.is_true(err.request_sent)
          assert.equals(1, n)
        end)
      end
      it(op.name .. ": a 429 is retried (the API refused it unprocessed)", function()
        local srv = ops.server { { status = 429, body = "{}", headers = { ["Retry-After"] = "0" } },
          json { messageId = "m", conversationId = "c" } }
        local client = client_for(srv, { max_retries = 1 })
        local a = ARGS[op.name]
        local r, err = client[op.name](client, a[1], a[2])
        local n = #srv:requests()
        client:close()
        srv:stop()
        assert.is_nil(err and tostring(err))
        assert.truthy(r)
        assert.equals(2, n)
      end)
    end
  end

  it("a DELETE and a PUT are retried after a 503 like reads", function()
    local srv = ops.server { { status = 503, body = "{}" }, json { ok = true } }
    local client = client_for(srv, { max_retries = 2 })
    assert(client:cancel_scheduled_email("e1"))
    assert.equals(2, #srv:requests())
    client:close()
    srv:stop()
  end)

  it("in a batch too: a POST that got no answer is not sent again", function()
    local srv = ops.server { { drop = true }, json { ok = true } }
    local client = client_for(srv, { max_retries = 3 })
    local res = client:batch { { "send_review_reply", { conversationId = "c", locationId = "l", message = "m" } } }
    local n = #srv:requests()
    client:close()
    srv:stop()
    assert.equals("network", res[1].err.kind)
    assert.equals(1, n)
  end)
end)

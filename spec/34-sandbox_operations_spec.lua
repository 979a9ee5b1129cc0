-- The catalogue's operations against the stateful sandbox (bin/leadconnector-sandbox, sandbox/README.md), over
-- real HTTP: paging across page boundaries (both get_messages shapes), search and export paging, uploads that
-- show up in a message's attachments, scheduled messages that can be cancelled, emails, recordings, subtypes.
local lch = require "lchelpers"
local socket_http = require "socket.http"
local ltn12 = require "ltn12"

local LOC = "loc_sandbox"

-- The sandbox serves every operation from sandbox/lua/lcsandbox/operations.lua (h12sb's work); where that is not
-- there yet, these tests are reported pending (skipped), never passed.
local f = io.open("sandbox/lua/lcsandbox/operations.lua", "rb")
local sandbox_has_operations = f ~= nil
if f then f:close() end

describe("operations against the sandbox", function()
  if not sandbox_has_operations then
    pending("the sandbox does not serve every operation yet (sandbox/lua/lcsandbox/operations.lua)")
    return
  end
  local sb, client
  lch.suite(function(s, c) sb, client = s, c end)

  local function inject(n, contact, extra)
    local ids = {}
    for i = 1, n do
      local body = { contactId = contact, message = ("filler %03d"):format(i) }
      for k, v in pairs(extra or {}) do body[k] = v end
      local status, ans = sb:request("POST", "/_sandbox/inbound", body)
      assert.equals(201, status)
      ids[#ids + 1] = ans.messageId
    end
    return ids
  end

  local function shapes()
    return { "nested", "flat" }
  end

  for _, shape in ipairs(shapes()) do
    it("each_message crosses page boundaries with the " .. shape .. " get_messages shape", function()
      assert.equals(200, (sb:request("POST", "/_sandbox/config", { messages_shape = shape })))
      local sent = assert(client:send_message { type = "SMS", contactId = "contact_paging", message = "first" })
      inject(44, "contact_paging")
      local page = assert(client:get_messages(sent.conversationId, { limit = 20 }))
      assert.equals(20, #page.messages)
      assert.is_true(page.nextPage)
      assert.equals(page.messages[20].id, page.lastMessageId)
      sb:clear_requests()
      local ids, seen = {}, {}
      for msg, err in client:each_message(sent.conversationId, { limit = 20 }) do
        assert.is_nil(err)
        assert.is_nil(seen[msg.id], "a message twice: " .. msg.id)
        seen[msg.id] = true
        ids[#ids + 1] = msg.id
      end
      assert.equals(45, #ids)
      assert.equals(sent.messageId, ids[45]) -- newest first: the first send is the oldest
      assert.equals(3, #lch.api_requests(sb))
      assert.equals(200, (sb:request("POST", "/_sandbox/config", { messages_shape = "nested" })))
    end)
  end

  it("each_conversation pages the search by the last result's sort value and sees every match once", function()
    for i = 1, 7 do
      assert(client:send_message { type = "SMS", contactId = ("contact_search_%d"):format(i), message = "hi " .. i })
    end
    local all = assert(client:search_conversations { locationId = LOC, limit = 100 })
    assert.is_true(all.total >= 7)
    local ids, seen = {}, {}
    sb:clear_requests()
    for conv, err in client:each_conversation { locationId = LOC, limit = 3 } do
      assert.is_nil(err)
      assert.equals("Conversation", require("leadconnector").typeof(conv))
      assert.is_nil(seen[conv.id])
      seen[conv.id] = true
      ids[#ids + 1] = conv.id
    end
    assert.equals(all.total, #ids)
    assert.equals(math.ceil(all.total / 3), #lch.api_requests(sb)) -- one request per page, none past the end
  end)

  it("each_exported_message follows nextCursor over the whole location", function()
    inject(25, "contact_export")
    local first = assert(client:export_messages { locationId = LOC, limit = 10 })
    assert.is_string(first.nextCursor)
    local n, seen = 0, {}
    for msg, err in client:each_exported_message { locationId = LOC, limit = 10 } do
      assert.is_nil(err)
      assert.is_nil(seen[msg.id])
      seen[msg.id] = true
      n = n + 1
    end
    assert.equals(first.total, n)
  end)

  it("an uploaded file is served at its URL and shows in a message's attachments", function()
    local content = "%PDF-1.4 sandbox test \0\1\2"
    local up = assert(client:upload_attachments(
      { conversationId = "conv_demo_1", contactId = "contact_demo_1", locationId = LOC },
      { { name = "report.pdf", content = content, content_type = "application/pdf" } }))
    local url = up.uploadedFiles["report.pdf"]
    assert.is_string(url)
    local out = {}
    local _, code = socket_http.request { url = url, sink = ltn12.sink.table(out) }
    assert.equals(200, code)
    assert.equals(content, table.concat(out))
    local sent = assert(client:send_message { type = "SMS", contactId = "contact_demo_1", attachments = { url } })
    local msg = assert(client:get_message(sent.messageId))
    assert.same({ url }, msg.attachments)
    -- and add_message_attachments replaces them
    assert(client:add_message_attachments(sent.messageId, { attachments = { url, url .. "?2" } }))
    assert.same({ url, url .. "?2" }, assert(client:get_message(sent.messageId)).attachments)
  end)

  it("the sandbox refuses a sixth file only if the library let it through: the library stops it first", function()
    local six = {}
    for i = 1, 6 do six[i] = { name = i .. ".txt", content = "x" } end
    sb:clear_requests()
    local r, err = client:upload_attachments({ conversationId = "conv_demo_1", contactId = "contact_demo_1",
      locationId = LOC }, six)
    assert.is_nil(r)
    assert.equals("invalid", err.kind)
    assert.equals(0, #lch.api_requests(sb))
  end)

  it("a large upload: initiate, PUT the bytes to the upload URL, complete", function()
    local init = assert(client:initiate_upload { locationId = LOC, conversationId = "conv_demo_1",
      filename = "clip.mp4", contentType = "video/mp4", fileSize = 11, channel = "SMS" })
    assert.is_string(init.uploadUrl)
    local _, code = socket_http.request { url = init.uploadUrl, method = "PUT",
      source = ltn12.source.string("hello video"), headers = { ["content-length"] = "11" } }
    assert.is_true(code == 200 or code == 201 or code == 204)
    local done = assert(client:complete_upload { uploadId = init.uploadId, filePath = init.filePath,
      locationId = LOC, conversationId = "conv_demo_1", filename = "clip.mp4" })
    assert.is_string(done.uploadedFiles["clip.mp4"])
  end)

  it("a scheduled message can be cancelled once; then it is gone", function()
    local sent = assert(client:send_message { type = "SMS", contactId = "contact_demo_1", message = "later",
      scheduledTimestamp = os.time() + 3600 })
    assert.equals("scheduled", assert(client:get_message(sent.messageId)).status)
    local r = assert(client:cancel_scheduled_message(sent.messageId))
    assert.equals("table", type(r))
    local m, err = client:get_message(sent.messageId)
    assert.is_nil(m)
    assert.equals("not_found", err.kind)
    r, err = client:cancel_scheduled_message(sent.messageId)
    assert.is_nil(r)
    assert.equals("not_found", err.kind)
    assert.equals("DELETE", err.method)
    -- a message that is not scheduled cannot be cancelled
    local now = assert(client:send_message { type = "SMS", contactId = "contact_demo_1", message = "now" })
    r, err = client:cancel_scheduled_message(now.messageId)
    assert.equals("http", err.kind)
    assert.equals(400, err.status)
  end)

  it("an email send is readable by get_email; a scheduled email can be cancelled by its email id", function()
    local sent = assert(client:send_message { type = "Email", contactId = "contact_demo_2", subject = "Hello",
      html = "<p>Hi</p>", emailTo = "ada@example.com" })
    local email = assert(client:get_email(sent.emailMessageId))
    assert.equals("Hello", email.subject)
    local later = assert(client:send_message { type = "Email", contactId = "contact_demo_2", subject = "Later",
      html = "<p>x</p>", scheduledTimestamp = os.time() + 3600 })
    assert(client:cancel_scheduled_email(later.emailMessageId))
    local e, err = client:get_email(later.emailMessageId)
    assert.is_nil(e)
    assert.equals("not_found", err.kind)
  end)

  it("the seed call's recording comes back as bytes; its transcription as a table and as text", function()
    local rec = assert(client:get_message_recording(LOC, "msg_demo_6"))
    assert.equals("audio/x-wav", rec.content_type)
    assert.is_true(#rec.body > 0)
    local tr = assert(client:get_message_transcription(LOC, "msg_demo_6"))
    assert.is_string(tr[1].transcript)
    local txt = assert(client:download_message_transcription(LOC, "msg_demo_6"))
    assert.matches("^text/plain", txt.content_type)
    assert.truthy(txt.body:find(tr[1].transcript, 1, true))
  end)

  it("conversations: create, update, delete", function()
    local made = assert(client:create_conversation { locationId = LOC, contactId = "contact_new_conv" })
    assert.equals("Conversation", require("leadconnector").typeof(made.conversation))
    local id = made.conversation.id
    local up = assert(client:update_conversation(id, { locationId = LOC, starred = true, unreadCount = 0 }))
    assert.is_true(up.conversation.starred)
    assert(client:delete_conversation(id))
    local c, err = client:get_conversation(id)
    assert.is_nil(c)
    assert.equals("not_found", err.kind)
  end)

  it("providers and preferences: typing, inbound, outbound call, review reply, subtypes, subscriptions", function()
    assert(client:live_chat_typing { locationId = LOC, isTyping = true, visitorId = "v1", conversationId = "conv_demo_1" })
    local status, typing = sb:request("GET", "/_sandbox/typing?conversationId=conv_demo_1")
    assert.equals(200, status)
    assert.is_true(typing.isTyping)
    local inb = assert(client:add_inbound_message { type = "SMS", conversationId = "conv_demo_1",
      contactId = "contact_demo_1", conversationProviderId = "provider_sandbox", message = "from the provider" })
    assert.equals("from the provider", assert(client:get_message(inb.messageId)).body)
    assert(client:add_outbound_call { type = "Call", conversationId = "conv_demo_1",
      conversationProviderId = "provider_sandbox", call = { to = "+15550001", from = "+15550002", status = "completed" } })
    assert(client:send_review_reply { conversationId = "conv_demo_1", locationId = LOC, message = "Thanks!" })
    local made = assert(client:create_custom_subtype(LOC, { name = "Newsletter", channel = "email", language = "en" }))
    local sid = made.customSubtype.id
    assert(client:update_custom_subtype(sid, LOC, { description = "monthly" }))
    local list = assert(client:get_custom_subtypes(LOC))
    assert.equals("monthly", list.customSubtypes[#list.customSubtypes].description)
    assert(client:change_subscription { locationId = LOC, contactId = "contact_demo_1", email = "ada@example.com",
      subscription_action = { type = "default", subtype_name = "One on One", subtype_status = "unsubscribed" } })
    local st = assert(client:get_unsubscription_status { locationId = LOC, contactId = "contact_demo_1" })
    assert.equals("unsubscribed", st.subscriptions[1].subtype_status)
  end)

  it("the same operations in one client:batch", function()
    local results = client:batch({
      { "get_messages", "conv_demo_1", { limit = 5 } },
      { "search_conversations", { locationId = LOC, limit = 5 } },
      { "export_messages", { locationId = LOC, limit = 10 } },
      { "get_message_recording", LOC, "msg_demo_6" },
      { "get_custom_subtypes", LOC },
      { "get_unsubscription_status", { locationId = LOC, contactId = "contact_demo_1" } },
    }, { concurrency = 3 })
    for i, r in ipairs(results) do assert.is_nil(r.err and (i .. ": " .. tostring(r.err))) end
    assert.equals("Message", require("leadconnector").typeof(results[1].value.messages[1]))
    assert.equals("audio/x-wav", results[4].value.content_type)
  end)

  -- The fault matrix of spec/50, for every POST of the catalogue: on a warm kept-alive connection, a lost answer
  -- (after the work was done), a 503, a proxy's 502 and a cut answer each reach the server once, whatever
  -- max_retries says.
  local seq = 0
  local function post_args(name)
    seq = seq + 1
    local contact = ("contact_np_%d_%d"):format(os.time(), seq)
    local A = {
      create_conversation = { { locationId = LOC, contactId = contact } },
      send_message = { { type = "SMS", contactId = contact, message = "x" } },
      add_inbound_message = { { type = "SMS", conversationId = "conv_demo_1", contactId = "contact_demo_1",
        conversationProviderId = "provider_sandbox", message = "x" } },
      add_outbound_call = { { type = "Call", conversationId = "conv_demo_1", conversationProviderId = "provider_sandbox" } },
      send_review_reply = { { conversationId = "conv_demo_1", locationId = LOC, message = "m" } },
      upload_attachments = { { conversationId = "conv_demo_1", contactId = "contact_demo_1", locationId = LOC },
        { { name = "a.txt", content = "x" } } },
      initiate_upload = { { locationId = LOC, conversationId = "conv_demo_1", filename = "f.mp4",
        contentType = "video/mp4", fileSize = 10, channel = "SMS" } },
      complete_upload = { { uploadId = "u", filePath = "p", locationId = LOC, conversationId = "conv_demo_1",
        filename = "f" } },
      live_chat_typing = { { locationId = LOC, isTyping = true, visitorId = "v", conversationId = "conv_demo_1" } },
      create_custom_subtype = { LOC, { name = "n" .. seq, channel = "sms", language = "en" } },
      change_subscription = { { locationId = LOC, contactId = "contact_demo_1", email = "ada@example.com",
        subscription_action = { type = "resub_all", subtype_status = "subscribed" } } },
    }
    return A[name]
  end
  local FAULTS = {
    { action = "drop", after = true }, { status = 503 }, { action = "html502", after = true },
    { action = "malformed", after = true },
  }
  for _, op in ipairs(require("leadconnector.catalogue").operations) do
    if op.method == "POST" then
      it(op.name .. " is sent once under every fault of the matrix", function()
        local c = lch.client(sb, { max_retries = 3 })
        for _, fault in ipairs(FAULTS) do
          assert(c:get_conversation("conv_demo_1")) -- a warm connection
          sb:clear_requests()
          local f = { method = "POST", path = op.path, count = -1 }
          for k, v in pairs(fault) do f[k] = v end
          sb:fault(f)
          local a = post_args(op.name)
          assert.truthy(a, op.name)
          local r, err = c[op.name](c, a[1], a[2])
          sb:clear_faults()
          local n = 0
          for _, req in ipairs(lch.api_requests(sb)) do if req.method == "POST" then n = n + 1 end end
          local what = op.name .. " " .. (fault.action or fault.status)
          assert.is_nil(r, what)
          assert.truthy(err, what)
          assert.equals(1, n, what .. ": requests that reached the server")
        end
        c:close()
      end)
    end
  end
end)

-- The operation catalogue: the committed lua/leadconnector/catalogue.lua is what scripts/catalogue.lua makes from the
-- vendor's OpenAPI file, and it holds every operation of API.md §4 with the shape other parts rely on.
--
-- The regeneration test needs the reference files (../shared/reference). Where they are absent it is NOT defined
-- (so it neither passes nor counts as skipped-but-passed); the shape tests below run everywhere.
local catalogue = require "leadconnector.catalogue"

local REFERENCE = os.getenv("LEADCONNECTOR_REFERENCE") or "../shared/reference"

local function exists(p)
  local f = io.open(p, "rb")
  if f then f:close() return true end
  return false
end

describe("the operation catalogue", function()
  if exists(REFERENCE .. "/conversations.openapi.json") then
    it("is what scripts/catalogue.lua generates from the reference files (make catalogue)", function()
      local p = assert(io.popen("lua5.4 scripts/catalogue.lua " .. REFERENCE .. " 2>&1"))
      local fresh = p:read("*a")
      local ok = p:close()
      assert.is_truthy(ok, fresh)
      local f = assert(io.open("lua/leadconnector/catalogue.lua", "rb"))
      local committed = f:read("*a")
      f:close()
      assert.are.equal(fresh, committed)
    end)
  end

  it("holds the 29 operations of API.md §4, each once, in its order", function()
    local want = { "search_conversations", "get_conversation", "create_conversation", "update_conversation",
      "delete_conversation", "get_messages", "get_message", "send_message", "add_inbound_message",
      "add_outbound_call", "send_review_reply", "cancel_scheduled_message", "update_message_status",
      "add_message_attachments", "export_messages", "get_email", "cancel_scheduled_email", "upload_attachments",
      "initiate_upload", "complete_upload", "get_message_recording", "get_message_transcription",
      "download_message_transcription", "live_chat_typing", "get_custom_subtypes", "create_custom_subtype",
      "update_custom_subtype", "get_unsubscription_status", "change_subscription" }
    local got = {}
    for i, op in ipairs(catalogue.operations) do got[i] = op.name end
    assert.are.same(want, got)
  end)

  it("declares every path parameter as an argument, every POST as a send, uploads outside batches", function()
    local answers = { message = true, conversation = true, messages_page = true, conversations_page = true,
      export_page = true, send = true, table = true, raw = true }
    for _, op in ipairs(catalogue.operations) do
      local args = {}
      for _, a in ipairs(op.args) do args[a.name] = a["in"] end
      for p in op.path:gmatch("{([^}]+)}") do
        assert.are.equal("path", args[p], op.name .. " lacks its path parameter " .. p)
      end
      assert.are.equal(op.method == "POST" and "send" or "read", op.retry, op.name)
      assert.is_true(answers[op.answer] == true, op.name .. " answer " .. tostring(op.answer))
      assert.are.equal(op.content ~= "multipart", op.batch, op.name)
      assert.are.equal(op.body ~= nil, op.content ~= nil, op.name)
    end
  end)

  it("carries the fixes of the spec's known defects", function()
    local by = {}
    for _, op in ipairs(catalogue.operations) do by[op.name] = op end
    local function field(schema, name)
      for _, f in ipairs(schema) do if f.name == name then return f end end
    end
    assert.are.equal("boolean", field(by.live_chat_typing.body, "isTyping").type)
    assert.are.equal("/conversations/messages/{id}", by.get_message.path)
    assert.are.same({ { name = "id", ["in"] = "path", type = "id" } }, by.get_message.args)
    assert.are.same({ "locationId", "messageId" }, { by.get_message_recording.args[1].name,
      by.get_message_recording.args[2].name })
    assert.are.equal("query", by.update_custom_subtype.args[2]["in"])
    -- API.md's send body wins: subType is a string, only type and contactId are required
    assert.are.equal("string", field(by.send_message.body, "subType").type)
    local required = {}
    for _, f in ipairs(by.send_message.body) do if f.required then required[#required + 1] = f.name end end
    assert.are.same({ "type", "contactId" }, required)
    assert.are.equal("string_or_object", field(by.update_message_status.body, "recipients").items.type)
    assert.are.equal("fileAttachment", by.upload_attachments.files.field)
    assert.are.equal(5, by.upload_attachments.files.max_files)
  end)
end)

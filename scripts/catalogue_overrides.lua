-- Overrides for scripts/catalogue.lua: what the vendor's OpenAPI file does not say, or says wrong.
-- Every entry says why. The generator applies these on top of ../shared/reference/conversations.openapi.json.
--
-- `operations` lists API.md §4's methods in its order, keyed to the spec's operationId:
--   name     the Lua method name (API.md §4)
--   args     the positional Lua arguments, in API.md's order (path parameters, and query parameters API.md makes
--            positional, e.g. get_custom_subtypes(locationId))
--   answer   how the answer is decoded (CATALOGUE.md)
--   path_params  path parameters the spec forgot (they are in the path template but not in `parameters`)
--   body / query  a schema (CATALOGUE.md's format) that replaces the spec's, when API.md's field list wins
--   patch    function(op) run last, for small fixes of one field

local S = {}

-- API.md §1: the seed pages' send body. API.md's list wins over the spec (which adds fields the seeds do not
-- know, calls subType an object, and since 2026 marks subType/status required while its SDK examples send neither).
S.send = {
  { name = "type", type = "enum", required = true,
    enum = { "SMS", "RCS", "Email", "WhatsApp", "IG", "FB", "Custom", "Live_Chat", "TIKTOK" } },
  { name = "contactId", type = "id", required = true },
  { name = "subType", type = "string" },
  { name = "appointmentId", type = "id" },
  { name = "attachments", type = "array", items = { type = "string" } },
  { name = "emailFrom", type = "string" },
  { name = "emailCc", type = "array", items = { type = "string" } },
  { name = "emailBcc", type = "array", items = { type = "string" } },
  { name = "html", type = "string" },
  { name = "message", type = "string" },
  { name = "subject", type = "string" },
  { name = "replyMessageId", type = "id" },
  { name = "templateId", type = "id" },
  { name = "threadId", type = "id" },
  { name = "scheduledTimestamp", type = "number" },
  { name = "conversationProviderId", type = "id" },
  { name = "emailTo", type = "string" },
  { name = "customSubtypeId", type = "id" },
  { name = "emailReplyMode", type = "enum", enum = { "reply", "reply_all" } },
  { name = "fromNumber", type = "string" },
  { name = "toNumber", type = "string" },
  { name = "forward", type = "object", fields = {
    { name = "isForwarded", type = "boolean", required = true },
    { name = "forwardWholeThread", type = "boolean" },
    { name = "messageId", type = "id" },
    { name = "emailMessageId", type = "id" },
    { name = "sourceContactId", type = "id" },
    { name = "sourceConversationId", type = "id" },
    { name = "toEmail", type = "string" },
    { name = "recipientContactId", type = "id" },
    { name = "recipientConversationId", type = "id" },
  } },
  { name = "status", type = "enum", enum = { "delivered", "failed", "pending", "read" } },
  { name = "usesNativeSchedulingAi", type = "boolean" },
  { name = "optimizationPeriod", type = "enum", enum = { "24h", "48h", "72h" } },
}

-- API.md §1: the update-status body. `recipients`: the spec says strings, its own newer example sends objects
-- {emailId, status}; both are accepted (type "string_or_object").
S.status = {
  { name = "status", type = "enum", required = true, enum = { "delivered", "failed", "pending", "read" } },
  { name = "error", type = "object", fields = {
    { name = "code", type = "string" }, { name = "type", type = "string" }, { name = "message", type = "string" },
  } },
  { name = "emailMessageId", type = "id" },
  { name = "recipients", type = "array", items = { type = "string_or_object", fields = {
    { name = "emailId", type = "string" }, { name = "status", type = "string" },
  } } },
}

local function field(schema, name)
  for _, f in ipairs(schema or {}) do if f.name == name then return f end end
  error("override: no field " .. name)
end

return {
  operations = {
    { id = "search-conversation", name = "search_conversations", answer = "conversations_page",
      patch = function(op)
        -- search results carry `sort` and the next page starts after the last result's sort value: live it is a
        -- number (or a one-element array of one); the spec says "any". Strings and numbers are what a query holds.
        local f = field(op.query, "startAfterDate")
        f.type, f.items = "any", nil
      end },
    { id = "get-conversation", name = "get_conversation", answer = "conversation" },
    { id = "create-conversation", name = "create_conversation", answer = "table", objects = { conversation = "conversation" } },
    { id = "update-conversation", name = "update_conversation", answer = "table", objects = { conversation = "conversation" } },
    { id = "delete-conversation", name = "delete_conversation", answer = "table" },
    -- The live answer nests the page one level down ({ messages = { lastMessageId, nextPage, messages } },
    -- vendor docs issue #54); "messages_page" reads both and returns the flat page.
    { id = "get-messages", name = "get_messages", answer = "messages_page",
      patch = function(op)
        -- its example filters by several types at once: "TYPE_SMS,TYPE_CALL"
        field(op.query, "type").comma_list = true
      end },
    -- The spec omits the {id} path parameter (SDKs generated from it have called a literal "{id}" URL).
    { id = "get-message", name = "get_message", answer = "message", path_params = { "id" } },
    { id = "send-a-new-message", name = "send_message", answer = "send", body = S.send },
    { id = "add-an-inbound-message", name = "add_inbound_message", answer = "table",
      patch = function(op)
        -- declared an object with an array example; it is one of the two directions
        local f = field(op.body, "direction")
        f.type, f.enum = "enum", { "outbound", "inbound" }
      end },
    { id = "add-an-outbound-message", name = "add_outbound_call", answer = "table" },
    { id = "send-review-reply", name = "send_review_reply", answer = "table" },
    { id = "cancel-scheduled-message", name = "cancel_scheduled_message", answer = "table" },
    -- update-status answers like send (a 2xx must hold messageId); the seed's body (API.md §1) wins.
    { id = "update-message-status", name = "update_message_status", answer = "send", body = S.status },
    { id = "add-message-attachments", name = "add_message_attachments", answer = "table" },
    { id = "export-messages-by-location", name = "export_messages", answer = "export_page" },
    -- The spec omits the {id} path parameter here too.
    { id = "get-email-by-id", name = "get_email", answer = "table", path_params = { "id" } },
    { id = "cancel-scheduled-email-message", name = "cancel_scheduled_email", answer = "table" },
    { id = "upload-file-attachments", name = "upload_attachments", answer = "table",
      -- the files go in `fileAttachment` parts (limits from the spec's description: 5 files, 5 MB each)
      files = { field = "fileAttachment", max_files = 5, max_file_size = 5 * 1024 * 1024 },
      patch = function(op)
        -- the spec requires attachmentUrls, yet an upload of files needs none (its own example sends none)
        field(op.body, "attachmentUrls").required = nil
        -- declared a string; it is a flag, sent as "true"/"false" in the form
        field(op.body, "isGroupSms").type = "boolean"
      end },
    { id = "initiate-file-upload", name = "initiate_upload", answer = "table" },
    { id = "complete-file-upload", name = "complete_upload", answer = "table" },
    { id = "get-message-recording", name = "get_message_recording", answer = "raw", args = { "locationId", "messageId" } },
    { id = "get-message-transcription", name = "get_message_transcription", answer = "table", args = { "locationId", "messageId" } },
    { id = "download-message-transcription", name = "download_message_transcription", answer = "raw",
      args = { "locationId", "messageId" } },
    { id = "live-chat-agent-typing", name = "live_chat_typing", answer = "table",
      patch = function(op)
        -- declared a string while its example is the boolean true (API.md: send a boolean)
        field(op.body, "isTyping").type = "boolean"
      end },
    { id = "get-all-custom-subtypes", name = "get_custom_subtypes", answer = "table", args = { "locationId" } },
    { id = "create-custom-subtype", name = "create_custom_subtype", answer = "table", args = { "locationId" } },
    { id = "update-custom-subtype", name = "update_custom_subtype", answer = "table", args = { "id", "locationId" } },
    { id = "get-contact-unsubscription-status", name = "get_unsubscription_status", answer = "table" },
    { id = "user-subscription-change", name = "change_subscription", answer = "table" },
  },
  iterators = {
    { name = "each_message", op = "get_messages", cursor = "lastMessageId", more = "nextPage", items = "messages" },
    { name = "each_conversation", op = "search_conversations", cursor = "startAfterDate", items = "conversations",
      from = "sort", total = "total" },
    { name = "each_exported_message", op = "export_messages", cursor = "nextCursor", items = "messages",
      param = "cursor" },
  },
}

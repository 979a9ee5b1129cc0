-- Validation rules for request bodies, written by hand from the vendor's OpenAPI file
-- (../shared/reference/conversations.openapi.json, components.schemas.*). Plain data, no ngx:
-- spec/11-sandbox_rules_spec.lua cross-checks these tables against that file property by property,
-- so any difference from the spec must be listed in `deviations` below with its reason.
--
-- A schema: { required = {names...}, properties = { {name, rule}, ... } }   (ordered, for stable messages)
-- A rule:   { type = "string"|"number"|"boolean"|"object"|"array", enum = {...}, not_empty = true,
--             format = "date-time", items = rule, schema = "OtherDto" (objects), any_of = {rule, ...} }
local M = {}

local function props(list)
  local by_name = {}
  for _, p in ipairs(list) do by_name[p[1]] = p[2] end
  return list, by_name
end

local function schema(required, list)
  local properties, by_name = props(list)
  return { required = required, properties = properties, by_name = by_name }
end

local STR = { type = "string" }
local NUM = { type = "number" }
local BOOL = { type = "boolean" }
local STR_ARRAY = { type = "array", items = STR }

M.SEND_TYPES = { "SMS", "RCS", "Email", "WhatsApp", "IG", "FB", "Custom", "Live_Chat", "TIKTOK" }
M.INBOUND_TYPES = {
  "SMS", "RCS", "Email", "WhatsApp", "GMB", "IG", "FB", "Custom", "WebChat", "Live_Chat", "Call",
  "IVR_Call", "Campaign_Call", "Campaign_VoiceMail", "TIKTOK", "ALL_IN_ONE_CHAT", "FORM_SUBMISSION",
}
M.SEND_STATUSES = { "delivered", "failed", "pending", "read" }
M.CALL_STATUSES = { "pending", "completed", "answered", "busy", "no-answer", "failed", "canceled", "voicemail" }
M.VERSIONS = { "2021-04-15", "2021-07-28" }

M.schemas = {}

M.schemas.ForwardConfigDto = schema({ "isForwarded" }, {
  { "isForwarded", BOOL },
  { "forwardWholeThread", BOOL },
  { "messageId", STR },
  { "emailMessageId", STR },
  { "sourceContactId", STR },
  { "sourceConversationId", STR },
  { "toEmail", STR },
  { "recipientContactId", STR },
  { "recipientConversationId", STR },
})

M.schemas.SendMessageBodyDto = schema({ "type", "contactId" }, {
  { "type", { type = "string", enum = M.SEND_TYPES } },
  { "subType", STR },
  { "contactId", { type = "string", not_empty = true } },
  { "appointmentId", STR },
  { "attachments", STR_ARRAY },
  { "emailFrom", STR },
  { "emailCc", STR_ARRAY },
  { "emailBcc", STR_ARRAY },
  { "html", STR },
  { "message", STR },
  { "subject", STR },
  { "replyMessageId", STR },
  { "templateId", STR },
  { "threadId", STR },
  { "scheduledTimestamp", NUM },
  { "conversationProviderId", STR },
  { "emailTo", STR },
  { "customSubtypeId", STR },
  { "emailReplyMode", { type = "string", enum = { "reply", "reply_all" } } },
  { "fromNumber", STR },
  { "toNumber", STR },
  { "forward", { type = "object", schema = "ForwardConfigDto" } },
  { "status", { type = "string", enum = M.SEND_STATUSES } },
  { "usesNativeSchedulingAi", BOOL },
  { "optimizationPeriod", { type = "string", enum = { "24h", "48h", "72h" } } },
})

M.schemas.ErrorDto = schema({ "code", "type", "message" }, {
  { "code", STR },
  { "type", STR },
  { "message", STR },
})

M.schemas.RecipientStatus = schema({ "emailId" }, {
  { "emailId", STR },
  { "status", STR },
})

M.schemas.UpdateMessageStatusDto = schema({ "status" }, {
  { "status", { type = "string", enum = M.SEND_STATUSES } },
  { "error", { type = "object", schema = "ErrorDto" } },
  { "emailMessageId", STR },
  { "recipients", { type = "array", items = { any_of = { STR, { type = "object", schema = "RecipientStatus" } },
    message = "each value in %s must be a string or an object {emailId, status}" } } },
})

M.schemas.CallDataDTO = schema({}, {
  { "to", STR },
  { "from", STR },
  { "status", { type = "string", enum = M.CALL_STATUSES } },
})

M.schemas.ProcessMessageBodyDto = schema({ "type", "conversationId", "contactId", "conversationProviderId" }, {
  { "type", { type = "string", enum = M.INBOUND_TYPES } },
  { "attachments", STR_ARRAY },
  { "message", STR },
  { "conversationId", { type = "string", not_empty = true } },
  { "conversationProviderId", { type = "string", not_empty = true } },
  { "html", STR },
  { "subject", STR },
  { "emailFrom", STR },
  { "emailTo", STR },
  { "emailCc", STR_ARRAY },
  { "emailBcc", STR_ARRAY },
  { "emailMessageId", STR },
  { "altId", STR },
  { "direction", { type = "string", enum = { "outbound", "inbound" } } },
  { "date", { type = "string", format = "date-time" } },
  { "call", { type = "object", schema = "CallDataDTO" } },
  { "contactId", { type = "string", not_empty = true } },
})

-- Where these rules knowingly differ from the vendor spec, and why. The cross-check test reads this.
M.deviations = {
  SendMessageBodyDto = {
    -- The spec (since 2026) and the seed page mark these required; the real API and the vendor's own
    -- SDK examples send without them (see API.md). The sandbox accepts sends without them.
    required_relaxed = { subType = true, status = true },
    types = {
      -- The spec types subType as `object` with the example "Email": a generator defect; it is a string.
      subType = "string",
    },
  },
  UpdateMessageStatusDto = {
    types = {
      -- The spec says string[]; its own newer example sends {emailId, status} objects. Both accepted.
      recipients = "array",
    },
    item_types = { recipients = "string|object" },
  },
  ProcessMessageBodyDto = {
    types = {
      -- The spec types direction as `object` (example: an array); the API takes "inbound"/"outbound".
      direction = "string",
    },
    enums = { direction = true },
  },
  -- Not in the spec at all: the shape of a recipients entry in the newer example.
  extra_schemas = { RecipientStatus = true },
}

return M

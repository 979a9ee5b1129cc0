-- Validation rules for request bodies, written by hand from the vendor's OpenAPI file
-- (../shared/reference/conversations.openapi.json, components.schemas.*). Plain data, no ngx:
-- spec/11-sandbox_rules_spec.lua cross-checks these tables against that file property by property,
-- so any difference from the spec must be listed in `deviations` below with its reason.
--
-- A schema: { required = {names...}, properties = { {name, rule}, ... } }   (ordered, for stable messages)
-- A rule:   { type = "string"|"number"|"boolean"|"object"|"array"|"any", enum = {...}, not_empty = true,
--             format = "date-time", items = rule, schema = "OtherDto" (objects), any_of = {rule, ...},
--             message = "..." (when no any_of alternative fits), max_length = N, minimum = N, maximum = N,
--             list = "," (query: each comma-separated item is checked against enum) }
-- Bodies are M.schemas[DtoName]; query parameters M.queries[operationId].
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

-- The bodies of the other operations (API.md §4).
M.schemas.CreateConversationDto = schema({ "locationId", "contactId" }, {
  { "locationId", { type = "string", not_empty = true } },
  { "contactId", { type = "string", not_empty = true } },
})

M.schemas.UpdateConversationDto = schema({ "locationId" }, {
  { "locationId", { type = "string", not_empty = true } },
  { "unreadCount", NUM },
  { "starred", BOOL },
  { "feedback", { type = "object" } },
})

M.schemas.ProcessOutboundMessageBodyDto = schema({ "type", "conversationId", "conversationProviderId" }, {
  { "type", { type = "string", enum = { "Call" } } },
  { "attachments", STR_ARRAY },
  { "conversationId", { type = "string", not_empty = true } },
  { "conversationProviderId", { type = "string", not_empty = true } },
  { "altId", STR },
  { "date", { type = "string", format = "date-time" } },
  { "call", { type = "object", schema = "CallDataDTO" } },
})

M.schemas.SendReviewReplyDto = schema({ "conversationId", "locationId", "message" }, {
  { "conversationId", { type = "string", not_empty = true } },
  { "locationId", { type = "string", not_empty = true } },
  { "message", { type = "string", not_empty = true } },
})

M.schemas.AddMessageAttachmentsDto = schema({ "attachments" }, {
  { "attachments", STR_ARRAY },
})

-- The form fields of a multipart upload (the files themselves are the fileAttachment parts).
M.schemas.UploadFilesDto = schema({ "conversationId", "contactId", "locationId" }, {
  { "conversationId", { type = "string", not_empty = true } },
  { "contactId", { type = "string", not_empty = true } },
  { "locationId", { type = "string", not_empty = true } },
  { "attachmentUrls", STR_ARRAY },
  { "chatServiceSid", STR },
  { "isGroupSms", STR },
})

M.schemas.InitiateFileUploadDto = schema({ "locationId", "conversationId", "filename", "contentType", "channel" }, {
  { "locationId", { type = "string", not_empty = true } },
  { "conversationId", { type = "string", not_empty = true } },
  { "filename", { type = "string", not_empty = true } },
  { "contentType", { type = "string", not_empty = true } },
  { "fileSize", NUM },
  { "channel", { type = "string", not_empty = true } },
})

M.schemas.CompleteFileUploadDto = schema({ "uploadId", "filePath", "locationId", "conversationId", "filename" }, {
  { "uploadId", { type = "string", not_empty = true } },
  { "filePath", { type = "string", not_empty = true } },
  { "locationId", { type = "string", not_empty = true } },
  { "conversationId", { type = "string", not_empty = true } },
  { "filename", { type = "string", not_empty = true } },
})

M.schemas.UserTypingBody = schema({ "locationId", "isTyping", "visitorId", "conversationId" }, {
  { "locationId", { type = "string", not_empty = true } },
  { "isTyping", { type = "boolean", any_of = { BOOL, { type = "string", enum = { "true", "false" } } },
    message = "isTyping must be a boolean value" } },
  { "visitorId", { type = "string", not_empty = true } },
  { "conversationId", { type = "string", not_empty = true } },
})

M.SUBTYPE_CHANNELS = { "email", "sms" }
M.schemas.CreateCustomSubtypeDto = schema({ "name", "channel", "language" }, {
  { "name", { type = "string", not_empty = true, max_length = 100 } },
  { "description", { type = "string", max_length = 100 } },
  { "channel", { type = "string", enum = M.SUBTYPE_CHANNELS } },
  { "language", { type = "string", not_empty = true } },
})

M.schemas.UpdateCustomSubtypeDto = schema({}, {
  { "name", { type = "string", max_length = 100 } },
  { "description", { type = "string", max_length = 100 } },
  { "archived", BOOL },
  { "resubscription_legal_form_id", STR },
})

M.schemas.SubscriptionActionDto = schema({ "type", "subtype_status" }, {
  { "type", { type = "string", enum = { "default", "custom", "resub_all" } } },
  { "subtype_name", { type = "string", enum = { "One on One" } } },
  { "subtype_id", STR },
  { "subtype_status", { type = "string", enum = { "subscribed", "unsubscribed" } } },
})

M.schemas.UserSubscriptionChangeDto = schema({ "locationId", "contactId", "email", "subscription_action" }, {
  { "locationId", { type = "string", not_empty = true } },
  { "contactId", { type = "string", not_empty = true } },
  { "email", { type = "string", not_empty = true } },
  { "subscription_action", { type = "object", schema = "SubscriptionActionDto" } },
  { "legal_reason", STR },
  { "legal_description", STR },
})

---------------------------------------------------------------------------------------------------
-- Query parameters, by the spec's operationId. Values arrive as strings: a `number` rule accepts
-- a string that reads as a number; `list = ","` checks each comma-separated item against the enum.
local ID = { type = "string", not_empty = true }
M.MESSAGE_TYPE_FILTER = {
  "TYPE_CALL", "TYPE_SMS", "TYPE_RCS", "TYPE_EMAIL", "TYPE_FACEBOOK", "TYPE_GMB", "TYPE_INSTAGRAM",
  "TYPE_WHATSAPP", "TYPE_ACTIVITY_APPOINTMENT", "TYPE_ACTIVITY_CONTACT", "TYPE_ACTIVITY_INVOICE",
  "TYPE_ACTIVITY_PAYMENT", "TYPE_ACTIVITY_OPPORTUNITY", "TYPE_LIVE_CHAT", "TYPE_INTERNAL_COMMENTS",
  "TYPE_ACTIVITY_EMPLOYEE_ACTION_LOG", "TYPE_TIKTOK", "TYPE_ACTIVITY_WHATSAPP", "TYPE_FORM_SUBMISSION",
}
M.LAST_MESSAGE_TYPES = {
  "TYPE_CALL", "TYPE_SMS", "TYPE_RCS", "TYPE_EMAIL", "TYPE_SMS_REVIEW_REQUEST", "TYPE_WEBCHAT",
  "TYPE_SMS_NO_SHOW_REQUEST", "TYPE_CAMPAIGN_SMS", "TYPE_CAMPAIGN_CALL", "TYPE_CAMPAIGN_EMAIL",
  "TYPE_CAMPAIGN_VOICEMAIL", "TYPE_FACEBOOK", "TYPE_CAMPAIGN_FACEBOOK", "TYPE_CAMPAIGN_MANUAL_CALL",
  "TYPE_CAMPAIGN_MANUAL_SMS", "TYPE_GMB", "TYPE_CAMPAIGN_GMB", "TYPE_REVIEW", "TYPE_INSTAGRAM",
  "TYPE_WHATSAPP", "TYPE_CUSTOM_SMS", "TYPE_CUSTOM_EMAIL", "TYPE_CUSTOM_PROVIDER_SMS",
  "TYPE_CUSTOM_PROVIDER_EMAIL", "TYPE_IVR_CALL", "TYPE_ACTIVITY_CONTACT", "TYPE_ACTIVITY_INVOICE",
  "TYPE_ACTIVITY_PAYMENT", "TYPE_ACTIVITY_OPPORTUNITY", "TYPE_LIVE_CHAT", "TYPE_LIVE_CHAT_INFO_MESSAGE",
  "TYPE_ACTIVITY_APPOINTMENT", "TYPE_FACEBOOK_COMMENT", "TYPE_INSTAGRAM_COMMENT", "TYPE_CUSTOM_CALL",
  "TYPE_INTERNAL_COMMENT", "TYPE_ACTIVITY_EMPLOYEE_ACTION_LOG", "TYPE_TIKTOK", "TYPE_TIKTOK_COMMENT",
  "TYPE_ACTIVITY_WHATSAPP", "TYPE_FORM_SUBMISSION", "TYPE_SMS_REACTION",
}
M.EXPORT_CHANNELS = { "Call", "SMS", "Email", "WhatsApp", "Instagram", "Facebook" }

M.queries = {}
M.queries["search-conversation"] = schema({ "locationId" }, {
  { "locationId", ID },
  { "contactId", STR },
  { "assignedTo", STR },
  { "followers", STR },
  { "mentions", STR },
  { "query", STR },
  { "sort", { type = "string", enum = { "asc", "desc" } } },
  { "startAfterDate", { type = "any" } },
  { "id", STR },
  { "limit", NUM },
  { "lastMessageType", { type = "string", enum = M.LAST_MESSAGE_TYPES } },
  { "lastMessageAction", { type = "string", enum = { "automated", "manual" } } },
  { "lastMessageDirection", { type = "string", enum = { "inbound", "outbound" } } },
  { "status", { type = "string", enum = { "all", "read", "unread", "starred", "recents" } } },
  { "sortBy", { type = "string", enum = {
    "last_manual_message_date", "last_message_date", "score_profile", "overdue_at", "due_at" } } },
  { "sortScoreProfile", STR },
  { "scoreProfile", STR },
  { "scoreProfileMin", NUM },
  { "scoreProfileMax", NUM },
  { "startDate", NUM },
  { "endDate", NUM },
})
M.queries["get-messages"] = schema({}, {
  { "lastMessageId", STR },
  { "limit", NUM },
  { "type", { type = "string", enum = M.MESSAGE_TYPE_FILTER, list = "," } },
})
M.queries["export-messages-by-location"] = schema({ "locationId" }, {
  { "locationId", ID },
  { "limit", { type = "number", minimum = 10, maximum = 500 } },
  { "cursor", STR },
  { "sortBy", { type = "string", enum = { "createdAt", "updatedAt" } } },
  { "sortOrder", { type = "string", enum = { "asc", "desc" } } },
  { "conversationId", STR },
  { "contactId", STR },
  { "channel", { type = "string", enum = M.EXPORT_CHANNELS } },
  { "startDate", STR },
  { "endDate", STR },
})
local LOCATION_ONLY = schema({ "locationId" }, { { "locationId", ID } })
M.queries["get-all-custom-subtypes"] = LOCATION_ONLY
M.queries["create-custom-subtype"] = LOCATION_ONLY
M.queries["update-custom-subtype"] = LOCATION_ONLY
M.queries["get-contact-unsubscription-status"] = schema({ "locationId", "contactId" }, {
  { "locationId", ID },
  { "contactId", ID },
  { "email", STR },
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
  UploadFilesDto = {
    -- The spec requires attachmentUrls, but the files come in the multipart fileAttachment parts;
    -- the vendor's own SDKs upload without it.
    required_relaxed = { attachmentUrls = true },
  },
  UserTypingBody = {
    types = {
      -- The spec declares a string while its example is the boolean true (API.md): a boolean, the
      -- strings "true"/"false" accepted too.
      isTyping = "boolean",
    },
  },
  -- Not in the spec at all: the shape of a recipients entry in the newer example.
  extra_schemas = { RecipientStatus = true },
}

return M

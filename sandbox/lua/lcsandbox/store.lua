-- The sandbox's state: conversations and messages, per location, in plain Lua tables (one nginx
-- worker owns them). No ngx here, so it can be loaded by tests too. Messages are stored in the
-- exact shape GET /conversations/messages/{id} answers.
local json = require "lcsandbox.json"

local M = {}

local floor, random, char = math.floor, math.random, string.char
local unpack = table.unpack or unpack
local now = (ngx and ngx.now) or os.time

M.DEFAULT_LOCATION = "loc_sandbox"
-- Called after each change an API call made: on_change("send"|"inbound"|"status", loc, msg, conv, body,
-- unread_changed). Set by lcsandbox.webhooks; nil otherwise.
M.on_change = nil

-- The vendor's MessageType enum, in its numeric order (TYPE_CALL = 1, TYPE_SMS = 2, TYPE_EMAIL = 3 ...).
-- TYPE_RCS is a late addition whose number is not published; the sandbox gives it 42.
local MESSAGE_TYPES = {
  "TYPE_CALL", "TYPE_SMS", "TYPE_EMAIL", "TYPE_SMS_REVIEW_REQUEST", "TYPE_WEBCHAT",
  "TYPE_SMS_NO_SHOW_REQUEST", "TYPE_CAMPAIGN_SMS", "TYPE_CAMPAIGN_CALL", "TYPE_CAMPAIGN_EMAIL",
  "TYPE_CAMPAIGN_VOICEMAIL", "TYPE_FACEBOOK", "TYPE_CAMPAIGN_FACEBOOK", "TYPE_CAMPAIGN_MANUAL_CALL",
  "TYPE_CAMPAIGN_MANUAL_SMS", "TYPE_GMB", "TYPE_CAMPAIGN_GMB", "TYPE_REVIEW", "TYPE_INSTAGRAM",
  "TYPE_WHATSAPP", "TYPE_CUSTOM_SMS", "TYPE_CUSTOM_EMAIL", "TYPE_CUSTOM_PROVIDER_SMS",
  "TYPE_CUSTOM_PROVIDER_EMAIL", "TYPE_IVR_CALL", "TYPE_ACTIVITY_CONTACT", "TYPE_ACTIVITY_INVOICE",
  "TYPE_ACTIVITY_PAYMENT", "TYPE_ACTIVITY_OPPORTUNITY", "TYPE_LIVE_CHAT", "TYPE_LIVE_CHAT_INFO_MESSAGE",
  "TYPE_ACTIVITY_APPOINTMENT", "TYPE_FACEBOOK_COMMENT", "TYPE_INSTAGRAM_COMMENT", "TYPE_CUSTOM_CALL",
  "TYPE_INTERNAL_COMMENT", "TYPE_ACTIVITY_EMPLOYEE_ACTION_LOG", "TYPE_TIKTOK", "TYPE_TIKTOK_COMMENT",
  "TYPE_ACTIVITY_WHATSAPP", "TYPE_FORM_SUBMISSION", "TYPE_SMS_REACTION", "TYPE_RCS",
}
M.MESSAGE_TYPES = MESSAGE_TYPES
local TYPE_NUMBER = {}
for i, name in ipairs(MESSAGE_TYPES) do TYPE_NUMBER[name] = i end
M.TYPE_NUMBER = TYPE_NUMBER

-- Channel (the `type` of a send or inbound body) -> messageType.
M.CHANNEL_MESSAGE_TYPE = {
  SMS = "TYPE_SMS", RCS = "TYPE_RCS", Email = "TYPE_EMAIL", WhatsApp = "TYPE_WHATSAPP",
  IG = "TYPE_INSTAGRAM", FB = "TYPE_FACEBOOK", Custom = "TYPE_CUSTOM_PROVIDER_SMS",
  Live_Chat = "TYPE_LIVE_CHAT", TIKTOK = "TYPE_TIKTOK", GMB = "TYPE_GMB", WebChat = "TYPE_WEBCHAT",
  Call = "TYPE_CALL", IVR_Call = "TYPE_IVR_CALL", Campaign_Call = "TYPE_CAMPAIGN_CALL",
  Campaign_VoiceMail = "TYPE_CAMPAIGN_VOICEMAIL", ALL_IN_ONE_CHAT = "TYPE_LIVE_CHAT",
  FORM_SUBMISSION = "TYPE_FORM_SUBMISSION",
}

-- Channel -> conversation type: 1 Phone, 2 Email, 3 Facebook Messenger (FB and IG); everything
-- else (SMS, RCS, WhatsApp, Custom, Live_Chat, TIKTOK, calls...) is a Phone conversation.
M.CONVERSATION_TYPE = { Email = 2, FB = 3, IG = 3 }
local function conversation_type(channel) return M.CONVERSATION_TYPE[channel] or 1 end

local ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
local ALPHABET_BYTES = { ALPHABET:byte(1, -1) }

-- 20-character ids like the API's ("ve9EPM428h8vShlRW1KT").
local function new_id(taken)
  local b = {}
  while true do
    for i = 1, 20 do b[i] = ALPHABET_BYTES[random(1, 62)] end
    local id = char(unpack(b))
    if not taken or taken[id] == nil then return id end
  end
end
M.new_id = new_id

-- ISO 8601 with milliseconds, UTC: 2024-03-27T18:13:49.000Z
local function iso(t)
  local s = floor(t)
  local ms = floor((t - s) * 1000 + 0.5)
  if ms >= 1000 then s, ms = s + 1, 0 end
  return os.date("!%Y-%m-%dT%H:%M:%S", s) .. (".%03dZ"):format(ms)
end
M.iso = iso

-- Days since 1970-01-01 of a proleptic Gregorian date (no time zone involved).
local function days_from_civil(y, m, d)
  if m <= 2 then y = y - 1 end
  local era = floor(y / 400)
  local yoe = y - era * 400
  local mp = (m + 9) % 12
  local doy = floor((153 * mp + 2) / 5) + d - 1
  local doe = yoe * 365 + floor(yoe / 4) - floor(yoe / 100) + doy
  return era * 146097 + doe - 719468
end

-- Milliseconds since the epoch of an ISO 8601 date-time (Z or +hh:mm), or nil.
local function iso_ms(s)
  if type(s) ~= "string" then return nil end
  local y, mo, d, h, mi, se, rest = s:match("^(%d%d%d%d)%-(%d%d)%-(%d%d)T(%d%d):(%d%d):(%d%d)(.*)$")
  if not y then return nil end
  local frac, zone = rest:match("^%.(%d+)(.*)$")
  if frac then rest = zone end
  local off = 0
  if rest ~= "Z" then
    local sign, oh, om = rest:match("^([+-])(%d%d):?(%d%d)$")
    if not sign then return nil end
    off = (tonumber(oh) * 60 + tonumber(om)) * 60 * (sign == "-" and -1 or 1)
  end
  local secs = days_from_civil(tonumber(y), tonumber(mo), tonumber(d)) * 86400 +
    tonumber(h) * 3600 + tonumber(mi) * 60 + tonumber(se) - off
  local ms = frac and floor(tonumber("0." .. frac) * 1000 + 0.5) or 0
  return secs * 1000 + ms
end
M.iso_ms = iso_ms

---------------------------------------------------------------------------------------------------
-- state: { messages = {id -> message}, conversations = {id -> conversation},
--          order = {conversationId -> {message ids, oldest first}}, dirty = bool,
--          conv_dates = {conversationId -> {dateAdded, dateUpdated, feedback}},
--          emails = {emailMessageId -> email record (GET .../email/{id} shape) + messageId},
--          transcriptions = {messageId -> {sentence...}}, subtypes = {id -> custom subtype},
--          subscriptions = {location \0 contact -> {email, default = {name -> status}, custom = {id -> status}}},
--          -- kept in memory only, not in the --state file:
--          recordings = {messageId -> {body, content_type}}, files = {id -> {name, content_type, data}},
--          uploads = {uploadId -> pending large upload}, typing = {conversationId -> {...}} }
-- by_contact[locationId .. "\0" .. contactId] and last[conversationId] (the last message's date in
-- ms, body, type, direction, and the conversation's unique search sort value) are rebuilt from those.
local S
local by_contact
local last, sort_taken

local function contact_key(loc, contact) return loc .. "\0" .. contact end

local function mark() S.dirty = true end

-- Search pages by the sort value (startAfterDate): it must be unique per location, or paging
-- would skip conversations whose last messages share a millisecond. A taken value moves on by 1 ms.
local function set_sort(c, ms)
  local l = last[c.id]
  local taken = sort_taken[c.locationId]
  if not taken then
    taken = {}
    sort_taken[c.locationId] = taken
  end
  if l.sort then taken[l.sort] = nil end
  while taken[ms] do ms = ms + 1 end
  taken[ms] = c.id
  l.sort = ms
end

local function note_last(c, m)
  local l = last[c.id]
  l.date = iso_ms(m.dateAdded) or floor(now() * 1000)
  l.body, l.type, l.direction, l.messageId = m.body, m.messageType, m.direction, m.id
  set_sort(c, l.date)
end

local function forget_last(c)
  local l = last[c.id]
  local taken = sort_taken[c.locationId]
  if l and l.sort and taken then taken[l.sort] = nil end
end

-- The conversation's last message again (after one was removed), or its creation date.
local function recompute_last(c)
  local order = S.order[c.id]
  for i = #order, 1, -1 do
    local m = S.messages[order[i]]
    if m then return note_last(c, m) end
  end
  local l = last[c.id]
  l.body, l.type, l.direction, l.messageId = nil, nil, nil, nil
  l.date = iso_ms(S.conv_dates[c.id] and S.conv_dates[c.id].dateAdded) or floor(now() * 1000)
  set_sort(c, l.date)
end

local function index()
  by_contact, last, sort_taken = {}, {}, {}
  for _, c in pairs(S.conversations) do
    by_contact[contact_key(c.locationId, c.contactId)] = c
    last[c.id] = {}
  end
  local ids = {}
  for id in pairs(S.conversations) do ids[#ids + 1] = id end
  table.sort(ids)
  for _, id in ipairs(ids) do recompute_last(S.conversations[id]) end
end

local function add_conversation(loc, contact, ctype, fields)
  local c = {
    id = (fields and fields.id) or new_id(S.conversations),
    contactId = contact,
    locationId = loc,
    deleted = false,
    inbox = true,
    type = ctype,
    unreadCount = 0,
    starred = false,
  }
  if fields then
    for k, v in pairs(fields) do c[k] = v end
  end
  S.conversations[c.id] = c
  S.order[c.id] = {}
  local d = iso(now())
  S.conv_dates[c.id] = { dateAdded = d, dateUpdated = d }
  by_contact[contact_key(loc, contact)] = c
  last[c.id] = {}
  recompute_last(c)
  mark()
  return c
end

local function unread(m)
  return m.direction == "inbound" and m.status ~= "read"
end

-- At most M.max_messages are kept (memory: about 1.5 KB each); beyond it the oldest are forgotten,
-- so that long benchmarks cannot exhaust memory. S.fifo holds every stored id, oldest first.
M.max_messages = 200000

local function remember(id)
  local tail = S.fifo_tail + 1
  S.fifo[tail] = id
  S.fifo_tail = tail
  S.count = S.count + 1
  while S.count > M.max_messages do
    local head = S.fifo_head
    local old = S.fifo[head]
    S.fifo[head] = nil
    S.fifo_head = head + 1
    local m = old and S.messages[old]
    if m then
      S.messages[old] = nil
      S.count = S.count - 1
      -- what hangs off a message goes with it
      S.recordings[old], S.transcriptions[old] = nil, nil
      local email = m.meta and m.meta.email
      for _, eid in ipairs(email and email.messageIds or {}) do S.emails[eid] = nil end
    end
  end
end

-- Seed messages are never forgotten (benchmarks read msg_demo_1 while sending many).
local SEED_IDS = {}

-- Called with every message the sandbox stores, once, right after it was stored:
-- how = "seed" | "sent" | "inbound" | "outbound_call" | "review_reply" | "injected".
-- The one place to hang "a message was created" on (webhook delivery). Set by whoever needs it.
M.on_message = nil

-- Every message is created here, and only here.
local function add_message(c, m, how)
  m.conversationId = c.id
  m.locationId = c.locationId
  m.contactId = c.contactId
  S.messages[m.id] = m
  -- A conversation's messages are kept in date order (oldest first): a message dated before the
  -- latest ones (an inbound `date` in the past, imported history) goes in its place.
  local order = S.order[c.id]
  local pos = #order + 1
  local ms = iso_ms(m.dateAdded)
  if ms then
    while pos > 1 do
      local prev = S.messages[order[pos - 1]]
      local pms = prev and iso_ms(prev.dateAdded)
      if not pms or pms <= ms then break end
      pos = pos - 1
    end
  end
  table.insert(order, pos, m.id)
  if unread(m) then c.unreadCount = c.unreadCount + 1 end
  if not SEED_IDS[m.id] then remember(m.id) end
  if pos == #order then note_last(c, m) end
  S.conv_dates[c.id].dateUpdated = iso(now())
  mark()
  if M.on_message then M.on_message(m, c, how) end
  return m
end

-- The email record of an email message, readable by GET /conversations/messages/email/{id}.
local function add_email(m, email_id, b)
  local e = {
    id = email_id, messageId = m.id, threadId = b.threadId or m.id, altId = b.altId,
    locationId = m.locationId, contactId = m.contactId, conversationId = m.conversationId,
    dateAdded = m.dateAdded, subject = b.subject, body = m.body, direction = m.direction,
    status = m.status, contentType = m.contentType, attachments = m.attachments,
    provider = "Leadconnector Gmail", from = b.emailFrom or "sandbox@example.com",
    to = json.array(b.emailTo and { b.emailTo } or nil), cc = json.array(b.emailCc),
    bcc = json.array(b.emailBcc), replyToMessageId = b.replyMessageId, source = m.source,
    conversationProviderId = m.conversationProviderId,
  }
  S.emails[email_id] = e
  return e
end

---------------------------------------------------------------------------------------------------
-- Seed data (documented in sandbox/README.md). Fixed ids and dates, so tests and docs can name them.
function M.empty_state()
  return { messages = {}, conversations = {}, order = {}, dirty = true, fifo = {}, fifo_head = 1, fifo_tail = 0,
           count = 0, conv_dates = {}, emails = {}, transcriptions = {}, subtypes = {}, subscriptions = {},
           recordings = {}, files = {}, uploads = {}, typing = {} }
end

-- Contacts the search answers know by name (the sandbox has no contacts API; others have "").
M.CONTACTS = {
  contact_demo_1 = { fullName = "Ada Lovelace", email = "ada@example.com", phone = "+15550000001" },
  contact_demo_2 = { fullName = "Charles Babbage", email = "charles@example.com", phone = "+15550000002" },
  contact_demo_3 = { fullName = "Grace Hopper", email = "grace@example.com", phone = "+15550000003" },
  contact_demo_4 = { fullName = "Alan Turing", email = "alan@example.com", phone = "+15550000004" },
}

-- A short, valid WAV file (8 kHz, 8-bit mono, 0.1 s of a square wave): the seed call's recording.
local function tiny_wav()
  local n = 800
  local samples = {}
  for i = 1, n do samples[i] = (floor(i / 10) % 2 == 0) and "\200" or "\056" end
  local data = table.concat(samples)
  local function le32(v) return char(v % 256, floor(v / 256) % 256, floor(v / 65536) % 256, floor(v / 16777216) % 256) end
  local function le16(v) return char(v % 256, floor(v / 256) % 256) end
  return "RIFF" .. le32(36 + n) .. "WAVE" .. "fmt " .. le32(16) .. le16(1) .. le16(1) .. le32(8000) ..
    le32(8000) .. le16(1) .. le16(8) .. "data" .. le32(n) .. data
end
M.SEED_RECORDING = { body = tiny_wav(), content_type = "audio/x-wav" }
M.SEED_TRANSCRIPTION = {
  { mediaChannel = 1, sentenceIndex = 1, startTime = 0, endTime = 3.2,
    transcript = "Hello, this is Alan returning your call.", confidence = 0.93 },
  { mediaChannel = 2, sentenceIndex = 2, startTime = 3.6, endTime = 6.1,
    transcript = "Thanks, Friday at ten works for me.", confidence = 0.88 },
}

function M.seed()
  S = M.empty_state()
  by_contact, last, sort_taken = {}, {}, {}
  local L = M.DEFAULT_LOCATION
  local function msg(id, channel, direction, status, date, body, extra)
    local mt = M.CHANNEL_MESSAGE_TYPE[channel]
    local m = {
      id = id, type = TYPE_NUMBER[mt], messageType = mt, dateAdded = date, body = body,
      direction = direction, status = status, contentType = "text/plain",
      attachments = json.empty_array(), meta = {}, source = direction == "outbound" and "app" or nil,
    }
    if extra then for k, v in pairs(extra) do m[k] = v end end
    SEED_IDS[id] = true
    return m
  end
  local function conv(contact, ctype, fields, date)
    local c = add_conversation(L, contact, ctype, fields)
    S.conv_dates[c.id] = { dateAdded = date, dateUpdated = date }
    return c
  end
  local c1 = conv("contact_demo_1", 1, { id = "conv_demo_1" }, "2024-03-27T18:13:49.000Z")
  add_message(c1, msg("msg_demo_1", "SMS", "outbound", "delivered", "2024-03-27T18:13:49.000Z",
    "Hi Ada, thanks for your enquiry! Would you like to book a visit?", { userId = "user_demo_1" }), "seed")
  add_message(c1, msg("msg_demo_2", "SMS", "inbound", "delivered", "2024-03-27T18:20:02.000Z",
    "Yes please, is Friday at 10 possible?"), "seed")

  local c2 = conv("contact_demo_2", 2, { id = "conv_demo_2" }, "2024-03-28T09:00:00.000Z")
  local m3 = add_message(c2, msg("msg_demo_3", "Email", "outbound", "delivered", "2024-03-28T09:00:00.000Z",
    "<p>Your invoice is attached.</p>", {
      contentType = "text/html", userId = "user_demo_1",
      attachments = { "https://example.com/sandbox/invoice-1001.pdf" },
      meta = { email = { messageIds = { "emsg_demo_3" }, subject = "Invoice 1001" } },
    }), "seed")
  add_email(m3, "emsg_demo_3", { subject = "Invoice 1001", emailFrom = "billing@example.com",
    emailTo = "charles@example.com" })
  local m4 = add_message(c2, msg("msg_demo_4", "Email", "inbound", "read", "2024-03-28T10:30:00.000Z",
    "Thank you, received.", { meta = { email = { messageIds = { "emsg_demo_4" }, subject = "Re: Invoice 1001" } } }),
    "seed")
  add_email(m4, "emsg_demo_4", { subject = "Re: Invoice 1001", emailFrom = "charles@example.com",
    emailTo = "billing@example.com", replyMessageId = "emsg_demo_3", threadId = "msg_demo_3" })

  local c3 = conv("contact_demo_3", 3, {
    id = "conv_demo_3", starred = true, assignedTo = "user_demo_1",
  }, "2024-03-29T15:45:10.000Z")
  add_message(c3, msg("msg_demo_5", "FB", "inbound", "delivered", "2024-03-29T15:45:10.000Z",
    "Hello, are you open on Sunday?"), "seed")

  local c4 = conv("contact_demo_4", 1, { id = "conv_demo_4" }, "2024-03-30T11:00:00.000Z")
  add_message(c4, msg("msg_demo_6", "Call", "outbound", "delivered", "2024-03-30T11:00:00.000Z", "", {
    userId = "user_demo_1", conversationProviderId = "provider_sandbox",
    meta = { call = { from = "+15550009999", to = "+15550000004", status = "completed" },
             callStatus = "completed", callDuration = 6 },
  }), "seed")
  S.recordings.msg_demo_6 = M.SEED_RECORDING
  S.transcriptions.msg_demo_6 = M.SEED_TRANSCRIPTION
  return S
end

---------------------------------------------------------------------------------------------------
-- Operations. Each returns the result or nil, status, message (an HTTP error for the caller).
-- Bodies come validated, without top-level JSON nulls.

-- POST /conversations/messages (body already validated).
function M.send(loc, b)
  local c = by_contact[contact_key(loc, b.contactId)]
  if not c then c = add_conversation(loc, b.contactId, conversation_type(b.type)) end
  local mt = M.CHANNEL_MESSAGE_TYPE[b.type]
  local t = now()
  local status = b.status
  if not status then
    status = (b.scheduledTimestamp and b.scheduledTimestamp > t) and "scheduled" or "pending"
  end
  local meta = {}
  local m = {
    id = new_id(S.messages),
    type = TYPE_NUMBER[mt],
    messageType = mt,
    dateAdded = iso(t),
    body = b.message or b.html or "",
    direction = "outbound",
    status = status,
    contentType = (b.html and not b.message) and "text/html" or "text/plain",
    attachments = json.array(b.attachments),
    meta = meta,
    source = "api",
    conversationProviderId = b.conversationProviderId,
  }
  local email_id
  if b.type == "Email" then
    email_id = new_id()
    meta.email = { messageIds = { email_id }, subject = b.subject }
  end
  if b.scheduledTimestamp then meta.scheduledTimestamp = b.scheduledTimestamp end
  add_message(c, m, "sent")
  if email_id then add_email(m, email_id, b) end
  if M.on_change then M.on_change("send", loc, m, c, b) end
  return {
    conversationId = c.id,
    messageId = m.id,
    emailMessageId = email_id,
    status = (status == "scheduled") and "pending" or status,
    msg = (status == "scheduled") and "Message scheduled successfully." or "Message queued successfully.",
  }
end

-- GET /conversations/messages/{id}
function M.get_message(loc, id)
  local m = S.messages[id]
  if not m or m.locationId ~= loc then return nil, 404, "Message not found" end
  return m
end

-- PUT /conversations/messages/{id}/status (body already validated).
-- error, recipients and emailMessageId are kept under the message's meta.
function M.update_status(loc, id, b)
  local m = S.messages[id]
  if not m or m.locationId ~= loc then return nil, 404, "Message not found" end
  local c = S.conversations[m.conversationId]
  local was = unread(m)
  m.status = b.status
  local now_unread = unread(m)
  if was ~= now_unread then -- (update_conversation may have set the count to anything >= 0)
    c.unreadCount = math.max(0, c.unreadCount + (now_unread and 1 or -1))
  end
  local meta = m.meta
  if b.error then meta.error = b.error end
  if b.recipients then meta.recipients = json.array(b.recipients) end
  if b.emailMessageId then meta.emailMessageId = b.emailMessageId end
  mark()
  if M.on_change then M.on_change("status", loc, m, c, b, was ~= now_unread) end
  local email = meta.email
  local rec = email and email.messageIds and S.emails[email.messageIds[1]]
  if rec then rec.status = m.status end
  return {
    conversationId = m.conversationId,
    messageId = m.id,
    status = m.status,
    emailMessageId = email and email.messageIds and email.messageIds[1] or nil,
    msg = "Message status updated successfully.",
  }
end

-- GET /conversations/{id}: the stored conversation has exactly the answer's fields.
function M.get_conversation(loc, id)
  local c = S.conversations[id]
  if not c or c.locationId ~= loc then return nil, 404, "Conversation not found" end
  return c
end

-- POST /conversations/messages/inbound (body already validated).
function M.inbound(loc, b)
  local c = S.conversations[b.conversationId]
  if not c or c.locationId ~= loc then return nil, 404, "Conversation not found" end
  if c.contactId ~= b.contactId then
    return nil, 400, "The contactId does not belong to this conversation"
  end
  local mt = M.CHANNEL_MESSAGE_TYPE[b.type]
  local meta = {}
  local direction = b.direction or "inbound"
  local date = b.date or iso(now())
  local m = {
    id = new_id(S.messages),
    type = TYPE_NUMBER[mt],
    messageType = mt,
    dateAdded = date,
    body = b.message or b.html or "",
    direction = direction,
    status = "delivered",
    contentType = (b.html and not b.message) and "text/html" or "text/plain",
    attachments = json.array(b.attachments),
    meta = meta,
    source = "api",
    conversationProviderId = b.conversationProviderId,
    altId = b.altId,
  }
  local email_id
  if b.type == "Email" then
    email_id = b.emailMessageId or new_id()
    meta.email = { messageIds = { email_id }, subject = b.subject }
  end
  if b.call then
    meta.call = b.call
    meta.callStatus = b.call.status
  end
  add_message(c, m, "inbound")
  if email_id then add_email(m, email_id, b) end
  if M.on_change then M.on_change("inbound", loc, m, c, b) end
  return {
    success = true,
    conversationId = c.id,
    messageId = m.id,
    message = "Message added successfully.",
    contactId = c.contactId,
    dateAdded = m.dateAdded,
    emailMessageId = email_id,
  }
end

---------------------------------------------------------------------------------------------------
-- The other operations of API.md §4. Same conventions: result, or nil, status, message.

local CONVERSATION_TYPE_NAMES = { "TYPE_PHONE", "TYPE_EMAIL", "TYPE_FB_MESSENGER", "TYPE_REVIEW", "TYPE_GROUP_SMS" }
local CALL_TYPES = {
  TYPE_CALL = true, TYPE_IVR_CALL = true, TYPE_CAMPAIGN_CALL = true, TYPE_CAMPAIGN_MANUAL_CALL = true,
  TYPE_CAMPAIGN_VOICEMAIL = true, TYPE_CUSTOM_CALL = true,
}
M.CALL_TYPES = CALL_TYPES

local function conversation_of(loc, id)
  local c = S.conversations[id]
  if not c or c.locationId ~= loc then return nil, 404, "Conversation not found" end
  return c
end

local function message_of(loc, id)
  local m = S.messages[id]
  if not m or m.locationId ~= loc then return nil, 404, "Message not found" end
  return m
end

-- Takes a message out of the state (a cancelled scheduled message, a deleted conversation's).
local function remove_message(m, keep_order)
  local c = S.conversations[m.conversationId]
  S.messages[m.id] = nil
  if not SEED_IDS[m.id] then S.count = S.count - 1 end
  S.recordings[m.id], S.transcriptions[m.id] = nil, nil
  local email = m.meta and m.meta.email
  if email and email.messageIds then
    for _, eid in ipairs(email.messageIds) do S.emails[eid] = nil end
  end
  if c and not keep_order then
    if unread(m) then c.unreadCount = math.max(0, c.unreadCount - 1) end
    local order = S.order[c.id]
    for i = #order, 1, -1 do
      if order[i] == m.id then table.remove(order, i) break end
    end
    recompute_last(c)
  end
  mark()
end

-- The ConversationDto of update/search answers: the stored conversation plus its last message.
local function conversation_dto(c)
  local l = last[c.id]
  return {
    id = c.id, locationId = c.locationId, contactId = c.contactId, assignedTo = c.assignedTo,
    userId = c.userId, lastMessageBody = l.body, lastMessageDate = tostring(l.date),
    lastMessageType = l.type, unreadCount = c.unreadCount, inbox = c.inbox, starred = c.starred,
    deleted = c.deleted,
  }
end

-- POST /conversations/
function M.create_conversation(loc, b)
  local existing = by_contact[contact_key(loc, b.contactId)]
  if existing then
    return nil, 400, "Conversation already exists", { conversationId = existing.id }
  end
  local c = add_conversation(loc, b.contactId, 1)
  local d = S.conv_dates[c.id]
  return {
    success = true,
    conversation = {
      id = c.id, dateUpdated = d.dateUpdated, dateAdded = d.dateAdded, deleted = false,
      contactId = c.contactId, locationId = loc, lastMessageDate = d.dateAdded, assignedTo = c.assignedTo,
    },
  }
end

-- PUT /conversations/{id}
function M.update_conversation(loc, id, b)
  local c, status, msg = conversation_of(loc, id)
  if not c then return nil, status, msg end
  if b.unreadCount ~= nil then
    if b.unreadCount < 0 or b.unreadCount % 1 ~= 0 then
      return nil, 400, "unreadCount must be a whole number >= 0"
    end
    c.unreadCount = b.unreadCount
  end
  if b.starred ~= nil then c.starred = b.starred end
  local d = S.conv_dates[c.id]
  if b.feedback ~= nil then d.feedback = b.feedback end
  d.dateUpdated = iso(now())
  mark()
  return { success = true, conversation = conversation_dto(c) }
end

-- DELETE /conversations/{id}: the conversation and its messages are gone.
function M.delete_conversation(loc, id)
  local c, status, msg = conversation_of(loc, id)
  if not c then return nil, status, msg end
  for _, mid in ipairs(S.order[c.id]) do
    local m = S.messages[mid]
    if m then remove_message(m, true) end
  end
  forget_last(c)
  S.conversations[c.id], S.order[c.id], S.conv_dates[c.id], last[c.id] = nil, nil, nil, nil
  by_contact[contact_key(c.locationId, c.contactId)] = nil
  mark()
  return { success = true }
end

-- GET /conversations/{id}/messages: newest first, `limit` (default 20, at most 100) at a time,
-- older than `lastMessageId` when given. `types` is a set of messageTypes, or nil for all.
-- TYPE_INTERNAL_COMMENTS (the filter's spelling) stands for TYPE_INTERNAL_COMMENT.
function M.get_messages(loc, id, q)
  local c, status, msg = conversation_of(loc, id)
  if not c then return nil, status, msg end
  local order = S.order[c.id]
  local limit = floor(q.limit or 20)
  if limit < 1 then limit = 1 elseif limit > 100 then limit = 100 end
  local start = #order
  if q.lastMessageId then
    start = nil
    for i = #order, 1, -1 do
      if order[i] == q.lastMessageId then start = i - 1 break end
    end
    if not start then return nil, 400, "lastMessageId is not a message of this conversation" end
  end
  local types = q.types
  local page = {}
  local i = start
  while i >= 1 do
    local m = S.messages[order[i]]
    if m and (not types or types[m.messageType]) then
      if #page == limit then break end
      page[#page + 1] = m
    end
    i = i - 1
  end
  local more = i >= 1 -- the loop stopped at a message that did not fit on this page
  return {
    lastMessageId = page[#page] and page[#page].id or json.null,
    nextPage = more,
    messages = json.array(page),
  }
end

local function contact_info(contact)
  return M.CONTACTS[contact] or { fullName = "", email = "", phone = "" }
end

local function plain_find(hay, needle)
  return type(hay) == "string" and hay:lower():find(needle, 1, true) ~= nil
end

local function set_of_list(s)
  local set = {}
  for v in (s .. ","):gmatch("%s*([^,]-)%s*,") do if v ~= "" then set[v] = true end end
  return set
end

-- GET /conversations/search. q: validated query (numbers converted); start_after: a number or nil.
function M.search_conversations(loc, q, start_after)
  local asc = q.sort == "asc"
  local text = q.query and q.query ~= "" and q.query:lower() or nil
  local assigned = q.assignedTo and set_of_list(q.assignedTo)
  local matches = {}
  for _, c in pairs(S.conversations) do
    local l = last[c.id]
    local info = contact_info(c.contactId)
    local ok = c.locationId == loc
      and (q.contactId == nil or c.contactId == q.contactId)
      and (q.id == nil or c.id == q.id)
      and (assigned == nil or (c.assignedTo ~= nil and assigned[c.assignedTo] == true))
      and (q.followers == nil or q.followers == "") and (q.mentions == nil or q.mentions == "")
      and (q.lastMessageType == nil or l.type == q.lastMessageType)
      and (q.lastMessageDirection == nil or l.direction == q.lastMessageDirection)
      and (q.startDate == nil or l.date >= q.startDate) and (q.endDate == nil or l.date <= q.endDate)
      and (text == nil or plain_find(c.contactId, text) or plain_find(info.fullName, text)
           or plain_find(info.email, text) or plain_find(info.phone, text) or plain_find(l.body, text))
    if ok and q.status == "read" then ok = c.unreadCount == 0
    elseif ok and q.status == "unread" then ok = c.unreadCount > 0
    elseif ok and q.status == "starred" then ok = c.starred == true end
    if ok then matches[#matches + 1] = c end
  end
  table.sort(matches, function(a, b)
    local x, y = last[a.id].sort, last[b.id].sort
    if asc then return x < y end
    return x > y
  end)
  local limit = floor(q.limit or 20)
  if limit < 1 then limit = 1 elseif limit > 100 then limit = 100 end
  local out = {}
  for _, c in ipairs(matches) do
    local l = last[c.id]
    if start_after == nil or (asc and l.sort > start_after) or (not asc and l.sort < start_after) then
      if #out == limit then break end
      local info = contact_info(c.contactId)
      local d = S.conv_dates[c.id]
      out[#out + 1] = {
        id = c.id, contactId = c.contactId, locationId = c.locationId,
        lastMessageBody = l.body or "", lastMessageType = l.type or json.null,
        lastMessageDirection = l.direction, lastMessageDate = l.date,
        type = CONVERSATION_TYPE_NAMES[c.type] or "TYPE_PHONE", unreadCount = c.unreadCount,
        fullName = info.fullName, contactName = info.fullName, email = info.email, phone = info.phone,
        starred = c.starred, inbox = c.inbox, deleted = c.deleted, assignedTo = c.assignedTo,
        dateAdded = iso_ms(d.dateAdded), dateUpdated = iso_ms(d.dateUpdated),
        sort = { l.sort },
      }
    end
  end
  return { conversations = json.array(out), total = #matches }
end

local EXPORT_CHANNEL_TYPES = {
  Call = CALL_TYPES, SMS = { TYPE_SMS = true }, Email = { TYPE_EMAIL = true },
  WhatsApp = { TYPE_WHATSAPP = true }, Instagram = { TYPE_INSTAGRAM = true }, Facebook = { TYPE_FACEBOOK = true },
}

-- GET /conversations/messages/export. after: { ms, id } of the previous page's last message, or nil.
-- Answers the page and the { ms, id } key of its last message when more follow.
function M.export_messages(loc, q, after)
  local desc = q.sortOrder ~= "asc"
  local from, to
  if q.startDate then
    from = iso_ms(q.startDate)
    if not from then return nil, 400, "startDate must be an ISO 8601 date-time" end
  end
  if q.endDate then
    to = iso_ms(q.endDate)
    if not to then return nil, 400, "endDate must be an ISO 8601 date-time" end
  end
  local channel = q.channel and EXPORT_CHANNEL_TYPES[q.channel]
  local list = {}
  for _, m in pairs(S.messages) do
    if m.locationId == loc and (q.conversationId == nil or m.conversationId == q.conversationId)
        and (q.contactId == nil or m.contactId == q.contactId)
        and (channel == nil or channel[m.messageType]) then
      local ms = iso_ms(m.dateAdded) or 0
      if (from == nil or ms >= from) and (to == nil or ms <= to) then list[#list + 1] = { ms, m.id, m } end
    end
  end
  local function before(a, b) -- a comes before b in the export's order
    if a[1] ~= b[1] then
      if desc then return a[1] > b[1] end
      return a[1] < b[1]
    end
    if desc then return a[2] > b[2] end
    return a[2] < b[2]
  end
  table.sort(list, before)
  local limit = floor(q.limit or 100)
  local page, key = {}, nil
  local i = 1
  if after then
    while list[i] and not before({ after[1], after[2] }, list[i]) do i = i + 1 end
  end
  while list[i] and #page < limit do
    page[#page + 1] = list[i][3]
    key = list[i]
    i = i + 1
  end
  return { messages = json.array(page), total = #list }, (list[i] and key) and { key[1], key[2] } or nil
end

-- GET /conversations/messages/email/{id}
function M.get_email(loc, id)
  local e = S.emails[id]
  if not e or e.locationId ~= loc then return nil, 404, "Email not found" end
  local out = {}
  for k, v in pairs(e) do if k ~= "messageId" then out[k] = v end end
  return out
end

-- DELETE /conversations/messages/{id}/schedule and .../email/{id}/schedule: a scheduled message is
-- taken out (it will never go); anything else is a 400.
local function cancel(m)
  if m.status ~= "scheduled" then return nil, 400, "Only scheduled messages can be cancelled" end
  remove_message(m)
  return { status = 200, message = "Scheduled message cancelled successfully" }
end

function M.cancel_scheduled_message(loc, id)
  local m, status, msg = message_of(loc, id)
  if not m then return nil, status, msg end
  return cancel(m)
end

function M.cancel_scheduled_email(loc, email_id)
  local e = S.emails[email_id]
  local m = e and S.messages[e.messageId]
  if not m or m.locationId ~= loc then return nil, 404, "Email not found" end
  return cancel(m)
end

local function new_message(c, mt, direction, status, date, body, extra)
  local m = {
    id = new_id(S.messages), type = TYPE_NUMBER[mt], messageType = mt, dateAdded = date or iso(now()),
    body = body or "", direction = direction, status = status, contentType = "text/plain",
    attachments = json.array(extra and extra.attachments), meta = {}, source = "api",
  }
  if extra then
    for k, v in pairs(extra) do if k ~= "attachments" then m[k] = v end end
  end
  return m
end

-- POST /conversations/messages/outbound: a call a conversation provider made.
function M.outbound_call(loc, b)
  local c, status, msg = conversation_of(loc, b.conversationId)
  if not c then return nil, status, msg end
  local m = new_message(c, "TYPE_CALL", "outbound", "delivered", b.date, "", {
    attachments = b.attachments, conversationProviderId = b.conversationProviderId, altId = b.altId,
  })
  if b.call then
    m.meta.call = b.call
    m.meta.callStatus = b.call.status
  end
  add_message(c, m, "outbound_call")
  return {
    success = true, conversationId = c.id, messageId = m.id, message = "Message added successfully.",
    contactId = c.contactId, dateAdded = m.dateAdded,
  }
end

-- POST /conversations/messages/review-reply
function M.review_reply(loc, b)
  local c, status, msg = conversation_of(loc, b.conversationId)
  if not c then return nil, status, msg end
  local m = new_message(c, "TYPE_REVIEW", "outbound", "pending", nil, b.message)
  add_message(c, m, "review_reply")
  return { conversationId = c.id, messageId = m.id, status = "pending", msg = "Review reply queued successfully." }
end

-- PUT /conversations/messages/{id}/attachments: sets the message's attachments.
function M.set_attachments(loc, id, b)
  local m, status, msg = message_of(loc, id)
  if not m then return nil, status, msg end
  if CALL_TYPES[m.messageType] then return nil, 403, "Message type does not support attachment updates" end
  m.attachments = json.array(b.attachments)
  local e = m.meta.email and m.meta.email.messageIds and S.emails[m.meta.email.messageIds[1]]
  if e then e.attachments = m.attachments end
  mark()
  return { success = true, messageId = m.id, attachments = m.attachments }
end

-- Recordings and transcriptions of call messages (GET .../recording, .../transcription[/download]).
local function call_message(loc, location_in_path, id)
  if location_in_path ~= loc then return nil, 403, "The token does not have access to this location" end
  local m, status, msg = message_of(loc, id)
  if not m then return nil, status, msg end
  return m
end

function M.get_recording(loc, location_in_path, id)
  local m, status, msg = call_message(loc, location_in_path, id)
  if not m then return nil, status, msg end
  local r = S.recordings[m.id]
  if not r then return nil, 404, "Recording not found" end
  return r
end

function M.get_transcription(loc, location_in_path, id)
  local m, status, msg = call_message(loc, location_in_path, id)
  if not m then return nil, status, msg end
  local t = S.transcriptions[m.id]
  if not t then return nil, 404, "Transcription not found" end
  return json.array(t)
end

-- The transcription as text: one "[start-end] transcript" line per sentence.
function M.transcription_text(sentences)
  local lines = {}
  for i, s in ipairs(sentences) do
    lines[i] = ("[%s-%s] %s"):format(tostring(s.startTime), tostring(s.endTime), tostring(s.transcript))
  end
  return table.concat(lines, "\n") .. "\n"
end

-- Control: attach a recording (raw bytes) or a transcription to a message.
function M.set_recording(id, body, content_type)
  local m = S.messages[id]
  if not m then return nil, 404, "Message not found" end
  S.recordings[id] = { body = body, content_type = content_type or "audio/x-wav" }
  return { messageId = id, size = #body, content_type = S.recordings[id].content_type }
end

function M.set_transcription(id, sentences)
  local m = S.messages[id]
  if not m then return nil, 404, "Message not found" end
  S.transcriptions[id] = sentences
  mark()
  return { messageId = id, sentences = #sentences }
end

-- POST /conversations/providers/live-chat/typing
function M.typing(loc, b)
  local c, status, msg = conversation_of(loc, b.conversationId)
  if not c then return nil, status, msg end
  S.typing[c.id] = { isTyping = b.isTyping == true or b.isTyping == "true", visitorId = b.visitorId, at = iso(now()) }
  return { success = true }
end

function M.typing_state(id) return S.typing[id] end

-- Custom subtypes (/conversations/preferences/custom-subtypes).
local function custom_subtypes(loc)
  local out = {}
  for _, s in pairs(S.subtypes) do
    if s.locationId == loc then out[#out + 1] = s end
  end
  table.sort(out, function(a, b)
    if a.dateAdded ~= b.dateAdded then return a.dateAdded < b.dateAdded end
    return a.id < b.id
  end)
  return out
end

function M.get_custom_subtypes(loc)
  return { customSubtypes = json.array(custom_subtypes(loc)) }
end

function M.create_custom_subtype(loc, b)
  for _, s in pairs(S.subtypes) do
    if s.locationId == loc and s.channel == b.channel and s.name == b.name then
      return nil, 409, "A custom subtype with this name already exists for this channel"
    end
  end
  local d = iso(now())
  local s = {
    id = new_id(S.subtypes), locationId = loc, name = b.name, description = b.description,
    channel = b.channel, language = b.language, archived = false, dateAdded = d, dateUpdated = d,
  }
  S.subtypes[s.id] = s
  mark()
  return { customSubtype = s }
end

function M.update_custom_subtype(loc, id, b)
  local s = S.subtypes[id]
  if not s or s.locationId ~= loc then return nil, 404, "Custom subtype not found" end
  for _, k in ipairs({ "name", "description", "archived", "resubscription_legal_form_id" }) do
    if b[k] ~= nil then s[k] = b[k] end
  end
  s.dateUpdated = iso(now())
  mark()
  return { customSubtype = s }
end

-- Email subscriptions of a contact: the default "One on One" type and the location's custom subtypes.
local function subscription_record(loc, contact)
  local key = contact_key(loc, contact)
  local r = S.subscriptions[key]
  if not r then
    r = { default = {}, custom = {} }
    S.subscriptions[key] = r
  end
  return r
end

local function subscription_status(loc, contact, email)
  local r = S.subscriptions[contact_key(loc, contact)] or { default = {}, custom = {} }
  local list = { { type = "default", subtype_name = "One on One", subtype_status = r.default["One on One"] or "subscribed" } }
  for _, s in ipairs(custom_subtypes(loc)) do
    if type(s) == "table" then
      list[#list + 1] = { type = "custom", subtype_id = s.id, subtype_name = s.name,
        subtype_status = r.custom[s.id] or "subscribed" }
    end
  end
  local all_out = true
  for _, e in ipairs(list) do if e.subtype_status ~= "unsubscribed" then all_out = false end end
  return { contactId = contact, email = email or r.email or json.null, locationId = loc,
           unsubscribedAll = all_out, subscriptions = list }
end

function M.get_unsubscription_status(loc, q)
  return subscription_status(loc, q.contactId, q.email)
end

function M.change_subscription(loc, b)
  local a = b.subscription_action
  local r = subscription_record(loc, b.contactId)
  if a.type == "default" then
    if not a.subtype_name then return nil, 400, "subscription_action.subtype_name is required for type default" end
    r.default[a.subtype_name] = a.subtype_status
  elseif a.type == "custom" then
    local s = a.subtype_id and S.subtypes[a.subtype_id]
    if not a.subtype_id then return nil, 400, "subscription_action.subtype_id is required for type custom" end
    if not s or s.locationId ~= loc then return nil, 404, "Custom subtype not found" end
    r.custom[s.id] = a.subtype_status
  else -- resub_all
    r.default, r.custom = {}, {}
  end
  r.email = b.email
  r.legal_reason, r.legal_description = b.legal_reason, b.legal_description
  mark()
  local out = subscription_status(loc, b.contactId, b.email)
  out.success = true
  return out
end

-- Uploaded files (POST /conversations/messages/upload, initiate/complete): kept in memory only.
function M.conversation_for_upload(loc, id, contact)
  local c, status, msg = conversation_of(loc, id)
  if not c then return nil, status, msg end
  if contact and c.contactId ~= contact then
    return nil, 400, "The contactId does not belong to this conversation"
  end
  return c
end

function M.add_file(name, content_type, data)
  local id = new_id(S.files)
  S.files[id] = { id = id, name = name, content_type = content_type, data = data }
  return S.files[id]
end

function M.get_file(id) return S.files[id] end

function M.add_upload(u)
  u.uploadId = new_id(S.uploads)
  S.uploads[u.uploadId] = u
  return u
end

function M.get_upload(id) return S.uploads[id] end
function M.drop_upload(id) S.uploads[id] = nil end

-- Control: an inbound message injected without the provider's rules: the conversation is created
-- for the contact when needed. b: { contactId, type (channel, default SMS), message, date,
-- direction, status, conversationProviderId, call, attachments, locationId }.
function M.inject(loc, b)
  local channel = b.type or "SMS"
  local mt = M.CHANNEL_MESSAGE_TYPE[channel]
  if not mt then return nil, 400, "unknown type " .. tostring(channel) end
  if type(b.contactId) ~= "string" or b.contactId == "" then return nil, 400, "contactId is required" end
  if b.date ~= nil and not iso_ms(b.date) then return nil, 400, "date must be an ISO 8601 date-time" end
  local c = by_contact[contact_key(loc, b.contactId)]
  if not c then c = add_conversation(loc, b.contactId, conversation_type(channel)) end
  local m = new_message(c, mt, b.direction or "inbound", b.status or "delivered", b.date, b.message or b.html, {
    attachments = b.attachments, conversationProviderId = b.conversationProviderId,
  })
  if b.html and not b.message then m.contentType = "text/html" end
  if b.call then
    m.meta.call = b.call
    m.meta.callStatus = b.call.status
  end
  local email_id
  if channel == "Email" then
    email_id = new_id()
    m.meta.email = { messageIds = { email_id }, subject = b.subject }
  end
  add_message(c, m, "injected")
  if email_id then add_email(m, email_id, b) end
  return { conversationId = c.id, messageId = m.id, emailMessageId = email_id, contactId = c.contactId }
end

-- Stored messages, oldest first, for one contact (any location unless loc is given).
function M.messages_for(contact, loc)
  local out = {}
  local convs = {}
  for _, c in pairs(S.conversations) do
    if (contact == nil or c.contactId == contact) and (loc == nil or c.locationId == loc) then
      convs[#convs + 1] = c
    end
  end
  table.sort(convs, function(a, b) return a.id < b.id end)
  for _, c in ipairs(convs) do
    for _, id in ipairs(S.order[c.id]) do out[#out + 1] = S.messages[id] end -- nil (skipped) if forgotten
  end
  return out
end

function M.stats()
  local k = 0
  for _ in pairs(S.conversations) do k = k + 1 end
  return { messages = S.count, conversations = k, max_messages = M.max_messages }
end

---------------------------------------------------------------------------------------------------
-- Persistence: the whole state as one JSON document, written to a temp file then renamed.
local STATE_FORMAT = 1

function M.is_dirty() return S.dirty end

function M.save(path)
  -- Forgotten messages (see max_messages) are always the oldest of their conversation: drop that
  -- prefix from each conversation's order before writing.
  local messages = S.messages
  for cid, order in pairs(S.order) do
    if order[1] and not messages[order[1]] then
      local kept = {}
      for _, mid in ipairs(order) do
        if messages[mid] then kept[#kept + 1] = mid end
      end
      S.order[cid] = kept
    end
  end
  local doc = json.encode({
    format = STATE_FORMAT,
    conversations = S.conversations,
    order = S.order,
    messages = messages,
    conv_dates = S.conv_dates,
    emails = S.emails,
    transcriptions = S.transcriptions,
    subtypes = S.subtypes,
    subscriptions = S.subscriptions,
  })
  local tmp = path .. ".tmp." .. tostring((ngx and ngx.worker and ngx.worker.pid()) or os.time())
  local f, err = io.open(tmp, "wb")
  if not f then return nil, err end
  local ok, werr = f:write(doc)
  local cok, cerr = f:close()
  if not ok or not cok then
    os.remove(tmp)
    return nil, werr or cerr
  end
  local rok, rerr = os.rename(tmp, path)
  if not rok then
    os.remove(tmp)
    return nil, rerr
  end
  S.dirty = false
  return true
end

-- Loads a state file. Returns true, or false if the file does not exist, or nil, err if it is bad.
function M.load(path)
  local f = io.open(path, "rb")
  if not f then return false end
  local text = f:read("*a")
  f:close()
  local doc, err = json.decode(text)
  if type(doc) ~= "table" or doc.format ~= STATE_FORMAT or type(doc.messages) ~= "table"
      or type(doc.conversations) ~= "table" or type(doc.order) ~= "table" then
    return nil, ("%s is not a sandbox state file (%s)"):format(path, err or "unexpected content")
  end
  S = M.empty_state()
  S.messages, S.conversations, S.dirty = doc.messages, doc.conversations, false
  for _, k in ipairs({ "conv_dates", "emails", "transcriptions", "subtypes", "subscriptions" }) do
    if type(doc[k]) == "table" then S[k] = doc[k] end
  end
  for id, c in pairs(S.conversations) do
    if type(S.conv_dates[id]) ~= "table" then
      S.conv_dates[id] = { dateAdded = iso(now()), dateUpdated = iso(now()) }
    end
  end
  for _, e in pairs(S.emails) do
    for _, k in ipairs({ "attachments", "to", "cc", "bcc" }) do e[k] = json.array(e[k]) end
  end
  if S.messages.msg_demo_6 then S.recordings.msg_demo_6 = M.SEED_RECORDING end
  for id in pairs(S.conversations) do
    local o = doc.order[id]
    local kept = {}
    for _, mid in ipairs(type(o) == "table" and o or {}) do
      if S.messages[mid] then kept[#kept + 1] = mid end
    end
    S.order[id] = kept
  end
  local ids = {}
  for mid, m in pairs(S.messages) do ids[#ids + 1] = { mid, tostring(m.dateAdded) } end
  table.sort(ids, function(a, b) if a[2] ~= b[2] then return a[2] < b[2] end return a[1] < b[1] end)
  for _, e in ipairs(ids) do
    if not SEED_IDS[e[1]] then remember(e[1]) end
  end
  -- Empty arrays come back from JSON as empty tables: mark them again so they encode as [].
  for _, m in pairs(S.messages) do
    m.attachments = json.array(m.attachments)
    if type(m.meta) ~= "table" then m.meta = {} end
    if m.meta.recipients then m.meta.recipients = json.array(m.meta.recipients) end
  end
  index()
  return true
end

M.seed()
return M

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

---------------------------------------------------------------------------------------------------
-- state: { messages = {id -> message}, conversations = {id -> conversation},
--          order = {conversationId -> {message ids, oldest first}}, dirty = bool }
-- conversation_by_contact[locationId .. "\0" .. contactId] is rebuilt from conversations.
local S
local by_contact

local function contact_key(loc, contact) return loc .. "\0" .. contact end

local function index()
  by_contact = {}
  for _, c in pairs(S.conversations) do
    by_contact[contact_key(c.locationId, c.contactId)] = c
  end
end

local function mark() S.dirty = true end

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
  by_contact[contact_key(loc, contact)] = c
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
    if old and S.messages[old] then
      S.messages[old] = nil
      S.count = S.count - 1
    end
  end
end

-- Seed messages are never forgotten (benchmarks read msg_demo_1 while sending many).
local SEED_IDS = {}

local function add_message(c, m)
  m.conversationId = c.id
  m.locationId = c.locationId
  m.contactId = c.contactId
  S.messages[m.id] = m
  local order = S.order[c.id]
  order[#order + 1] = m.id
  if unread(m) then c.unreadCount = c.unreadCount + 1 end
  if not SEED_IDS[m.id] then remember(m.id) end
  mark()
  return m
end

---------------------------------------------------------------------------------------------------
-- Seed data (documented in sandbox/README.md). Fixed ids and dates, so tests and docs can name them.
function M.seed()
  S = { messages = {}, conversations = {}, order = {}, dirty = true, fifo = {}, fifo_head = 1, fifo_tail = 0, count = 0 }
  by_contact = {}
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
  local c1 = add_conversation(L, "contact_demo_1", 1, { id = "conv_demo_1" })
  add_message(c1, msg("msg_demo_1", "SMS", "outbound", "delivered", "2024-03-27T18:13:49.000Z",
    "Hi Ada, thanks for your enquiry! Would you like to book a visit?", { userId = "user_demo_1" }))
  add_message(c1, msg("msg_demo_2", "SMS", "inbound", "delivered", "2024-03-27T18:20:02.000Z",
    "Yes please, is Friday at 10 possible?"))

  local c2 = add_conversation(L, "contact_demo_2", 2, { id = "conv_demo_2" })
  add_message(c2, msg("msg_demo_3", "Email", "outbound", "delivered", "2024-03-28T09:00:00.000Z",
    "<p>Your invoice is attached.</p>", {
      contentType = "text/html", userId = "user_demo_1",
      attachments = { "https://example.com/sandbox/invoice-1001.pdf" },
      meta = { email = { messageIds = { "emsg_demo_3" }, subject = "Invoice 1001" } },
    }))
  add_message(c2, msg("msg_demo_4", "Email", "inbound", "read", "2024-03-28T10:30:00.000Z",
    "Thank you, received.", { meta = { email = { messageIds = { "emsg_demo_4" }, subject = "Re: Invoice 1001" } } }))

  local c3 = add_conversation(L, "contact_demo_3", 3, {
    id = "conv_demo_3", starred = true, assignedTo = "user_demo_1",
  })
  add_message(c3, msg("msg_demo_5", "FB", "inbound", "delivered", "2024-03-29T15:45:10.000Z",
    "Hello, are you open on Sunday?"))
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
  add_message(c, m)
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
  if was ~= now_unread then
    c.unreadCount = c.unreadCount + (now_unread and 1 or -1)
  end
  local meta = m.meta
  if b.error then meta.error = b.error end
  if b.recipients then meta.recipients = json.array(b.recipients) end
  if b.emailMessageId then meta.emailMessageId = b.emailMessageId end
  mark()
  if M.on_change then M.on_change("status", loc, m, c, b, was ~= now_unread) end
  local email = meta.email
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
  add_message(c, m)
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
  S = { messages = doc.messages, conversations = doc.conversations, order = {}, dirty = false,
        fifo = {}, fifo_head = 1, fifo_tail = 0, count = 0 }
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

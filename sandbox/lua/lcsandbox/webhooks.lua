-- The sandbox's webhook deliveries, like HighLevel's (and stripe-cli's `listen`): when a message is sent, received
-- or read, a signed JSON body is POSTed to the configured URLs from an nginx timer over a cosocket, retried with
-- exponential backoff until a 2xx answer or the last attempt, and every attempt is listed at /_sandbox/webhooks.
--
--   * ProviderOutboundMessage to the Delivery URL of the message's conversationProviderId (--provider-url ID=URL;
--     a URL without ID= is the Delivery URL for sends of type Custom without a conversationProviderId),
--     signed X-GHL-Signature (Ed25519) only, as HighLevel does on provider Delivery URLs.
--   * OutboundMessage, InboundMessage, ConversationUnreadUpdate to each --webhook-url, signed X-GHL-Signature
--     and, for the legacy scheme, X-WH-Signature (RSA-SHA256).
-- The keys are the sandbox's own, made by libcrypto at start (Ed25519; RSA-4096 when a --webhook-url is given,
-- else on first need); their public halves are at GET /_sandbox/webhooks/keys and in the prefix directory.
-- Signing goes through LuaJIT's FFI to OpenSSL's libcrypto (EVP_DigestSign): no crypto of our own.
local json = require "lcsandbox.json"
local store = require "lcsandbox.store"

local ngx = ngx
local ffi = require "ffi"
local type, pairs, ipairs, tostring, tonumber = type, pairs, ipairs, tostring, tonumber
local match, format, floor = string.match, string.format, math.floor

local M = {}

ffi.cdef [[
typedef struct evp_pkey_st EVP_PKEY;
typedef struct evp_md_ctx_st EVP_MD_CTX;
typedef struct evp_md_st EVP_MD;
typedef struct evp_pkey_ctx_st EVP_PKEY_CTX;
EVP_PKEY *EVP_PKEY_Q_keygen(void *libctx, const char *propq, const char *type, ...);
void EVP_PKEY_free(EVP_PKEY *pkey);
EVP_MD_CTX *EVP_MD_CTX_new(void);
void EVP_MD_CTX_free(EVP_MD_CTX *ctx);
int EVP_DigestSignInit(EVP_MD_CTX *ctx, EVP_PKEY_CTX **pctx, const EVP_MD *type, void *e, EVP_PKEY *pkey);
int EVP_DigestSign(EVP_MD_CTX *ctx, unsigned char *sigret, size_t *siglen, const unsigned char *tbs, size_t tbslen);
const EVP_MD *EVP_sha256(void);
int i2d_PUBKEY(EVP_PKEY *a, unsigned char **pp);
]]

local crypto
local function lib()
  if crypto then return crypto end
  for _, name in ipairs { "crypto", "libcrypto.so.3" } do
    local ok, l = pcall(ffi.load, name)
    if ok then crypto = l return l end
  end
  crypto = ffi.C -- nginx itself links libcrypto
  return crypto
end

local settings = {
  webhook_urls = {},      -- list of URLs for OutboundMessage / InboundMessage / ConversationUnreadUpdate
  providers = {},         -- conversationProviderId -> Delivery URL ("" -> the default one)
  retry_ms = 1000,        -- first backoff; doubled after each failed attempt
  max_attempts = 6,       -- HighLevel tries up to 12 times over hours; the sandbox, by default, 6 in about a minute
  timeout_ms = 5000,
}
M.settings = settings

local keys = {}           -- ed25519 / rsa -> { pk = EVP_PKEY*, pem = text }
local deliveries, order = {}, {}
local MAX_KEPT = 1000

local function pem_of(pk)
  local C = lib()
  local n = C.i2d_PUBKEY(pk, nil)
  if n <= 0 then error("i2d_PUBKEY failed") end
  local buf = ffi.new("unsigned char[?]", n)
  local pp = ffi.new("unsigned char *[1]", buf)
  C.i2d_PUBKEY(pk, pp)
  local b64 = ngx.encode_base64(ffi.string(buf, n))
  local lines = { "-----BEGIN PUBLIC KEY-----" }
  for i = 1, #b64, 64 do lines[#lines + 1] = b64:sub(i, i + 63) end
  lines[#lines + 1] = "-----END PUBLIC KEY-----"
  return table.concat(lines, "\n") .. "\n"
end

local function key(kind)
  local k = keys[kind]
  if k then return k end
  local C = lib()
  local pk
  if kind == "ed25519" then
    pk = C.EVP_PKEY_Q_keygen(nil, nil, "ED25519")
  else
    pk = C.EVP_PKEY_Q_keygen(nil, nil, "RSA", ffi.cast("size_t", 4096))
  end
  if pk == nil then error("cannot generate the sandbox's " .. kind .. " webhook key") end
  k = { pk = ffi.gc(pk, C.EVP_PKEY_free) }
  k.pem = pem_of(k.pk)
  keys[kind] = k
  local prefix = os.getenv("LCSB_PREFIX")
  if prefix and prefix ~= "" then
    local f = io.open(prefix .. "/webhook-" .. kind .. ".pem", "w")
    if f then f:write(k.pem) f:close() end
  end
  return k
end

local function sign(kind, body)
  local C = lib()
  local k = key(kind)
  local ctx = C.EVP_MD_CTX_new()
  if ctx == nil then return nil end
  local sig = ffi.new("unsigned char[1024]")
  local len = ffi.new("size_t[1]", 1024)
  local ok = C.EVP_DigestSignInit(ctx, nil, kind == "rsa" and C.EVP_sha256() or nil, nil, k.pk) == 1
    and C.EVP_DigestSign(ctx, sig, len, body, #body) == 1
  C.EVP_MD_CTX_free(ctx)
  if not ok then return nil end
  return ngx.encode_base64(ffi.string(sig, len[0]))
end
M.sign = sign

---------------------------------------------------------------------------------------------------------------------
-- configuration: LCSB_WEBHOOK_URLS (one per line), LCSB_PROVIDER_URLS ("id<TAB>url" lines, id may be empty),
-- LCSB_WEBHOOK_RETRY_MS, LCSB_WEBHOOK_MAX_ATTEMPTS; and POST /_sandbox/webhooks/config at run time.

local function check_url(u)
  if type(u) ~= "string" or not match(u, "^https?://[^/%s]+/?[%S]*$") then
    return nil, "not an http(s) URL: " .. tostring(u)
  end
  return u
end

function M.init()
  for u in (os.getenv("LCSB_WEBHOOK_URLS") or ""):gmatch("[^\n]+") do
    settings.webhook_urls[#settings.webhook_urls + 1] = assert(check_url(u))
  end
  for line in (os.getenv("LCSB_PROVIDER_URLS") or ""):gmatch("[^\n]+") do
    local id, u = match(line, "^([^\t]*)\t(.+)$")
    settings.providers[id or ""] = assert(check_url(u or line))
  end
  settings.retry_ms = tonumber(os.getenv("LCSB_WEBHOOK_RETRY_MS") or "") or settings.retry_ms
  settings.max_attempts = tonumber(os.getenv("LCSB_WEBHOOK_MAX_ATTEMPTS") or "") or settings.max_attempts
  key("ed25519")
  if #settings.webhook_urls > 0 then key("rsa") end
  store.on_change = M.on_change
end

---------------------------------------------------------------------------------------------------------------------
-- delivery

local function iso(t)
  return os.date("!%Y-%m-%dT%H:%M:%S", floor(t)) .. format(".%03dZ", floor((t % 1) * 1000))
end

local function http_post(url, body, headers)
  local scheme, host, port, path = match(url, "^(https?)://([^/:]+):?(%d*)(.*)$")
  if not scheme then return nil, "bad URL" end
  port = tonumber(port) or (scheme == "https" and 443 or 80)
  if path == "" then path = "/" end
  local sock = ngx.socket.tcp()
  sock:settimeout(settings.timeout_ms)
  local ok, err = sock:connect(host, port)
  if not ok then return nil, "connect: " .. tostring(err) end
  if scheme == "https" then
    ok, err = sock:sslhandshake(nil, host, false)
    if not ok then sock:close() return nil, "tls: " .. tostring(err) end
  end
  local req = { "POST " .. path .. " HTTP/1.1", "Host: " .. host .. ":" .. port, "Connection: close",
    "Content-Type: application/json", "User-Agent: leadconnector-sandbox-webhooks", "Content-Length: " .. #body }
  for k, v in pairs(headers) do req[#req + 1] = k .. ": " .. v end
  ok, err = sock:send(table.concat(req, "\r\n") .. "\r\n\r\n" .. body)
  if not ok then sock:close() return nil, "send: " .. tostring(err) end
  local line
  line, err = sock:receive("*l")
  if not line then sock:close() return nil, "receive: " .. tostring(err) end
  local status = tonumber(match(line, "^HTTP/1%.%d (%d%d%d)"))
  sock:receive(65536) -- the rest, up to the close; its content does not matter
  sock:close()
  if not status then return nil, "not an HTTP answer" end
  return status
end

local attempt

local function schedule(d, delay)
  local ok, err = ngx.timer.at(delay, attempt, d)
  if not ok then
    d.outcome = "failed"
    d.error = "cannot schedule: " .. tostring(err)
  end
end

function attempt(premature, d)
  if premature or d.cancelled then return end
  local t0 = ngx.now()
  local status, err = http_post(d.url, d.raw_body, d.headers)
  ngx.update_time()
  d.attempts[#d.attempts + 1] = { time = t0, status = status or json.null, error = err or json.null,
    ms = floor((ngx.now() - t0) * 1000) }
  if status and status >= 200 and status < 300 then
    d.outcome = "delivered"
    return
  end
  if #d.attempts >= settings.max_attempts then
    d.outcome = "failed"
    return
  end
  d.outcome = "retrying"
  schedule(d, settings.retry_ms / 1000 * 2 ^ (#d.attempts - 1))
end

local seq = 0
local function emit(url, event, legacy)
  seq = seq + 1
  local raw = json.encode(event)
  local headers = { ["X-GHL-Signature"] = sign("ed25519", raw) or "N/A" }
  if legacy then headers["X-WH-Signature"] = sign("rsa", raw) or "N/A" end
  local d = { id = "dlv_" .. seq, url = url, type = event.type, webhookId = event.webhookId or json.null,
    messageId = event.messageId or json.null, raw_body = raw, headers = headers, attempts = {}, outcome = "pending",
    created = ngx.now() }
  deliveries[d.id] = d
  order[#order + 1] = d.id
  if #order > MAX_KEPT then
    deliveries[table.remove(order, 1)] = nil
  end
  schedule(d, 0)
  return d
end

local function envelope(t)
  t.timestamp = iso(ngx.now())
  t.webhookId = store.new_id()
  return t
end

local CHANNEL = { TYPE_SMS = "SMS", TYPE_EMAIL = "Email", TYPE_CUSTOM_PROVIDER_SMS = "SMS",
  TYPE_CUSTOM_PROVIDER_EMAIL = "Email", TYPE_WHATSAPP = "WhatsApp", TYPE_FACEBOOK = "FB", TYPE_INSTAGRAM = "IG",
  TYPE_LIVE_CHAT = "Live_Chat", TYPE_GMB = "GMB", TYPE_RCS = "RCS", TYPE_TIKTOK = "TIKTOK" }

local function message_event(kind, m)
  return envelope {
    type = kind, locationId = m.locationId, messageId = m.id, conversationId = m.conversationId,
    contactId = m.contactId, body = m.body, direction = m.direction, status = m.status,
    contentType = m.contentType, attachments = m.attachments, dateAdded = m.dateAdded,
    messageType = CHANNEL[m.messageType] or m.messageType, conversationProviderId = m.conversationProviderId,
  }
end

local function unread_event(c)
  return envelope {
    type = "ConversationUnreadUpdate", locationId = c.locationId, id = c.id, contactId = c.contactId,
    unreadCount = c.unreadCount, inbox = c.inbox, starred = c.starred, deleted = c.deleted,
  }
end

local function to_webhooks(event)
  for _, u in ipairs(settings.webhook_urls) do emit(u, event, true) end
end

local EMAIL_TYPES = { TYPE_EMAIL = true, TYPE_CUSTOM_EMAIL = true, TYPE_CUSTOM_PROVIDER_EMAIL = true }
local CUSTOM_TYPES = { TYPE_CUSTOM_SMS = true, TYPE_CUSTOM_EMAIL = true, TYPE_CUSTOM_PROVIDER_SMS = true,
  TYPE_CUSTOM_PROVIDER_EMAIL = true }

-- A message was stored. how: "sent" (POST /conversations/messages), "inbound" (POST .../inbound), or another way
-- the API creates messages ("seed" ones send nothing). b: the request body, when the caller has it at hand (the
-- fields of a ProviderOutboundMessage the stored message does not keep, such as toNumber).
function M.message_created(m, c, how, b)
  if how == "seed" then return end
  b = b or {}
  local hooks = #settings.webhook_urls > 0
  if how == "sent" then
    local provider = m.conversationProviderId
    local url = provider and settings.providers[provider]
    if not url and (b.type == "Custom" or CUSTOM_TYPES[m.messageType]) then url = settings.providers[""] end
    if url then
      local email = EMAIL_TYPES[m.messageType] or b.type == "Email"
      local me = m.meta and m.meta.email
      local html = m.contentType == "text/html"
      emit(url, {
        contactId = m.contactId, locationId = m.locationId, messageId = m.id,
        emailMessageId = email and me and me.messageIds and me.messageIds[1] or nil,
        type = email and "Email" or "SMS", attachments = m.attachments or json.empty_array(),
        message = b.message or (not html and m.body) or nil, html = b.html or (html and m.body) or nil,
        phone = not email and (b.toNumber or "+15550100000") or nil,
        emailTo = email and (b.emailTo or (m.contactId .. "@example.com")) or nil, emailFrom = b.emailFrom,
        subject = b.subject or (me and me.subject), userId = b.userId or m.userId,
      }, false)
    end
  end
  if hooks then
    to_webhooks(message_event(m.direction == "inbound" and "InboundMessage" or "OutboundMessage", m))
    if m.direction == "inbound" then to_webhooks(unread_event(c)) end
  end
end

-- The store's hook: what = "send" | "inbound" | "status"; unread_changed for "status".
function M.on_change(what, loc, m, c, b, unread_changed)
  local ok, err = pcall(function()
    if what == "send" then
      M.message_created(m, c, "sent", b)
    elseif what == "inbound" then
      M.message_created(m, c, "inbound", b)
    elseif what == "status" and unread_changed and #settings.webhook_urls > 0 then
      to_webhooks(unread_event(c))
    end
  end)
  if not ok then ngx.log(ngx.ERR, "sandbox webhooks: ", err) end
end

---------------------------------------------------------------------------------------------------------------------
-- control endpoints

local function listing()
  local out = {}
  for i, id in ipairs(order) do
    local d = deliveries[id]
    local atts = {}
    for j, a in ipairs(d.attempts) do atts[j] = a end
    out[i] = { id = d.id, url = d.url, type = d.type, webhookId = d.webhookId, messageId = d.messageId,
      outcome = d.outcome, attempts = json.array(atts), headers = d.headers, raw_body = d.raw_body,
      created = d.created }
  end
  return json.array(out)
end

function M.clear() -- also stops the retries of what is forgotten
  local n = #order
  for _, d in pairs(deliveries) do d.cancelled = true end
  deliveries, order = {}, {}
  return n
end

local function current()
  local p = {}
  for id, u in pairs(settings.providers) do p[id] = u end
  return { webhook_urls = json.array(settings.webhook_urls), providers = p, retry_ms = settings.retry_ms,
    max_attempts = settings.max_attempts }
end

-- Adds the /_sandbox/webhooks endpoints to app.lua's control table; ok(status, t) / bad(status, msg) answer,
-- body() reads the JSON body.
function M.control(control, ok, bad, body)
  control["GET /_sandbox/webhooks"] = function()
    return ok(200, { deliveries = listing(), config = current() })
  end
  control["DELETE /_sandbox/webhooks"] = function() return ok(200, { cleared = M.clear() }) end
  control["GET /_sandbox/webhooks/keys"] = function()
    return ok(200, { ed25519 = key("ed25519").pem, rsa = key("rsa").pem })
  end
  control["POST /_sandbox/webhooks/config"] = function()
    local b, err = body()
    if not b then return bad(400, err) end
    if b.webhook_urls ~= nil then
      if type(b.webhook_urls) ~= "table" then return bad(400, "webhook_urls must be an array of URLs") end
      local list = {}
      for i, u in ipairs(b.webhook_urls) do
        local v, e = check_url(u)
        if not v then return bad(400, e) end
        list[i] = v
      end
      if #list > 0 then key("rsa") end
      settings.webhook_urls = list
    end
    if b.providers ~= nil then
      if type(b.providers) ~= "table" then return bad(400, "providers must be an object {id: url}") end
      local p = {}
      for id, u in pairs(b.providers) do
        local v, e = check_url(u)
        if not v then return bad(400, e) end
        p[tostring(id)] = v
      end
      settings.providers = p
    end
    for _, k in ipairs { "retry_ms", "max_attempts" } do
      if b[k] ~= nil then
        if type(b[k]) ~= "number" or b[k] <= 0 then return bad(400, k .. " must be a number > 0") end
        settings[k] = b[k]
      end
    end
    return ok(200, current())
  end
end

return M

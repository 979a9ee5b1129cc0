-- provider.app: a custom SMS conversation provider built on leadconnector alone.
--
--   HighLevel --ProviderOutboundMessage--> POST /deliver   (signed: webhook.handler verifies, or 401)
--     -> the carrier sends the SMS               (provider.carrier here)
--     -> client:update_message_status(messageId, delivered | failed)
--   carrier --reply--> POST /carrier/inbound
--     -> client:add_inbound_message(...)         (the reply shows in the conversation)
--
-- Every step is idempotent, because HighLevel retries a delivery until it gets a 2xx: a message already handed to
-- the carrier is not sent again, only its status is reported again.
local leadconnector = require "leadconnector"
local webhook = require "leadconnector.webhook"
local http = require "provider.http"
local cjson = require "cjson.safe"
local ngx = ngx

local M = {}
local conf = {}
local client, seen

function M.init() -- init_by_lua: read the settings once
  conf.provider_id = os.getenv("PROVIDER_ID") or "provider"
  conf.carrier_url = os.getenv("CARRIER_URL") or "http://127.0.0.1:8481/send"
  conf.callback_url = (os.getenv("PROVIDER_URL") or "http://127.0.0.1:8480") .. "/carrier/inbound"
  local key_file = os.getenv("WEBHOOK_PUBLIC_KEY_FILE")
  if key_file and key_file ~= "" then
    local f = assert(io.open(key_file, "rb"))
    conf.public_key = f:read("*a")
    f:close()
  end
end

local function lc()
  if not client then
    client = assert(leadconnector.new {
      token = os.getenv("LEADCONNECTOR_TOKEN"), base_url = os.getenv("LEADCONNECTOR_BASE_URL") or nil,
      timeout = 10, deadline = 20,
    })
  end
  return client
end

-- One ProviderOutboundMessage. Returns true when handled (200), or nil, err (500: HighLevel retries).
local function on_message(ev)
  if ev.type ~= "ProviderOutboundMessage" then return true end -- other events: nothing to do here
  if ev.channel ~= "SMS" then return true end
  local dict = ngx.shared.provider
  local id = ev.messageId
  if dict:get("done:" .. id) then return true end
  if not dict:add("busy:" .. id, true, 30) then return nil, "message " .. id .. " is being handled" end

  local outcome = dict:get("sent:" .. id) -- set when the carrier already took it (a retried delivery)
  local result
  if not outcome then
    local status, answer = http.post(conf.carrier_url, { to = ev.phone, text = ev.message or "",
      callback = conf.callback_url })
    if status ~= 200 or type(answer) ~= "table" then
      dict:delete("busy:" .. id)
      return nil, "carrier: " .. tostring(status) .. " " .. tostring(answer)
    end
    result = answer
    dict:set("sent:" .. id, cjson.encode(answer), 86400)
    dict:set("carrier:" .. answer.id, id, 86400)
  else
    result = cjson.decode(outcome)
  end

  local fields = { status = result.status == "delivered" and "delivered" or "failed" }
  if fields.status == "failed" then
    fields.error = { code = tostring(result.code or "0"), type = "carrier", message = tostring(result.error) }
  end
  local ok, err = lc():update_message_status(id, fields)
  dict:delete("busy:" .. id)
  if not ok then return nil, err end
  dict:set("done:" .. id, true, 86400)
  return true
end

function M.deliver()
  seen = seen or webhook.shdict_seen("provider")
  return webhook.handler { on_event = on_message, public_key = conf.public_key, seen = seen, rsa = false }
end

-- The carrier's callback: a reply from the phone, posted into the conversation of the message it answers.
function M.carrier_inbound()
  ngx.req.read_body()
  local r = cjson.decode(ngx.req.get_body_data() or "")
  local function answer(status, msg)
    ngx.status = status
    ngx.say(msg)
    return ngx.exit(ngx.OK)
  end
  if type(r) ~= "table" or type(r.in_reply_to) ~= "string" or type(r.text) ~= "string" then
    return answer(400, "bad callback")
  end
  local dict = ngx.shared.provider
  if dict:get("reply:" .. tostring(r.id)) then return answer(200, "duplicate") end
  local message_id = dict:get("carrier:" .. r.in_reply_to)
  if not message_id then return answer(404, "unknown carrier message") end
  local msg, err = lc():get_message(message_id)
  if not msg then
    ngx.log(ngx.ERR, "provider: ", tostring(err))
    return answer(502, "cannot read the message")
  end
  local added
  added, err = lc():add_inbound_message {
    type = "SMS", conversationProviderId = conf.provider_id, conversationId = msg.conversationId,
    contactId = msg.contactId, message = r.text, altId = r.id,
  }
  if not added then
    ngx.log(ngx.ERR, "provider: add_inbound_message: ", tostring(err))
    return answer(502, "not added")
  end
  dict:set("reply:" .. tostring(r.id), true, 86400)
  return answer(200, "ok")
end

return M

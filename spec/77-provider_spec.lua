--[[ spec/77-provider_spec.lua -- examples/provider end to end, in a real nginx (2 workers) against the sandbox:
send through the custom provider -> the sandbox's signed ProviderOutboundMessage -> the provider verifies it and
hands it to the stand-in carrier -> update_message_status -> the carrier's reply -> add_inbound_message -> the reply
is in the conversation. And: a failed carrier send is reported as failed; a failed status report is retried by the
sandbox without sending the SMS twice; an unsigned or foreign-signed delivery is refused and sends nothing.
]]
local helpers = require "helpers"
local lch = require "lchelpers"
local wh = require "whhelpers"
local socket = require "socket"
local cjson = require "cjson"

local PROVIDER = "prov_e2e"

local function eventually(what, f, seconds)
  local deadline = socket.gettime() + (seconds or 10) * lch.scale
  while true do
    local v = f()
    if v then return v end
    if socket.gettime() > deadline then
      error("timed out waiting for " .. what .. (os.getenv("WH_DEBUG") and ("\n" .. _G.WH_DEBUG()) or ""), 2)
    end
    socket.sleep(0.05)
  end
end

describe("examples/provider end to end #lua54only #slow #nginx", function()
  local sb, nx, client, keyfile, port, carrier_port

  lazy_setup(function()
    port, carrier_port = helpers.free_port(), helpers.free_port()
    sb = helpers.start_sandbox { rate_limit = false, args = {
      "--provider-url", PROVIDER .. "=http://127.0.0.1:" .. port .. "/deliver",
      "--webhook-retry-ms", "100", "--webhook-max-attempts", "5" } }
    local dir = wh.tmpdir("lc-provider-spec")
    keyfile = dir .. "/sandbox-ed25519.pem"
    helpers.write_file(keyfile, sb:control("GET", "/_sandbox/webhooks/keys").ed25519)
    nx = wh.nginx {
      conf = assert(helpers.read_file(wh.REPO .. "/examples/provider/nginx.conf")),
      port = port, probe = "/health",
      vars = { LC = wh.REPO, EXAMPLE = wh.REPO .. "/examples/provider", CARRIER_PORT = carrier_port },
      env = { LEADCONNECTOR_TOKEN = sb.token, LEADCONNECTOR_BASE_URL = sb.url, PROVIDER_ID = PROVIDER,
        WEBHOOK_PUBLIC_KEY_FILE = keyfile, CARRIER_URL = "http://127.0.0.1:" .. carrier_port .. "/send",
        PROVIDER_URL = "http://127.0.0.1:" .. port },
    }
    client = lch.client(sb, { max_retries = 2 })
    _G.WH_DEBUG = function()
      return cjson.encode(sb:control("GET", "/_sandbox/webhooks")) .. "\n" .. nx:log():sub(-3000)
    end
  end)

  lazy_teardown(function()
    if nx then nx:stop() end
    if sb then sb:stop() end
    if keyfile then wh.rm(keyfile:match("^(.*)/")) end
  end)

  before_each(function() sb:reset() end)

  local function deliveries() return sb:control("GET", "/_sandbox/webhooks").deliveries end
  local function replies(contact, text)
    local n = 0
    for _, m in ipairs(sb:messages(contact)) do
      if m.direction == "inbound" and m.body == text then n = n + 1 end
    end
    return n
  end

  it("send -> signed delivery -> carrier -> status delivered -> reply in the conversation", function()
    local sent = assert(client:send_message { type = "SMS", contactId = "contact_demo_1", message = "hello e2e",
      conversationProviderId = PROVIDER })
    local msg = eventually("status delivered", function()
      local m = assert(client:get_message(sent.messageId))
      return m.status == "delivered" and m
    end)
    assert.are.equal("outbound", msg.direction)
    local d = deliveries()
    assert.are.equal(1, #d)
    assert.are.equal("delivered", d[1].outcome)
    assert.are.equal(1, #d[1].attempts)
    assert.are.equal(200, d[1].attempts[1].status)
    assert.are.equal(sent.messageId, d[1].messageId)
    assert.is_string(d[1].headers["X-GHL-Signature"])
    assert.is_nil(d[1].headers["X-WH-Signature"]) -- provider Delivery URLs get Ed25519 only
    eventually("the reply", function() return replies("contact_demo_1", "Re: hello e2e") == 1 end)
    local conv = assert(client:get_conversation(sent.conversationId))
    assert.is_true(conv.unreadCount >= 1)
  end)

  it("reports a carrier failure as failed, with the carrier's error", function()
    local sent = assert(client:send_message { type = "SMS", contactId = "contact_demo_1", message = "[fail] nope",
      conversationProviderId = PROVIDER })
    local msg = eventually("status failed", function()
      local m = assert(client:get_message(sent.messageId))
      return m.status == "failed" and m
    end)
    local stored
    for _, m in ipairs(sb:messages("contact_demo_1")) do if m.id == sent.messageId then stored = m end end
    assert.are.equal("30003", stored.meta.error.code)
    assert.are.equal(msg.id, sent.messageId)
    socket.sleep(0.3)
    assert.are.equal(0, replies("contact_demo_1", "Re: [fail] nope"))
  end)

  it("answers 500 when the status report fails; the sandbox retries; the SMS goes out once", function()
    -- 3: the provider's client tries each call 3 times (max_retries 2) before it gives up
    sb:fault { method = "PUT", path_pattern = "^/conversations/messages/[^/]+/status$", count = 3, status = 503 }
    local sent = assert(client:send_message { type = "SMS", contactId = "contact_demo_2x", message = "retry me",
      conversationProviderId = PROVIDER })
    eventually("status delivered", function()
      return assert(client:get_message(sent.messageId)).status == "delivered"
    end)
    local d = deliveries()[1]
    eventually("delivery outcome", function() d = deliveries()[1] return d.outcome == "delivered" end)
    assert.are.equal(2, #d.attempts)
    assert.are.equal(500, d.attempts[1].status)
    assert.are.equal(200, d.attempts[2].status)
    eventually("the reply", function() return replies("contact_demo_2x", "Re: retry me") == 1 end)
    socket.sleep(0.3)
    assert.are.equal(1, replies("contact_demo_2x", "Re: retry me"))
  end)

  it("refuses an unsigned or foreign-signed delivery with 401 and sends nothing", function()
    local K = wh.keys()
    local body = cjson.encode { type = "SMS", messageId = "msg_demo_1", contactId = "contact_demo_1",
      locationId = "loc_sandbox", phone = "+15550100000", message = "forged" }
    assert.are.equal(401, (nx:request("POST", "/deliver", body, { ["Content-Type"] = "application/json" })))
    assert.are.equal(401, (nx:request("POST", "/deliver", body, { ["X-GHL-Signature"] = wh.sign_ed(K, body) })))
    assert.are.equal(401, (nx:request("POST", "/deliver", body, { ["X-GHL-Signature"] = "N/A",
      ["X-WH-Signature"] = wh.sign_rsa(K, body) })))
    wh.rm(K.dir)
    socket.sleep(0.3)
    for _, r in ipairs(lch.api_requests(sb)) do -- no status report, no inbound message, for the forged one
      assert.is_nil(r.path:find("msg_demo_1", 1, true), r.path)
      assert.is_nil((r.raw_body or ""):find("forged", 1, true), r.path)
    end
    assert.are.equal("delivered", assert(client:get_message("msg_demo_1")).status)
  end)
end)

--[[ spec/76-sandbox_webhooks_spec.lua -- the sandbox's webhook deliveries (sandbox/lua/lcsandbox/webhooks.lua) to a
--webhook-url: which events an API call causes, that each is signed over its exact bytes with the sandbox's own
Ed25519 key (X-GHL-Signature) and RSA-4096 key (the legacy X-WH-Signature) -- checked with leadconnector.webhook
and the keys from /_sandbox/webhooks/keys --, and retries with backoff until a 2xx or the last attempt.
The receiver is a real nginx that keeps what it got and answers as the test tells it.
]]
local helpers = require "helpers"
local lch = require "lchelpers"
local wh = require "whhelpers"
local webhook = require "leadconnector.webhook"
local socket = require "socket"
local cjson = require "cjson"

local function eventually(what, f, seconds)
  local deadline = socket.gettime() + (seconds or 10) * lch.scale
  while true do
    local v = f()
    if v then return v end
    if socket.gettime() > deadline then error("timed out waiting for " .. what, 2) end
    socket.sleep(0.05)
  end
end

describe("sandbox webhook deliveries #lua54only #slow #nginx", function()
  local sb, rx, client, keys

  lazy_setup(function()
    rx = wh.nginx { http = [[
  lua_shared_dict rx 8m;
  server {
    listen 127.0.0.1:@PORT@;
    location = /_probe { return 200; }
    location = /hook { content_by_lua_block {
      ngx.req.read_body()
      local d = ngx.shared.rx
      local n = d:incr("n", 1, 0)
      local h = ngx.req.get_headers()
      d:set("got:" .. n, require("cjson").encode { body = ngx.req.get_body_data(), ghl = h["x-ghl-signature"],
        wh = h["x-wh-signature"], t = ngx.now() })
      local fail = d:get("fail") or 0
      if fail > 0 then d:incr("fail", -1) return ngx.exit(503) end
      ngx.say("ok")
    } }
    location = /got { content_by_lua_block {
      local d = ngx.shared.rx
      local out = {}
      for i = 1, d:get("n") or 0 do out[i] = require("cjson").decode(d:get("got:" .. i)) end
      ngx.say(require("cjson").encode(out))
    } }
    location = /reset { content_by_lua_block {
      ngx.shared.rx:flush_all()
      ngx.shared.rx:set("fail", tonumber(ngx.var.arg_fail) or 0)
      ngx.say("ok")
    } }
  }
]] }
    sb = helpers.start_sandbox { rate_limit = false, args = {
      "--webhook-url", "http://127.0.0.1:" .. rx.port .. "/hook", "--webhook-retry-ms", "100",
      "--webhook-max-attempts", "4" } }
    keys = sb:control("GET", "/_sandbox/webhooks/keys")
    client = lch.client(sb)
  end)

  lazy_teardown(function()
    if rx then rx:stop() end
    if sb then sb:stop() end
  end)

  local function got()
    local _, b = rx:request("GET", "/got")
    return cjson.decode(b)
  end
  local function reset(fail)
    sb:reset()
    rx:request("GET", "/reset?fail=" .. (fail or 0))
  end

  local function verified(d, rsa_only)
    local headers = rsa_only and { ["X-WH-Signature"] = d.wh } or { ["X-GHL-Signature"] = d.ghl }
    local ev, err = webhook.verify(d.body, headers, { public_key = keys.ed25519, rsa_public_key = keys.rsa })
    assert(ev, tostring(err))
    return ev
  end

  it("serves its public keys: Ed25519 and RSA-4096, PEM", function()
    assert.matches("^%-%-%-%-%-BEGIN PUBLIC KEY%-%-%-%-%-\n", keys.ed25519)
    assert.are.equal("leadconnector.WebhookKey{Ed25519}", tostring(webhook.key(keys.ed25519)))
    assert.are.equal("leadconnector.WebhookKey{RSA}", tostring(webhook.key(keys.rsa, "rsa")))
    assert.is_true(#keys.rsa > 700) -- 4096-bit modulus
  end)

  it("send -> OutboundMessage; inbound -> InboundMessage + ConversationUnreadUpdate; read -> ConversationUnreadUpdate",
    function()
      reset()
      local sent = assert(client:send_message { type = "SMS", contactId = "contact_demo_1", message = "caf\195\169 10.50" })
      local d = eventually("one delivery", function() local g = got() return #g >= 1 and g end)
      local ev = verified(d[1])
      assert.are.equal("OutboundMessage", ev.type)
      assert.are.equal(sent.messageId, ev.messageId)
      assert.are.equal("caf\195\169 10.50", ev.body)
      assert.are.equal("SMS", ev.messageType)
      assert.is_string(ev.webhookId)
      assert.is_string(ev.timestamp)
      assert.are.equal("OutboundMessage", verified(d[1], true).type) -- the legacy RSA header checks too
      -- an inbound message (the API's inbound endpoint, through the sandbox directly)
      local status = sb:request("POST", "/conversations/messages/inbound", { type = "SMS", message = "hello back",
        conversationId = sent.conversationId, contactId = "contact_demo_1", conversationProviderId = "p1" })
      assert.are.equal(201, status)
      d = eventually("three deliveries", function() local g = got() return #g >= 3 and g end)
      local types = {}
      for i = 2, 3 do types[#types + 1] = verified(d[i]).type end
      table.sort(types)
      assert.are.same({ "ConversationUnreadUpdate", "InboundMessage" }, types)
      local inbound_id
      for i = 2, 3 do
        local e = verified(d[i])
        if e.type == "InboundMessage" then inbound_id = e.messageId assert.are.equal("hello back", e.body) end
        if e.type == "ConversationUnreadUpdate" then assert.are.equal(sent.conversationId, e.id) end
      end
      assert(client:update_message_status(inbound_id, { status = "read" }))
      d = eventually("four deliveries", function() local g = got() return #g >= 4 and g end)
      local last = verified(d[4])
      assert.are.equal("ConversationUnreadUpdate", last.type)
      -- every delivery has its own webhookId
      local ids = {}
      for i = 1, 4 do ids[verified(d[i]).webhookId] = true end
      assert.are.equal(4, lch.count(ids))
      -- the control endpoint lists them, delivered at the first attempt
      local list = sb:control("GET", "/_sandbox/webhooks").deliveries
      assert.are.equal(4, #list)
      for _, x in ipairs(list) do
        assert.are.equal("delivered", x.outcome)
        assert.are.equal(1, #x.attempts)
      end
    end)

  it("retries a delivery without a 2xx with growing waits, and gives up after the last attempt", function()
    reset(2)
    assert(client:send_message { type = "SMS", contactId = "contact_demo_1", message = "retry" })
    local x = eventually("delivered", function()
      local l = sb:control("GET", "/_sandbox/webhooks").deliveries
      return l[1] and l[1].outcome == "delivered" and l[1]
    end)
    assert.are.equal(3, #x.attempts)
    assert.are.same({ 503, 503, 200 }, { x.attempts[1].status, x.attempts[2].status, x.attempts[3].status })
    local gap1 = x.attempts[2].time - x.attempts[1].time
    local gap2 = x.attempts[3].time - x.attempts[2].time
    assert.is_true(gap1 >= 0.09, "first wait " .. gap1)
    assert.is_true(gap2 >= 0.19, "second wait " .. gap2)
    local g = got()
    assert.are.equal(3, #g)
    assert.are.equal(g[1].body, g[3].body) -- the same bytes and signature every time
    assert.are.equal(g[1].ghl, g[3].ghl)

    reset(100)
    assert(client:send_message { type = "SMS", contactId = "contact_demo_1", message = "never" })
    x = eventually("failed", function()
      local l = sb:control("GET", "/_sandbox/webhooks").deliveries
      return l[1] and l[1].outcome == "failed" and l[1]
    end)
    assert.are.equal(4, #x.attempts)
    assert.are.equal(4, #got())
  end)

  it("is configured at run time through POST /_sandbox/webhooks/config, and refuses bad URLs", function()
    local s = sb:request("POST", "/_sandbox/webhooks/config", { webhook_urls = { "ftp://x" } })
    assert.are.equal(400, s)
    local c = sb:control("POST", "/_sandbox/webhooks/config", { providers = { p9 = "http://127.0.0.1:" .. rx.port .. "/hook" } })
    assert.are.equal("http://127.0.0.1:" .. rx.port .. "/hook", c.providers.p9)
    reset()
    local sent = assert(client:send_message { type = "SMS", contactId = "contact_demo_1", message = "via p9",
      conversationProviderId = "p9" })
    local d = eventually("two deliveries", function() local g = got() return #g >= 2 and g end)
    local types = {}
    for i = 1, 2 do
      local ev = verified(d[i])
      types[ev.type] = ev
    end
    assert.are.equal(sent.messageId, types.ProviderOutboundMessage.messageId)
    assert.are.equal("SMS", types.ProviderOutboundMessage.channel)
    assert.are.equal("via p9", types.ProviderOutboundMessage.message)
    assert.is_truthy(types.OutboundMessage)
    -- type Custom without a conversationProviderId goes to the provider URL given without an id
    sb:control("POST", "/_sandbox/webhooks/config", { providers = { [""] = "http://127.0.0.1:" .. rx.port .. "/hook" } })
    reset()
    sent = assert(client:send_message { type = "Custom", contactId = "contact_demo_1", message = "custom" })
    d = eventually("two deliveries", function() local g = got() return #g >= 2 and g end)
    local seen_provider
    for i = 1, 2 do
      local ev = verified(d[i])
      if ev.type == "ProviderOutboundMessage" then seen_provider = ev end
    end
    assert.are.equal(sent.messageId, seen_provider.messageId)
    assert.are.equal("custom", seen_provider.message)
  end)
end)

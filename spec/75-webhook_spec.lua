--[[ spec/75-webhook_spec.lua -- leadconnector.webhook: signatures over the raw bytes, every header variant, replay,
and webhook.handler inside a real nginx (bodies in memory and in nginx's temp file, every answer code).
Keys and signatures are made here with the openssl command line, never with the library under test.
]]
local webhook = require "leadconnector.webhook"
local cjson = require "cjson"
local wh = require "whhelpers"

local NOW = 1767225600 -- 2026-01-01T00:00:00Z
local function lch_scale() return require("lchelpers").scale end

local function inbound(extra)
  local t = { type = "InboundMessage", locationId = "loc1", messageId = "m1", conversationId = "c1",
    contactId = "ct1", body = "hi", direction = "inbound", timestamp = wh.iso(NOW), webhookId = "wh-1" }
  for k, v in pairs(extra or {}) do t[k] = v end
  return cjson.encode(t)
end

describe("leadconnector.webhook.verify", function()
  local K, O

  lazy_setup(function()
    K = wh.keys()
    O = { public_key = K.ed_pub, rsa_public_key = K.rsa_pub, now = NOW }
  end)
  lazy_teardown(function() if K then wh.rm(K.dir) end end)

  local function opts(extra)
    local t = {}
    for k, v in pairs(O) do t[k] = v end
    for k, v in pairs(extra or {}) do t[k] = v end
    return t
  end

  it("loads the vendor's two built-in keys, and refuses a signature of another key with them", function()
    assert.are.equal("leadconnector.WebhookKey{Ed25519}", tostring(webhook.key(webhook.ED25519_PUBLIC_KEY)))
    assert.are.equal("leadconnector.WebhookKey{RSA}", tostring(webhook.key(webhook.RSA_PUBLIC_KEY, "rsa")))
    local ref = wh.read_file and nil
    local f = io.open("/work/shared/reference/webhook-rsa-public-key.pem")
    if f then ref = f:read("*a") f:close() end
    if ref then assert.are.equal(ref:gsub("%s", ""), (webhook.RSA_PUBLIC_KEY:gsub("%s", ""))) end
    local body = inbound()
    local ev, err = webhook.verify(body, { ["X-GHL-Signature"] = wh.sign_ed(K, body) }, { now = NOW })
    assert.is_nil(ev)
    assert.are.equal("signature", err.kind)
    assert.are.equal("mismatch", err.reason)
    ev, err = webhook.verify(body, { ["X-WH-Signature"] = wh.sign_rsa(K, body) }, { now = NOW })
    assert.is_nil(ev)
    assert.are.equal("signature", err.kind)
    -- the same key object for the same PEM: parsed once
    assert.are.equal(webhook.key(K.ed_pub), webhook.key(K.ed_pub))
  end)

  it("hands out an Event for a correctly signed body: type, fields by name, to_table, tostring, read-only", function()
    local body = inbound { meta = { n = 1 }, attachments = { "a", "b" } }
    local ev = assert(webhook.verify(body, { ["X-GHL-Signature"] = wh.sign_ed(K, body) }, opts()))
    assert.is_true(webhook.is_event(ev))
    assert.are.equal("userdata", type(ev))
    assert.are.equal("InboundMessage", ev.type)
    assert.is_nil(ev.channel)
    assert.are.equal("m1", ev.messageId)
    assert.are.same({ "a", "b" }, ev.attachments)
    assert.are.same(cjson.decode(body), ev:to_table())
    local s = tostring(ev)
    assert.matches('^leadconnector%.Event{type="InboundMessage"', s)
    assert.matches('webhookId="wh%-1"', s)
    assert.has_error(function() ev.type = "x" end)
    local copy = ev.meta
    copy.n = 2
    assert.are.equal(1, ev.meta.n)
  end)

  it("makes a ProviderOutboundMessage of a body whose type is a channel", function()
    local body = cjson.encode { contactId = "ct1", locationId = "loc1", messageId = "m9", type = "SMS",
      phone = "+15550100", message = "hello", attachments = {}, userId = "u1" }
    local ev = assert(webhook.verify(body, { ["x-ghl-signature"] = wh.sign_ed(K, body) }, opts()))
    assert.are.equal("ProviderOutboundMessage", ev.type)
    assert.are.equal("SMS", ev.channel)
    assert.are.equal("+15550100", ev.phone)
    assert.are.equal("SMS", ev:to_table().type)
    assert.matches('type="ProviderOutboundMessage", channel="SMS"', tostring(ev))
    -- an event name HighLevel adds later stays an event, not a provider message
    body = cjson.encode { type = "ContactTagUpdate", id = "x" }
    ev = assert(webhook.verify(body, { ["x-ghl-signature"] = wh.sign_ed(K, body) }, opts()))
    assert.are.equal("ContactTagUpdate", ev.type)
  end)

  it("verifies the bytes as sent, which a re-serialiser would change (\\u00e9, 10.50, spaces, key order)", function()
    local bodies = {
      '{"type":"InboundMessage","body":"caf\\u00e9","webhookId":"w1"}',
      '{"type":"InboundMessage","amount":10.50,"webhookId":"w2"}',
      '{ "type" : "InboundMessage" ,\n\t"body" : "x"  }\n',
      '{"webhookId":"w3","zeta":1,"alpha":2,"type":"OutboundMessage"}',
      '{"type":"InboundMessage","body":"caf\195\169 \\/ \\"q\\""}',
      '{"type":"InboundMessage","n":1e2,"big":12345678901234567890}',
    }
    for i, body in ipairs(bodies) do
      local ev, err = webhook.verify(body, { ["X-GHL-Signature"] = wh.sign_ed(K, body) }, opts())
      assert(ev, "body " .. i .. ": " .. tostring(err))
      assert.are.equal(body, body) -- the bytes were not touched
    end
    local ev = assert(webhook.verify(bodies[1], { ["X-GHL-Signature"] = wh.sign_ed(K, bodies[1]) }, opts()))
    assert.are.equal("caf\195\169", ev.body)
    ev = assert(webhook.verify(bodies[2], { ["X-GHL-Signature"] = wh.sign_ed(K, bodies[2]) }, opts()))
    assert.are.equal(10.5, ev.amount)
    -- and the re-serialised body (what the Node SDK verifies) is NOT accepted with the original's signature
    local resig = cjson.encode(cjson.decode(bodies[2]))
    assert.are_not.equal(bodies[2], resig)
    assert.is_nil((webhook.verify(resig, { ["X-GHL-Signature"] = wh.sign_ed(K, bodies[2]) }, opts())))
  end)

  it("refuses a change of any single byte of the body, and of any signature character", function()
    local body = '{"type":"InboundMessage","body":"ok"}'
    local sig = wh.sign_ed(K, body)
    assert(webhook.verify(body, { ["X-GHL-Signature"] = sig }, opts()))
    for i = 1, #body do
      for _, delta in ipairs { 1, 32, 128 } do
        local c = (body:byte(i) + delta) % 256
        local bad = body:sub(1, i - 1) .. string.char(c) .. body:sub(i + 1)
        local ev, err = webhook.verify(bad, { ["X-GHL-Signature"] = sig }, opts())
        assert(ev == nil and err.kind == "signature", "byte " .. i .. " changed, still accepted")
      end
    end
    -- shorter, longer
    assert.is_nil((webhook.verify(body:sub(1, -2), { ["X-GHL-Signature"] = sig }, opts())))
    assert.is_nil((webhook.verify(body .. " ", { ["X-GHL-Signature"] = sig }, opts())))
    local alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    for i = 1, 86 do -- the 86 data characters of the 88 (two are padding)
      local c = sig:sub(i, i)
      local pos = alphabet:find(c, 1, true)
      local other = alphabet:sub(pos % 64 + 1, pos % 64 + 1)
      local bad = sig:sub(1, i - 1) .. other .. sig:sub(i + 1)
      local ev, err = webhook.verify(body, { ["X-GHL-Signature"] = bad }, opts())
      assert(ev == nil and err.kind == "signature", "signature char " .. i .. " changed, still accepted")
    end
  end)

  it("reads the headers in any case, from a table or a function", function()
    local body = inbound()
    local sig = wh.sign_ed(K, body)
    for _, name in ipairs { "X-GHL-Signature", "x-ghl-signature", "X-GHL-SIGNATURE", "x-Ghl-sIgnature" } do
      assert(webhook.verify(body, { [name] = sig, ["Content-Type"] = "application/json" }, opts()), name)
    end
    local asked = {}
    assert(webhook.verify(body, function(n)
      asked[#asked + 1] = n
      if n:lower() == "x-ghl-signature" then return sig end
    end, opts()))
    assert.are.same({ "X-GHL-Signature" }, asked)
  end)

  it("answers signature for N/A, missing, empty, bad base64, wrong length, a repeated header", function()
    local body = inbound()
    local sig = wh.sign_ed(K, body)
    local cases = {
      { name = "missing", h = {} },
      { name = "N/A", h = { ["X-GHL-Signature"] = "N/A" } },
      { name = "both N/A", h = { ["X-GHL-Signature"] = "N/A", ["X-WH-Signature"] = "N/A" } },
      { name = "empty", h = { ["X-GHL-Signature"] = "" } },
      { name = "spaces", h = { ["X-GHL-Signature"] = " " .. sig } },
      { name = "newline inside", h = { ["X-GHL-Signature"] = sig:sub(1, 40) .. "\n" .. sig:sub(41) } },
      { name = "url-safe -", h = { ["X-GHL-Signature"] = sig:sub(1, 10) .. "-" .. sig:sub(12) } },
      { name = "url-safe _", h = { ["X-GHL-Signature"] = sig:sub(1, 10) .. "_" .. sig:sub(12) } },
      { name = "no padding", h = { ["X-GHL-Signature"] = (sig:gsub("=+$", "")) } },
      { name = "extra padding", h = { ["X-GHL-Signature"] = sig .. "==" } },
      { name = "padding inside", h = { ["X-GHL-Signature"] = sig:sub(1, 4) .. "=" .. sig:sub(6) } },
      { name = "not base64", h = { ["X-GHL-Signature"] = ("!"):rep(88) } },
      { name = "63 bytes", h = { ["X-GHL-Signature"] = sig:sub(1, 84) } },
      { name = "66 bytes", h = { ["X-GHL-Signature"] = sig:sub(1, 86) .. "AAAA" } },
      { name = "a hex signature", h = { ["X-GHL-Signature"] = ("ab"):rep(64) } },
      { name = "non-canonical last char", h = { ["X-GHL-Signature"] = sig:sub(1, 85) ..
        (sig:sub(86, 86) == "A" and "B" or "A") .. "==" } },
      { name = "two spellings", h = { ["X-GHL-Signature"] = sig, ["x-ghl-signature"] = sig } },
      { name = "repeated (table)", h = { ["x-ghl-signature"] = { sig, sig } } },
      { name = "function gives a table", h = function() return { sig } end },
      { name = "RSA header only, rsa = false", h = { ["X-WH-Signature"] = wh.sign_rsa(K, body) }, o = { rsa = false } },
      { name = "GHL bad, WH good: no fallback", h = { ["X-GHL-Signature"] = sig:sub(1, 84),
        ["X-WH-Signature"] = wh.sign_rsa(K, body) } },
    }
    for _, c in ipairs(cases) do
      local ev, err = webhook.verify(body, c.h, opts(c.o))
      assert(ev == nil, c.name .. ": accepted")
      assert(err.kind == "signature", c.name .. ": kind " .. tostring(err.kind))
      assert(require("leadconnector").is_error(err), c.name .. ": not an error object")
    end
  end)

  it("accepts the legacy RSA-SHA256 X-WH-Signature only without an X-GHL-Signature", function()
    local body = inbound()
    local rsa = wh.sign_rsa(K, body)
    assert(webhook.verify(body, { ["X-WH-Signature"] = rsa }, opts()))
    assert(webhook.verify(body, { ["X-GHL-Signature"] = "N/A", ["X-WH-Signature"] = rsa }, opts()))
    -- both: Ed25519 decides, a broken RSA header changes nothing
    assert(webhook.verify(body, { ["X-GHL-Signature"] = wh.sign_ed(K, body), ["X-WH-Signature"] = "junk" }, opts()))
    local ev, err = webhook.verify(body .. " ", { ["X-WH-Signature"] = rsa }, opts())
    assert.is_nil(ev)
    assert.are.equal("mismatch", err.reason)
    ev, err = webhook.verify(body, { ["X-WH-Signature"] = rsa:sub(1, -5) }, opts())
    assert.is_nil(ev)
    assert.matches("wrong length", err.message)
    -- a wrong kind of key is a configuration mistake: it raises, it never verifies
    assert.has_error(function() webhook.verify(body, { ["X-WH-Signature"] = rsa }, opts { rsa_public_key = K.ed_pub }) end)
    assert.has_error(function() webhook.verify(body, { ["X-GHL-Signature"] = rsa }, opts { public_key = K.rsa_pub }) end)
    assert.has_error(function() webhook.verify(body, { ["X-GHL-Signature"] = rsa }, opts { public_key = "garbage" }) end)
  end)

  it("refuses stale, future and garbled timestamps; tolerance is settable and false turns it off", function()
    local function try(ts, o)
      local body = inbound { timestamp = ts }
      return webhook.verify(body, { ["X-GHL-Signature"] = wh.sign_ed(K, body) }, opts(o))
    end
    assert(try(wh.iso(NOW - 299)))
    assert(try(wh.iso(NOW + 299)))
    assert(try("2026-01-01T01:00:00+01:00"))
    for _, c in ipairs {
      { wh.iso(NOW - 301), "stale" }, { wh.iso(NOW + 301), "future" }, { wh.iso(NOW - 86400 * 365), "stale" },
      { "yesterday", "timestamp" }, { "2026-13-01T00:00:00Z", "timestamp" }, { "2026-01-01T00:00:00", "timestamp" },
      { 1767225600, "timestamp" }, { "", "timestamp" },
    } do
      local ev, err = try(c[1])
      assert(ev == nil, tostring(c[1]) .. " accepted")
      assert.are.equal("replay", err.kind)
      assert.are.equal(c[2], err.reason)
    end
    assert(try(wh.iso(NOW - 1000), { tolerance = 1200 }))
    assert.is_nil((try(wh.iso(NOW - 1000), { tolerance = 60 })))
    assert(try(wh.iso(NOW - 86400 * 365), { tolerance = false }))
    -- a body without a timestamp (ProviderOutboundMessage has none) is not refused for it
    local body = cjson.encode { type = "SMS", messageId = "m1" }
    assert(webhook.verify(body, { ["X-GHL-Signature"] = wh.sign_ed(K, body) }, opts()))
    -- the default window is 300 s around the clock when no `now` is given
    body = inbound { timestamp = wh.iso(os.time()) }
    assert(webhook.verify(body, { ["X-GHL-Signature"] = wh.sign_ed(K, body) }, { public_key = K.ed_pub }))
    body = inbound { timestamp = wh.iso(os.time() - 400) }
    assert.is_nil((webhook.verify(body, { ["X-GHL-Signature"] = wh.sign_ed(K, body) }, { public_key = K.ed_pub })))
  end)

  it("takes a webhookId once per seen store", function()
    local seen = webhook.memory_seen()
    local body = inbound { webhookId = "once" }
    local h = { ["X-GHL-Signature"] = wh.sign_ed(K, body) }
    assert(webhook.verify(body, h, opts { seen = seen }))
    local ev, err = webhook.verify(body, h, opts { seen = seen })
    assert.is_nil(ev)
    assert.are.equal("replay", err.kind)
    assert.are.equal("duplicate", err.reason)
    -- another id goes through; another store has not seen it; a bad signature does not mark an id
    local b2 = inbound { webhookId = "twice" }
    assert.is_nil((webhook.verify(b2, h, opts { seen = seen })))
    assert(webhook.verify(b2, { ["X-GHL-Signature"] = wh.sign_ed(K, b2) }, opts { seen = seen }))
    assert(webhook.verify(body, h, opts { seen = webhook.memory_seen() }))
    -- a failing store fails closed
    local broken = { add = function() error("down") end }
    ev, err = webhook.verify(body, h, opts { seen = broken })
    assert.is_nil(ev)
    assert.are.equal("store", err.reason)
    ev, err = webhook.verify(body, h, opts { seen = { add = function() return nil, "full" end } })
    assert.is_nil(ev)
    assert.matches("full", err.message)
  end)

  it("memory_seen forgets after the ttl, stays within its size, and remove() forgets at once", function()
    local s = webhook.memory_seen(3)
    assert.is_true(s:add("a", 100))
    assert.is_false(s:add("a", 100))
    s:remove("a")
    assert.is_true(s:add("a", 100))
    assert.is_true(s:add("short", 0.05))
    require("socket").sleep(0.1)
    assert.is_true(s:add("short", 100))
    for i = 1, 10 do assert.is_true(s:add("n" .. i, 100)) end
    assert.is_false(s:add("n10", 100))
    assert.is_true(s:add("n1", 100)) -- pushed out by the size bound
  end)

  it("answers decode for a signed body that is not a JSON object with a type", function()
    for _, body in ipairs { "not json", "[1,2]", '"str"', "{}", '{"type":5}', '{"type":""}', "null", " " } do
      local ev, err = webhook.verify(body, { ["X-GHL-Signature"] = wh.sign_ed(K, body) }, opts())
      assert(ev == nil, body)
      assert.are.equal("decode", err.kind)
    end
    -- but an unsigned non-JSON body is a signature error: nothing is parsed before the signature matched
    local ev, err = webhook.verify("not json", {}, opts())
    assert.is_nil(ev)
    assert.are.equal("signature", err.kind)
  end)

  it("raises for misuse only", function()
    assert.has_error(function() webhook.verify(nil, {}) end)
    assert.has_error(function() webhook.verify("{}", "headers") end)
    assert.has_error(function() webhook.verify("{}", {}, { tolerence = 5 }) end)
    assert.has_error(function() webhook.verify("{}", {}, { rsa = "no" }) end)
    assert.has_error(function() webhook.verify("{}", {}, { seen = {} }) end)
    assert.has_error(function() webhook.handler { on_event = print } end) -- outside nginx
  end)
end)

---------------------------------------------------------------------------------------------------------------------

describe("webhook.handler in a real nginx #lua54only #slow #nginx", function()
  local K, nx

  lazy_setup(function()
    K = wh.keys()
    wh.write_file = require("helpers").write_file
    wh.write_file(K.dir .. "/app.lua", ([[
local webhook = require "leadconnector.webhook"
local M = {}
local PUB = %q
local seen = webhook.shdict_seen("seen")
function M.handle()
  local mode = ngx.var.arg_mode
  webhook.handler {
    public_key = PUB, seen = seen, max_body_size = 1024 * 1024,
    on_event = function(ev)
      local calls = ngx.shared.calls
      calls:incr(ev.webhookId or "none", 1, 0)
      calls:set("last_size", #(ev.pad or ""))
      calls:set("last_type", ev.type)
      if mode == "raise" then error("boom") end
      if mode == "fail" then return nil, "carrier down" end
      return true
    end,
  }
end
return M
]]):format(K.ed_pub))
    nx = wh.nginx {
      workers = 2,
      lua_path = K.dir .. "/?.lua;",
      http = [[
  lua_shared_dict seen 1m;
  lua_shared_dict calls 1m;
  client_body_buffer_size 1k;
  client_max_body_size 2m;
  server {
    listen 127.0.0.1:@PORT@;
    location = /_probe { return 200; }
    location = /hook { content_by_lua_block { require("app").handle() } }
    location = /calls { content_by_lua_block {
      local c = ngx.shared.calls
      ngx.say(require("cjson").encode { n = c:get(ngx.var.arg_id) or 0, size = c:get("last_size"), type = c:get("last_type") })
    } }
  }
]],
    }
  end)

  lazy_teardown(function()
    if nx then nx:stop() end
    if K then wh.rm(K.dir) end
  end)

  local function post(body, mode, headers)
    return nx:request("POST", "/hook" .. (mode and ("?mode=" .. mode) or ""), body,
      headers or { ["X-GHL-Signature"] = wh.sign_ed(K, body), ["Content-Type"] = "application/json" })
  end
  local function calls(id)
    local _, b = nx:request("GET", "/calls?id=" .. id)
    return cjson.decode(b)
  end

  it("200 and on_event called once; 200 for the duplicate without calling it again", function()
    local body = inbound { webhookId = "h-dup", timestamp = wh.iso(os.time()) }
    assert.are.equal(200, (post(body)))
    assert.are.equal(1, calls("h-dup").n)
    assert.are.equal("InboundMessage", calls("h-dup").type)
    for _ = 1, 4 do assert.are.equal(200, (post(body))) end -- whichever worker gets it: one shared store
    assert.are.equal(1, calls("h-dup").n)
  end)

  it("401 for a bad or missing signature and a stale timestamp; on_event never called", function()
    local body = inbound { webhookId = "h-bad", timestamp = wh.iso(os.time()) }
    assert.are.equal(401, (post(body, nil, { ["X-GHL-Signature"] = wh.sign_ed(K, body .. "x") })))
    assert.are.equal(401, (post(body, nil, {})))
    assert.are.equal(401, (post(body, nil, { ["X-GHL-Signature"] = "N/A" })))
    local stale = inbound { webhookId = "h-bad", timestamp = wh.iso(os.time() - 3600) }
    assert.are.equal(401, (post(stale)))
    assert.are.equal(0, calls("h-bad").n)
    assert.are.equal(405, (nx:request("GET", "/hook")))
  end)

  it("500 when on_event raises or returns nil, err, and then the retry is handled", function()
    local body = inbound { webhookId = "h-retry", timestamp = wh.iso(os.time()) }
    assert.are.equal(500, (post(body, "raise")))
    assert.are.equal(500, (post(body, "fail")))
    assert.are.equal(200, (post(body)))
    assert.are.equal(3, calls("h-retry").n)
    assert.are.equal(200, (post(body)))
    assert.are.equal(3, calls("h-retry").n)
    assert.matches("carrier down", nx:log())
  end)

  it("verifies a body nginx wrote to its temp file (client_body_buffer_size 1k), and 413 past max_body_size", function()
    local body = inbound { webhookId = "h-big", timestamp = wh.iso(os.time()), pad = ("\195\169"):rep(100000) }
    assert(#body > 200000)
    assert.are.equal(200, (post(body)))
    assert.are.equal(1, calls("h-big").n)
    assert.are.equal(200000, calls("h-big").size)
    local tampered = body:sub(1, 150000) .. "x" .. body:sub(150002)
    assert.are.equal(401, (post(tampered, nil, { ["X-GHL-Signature"] = wh.sign_ed(K, body) })))
    local huge = inbound { webhookId = "h-huge", pad = ("a"):rep(1100 * 1024) }
    assert.are.equal(413, (post(huge)))
    assert.are.equal(0, calls("h-huge").n)
  end)
end)

---------------------------------------------------------------------------------------------------------------------

describe("webhook.redis_seen against a real redis-server", function()
  local ok_redis = pcall(require, "leadconnector.redis")
  local port, rd

  lazy_setup(function()
    if not ok_redis then return end
    rd = require("limiter.harness").redis()
    port = rd.port
  end)
  lazy_teardown(function()
    if rd then rd.stop() end
  end)

  it("takes a webhookId once, forgets it on remove and after the ttl, and fails closed when Redis is gone", function()
    if not ok_redis then
      pending("leadconnector.redis is not on this branch yet")
      return
    end
    local s = webhook.redis_seen { host = "127.0.0.1", port = port, timeout = 1 }
    local id = "wh-" .. os.time() .. "-" .. math.random(1e9)
    assert.is_true(s:add(id, 60))
    assert.is_false(s:add(id, 60))
    assert.is_false(webhook.redis_seen({ host = "127.0.0.1", port = port }):add(id, 60)) -- another store, same Redis
    s:remove(id)
    assert.is_true(s:add(id, 60))
    assert.is_true(s:add(id .. "-short", 0.1))
    require("socket").sleep(0.3)
    assert.is_true(s:add(id .. "-short", 60))
    local dead = webhook.redis_seen { host = "127.0.0.1", port = wh.free_port(), timeout = 0.2 }
    local v, err = dead:add("x", 60)
    assert.is_nil(v)
    assert.is_string(err)
  end)
end)

---------------------------------------------------------------------------------------------------------------------

describe("webhook.handler does not block its worker #lua54only #slow #nginx", function()
  local K, nx

  lazy_setup(function()
    K = wh.keys()
    require("helpers").write_file(K.dir .. "/slowapp.lua", ([[
local webhook = require "leadconnector.webhook"
return { handle = function()
  webhook.handler { public_key = %q, on_event = function(ev) ngx.sleep(1.5) return true end }
end }
]]):format(K.ed_pub))
    nx = wh.nginx { workers = 1, lua_path = K.dir .. "/?.lua;", http = [[
  server {
    listen 127.0.0.1:@PORT@;
    location = /_probe { return 200; }
    location = /hook { content_by_lua_block { require("slowapp").handle() } }
    location = /ping { content_by_lua_block { ngx.say(ngx.worker.pid()) } }
  }
]] }
  end)
  lazy_teardown(function()
    if nx then nx:stop() end
    if K then wh.rm(K.dir) end
  end)

  it("answers another request on the same (only) worker while on_event waits", function()
    local socket = require "socket"
    local body = inbound { timestamp = wh.iso(os.time()) }
    local c = socket.tcp()
    c:settimeout(10)
    assert(c:connect("127.0.0.1", nx.port))
    local sig = wh.sign_ed(K, body)
    c:send(("POST /hook HTTP/1.1\r\nHost: t\r\nConnection: close\r\nX-GHL-Signature: %s\r\nContent-Length: %d\r\n\r\n%s")
      :format(sig, #body, body))
    socket.sleep(0.2) -- the handler is now in on_event
    local t0 = socket.gettime()
    local status = nx:request("GET", "/ping")
    local took = socket.gettime() - t0
    assert.are.equal(200, status)
    assert.is_true(took < 0.8 * lch_scale(), "the worker was blocked for " .. took .. " s")
    local answer = c:receive("*a")
    c:close()
    assert.matches("^HTTP/1%.1 200", answer)
  end)
end)

---------------------------------------------------------------------------------------------------------------------

describe("webhook.handler with webhook.redis_seen in nginx #lua54only #slow #nginx", function()
  local helpers = require "helpers"
  local K, nx, port, rd

  lazy_setup(function()
    K = wh.keys()
    rd = require("limiter.harness").redis()
    port = rd.port
    helpers.write_file(K.dir .. "/redisapp.lua", ([[
local webhook = require "leadconnector.webhook"
local seen = webhook.redis_seen { host = "127.0.0.1", port = %d, timeout = 1 }
return { handle = function()
  webhook.handler { public_key = %q, seen = seen, on_event = function(ev)
    ngx.shared.calls:incr(ev.webhookId, 1, 0)
    if ngx.var.arg_mode == "fail" then return nil, "not now" end
    return true
  end }
end }
]]):format(port, K.ed_pub))
    nx = wh.nginx { workers = 2, lua_path = K.dir .. "/?.lua;", http = [[
  lua_shared_dict calls 1m;
  server {
    listen 127.0.0.1:@PORT@;
    location = /_probe { return 200; }
    location = /hook { content_by_lua_block { require("redisapp").handle() } }
    location = /calls { content_by_lua_block { ngx.say(ngx.shared.calls:get(ngx.var.arg_id) or 0) } }
  }
]] }
  end)
  lazy_teardown(function()
    if nx then nx:stop() end
    if rd then rd.stop() end
    if K then wh.rm(K.dir) end
  end)

  it("handles a webhookId once across workers, and again after on_event failed", function()
    local id = "r-" .. os.time() .. "-" .. math.random(1e9)
    local body = inbound { webhookId = id, timestamp = wh.iso(os.time()) }
    local h = { ["X-GHL-Signature"] = wh.sign_ed(K, body) }
    assert.are.equal(500, (nx:request("POST", "/hook?mode=fail", body, h)))
    for _ = 1, 4 do assert.are.equal(200, (nx:request("POST", "/hook", body, h))) end
    local _, n = nx:request("GET", "/calls?id=" .. id)
    assert.are.equal("2", n:match("%d+"))
  end)
end)

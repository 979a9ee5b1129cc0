-- Secrets and hostile answers: a token echoed by a server never reaches an error; header numbers a server sends
-- are read only when they are plain decimals; time limits of 0 (libcurl's "no limit") are refused.
local helpers = require "helpers"
local leadconnector = require "leadconnector"
local lch = require "lchelpers"

local TOKEN = "sandbox-token"

-- true when the token is anywhere in v: fields, nested tables, keys, metatables
local function deep_contains(v, needle) return lch.find_in(v, needle) ~= nil end

describe("a token echoed back by a server", function()
  local sb, client
  lch.suite(function(s, c) sb, client = s, c end, nil, function(s)
    return assert(leadconnector.new { token = TOKEN, base_url = s.url, max_retries = 0, rate_limit = false })
  end)

  it("is redacted from err.message and err.body of a JSON error answer", function()
    sb:fault { method = "GET", path_pattern = "^/conversations/messages/", status = 401,
      body = { statusCode = 401, message = "Invalid token: " .. TOKEN .. " is not valid", error = "Unauthorized" } }
    local msg, err = client:get_message("m1")
    assert.is_nil(msg)
    assert.equals("auth", err.kind)
    assert.equals("Invalid token: [REDACTED] is not valid", err.message)
    assert.is_false(deep_contains(err, TOKEN))
    assert.is_nil(tostring(err):find(TOKEN, 1, true))
  end)

  it("is redacted from a proxy's HTML page kept in err.body", function()
    sb:fault { method = "GET", path_pattern = "^/conversations/", status = 502,
      body = "<html><body>upstream refused Authorization: Bearer " .. TOKEN .. "</body></html>",
      headers = { ["Content-Type"] = "text/html" } }
    local conv, err = client:get_conversation("conv_demo_1")
    assert.is_nil(conv)
    assert.equals("server", err.kind)
    assert.truthy(err.body:find("Bearer [REDACTED]", 1, true))
    assert.is_false(deep_contains(err, TOKEN))
  end)

  it("is redacted from the raw text kept by a decode error", function()
    sb:fault { method = "GET", path_pattern = "^/conversations/messages/", status = 200,
      body = "not json " .. TOKEN }
    local msg, err = client:get_message("m1")
    assert.is_nil(msg)
    assert.equals("decode", err.kind)
    assert.equals("not json [REDACTED]", err.body)
  end)

  it("core.finish redacts the token it is given (the cosocket transport's path)", function()
    local core = require "leadconnector.core"
    local _, err = core.finish("message", 403, '{"message":"' .. TOKEN .. TOKEN .. '"}', nil, nil, TOKEN)
    assert.equals("[REDACTED][REDACTED]", err.message)
    local _, err2 = core.finish("message", 403, '{"message":"' .. TOKEN .. '"}')
    assert.equals(TOKEN, err2.message) -- without the token to look for, nothing is changed
  end)
end)

describe("header numbers from the server", function()
  local sb
  lazy_setup(function() sb = helpers.start_sandbox { rate_limit = false } end)
  lazy_teardown(function() if sb then sb:stop() end end)

  it("a Retry-After in hex is not taken as a number", function()
    local client = assert(leadconnector.new { token = TOKEN, base_url = sb.url, max_retries = 0 })
    sb:fault { method = "GET", path_pattern = "^/conversations/", status = 429,
      body = { statusCode = 429, message = "Too Many Requests" }, headers = { ["Retry-After"] = "0x10" } }
    local _, err = client:get_conversation("conv_demo_1")
    assert.equals("rate_limited", err.kind)
    assert.is_nil(err.retry_after)
    sb:fault { method = "GET", path_pattern = "^/conversations/", status = 429,
      body = { statusCode = 429, message = "Too Many Requests" }, headers = { ["Retry-After"] = "2" } }
    local _, err2 = client:get_conversation("conv_demo_1")
    assert.equals(2, err2.retry_after)
    client:close()
  end)
end)

describe("time limits", function()
  for _, k in ipairs { "timeout", "connect_timeout", "deadline" } do
    it("refuses " .. k .. " = 0, which libcurl would read as no limit at all", function()
      local client, err = leadconnector.new { token = TOKEN, [k] = 0 }
      assert.is_nil(client)
      assert.equals("invalid", err.kind)
      assert.equals(k, err.field)
    end)
  end
  it("refuses a per-call timeout of 0", function()
    local client = assert(leadconnector.new { token = TOKEN, base_url = "http://127.0.0.1:9" })
    local msg, err = client:get_message("m1", { timeout = 0 })
    assert.is_nil(msg)
    assert.equals("invalid", err.kind)
    assert.equals("timeout", err.field)
  end)
end)

describe("small hardenings", function()
  local core = require "leadconnector.core"

  it("takes a traceId from an error body only when it is short and printable", function()
    local _, err = core.finish("message", 500, '{"message":"x","traceId":"abc-123"}')
    assert.equals("abc-123", err.trace_id)
    local _, err2 = core.finish("message", 500, '{"message":"x","traceId":"abc\\r\\nX-Evil: 1"}')
    assert.is_nil(err2.trace_id)
    assert.is_nil(tostring(err2):find("\n", 1, true))
  end)

  it("refuses an unknown field whose name is not UTF-8, even with allow_unknown", function()
    local body, err = core.build_send({ type = "SMS", contactId = "c1", ["bad\255name"] = 1 }, true)
    assert.is_nil(body)
    assert.equals("invalid", err.kind)
    assert.truthy(err.message:find("UTF-8", 1, true))
    assert.truthy(core.build_send({ type = "SMS", contactId = "c1", x = 1 }, true):find('"x":1', 1, true))
  end)

  it("keeps one rate limiter per API host and token, not per token alone", function()
    local sb = helpers.start_sandbox { rate_limit = false }
    local ok, err = pcall(function()
      local a = assert(leadconnector.new { token = "limiter-key-token", base_url = sb.url, max_retries = 0 })
      local b = assert(leadconnector.new { token = "limiter-key-token", base_url = "http://localhost:" .. sb.port,
        max_retries = 0 })
      sb:fault { method = "GET", path_pattern = "^/conversations/", status = 429,
        body = { statusCode = 429, message = "Too Many Requests" }, headers = { ["Retry-After"] = "30" } }
      local _, e = a:get_conversation("conv_demo_1")
      assert.equals("rate_limited", e.kind)
      assert.is_true(a:rate_limit().wait > 20)   -- this host told this token to wait
      assert.equals(0, b:rate_limit().wait)      -- another host did not
      local c = assert(leadconnector.new { token = "limiter-key-token", base_url = sb.url })
      assert.is_true(c:rate_limit().wait > 20)   -- same host and token: the same budget
    end)
    sb:stop()
    assert(ok, err)
  end)
end)

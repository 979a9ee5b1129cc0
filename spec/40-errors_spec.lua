-- Every error kind of API.md §2 from real answers of the sandbox (its faults stand in for the proxies, outages
-- and odd answers of the real API), with the fields the error object carries, and the token kept out of all of it.
local leadconnector = require "leadconnector"
local lch = require "lchelpers"

local TOKEN = "pit-SECRET-4c1d9e7a-0b2f"
local BAD_TOKEN = "pit-WRONGSECRET-77aa31"

describe("errors", function()
  local sb, client
  local all_errors = {} -- every error seen, checked once more at the end

  lch.suite(function(s, c) sb, client = s, c end, { rate_limit = false, tokens = { TOKEN } }, function(s)
    assert(s.token == TOKEN)
    return lch.client(s, { rate_limit = false })
  end)

  -- What every error must be: an error object of `kind`, one line, the token nowhere.
  local function check(err, kind)
    assert.is_true(leadconnector.is_error(err), "not an error object: " .. tostring(err))
    assert.equals(kind, err.kind)
    local s = tostring(err)
    assert.is_truthy(s:find("^leadconnector: " .. kind), s)
    assert.is_nil(s:find("[\r\n]"), s)
    assert.is_true(#s < 1100)
    for _, secret in ipairs { TOKEN, BAD_TOKEN, "SECRET" } do
      assert.is_nil(s:find(secret, 1, true), s)
      assert.is_nil(lch.find_in(err, secret))
    end
    all_errors[#all_errors + 1] = err
    return err
  end

  local function fails(kind, value, err)
    assert.is_nil(value)
    return check(err, kind)
  end

  it("invalid: refused before sending, no status, method and path of the call", function()
    local err = fails("invalid", client:send_message { type = "SMS" })
    assert.is_nil(err.status)
    assert.equals("POST", err.method)
    assert.equals("/conversations/messages", err.path)
    assert.equals(0, err.attempts)
    assert.is_false(err.request_sent)
    assert.equals("contactId", err.field)
    assert.same({}, sb:requests())
  end)

  describe("network", function()
    it("a refused connection: no status, never sent, retried even for a send", function()
      local port = lch.unused_port()
      local c = lch.client(sb, { base_url = "http://127.0.0.1:" .. port, rate_limit = false })
      local err = fails("network", c:get_message("msg_demo_1"))
      assert.is_nil(err.status)
      assert.is_nil(err.body)
      assert.is_false(err.request_sent)
      assert.equals("GET", err.method)
      assert.equals("/conversations/messages/msg_demo_1", err.path)
      assert.equals(1, err.attempts)
      assert.is_string(err.message)
      err = fails("network", c:send_message({ type = "SMS", contactId = "c", message = "x" }, { max_retries = 2 }))
      assert.equals(3, err.attempts) -- it provably never left, so a send may be tried again
      assert.is_truthy(tostring(err):find("3 attempts", 1, true))
      c:close()
    end)

    it("a dropped connection: no status; a send is not sent twice", function()
      sb:fault { method = "GET", path = "/conversations/conv_demo_1", action = "drop" }
      local err = fails("network", client:get_conversation("conv_demo_1"))
      assert.is_nil(err.status)
      assert.is_true(err.request_sent)
      assert.equals(1, err.attempts)

      sb:reset()
      sb:fault { method = "POST", path = "/conversations/messages", action = "drop", count = -1 }
      err = fails("network", client:send_message({ type = "SMS", contactId = "c", message = "once" }, { max_retries = 3 }))
      assert.is_true(err.request_sent)
      assert.equals(1, err.attempts)
      assert.equals(1, #sb:requests()) -- the message may have arrived: never re-sent
    end)

    it("reads are retried after a drop and then succeed", function()
      sb:fault { method = "GET", path = "/conversations/messages/msg_demo_1", action = "drop", count = 2 }
      local m = assert(client:get_message("msg_demo_1", { max_retries = 2 }))
      assert.equals("msg_demo_1", m.id)
      assert.equals(3, #sb:requests())
    end)
  end)

  describe("timeout", function()
    it("an answer slower than the timeout", function()
      sb:fault { method = "GET", path = "/conversations/messages/msg_demo_1", delay_ms = 3000 * lch.scale }
      local c = lch.client(sb, { timeout = 0.3 * lch.scale, rate_limit = false })
      local t0 = require("leadconnector.core").now()
      local err = fails("timeout", c:get_message("msg_demo_1"))
      local took = require("leadconnector.core").now() - t0
      c:close()
      assert.is_true(took < 2 * lch.scale, "took " .. took)
      assert.is_nil(err.status)
      assert.equals(1, err.attempts)
      assert.equals("/conversations/messages/msg_demo_1", err.path)
    end)

    it("a per-call timeout and a per-call deadline", function()
      sb:fault { method = "GET", path = "/conversations/conv_demo_1", delay_ms = 3000 * lch.scale, count = -1 }
      local err = fails("timeout", client:get_conversation("conv_demo_1", { timeout = 0.3 * lch.scale }))
      assert.is_nil(err.status)
      err = fails("timeout", client:get_conversation("conv_demo_1", { deadline = 0.3 * lch.scale, max_retries = 5 }))
      assert.is_nil(err.status)
    end)

    it("a time limit under a millisecond is still a limit", function()
      -- what is left of a deadline can be a fraction of a millisecond; rounded to 0 it meant "no limit" to libcurl
      sb:fault { method = "GET", path = "/conversations/conv_demo_1", delay_ms = 1500, count = -1 }
      local core = require "leadconnector.core"
      local t0 = core.now()
      local err = fails("timeout", client:get_conversation("conv_demo_1", { timeout = 0.0004 }))
      assert.is_true(core.now() - t0 < 1, "waited for the answer")
      assert.is_nil(err.status)
    end)

    it("a send that timed out is not sent again", function()
      sb:fault { method = "POST", path = "/conversations/messages", delay_ms = 3000 * lch.scale, count = -1 }
      local err = fails("timeout", client:send_message({ type = "SMS", contactId = "c", message = "once" },
        { timeout = 0.3 * lch.scale, max_retries = 3 }))
      assert.is_true(err.request_sent)
      assert.equals(1, err.attempts)
      assert.equals(1, #sb:requests())
    end)

    it("#slow the deadline holds across a backoff wait", function()
      -- attempt 1: 503 with Retry-After 1; attempt 2: an answer that takes 1.2 s. A deadline of 1.5 s leaves the
      -- second attempt 0.5 s, so the call must end by then with a timeout, not succeed 0.7 s past its deadline.
      sb:fault { { method = "GET", path = "/conversations/conv_demo_2", status = 503, headers = { ["Retry-After"] = "1" } },
        { method = "GET", path = "/conversations/conv_demo_2", delay_ms = 1200 } }
      local core = require "leadconnector.core"
      local t0 = core.now()
      local conv, err = client:get_conversation("conv_demo_2", { deadline = 1.5, max_retries = 3, timeout = 5 })
      local took = core.now() - t0
      assert.is_true(took < 2.0, ("took %.2f s for a deadline of 1.5 s"):format(took)) -- 2.2 s when it did not hold
      fails("timeout", conv, err)
      assert.equals(2, err.attempts)
    end)
  end)

  describe("auth", function()
    it("401 for a token the API does not know", function()
      local c = lch.client(sb, { token = BAD_TOKEN, rate_limit = false })
      local err = fails("auth", c:get_message("msg_demo_1"))
      assert.equals(401, err.status)
      assert.equals("Invalid token: access token is invalid", err.message)
      assert.equals(401, err.body.statusCode)
      assert.equals("Unauthorized", err.body.error)
      assert.equals(1, err.attempts)
      err = fails("auth", c:send_message { type = "SMS", contactId = "c", message = "x" })
      assert.equals(401, err.status)
      assert.is_nil(tostring(c):find("SECRET", 1, true))
      c:close()
    end)

    it("403", function()
      sb:fault { method = "GET", path = "/conversations/conv_demo_1", status = 403,
        body = { statusCode = 403, message = "The token is not authorized for this scope" } }
      local err = fails("auth", client:get_conversation("conv_demo_1"))
      assert.equals(403, err.status)
      assert.equals("The token is not authorized for this scope", err.message)
    end)
  end)

  it("not_found: 404 with the API's words", function()
    local err = fails("not_found", client:get_message("no_such_message"))
    assert.equals(404, err.status)
    assert.equals("Message not found", err.message)
    assert.equals("GET", err.method)
    assert.equals("/conversations/messages/no_such_message", err.path)
    err = fails("not_found", client:get_conversation("no_such_conversation"))
    assert.equals("Conversation not found", err.message)
    assert.equals("/conversations/no_such_conversation", err.path)
  end)

  describe("rate_limited", function()
    it("429 with Retry-After", function()
      sb:fault { method = "GET", path = "/conversations/messages/msg_demo_1", status = 429,
        headers = { ["Retry-After"] = "7" } }
      local err = fails("rate_limited", client:get_message("msg_demo_1", { max_retries = 0 }))
      assert.equals(429, err.status)
      assert.equals(7, err.retry_after)
      assert.equals(1, err.attempts)
    end)

    it("429 with Retry-After as an HTTP date", function()
      local when = os.date("!%a, %d %b %Y %H:%M:%S GMT", os.time() + 30)
      sb:fault { method = "GET", path = "/conversations/messages/msg_demo_1", status = 429,
        headers = { ["Retry-After"] = when } }
      local err = fails("rate_limited", client:get_message("msg_demo_1", { max_retries = 0 }))
      assert.is_number(err.retry_after)
      assert.is_true(err.retry_after >= 28 and err.retry_after <= 31, tostring(err.retry_after))
    end)

    it("429 from the server's own limiter", function()
      sb:config { rate_limit = 2, rate_interval_ms = 60000 }
      assert(client:get_message("msg_demo_1"))
      assert(client:get_message("msg_demo_1"))
      local err = fails("rate_limited", client:get_message("msg_demo_1"))
      sb:config { rate_limit = false }
      assert.equals(429, err.status)
      assert.is_number(err.retry_after)
      assert.is_true(err.retry_after > 0 and err.retry_after <= 60)
      assert.equals("Too Many Requests", err.message)
    end)

    it("a 429 is retried after Retry-After, a send included", function()
      sb:fault { method = "POST", path = "/conversations/messages", status = 429, headers = { ["Retry-After"] = "0" } }
      local sent = assert(client:send_message({ type = "SMS", contactId = "contact_demo_1", message = "x" },
        { max_retries = 1 }))
      assert.is_string(sent.messageId)
      assert.equals(2, #sb:requests())
    end)
  end)

  describe("http", function()
    it("400 from the API (an unsupported Version)", function()
      local err = fails("http", client:get_message("msg_demo_1", { version = "2020-01-01" }))
      assert.equals(400, err.status)
      assert.is_truthy(err.message:find("2020-01-01", 1, true), err.message)
      assert.equals(400, err.body.statusCode)
    end)

    for _, status in ipairs { 400, 409, 413 } do
      it(status .. " with the API's message", function()
        sb:fault { method = "POST", path = "/conversations/messages", status = status,
          body = { statusCode = status, message = "problem " .. status } }
        local err = fails("http", client:send_message { type = "SMS", contactId = "c", message = "x" })
        assert.equals(status, err.status)
        assert.equals("problem " .. status, err.message)
        assert.same({ statusCode = status, message = "problem " .. status }, err.body)
        assert.equals(1, err.attempts)
      end)
    end

    it("422 from the API: its message array joined", function()
      -- the library sends an error object with only a code; the API (and the sandbox) want all three fields
      local err = fails("http", client:update_message_status("msg_demo_1", { status = "failed", error = { code = "1" } }))
      assert.equals(422, err.status)
      assert.equals("table", type(err.body.message))
      assert.is_true(#err.body.message >= 2)
      assert.equals(table.concat(err.body.message, "; "), err.message)
      assert.is_truthy(err.message:find("error.type", 1, true))
      assert.equals("Unprocessable Entity", err.body.error)
    end)

    it("422 with a message array, exact", function()
      sb:fault { method = "POST", path = "/conversations/messages", status = 422, body = {
        statusCode = 422, message = { "type must be one of the following values: SMS", "contactId should not be empty" },
        error = "Unprocessable Entity" } }
      local err = fails("http", client:send_message { type = "SMS", contactId = "c", message = "x" })
      assert.equals("type must be one of the following values: SMS; contactId should not be empty", err.message)
      assert.is_truthy(tostring(err):find("HTTP 422", 1, true))
    end)

    it("a redirect is not followed: the token never goes to another address", function()
      local elsewhere = "http://127.0.0.1:" .. sb.port .. "/conversations/conv_demo_1"
      sb:fault { method = "GET", path = "/conversations/messages/msg_demo_1", status = 301,
        headers = { Location = elsewhere }, body = "" }
      local err = fails("http", client:get_message("msg_demo_1"))
      assert.equals(301, err.status)
      local reqs = sb:requests()
      assert.equals(1, #reqs)
      assert.equals("/conversations/messages/msg_demo_1", reqs[1].path)
    end)

    it("trace id from the body or from a header", function()
      sb:fault { method = "GET", path = "/conversations/messages/msg_demo_1", status = 400,
        body = { statusCode = 400, message = "bad", traceId = "trace-abc-123" } }
      local err = fails("http", client:get_message("msg_demo_1"))
      assert.equals("trace-abc-123", err.trace_id)
      assert.is_truthy(tostring(err):find("trace-abc-123", 1, true))
      sb:fault { method = "GET", path = "/conversations/messages/msg_demo_1", status = 409,
        headers = { ["X-Request-Id"] = "req-42" } }
      err = fails("http", client:get_message("msg_demo_1"))
      assert.equals("req-42", err.trace_id)
    end)

    it("the API's message with newlines still gives one line", function()
      sb:fault { method = "GET", path = "/conversations/messages/msg_demo_1", status = 400,
        body = { statusCode = 400, message = "first line\nsecond line\r\n" .. ("x"):rep(5000) } }
      local err = fails("http", client:get_message("msg_demo_1"))
      assert.is_truthy(err.message:find("\n", 1, true)) -- the field keeps the API's words
      assert.is_truthy(tostring(err):find("first line second line", 1, true))
    end)
  end)

  describe("server", function()
    it("500 with a JSON body, not retried for a send", function()
      sb:fault { method = "POST", path = "/conversations/messages", status = 500, count = -1 }
      local err = fails("server", client:send_message({ type = "SMS", contactId = "c", message = "x" }, { max_retries = 3 }))
      assert.equals(500, err.status)
      assert.equals("Internal Server Error", err.message)
      assert.equals(500, err.body.statusCode)
      assert.equals(1, err.attempts)
      assert.equals(1, #sb:requests())
    end)

    it("502 from a proxy, in HTML", function()
      sb:fault { method = "GET", path = "/conversations/conv_demo_1", action = "html502" }
      local err = fails("server", client:get_conversation("conv_demo_1"))
      assert.equals(502, err.status)
      assert.equals("string", type(err.body))
      assert.is_truthy(err.body:find("<title>502 Bad Gateway</title>", 1, true))
      assert.is_truthy(tostring(err):find("HTTP 502", 1, true))
    end)

    it("503 on a read is retried; each attempt counted", function()
      sb:fault { method = "GET", path = "/conversations/conv_demo_1", status = 503, count = -1 }
      local err = fails("server", client:get_conversation("conv_demo_1", { max_retries = 2 }))
      assert.equals(503, err.status)
      assert.equals(3, err.attempts)
      assert.equals(3, #sb:requests())
      assert.is_truthy(tostring(err):find("3 attempts", 1, true))
    end)
  end)

  describe("decode", function()
    it("malformed JSON in a 200", function()
      sb:fault { method = "GET", path = "/conversations/messages/msg_demo_1", action = "malformed", after = true }
      local err = fails("decode", client:get_message("msg_demo_1"))
      assert.equals(200, err.status)
      assert.equals("string", type(err.body))
      assert.is_truthy(err.body:find('"id":', 1, true) or err.body:find("{", 1, true))
    end)

    it("malformed JSON in a 201 send", function()
      sb:fault { method = "POST", path = "/conversations/messages", action = "malformed" }
      local err = fails("decode", client:send_message { type = "SMS", contactId = "c", message = "x" })
      assert.equals(201, err.status)
    end)

    it("an empty 201 on a send", function()
      sb:fault { method = "POST", path = "/conversations/messages", action = "empty201" }
      local err = fails("decode", client:send_message({ type = "SMS", contactId = "c", message = "x" }, { max_retries = 2 }))
      assert.equals(201, err.status)
      assert.is_truthy(err.message:find("messageId", 1, true))
      assert.equals(1, err.attempts)
      assert.equals(1, #sb:requests())
    end)

    it("a 2xx send answer without messageId", function()
      sb:fault { method = "POST", path = "/conversations/messages", status = 201,
        body = { conversationId = "conv_x", msg = "queued" } }
      local err = fails("decode", client:send_message { type = "SMS", contactId = "c", message = "x" })
      assert.equals(201, err.status)
      assert.equals("conv_x", err.body.conversationId)
      assert.is_truthy(err.message:find("messageId", 1, true))
    end)

    it("a 200 status update without messageId, an empty messageId", function()
      sb:fault { method = "PUT", path = "/conversations/messages/msg_demo_2/status", status = 200,
        body = { conversationId = "conv_demo_1", messageId = "" } }
      local err = fails("decode", client:update_message_status("msg_demo_2", { status = "read" }))
      assert.equals(200, err.status)
    end)

    it("a 200 that is not a message", function()
      sb:fault { method = "GET", path = "/conversations/messages/msg_demo_1", status = 200, body = { ok = true } }
      fails("decode", client:get_message("msg_demo_1"))
      sb:fault { method = "GET", path = "/conversations/conv_demo_1", status = 200, body = "[1,2]",
        content_type = "application/json" }
      fails("decode", client:get_conversation("conv_demo_1"))
    end)

    it("an answer larger than max_response_size", function()
      local c = lch.client(sb, { max_response_size = 64, rate_limit = false })
      local err = fails("decode", c:get_message("msg_demo_3"))
      c:close()
      assert.is_truthy(err.message:find("max_response_size", 1, true))
    end)
  end)

  it("the token is in no error seen above, in no field at any depth", function()
    assert.is_true(#all_errors >= 30)
    for _, err in ipairs(all_errors) do
      assert.is_nil(lch.find_in(err, TOKEN))
      assert.is_nil(lch.find_in(err, BAD_TOKEN))
      assert.is_nil(tostring(err):find(TOKEN, 1, true))
    end
    assert.is_nil(tostring(client):find(TOKEN, 1, true))
    assert.is_nil(lch.find_in(client:rate_limit(), TOKEN))
  end)

  it("a bad token is not echoed by leadconnector.new", function()
    for _, t in ipairs { "SECRET\r\nX: y", "SECRET value", "SECRET\0" } do
      local c, err = leadconnector.new { token = t, base_url = sb.url }
      assert.is_nil(c)
      check(err, "invalid")
    end
  end)
end)

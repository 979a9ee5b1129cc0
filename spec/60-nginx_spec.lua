--[[ spec/60-nginx_spec.lua -- the library inside a real nginx (Debian's nginx + libnginx-mod-http-lua, LuaJIT):
the ngx transport on cosockets against the sandbox, compared with the libcurl transport in plain Lua.

nginx runs from its own temporary prefix (spec/nginx/nginx.conf filled in), one worker, 127.0.0.1 only, and is
stopped in lazy_teardown whatever happened; a watcher also stops it if this process dies.
Tagged lua54only (nginx brings its own LuaJIT: running this under the LuaJIT suite would test nothing new) and slow
(the ASan and valgrind runs of the C core in this process add nothing here either).
]]
local helpers = require "helpers"
local read_file, write_file, sh = helpers.read_file, helpers.write_file, helpers.sh
local socket = require "socket"
local cjson = require "cjson"
local t = require "nginx.t"

local ns = require "nginx.server"
local start_nginx, nginx_pids, q = ns.start, ns.pids, ns.q
---------------------------------------------------------------------------------------------------------------------

local function plain_run(sb, spec)
  return t.run(spec, { token = sb.token, base_url = sb.url, retry_base = 0.01, retry_cap = 0.05 })
end

-- Asserts that two describe() outcomes are the same, for everything that does not depend on the transport.
local function same_outcome(a, b, what)
  assert.are.equal(b.ok, a.ok, what .. ": ok")
  if a.ok then
    assert.are.equal(b.typeof, a.typeof, what .. ": typeof")
    assert.are.equal(b.lua_type, a.lua_type, what .. ": Lua type")
    if a.typeof then
      assert.are.equal(b.tostring, a.tostring, what .. ": tostring")
      assert.are.same(b.fields, a.fields, what .. ": fields")
    end
  else
    for _, k in ipairs { "is_error", "kind", "status", "request_sent", "field", "attempts", "body_type", "method",
      "path", "retry_after" } do
      assert.are.same(b[k], a[k], what .. ": " .. k)
    end
  end
end

local function keys(tbl)
  local out = {}
  for k, v in pairs(tbl or {}) do out[#out + 1] = k .. ":" .. type(v) end
  table.sort(out)
  return out
end

describe("inside nginx (ngx transport on cosockets) #lua54only #nginx #slow", function()
  local sb, nx

  lazy_setup(function()
    -- more tokens for the 429 test: the rate limiter each 429 arms is per token
    sb = helpers.start_sandbox { rate_limit = false, tokens = { "sandbox-token", "limited-1", "limited-2", "limited-3",
      "limited-4" } }
    nx = start_nginx(sb)
  end)

  lazy_teardown(function()
    if nx then nx:stop() end
    if sb then sb:stop() end
  end)

  before_each(function()
    sb:reset()
  end)

  it("the catalogue's other operations on cosockets: DELETE, a multipart upload, raw bytes, a nested page", function()
    local ops = require "opshelpers"
    local answers = {
      { status = 200, body = '{"uploadedFiles":{"a.txt":"https://cdn/a.txt"}}' },
      { status = 200, body = "RIFF\0\1wav", headers = { ["Content-Type"] = "audio/x-wav" } },
      { status = 200, body = '{"messages":{"lastMessageId":"m2","nextPage":false,' ..
        '"messages":[{"id":"m1","body":"a"},{"id":"m2","body":"b"}]}}' },
      { status = 200, body = '{"success":true}' },
    }
    local calls = {
      { "upload_attachments", { conversationId = "c1", contactId = "ct1", locationId = "l1", attachmentUrls = { "u1" } },
        { { name = "a.txt", content = "hello\r\nworld", content_type = "text/plain" }, { name = "b.bin", content = "\0\255" } } },
      { "get_message_recording", "l1", "m1" },
      { "get_messages", "c1", { limit = 2 } },
      { "delete_conversation", "c 1" },
    }
    local s1, s2 = ops.server(answers), ops.server(answers)
    local in_ngx = nx:json("POST", "/call", { client = { base_url = s1.url, max_retries = 0 }, calls = calls })
    local plain = t.run({ calls = calls }, { token = sb.token, base_url = s2.url, max_retries = 0 })
    local r1, r2 = s1:requests(), s2:requests()
    s1:stop()
    s2:stop()
    assert.are.equal("ngx", in_ngx.transport)
    for i = 1, #calls do
      assert.is_true(in_ngx.results[i].ok, calls[i][1] .. ": " .. tostring(in_ngx.results[i].tostring))
      same_outcome(in_ngx.results[i], plain.results[i], calls[i][1])
      assert.are.same(plain.results[i].fields, in_ngx.results[i].fields, calls[i][1])
    end
    assert.are.equal("audio/x-wav", in_ngx.results[2].fields.content_type)
    assert.are.equal("RIFF\0\1wav", in_ngx.results[2].fields.body)
    assert.are.equal("m2", in_ngx.results[3].fields.lastMessageId)
    assert.are.equal(4, #r1)
    for i = 1, 4 do
      assert.are.equal(r2[i].method, r1[i].method)
      assert.are.equal(r2[i].target, r1[i].target)
    end
    assert.are.equal("DELETE", r1[4].method)
    assert.are.equal("/conversations/c%201", r1[4].target)
    -- the same multipart body on both transports, up to the boundary
    local p1 = ops.parse_multipart(r1[1].body, r1[1].headers["content-type"])
    local p2 = ops.parse_multipart(r2[1].body, r2[1].headers["content-type"])
    assert.are.same(p2, p1)
    assert.are.equal(#r1[1].body, tonumber(r1[1].headers["content-length"]))
    local files = {}
    for _, part in ipairs(p1) do if part.filename then files[#files + 1] = part end end
    assert.are.equal(2, #files)
    assert.are.equal("hello\r\nworld", files[1].data)
    assert.are.equal("\0\255", files[2].data)
  end)

  it("gives the four calls' results, userdata and errors exactly as the libcurl transport does", function()
    local spec = {
      calls = {
        { "get_message", "msg_demo_1" },
        { "get_message", "msg_demo_3" },
        { "get_conversation", "conv_demo_3" },
        { "update_message_status", "msg_demo_2", { status = "read" } },
        { "get_message", "msg_demo_2" },
        { "get_message", "no_such_message" },
        { "get_conversation", "no_such_conversation" },
        { "send_message", { type = "SMS", contactId = "contact_demo_1", message = "hello from nginx" } },
        { "send_message", { type = "Email", contactId = "contact_demo_2", subject = "s", html = "<p>x</p>",
          emailCc = {} } },
        { "send_message", { type = "Pigeon", contactId = "contact_demo_1" } },
        { "get_message", "" },
        { "update_message_status", "msg_demo_1", { status = "lost" } },
      },
    }
    local in_ngx = nx:json("POST", "/call", spec)
    sb:reset()
    local plain = plain_run(sb, spec)
    assert.are.equal("ngx", in_ngx.transport)
    assert.are.equal("curl", plain.transport)
    assert.are.equal(#spec.calls, #in_ngx.results)
    for i, call in ipairs(spec.calls) do
      local a, b = in_ngx.results[i], plain.results[i]
      local what = call[1] .. " #" .. i
      if call[1] == "send_message" and a.ok then
        assert.is_true(b.ok, what)
        assert.are.same(keys(b.fields), keys(a.fields), what .. ": fields")
      else
        same_outcome(a, b, what)
        if not a.ok then assert.are.equal(b.tostring, a.tostring, what .. ": tostring") end
      end
    end
    -- and what they are
    assert.are.equal("Message", in_ngx.results[1].typeof)
    assert.are.equal("userdata", in_ngx.results[1].lua_type)
    assert.are.equal("msg_demo_1", in_ngx.results[1].id)
    assert.are.equal("Conversation", in_ngx.results[3].typeof)
    assert.are.equal("read", in_ngx.results[5].fields.status)
    assert.are.equal("not_found", in_ngx.results[6].kind)
    assert.are.equal(404, in_ngx.results[6].status)
    assert.are.equal("not_found", in_ngx.results[7].kind)
    assert.is_true(in_ngx.results[8].ok)
    assert.are.equal("invalid", in_ngx.results[10].kind)
    assert.is_false(in_ngx.results[10].request_sent)
  end)

  it("answers auth errors (401), timeouts and refused connections like the libcurl transport", function()
    local function both(spec, fault)
      if fault then sb:fault(fault) end
      local a = nx:json("POST", "/call", spec)
      if fault then sb:fault(fault) end
      local b = plain_run(sb, spec)
      return a.results[1], b.results[1]
    end
    -- 401
    local a, b = both { client = { token = "wrong-token-SECRET" }, calls = { { "get_message", "msg_demo_1" } } }
    same_outcome(a, b, "401")
    assert.are.equal(b.tostring, a.tostring)
    assert.are.equal("auth", a.kind)
    assert.are.equal(401, a.status)
    assert.is_nil(a.tostring:find("SECRET", 1, true))
    -- timeout: the sandbox holds the answer longer than the client's timeout
    a, b = both({ client = { timeout = 0.3, max_retries = 0 }, calls = { { "get_conversation", "conv_demo_1" } } },
      { method = "GET", path = "/conversations/conv_demo_1", count = 1, delay_ms = 1500 })
    same_outcome(a, b, "timeout")
    assert.are.equal("timeout", a.kind)
    assert.is_nil(a.status)
    assert.is_true(a.request_sent)
    -- refused: nothing listens there
    local dead = "http://127.0.0.1:" .. helpers.free_port()
    a, b = both { client = { base_url = dead, max_retries = 0 }, calls = { { "get_message", "msg_demo_1" } } }
    same_outcome(a, b, "refused")
    assert.are.equal("network", a.kind)
    assert.is_nil(a.status)
    assert.is_false(a.request_sent)
    -- a refused send is retried (it provably never left) and still fails the same way
    a, b = both { client = { base_url = dead, max_retries = 1 },
      calls = { { "send_message", { type = "SMS", contactId = "c", message = "m" } } } }
    same_outcome(a, b, "refused send")
    assert.are.equal(2, a.attempts)
  end)

  it("classifies broken answers and the size cap like the libcurl transport", function()
    local cases = {
      { fault = { method = "GET", path = "/conversations/messages/msg_demo_1", action = "malformed" },
        call = { "get_message", "msg_demo_1" }, kind = "decode" },
      { fault = { method = "GET", path = "/conversations/messages/msg_demo_1", action = "html502" },
        call = { "get_message", "msg_demo_1" }, kind = "server", client = { max_retries = 0 } },
      { fault = { method = "POST", path = "/conversations/messages", action = "empty201" },
        call = { "send_message", { type = "SMS", contactId = "contact_demo_1", message = "x" } }, kind = "decode" },
      { fault = { method = "GET", path = "/conversations/conv_demo_1", status = 422,
        body = { statusCode = 422, message = { "a", "b" }, error = "Unprocessable Entity" } },
        call = { "get_conversation", "conv_demo_1" }, kind = "http" },
      { call = { "get_conversation", "conv_demo_1" }, kind = "decode", client = { max_response_size = 40 } },
      { call = { "get_message", "no_such_message" }, kind = "not_found", client = { max_response_size = 5 } },
    }
    for i, c in ipairs(cases) do
      local spec = { client = c.client, calls = { c.call } }
      if c.fault then sb:fault(c.fault) end
      local a = nx:json("POST", "/call", spec).results[1]
      if c.fault then sb:fault(c.fault) end
      local b = plain_run(sb, spec).results[1]
      same_outcome(a, b, "case " .. i)
      assert.are.equal(b.tostring, a.tostring, "case " .. i)
      assert.are.equal(c.kind, a.kind, "case " .. i)
    end
  end)

  it("reads chunked and connection-delimited answers under a base URL with a path, like libcurl", function()
    for _, kind in ipairs { "chunked", "unframed" } do
      local spec = { client = { base_url = "http://127.0.0.1:" .. nx.port .. "/" .. kind },
        calls = { { "get_message", "msg_pieces" }, { "get_message", "big" } } }
      local a = nx:json("POST", "/call", spec)
      local b = plain_run(sb, spec)
      same_outcome(a.results[1], b.results[1], kind)
      assert.are.equal("msg_pieces", a.results[1].id, kind)
      assert.are.equal("in pieces", a.results[1].fields.body, kind)
      same_outcome(a.results[2], b.results[2], kind .. " big")
      assert.are.equal(65 * 1024 > #a.results[2].fields.body and 64 * 1024 <= #a.results[2].fields.body, true)
      -- the same answers past max_response_size
      spec.client.max_response_size = 1000
      a = nx:json("POST", "/call", spec)
      b = plain_run(sb, spec)
      assert.is_true(a.results[1].ok, kind)
      same_outcome(a.results[2], b.results[2], kind .. " capped")
      assert.are.equal("decode", a.results[2].kind)
      assert.are.equal(200, a.results[2].status)
    end
  end)

  it("reads Retry-After (seconds or an HTTP date), X-RateLimit-* and trace ids like libcurl", function()
    for i, ra in ipairs { "3", os.date("!%a, %d %b %Y %H:%M:%S GMT", os.time() + 4) } do
      local fault = { method = "GET", path = "/conversations/conv_demo_1", status = 429,
        headers = { ["Retry-After"] = ra, ["X-Trace-Id"] = "trace-429" } }
      local spec = { client = { max_retries = 0, token = "limited-" .. i },
        calls = { { "get_conversation", "conv_demo_1" } } }
      sb:fault(fault)
      local a = nx:json("POST", "/call", spec).results[1]
      sb:fault(fault)
      local b = plain_run(sb, spec).results[1]
      assert.are.equal("rate_limited", a.kind)
      assert.are.equal(b.kind, a.kind)
      assert.are.equal("trace-429", a.trace_id)
      assert.are.equal(b.trace_id, a.trace_id)
      assert.is_number(a.retry_after, ra)
      assert.is_true(math.abs(a.retry_after - b.retry_after) <= 1.5, ra .. ": " .. a.retry_after .. " vs " ..
        b.retry_after)
      assert.is_true(a.retry_after >= 1 and a.retry_after <= 4, ra .. ": " .. a.retry_after)
    end
  end)

  it("runs client:batch concurrently on cosockets, with the libcurl transport's results", function()
    local calls = {
      { "get_message", "msg_demo_1" }, { "get_message", "msg_demo_2" }, { "get_message", "msg_demo_3" },
      { "get_conversation", "conv_demo_2" }, { "get_message", "no_such_message" }, { "get_message", "" },
      { "update_message_status", "msg_demo_4", { status = "read" } },
    }
    local spec = { calls = { { "batch", calls, { concurrency = 3 } } } }
    local a = nx:json("POST", "/call", spec).results[1]
    sb:reset()
    local b = plain_run(sb, spec).results[1]
    assert.are.equal(#calls, #a.batch)
    for i = 1, #calls do same_outcome(a.batch[i], b.batch[i], "batch #" .. i) end
    assert.are.equal("msg_demo_3", a.batch[3].id)
    assert.are.equal("not_found", a.batch[5].kind)
    assert.are.equal("invalid", a.batch[6].kind)
    -- three answers each delayed 0.6 s, three at once: well under the 1.8 s one after another would take
    for _, id in ipairs { "msg_demo_1", "msg_demo_2", "msg_demo_3" } do
      sb:fault { method = "GET", path = "/conversations/messages/" .. id, delay_ms = 600 }
    end
    a = nx:json("POST", "/call", { calls = { { "batch", { calls[1], calls[2], calls[3] }, { concurrency = 3 } } } })
      .results[1]
    for i = 1, 3 do assert.is_true(a.batch[i].ok) end
    assert.is_true(a.seconds < 1.2, "the batch took " .. a.seconds .. " s")
  end)

  it("reads hostile header values and redacts an echoed token exactly like libcurl", function()
    local cases = {
      { headers = { ["Retry-After"] = " 7 " } }, { headers = { ["Retry-After"] = "1e999" } },
      { headers = { ["Retry-After"] = "0x10" } }, { headers = { ["Retry-After"] = "-5" } },
      { headers = { ["Retry-After"] = "2.5", ["X-RateLimit-Remaining"] = "0x10", ["X-RateLimit-Max"] = "1e3",
        ["X-RateLimit-Limit-Daily"] = "18446744073709551616", ["X-RateLimit-Daily-Remaining"] = "inf",
        ["X-RateLimit-Interval-Milliseconds"] = " 1500 " } },
      { status = 401, body = { statusCode = 401, message = "Invalid token: limited-4 is not valid" } },
      { status = 502, body = "<html>bad gateway for Bearer limited-4</html>", content_type = "text/html" },
    }
    for i, c in ipairs(cases) do
      local fault = { method = "GET", path = "/conversations/conv_demo_2", status = c.status or 429,
        headers = c.headers, body = c.body, content_type = c.content_type }
      local spec = { client = { max_retries = 0, token = "limited-4", rate_limit = false },
        calls = { { "get_conversation", "conv_demo_2" }, { "rate_limit" } } }
      sb:fault(fault)
      local a = nx:json("POST", "/call", spec).results
      sb:fault(fault)
      local b = plain_run(sb, spec).results
      same_outcome(a[1], b[1], "case " .. i)
      assert.are.equal(b[1].tostring, a[1].tostring, "case " .. i)
      assert.are.equal(b[1].message, a[1].message, "case " .. i)
      a[2].fields.wait, b[2].fields.wait = nil, nil
      -- numbers crossed nginx's cjson (14 significant digits): equal to that precision
      assert.are.same(keys(b[2].fields), keys(a[2].fields), "case " .. i .. ": rate_limit()")
      for k, v in pairs(b[2].fields) do
        assert.is_true(math.abs(a[2].fields[k] - v) <= math.abs(v) * 1e-13, "case " .. i .. ": rate_limit()." .. k)
      end
      assert.is_nil(cjson.encode(a):find("limited-4", 1, true), "case " .. i)
      if c.status == 401 then assert.are.equal("Invalid token: [REDACTED] is not valid", a[1].message) end
    end
  end)

  it("sends the same headers as the libcurl transport", function()
    local spec = { calls = { { "get_message", "msg_demo_1" },
      { "send_message", { type = "SMS", contactId = "contact_demo_1", message = "headers" } } } }
    sb:clear_requests()
    nx:json("POST", "/call", spec)
    local from_ngx = sb:requests()
    sb:clear_requests()
    plain_run(sb, spec)
    local from_curl = sb:requests()
    assert.are.equal(2, #from_ngx)
    assert.are.equal(2, #from_curl)
    for i = 1, 2 do
      local hn, hc = from_ngx[i].headers, from_curl[i].headers
      assert.are.same(keys(hc), keys(hn))
      for k, v in pairs(hc) do
        if k == "user-agent" then
          assert.matches("^leadconnector%-lua/%S+ %(LuaJIT 2%.1", hn[k])
        else
          assert.are.equal(v, hn[k], k)
        end
      end
      assert.are.equal("Bearer [redacted]", hn.authorization)
      assert.are.equal("2021-04-15", hn.version)
      assert.are.equal("application/json", hn.accept)
      assert.are.equal(from_curl[i].method, from_ngx[i].method)
      assert.are.equal(from_curl[i].path, from_ngx[i].path)
    end
    assert.are.equal("application/json", from_ngx[2].headers["content-type"])
    assert.is_nil(from_ngx[1].headers["content-type"])
  end)

  it("reuses one pooled connection across calls (getreusedtimes grows)", function()
    local r = nx:json("GET", "/reuse?n=6")
    assert.are.equal(6, r.ok_calls)
    assert.matches("^leadconnector:http:127%.0%.0%.1:%d+$", r.pool)
    for i = 2, #r.reused do
      assert.is_true(r.reused[i] > r.reused[i - 1], "reused times must grow: " .. cjson.encode(r.reused))
    end
    assert.is_true(r.reused[1] >= 1)
  end)

  it("keeps separate pools per host, port and TLS settings", function()
    local p = nx:json("GET", "/pools")
    local seen = {}
    for _, name in ipairs(p) do
      assert.is_nil(seen[name], "pool names must differ: " .. cjson.encode(p))
      seen[name] = true
    end
  end)

  it("does not block the nginx worker while an answer is delayed (a libcurl call there would)", function()
    sb:fault { method = "GET", path = "/conversations/messages/msg_demo_4", delay_ms = 2000 }
    local wait_slow = nx:start_request("GET", "/slow?transport=ngx&id=msg_demo_4")
    socket.sleep(0.3) -- the slow request is now waiting on the sandbox
    local status, body, seconds = nx:get("/fast")
    assert.are.equal(200, status)
    assert.are.equal("fast\n", body)
    assert.is_true(seconds < 0.1, ("a second request took %.3f s while the first waited"):format(seconds))
    local s2, b2, total = wait_slow()
    assert.are.equal(200, s2)
    local r = cjson.decode(b2)
    assert.are.equal("ngx", r.transport)
    assert.is_true(r.result.ok)
    assert.are.equal("msg_demo_4", r.result.id)
    assert.is_true(total >= 1.9, "the slow answer came after " .. total)

    -- The same with the blocking transport: the probe notices (so the check above can fail).
    sb:fault { method = "GET", path = "/conversations/messages/msg_demo_4", delay_ms = 1500 }
    wait_slow = nx:start_request("GET", "/slow?transport=curl&id=msg_demo_4")
    socket.sleep(0.3)
    status, body, seconds = nx:get("/fast")
    assert.are.equal(200, status)
    assert.is_true(seconds > 0.8, ("with libcurl the worker was free after %.3f s?"):format(seconds))
    s2 = wait_slow()
    assert.are.equal(200, s2)
  end)

  it("works in access, rewrite and ngx.timer phases", function()
    for _, ph in ipairs { "access", "rewrite" } do
      local r = nx:json("GET", "/" .. ph)
      assert.are.equal(ph, r.phase)
      assert.are.equal("ngx", r.transport)
      assert.is_true(r.result.ok, ph)
      assert.are.equal("Conversation", r.result.typeof)
      assert.are.equal("conv_demo_1", r.result.id)
    end
    local r = nx:json("GET", "/timer")
    assert.are.equal("timer", r.phase)
    assert.are.equal("ngx", r.transport)
    assert.is_true(r.result.ok)
    assert.are.equal("msg_demo_2", r.result.id)
  end)

  it("in init_by_lua: the default client calls with libcurl there and with cosockets in requests", function()
    local r = nx:json("GET", "/init_client")
    local init = r.phases.init
    assert.are.equal("init", init.phase)
    assert.are.equal("ngx", init.transport)
    assert.is_true(init.default_call.ok)
    assert.are.equal("conv_demo_2", init.default_call.id)
    -- transport = "ngx" chosen explicitly: a clear error, nothing sent
    assert.are.equal("invalid", init.explicit_ngx_call.kind)
    assert.is_false(init.explicit_ngx_call.request_sent)
    assert.matches("cosockets are not available in the init phase", init.explicit_ngx_call.message, 1, true)
    assert.are.equal("invalid", r.phases.init_worker.explicit_ngx_call.kind)
    assert.matches("init_worker phase", r.phases.init_worker.explicit_ngx_call.message, 1, true)
    -- the client made in init_by_lua, used in a request
    assert.are.equal("ngx", r.transport)
    assert.is_true(r.result.ok)
    assert.are.equal("msg_demo_3", r.result.id)
  end)

  it("in set_by_lua and log_by_lua: a clear error instead of blocking; a timer from log_by_lua works", function()
    local status, body = nx:get("/set")
    assert.are.equal(200, status)
    local r = cjson.decode(body)
    assert.are.equal("set", r.phase)
    assert.are.equal("invalid", r.result.kind)
    assert.is_false(r.result.request_sent)
    assert.matches("cosockets are not available in the set phase", r.result.message, 1, true)

    assert.are.equal(200, (nx:get("/log")))
    local seen
    for _ = 1, 100 do
      seen = nx:json("GET", "/log_results")
      if seen.timer then break end
      socket.sleep(0.02)
    end
    assert.are.equal("log", seen.direct.phase)
    assert.are.equal("invalid", seen.direct.result.kind)
    assert.matches("log phase", seen.direct.result.message, 1, true)
    assert.is_true(seen.timer.ok)
    assert.are.equal("msg_demo_1", seen.timer.id)
  end)

  it("retries with ngx.sleep: a 503 then success, the worker free during the Retry-After wait", function()
    local path = "/conversations/messages/msg_demo_1"
    sb:clear_requests()
    sb:fault { method = "GET", path = path, count = 1, status = 503, headers = { ["Retry-After"] = "1" } }
    local wait_retry = nx:start_request("GET", "/retry")
    socket.sleep(0.3)
    local status, _, seconds = nx:get("/fast")
    assert.are.equal(200, status)
    assert.is_true(seconds < 0.1, ("a request took %.3f s during the retry wait"):format(seconds))
    local s2, b2 = wait_retry()
    assert.are.equal(200, s2)
    local r = cjson.decode(b2)
    assert.is_true(r.result.ok)
    assert.are.equal("msg_demo_1", r.result.id)
    assert.is_true(r.seconds >= 0.9, "Retry-After was not honoured: " .. r.seconds)
    local gets = 0
    for _, e in ipairs(sb:requests()) do
      if e.method == "GET" and e.path == path then gets = gets + 1 end
    end
    assert.are.equal(2, gets)
  end)

  it("waits on the rate limiter with ngx.sleep instead of sending into a 429, the worker free meanwhile", function()
    sb:config { rate_limit = 2, rate_interval_ms = 1500 }
    local ok, err = pcall(function()
      local spec = { client = { token = "limited-3" }, calls = {
        { "get_message", "msg_demo_1" }, { "get_message", "msg_demo_2" }, { "get_message", "msg_demo_3" } } }
      local wait = nx:start_request("POST", "/call", cjson.encode(spec))
      socket.sleep(0.4) -- two calls done, the third waiting for the next window
      local status, _, seconds = nx:get("/fast")
      assert.are.equal(200, status)
      assert.is_true(seconds < 0.1, ("a request took %.3f s during the rate-limit wait"):format(seconds))
      local s2, body, total = wait()
      assert.are.equal(200, s2)
      local r = cjson.decode(body)
      for i = 1, 3 do assert.is_true(r.results[i].ok, cjson.encode(r.results[i])) end
      assert.is_true(total >= 1.2, "the third call did not wait for the window: " .. total)
    end)
    sb:config { rate_limit = false }
    assert(ok, err)
  end)

  it("talks TLS with verification and SNI (lua_ssl_trusted_certificate), refusing a wrong certificate", function()
    local base = "https://127.0.0.1:" .. nx.tls_port
    local r = nx:json("POST", "/call", { client = { base_url = base },
      calls = { { "get_message", "msg_demo_5" }, { "get_conversation", "conv_demo_3" } } })
    assert.is_true(r.results[1].ok, cjson.encode(r.results[1]))
    assert.are.equal("msg_demo_5", r.results[1].id)
    assert.are.equal("conv_demo_3", r.results[2].id)
    -- a certificate for another name
    local bad = "https://127.0.0.1:" .. nx.tls_bad_port
    r = nx:json("POST", "/call", { client = { base_url = bad, max_retries = 0 },
      calls = { { "get_message", "msg_demo_5" } } })
    assert.are.equal("network", r.results[1].kind)
    assert.is_false(r.results[1].request_sent)
    assert.matches("TLS handshake", r.results[1].message, 1, true)
    -- verify = false accepts it (separate pool)
    r = nx:json("POST", "/call", { client = { base_url = bad, verify = false },
      calls = { { "get_message", "msg_demo_5" } } })
    assert.is_true(r.results[1].ok, cjson.encode(r.results[1]))
  end)

  it("refuses options cosockets cannot honour (proxy, ca_file) with invalid errors", function()
    for _, o in ipairs { { proxy = "http://127.0.0.1:3128" }, { ca_file = "/etc/ssl/certs/ca-certificates.crt" } } do
      local r = nx:json("POST", "/call", { client = o, calls = {} })
      assert.are.equal("invalid", r.new_error.kind)
      assert.are.equal(next(o), r.new_error.field)
    end
    -- and outside nginx, transport = "ngx" says where it works
    local out = plain_run(sb, { client = { transport = "ngx" }, calls = {} })
    assert.are.equal("invalid", out.new_error.kind)
    assert.matches("only inside nginx", out.new_error.message, 1, true)
  end)

  it("stops cleanly: no nginx process left, and the token never reached nginx's log", function()
    local prefix = nx.prefix
    assert.is_true(#nginx_pids(prefix) >= 2) -- master and worker
    nx:stop()
    assert.are.same({}, nginx_pids(prefix))
    assert.is_false(helpers.alive(nx.watcher))
    assert.is_nil(read_file(prefix .. "/nginx.conf"))
    assert.is_true(#nx.final_log > 0)
    assert.is_nil(nx.final_log:find(sb.token, 1, true))
    assert.is_nil(nx.final_log:find("SECRET", 1, true))
  end)
end)

-- Issue 10: misbehaving servers (spec/faultserver.lua, another process) against the cosocket transport, each case
-- also run against the libcurl transport in plain Lua where the two must agree.
describe("issue 10 inside nginx: bounded time and memory, close in flight #lua54only #nginx #slow", function()
  local fs = require "faultserver"
  local sb, nx
  lazy_setup(function()
    sb = helpers.start_sandbox { rate_limit = false }
    nx = start_nginx(sb)
  end)
  lazy_teardown(function()
    if nx then nx:stop() end
    if sb then sb:stop() end
  end)
  local SEND = { "send_message", { type = "SMS", contactId = "c_t10", message = "bounded" } }
  local function both(srv, client)
    client.base_url, client.token = srv.url, "t10-token"
    client.rate_limit, client.max_retries = false, client.max_retries or 0
    local spec = { client = client, calls = { SEND } }
    local ngx_r = nx:json("POST", "/call", spec).results[1]
    local curl_r = t.run(spec, {}).results[1]
    return ngx_r, curl_r
  end

  for _, mode in ipairs { "trickle_head", "trickle_body" } do
    it(mode .. ": timeout = 2, deadline = 4 end the call by 2 s on both transports (one byte every 0.25 s)", function()
      local srv = fs.start(mode, 250)
      local a, b = both(srv, { timeout = 2, deadline = 4 })
      srv:stop()
      for name, r in pairs { ngx = a, curl = b } do
        assert.is_false(r.ok, name)
        assert.are.equal("timeout", r.kind, name .. ": " .. tostring(r.message))
        assert.is_true(r.request_sent, name)
        assert.is_true(r.seconds < 2.8, name .. " took " .. r.seconds .. " s")
      end
    end)
  end

  it("a 200 MB status line with no newline: refused at 64 KiB, the worker's memory stays flat", function()
    local before = nx:json("GET", "/t10_rss")
    for _, mode in ipairs { "huge_line", "huge_header" } do
      local srv = fs.start(mode, 200 * 1024 * 1024)
      local a, b = both(srv, { timeout = 10, deadline = 10 })
      srv:stop()
      for name, r in pairs { ngx = a, curl = b } do
        assert.are.equal("network", r.kind, name .. " " .. mode .. ": " .. tostring(r.message))
        -- (libcurl refuses a line past its own 100 KB buffer before its header callback sees it: "Out of memory")
        if name == "ngx" then
          assert.matches("more than 65536 bytes of headers", r.message, 1, true)
        end
        assert.is_true(r.request_sent)
      end
    end
    local after = nx:json("GET", "/t10_rss")
    assert.are.equal(before.pid, after.pid)
    assert.is_true(after.hwm - before.hwm < 32 * 1024, ("peak RSS grew by %d kB"):format(after.hwm - before.hwm))
  end)

  it("the transports agree: HTTP/1.1 000 and 150 KB of headers are broken answers (network), 64 KB pass", function()
    local function raw_file(data)
      local name = os.tmpname()
      write_file(name, data)
      return name
    end
    local body = '{"conversationId":"c","messageId":"m1"}'
    local cases = {
      { "HTTP/1.1 000 Zero\r\nContent-Length: 2\r\n\r\n{}", "network" },
      { "HTTP/1.1 201 Created\r\nX-Big: " .. ("b"):rep(150 * 1024) .. "\r\nContent-Length: " .. #body ..
        "\r\n\r\n" .. body, "network" },
      { "HTTP/1.1 201 Created\r\nX-Big: " .. ("b"):rep(60 * 1024) .. "\r\nContent-Length: " .. #body ..
        "\r\n\r\n" .. body, true },
      { "HTTP/1.1 099 Low\r\nContent-Length: 2\r\n\r\n{}", "network" },
    }
    for i, case in ipairs(cases) do
      local file = raw_file(case[1])
      local srv = fs.start("raw", file)
      local a, b = both(srv, { timeout = 3, deadline = 3 })
      srv:stop()
      os.remove(file)
      for name, r in pairs { ngx = a, curl = b } do
        if case[2] == true then
          assert.is_true(r.ok, name .. " case " .. i .. ": " .. tostring(r.message))
        else
          assert.are.equal(case[2], r.kind, name .. " case " .. i .. ": " .. tostring(r.message))
          assert.is_true(r.request_sent, name .. " case " .. i)
        end
      end
    end
  end)

  it("the transports agree: a 10 MB id is invalid, naming the id, before anything is sent", function()
    local srv = fs.start("ok")
    local huge = { __rep = "i", n = 10 * 1024 * 1024 }
    local a, b = both(srv, { timeout = 3 })
    assert.is_true(a.ok and b.ok) -- the server works
    local spec = { client = { base_url = srv.url, token = "t10-token", rate_limit = false },
      calls = { { "get_message", huge }, { "update_message_status", huge, { status = "read" } } } }
    local ngx_r = nx:json("POST", "/call", spec).results
    local curl_r = t.run(spec, {}).results
    local sent = srv:count("GET") + srv:count("PUT")
    srv:stop()
    for name, r in pairs { ngx = ngx_r, curl = curl_r } do
      for i, field in ipairs { "id", "messageId" } do
        assert.are.equal("invalid", r[i].kind, name)
        assert.are.equal(field, r[i].field, name)
        assert.is_false(r[i].request_sent, name)
        assert.matches("at most 1024 bytes", r[i].message, 1, true)
      end
    end
    assert.are.equal(0, sent)
  end)

  it("client:close() while a call of the same client is in flight: the call returns nil, err", function()
    local srv = fs.start("trickle_head", 200)
    local r = nx:json("GET", "/t10_close?url=" .. srv.url)
    srv:stop()
    assert.is_true(r.thread_ok, tostring(r.result))
    assert.is_false(r.result.ok)
    assert.are.equal("invalid", r.result.kind)
    assert.are.equal("client", r.result.field)
    assert.is_true(r.result.request_sent)
  end)

  it("a send processed, then dropped and refused for 50 ms: stored once on cosockets too", function()
    local srv = fs.start("drop_refuse", 50)
    local spec = { client = { base_url = srv.url, token = "t10-token", rate_limit = false, max_retries = 4,
      retry_base = 0.1, retry_cap = 0.2 }, calls = { SEND, SEND } }
    local r = nx:json("POST", "/call", spec).results
    local stored = srv:count()
    srv:stop()
    assert.is_true(r[1].ok)
    assert.is_false(r[2].ok)
    assert.are.equal("network", r[2].kind)
    assert.is_true(r[2].request_sent)
    assert.are.equal(2, stored)
  end)
end)

describe("issue 10 inside nginx: a client made in init_by_lua, used by 4 forked workers #lua54only #nginx #slow", function()
  local fs = require "faultserver"
  it("every worker's answers are its own (no libcurl handle or connection used across fork)", function()
    local srv = fs.start("ok")
    local nx = start_nginx({ url = srv.url, token = "fork-token" }, "spec/nginx/fork.conf")
    local results = {}
    local deadline = socket.gettime() + 30
    while socket.gettime() < deadline do
      results = {}
      for name in sh("ls " .. q(nx.prefix)):gmatch("fork%-%d+%.json") do
        results[#results + 1] = cjson.decode(read_file(nx.prefix .. "/" .. name))
      end
      if #results >= 4 then break end
      socket.sleep(0.1)
    end
    nx:stop()
    srv:stop()
    assert.are.equal(4, #results)
    for _, r in ipairs(results) do
      assert.are.equal(0, r.wrong, "worker " .. r.pid .. " got another's answers")
      assert.are.equal(40, r.ok, "worker " .. r.pid .. ": " .. cjson.encode(r.errors))
    end
  end)
end)

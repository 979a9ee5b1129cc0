--[[ spec/60-nginx_spec.lua -- the library inside a real nginx (Debian's nginx + libnginx-mod-http-lua, LuaJIT):
the ngx transport on cosockets against the sandbox, compared with the libcurl transport in plain Lua.

nginx runs from its own temporary prefix (spec/nginx/nginx.conf filled in), one worker, 127.0.0.1 only, and is
stopped in lazy_teardown whatever happened; a watcher also stops it if this process dies.
Tagged lua54only (nginx brings its own LuaJIT: running this under the LuaJIT suite would test nothing new) and slow
(the ASan and valgrind runs of the C core in this process add nothing here either).
]]
local helpers = require "helpers"
local read_file, write_file, sh, my_pid = helpers.read_file, helpers.write_file, helpers.sh, helpers.my_pid
local socket = require "socket"
local cjson = require "cjson"
local t = require "nginx.t"

local REPO = (function()
  local p = io.popen("pwd")
  local d = p:read("*l")
  p:close()
  return d
end)()

local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

-- Pids of every process whose command line mentions the prefix (nginx master and worker).
local function nginx_pids(prefix)
  local pids = {}
  for pid in sh("ls /proc"):gmatch("%d+") do
    local cmd = read_file("/proc/" .. pid .. "/cmdline")
    if cmd and cmd:find(prefix, 1, true) and cmd:find("nginx", 1, true) and helpers.alive(pid) then
      pids[#pids + 1] = tonumber(pid)
    end
  end
  return pids
end

---------------------------------------------------------------------------------------------------------------------
-- nginx under test

local Nginx = {}
Nginx.__index = Nginx

local function make_certs(dir)
  local cmds = {
    "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout ca.key -out ca.pem -days 2 " ..
      "-subj /CN=leadconnector-test-ca -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign",
  }
  for _, name in ipairs { "good", "bad" } do
    local san = name == "good" and "subjectAltName=IP:127.0.0.1,DNS:127.0.0.1" or "subjectAltName=DNS:other.example"
    write_file(dir .. "/" .. name .. ".ext", san .. "\n")
    cmds[#cmds + 1] = ("openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout %s.key " ..
      "-out %s.csr -subj /CN=%s && openssl x509 -req -in %s.csr -CA ca.pem -CAkey ca.key -CAcreateserial " ..
      "-out %s.pem -days 2 -extfile %s.ext"):format(name, name, name == "good" and "127.0.0.1" or "other.example",
      name, name, name)
  end
  for _, c in ipairs(cmds) do
    assert(os.execute("cd " .. q(dir) .. " && " .. c .. " >/dev/null 2>&1"), "openssl failed: " .. c)
  end
end

local function start_nginx(sb)
  local prefix = sh("mktemp -d \"${TMPDIR:-/tmp}/lc-nginx-spec.XXXXXX\""):gsub("%s+$", "")
  assert(prefix ~= "")
  os.execute("mkdir -p " .. q(prefix .. "/tmp"))
  local self = setmetatable({ prefix = prefix }, Nginx)
  local ok, err = pcall(function()
    make_certs(prefix)
    self.port, self.tls_port, self.tls_bad_port = helpers.free_port(), helpers.free_port(), helpers.free_port()
    local vars = {
      MODULES = os.getenv("LEADCONNECTOR_NGINX_MODULES") or "/usr/lib/nginx/modules",
      USER = sh("id -u"):match("^0") and "user root;" or "",
      PREFIX = prefix, REPO = REPO, PORT = self.port, TLS_PORT = self.tls_port, TLS_BAD_PORT = self.tls_bad_port,
      SANDBOX_URL = sb.url, TOKEN = sb.token,
    }
    local conf = assert(read_file(REPO .. "/spec/nginx/nginx.conf"))
      :gsub("@([%u_]+)@", function(k) return tostring(assert(vars[k], k)) end)
    write_file(prefix .. "/nginx.conf", conf)
    -- nginx in the foreground of a small shell that also stops it if this process goes away; sanitizer settings
    -- of the test process must not reach nginx.
    local script = ("nginx -p %s -c %s/nginx.conf -e %s/error.log >%s/stderr.log 2>&1 & n=$!; " ..
      "while kill -0 %d 2>/dev/null && [ -e /proc/$n ] && ! grep -q '^[0-9]* ([^)]*) Z' /proc/$n/stat; do sleep 0.3; done; " ..
      "kill -TERM $n 2>/dev/null; wait $n"):format(q(prefix), q(prefix), q(prefix), q(prefix), my_pid())
    self.watcher = tonumber(sh(("env -u LD_PRELOAD -u ASAN_OPTIONS -u LSAN_OPTIONS -u UBSAN_OPTIONS sh -c %s " ..
      ">/dev/null 2>&1 </dev/null & echo $!"):format(q(script))):match("%d+"))
    local deadline = socket.gettime() + 20
    while true do
      local status = self:get("/fast")
      if status == 200 then break end
      if socket.gettime() > deadline or not helpers.alive(self.watcher) then
        error("nginx did not start:\n" .. (read_file(prefix .. "/stderr.log") or "") ..
          (read_file(prefix .. "/error.log") or ""))
      end
      socket.sleep(0.05)
    end
  end)
  if not ok then
    self:stop()
    error(err, 0)
  end
  return self
end

-- status, body of a raw HTTP answer read to the end of the connection (chunked bodies decoded).
local function parse_answer(data)
  local status = tonumber((data or ""):match("^HTTP/1%.%d (%d+)"))
  if not status then return nil, "no answer" end
  local head_end = data:find("\r\n\r\n", 1, true)
  local payload = data:sub(head_end + 4)
  if data:sub(1, head_end):lower():find("transfer%-encoding: chunked") then
    local parts, pos = {}, 1
    while true do
      local size_hex, after = payload:match("^(%x+)[^\r\n]*\r\n()", pos)
      local size = size_hex and tonumber(size_hex, 16)
      if not size or size == 0 then break end
      parts[#parts + 1] = payload:sub(after, after + size - 1)
      pos = after + size + 2
    end
    payload = table.concat(parts)
  end
  return status, payload
end

-- Starts a request (Connection: close) and returns a function that waits for its answer: status, body, seconds
-- since the start.
function Nginx:start_request(method, path, body, timeout)
  local c = socket.tcp()
  c:settimeout(timeout or 30)
  local t0 = socket.gettime()
  local ok, err = c:connect("127.0.0.1", self.port)
  if not ok then
    c:close()
    return function() return nil, err end
  end
  c:send(("%s %s HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s")
    :format(method, path, body and #body or 0, body or ""))
  return function()
    local data, rerr, partial = c:receive("*a")
    c:close()
    local status, payload = parse_answer(data or partial)
    if not status then return nil, rerr or payload end
    return status, payload, socket.gettime() - t0
  end
end

function Nginx:request(method, path, body, timeout)
  return self:start_request(method, path, body, timeout)()
end

function Nginx:get(path, timeout) return self:request("GET", path, nil, timeout) end

function Nginx:json(method, path, body)
  local status, payload = self:request(method, path, body and cjson.encode(body))
  assert(status == 200, ("%s %s: %s %s"):format(method, path, tostring(status), tostring(payload)))
  return cjson.decode(payload)
end

function Nginx:log()
  return read_file(self.prefix .. "/error.log") or ""
end

function Nginx:stop()
  if self.stopped then return end
  self.stopped = true
  local master = tonumber((read_file(self.prefix .. "/nginx.pid") or ""):match("%d+"))
  if master then os.execute("kill -TERM " .. master .. " 2>/dev/null") end
  local deadline = socket.gettime() + 10
  while #nginx_pids(self.prefix) > 0 and socket.gettime() < deadline do socket.sleep(0.05) end
  for _, pid in ipairs(nginx_pids(self.prefix)) do os.execute("kill -KILL " .. pid .. " 2>/dev/null") end
  if self.watcher then
    os.execute("kill -TERM " .. self.watcher .. " 2>/dev/null")
    local d2 = socket.gettime() + 5
    while helpers.alive(self.watcher) and socket.gettime() < d2 do socket.sleep(0.05) end
  end
  self.final_log = self:log()
  local keep = os.getenv("LEADCONNECTOR_NGINX_LOG") -- where to keep nginx's log, for diagnostics
  if keep and keep ~= "" then write_file(keep, self.final_log) end
  os.execute("rm -rf " .. q(self.prefix))
end

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

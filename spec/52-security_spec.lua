--[[ Security (issue 4, item 7) for the libcurl transport: TLS verification on unless turned off by name, no
redirect followed (the token never reaches another address), header injection refused before anything is sent,
no token in any error or tostring, proxy environment variables ignored unless `proxy` is given.

TLS: an nginx (no Lua needed) listens with TLS on 127.0.0.1 with a certificate made by openssl at test time and
proxies to the sandbox. It runs in the foreground of a small shell that also stops it when this process is gone.
]]
local core = require "leadconnector.core"
local leadconnector = require "leadconnector"
local helpers = require "helpers"
local read_file, write_file, sh, my_pid = helpers.read_file, helpers.write_file, helpers.sh, helpers.my_pid
local lch = require "lchelpers"
local socket = require "socket"

local TOKEN = "pit-SECRET-sec-5f0e7c1a-9d2b"
local S = lch.scale

local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

-- An HTTPS front for `upstream` (a base URL) on a free port, with a fresh self-signed certificate for 127.0.0.1.
-- http2: offer HTTP/2 by ALPN (libcurl takes it over TLS when it can); front.log then has each request's protocol.
local function start_tls_front(upstream, http2)
  local dir = sh("mktemp -d \"${TMPDIR:-/tmp}/lc-tls-spec.XXXXXX\""):gsub("%s+$", "")
  assert(dir ~= "", "mktemp failed")
  local front = { dir = dir, cert = dir .. "/cert.pem", other_cert = dir .. "/other.pem", port = helpers.free_port() }
  front.url = "https://127.0.0.1:" .. front.port
  for _, c in ipairs {
    "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout key.pem -out cert.pem " ..
      "-days 2 -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1",
    -- an unrelated certificate, to give as a wrong ca_file
    "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout other.key -out other.pem " ..
      "-days 2 -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1",
  } do
    assert(os.execute("cd " .. q(dir) .. " && " .. c .. " >/dev/null 2>&1"), "openssl failed: " .. c)
  end
  os.execute("mkdir -p " .. q(dir .. "/tmp"))
  local conf = ([[
daemon off;
master_process off;
worker_processes 1;
pid @D@/nginx.pid;
error_log @D@/error.log warn;
events { worker_connections 64; }
http {
  log_format proto '$server_protocol';
  access_log @LOG@;
  client_body_temp_path @D@/tmp/body;
  proxy_temp_path @D@/tmp/proxy;
  fastcgi_temp_path @D@/tmp/fastcgi;
  uwsgi_temp_path @D@/tmp/uwsgi;
  scgi_temp_path @D@/tmp/scgi;
  server {
    listen 127.0.0.1:@PORT@ ssl@H2@;
    ssl_certificate @D@/cert.pem;
    ssl_certificate_key @D@/key.pem;
    location / {
      proxy_pass @UP@;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
]]):gsub("@LOG@", http2 and "@D@/access.log proto" or "off"):gsub("@H2@", http2 and " http2" or "")
    :gsub("@D@", dir):gsub("@PORT@", tostring(front.port)):gsub("@UP@", upstream)
  front.log = dir .. "/access.log"
  write_file(dir .. "/nginx.conf", conf)
  local script = ("nginx -p %s -c %s/nginx.conf -e %s/error.log >%s/stderr.log 2>&1 & n=$!; " ..
    "while kill -0 %d 2>/dev/null && kill -0 $n 2>/dev/null; do sleep 0.3; done; kill -TERM $n 2>/dev/null; wait $n")
    :format(q(dir), q(dir), q(dir), q(dir), my_pid())
  front.watcher = tonumber(sh(("env -u LD_PRELOAD -u ASAN_OPTIONS -u LSAN_OPTIONS -u UBSAN_OPTIONS sh -c %s " ..
    ">/dev/null 2>&1 </dev/null & echo $!"):format(q(script))):match("%d+"))
  local deadline = socket.gettime() + 20
  while true do
    local c = socket.tcp()
    c:settimeout(0.2)
    local ok = c:connect("127.0.0.1", front.port)
    c:close()
    if ok then break end
    if socket.gettime() > deadline or not helpers.alive(front.watcher) then
      error("nginx (TLS) did not start:\n" .. (read_file(dir .. "/stderr.log") or "") .. (read_file(dir .. "/error.log") or ""))
    end
    socket.sleep(0.05)
  end
  function front.stop()
    local pid = tonumber((read_file(dir .. "/nginx.pid") or ""):match("%d+"))
    if pid then os.execute("kill -TERM " .. pid .. " 2>/dev/null") end
    local t = socket.gettime() + 5
    while front.watcher and helpers.alive(front.watcher) and socket.gettime() < t do socket.sleep(0.05) end
    os.execute("rm -rf " .. q(dir))
  end
  return front
end

describe("security #security", function()
  local sb, other, client
  local errors_seen = {}

  -- sb: the API; other: a second sandbox standing for "another address" (redirect target, proxy): it records
  -- every request that reaches it.
  lazy_setup(function()
    sb = helpers.start_sandbox { rate_limit = false, tokens = { TOKEN } }
    other = helpers.start_sandbox { rate_limit = false, tokens = { "other-token" } }
    client = lch.client(sb, { rate_limit = false })
  end)

  lazy_teardown(function()
    if client then client:close() end
    if sb then sb:stop() end
    if other then other:stop() end
  end)

  before_each(function()
    sb:reset()
    other:reset()
  end)

  local function failed(kind, value, err)
    assert.is_nil(value)
    assert.is_true(leadconnector.is_error(err), tostring(err))
    assert.equals(kind, err.kind, tostring(err))
    errors_seen[#errors_seen + 1] = err
    return err
  end

  describe("TLS", function()
    local front
    lazy_setup(function() front = start_tls_front(sb.url) end)
    lazy_teardown(function() if front then front.stop() end end)

    it("is verified by default: a self-signed certificate fails with kind network, nothing sent", function()
      local c = lch.client(sb, { base_url = front.url, rate_limit = false, max_retries = 2 })
      local err = failed("network", c:get_message("msg_demo_1"))
      assert.is_nil(err.status)
      assert.is_false(err.request_sent)
      assert.equals(3, err.attempts) -- a read is retried; it never left
      err = failed("network", c:send_message { type = "SMS", contactId = "c1", message = "x" })
      assert.is_false(err.request_sent)
      assert.equals(3, err.attempts) -- never left, so a send may be tried again too
      assert.is_truthy(tostring(err):lower():find("certificate", 1, true), tostring(err))
      c:close()
      assert.same({}, lch.api_requests(sb))
    end)

    it("verify = false (by name) turns it off", function()
      local c = lch.client(sb, { base_url = front.url, rate_limit = false, verify = false })
      local m = assert(c:get_message("msg_demo_1"))
      assert.equals("msg_demo_1", m.id)
      local sent = assert(c:send_message { type = "SMS", contactId = "c1", message = "over TLS" })
      assert.is_string(sent.messageId)
      c:close()
      assert.equals(2, #lch.api_requests(sb))
    end)

    it("ca_file = the certificate makes it trusted; another certificate does not", function()
      local c = lch.client(sb, { base_url = front.url, rate_limit = false, ca_file = front.cert })
      assert.equals("msg_demo_1", assert(c:get_message("msg_demo_1")).id)
      c:close()
      c = lch.client(sb, { base_url = front.url, rate_limit = false, ca_file = front.other_cert })
      local err = failed("network", c:get_message("msg_demo_1"))
      assert.is_false(err.request_sent)
      c:close()
      assert.equals(1, #lch.api_requests(sb))
    end)

    it("only a boolean false turns it off", function()
      for _, v in ipairs { "false", 0, "no" } do
        local c, err = leadconnector.new { token = TOKEN, base_url = front.url, verify = v }
        assert.is_nil(c)
        failed("invalid", nil, err)
        assert.equals("verify", err.field)
      end
      local c = lch.client(sb, { base_url = front.url, rate_limit = false, verify = true })
      failed("network", c:get_message("msg_demo_1"))
      c:close()
    end)
  end)

  -- Over TLS libcurl takes HTTP/2 when the server offers it (the real API may): the status line the library reads
  -- is then one libcurl makes ("HTTP/2 200 "), the header names come in lower case. The same answers and errors.
  describe("over HTTP/2 (ALPN h2)", function()
    local front
    lazy_setup(function() front = start_tls_front(sb.url, true) end)
    lazy_teardown(function() if front then front.stop() end end)

    -- The libcurl engine takes h2 for every call; the direct engine (the default) speaks HTTP/1.1 in single calls
    -- and batches alike (ALPN offers http/1.1 only; a batch has a connection per concurrent call).
    for _, engine in ipairs { "libcurl", "direct" } do
      it("reads, sends, error answers, rate-limit headers and a batch as over HTTP/1.1 (engine " .. engine .. ")", function()
        if not select(2, core.curl_version()) then return pending("libcurl without TLS") end
        local before = #(read_file(front.log) or ""):gsub("[^\n]", "")
        local before_api = #lch.api_requests(sb)
        local c = lch.client(sb, { base_url = front.url, rate_limit = false, ca_file = front.cert, max_retries = 0,
          engine = engine })
        assert.equals("msg_demo_1", assert(c:get_message("msg_demo_1")).id)
        local sent = assert(c:send_message { type = "SMS", contactId = "contact_demo_1", message = "over h2" })
        assert.is_string(sent.messageId)
        local err = failed("not_found", c:get_message("msg_nope"))
        assert.equals(404, err.status)
        -- HTTP/2 sends header names in lower case: the rate-limit headers are read all the same
        local rl = c:rate_limit()
        assert.is_number(rl.max, "x-ratelimit-max not read over h2")
        assert.is_number(rl.remaining, "x-ratelimit-remaining not read over h2")
        -- a batch: on libcurl's engine its transfers share the one HTTP/2 connection (libcurl multiplexes), each
        -- answer its own
        local calls = {}
        for i = 1, 8 do calls[i] = { "get_message", i % 2 == 0 and "msg_demo_1" or "msg_nope" } end
        local results = assert(c:batch(calls, { concurrency = 8 }))
        for i = 1, 8 do
          if i % 2 == 0 then
            assert.equals("msg_demo_1", results[i].value.id)
          else
            assert.equals("not_found", results[i].err.kind)
            assert.equals(404, results[i].err.status)
          end
        end
        c:close()
        assert.equals(11, #lch.api_requests(sb) - before_api)
        local lines = {}
        for line in (read_file(front.log) or ""):gmatch("[^\n]+") do lines[#lines + 1] = line end
        local protos = table.concat(lines, "\n", before + 1)
        local _, h2 = protos:gsub("HTTP/2%.0", "")
        local _, h1 = protos:gsub("HTTP/1%.1", "")
        if engine == "libcurl" then
          if h2 == 0 then return pending("this libcurl did not take HTTP/2 (" .. core.curl_version() .. ")") end
          assert.equals(11, h2, protos)
        else
          assert.same({ 11, 0 }, { h1, h2 }, protos)
        end
      end)
    end
  end)

  describe("redirects are not followed", function()
    local CALLS = {
      { "GET", "/conversations/messages/msg_demo_1", function(c) return c:get_message("msg_demo_1") end },
      { "POST", "/conversations/messages", function(c) return c:send_message { type = "SMS", contactId = "c1", message = "x" } end },
      { "PUT", "/conversations/messages/msg_demo_2/status", function(c) return c:update_message_status("msg_demo_2", { status = "read" }) end },
    }
    for _, status in ipairs { 301, 302, 303, 307, 308 } do
      for _, call in ipairs(CALLS) do
        it(status .. " on " .. call[1] .. ": an http error, and the token never reaches the other address", function()
          sb:fault { method = call[1], path = call[2], status = status, body = "",
            headers = { Location = other.url .. call[2] } }
          local err = failed("http", call[3](client))
          assert.equals(status, err.status)
          assert.equals(1, err.attempts)
          assert.same({}, other:requests())
          assert.equals(1, #lch.api_requests(sb))
        end)
      end
    end
  end)

  describe("header injection is refused before anything is sent", function()
    local EVIL = { "\r\nX-Evil: 1", "\nX-Evil: 1", "\rX-Evil: 1", "\0X-Evil", "a\tb" }

    after_each(function()
      -- whatever reached the server, no request carried an injected header
      for _, r in ipairs(sb:requests()) do assert.is_nil(r.headers["x-evil"]) end
    end)

    it("in the token", function()
      for _, e in ipairs(EVIL) do
        local c, err = leadconnector.new { token = TOKEN .. e, base_url = sb.url }
        assert.is_nil(c)
        failed("invalid", nil, err)
        assert.equals("token", err.field)
      end
      for _, t in ipairs { TOKEN .. " x", "", TOKEN .. "\127" } do
        local c, err = leadconnector.new { token = t, base_url = sb.url }
        assert.is_nil(c)
        failed("invalid", nil, err)
      end
    end)

    it("in version, user_agent, base_url, proxy, ca_file (client options)", function()
      for _, e in ipairs(EVIL) do
        for _, k in ipairs { "version", "user_agent", "base_url", "proxy", "ca_file" } do
          local o = { token = TOKEN, base_url = sb.url }
          o[k] = (k == "version" and "2021-04-15" or k == "base_url" and sb.url or "x") .. e
          local c, err = leadconnector.new(o)
          assert.is_nil(c, k .. " accepted with " .. ("%q"):format(e))
          failed("invalid", nil, err)
          assert.equals(k, err.field)
        end
      end
    end)

    it("in a per-call version", function()
      for _, e in ipairs(EVIL) do
        local err = failed("invalid", client:get_message("msg_demo_1", { version = "2021-04-15" .. e }))
        assert.equals(0, err.attempts)
        assert.is_false(err.request_sent)
        failed("invalid", client:send_message({ type = "SMS", contactId = "c1" }, { version = "2021-07-28" .. e }))
      end
      assert.same({}, lch.api_requests(sb))
    end)

    it("in ids: control characters refused; everything else percent-encoded into one path segment", function()
      for _, e in ipairs(EVIL) do
        failed("invalid", client:get_message("msg_demo_1" .. e))
        failed("invalid", client:get_conversation("conv_demo_1" .. e))
        failed("invalid", client:update_message_status("msg_demo_2" .. e, { status = "read" }))
        failed("invalid", client:send_message { type = "SMS", contactId = "c1" .. e })
      end
      assert.same({}, lch.api_requests(sb))
      -- no control characters: sent, but as one segment that cannot reach another endpoint
      for _, id in ipairs { "../conv_demo_1", "a b?c=1#d", "x/status", "%2e%2e", "msg_demo_1/../../conversations" } do
        sb:clear_requests()
        local _, err = client:get_message(id)
        if err and err.kind == "invalid" then
          errors_seen[#errors_seen + 1] = err
        else
          local reqs = lch.api_requests(sb)
          assert.equals(1, #reqs)
          local tail = reqs[1].path:match("^/conversations/messages/(.*)$")
          assert.is_not_nil(tail, reqs[1].path)
          assert.is_nil(tail:find("[/?#]"), reqs[1].path)
          assert.equals(id, (tail:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end)))
        end
      end
    end)

    it("CR/LF inside message fields stays inside the JSON body", function()
      local text = "line 1\r\nX-Evil: 1\r\n\r\nline 3"
      local sent = assert(client:send_message { type = "SMS", contactId = "contact_demo_1", message = text })
      local req = lch.api_requests(sb)[1]
      assert.equals(text, req.body.message)
      assert.is_string(sent.messageId)
    end)
  end)

  describe("proxies", function()
    -- Runs one get_message in a child interpreter with proxy variables set in its environment (they are read by
    -- libcurl when a request is made). Returns what it printed.
    local function child(env, proxy)
      local interp = lch.interpreter
      local script = ([[
        local lc = require "leadconnector"
        local c = assert(lc.new { token = %q, base_url = %q, max_retries = 0, rate_limit = false, timeout = 5,
          proxy = %s })
        local m, err = c:get_message("msg_demo_1")
        io.write(m and ("ok " .. m.id) or ("err " .. err.kind))
      ]]):format(TOKEN, sb.url, proxy and ("%q"):format(proxy) or "nil")
      local vars = {}
      for k, v in pairs(env) do vars[#vars + 1] = k .. "=" .. q(v) end
      return sh(("env %s LUA_PATH=%s LUA_CPATH=%s %s -e %s 2>&1"):format(table.concat(vars, " "), q(package.path),
        q(package.cpath), interp, q(script)))
    end

    it("http_proxy, HTTPS_PROXY, ALL_PROXY in the environment are ignored", function()
      local p = other.url
      local out = child { http_proxy = p, HTTP_PROXY = p, https_proxy = p, HTTPS_PROXY = p, ALL_PROXY = p,
        all_proxy = p, no_proxy = "", NO_PROXY = "" }
      assert.equals("ok msg_demo_1", out)
      assert.same({}, other:requests())
      assert.equals(1, #lch.api_requests(sb))
    end)

    it("the proxy option is used when given", function()
      local out = child({}, other.url)
      assert.is_truthy(out:find("^ok") or out:find("^err"), out)
      assert.equals(1, #other:requests()) -- the request went to the proxy
      assert.same({}, lch.api_requests(sb))
    end)
  end)

  it("the token is in no error, no tostring, no field at any depth", function()
    -- a few more kinds of failure, with everything the library can say about them
    local c = lch.client(sb, { base_url = "http://127.0.0.1:" .. lch.unused_port(), rate_limit = false })
    failed("network", c:get_message("m"))
    c:close()
    sb:fault { method = "GET", path = "/conversations/conv_demo_1", delay_ms = 1000 * S }
    failed("timeout", client:get_conversation("conv_demo_1", { timeout = 0.2 * S }))
    local bad = lch.client(sb, { token = "pit-SECRET-not-known-to-the-api", rate_limit = false })
    failed("auth", bad:get_conversation("conv_demo_1"))
    assert.is_nil(tostring(bad):find("SECRET", 1, true))
    bad:close()
    assert.is_true(#errors_seen >= 40)
    for _, e in ipairs(errors_seen) do
      assert.is_nil(tostring(e):find("SECRET", 1, true), tostring(e))
      assert.is_nil(lch.find_in(e, "SECRET"))
    end
    assert.is_nil(tostring(client):find("SECRET", 1, true))
    assert.is_nil(lch.find_in(client, "SECRET"))
    assert.is_nil(lch.find_in(client:rate_limit(), "SECRET"))
    -- the sandbox logged every request's Authorization as redacted: the token reached only the API
    for _, r in ipairs(sb:requests()) do assert.is_nil(lch.find_in(r, "SECRET")) end
  end)
end)

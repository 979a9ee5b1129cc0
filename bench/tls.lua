-- The TLS rows' server (issue 16 item 3): a plain nginx terminating HTTPS on a free loopback port, with a
-- certificate openssl makes at run time (EC P-256, subjectAltName IP:127.0.0.1, one day), proxying every request
-- over kept-alive connections to the bench's sandbox. Every TLS client row trusts that certificate (its file is
-- handed to each: CURLOPT_CAINFO, the library's ca_file, luasec's cafile, NODE_EXTRA_CA_CERTS) and verifies it.
--
-- Handshakes are counted by the server, not the clients: the access log has one line per request with nginx's
-- connection serial number and $ssl_session_reused, so a run's distinct connections are its TLS handshakes and the
-- "r" ones those that resumed a session (abbreviated handshake, no certificate sent or verified).
-- keepalive_requests is nginx's default, 1000, written out: like real servers, this one closes a kept-alive
-- connection after 1000 requests, so over 20,000 requests a client that keeps its connection alive makes 20
-- handshakes (1 per 1000), and one that also caches its TLS session resumes 19 of them.
--
-- The message every TLS row reads is answered by the front itself (since 2026-12-08): the sandbox's own answer to
-- it, status, body and X-RateLimit-* headers, fetched once at start and written into the configuration (`return
-- 200 '...'`). Proxied, each request cost the one server CPU a TLS read and write, an upstream round trip and the
-- sandbox's handler: the server was the limit, every client converged to its rate, and the rows' ratios were
-- noise around 1.0 (0.92 to 1.09 for the same code). Every other path is still proxied to the sandbox.
package.path = "bench/?.lua;" .. package.path
local lib = require "lib"
local socket = require "socket"

local M = {}

local conf_template = [[
daemon off;
master_process off;
worker_processes 1;
pid @PREFIX@/nginx.pid;
error_log @PREFIX@/error.log warn;
events { worker_connections 256; }
http {
  log_format conns '$connection $ssl_session_reused $ssl_protocol';
  access_log @PREFIX@/access.log conns;
  client_body_temp_path @PREFIX@/tmp;
  proxy_temp_path @PREFIX@/tmp;
  fastcgi_temp_path @PREFIX@/tmp;
  uwsgi_temp_path @PREFIX@/tmp;
  scgi_temp_path @PREFIX@/tmp;
  keepalive_requests 1000;
  keepalive_timeout 60s;
  upstream sandbox { server @UPSTREAM@; keepalive 16; }
  server {
    listen 127.0.0.1:@PORT@ ssl;
    ssl_certificate @PREFIX@/cert.pem;
    ssl_certificate_key @PREFIX@/key.pem;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_cache shared:tls:1m;
    ssl_session_timeout 10m;
@STATIC@
    location / {
      proxy_pass http://sandbox;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $http_host;
      proxy_buffering off;
    }
  }
}
]]

local state = {}
M.state = state

-- Starts the front for the sandbox at sandbox_url (http://127.0.0.1:PORT). prefix: put before the command
-- (taskset). Returns true and fills state.url (https://127.0.0.1:PORT), state.ca (the certificate's file), or nil
-- and why.
-- The location block answering `path` as the sandbox does (its status, body and X-RateLimit-* headers, asked
-- once with `token`), or nil and why.
local function static_answer(sandbox_url, path, token, dir)
  local hfile, bfile = dir .. "/answer.head", dir .. "/answer.body"
  if not lib.sh(("curl -s -D %s -o %s -H %s -H 'Version: 2021-04-15' %s"):format(lib.quote(hfile), lib.quote(bfile),
      lib.quote("Authorization: Bearer " .. token), lib.quote(sandbox_url .. path))) then
    return nil, "could not ask the sandbox for " .. path
  end
  local head, body = lib.read_file(hfile) or "", lib.read_file(bfile) or ""
  local status = head:match("^HTTP/1%.1 (%d%d%d)")
  local ctype = head:match("\n[Cc]ontent%-[Tt]ype: ([^\r\n]+)")
  if status ~= "200" or not ctype or body == "" then return nil, "the sandbox did not answer " .. path end
  if body:find("[\\'$%c]") or ctype:find("[\\\"$]") then return nil, "an answer nginx cannot quote" end
  local lines = { "    location = " .. path .. " {", ('      default_type "%s";'):format(ctype) }
  for name, value in head:gmatch("\n(X%-RateLimit%-[%w%-]+): ([^\r\n]+)") do
    lines[#lines + 1] = ("      add_header %s %s always;"):format(name, value)
  end
  lines[#lines + 1] = ("      return 200 '%s';"):format(body)
  lines[#lines + 1] = "    }"
  return table.concat(lines, "\n")
end

-- answer (optional): { path = ..., token = ... }, the request every row makes, for the front to answer itself.
function M.start(sandbox_url, prefix, answer)
  if not lib.sh("command -v openssl >/dev/null 2>&1") then return nil, "no openssl" end
  if not lib.sh("command -v nginx >/dev/null 2>&1") then return nil, "no nginx" end
  local upstream = sandbox_url:match("^http://([^/]+)")
  if not upstream then return nil, "sandbox URL not http: " .. sandbox_url end
  local dir = lib.capture("cd " .. lib.OUT .. " && pwd"):gsub("%s+$", "") .. "/tls." .. lib.RUN_ID
  lib.sh("rm -rf " .. lib.quote(dir) .. " && mkdir -p " .. lib.quote(dir .. "/tmp"))
  state.dir = dir
  local made = lib.sh(("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 " ..
    "-subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 -keyout %s/key.pem -out %s/cert.pem >%s/openssl.log 2>&1")
    :format(dir, dir, dir))
  if not made then return nil, "openssl could not make the certificate: see " .. dir .. "/openssl.log" end
  local s = assert(socket.bind("127.0.0.1", 0))
  local port = select(2, s:getsockname())
  s:close()
  local static = ""
  if answer then
    local block, why = static_answer(sandbox_url, answer.path, answer.token, dir)
    if not block then return nil, why end
    static = block
  end
  local vars = { PREFIX = dir, PORT = port, UPSTREAM = upstream, STATIC = static }
  local conf = conf_template:gsub("@([%u_]+)@", function(k) return tostring(vars[k]) end)
  local f = assert(io.open(dir .. "/nginx.conf", "w"))
  f:write(conf)
  f:close()
  if not lib.sh(("%snginx -p %s -c %s/nginx.conf -e %s/error.log >%s/nginx.out 2>&1 </dev/null & echo $! >%s/pid")
      :format(prefix or "", dir, dir, dir, dir, dir)) then
    return nil, "could not start nginx"
  end
  state.pid = (lib.read_file(dir .. "/pid") or ""):match("%d+")
  state.url, state.ca, state.log = "https://127.0.0.1:" .. port, dir .. "/cert.pem", dir .. "/access.log"
  -- Up when a verified request through it reaches the sandbox.
  for _ = 1, 200 do
    if lib.sh(("curl -s -o /dev/null --cacert %s %s/_sandbox/health"):format(state.ca, state.url)) then
      return true
    end
    if not lib.sh("kill -0 " .. state.pid .. " 2>/dev/null") then break end
    socket.sleep(0.05)
  end
  return nil, "the TLS front did not come up: see " .. dir .. "/error.log"
end

-- Where the access log stands now: hand it to handshakes() after a run.
function M.mark()
  local f = io.open(state.log, "r")
  if not f then return 0 end
  local size = f:seek("end")
  f:close()
  return size
end

-- The TLS connections (= handshakes), the resumed ones and the requests logged since mark, and the protocol seen.
function M.handshakes(mark)
  local f = io.open(state.log, "r")
  if not f then return nil end
  f:seek("set", mark)
  local conns, n, resumed, requests, proto = {}, 0, 0, 0, nil
  for line in f:lines() do
    local c, r, p = line:match("^(%d+) (%S+) (%S+)")
    if c then
      requests = requests + 1
      proto = p
      if not conns[c] then
        conns[c] = true
        n = n + 1
        if r == "r" then resumed = resumed + 1 end
      end
    end
  end
  f:close()
  return { handshakes = n, resumed = resumed, requests = requests, protocol = proto }
end

function M.stop()
  if state.pid then
    lib.sh("kill -TERM " .. state.pid .. " 2>/dev/null")
    for _ = 1, 100 do
      if not lib.sh("kill -0 " .. state.pid .. " 2>/dev/null") then break end
      socket.sleep(0.05)
    end
    state.pid = nil
  end
end

return M

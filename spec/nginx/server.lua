--[[ spec/nginx/server.lua -- a real nginx for the specs (spec/60-nginx_spec.lua, spec/50-faults_spec.lua): its own
temporary prefix, a config template from spec/nginx/ filled in, 127.0.0.1 only, stopped by stop() whatever happened;
a watcher also stops it if the test process dies.

  local ns = require "nginx.server"
  local nx = ns.start(sb [, "spec/nginx/fork.conf"])  -- sb: { url, token } of the API the config points at
  nx:get(path), nx:json(method, path, body), nx:start_request(...), nx:log(), nx:stop(), nx.prefix, nx.port
  ns.launch{ conf, vars, env, ready, ... } -> nginx from any config (the one way the specs start nginx; see launch)
  ns.http(port, method, path, body, headers, timeout) -> status, body; ns.start_request(same) -> wait()
  ns.pids(prefix), ns.q(s)
]]
local helpers = require "helpers"
local read_file, write_file, sh, my_pid = helpers.read_file, helpers.write_file, helpers.sh, helpers.my_pid
local socket = require "socket"
local cjson = require "cjson"

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

-- Starts nginx from o.conf, a config template whose @NAME@ are filled in from MODULES, USER, PREFIX, REPO, PORT,
-- what o.setup(self) returns (it runs first, in the new prefix) and o.vars; o.env = { NAME = value } for nginx;
-- o.port (default a free one); o.name names the temporary prefix; waits until o.ready(self) is true. The object is
-- of o.class (default Nginx). Raises (after stopping what it started) if nginx does not come up within 20 s.
local function launch(o)
  local prefix = sh("mktemp -d \"${TMPDIR:-/tmp}/" .. (o.name or "lc-nginx-spec") .. ".XXXXXX\""):gsub("%s+$", "")
  assert(prefix ~= "")
  os.execute("mkdir -p " .. q(prefix .. "/tmp"))
  local self = setmetatable({ prefix = prefix, port = o.port or helpers.free_port() }, o.class or Nginx)
  local ok, err = pcall(function()
    local vars = {
      MODULES = os.getenv("LEADCONNECTOR_NGINX_MODULES") or "/usr/lib/nginx/modules",
      USER = sh("id -u"):match("^0") and "user root;" or "",
      PREFIX = prefix, REPO = REPO, PORT = self.port,
    }
    for k, v in pairs(o.setup and o.setup(self) or {}) do vars[k] = v end
    for k, v in pairs(o.vars or {}) do vars[k] = v end
    local conf = type(o.conf) == "function" and o.conf(vars) or o.conf
    write_file(prefix .. "/nginx.conf", (conf:gsub("@([%u_]+)@", function(k) return tostring(assert(vars[k], k)) end)))
    local env = {}
    for k, v in pairs(o.env or {}) do env[#env + 1] = k .. "=" .. q(v) end
    -- nginx in the foreground of a small shell that also stops it if this process goes away; sanitizer settings
    -- of the test process must not reach nginx.
    local script = (table.concat(env, " ") .. " nginx -p %s -c %s/nginx.conf -e %s/error.log >%s/stderr.log 2>&1 & n=$!; " ..
      "while kill -0 %d 2>/dev/null && [ -e /proc/$n ] && ! grep -q '^[0-9]* ([^)]*) Z' /proc/$n/stat; do sleep 0.3; done; " ..
      "kill -TERM $n 2>/dev/null; wait $n"):format(q(prefix), q(prefix), q(prefix), q(prefix), my_pid())
    self.watcher = tonumber(sh(("%s sh -c %s >/dev/null 2>&1 </dev/null & echo $!"):format(helpers.CLEAN_ENV, q(script)))
      :match("%d+"))
    local deadline = socket.gettime() + 20
    while not o.ready(self) do
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

-- nginx from one of spec/nginx/'s templates, pointed at the API sb = { url, token }, with TLS ports and certificates.
local function start_nginx(sb, conf_file)
  return launch {
    conf = assert(read_file(REPO .. "/" .. (conf_file or "spec/nginx/nginx.conf"))),
    setup = function(self)
      make_certs(self.prefix)
      self.tls_port, self.tls_bad_port = helpers.free_port(), helpers.free_port()
      return { TLS_PORT = self.tls_port, TLS_BAD_PORT = self.tls_bad_port, SANDBOX_URL = sb.url, TOKEN = sb.token }
    end,
    ready = function(self) return self:get("/fast") == 200 end,
  }
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

-- Starts a request to 127.0.0.1:port (Connection: close, headers = { name = value } added) and returns a function
-- that waits for its answer: status, body, seconds since the start (nil, why if there is none).
local function start_request(port, method, path, body, headers, timeout)
  local c = socket.tcp()
  c:settimeout(timeout or 30)
  local t0 = socket.gettime()
  local ok, err = c:connect("127.0.0.1", port)
  if not ok then
    c:close()
    return function() return nil, err end
  end
  local lines = { ("%s %s HTTP/1.1"):format(method, path), "Host: test", "Connection: close" }
  for k, v in pairs(headers or {}) do lines[#lines + 1] = k .. ": " .. v end
  lines[#lines + 1] = "Content-Length: " .. (body and #body or 0)
  c:send(table.concat(lines, "\r\n") .. "\r\n\r\n" .. (body or ""))
  return function()
    local data, rerr, partial = c:receive("*a")
    c:close()
    local status, payload = parse_answer(data or partial)
    if not status then return nil, rerr or payload end
    return status, payload, socket.gettime() - t0
  end
end

local function http(...) return start_request(...)() end

function Nginx:start_request(method, path, body, timeout)
  return start_request(self.port, method, path, body, nil, timeout)
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
  return read_file(self.prefix .. "/error.log") or self.final_log or ""
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


return { start = start_nginx, launch = launch, Nginx = Nginx, http = http, start_request = start_request,
  pids = nginx_pids, q = q, REPO = REPO }

--[[ spec/whhelpers.lua -- what the webhook specs (75-, 80-) share: keys and signatures made with the openssl command
line (never with the library under test), and a real nginx started from a config the spec writes.

  wh.keys()                 -> { dir, ed_key, ed_pub (PEM), rsa_key, rsa_pub (PEM) }: a fresh Ed25519 key and a fresh
                               RSA-2048 key (openssl genpkey) in a temporary directory
  wh.sign_ed(keys, body)    -> base64 Ed25519 signature of the exact bytes (openssl pkeyutl -sign -rawin)
  wh.sign_rsa(keys, body)   -> base64 RSA-SHA256 PKCS#1 v1.5 signature (openssl dgst -sha256 -sign)
  wh.iso(t)                 -> ISO 8601 UTC text of epoch seconds t, with milliseconds (as HighLevel writes it)
  wh.nginx{ http = "...", workers = N, main = "..." } -> nginx running the given http-block directives (the
                               server blocks included) from its own temporary prefix; @PREFIX@ and @REPO@ are filled
                               in (and o.vars); lua_path = "dir/?.lua;" goes first in
                               lua_package_path; conf = a whole config template instead; env = {NAME = value} for nginx. Methods: :request(method, path, body, headers, port) -> status, body;
                               :log(); :stop(). Ports: wh.free_port().
  wh.rm(dir)
]]
local helpers = require "helpers"
local socket = require "socket"
local read_file, write_file, sh = helpers.read_file, helpers.write_file, helpers.sh

local wh = {}
wh.free_port = helpers.free_port

local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end
wh.q = q

wh.REPO = (function()
  local p = io.popen("pwd")
  local d = p:read("*l")
  p:close()
  return d
end)()

local function run(cmd)
  local out = sh(helpers.CLEAN_ENV .. " sh -c " .. q("{ " .. cmd .. "; } 2>&1; echo \"rc=$?\""))
  local body, rc = out:match("^(.-)rc=(%d+)%s*$")
  assert(rc == "0", "command failed: " .. cmd .. "\n" .. tostring(out))
  return body
end
wh.run = run

function wh.tmpdir(what)
  local d = sh("mktemp -d \"${TMPDIR:-/tmp}/" .. (what or "lc-wh") .. ".XXXXXX\""):gsub("%s+$", "")
  assert(d ~= "")
  return d
end

function wh.rm(dir) if dir and dir:match("^/tmp/") then os.execute("rm -rf " .. q(dir)) end end

function wh.keys()
  local d = wh.tmpdir("lc-wh-keys")
  run(("cd %s && openssl genpkey -algorithm ed25519 -out ed.key && openssl pkey -in ed.key -pubout -out ed.pub && " ..
    "openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out rsa.key && " ..
    "openssl pkey -in rsa.key -pubout -out rsa.pub"):format(q(d)))
  return { dir = d, ed_key = d .. "/ed.key", ed_pub = read_file(d .. "/ed.pub"), rsa_key = d .. "/rsa.key",
    rsa_pub = read_file(d .. "/rsa.pub") }
end

local n = 0
local function body_file(keys, body)
  n = n + 1
  local f = keys.dir .. "/body" .. n
  write_file(f, body)
  return f
end

function wh.sign_ed(keys, body)
  local f = body_file(keys, body)
  local s = run(("openssl pkeyutl -sign -inkey %s -rawin -in %s | base64 -w0"):format(q(keys.ed_key), q(f)))
  os.remove(f)
  return (s:gsub("%s+$", ""))
end

function wh.sign_rsa(keys, body)
  local f = body_file(keys, body)
  local s = run(("openssl dgst -sha256 -sign %s %s | base64 -w0"):format(q(keys.rsa_key), q(f)))
  os.remove(f)
  return (s:gsub("%s+$", ""))
end

function wh.iso(t)
  local ms = math.floor((t % 1) * 1000 + 0.5)
  if ms >= 1000 then ms = 999 end
  return os.date("!%Y-%m-%dT%H:%M:%S", math.floor(t)) .. (".%03dZ"):format(ms)
end

---------------------------------------------------------------------------------------------------------------------
-- raw HTTP over luasocket: status, body (read to the end of the connection)

local function http(port, method, path, body, headers, timeout)
  local c = socket.tcp()
  c:settimeout(timeout or 30)
  local ok, err = c:connect("127.0.0.1", port)
  if not ok then c:close() return nil, err end
  local lines = { ("%s %s HTTP/1.1"):format(method, path), "Host: test", "Connection: close" }
  for k, v in pairs(headers or {}) do lines[#lines + 1] = k .. ": " .. v end
  if body then lines[#lines + 1] = "Content-Length: " .. #body end
  c:send(table.concat(lines, "\r\n") .. "\r\n\r\n" .. (body or ""))
  local data, rerr, partial = c:receive("*a")
  c:close()
  data = data or partial
  local status = tonumber((data or ""):match("^HTTP/1%.%d (%d+)"))
  if not status then return nil, rerr or "no answer" end
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
wh.http = http

---------------------------------------------------------------------------------------------------------------------
-- nginx

local Nginx = {}
Nginx.__index = Nginx

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

function wh.nginx(o)
  local prefix = wh.tmpdir("lc-wh-nginx")
  os.execute("mkdir -p " .. q(prefix .. "/tmp"))
  local self = setmetatable({ prefix = prefix, port = o.port or helpers.free_port() }, Nginx)
  local modules = os.getenv("LEADCONNECTOR_NGINX_MODULES") or "/usr/lib/nginx/modules"
  local vars = { PREFIX = prefix, REPO = wh.REPO, PORT = self.port, MODULES = modules,
    USER = sh("id -u"):match("^0") and "user root;" or "" }
  for k, v in pairs(o.vars or {}) do vars[k] = v end
  local conf = ([[
load_module %s/ndk_http_module.so;
load_module %s/ngx_http_lua_module.so;
%s
daemon off;
master_process on;
worker_processes %d;
pid @PREFIX@/nginx.pid;
error_log @PREFIX@/error.log info;
events { worker_connections 512; }
%s
http {
  access_log off;
  client_body_temp_path @PREFIX@/tmp/body;
  proxy_temp_path @PREFIX@/tmp/proxy;
  fastcgi_temp_path @PREFIX@/tmp/fastcgi;
  uwsgi_temp_path @PREFIX@/tmp/uwsgi;
  scgi_temp_path @PREFIX@/tmp/scgi;
  lua_package_path "%s@REPO@/lua/?.lua;@REPO@/lua/?/init.lua;@REPO@/spec/?.lua;;";
  lua_package_cpath "@REPO@/build/luajit/?.so;;";
%s
}
]]):format(modules, modules, sh("id -u"):match("^0") and "user root;" or "", o.workers or 1, o.main or "", o.lua_path or "", o.http)
  if o.conf then conf = o.conf end -- a whole config of the caller's (a template with the same names)
  conf = conf:gsub("@([%u_]+)@", function(k) return tostring(assert(vars[k], k)) end)
  write_file(prefix .. "/nginx.conf", conf)
  local env = {}
  for k, v in pairs(o.env or {}) do env[#env + 1] = k .. "=" .. q(v) end
  local script = (table.concat(env, " ") .. " nginx -p %s -c %s/nginx.conf -e %s/error.log >%s/stderr.log 2>&1 & n=$!; " ..
    "while kill -0 %d 2>/dev/null && [ -e /proc/$n ] && ! grep -q '^[0-9]* ([^)]*) Z' /proc/$n/stat; do sleep 0.3; done; " ..
    "kill -TERM $n 2>/dev/null; wait $n"):format(q(prefix), q(prefix), q(prefix), q(prefix), helpers.my_pid())
  self.watcher = tonumber(sh((helpers.CLEAN_ENV .. " sh -c %s >/dev/null 2>&1 </dev/null & echo $!"):format(q(script)))
    :match("%d+"))
  local deadline = socket.gettime() + 20
  while true do
    local s = http(self.port, "GET", o.probe or "/_probe", nil, nil, 2)
    if s then break end
    if socket.gettime() > deadline or not helpers.alive(self.watcher) then
      local why = (read_file(prefix .. "/stderr.log") or "") .. (read_file(prefix .. "/error.log") or "")
      self:stop()
      error("nginx did not start:\n" .. why, 2)
    end
    socket.sleep(0.05)
  end
  return self
end

function Nginx:request(method, path, body, headers, port)
  return http(port or self.port, method, path, body, headers)
end

function Nginx:log() return read_file(self.prefix .. "/error.log") or self.final_log or "" end

function Nginx:stop()
  if self.stopped then return end
  self.stopped = true
  local master = tonumber((read_file(self.prefix .. "/nginx.pid") or ""):match("%d+"))
  if master then os.execute("kill -TERM " .. master .. " 2>/dev/null") end
  local deadline = socket.gettime() + 10
  while #nginx_pids(self.prefix) > 0 and socket.gettime() < deadline do socket.sleep(0.05) end
  for _, pid in ipairs(nginx_pids(self.prefix)) do os.execute("kill -KILL " .. pid .. " 2>/dev/null") end
  if self.watcher then os.execute("kill -TERM " .. self.watcher .. " 2>/dev/null") end
  self.final_log = read_file(self.prefix .. "/error.log")
  wh.rm(self.prefix)
end

return wh

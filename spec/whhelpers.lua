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
local ns = require "nginx.server"
local read_file, write_file, sh = helpers.read_file, helpers.write_file, helpers.sh

local wh = {}
wh.free_port = helpers.free_port

local q = ns.q
wh.q = q
wh.REPO = ns.REPO

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

wh.http = ns.http

---------------------------------------------------------------------------------------------------------------------
-- nginx, started by spec/nginx/server.lua's launch

local Nginx = setmetatable({}, { __index = ns.Nginx })
Nginx.__index = Nginx

local TEMPLATE = [[
load_module @MODULES@/ndk_http_module.so;
load_module @MODULES@/ngx_http_lua_module.so;
@USER@
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
]]

function wh.nginx(o)
  return ns.launch {
    name = "lc-wh-nginx", port = o.port, vars = o.vars, env = o.env, class = Nginx,
    -- a whole config of the caller's (a template with the same names), or the http-block directives given
    conf = o.conf or TEMPLATE:format(o.workers or 1, o.main or "", o.lua_path or "", o.http),
    ready = function(self) return (ns.http(self.port, "GET", o.probe or "/_probe", nil, nil, 2)) ~= nil end,
  }
end

function Nginx:request(method, path, body, headers, port)
  return ns.http(port or self.port, method, path, body, headers)
end

return wh

-- OAuth inside a real nginx with 4 workers sharing one shdict_store: a burst of requests (each with 4 light
-- threads) at the moment of expiry makes exactly one refresh, and every call succeeds.
-- Tagged lua54only like spec/60 (nginx brings its own LuaJIT).
local helpers = require "helpers"
local lch = require "lchelpers"
local oauth = require "leadconnector.oauth"
local core = require "leadconnector.core"
local cjson = require "cjson"
local floor = math.floor

local wh = require "whhelpers"
local ns = require "nginx.server"

local CONF = [[
load_module @MODULES@/ndk_http_module.so;
load_module @MODULES@/ngx_http_lua_module.so;
@USER@
daemon off;
master_process on;
worker_processes 4;
pid @PREFIX@/nginx.pid;
error_log @PREFIX@/error.log info;
events { worker_connections 256; }
http {
  access_log off;
  client_body_temp_path @PREFIX@/tmp/body;
  proxy_temp_path @PREFIX@/tmp/proxy;
  fastcgi_temp_path @PREFIX@/tmp/fastcgi;
  uwsgi_temp_path @PREFIX@/tmp/uwsgi;
  scgi_temp_path @PREFIX@/tmp/scgi;
  lua_package_path "@REPO@/lua/?.lua;@REPO@/lua/?/init.lua;@REPO@/spec/?.lua;;";
  lua_package_cpath "@REPO@/build/luajit/?.so;;";
  lua_shared_dict oauth_tokens 1m;
  init_by_lua_block { require("nginx.oauth_t").init("@SANDBOX_URL@") }
  server {
    listen 127.0.0.1:@PORT@ reuseport;
    location = /call { content_by_lua_block { require("nginx.oauth_t").call() } }
    location = /save { content_by_lua_block { require("nginx.oauth_t").save() } }
  }
}
]]

-- Starts a request; returns a function that waits for its status, body (so a burst can be in flight at once).
local function request(port, method, path, body)
  return ns.start_request(port, method, path, body, nil, 30 * lch.scale)
end

describe("oauth in nginx with 4 workers #lua54only #nginx", function()
  local sb, nx, port

  lazy_setup(function()
    sb = helpers.start_sandbox { rate_limit = false }
    nx = wh.nginx { conf = CONF, vars = { SANDBOX_URL = sb.url }, probe = "/nothing" }
    port = nx.port
  end)

  lazy_teardown(function()
    if nx then nx:stop() end
    if sb then sb:stop() end
  end)

  it("a burst at the moment of expiry: exactly one refresh across workers and light threads, every call succeeds", function()
    local app = assert(oauth.app { client_id = "sandbox-client", client_secret = "sandbox-secret", base_url = sb.url })
    local code = sb:control("POST", "/_sandbox/oauth/code", { locationId = "loc_sandbox" }).code
    local tok = assert(app:exchange_code(code, "https://app.example/cb"))
    local rec = {}
    for k, v in pairs(assert(app:token("loc_sandbox"))) do rec[k] = v end
    rec.expires_at = core.time() - 1 -- due now
    local st, out = request(port, "POST", "/save", cjson.encode(rec))()
    assert.equals(200, st)
    assert.equals("loc_sandbox", out:match("%S+"))
    local waits = {}
    for i = 1, 40 do waits[i] = request(port, "GET", "/call") end
    local pids, oks = {}, 0
    for i = 1, 40 do
      local status, body = waits[i]()
      assert.equals(200, status, body)
      local pid, res = body:match("^(%d+) (%S+)")
      pids[pid] = true
      for r in res:gmatch("[^,]+") do
        assert.equals("ok", r)
        oks = oks + 1
      end
    end
    assert.equals(160, oks)
    assert.is_true(lch.count(pids) >= 2, "the burst should reach several workers")
    local s = sb:control("GET", "/_sandbox/oauth/stats?refresh_token=" .. tok.refresh_token)
    assert.equals(1, s.refreshes)
    assert.equals(1, s.uses)
    assert.is_nil(nx:log():find(tok.refresh_token, 1, true))
  end)

  it("the access token revoked while light threads call: exactly one refresh across workers, every call succeeds", function()
    local app = assert(oauth.app { client_id = "sandbox-client", client_secret = "sandbox-secret", base_url = sb.url })
    local code = sb:control("POST", "/_sandbox/oauth/code", { locationId = "loc_sandbox" }).code
    local tok = assert(app:exchange_code(code, "https://app.example/cb"))
    local rec = {}
    for k, v in pairs(assert(app:token("loc_sandbox"))) do rec[k] = v end -- fresh: no refresh is due
    assert.equals(200, (request(port, "POST", "/save", cjson.encode(rec))()))
    local before = sb:control("GET", "/_sandbox/oauth/stats").refreshes
    -- every call slow, so each light thread's second call starts after the revoke, its first one around it
    sb:fault { method = "GET", path = "/conversations/conv_demo_1", count = -1, delay_ms = floor(150 * lch.scale) }
    sb:clear_requests()
    local waits = {}
    for i = 1, 24 do waits[i] = request(port, "GET", "/call?n=2") end
    core.sleep(0.1 * lch.scale)
    assert.is_true(sb:control("POST", "/_sandbox/oauth/revoke", { access_token = tok.access_token }).revoked)
    local pids, oks = {}, 0
    for i = 1, 24 do
      local status, body = waits[i]()
      assert.equals(200, status, body)
      local pid, res = body:match("^(%d+) (%S+)")
      pids[pid] = true
      for r in res:gmatch("[^,]+") do
        assert.equals("ok", r)
        oks = oks + 1
      end
    end
    sb:clear_faults()
    assert.equals(192, oks)
    assert.is_true(lch.count(pids) >= 2, "the burst should reach several workers")
    local n401 = 0
    for _, r in ipairs(lch.api_requests(sb)) do if r.status == 401 then n401 = n401 + 1 end end
    assert.is_true(n401 >= 1, "calls were refused after the revoke")
    local s = sb:control("GET", "/_sandbox/oauth/stats?refresh_token=" .. tok.refresh_token)
    assert.equals(before + 1, s.refreshes)
    assert.equals(1, s.uses)
    assert.is_nil(nx:log():find(tok.refresh_token, 1, true))
  end)
end)

-- spec/nginx/oauth_t.lua: the content handlers of spec/81-oauth_nginx_spec.lua (several workers, one shdict_store).
local M = {}
local url
local app, client

function M.init(u) url = u end

local function get()
  if not client then
    local oauth = require "leadconnector.oauth"
    app = assert(oauth.app { client_id = "sandbox-client", client_secret = "sandbox-secret", base_url = url,
      store = oauth.shdict_store("oauth_tokens") })
    client = assert(require("leadconnector").new { auth = app:token_source("loc_sandbox"), base_url = url,
      max_retries = 0, rate_limit = false })
  end
  return client
end

-- POST /save: a token record (JSON) to store, as an install would.
function M.save()
  get()
  ngx.req.read_body()
  local rec = require("cjson").decode(ngx.req.get_body_data())
  local key, err = app:save(rec)
  ngx.say(key or tostring(err))
end

-- GET /call[?n=N]: four light threads, each N (default 1) API calls through the shared client, one after another.
function M.call()
  local c = get()
  local n = tonumber(ngx.var.arg_n) or 1
  local threads = {}
  for i = 1, 4 do
    threads[i] = ngx.thread.spawn(function()
      local out = {}
      for j = 1, n do
        local v, err = c:get_conversation("conv_demo_1")
        out[j] = v and "ok" or tostring(err)
      end
      return table.concat(out, ",")
    end)
  end
  local res = {}
  for i = 1, 4 do
    local ok, r = ngx.thread.wait(threads[i])
    res[i] = ok and r or ("thread: " .. tostring(r))
  end
  ngx.say(ngx.worker.pid(), " ", table.concat(res, ","))
end

return M

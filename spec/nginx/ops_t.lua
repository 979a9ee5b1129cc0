--[[ spec/nginx/ops_t.lua -- runs a list of calls with the library, the same code inside nginx (cosockets,
spec/nginx/ops.conf) and in plain Lua (libcurl), for spec/61-nginx_operations_spec.lua.

  run(spec, defaults) -> { transport = ..., results = { describe(...) | { batch = {...} } | { iter = {...} } } }
    spec.calls[i] = { "method", a1, a2, a3 }          one call
                  | { "batch", { calls }, opts }     one client:batch
                  | { "iter", "each_message", a1, a2 } every item (and error) an iterator gives
    An argument (at any depth) { ["$ref"] = i, path = "a.b" } is the value at a.b of call i's result, so a call
    can use what an earlier one created (a scheduled message's id, say).
]]
local cjson = require "cjson.safe"
local leadconnector = require "leadconnector"
local describe = require "nginx.describe"

local M = {}

local function resolve(v, values)
  if v == cjson.null then return nil end
  if type(v) ~= "table" then return v end
  if v["$ref"] then
    local x = values[v["$ref"]]
    for part in (v.path or ""):gmatch("[^.]+") do x = x and x[tonumber(part) or part] end
    return x
  end
  local out = {}
  for k, x in pairs(v) do out[k] = resolve(x, values) end
  return out
end

function M.run(spec, defaults)
  local opts = {}
  for k, v in pairs(defaults or {}) do opts[k] = v end
  for k, v in pairs(spec.client or {}) do opts[k] = v end
  local client = assert(leadconnector.new(opts))
  local out, values = { transport = client.transport, results = {} }, {}
  for i, c in ipairs(spec.calls) do
    if c[1] == "batch" then
      local list = {}
      for k, r in ipairs(client:batch(resolve(c[2], values), c[3])) do list[k] = describe(r.value, r.err) end
      out.results[i] = { batch = list }
    elseif c[1] == "iter" then
      local items = {}
      for item, err in client[c[2]](client, resolve(c[3], values), resolve(c[4], values)) do
        items[#items + 1] = describe(item, err)
      end
      out.results[i] = { iter = items }
    else
      local v, err = client[c[1]](client, resolve(c[2], values), resolve(c[3], values), resolve(c[4], values))
      values[i] = v
      out.results[i] = describe(v, err)
    end
  end
  client:close()
  return out
end

local conf = {}
function M.init(c) conf = c end

-- POST /ops: a spec as JSON in the body, run here (content phase: cosockets); the answer names the worker.
function M.call()
  ngx.req.read_body()
  local spec = cjson.decode(ngx.req.get_body_data() or "{}") or {}
  local r = M.run(spec, { token = conf.token, base_url = conf.url, retry_base = 0.01, retry_cap = 0.05 })
  r.worker_pid = ngx.worker.pid()
  ngx.header["Content-Type"] = "application/json"
  ngx.say(cjson.encode(r))
end

return M

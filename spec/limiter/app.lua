--[[ spec/limiter/app.lua -- what spec/55-limiter_shared_spec.lua runs: inside nginx (nginx.conf beside this file)
and, as a plain Lua process, through run_process (spec/limiter/proc.lua).

  GET /burst?n=N&threads=T&backend=shdict|redis|process|tiny&id=I
    T light threads (default N) share N get_message calls for the sandbox's token, through one client per worker
    and backend (made on first use; tiny: a shared dict too small to hold the budget); answers JSON { pid, ok, kinds = { kind = count }, seconds }.
]]
local cjson = require "cjson"
local leadconnector = require "leadconnector"
local limiter = require "leadconnector.limiter"

local M = {}
local conf = {}
local clients = {}

function M.init(c) conf = c end

local function backend(name)
  if name == "redis" then
    return limiter.redis { port = conf.redis_port, key = "spec55", timeout_ms = 200 }
  elseif name == "process" then
    return limiter.process()
  elseif name == "tiny" then
    -- full of other data first (as if other budgets had filled it): no room for this one's slots
    local dict, i = ngx.shared.lc_tiny, 0
    for _, v in ipairs { ("x"):rep(200), ("x"):rep(40), 0 } do -- every size class of the slab allocator
      repeat i = i + 1 until not dict:safe_add("junk" .. i, v)
    end
    return limiter.shdict("lc_tiny", { fallback_share = 0.25 })
  end
  return nil -- the default: the shared dict leadconnector_limits
end

function M.client(name)
  local c = clients[name]
  if not c then
    c = assert(leadconnector.new { token = conf.token, base_url = conf.url, max_retries = 0, deadline = 90,
      limiter = backend(name) })
    clients[name] = c
  end
  return c
end

-- n calls over `threads` workers; spawn(fn) runs fn concurrently, join() waits for all.
function M.calls(c, n, threads, spawn, join)
  local ok, kinds, next_i = 0, {}, 1
  local function worker()
    while next_i <= n do
      next_i = next_i + 1
      local v, err = c:get_message("msg_demo_1")
      if v then ok = ok + 1 else kinds[err.kind .. ":" .. tostring(err.status)] = (kinds[err.kind .. ":" .. tostring(err.status)] or 0) + 1 end
    end
  end
  for _ = 1, threads do spawn(worker) end
  join()
  return ok, kinds
end

function M.burst()
  local args = ngx.req.get_uri_args()
  local n = tonumber(args.n) or 10
  local threads = tonumber(args.threads) or n
  local c = M.client(assert(args.backend, "backend="))
  local n = tonumber(args.n) or 10
  local threads = tonumber(args.threads) or n
  local c = M.client(assert(args.backend, "backend="))
  if args.dbg then
    local d = ngx.shared.lc_tiny
    ngx.say(tostring(d:safe_add("probe-x", 0)), " ", tostring(select(2, d:safe_add("probe-y", 0))), " ",
      tostring(c._limiter.backend.name), " ", tostring(c._limiter.backend.failed_at), " ", tostring(d:get("lc:" .. c._limiter.key .. ":q")))
    return
  end
  local t0 = ngx.now()
  local list = {}
  local ok, kinds = M.calls(c, n, threads, function(fn) list[#list + 1] = ngx.thread.spawn(fn) end, function()
    for i = 1, #list do ngx.thread.wait(list[i]) end
  end)
  ngx.update_time()
  ngx.header["Content-Type"] = "application/json"
  ngx.say(cjson.encode { pid = ngx.worker.pid(), ok = ok, kinds = kinds, seconds = ngx.now() - t0 })
end

-- leadconnector.redis misused (spec/57): each case's outcome ("raised" or the value / error returned) and what
-- Redis holds afterwards, the same function inside nginx (lua-resty-redis) and in plain Lua (hiredis).
function M.redis_misuse_cases(r)
  local out = {}
  local function try(name, ...)
    local ok, v, err = pcall(r.call, r, ...)
    out[name] = not ok and "raised" or (v == nil and ("nil: " .. tostring(err):sub(1, 3)) or type(v))
  end
  r:call("DEL", "m1", "m2", "m3")
  try("nil_middle", "SET", "m1", nil, "v")
  try("table_arg", "SET", "m2", {})
  try("bool_arg", "SET", "m3", true)
  try("number_cmd", 5)
  try("close_cmd", "close")
  try("read_reply_cmd", "read_reply")
  out.after = { r:call("EXISTS", "m1"), r:call("EXISTS", "m2"), r:call("EXISTS", "m3"), r:call("PING") }
  return out
end

-- GET /redis_get?port=P&timeout=S: one GET through leadconnector.redis against whatever listens on P (spec/57's
-- fake Redis): { ok, err, seconds }.
function M.redis_get()
  local a = ngx.req.get_uri_args()
  local t0 = ngx.now()
  local r, err = require("leadconnector.redis").connect { port = tonumber(a.port), timeout = tonumber(a.timeout) }
  local v
  if r then v, err = r:call("GET", "k") r:close() end
  ngx.update_time()
  ngx.say(cjson.encode { ok = v ~= nil, err = err, seconds = ngx.now() - t0 })
end

function M.redis_misuse()
  local r = assert(require("leadconnector.redis").connect { port = conf.redis_port, timeout = 1 })
  local out = M.redis_misuse_cases(r)
  r:close()
  ngx.say(cjson.encode(out))
end

return M

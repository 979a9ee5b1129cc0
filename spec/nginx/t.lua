--[[ spec/nginx/t.lua -- the test application that spec/60-nginx_spec.lua runs inside a real nginx (nginx.conf
beside this file). Every location calls the library the way a user's nginx would, and answers JSON the spec
checks. The same run() is used by the spec in plain Lua, so both transports run identical code.

  run(spec, defaults) -> { transport = ..., client = tostring(client), results = { describe(...), ... } }
    spec = { client = { options for leadconnector.new }, calls = { { "get_message", "msg_demo_1" }, ... } }
]]
local cjson = require "cjson.safe"
local leadconnector = require "leadconnector"
local describe = require "nginx.describe"

local M = {}
local conf = {}      -- url, token of the sandbox; tls_url, tls_bad_url of the TLS fronts
M.phases = {}         -- what the calls made in each phase gave
M.log_seen = {}

local function merged(defaults, opts)
  local o = {}
  for k, v in pairs(defaults or {}) do o[k] = v end
  for k, v in pairs(opts or {}) do
    if v == cjson.null then o[k] = nil else o[k] = v end
  end
  return o
end

local function call_one(client, c)
  local method = c[1]
  local a1, a2, a3 = c[2], c[3], c[4]
  if a1 == cjson.null then a1 = nil end
  if a2 == cjson.null then a2 = nil end
  if a3 == cjson.null then a3 = nil end
  -- { __rep = s, n = N }: s repeated N times (a huge argument that need not travel in the request's JSON)
  if type(a1) == "table" and a1.__rep then a1 = a1.__rep:rep(a1.n) end
  return client[method](client, a1, a2, a3)
end

function M.run(spec, defaults)
  local client, err = leadconnector.new(merged(defaults, spec.client))
  if not client then return { new_error = describe(nil, err) } end
  local out = { transport = client.transport, client = tostring(client), results = {} }
  for i, c in ipairs(spec.calls or {}) do
    if c[1] == "batch" then -- { "batch", calls, opts }: a list of outcomes, and the time it took
      local clock = require("leadconnector.core").now
      local t0 = clock()
      local list = {}
      for k, r in ipairs(client:batch(c[2], c[3])) do list[k] = describe(r.value, r.err) end
      out.results[i] = { batch = list, seconds = clock() - t0 }
    else
      local clock = require("leadconnector.core").now
      local t0 = clock()
      out.results[i] = describe(call_one(client, c))
      out.results[i].seconds = clock() - t0
    end
  end
  client:close()
  return out
end

local function defaults()
  return { token = conf.token, base_url = conf.url, retry_base = 0.01, retry_cap = 0.05 }
end

local function reply(t)
  ngx.header["Content-Type"] = "application/json"
  ngx.say(cjson.encode(t))
end

local function request_json()
  ngx.req.read_body()
  local data = ngx.req.get_body_data()
  if not data then return {} end
  return cjson.decode(data) or {}
end

function M.init(c)
  for k, v in pairs(c) do conf[k] = v end
end

-- POST /call: spec as JSON in the body, run with the library here (content phase).
function M.call()
  reply(M.run(request_json(), defaults()))
end

-- GET /reuse?n=N: N get_message calls on one client; after each, nginx's pool for the client is asked how many
-- times its connection has been reused (getreusedtimes on a socket taken from that very pool).
function M.reuse()
  local n = tonumber(ngx.var.arg_n) or 5
  local client = assert(leadconnector.new(defaults()))
  local pool = client._session.pool
  local host, port = conf.url:match("^http://([^:/]+):(%d+)")
  local reused, ok_calls = {}, 0
  for i = 1, n do
    local m = client:get_message("msg_demo_1")
    if m and m.id == "msg_demo_1" then ok_calls = ok_calls + 1 end
    local probe = ngx.socket.tcp()
    assert(probe:connect(host, tonumber(port), { pool = pool }))
    reused[i] = probe:getreusedtimes()
    probe:setkeepalive()
  end
  reply { pool = pool, reused = reused, ok_calls = ok_calls }
end

-- GET /fast: answers at once (the probe for a blocked worker).
function M.fast()
  ngx.say("fast")
end

-- GET /slow?transport=ngx|curl&id=...: one get_message (the spec makes the sandbox delay it).
function M.slow()
  local opts = defaults()
  opts.transport = ngx.var.arg_transport
  local client = assert(leadconnector.new(opts))
  local t0 = ngx.now()
  local d = describe(client:get_message(ngx.var.arg_id or "msg_demo_1"))
  ngx.update_time()
  reply { result = d, seconds = ngx.now() - t0, transport = client.transport }
end

-- access_by_lua / rewrite_by_lua: the call is made in that phase, the content phase reports it.
function M.in_phase()
  local client = assert(leadconnector.new(defaults()))
  ngx.ctx.result = describe(client:get_conversation("conv_demo_1"))
  ngx.ctx.phase = ngx.get_phase()
  ngx.ctx.transport = client.transport
end

function M.report_ctx()
  reply { phase = ngx.ctx.phase, result = ngx.ctx.result, transport = ngx.ctx.transport }
end

-- GET /timer: the call runs in an ngx.timer callback; the request waits for it (ngx.sleep) and reports.
function M.timer()
  local box = {}
  local ok, err = ngx.timer.at(0, function(premature)
    if premature then return end
    local client = assert(leadconnector.new(defaults()))
    box.phase = ngx.get_phase()
    box.transport = client.transport
    box.result = describe(client:get_message("msg_demo_2"))
    box.done = true
  end)
  if not ok then return reply { error = err } end
  for _ = 1, 500 do
    if box.done then break end
    ngx.sleep(0.01)
  end
  reply(box)
end

-- init_by_lua*: a default client made there (kept for the requests), a call with it there (libcurl: blocking is
-- fine at start-up), and a call with transport = "ngx" chosen explicitly (a clear error).
function M.init_phase()
  local r = {}
  local client, err = leadconnector.new(defaults())
  r.new_ok = client ~= nil
  if not client then r.new_err = describe(nil, err) return end
  M.init_client = client
  r.transport = client.transport
  r.phase = ngx.get_phase()
  r.default_call = describe(client:get_conversation("conv_demo_2"))
  local explicit = leadconnector.new(merged(defaults(), { transport = "ngx" }))
  r.explicit_ngx_call = describe(explicit:get_conversation("conv_demo_2"))
  M.phases.init = r
end

function M.init_worker_phase()
  local r = { phase = ngx.get_phase() }
  local explicit = leadconnector.new(merged(defaults(), { transport = "ngx" }))
  r.explicit_ngx_call = describe(explicit:get_message("msg_demo_1"))
  M.phases.init_worker = r
end

-- GET /init_client: the client made in init_by_lua*, used in a request: cosockets there.
function M.init_client_call()
  local c = M.init_client
  reply {
    phases = M.phases,
    transport = c and c.transport,
    result = c and describe(c:get_message("msg_demo_3")),
  }
end

-- GET /t10_close?url=...: a call in flight on a client (an ngx.thread, the call waiting on a slow server) while
-- the client is closed (issue 10 item 7): the call must end with nil, err, not raise.
function M.close_inflight()
  local client = assert(leadconnector.new(merged(defaults(), { base_url = ngx.var.arg_url, timeout = 5,
    deadline = 5, max_retries = 0 })))
  local th = ngx.thread.spawn(function()
    local v, err = client:send_message { type = "SMS", contactId = "c1", message = "in flight" }
    return describe(v, err)
  end)
  ngx.sleep(0.3)
  client:close()
  local ok, d = ngx.thread.wait(th)
  reply { thread_ok = ok, result = ok and d or tostring(d) }
end

-- GET /t10_rss: this worker's pid and memory (VmRSS, VmHWM in kB).
function M.rss()
  if ngx.var.arg_gc then collectgarbage("collect") end
  local f = io.open("/proc/self/status")
  local text = f:read("*a")
  f:close()
  reply { pid = ngx.worker.pid(), rss = tonumber(text:match("VmRSS:%s*(%d+)")),
    hwm = tonumber(text:match("VmHWM:%s*(%d+)")) }
end

-- Issue 10 item 2, for spec/nginx/fork.conf: a default client made and used in init_by_lua (libcurl, a kept-alive
-- connection in the master), then used by every worker in init_worker_by_lua: each answer must be the worker's.
function M.fork_init(url, prefix)
  conf.url, conf.prefix = url, prefix
  M.fork_client = assert(leadconnector.new { token = "fork-token", base_url = url, timeout = 3, deadline = 5,
    max_retries = 0, rate_limit = false })
  local m = assert(M.fork_client:get_message("master"))
  assert(m.id == "master")
end

function M.fork_worker()
  local pid = ngx.worker.pid()
  local r = { pid = pid, ok = 0, wrong = 0, failed = 0, errors = {} }
  for i = 1, 40 do
    local id = ("w%d_%d"):format(pid, i)
    local m, err = M.fork_client:get_message(id)
    if m and m.id == id then r.ok = r.ok + 1
    elseif m then r.wrong = r.wrong + 1
    else
      r.failed = r.failed + 1
      r.errors[#r.errors + 1] = tostring(err)
    end
  end
  local f = io.open(conf.prefix .. "/fork-" .. pid .. ".json", "w")
  f:write(cjson.encode(r))
  f:close()
end

-- set_by_lua*: no cosockets there.
function M.set_phase()
  local client = leadconnector.new(defaults())
  local d = describe(client:get_message("msg_demo_1"))
  return cjson.encode { phase = ngx.get_phase(), result = d, transport = client.transport }
end

-- log_by_lua*: no cosockets there; the call is refused, and the usual remedy (a 0-delay timer) works.
function M.log_phase()
  local client = leadconnector.new(defaults())
  local r = { phase = ngx.get_phase(), transport = client.transport }
  r.result = describe(client:get_message("msg_demo_1"))
  M.log_seen.direct = r
  ngx.timer.at(0, function()
    M.log_seen.timer = describe(client:get_message("msg_demo_1"))
  end)
end

function M.log_results()
  reply(M.log_seen)
end

-- GET /retry_nonblocking: a get_message that the sandbox answers 503 with Retry-After first (the spec arranges
-- it); the wait before the retry is an ngx.sleep.
function M.retry()
  local opts = defaults()
  opts.max_retries = 2
  local client = assert(leadconnector.new(opts))
  local t0 = ngx.now()
  local d = describe(client:get_message("msg_demo_1"))
  ngx.update_time()
  reply { result = d, seconds = ngx.now() - t0 }
end

-- GET /pools: pool names for several settings (TLS settings must give separate pools).
function M.pools()
  local out = {}
  for _, o in ipairs {
    { base_url = "http://127.0.0.1:1" }, { base_url = "https://127.0.0.1:1" },
    { base_url = "https://127.0.0.1:1", verify = false }, { base_url = "https://localhost:1" },
    { base_url = "https://127.0.0.1:2" },
  } do
    local c = assert(leadconnector.new(merged(defaults(), o)))
    out[#out + 1] = c._session.pool
  end
  reply(out)
end

-- /chunked/... and /unframed/...: answers a message in several pieces with no Content-Length (so chunked, or ended
-- by closing the connection), with a few headers the transports must read.
function M.fake_api()
  local id = ngx.var.uri:match("/conversations/messages/([^/]+)$")
  if not id then return ngx.exit(404) end
  ngx.header["Content-Type"] = "application/json"
  ngx.header["X-RateLimit-Remaining"] = " 42 "
  ngx.header["X-Request-Id"] = "req-" .. id
  if id == "big" then
    ngx.print('{"id":"big","body":"')
    for _ = 1, 64 do ngx.print(("x"):rep(1024)) ngx.flush(true) end
    ngx.print('"}')
    return
  end
  ngx.print('{"id":"', id, '",')
  ngx.flush(true)
  ngx.print('"type":1,"direction":"outbound",')
  ngx.flush(true)
  ngx.print('"body":"in pieces"}')
end

return M

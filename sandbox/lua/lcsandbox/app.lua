-- The sandbox's request handling, called from nginx (see bin/leadconnector-sandbox for the config):
--   init_by_lua:        require("lcsandbox.app").init()        reads the settings, loads --state
--   init_worker_by_lua: require("lcsandbox.app").init_worker() seeds ids, starts the state flusher
--   exit_worker_by_lua: require("lcsandbox.app").exit_worker() writes the state one last time
--   content_by_lua:     require("lcsandbox.app").handle()      every request
-- One worker process holds all the state in its Lua tables.
local json = require "lcsandbox.json"
local store = require "lcsandbox.store"
local rules = require "lcsandbox.rules"
local ratelimit = require "lcsandbox.ratelimit"
local faults = require "lcsandbox.faults"
local oauth = require "lcsandbox.oauth"
local webhooks = require "lcsandbox.webhooks"
local routes = require "lcsandbox.routes"
local operations = require "lcsandbox.operations"

local ngx = ngx
local type, pairs, tostring, floor = type, pairs, tostring, math.floor
local sub, match = string.sub, string.match
local unescape = ngx.unescape_uri
local null = json.null

local M = {}

local CT_JSON = "application/json; charset=utf-8"
local settings = {
  tokens = { ["sandbox-token"] = store.DEFAULT_LOCATION }, -- token -> location
  state_file = nil,
  log_cap = 1000,
}
local bearer = {} -- "Bearer <token>" -> location, the common spelling, for a single lookup

local VERSIONS = {}
for _, v in ipairs(rules.VERSIONS) do VERSIONS[v] = true end
local VERSION_LIST = table.concat(rules.VERSIONS, ", ")

---------------------------------------------------------------------------------------------------
-- settings from the environment (set by bin/leadconnector-sandbox)
local function number_env(name)
  local v = os.getenv(name)
  if v == nil or v == "" then return nil end
  local n = tonumber(v)
  if not n or n < 0 then error(name .. " must be a non-negative number, got " .. v) end
  return n
end

function M.init()
  oauth.init()
  settings.instance = os.getenv("LCSB_INSTANCE")
  local toks = os.getenv("LCSB_TOKENS")
  if toks and toks ~= "" then
    settings.tokens = {}
    for line in toks:gmatch("[^\n]+") do
      local tok, loc = line:match("^([^\t]+)\t(.+)$")
      if not tok then tok, loc = line, store.DEFAULT_LOCATION end
      settings.tokens[tok] = loc
    end
  end
  for tok, loc in pairs(settings.tokens) do bearer["Bearer " .. tok] = loc end

  local limit = os.getenv("LCSB_RATE_LIMIT")
  if limit == "off" then
    ratelimit.configure { enabled = false }
  elseif limit and limit ~= "" then
    ratelimit.configure { limit = number_env("LCSB_RATE_LIMIT") }
  end
  if os.getenv("LCSB_RATE_OFF") == "1" then ratelimit.configure { enabled = false } end -- headers still say the limit
  ratelimit.configure { interval_ms = number_env("LCSB_RATE_INTERVAL_MS"), daily = number_env("LCSB_DAILY_LIMIT") }
  local window = os.getenv("LCSB_RATE_WINDOW")
  if window and window ~= "" then assert(ratelimit.configure { window = window }) end

  store.max_messages = number_env("LCSB_MAX_MESSAGES") or store.max_messages

  local state = os.getenv("LCSB_STATE")
  if state and state ~= "" then
    settings.state_file = state
    local ok, err = store.load(state)
    if ok == nil then error(err) end -- nginx refuses to start; the launcher shows this line
    if ok == false then store.save(state) end -- first run: write the seed, so the path is known writable
  end
  webhooks.init()
end

local function flush()
  if settings.state_file and store.is_dirty() then
    local ok, err = store.save(settings.state_file)
    if not ok then ngx.log(ngx.ERR, "sandbox: cannot write state file: ", err) end
  end
end
M.flush = flush

-- The state is written at most once a second, and when writing takes long (a big state), at most
-- every 20 times the time the last write took, so that a running benchmark is not slowed down.
local function flusher(premature)
  if premature then return end
  ngx.update_time()
  local t0 = ngx.now()
  flush()
  ngx.update_time()
  local took = ngx.now() - t0
  local ok, err = ngx.timer.at(math.max(1, math.min(took * 20, 60)), flusher)
  if not ok then ngx.log(ngx.ERR, "sandbox: cannot schedule the state writer: ", err) end
end

function M.init_worker()
  math.randomseed(floor(ngx.now() * 1000) + ngx.worker.pid())
  if settings.state_file then ngx.timer.at(1, flusher) end
end

function M.exit_worker() flush() end

---------------------------------------------------------------------------------------------------
-- request log: a ring of the last settings.log_cap API requests
local log, log_head, log_n = {}, 0, 0

local function log_add(e)
  local cap = settings.log_cap
  log_head = log_head % cap + 1
  log[log_head] = e
  if log_n < cap then log_n = log_n + 1 end
end

local function log_clear() log, log_head, log_n = {}, 0, 0 end

local function redact_headers(hs)
  local out = {}
  for k, v in pairs(hs or {}) do
    if k == "authorization" then
      local function red(s) return (tostring(s):match("^(%S+)%s") or "") .. " [redacted]" end
      if type(v) == "table" then
        local l = {}
        for i, s in ipairs(v) do l[i] = red(s) end
        v = l
      else
        v = red(v)
      end
    end
    out[k] = v
  end
  return out
end

local function log_list()
  local out = {}
  local cap = settings.log_cap
  for i = 1, log_n do
    local e = log[(log_head - log_n + i - 1) % cap + 1]
    out[i] = {
      method = e.method, path = e.path, headers = redact_headers(e.headers), body = e.body,
      raw_body = e.raw_body, status = e.status, location = e.location, fault = e.fault,
      time = store.iso(e.time),
    }
  end
  return out
end

---------------------------------------------------------------------------------------------------
-- answers
local function send(status, text, h, ct)
  ngx.status = status
  local H = ngx.header
  H["Content-Type"] = ct or CT_JSON
  H["Content-Length"] = #text
  if h then
    for k, v in pairs(h) do H[k] = v end
  end
  if text ~= "" then ngx.print(text) end
end

local function err_body(status, message, error_name)
  return json.encode({ statusCode = status, message = message, error = error_name })
end

local function read_body()
  ngx.req.read_body()
  local data = ngx.req.get_body_data()
  if not data then
    local file = ngx.req.get_body_file()
    if file then
      local f = io.open(file, "rb")
      if f then
        data = f:read("*a")
        f:close()
      end
    end
  end
  return data
end

local function not_found(msg) return 404, err_body(404, msg, "Not Found") end

---------------------------------------------------------------------------------------------------
-- the API: method + path -> operation name, derived from the library's catalogue (lcsandbox.routes);
-- the operations themselves are in lcsandbox.operations.
local router = routes.default()

local function location_of(hs)
  local auth = hs["authorization"]
  if type(auth) ~= "string" then return nil end
  local loc = bearer[auth]
  if loc then return loc end
  local tok = match(auth, "^[Bb][Ee][Aa][Rr][Ee][Rr]%s+(%S+)%s*$")
  return tok and (settings.tokens[tok] or oauth.location_of(tok)) -- static tokens, or ones /oauth/token issued
end

local UNAUTHORIZED = json.encode({
  statusCode = 401, message = "Invalid token: access token is invalid", error = "Unauthorized",
})
local TOO_MANY = json.encode({ statusCode = 429, message = "Too Many Requests" })

-- Processes an API request. Returns status, body text [, headers, content type]; fills h with headers.
local function process(method, path, hs, h, e)
  if sub(path, 1, 7) == "/oauth/" then return oauth.process(method, path, hs, read_body, e) end
  local r, params, args = routes.match(router, method, path, unescape)
  local loc = location_of(hs)
  e.location = loc
  if not r then
    ratelimit.check(loc, h, false)
    return not_found("Cannot " .. method .. " " .. path)
  end
  if not loc then
    ratelimit.check(nil, h, false)
    return 401, UNAUTHORIZED
  end
  local version = hs["version"]
  if not VERSIONS[version] then
    ratelimit.check(loc, h, false)
    if version == nil then
      return 400, err_body(400, "Version header was not found")
    end
    return 400, err_body(400, "Version header " .. (type(version) == "string" and version or "(repeated)") ..
      " is not supported; known versions: " .. VERSION_LIST)
  end
  if not ratelimit.check(loc, h, true) then return 429, TOO_MANY end

  return operations.run(r, { loc = loc, params = params, args = args, hs = hs, e = e, read_body = read_body })
end

local HTML_502 = "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n" ..
  "<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>cloudflare</center>\r\n</body>\r\n</html>\r\n"
local REASONS = {
  [400] = "Bad Request", [401] = "Unauthorized", [403] = "Forbidden", [404] = "Not Found",
  [408] = "Request Timeout", [409] = "Conflict", [413] = "Payload Too Large", [422] = "Unprocessable Entity",
  [429] = "Too Many Requests", [500] = "Internal Server Error", [502] = "Bad Gateway",
  [503] = "Service Unavailable", [504] = "Gateway Timeout",
}

-- Answers with fault f. normal = {status, text} when the request was processed first (after=true).
local function answer_fault(f, method, h, e, normal)
  local status, text, ct
  local action = f.action
  if action == "drop" then
    e.status = 444
    return ngx.exit(444)
  elseif action == "html502" then
    status, text, ct = f.status or 502, HTML_502, "text/html"
    h = {}
  elseif action == "empty201" then
    status, text = f.status or 201, ""
  elseif action == "malformed" then
    status = f.status or (normal and normal.status) or (method == "POST" and 201 or 200)
    local full = (normal and normal.text) or json.encode({
      conversationId = store.new_id(), messageId = store.new_id(), status = "pending",
      msg = "Message queued successfully.",
    })
    text = sub(full, 1, floor(#full / 2))
  else
    status = f.status
    if f.body then
      text = f.body
      ct = f.content_type or (f.body_is_json and CT_JSON or "text/plain; charset=utf-8")
    else
      text = err_body(status, REASONS[status] or "Error")
    end
  end
  if f.content_type then ct = f.content_type end
  if f.headers then
    for k, v in pairs(f.headers) do h[k] = v end
  end
  e.status = status
  return send(status, text, h, ct)
end

local function api(method, path, raw_path)
  local hs = ngx.req.get_headers()
  local e = { method = method, path = raw_path, headers = hs, time = ngx.now() }
  log_add(e)
  local h = {}
  local f = faults.take(method, path)
  if f then
    e.fault = f.action or (f.status and "status") or "delay"
    if not f.after then
      if f.delay_ms then ngx.sleep(f.delay_ms / 1000) end
      if f.status or f.action then
        local data = read_body()
        e.raw_body = data
        e.body = data and json.decode(data) or data
        ratelimit.check(location_of(hs), h, false)
        return answer_fault(f, method, h, e, nil)
      end
    end
  end
  local status, text, extra, ct = process(method, path, hs, h, e)
  if extra then
    for k, v in pairs(extra) do h[k] = v end
  end
  if f and f.after then
    if f.delay_ms then ngx.sleep(f.delay_ms / 1000) end
    if f.status or f.action then
      return answer_fault(f, method, h, e, { status = status, text = text })
    end
  end
  e.status = status
  return send(status, text, h, ct)
end

---------------------------------------------------------------------------------------------------
-- control endpoints, /_sandbox/*
local function control_body()
  local data = read_body()
  if not data or data == "" then return {} end
  local v, err = json.decode(data)
  if v == nil then return nil, "invalid JSON: " .. tostring(err) end
  if type(v) ~= "table" then return nil, "the body must be a JSON object or array" end
  return v
end

local function ok(status, t) return send(status, json.encode(t)) end
local function bad(status, msg) return send(status, json.encode({ statusCode = status, message = msg })) end

local function current_config()
  local c = ratelimit.config
  return {
    rate_limit = c.enabled and c.limit or false,
    rate_interval_ms = c.interval_ms,
    rate_window = c.window,
    daily_limit = c.daily,
    state_file = settings.state_file or null,
    max_messages = store.max_messages,
    messages_shape = operations.config.messages_shape,
    stored_messages = store.stats().messages,
    tokens = (function()
      local n = 0
      for _ in pairs(settings.tokens) do n = n + 1 end
      return n
    end)(),
  }
end

local function reset()
  store.seed()
  operations.reset()
  faults.clear()
  log_clear()
  ratelimit.reset()
  oauth.reset()
  webhooks.clear()
  flush()
end

local control = {}
webhooks.control(control, ok, bad, control_body)

control["GET /_sandbox/health"] = function()
  return ok(200, { ok = true, service = "leadconnector-sandbox", pid = ngx.worker.pid(), instance = settings.instance })
end

control["POST /_sandbox/reset"] = function()
  reset()
  return ok(200, { ok = true })
end

control["GET /_sandbox/faults"] = function()
  local out = {}
  for i, f in ipairs(faults.list()) do out[i] = faults.describe(f) end
  return ok(200, { faults = json.array(out) })
end

control["POST /_sandbox/faults"] = function()
  local b, err = control_body()
  if not b then return bad(400, err) end
  local specs = (b[1] ~= nil) and b or { b }
  local parsed = {}
  for i, t in ipairs(specs) do
    local f, perr = faults.parse(t)
    if not f then return bad(400, (#specs > 1 and ("fault " .. i .. ": ") or "") .. perr) end
    parsed[i] = f
  end
  local out = {}
  for i, f in ipairs(parsed) do out[i] = faults.describe(faults.add(f)) end
  return ok(201, { faults = out })
end

control["DELETE /_sandbox/faults"] = function()
  return ok(200, { cleared = faults.clear() })
end

control["GET /_sandbox/config"] = function() return ok(200, current_config()) end

control["POST /_sandbox/config"] = function()
  local b, err = control_body()
  if not b then return bad(400, err) end
  local t = {}
  local function positive(name, v)
    if type(v) ~= "number" or v <= 0 or v % 1 ~= 0 then
      return nil, name .. " must be a whole number > 0"
    end
    return v
  end
  if b.rate_limit == false then
    t.enabled = false
  elseif b.rate_limit ~= nil then
    local v, e = positive("rate_limit", b.rate_limit)
    if not v then return bad(400, e .. " or false") end
    t.limit, t.enabled = v, true
  end
  if b.rate_interval_ms ~= nil then
    local v, e = positive("rate_interval_ms", b.rate_interval_ms)
    if not v then return bad(400, e) end
    t.interval_ms = v
  end
  if b.daily_limit ~= nil then
    local v, e = positive("daily_limit", b.daily_limit)
    if not v then return bad(400, e) end
    t.daily = v
  end
  if b.rate_window ~= nil then t.window = b.rate_window end
  local oerr = operations.check_config(b)
  if oerr then return bad(400, oerr) end
  local okc, cerr = ratelimit.configure(t)
  if not okc then return bad(400, cerr) end
  operations.configure(b)
  ratelimit.reset()
  return ok(200, current_config())
end

-- Another sender of one location (default: the first token's) spends `count` requests of its budget now.
control["POST /_sandbox/ratelimit/spend"] = function()
  local b, err = control_body()
  if not b then return bad(400, err) end
  if type(b.count) ~= "number" or b.count < 0 or b.count % 1 ~= 0 or b.count > 1e6 then
    return bad(400, "count must be a whole number 0..1000000")
  end
  if b.location ~= nil and type(b.location) ~= "string" then return bad(400, "location must be a string") end
  return ok(200, { spent = ratelimit.spend(b.location or store.DEFAULT_LOCATION, b.count) })
end

control["GET /_sandbox/requests"] = function()
  return ok(200, json.array(log_list()))
end

control["DELETE /_sandbox/requests"] = function()
  local n = log_n
  log_clear()
  return ok(200, { cleared = n })
end

local function arg(args, name)
  local v = args[name]
  if type(v) == "table" then v = v[1] end
  if v == true or v == "" then v = nil end
  return v
end

control["GET /_sandbox/messages"] = function()
  local args = ngx.req.get_uri_args()
  return ok(200, json.array(store.messages_for(arg(args, "contactId"), arg(args, "locationId"))))
end

control["POST /_sandbox/flush"] = function()
  if not settings.state_file then return bad(409, "no --state file was given") end
  flush()
  return ok(200, { ok = true, state_file = settings.state_file })
end

oauth.control(control, ok, bad, control_body) -- /_sandbox/oauth/*

local function is_loopback(addr)
  return addr and (sub(addr, 1, 4) == "127." or addr == "::1" or sub(addr, 1, 5) == "unix:")
end

local function handle_control(method, path)
  if not is_loopback(ngx.var.remote_addr) then
    return bad(403, "the /_sandbox/ endpoints answer on the loopback interface only")
  end
  local fn = control[method .. " " .. path]
  if fn then return fn() end
  local status, body, ct = operations.handle_control(method, path, read_body)
  if not status then return bad(404, "Cannot " .. method .. " " .. path) end
  if type(body) == "table" then
    if status >= 400 then body.statusCode = status end
    return ok(status, body)
  end
  return send(status, body, nil, ct)
end

---------------------------------------------------------------------------------------------------
function M.handle()
  local method = ngx.req.get_method()
  local raw = ngx.var.request_uri
  local path = match(raw, "^[^?]*")
  if sub(path, 1, 10) == "/_sandbox/" then return handle_control(method, path) end
  return api(method, path, raw)
end

return M

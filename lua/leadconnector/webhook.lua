--- leadconnector.webhook: HighLevel webhook deliveries, verified over the raw body bytes.
--
--     local webhook = require "leadconnector.webhook"
--     local event, err = webhook.verify(raw_body, headers, { seen = webhook.memory_seen() })
--     if not event then return reply(err.kind == "replay" and err.reason == "duplicate" and 200 or 401) end
--     print(event.type, event.messageId)
--
-- The signature check is the C core's (OpenSSL: Ed25519 for X-GHL-Signature, RSA-SHA256 for the legacy
-- X-WH-Signature); this layer picks the header and the key, then checks the timestamp and the webhookId.
-- Everything fails closed: no event is handed out unless a signature matched the exact bytes received.
-- Inside nginx, webhook.handler { on_event = f, ... } answers the whole request (README "Receiving webhooks").
-- @module leadconnector.webhook

local core = require "leadconnector.core"

local type, pairs, tostring, error, pcall, select = type, pairs, tostring, error, pcall, select
local lower, match, floor = string.lower, string.match, math.floor
local key_of, check, new_event, new_error = core.webhook_key, core.webhook_check, core.webhook_event, core.error
local ngx = ngx

local M = {}

-- The vendor's public keys (API.md section 5; reference/webhook-*.pem).
M.ED25519_PUBLIC_KEY = [[
-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEAi2HR1srL4o18O8BRa7gVJY7G7bupbN3H9AwJrHCDiOg=
-----END PUBLIC KEY-----
]]
M.RSA_PUBLIC_KEY = [[
-----BEGIN PUBLIC KEY-----
MIICIjANBgkqhkiG9w0BAQEFAAOCAg8AMIICCgKCAgEAokvo/r9tVgcfZ5DysOSC
Frm602qYV0MaAiNnX9O8KxMbiyRKWeL9JpCpVpt4XHIcBOK4u3cLSqJGOLaPuXw6
dO0t6Q/ZVdAV5Phz+ZtzPL16iCGeK9po6D6JHBpbi989mmzMryUnQJezlYJ3DVfB
csedpinheNnyYeFXolrJvcsjDtfAeRx5ByHQmTnSdFUzuAnC9/GepgLT9SM4nCpv
uxmZMxrJt5Rw+VUaQ9B8JSvbMPpez4peKaJPZHBbU3OdeCVx5klVXXZQGNHOs8gF
3kvoV5rTnXV0IknLBXlcKKAQLZcY/Q9rG6Ifi9c+5vqlvHPCUJFT5XUGG5RKgOKU
J062fRtN+rLYZUV+BjafxQauvC8wSWeYja63VSUruvmNj8xkx2zE/Juc+yjLjTXp
IocmaiFeAO6fUtNjDeFVkhf5LNb59vECyrHD2SQIrhgXpO4Q3dVNA5rw576PwTzN
h/AMfHKIjE4xQA1SZuYJmNnmVZLIZBlQAF9Ntd03rfadZ+yDiOXCCs9FkHibELhC
HULgCsnuDJHcrGNd5/Ddm5hxGQ0ASitgHeMZ0kcIOwKDOzOU53lDza6/Y09T7sYJ
PQe7z0cvj7aE4B+Ax1ZoZGPzpJlZtGXCsu9aTEGEnKzmsFqwcSsnw3JB31IGKAyk
T1hhTiaCeIY/OwwwNUY2yvcCAwEAAQ==
-----END PUBLIC KEY-----
]]

M.DEFAULT_TOLERANCE = 300      -- seconds either side of now
M.DEFAULT_MAX_BODY = 16 * 1024 * 1024

---------------------------------------------------------------------------------------------------------------------
-- keys: parsed once per distinct PEM (the two built-in ones on first use) and kept

local keys = { ed25519 = {}, rsa = {} }   -- kind -> PEM -> key userdata
local nkeys = 0
local MAX_KEYS = 64                       -- a caller making keys per request must not grow this without bound

--- webhook.key(pem, kind) -> the parsed key (kind "ed25519" or "rsa"), or raises on a PEM that is not one.
local function key(pem, kind, what)
  local k = keys[kind][pem]
  if k then return k end
  if type(pem) ~= "string" then error("leadconnector.webhook: " .. what .. " must be a PEM string", 3) end
  local parsed, why = key_of(pem, kind)
  if not parsed then error("leadconnector.webhook: " .. what .. ": " .. why, 3) end
  if nkeys >= MAX_KEYS then keys, nkeys = { ed25519 = {}, rsa = {} }, 0 end
  keys[kind][pem] = parsed
  nkeys = nkeys + 1
  return parsed
end
function M.key(pem, kind) return key(pem, kind or "ed25519", "key") end

---------------------------------------------------------------------------------------------------------------------
-- headers: a table with names in any case (each name once), or a function(name) -> value

local AMBIGUOUS = {}

local function header(headers, name)
  if type(headers) == "function" then
    local v = headers(name)
    if v == nil or type(v) == "string" then return v end
    return AMBIGUOUS
  end
  local lname, found = lower(name), nil
  for k, v in pairs(headers) do
    if type(k) == "string" and lower(k) == lname then
      if found ~= nil or type(v) ~= "string" then return AMBIGUOUS end -- repeated: no way to tell which is real
      found = v
    end
  end
  if found == nil and type(headers) == "table" then
    -- tables with a lookup metamethod (ngx.req.get_headers()) answer under any spelling
    local v = headers[lname]
    if v ~= nil then return type(v) == "string" and v or AMBIGUOUS end
  end
  return found
end

local function fail(kind, reason, msg)
  local e = new_error(kind, msg)
  e.reason = reason
  return nil, e
end

-- Which header and key to check. A value "N/A" means the sender did not sign with that scheme.
local function signature_of(headers, opts)
  local ghl = header(headers, "X-GHL-Signature")
  if ghl ~= nil and ghl ~= "N/A" then
    if ghl == AMBIGUOUS then return fail("signature", "malformed", "X-GHL-Signature is repeated") end
    return ghl, key(opts.public_key or M.ED25519_PUBLIC_KEY, "ed25519", "opts.public_key"), "X-GHL-Signature"
  end
  local wh = header(headers, "X-WH-Signature")
  if wh == nil or wh == "N/A" then
    return fail("signature", "missing", ghl and "X-GHL-Signature is N/A and there is no X-WH-Signature"
      or "no X-GHL-Signature header")
  end
  if opts.rsa == false then
    return fail("signature", "missing", "no X-GHL-Signature header (the legacy X-WH-Signature is not accepted: rsa = false)")
  end
  if wh == AMBIGUOUS then return fail("signature", "malformed", "X-WH-Signature is repeated") end
  return wh, key(opts.rsa_public_key or M.RSA_PUBLIC_KEY, "rsa", "opts.rsa_public_key"), "X-WH-Signature"
end

---------------------------------------------------------------------------------------------------------------------
-- timestamps: ISO 8601 (2025-01-28T10:32:14.123Z, or with an offset)

local function days_from_civil(y, m, d)       -- days since 1970-01-01 of a proleptic Gregorian date
  y = m <= 2 and y - 1 or y
  local era = floor(y / 400)
  local yoe = y - era * 400
  local mp = (m + 9) % 12
  local doy = floor((153 * mp + 2) / 5) + d - 1
  local doe = yoe * 365 + floor(yoe / 4) - floor(yoe / 100) + doy
  return era * 146097 + doe - 719468
end

local function parse_time(s)
  if type(s) ~= "string" or #s > 40 then return nil end
  local y, mo, d, h, mi, sec, rest = match(s, "^(%d%d%d%d)%-(%d%d)%-(%d%d)[Tt ](%d%d):(%d%d):(%d%d)(.*)$")
  if not y then return nil end
  y, mo, d, h, mi, sec = tonumber(y), tonumber(mo), tonumber(d), tonumber(h), tonumber(mi), tonumber(sec)
  if mo < 1 or mo > 12 or d < 1 or d > 31 or h > 23 or mi > 59 or sec > 60 then return nil end
  local frac, zone = match(rest, "^(%.?%d*)(.*)$")
  if frac == "." then return nil end
  local off
  if zone == "Z" or zone == "z" then
    off = 0
  else
    local sign, oh, om = match(zone, "^([+-])(%d%d):?(%d%d)$")
    if not sign then return nil end
    off = (tonumber(oh) * 60 + tonumber(om)) * 60
    if sign == "-" then off = -off end
  end
  local t = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec - off
  if frac ~= "" then t = t + tonumber("0" .. frac) end
  return t
end
M._parse_time = parse_time

local function now_of(opts)
  if opts.now ~= nil then return opts.now end
  if ngx then return ngx.now() end
  return os.time()
end

---------------------------------------------------------------------------------------------------------------------
-- verify

local OPTS = { public_key = "string", rsa_public_key = "string", rsa = "boolean", tolerance = "number",
  now = "number", seen = "table", seen_ttl = "number" }
local NO_OPTS = {}

local function check_opts(opts, level)
  if opts == nil then return NO_OPTS end
  if type(opts) ~= "table" then error("leadconnector.webhook: opts must be a table", level) end
  for k, v in pairs(opts) do
    local want = OPTS[k]
    if not want then error("leadconnector.webhook: unknown option " .. tostring(k), level) end
    if type(v) ~= want and not (k == "tolerance" and v == false) then
      error("leadconnector.webhook: opts." .. tostring(k) .. " must be a " .. want, level)
    end
  end
  local seen = opts.seen
  if seen ~= nil and type(seen.add) ~= "function" then
    error("leadconnector.webhook: opts.seen must have an add(id, ttl) method", level)
  end
  return opts
end

local function verify(raw_body, headers, opts)
  local sig, k, hname = signature_of(headers, opts)
  if not sig then return nil, k end
  local ok, why = check(k, raw_body, sig)
  if not ok then
    return fail("signature", why == "does not match" and "mismatch" or "malformed", hname .. " " .. why)
  end
  local event, derr = new_event(raw_body)
  if not event then return fail("decode", "decode", derr) end

  local tolerance = opts.tolerance
  if tolerance == nil then tolerance = M.DEFAULT_TOLERANCE end
  if tolerance then
    local ts = event.timestamp
    if ts ~= nil then
      local t = parse_time(ts)
      if not t then return fail("replay", "timestamp", "timestamp is not an ISO 8601 time") end
      local d = now_of(opts) - t
      if d > tolerance then return fail("replay", "stale", "timestamp is " .. floor(d) .. " s old") end
      if d < -tolerance then return fail("replay", "future", "timestamp is " .. floor(-d) .. " s in the future") end
    end
  end

  local seen = opts.seen
  local id = event.webhookId
  if seen and id ~= nil then
    if type(id) ~= "string" or id == "" then return fail("decode", "decode", "webhookId is not a string") end
    local ttl = opts.seen_ttl or (tolerance and 2 * tolerance + 60) or 7 * 86400
    local okc, new, serr = pcall(seen.add, seen, id, ttl)
    if not okc or new == nil then
      return fail("replay", "store", "webhookId store failed: " .. tostring(okc and serr or new))
    end
    if not new then return fail("replay", "duplicate", "webhookId " .. id .. " was already received") end
  end
  return event
end

--- webhook.verify(raw_body, headers [, opts]) -> event | nil, err (kind signature, replay or decode)
function M.verify(raw_body, headers, opts)
  if type(raw_body) ~= "string" then error("leadconnector.webhook.verify: raw_body must be a string", 2) end
  if type(headers) ~= "table" and type(headers) ~= "function" then
    error("leadconnector.webhook.verify: headers must be a table or a function(name)", 2)
  end
  return verify(raw_body, headers, check_opts(opts, 3))
end

M.is_event = core.webhook_is_event

---------------------------------------------------------------------------------------------------------------------
-- seen stores: add(id, ttl) -> true (new) | false (already there) | nil, err; remove(id)

--- webhook.memory_seen([max]) -> a store in this Lua state (one process; per worker inside nginx).
-- Keeps at most max ids (default 100000); the oldest go first once it is full.
function M.memory_seen(max)
  max = max or 100000
  local until_, queue, qexp, head, tail = {}, {}, {}, 1, 0
  local store = {}
  local clock = ngx and ngx.now or core.now
  function store.add(_, id, ttl)
    local t = clock()
    while head <= tail and (qexp[head] <= t or tail - head + 1 >= max) do -- expired, or full: oldest first
      local old = queue[head]
      if until_[old] == qexp[head] then until_[old] = nil end
      queue[head], qexp[head] = nil, nil
      head = head + 1
    end
    local exp = until_[id]
    if exp and exp > t then return false end
    exp = t + (ttl or 86400)
    until_[id] = exp
    tail = tail + 1
    queue[tail], qexp[tail] = id, exp
    return true
  end
  function store.remove(_, id) until_[id] = nil end
  return store
end

--- webhook.shdict_seen(name) -> a store in lua_shared_dict `name`, shared by every worker of the nginx.
function M.shdict_seen(name)
  local dict = ngx and ngx.shared and ngx.shared[name]
  if not dict then error("leadconnector.webhook.shdict_seen: no lua_shared_dict " .. tostring(name), 2) end
  local store = {}
  function store.add(_, id, ttl)
    local ok, err = dict:add("wh:" .. id, true, ttl or 86400)
    if ok then return true end
    if err == "exists" then return false end
    return nil, err
  end
  function store.remove(_, id) dict:delete("wh:" .. id) end
  return store
end

--- webhook.redis_seen(opts) -> a store in Redis, shared by every process and machine using it.
-- opts: leadconnector.redis's connect options (host, port, timeout, password, db) and prefix (key prefix, default
-- "lc:webhook:"). Connects for each call (inside nginx the connection goes back to the pool): a store made once
-- serves every request.
function M.redis_seen(opts)
  if type(opts) ~= "table" then error("leadconnector.webhook.redis_seen: opts must be a table", 2) end
  local prefix = opts.prefix or "lc:webhook:"
  local conn = {}
  for k, v in pairs(opts) do if k ~= "prefix" then conn[k] = v end end
  local function call(...)
    local r, err = require("leadconnector.redis").connect(conn)
    if not r then return nil, err end
    local v, cerr = r:call(...)
    r:close()
    return v, cerr
  end
  local store = {}
  function store.add(_, id, ttl)
    local v, err = call("SET", prefix .. id, "1", "NX", "PX", tostring(floor((ttl or 86400) * 1000)))
    if v == "OK" then return true end
    if v == false then return false end
    return nil, err or ("unexpected reply " .. tostring(v))
  end
  function store.remove(_, id) return call("DEL", prefix .. id) end
  return store
end

---------------------------------------------------------------------------------------------------------------------
-- nginx: content_by_lua_block { require("leadconnector.webhook").handler { on_event = f, ... } }

local function read_raw_body(max)
  ngx.req.read_body()
  local body = ngx.req.get_body_data()
  if body then return body end
  local file = ngx.req.get_body_file()
  if not file then return "" end               -- no body at all
  -- nginx wrote the body to its temp file (larger than client_body_buffer_size): read it, bounded.
  local f, err = io.open(file, "rb")
  if not f then return nil, 500, "cannot open the body file: " .. tostring(err) end
  local data = f:read(max + 1)
  f:close()
  if data == nil then return "" end
  if #data > max then return nil, 413, "body larger than " .. max .. " bytes" end
  return data
end

local function answer(status, what)
  ngx.status = status
  ngx.header["Content-Type"] = "application/json"
  ngx.print('{"status":' .. status .. ',"message":"' .. what .. '"}')
  return ngx.exit(ngx.OK)
end

local HANDLER_KEYS = { on_event = true, max_body_size = true }

--- webhook.handler(conf): answers the current request. conf: on_event = function(event) -> truthy | nil, err
-- (returning nothing or a true value is success; required), max_body_size (bytes, default 16 MiB), and verify's opts (public_key, rsa_public_key, rsa,
-- tolerance, seen, seen_ttl). 401 bad signature or stale, 200 duplicate (f not called), 200 after f succeeded,
-- 500 when f raised or returned nil, err (the webhookId is then forgotten, so the retry is handled).
function M.handler(conf)
  if not ngx then error("leadconnector.webhook.handler runs inside nginx (content_by_lua*)", 2) end
  if type(conf) ~= "table" or type(conf.on_event) ~= "function" then
    error("leadconnector.webhook.handler: conf.on_event must be a function(event)", 2)
  end
  local opts = {}
  for k, v in pairs(conf) do if not HANDLER_KEYS[k] then opts[k] = v end end
  check_opts(opts, 3)
  local seen = opts.seen
  if seen and type(seen.remove) ~= "function" then
    error("leadconnector.webhook.handler: conf.seen must have remove(id) too (a failed event is retried)", 2)
  end
  if ngx.req.get_method() ~= "POST" then
    ngx.header["Allow"] = "POST"
    return answer(405, "POST only")
  end

  local body, status, why = read_raw_body(conf.max_body_size or M.DEFAULT_MAX_BODY)
  if not body then
    ngx.log(ngx.ERR, "webhook: ", why)
    return answer(status, status == 413 and "body too large" or "internal error")
  end

  local okv, event, err = pcall(verify, body, ngx.req.get_headers(100), opts)
  if not okv then                              -- fail closed: a broken key or store is a 500, never an event
    ngx.log(ngx.ERR, "webhook: verification failed: ", tostring(event))
    return answer(500, "internal error")
  end
  if not event then
    if err.kind == "replay" and err.reason == "duplicate" then
      ngx.log(ngx.INFO, "webhook: ", tostring(err))
      return answer(200, "duplicate")
    end
    if err.kind == "replay" and err.reason == "store" then
      ngx.log(ngx.ERR, "webhook: ", tostring(err))
      return answer(500, "internal error")
    end
    ngx.log(ngx.WARN, "webhook: refused: ", tostring(err))
    return answer(err.kind == "decode" and 400 or 401, err.kind)
  end

  local okf, res, ferr = pcall(conf.on_event, event)
  if not okf or res == false or (res == nil and ferr ~= nil) then
    if seen and event.webhookId ~= nil then pcall(seen.remove, seen, event.webhookId) end
    ngx.log(ngx.ERR, "webhook: on_event failed for ", tostring(event), ": ", tostring(okf and ferr or res))
    return answer(500, "not handled")
  end
  return answer(200, "ok")
end

return M

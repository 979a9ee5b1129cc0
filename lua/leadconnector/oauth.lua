--- leadconnector.oauth: OAuth 2.0 for Marketplace apps (and so for conversation providers).
--
--     local oauth = require "leadconnector.oauth"
--     local app = oauth.app { client_id = ..., client_secret = ..., store = oauth.file_store "/var/lib/myapp/tokens" }
--     local url = app:authorize_url { redirect_uri = ..., scope = { "conversations.readonly" }, state = ... }
--     local token, err = app:exchange_code(code, redirect_uri)          -- stored under its locationId/companyId
--     local client = leadconnector.new { auth = app:token_source(token.locationId) }
--
-- A token source hands the client a valid access token before each call. It refreshes ahead of expiry (`leeway`)
-- and, after a 401, once per failing token. Refreshes are single-flight wherever the store's lock reaches: the
-- refresher takes the store's lock for the key, reads the record again under it, refreshes, stores the new pair,
-- and only then releases the lock and uses the token. Everyone else waits for the lock and re-reads the store.
-- A refresh token the API refuses is marked dead in the store, so no one tries it again: every later call gets an
-- `auth` error at once, until the app is installed again (exchange_code or save).
--
-- Stores (see README "OAuth"): any table with
--     store:get(key)            -> text | nil (none)            | nil, err
--     store:set(key, text)      -> true                          | nil, err
--     store:lock(key, ttl_s)    -> owner (a string)  | false (held by someone else) | nil, err
--     store:unlock(key, owner)  -> true  (releases only the lock `owner` still holds)
-- The lock must expire by itself after ttl_s seconds (its holder may die).
-- @module leadconnector.oauth

local core = require "leadconnector.core"
local cjson = require "cjson.safe"

local type, pairs, ipairs, tostring, tonumber, setmetatable, getmetatable, error, pcall, rawget = type, pairs,
  ipairs, tostring, tonumber, setmetatable, getmetatable, error, pcall, rawget
local format, find, sub, gsub, byte, lower, concat = string.format, string.find, string.sub, string.gsub,
  string.byte, string.lower, table.concat
local floor, min = math.floor, math.min
local now, wall = core.now, core.time

local M = {
  DEFAULT_BASE_URL = "https://services.leadconnectorhq.com",
  AUTHORIZE_URL = "https://marketplace.gohighlevel.com/v2/oauth/chooselocation",
  WHITE_LABEL_AUTHORIZE_URL = "https://marketplace.leadconnectorhq.com/oauth/chooselocation",
  VERSION = "2021-07-28", -- the Version the vendor spec gives /oauth/locationToken and /oauth/installedLocations
}

local FORM = "application/x-www-form-urlencoded"

local function in_nginx()
  return type(ngx) == "table" and type(ngx.get_phase) == "function" -- luacheck: ignore 113
end

-- Waits without blocking nginx where nginx allows it.
local function sleep(s)
  if in_nginx() then return require("leadconnector.ngx").sleep(s) end
  return core.sleep(s)
end

local function invalid(field, msg)
  local err = core.error("invalid", msg)
  err.field, err.request_sent = field, false
  return err
end

local function auth_error(msg)
  local err = core.error("auth", msg)
  err.request_sent = false
  return err
end

-- A token store failure (file, shdict, Redis): kind `network` (`timeout` when the store said so), err.store = true.
local function store_error(what, msg)
  msg = tostring(msg)
  local timed_out = find(msg, "^timeout") or find(msg, "^redis: timeout")
  local err = core.error(timed_out and "timeout" or "network", "token store: " .. what .. ": " .. msg)
  err.store, err.request_sent = true, false
  return err
end

--------------------------------------------------------------------------------------------------------------------
-- Redaction: every secret in play (client secret, refresh token, code, bearer) is cut out of an error.

local function replace_plain(s, needle)
  if #needle == 0 then return s end
  local out, i, n = {}, 1, 0
  while true do
    local a, b = find(s, needle, i, true)
    if not a then break end
    n = n + 1
    out[n] = sub(s, i, a - 1)
    n = n + 1
    out[n] = "[REDACTED]"
    i = b + 1
  end
  if n == 0 then return s end
  out[n + 1] = sub(s, i)
  return concat(out)
end

local function scrub(v, secrets, seen)
  local t = type(v)
  if t == "string" then
    for i = 1, #secrets do v = replace_plain(v, secrets[i]) end
    return v
  end
  if t ~= "table" then return v end
  seen = seen or {}
  if seen[v] then return v end
  seen[v] = true
  local fix = {}
  for k, x in pairs(v) do
    local k2 = scrub(k, secrets, seen)
    local x2 = scrub(x, secrets, seen)
    if k2 ~= k or x2 ~= x then fix[#fix + 1] = { k, k2, x2 } end
  end
  for _, f in ipairs(fix) do
    v[f[1]] = nil
    v[f[2]] = f[3]
  end
  return v
end
M._scrub = scrub

--------------------------------------------------------------------------------------------------------------------
-- Forms and query strings.

local function pct(s)
  return (gsub(tostring(s), "[^%w%-%._~]", function(c) return format("%%%02X", byte(c)) end))
end

local function encode_form(fields, order)
  local parts = {}
  for _, k in ipairs(order) do
    local v = fields[k]
    if v ~= nil then parts[#parts + 1] = pct(k) .. "=" .. pct(v) end
  end
  return concat(parts, "&")
end

--------------------------------------------------------------------------------------------------------------------
-- Token records: what the store holds (JSON text), one per location or company.

local SECRET_FIELDS = { access_token = true, refresh_token = true }

local Token = {}
Token.__index = Token
Token.__name = "leadconnector.oauth.Token"
Token.__tostring = function(t)
  local left = t.expires_at and floor(t.expires_at - wall()) or nil
  return format("leadconnector.oauth.Token (%s %s%s)", tostring(t.userType or "?"),
    tostring(t.locationId or t.companyId or "?"), left and format(", expires in %d s", left) or "")
end

local function as_token(rec)
  local t = {}
  for k, v in pairs(rec) do t[k] = v end
  return setmetatable(t, Token)
end

local function key_of(rec)
  if rec.userType == "Company" then return rec.companyId or rec.locationId end
  return rec.locationId or rec.companyId
end

-- A record from a token answer (the /oauth/token or /oauth/locationToken fields).
local function record(answer, extra)
  local rec = {}
  for k, v in pairs(answer) do
    if type(k) == "string" and (type(v) == "string" or type(v) == "number" or type(v) == "boolean" or
        type(v) == "table") then
      rec[k] = v
    end
  end
  for k, v in pairs(extra or {}) do rec[k] = v end
  local t = wall()
  rec.obtained_at = rec.obtained_at or t
  if type(rec.expires_at) ~= "number" then
    local e = tonumber(rec.expires_in)
    rec.expires_at = e and (rec.obtained_at + e) or nil
  end
  rec.dead = nil
  return rec
end

local function decode_record(text, key)
  local rec = cjson.decode(text)
  if type(rec) ~= "table" then return nil, store_error("get " .. key, "stored text is not a token record") end
  return rec
end

--------------------------------------------------------------------------------------------------------------------
-- Stores.

local function random_id()
  local f = io.open("/dev/urandom", "rb")
  local s = f and f:read(12)
  if f then f:close() end
  if not s or #s < 12 then s = tostring(now()) .. tostring({}) .. tostring(math.random()) end
  return (gsub(s, ".", function(c) return format("%02x", byte(c)) end))
end
M._random_id = random_id

--- oauth.memory_store(): this Lua state only (one process, or one nginx worker). For tests and single processes.
function M.memory_store()
  local data, locks = {}, {}
  return {
    kind = "memory",
    get = function(_, key) return data[key] end,
    set = function(_, key, text) data[key] = text return true end,
    lock = function(_, key, ttl)
      local l = locks[key]
      if l and l.exp > now() then return false end
      local owner = random_id()
      locks[key] = { owner = owner, exp = now() + ttl }
      return owner
    end,
    unlock = function(_, key, owner)
      local l = locks[key]
      if l and l.owner == owner then locks[key] = nil end
      return true
    end,
  }
end

local function fname(key)
  return (gsub(key, "[^%w%-_]", function(c) return format("%%%02X", byte(c)) end))
end

local function read_file(path)
  local f, msg, code = io.open(path, "rb")
  if not f then
    if code == 2 then return nil end -- ENOENT: nothing stored
    return nil, msg
  end
  local s = f:read("*a")
  f:close()
  return s
end

--- oauth.file_store(dir): one JSON file per key in dir (mode 0600, written to a temp file and renamed), and a lock
-- between the processes of one machine: a lease file (owner, expiry) changed only under a flock on a guard file.
-- The lease outlives a crashed holder until it expires; the flock never does (the kernel drops it).
function M.file_store(dir)
  if type(dir) ~= "string" or dir == "" then error("leadconnector.oauth.file_store expects a directory path", 2) end
  dir = gsub(dir, "/+$", "")
  local function path(key) return dir .. "/" .. fname(key) end
  local store = { kind = "file", dir = dir }
  local function guarded(key, fn)
    local g, err = core.fs_lock(path(key) .. ".guard", 5)
    if not g then return nil, err end
    local ok, a, b = pcall(fn)
    g:unlock()
    if not ok then error(a, 0) end
    return a, b
  end
  local function lease(key)
    local s = read_file(path(key) .. ".lock")
    if not s then return nil end
    local owner, exp = s:match("^(%S+) (%S+)")
    return owner, tonumber(exp)
  end
  function store.get(_, key)
    local s, err = read_file(path(key) .. ".json")
    if err then return nil, err end
    return s
  end
  function store.set(_, key, text)
    return core.fs_write(path(key) .. ".json", text)
  end
  function store.lock(_, key, ttl)
    return guarded(key, function()
      local owner, exp = lease(key)
      if owner and exp and exp > wall() then return false end
      owner = random_id()
      local ok, err = core.fs_write(path(key) .. ".lock", format("%s %.3f\n", owner, wall() + ttl))
      if not ok then return nil, err end
      return owner
    end)
  end
  function store.unlock(_, key, owner)
    return guarded(key, function()
      if lease(key) == owner then os.remove(path(key) .. ".lock") end
      return true
    end)
  end
  return store
end

--- oauth.shdict_store(name [, { persist = store }]): an nginx lua_shared_dict, seen by every worker; the lock is
-- shdict:add with an expiry. A shared dict is lost when nginx stops: give `persist` (a file_store, say) to keep the
-- records there too (written first, read when the dict has none).
function M.shdict_store(name, opts)
  local shared = type(ngx) == "table" and ngx.shared -- luacheck: ignore 113
  local dict = shared and shared[name]
  if not dict then
    error(("leadconnector.oauth.shdict_store: no lua_shared_dict %s (declare it in nginx's http block)"):format(
      tostring(name)), 2)
  end
  local persist = opts and opts.persist
  local store = { kind = "shdict" }
  function store.get(_, key)
    local v = dict:get("t:" .. key)
    if v == nil and persist then
      local err
      v, err = persist:get(key)
      if err then return nil, err end
      if v then dict:set("t:" .. key, v) end
    end
    return v
  end
  function store.set(_, key, text)
    if persist then
      local ok, err = persist:set(key, text)
      if not ok then return nil, err end
    end
    local ok, err = dict:set("t:" .. key, text)
    if not ok then return nil, "shdict " .. name .. ": " .. tostring(err) end
    return true
  end
  function store.lock(_, key, ttl)
    local owner = random_id()
    local ok, err = dict:add("l:" .. key, owner, ttl)
    if ok then return owner end
    if err == "exists" then return false end
    return nil, "shdict " .. name .. ": " .. tostring(err)
  end
  function store.unlock(_, key, owner)
    if dict:get("l:" .. key) == owner then dict:delete("l:" .. key) end
    return true
  end
  return store
end

local UNLOCK_SCRIPT = [[
if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("DEL", KEYS[1]) end
return 0
]]

--- oauth.redis_store(opts): every machine. opts: host, port, timeout, password, db (for leadconnector.redis),
-- prefix (default "leadconnector:oauth:"). The lock is SET NX PX (it expires if its holder dies), released by a
-- compare-and-delete script, so only its owner can release it.
function M.redis_store(opts)
  opts = opts or {}
  if type(opts) ~= "table" then error("leadconnector.oauth.redis_store expects a table of options", 2) end
  local ok, redis = pcall(require, "leadconnector.redis")
  if not ok then error("leadconnector.oauth.redis_store needs leadconnector.redis: " .. tostring(redis), 2) end
  local prefix = opts.prefix or "leadconnector:oauth:"
  local copts = { host = opts.host or "127.0.0.1", port = opts.port or 6379, timeout = opts.timeout or 0.5,
    password = opts.password, db = opts.db }
  local store = { kind = "redis" }
  local conn
  local function run(fn)
    local r, err = conn, nil
    if not r then
      r, err = redis.connect(copts)
      if not r then return nil, "redis: " .. tostring(err) end
    end
    local v, e = fn(r)
    if in_nginx() then
      r:close() -- back to nginx's pool; a connection is never shared between requests
      conn = nil
    elseif v == nil and e and (find(e, "^timeout") or find(e, "^network")) then
      r:close()
      conn = nil
    else
      conn = r
    end
    if v == nil and e then return nil, "redis: " .. tostring(e) end
    return v
  end
  function store.get(_, key)
    local v, err = run(function(r) return r:call("GET", prefix .. key) end)
    if err then return nil, err end
    if v == false then return nil end
    return v
  end
  function store.set(_, key, text)
    local v, err = run(function(r) return r:call("SET", prefix .. key, text) end)
    if err then return nil, err end
    return v ~= nil
  end
  function store.lock(_, key, ttl)
    local owner = random_id()
    local v, err = run(function(r)
      return r:call("SET", prefix .. "lock:" .. key, owner, "NX", "PX", tostring(floor(ttl * 1000)))
    end)
    if err then return nil, err end
    if v == false then return false end
    return owner
  end
  function store.unlock(_, key, owner)
    local _, err = run(function(r) return r:script(UNLOCK_SCRIPT, { prefix .. "lock:" .. key }, { owner }) end)
    if err then return nil, err end
    return true
  end
  function store.close() if conn then conn:close() conn = nil end end
  return store
end

--------------------------------------------------------------------------------------------------------------------
-- The app.

local App = {}
App.__index = App
App.__name = "leadconnector.oauth.App"

-- Per app, what must not be reachable from the app table: the client secret. Weak keys.
local hidden = setmetatable({}, { __mode = "k" })

local APP_OPTIONS = {
  client_id = "string", client_secret = "string", store = "table", base_url = "string", leeway = "number",
  lock_ttl = "number", wait = "number", timeout = "number", connect_timeout = "number", verify = "boolean",
  ca_file = "string", transport = "string", app_id = "string", authorize_url = "string", user_agent = "string",
  cache_ttl = "number",
}

local function check_store(s)
  for _, m in ipairs { "get", "set", "lock", "unlock" } do
    if type(s[m]) ~= "function" then return nil, invalid("store", "option 'store' must have " .. m .. "()") end
  end
  return true
end

--- oauth.app(opts) -> app | nil, err.
-- opts: client_id, client_secret (required), store (default memory_store()), base_url, leeway (s, default 300:
-- refresh when this close to expiry, at most half the token's lifetime), lock_ttl (s, default 2 * timeout + 5,
-- and longer than 2 * timeout: how long a refresher's lock lives if it dies), wait (s, default lock_ttl + timeout: how long to wait for another's
-- refresh), timeout, connect_timeout, verify, ca_file, transport ("curl" | "ngx"), app_id (for
-- installed_locations), authorize_url, user_agent, cache_ttl (s, default 5: how long a record read from the store
-- is used without reading it again; a refresh, a save and every 401 read the store itself).
function M.app(opts)
  if type(opts) ~= "table" then error("leadconnector.oauth.app expects a table of options, got " .. type(opts), 2) end
  for k, v in pairs(opts) do
    local want = APP_OPTIONS[k]
    if not want then return nil, invalid(tostring(k), ("unknown option '%s'"):format(tostring(k))) end
    if type(v) ~= want then
      return nil, invalid(k, ("option '%s' must be a %s, got %s"):format(k, want, type(v)))
    end
    if want == "number" and not (v >= 0 and v < math.huge) then
      return nil, invalid(k, ("option '%s' must be a finite number >= 0"):format(k))
    end
  end
  for _, k in ipairs { "client_id", "client_secret" } do
    if not opts[k] or opts[k] == "" then return nil, invalid(k, ("option '%s' is required"):format(k)) end
    local ok, err = core.check_header(opts[k], k)
    if not ok then return nil, err end
  end
  local store = opts.store or M.memory_store()
  local ok, err = check_store(store)
  if not ok then return nil, err end
  local base_url = gsub(opts.base_url or M.DEFAULT_BASE_URL, "/+$", "")
  if not find(base_url, "^https?://[%w%.%-%[%]:]+[%w%-%._~/]*$") then
    return nil, invalid("base_url", "option 'base_url' must be an http(s) URL such as https://services.leadconnectorhq.com")
  end
  local timeout = opts.timeout or 15
  -- A token request (two attempts at most, the second only when the first never left) must end before the lock
  -- expires: else a second refresher would present the same refresh token, and one of them be refused.
  local lock_ttl = opts.lock_ttl or (2 * timeout + 5)
  if lock_ttl <= 2 * timeout then
    return nil, invalid("lock_ttl", ("option 'lock_ttl' (%g s) must be longer than two token requests " ..
      "(2 x timeout = %g s)"):format(lock_ttl, 2 * timeout))
  end
  local self = setmetatable({
    client_id = opts.client_id,
    store = store,
    base_url = base_url,
    leeway = opts.leeway or 300,
    lock_ttl = lock_ttl,
    wait = opts.wait or (lock_ttl + timeout),
    timeout = timeout,
    app_id = opts.app_id,
    authorize_base = opts.authorize_url or M.AUTHORIZE_URL,
    cache_ttl = opts.cache_ttl or 5,
    _settings = {
      base_url = base_url, version = M.VERSION, timeout = timeout, connect_timeout = opts.connect_timeout or 10,
      verify = opts.verify ~= false, ca_file = opts.ca_file, token = false, max_response_size = 1024 * 1024,
      user_agent = (opts.user_agent and (opts.user_agent .. " ") or "") .. "leadconnector-lua/" .. core.version ..
        " (oauth)",
    },
    _transport = opts.transport,
  }, App)
  hidden[self] = { secret = opts.client_secret, cache = {} } -- cache: key -> { rec, at } (records hold tokens)
  return self
end

function App:__tostring()
  return format("leadconnector.oauth.App (%s, %s)", self.client_id, self.base_url)
end

local function check_app(self, method)
  if getmetatable(self) ~= App then
    error(("leadconnector.oauth: call it as app:%s(...), on an app made by oauth.app"):format(method), 3)
  end
end

-- The HTTP session for token requests: the client's own transports (libcurl, or cosockets in nginx).
function App:_session()
  local s = rawget(self, "_http")
  if s and not s:closed() then return s end
  local transport = self._transport
  local auto = transport == nil
  if auto then transport = in_nginx() and "ngx" or "curl" end
  local err
  if transport == "ngx" then
    s, err = require("leadconnector.ngx").session(self._settings, auto)
  elseif transport == "curl" then
    s, err = core.session(self._settings)
  else
    return nil, invalid("transport", "option 'transport' must be \"curl\" or \"ngx\"")
  end
  if not s then return nil, err end
  self._http = s
  return s
end

-- One request to the OAuth endpoints: decoded answer | nil, err. `secrets` are cut out of any error; `bearer` is
-- the Authorization token (false: none). Sent again once only when it provably never left (request_sent false).
function App:_request(method, path, form, order, bearer, secrets, template)
  local s, err = self:_session()
  if not s then return nil, err end
  local body = form and encode_form(form, order) or nil
  local value, attempts = nil, 0
  repeat
    attempts = attempts + 1
    local ok
    ok, err = s:set_token(bearer or false)
    if not ok then return nil, err end
    value, err = s:call("raw", method, path, body, M.VERSION, self.timeout, body and FORM or nil)
  until value ~= nil or attempts >= 2 or err.request_sent ~= false or (err.kind ~= "network" and err.kind ~= "timeout")
  if value ~= nil then
    if type(value) ~= "table" then
      err = core.error("decode", "answer is not a JSON object")
    else
      return value
    end
  end
  local all = { hidden[self].secret }
  for _, x in ipairs(secrets or {}) do all[#all + 1] = x end
  if bearer then all[#all + 1] = bearer end
  scrub(err, all)
  err.method, err.path, err.attempts = method, template or path, attempts
  return nil, err
end

-- POST /oauth/token. A refused grant (400, 401, 403: a bad code, a refresh token used or revoked, wrong client
-- credentials) is an `auth` error with err.refused = true.
function App:_token_request(fields, secrets)
  fields.client_id, fields.client_secret = self.client_id, hidden[self].secret
  local ans, err = self:_request("POST", "/oauth/token", fields,
    { "client_id", "client_secret", "grant_type", "code", "refresh_token", "redirect_uri", "user_type" },
    false, secrets)
  if not ans then
    if err.status == 400 or err.status == 401 or err.status == 403 then
      err.kind, err.refused = "auth", true
    end
    return nil, err
  end
  if type(ans.access_token) ~= "string" or ans.access_token == "" then
    local e = core.error("decode", "token answer without an access_token")
    e.method, e.path, e.request_sent = "POST", "/oauth/token", true
    return nil, e
  end
  return ans
end

--- app:authorize_url { redirect_uri, scope = {...} | "a b", state, ... } -> the Marketplace page that asks the user
-- to choose a location (white-label: oauth.app{ authorize_url = oauth.WHITE_LABEL_AUTHORIZE_URL }). Other string
-- fields (version_id, ...) are added as they are.
function App:authorize_url(o)
  check_app(self, "authorize_url")
  if type(o) ~= "table" then error("leadconnector.oauth: authorize_url expects a table", 2) end
  if type(o.redirect_uri) ~= "string" then error("leadconnector.oauth: authorize_url needs redirect_uri", 2) end
  local scope = o.scope
  if type(scope) == "table" then scope = concat(scope, " ") end
  local q = { "response_type=code", "redirect_uri=" .. pct(o.redirect_uri), "client_id=" .. pct(self.client_id) }
  if scope then q[#q + 1] = "scope=" .. pct(scope) end
  if o.state then q[#q + 1] = "state=" .. pct(o.state) end
  local extra = {}
  for k, v in pairs(o) do
    if k ~= "redirect_uri" and k ~= "scope" and k ~= "state" and type(k) == "string" then extra[#extra + 1] = k end
  end
  table.sort(extra)
  for _, k in ipairs(extra) do q[#q + 1] = pct(k) .. "=" .. pct(o[k]) end
  return self.authorize_base .. "?" .. concat(q, "&")
end

--- app:save(token) -> key | nil, err: stores a token answer (the /oauth/token fields; expires_at in epoch seconds
-- when known, else computed from expires_in) under its locationId (a Company token: its companyId).
function App:save(token)
  check_app(self, "save")
  if type(token) ~= "table" then error("leadconnector.oauth: save expects a token table", 2) end
  if type(token.access_token) ~= "string" then return nil, invalid("access_token", "token has no access_token") end
  local rec = record(token)
  local key = key_of(rec)
  if type(key) ~= "string" or key == "" then
    return nil, invalid("locationId", "token has neither a locationId nor a companyId to store it under")
  end
  local ok, err = self.store:set(key, cjson.encode(rec))
  if not ok then return nil, store_error("set " .. key, err) end
  hidden[self].cache[key] = nil
  return key
end

--- app:exchange_code(code, redirect_uri [, user_type]) -> token | nil, err: trades the code the Marketplace sent
-- to redirect_uri for a token pair, and stores it (app:save) before returning it.
function App:exchange_code(code, redirect_uri, user_type)
  check_app(self, "exchange_code")
  if type(code) ~= "string" or code == "" then return nil, invalid("code", "code must be a non-empty string") end
  local ans, err = self:_token_request({ grant_type = "authorization_code", code = code, redirect_uri = redirect_uri,
    user_type = user_type }, { code })
  if not ans then return nil, err end
  local rec = record(ans)
  local _, serr = self:save(rec)
  if serr then return nil, serr end
  return as_token(rec)
end

function App:_get(key)
  local text, err = self.store:get(key)
  if err then return nil, store_error("get " .. key, err) end
  if not text then
    hidden[self].cache[key] = nil
    return false
  end
  local rec
  rec, err = decode_record(text, key)
  if rec and self.cache_ttl > 0 then hidden[self].cache[key] = { rec = rec, at = now() } end
  return rec, err
end

local function dead_error(key, rec)
  local err = auth_error(("the refresh token for %s was refused (%s): install the app again for it " ..
    "(exchange_code) or app:save a new token"):format(key, tostring(rec.dead)))
  err.refused = true
  return err
end

-- When a record is due for a refresh: `leeway` before expiry, but never earlier than half its lifetime.
function App:_due(rec)
  local exp = rec.expires_at
  if type(exp) ~= "number" then return false end
  local life = exp - (tonumber(rec.obtained_at) or exp)
  local lee = self.leeway
  if life > 0 and lee > life / 2 then lee = life / 2 end
  return wall() >= exp - lee
end

-- Gets a new pair for rec (refresh grant, or a location token minted again from its company's token).
function App:_grant(key, rec)
  if type(rec.refresh_token) == "string" and rec.refresh_token ~= "" then
    local ans, err = self:_token_request({ grant_type = "refresh_token", refresh_token = rec.refresh_token,
      user_type = rec.userType }, { rec.refresh_token, rec.access_token })
    if not ans then return nil, err end
    local keep = {}
    for k, v in pairs(rec) do if not SECRET_FIELDS[k] then keep[k] = v end end
    keep.obtained_at, keep.expires_at, keep.expires_in = nil, nil, nil
    for k, v in pairs(ans) do keep[k] = v end
    return record(keep)
  elseif type(rec.companyId) == "string" and rec.minted then
    local ans, err = self:_mint(rec.companyId, key)
    if not ans then return nil, err end
    return ans
  end
  return nil, auth_error(("the token stored for %s has no refresh token and cannot be renewed"):format(key))
end

-- The token endpoint refused the grant itself (invalid_grant: a refresh token used, revoked or unknown), not the
-- client's credentials.
local function grant_refused(err)
  local b = type(err.body) == "table" and err.body or {}
  local words = lower(tostring(b.error or "") .. " " .. tostring(err.message or ""))
  if find(words, "grant", 1, true) then return true end
  return err.status == 400 and not find(words, "client", 1, true)
end

-- The single-flight refresh of key, whose token `stale` is expired or was refused. Returns the record to use.
function App:_refresh(key, stale)
  local store = self.store
  local stop = now() + self.wait
  local delay = 0.005
  while true do
    local rec, err = self:_get(key)
    if rec == nil then return nil, err end
    if not rec then return nil, auth_error(("no token stored for %s"):format(key)) end
    if rec.dead then return nil, dead_error(key, rec) end
    if rec.access_token ~= stale then return rec end -- someone else refreshed it already
    local owner, lerr = store:lock(key, self.lock_ttl)
    if owner == nil then return nil, store_error("lock " .. key, lerr) end
    if owner then
      rec, err = self:_get(key) -- again, under the lock: the holder before us may just have stored a new pair
      if rec and not rec.dead and rec.access_token == stale then
        local new, gerr = self:_grant(key, rec)
        if not new then
          if gerr.refused and gerr.path == "/oauth/token" and grant_refused(gerr) then
            -- that refresh token is dead: no one tries it again (a refusal of the client's own credentials is not
            -- remembered: once the configuration is fixed, the stored pair works again)
            rec.dead = format("HTTP %s%s", tostring(gerr.status), gerr.message and (": " .. gerr.message) or "")
            local now_rec = self:_get(key)
            -- marked only if the refused token is still the stored one (a refresher that overran its lock may
            -- just have stored a good pair)
            if now_rec and now_rec.refresh_token == rec.refresh_token then store:set(key, cjson.encode(rec)) end
            store:unlock(key, owner)
            local e = dead_error(key, rec)
            e.status, e.body, e.trace_id, e.request_sent = gerr.status, gerr.body, gerr.trace_id, true
            return nil, e
          end
          store:unlock(key, owner)
          return nil, gerr
        end
        local ok, serr = store:set(key, cjson.encode(new))
        hidden[self].cache[key] = nil
        if not ok then
          -- The old refresh token is spent and the new pair is not stored. The lock stays until it expires, so no
          -- one refreshes with the retired token meanwhile; after that a refresh is refused (an `auth` error,
          -- marked dead) and the app must be installed again.
          local e = store_error("set " .. key, serr)
          e.message = e.message .. " (a refreshed token pair could not be stored)"
          return nil, e
        end
        store:unlock(key, owner)
        return new
      end
      store:unlock(key, owner)
      if rec == nil then return nil, err end
      if not rec then return nil, auth_error(("no token stored for %s"):format(key)) end
      if rec.dead then return nil, dead_error(key, rec) end
      return rec
    end
    if now() >= stop then
      local e = core.error("timeout", ("waited %g s for another refresh of the token for %s"):format(self.wait, key))
      e.request_sent = false
      return nil, e
    end
    sleep(delay)
    delay = min(delay * 2, 0.1)
  end
end

-- POST /oauth/locationToken with the company's token (refreshed once on a 401): a location record.
function App:_mint(company, location)
  local src = self:token_source(company)
  local tok, err = src:token()
  if not tok then return nil, err end
  local form = { companyId = company, locationId = location }
  local order = { "companyId", "locationId" }
  local ans
  ans, err = self:_request("POST", "/oauth/locationToken", form, order, tok)
  if not ans and err.status == 401 then
    tok, err = src:refresh(tok)
    if not tok then return nil, err end
    ans, err = self:_request("POST", "/oauth/locationToken", form, order, tok)
  end
  if not ans then return nil, err end
  if type(ans.access_token) ~= "string" or ans.access_token == "" then
    local e = core.error("decode", "location token answer without an access_token")
    e.method, e.path, e.request_sent = "POST", "/oauth/locationToken", true
    return nil, e
  end
  return record(ans, { companyId = company, locationId = ans.locationId or location, userType = "Location",
    minted = true })
end

--- app:location_token(companyId, locationId) -> token | nil, err: a location's token from the agency (company)
-- token stored under companyId; stored under locationId. When it expires it is minted again the same way.
function App:location_token(company, location)
  check_app(self, "location_token")
  if type(company) ~= "string" or company == "" then return nil, invalid("companyId", "companyId must be a non-empty string") end
  if type(location) ~= "string" or location == "" then return nil, invalid("locationId", "locationId must be a non-empty string") end
  local rec, err = self:_mint(company, location)
  if not rec then return nil, err end
  local ok, serr = self.store:set(location, cjson.encode(rec))
  if not ok then return nil, store_error("set " .. location, serr) end
  hidden[self].cache[location] = nil
  return as_token(rec)
end

local INSTALLED_QUERY = { "companyId", "appId", "skip", "limit", "query", "isInstalled", "versionId", "onTrial",
  "planId", "locationId" }

--- app:installed_locations { companyId = ..., appId = ... (default: the app's app_id), skip, limit, query,
-- isInstalled, versionId, onTrial, planId, locationId } -> { locations = {...}, count, ... } | nil, err
-- (GET /oauth/installedLocations with the company's token).
function App:installed_locations(q)
  check_app(self, "installed_locations")
  if type(q) ~= "table" then error("leadconnector.oauth: installed_locations expects a table", 2) end
  local company = q.companyId
  if type(company) ~= "string" or company == "" then return nil, invalid("companyId", "companyId is required") end
  local vals = {}
  for k, v in pairs(q) do vals[k] = v end
  vals.appId = vals.appId or self.app_id
  if type(vals.appId) ~= "string" then return nil, invalid("appId", "appId is required (or oauth.app{ app_id })") end
  local parts = {}
  for _, k in ipairs(INSTALLED_QUERY) do
    local v = vals[k]
    if v ~= nil then parts[#parts + 1] = k .. "=" .. pct(tostring(v)) end
  end
  local path = "/oauth/installedLocations?" .. concat(parts, "&")
  local src = self:token_source(company)
  local tok, err = src:token()
  if not tok then return nil, err end
  local ans
  ans, err = self:_request("GET", path, nil, nil, tok, nil, "/oauth/installedLocations")
  if not ans and err.status == 401 then
    tok, err = src:refresh(tok)
    if not tok then return nil, err end
    ans, err = self:_request("GET", path, nil, nil, tok, nil, "/oauth/installedLocations")
  end
  return ans, err
end

--- app:token(key) -> token | nil, err: the record stored under key (secrets hidden from its tostring).
function App:token(key)
  check_app(self, "token")
  local rec, err = self:_get(key)
  if rec == nil then return nil, err end
  if not rec then return nil end
  return as_token(rec)
end

--------------------------------------------------------------------------------------------------------------------
-- Token sources: what a client's `auth` option takes.

local Source = {}
Source.__index = Source
Source.__name = "leadconnector.oauth.TokenSource"

--- app:token_source(key) -> a source for leadconnector.new{ auth = ... }: key is a locationId (or a companyId).
function App:token_source(key)
  check_app(self, "token_source")
  if type(key) ~= "string" or key == "" then error("leadconnector.oauth: token_source expects a location id", 2) end
  return setmetatable({ app = self, key = key }, Source)
end

function Source:__tostring()
  return format("leadconnector.oauth.TokenSource (%s)", self.key)
end

--- source:token() -> access token | nil, err: the stored one, refreshed first when it is due.
function Source:token()
  local app, key = self.app, self.key
  local c = hidden[app].cache[key]
  local rec, err
  if c and now() - c.at < app.cache_ttl then
    rec = c.rec
  else
    rec, err = app:_get(key)
    if rec == nil then return nil, err end
  end
  if not rec then return nil, auth_error(("no token stored for %s: exchange_code or app:save one first"):format(key)) end
  if rec.dead then return nil, dead_error(key, rec) end
  if not app:_due(rec) then return rec.access_token end
  rec, err = app:_refresh(key, rec.access_token)
  if not rec then return nil, err end
  return rec.access_token
end

--- source:refresh(failed) -> access token | nil, err: after a 401 with token `failed`. Refreshes only when `failed`
-- is still the stored token (another worker may have refreshed already: then the stored one is returned).
function Source:refresh(failed)
  local rec, err = self.app:_refresh(self.key, failed)
  if not rec then return nil, err end
  return rec.access_token
end

M.App, M.TokenSource, M.Token = App, Source, Token
return M

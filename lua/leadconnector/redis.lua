--- leadconnector.redis: one small Redis client, the same API in plain Lua and inside nginx.
--
--     local redis = require "leadconnector.redis"
--     local r, err = redis.connect { host = "127.0.0.1", port = 6379, timeout = 0.2, password = nil, db = nil }
--     local v, err = r:call("SET", "k", "v", "NX", "PX", "3000")
--     local v, err = r:script(source, keys, args)   -- EVALSHA of sha1(source), EVAL on NOSCRIPT
--     r:close()
--
-- Replies: status -> its string ("OK"); integer -> number; bulk -> string; array -> table (1..n); nil -> false
-- (never nil); an error reply -> nil, "ERR ..." (the server's words); no answer -> nil, "timeout: ..." or
-- nil, "network: ..." (the connection is then closed; the next call connects again).
--
-- Plain Lua (and nginx's init phases, where cosockets do not work): the C core on Debian's hiredis, blocking,
-- with `timeout` bounding the connect and every reply. Inside nginx where cosockets work: lua-resty-redis
-- (`require "nginx.redis"`, Debian's lua-nginx-redis) with the same timeout and nginx's keepalive pool; close()
-- puts the connection back into the pool. Errors never contain the password.
-- @module leadconnector.redis

local core = require "leadconnector.core"

local type, tostring, setmetatable, getmetatable, select, error = type, tostring, setmetatable, getmetatable, select,
  error
local floor, format, find, upper = math.floor, string.format, string.find, string.upper
local unpack = table.unpack or unpack -- luacheck: ignore 113

local M = {}

local ngx = ngx -- luacheck: ignore 113
local get_phase = type(ngx) == "table" and ngx.get_phase
local null = type(ngx) == "table" and ngx.null
local COSOCKET_PHASES = {
  rewrite = true, server_rewrite = true, access = true, content = true, timer = true,
  ssl_cert = true, ssl_session_fetch = true, ssl_client_hello = true, preread = true,
}

local function cosockets()
  return get_phase and COSOCKET_PHASES[get_phase()] == true
end

-- Per connection, what must not be reachable from the object itself: the password.
local secrets = setmetatable({}, { __mode = "k" })

local Conn = {}
Conn.__index = Conn
Conn.__name = "leadconnector.Redis"

local function check_opts(opts)
  if type(opts) ~= "table" then error("leadconnector.redis.connect expects a table of options", 3) end
  local host = opts.host or "127.0.0.1"
  local port = opts.port or 6379
  local timeout = opts.timeout or 1
  if type(host) ~= "string" or host == "" or find(host, "[%c%s]") then error("leadconnector.redis: bad host", 3) end
  if type(port) ~= "number" or port ~= floor(port) or port < 1 or port > 65535 then
    error("leadconnector.redis: port must be a whole number 1..65535", 3)
  end
  if type(timeout) ~= "number" or not (timeout > 0) or timeout == math.huge then
    error("leadconnector.redis: timeout must be a number of seconds > 0", 3)
  end
  if opts.password ~= nil and type(opts.password) ~= "string" then
    error("leadconnector.redis: password must be a string", 3)
  end
  if opts.db ~= nil and (type(opts.db) ~= "number" or opts.db ~= floor(opts.db) or opts.db < 0) then
    error("leadconnector.redis: db must be a whole number >= 0", 3)
  end
  return host, port, timeout
end

-- nginx values -> this module's: ngx.null (nil bulk or array) -> false, resty's {false, err} array items -> err.
local function plain(v)
  if v == null then return false end
  if type(v) == "table" then
    if v[1] == false and type(v[2]) == "string" and #v == 2 then return v[2] end
    for i = 1, #v do v[i] = plain(v[i]) end
  end
  return v
end

-- Opens the underlying connection: a hiredis handle (plain Lua) or a resty socket (nginx). value | nil, err.
local function open(self)
  local s = secrets[self]
  local c, kind, msg
  if cosockets() then
    local resty = require "nginx.redis"
    local red, err = resty:new()
    if not red then return nil, "network: " .. tostring(err) end
    red:set_timeout(floor(self.timeout * 1000) + 1)
    local ok
    ok, err = red:connect(self.host, self.port, { pool = self.pool })
    if not ok then
      return nil, format("%s: cannot connect to Redis at %s:%d: %s", err == "timeout" and "timeout" or "network",
        self.host, self.port, tostring(err))
    end
    c = { red = red }
    if red:get_reused_times() == 0 then
      if s.password then
        ok, err = red:auth(s.password)
        if not ok then red:close() return nil, (err and not find(err, "timeout") and err or "timeout: AUTH") end
      end
      if self.db then
        ok, err = red:select(self.db)
        if not ok then red:close() return nil, err or "network: SELECT" end
      end
    end
  else
    c, kind, msg = core.redis_connect(self.host, self.port, self.timeout)
    if not c then return nil, kind .. ": " .. msg end
    c = { conn = c }
    if s.password then
      local ok, k2, m2 = c.conn:command("AUTH", s.password)
      if not ok then c.conn:close() return nil, k2 == "reply" and m2 or (k2 .. ": " .. m2) end
    end
    if self.db then
      local ok, k2, m2 = c.conn:command("SELECT", self.db)
      if not ok then c.conn:close() return nil, k2 == "reply" and m2 or (k2 .. ": " .. m2) end
    end
  end
  s.c = c
  return c
end

--- Connects. opts: host ("127.0.0.1"), port (6379), timeout (seconds, 1; bounds the connect and every reply),
-- password, db, pool (nginx keepalive pool name). Returns the connection, or nil and an error string.
function M.connect(opts)
  local host, port, timeout = check_opts(opts)
  local self = setmetatable({
    host = host, port = port, timeout = timeout, db = opts.db,
    pool = opts.pool or format("leadconnector:redis:%s:%d:%d", host, port, opts.db or 0),
  }, Conn)
  secrets[self] = { password = opts.password }
  local c, err = open(self)
  if not c then return nil, err end
  return self
end

local function drop(self)
  local s = secrets[self]
  local c = s and s.c
  if not c then return end
  s.c = nil
  if c.conn then c.conn:close() elseif c.red then c.red:close() end
end

-- The arguments of a command, checked the same way for both clients (lua-resty-redis would send a table as
-- "table: 0x...", nil as "nil", or cut the command at a nil; hiredis refuses them): raises on misuse.
local MAX_ARGS = 256
local function check_args(...)
  local n = select("#", ...)
  if n < 1 then error("leadconnector.redis: a command needs a name", 3) end
  if n > MAX_ARGS then error(format("leadconnector.redis: at most %d arguments", MAX_ARGS), 3) end
  local cmd = (...)
  if type(cmd) ~= "string" or not find(cmd, "^%a[%w_%-]*$") then
    error("leadconnector.redis: a command name must be a string of letters", 3)
  end
  for i = 2, n do
    local t = type((select(i, ...)))
    if t ~= "string" and t ~= "number" then
      error(format("leadconnector.redis: argument %d must be a string or a number, got %s", i, t), 3)
    end
  end
  return cmd
end

-- lua-resty-redis's timeout bounds each socket read, and nginx restarts it whenever a byte arrives: a Redis
-- trickling its reply held the request for as long as it liked. The command runs in a light thread raced
-- against the timeout as a whole (as the C client's deadline); TIMED_OUT when the timeout won.
local TIMED_OUT = {}
local spawn = type(ngx) == "table" and ngx.thread and ngx.thread.spawn
local function nap(s) ngx.sleep(s) end -- spawn takes Lua functions only
local function bounded(timeout, red, cmd, ...)
  local n, args = select("#", ...), { ... }
  local ok, worker = pcall(spawn, function() return red[cmd](red, unpack(args, 1, n)) end)
  if not ok then return red[cmd](red, ...) end -- a phase without light threads: resty's own timeout
  local timer = spawn(nap, timeout)
  local done, v, err = ngx.thread.wait(worker, timer)
  if coroutine.status(worker) ~= "dead" then
    ngx.thread.kill(worker)
    return nil, TIMED_OUT
  end
  ngx.thread.kill(timer)
  if not done then error(v, 0) end
  return v, err
end

--- r:call(cmd, ...) -> value | nil, err (see the module's summary).
function Conn:call(...)
  if getmetatable(self) ~= Conn then error("leadconnector.redis: call it as r:call(...)", 2) end
  local cmd = check_args(...)
  local s = secrets[self]
  if not s then return nil, "network: the connection is closed" end
  local c = s.c
  if not c then
    local err
    c, err = open(self)
    if not c then return nil, err end
  end
  if c.conn then
    local v, kind, msg = c.conn:command(...)
    if v ~= nil then return v end
    if kind == "reply" then return nil, msg end
    drop(self)
    return nil, msg
  end
  local red = c.red
  -- upper case: lua-resty-redis's own methods (close, connect, read_reply, init_pipeline, ...) are all lower case,
  -- so a command of that name goes to Redis as a command, as it does through hiredis
  local v, err = bounded(self.timeout, red, upper(cmd), select(2, ...))
  if err == TIMED_OUT then
    drop(self) -- mid-reply: the socket must not go back to the pool
    return nil, format("timeout: no whole answer from Redis within %g s", self.timeout)
  end
  if v ~= nil and v ~= false then return plain(v) end
  if v == false and err then return nil, err end
  if v == false then return false end
  drop(self)
  return nil, format("%s: no answer from Redis: %s", err == "timeout" and "timeout" or "network", tostring(err))
end

-- sha1(source) per script source, computed once (a handful of scripts: a small plain cache).
local sha_cache, sha_n = {}, 0
local function sha1_of(source)
  local h = sha_cache[source]
  if h then return h end
  h = core.sha1_hex(source)
  if sha_n >= 64 then sha_cache, sha_n = {}, 0 end
  sha_cache[source], sha_n = h, sha_n + 1
  return h
end

--- r:script(source, keys, args) -> value | nil, err: EVALSHA of sha1(source), EVAL when Redis answers NOSCRIPT.
function Conn:script(source, keys, args)
  if type(source) ~= "string" then error("leadconnector.redis: script source must be a string", 2) end
  keys, args = keys or {}, args or {}
  local nk, na = #keys, #args
  local argv = { "EVALSHA", sha1_of(source), nk }
  for i = 1, nk do argv[3 + i] = keys[i] end
  for i = 1, na do argv[3 + nk + i] = args[i] end
  local v, err = self:call(unpack(argv, 1, 3 + nk + na))
  if v == nil and err and find(err, "^NOSCRIPT") then
    argv[1], argv[2] = "EVAL", source
    v, err = self:call(unpack(argv, 1, 3 + nk + na))
  end
  return v, err
end

--- Closes the connection (inside nginx: back into the keepalive pool). Idempotent.
function Conn:close()
  local s = secrets[self]
  if not s then return end
  local c = s.c
  s.c = nil
  if c then
    if c.conn then
      c.conn:close()
    elseif c.red then
      local ok = c.red:set_keepalive(60000, 64)
      if not ok then c.red:close() end
    end
  end
end

Conn.__close = Conn.close
Conn.__gc = Conn.close

function Conn:__tostring()
  return format("leadconnector.Redis (%s:%d)", self.host, self.port)
end

M.sha1_hex = sha1_of
return M

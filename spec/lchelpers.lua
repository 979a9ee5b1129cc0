--[[ spec/lchelpers.lua -- small generic helpers for the library's own specs (20-, 30-, 31-, 40-).
The sandbox itself is driven through spec/helpers.lua; this file only adds what several specs share.

  lch.client(sb, opts)        a client for the sandbox with fast test settings (tiny backoff, short timeouts);
                              opts override them
  lch.suite(set, sb_opts, c)  inside a describe block: one sandbox (helpers.start_sandbox(sb_opts), default
                              { rate_limit = false }) and one client (lch.client(sb, c) when c is a table or nil,
                              c(sb) when it is a function) for the block, handed to set(sb, client) once they exist;
                              both stopped after the block, the sandbox reset before each test
  lch.scale                   factor for time limits (valgrind and ASan runs are slower)
  lch.is_integer(v)           true for a Lua 5.4 integer; on LuaJIT, for a number with no fraction
  lch.has_integers            true when numbers have an integer subtype (Lua 5.3+)
  lch.find_in(v, needle)      path of the first string (key or value, at any depth) containing needle, or nil
  lch.connections_to(port)    set of socket inodes of THIS process connected to 127.0.0.1:port (from /proc)
  lch.count(set)              number of keys of a table
  lch.unused_port()           a 127.0.0.1 port nothing listens on right now
  lch.api_requests(sb)        sb:requests() without the sandbox's control calls
  lch.closing_server(n)       a tiny HTTP server in another process that answers n connections, one send answer
                              each ("Connection: keep-alive"), then closes each connection itself, as servers do
                              with idle ones; returns its port and a function that waits for it to end
]]
local socket = require "socket"
local leadconnector = require "leadconnector"

local lch = {}

lch.scale = (os.getenv("LEADCONNECTOR_UNDER_VALGRIND") and 20) or (os.getenv("LEADCONNECTOR_UNDER_ASAN") and 4) or 1

lch.has_integers = math.type ~= nil

function lch.is_integer(v)
  if math.type then return math.type(v) == "integer" end
  return type(v) == "number" and v % 1 == 0
end

-- The deadline is longer than a rate window plus its slack (10.05 s), and must stay so: every client of the
-- sandbox's token in one busted process shares the process limiter's budget, and the sandbox's headers say 100 per
-- 10 s even when it refuses nothing. A spec file that sends its first 100 requests in 50 ms (LuaJIT on a quick
-- machine) makes the 101st wait almost 10.05 s; with a 10 s deadline that call, and every later one, failed at
-- once as rate_limited ("past this call's deadline"): spec/34's fault matrix failed so on CI, twice.
function lch.client(sb, opts)
  local o = {
    token = sb.token, base_url = sb.url, timeout = 5 * lch.scale, connect_timeout = 2 * lch.scale,
    deadline = 15 * lch.scale, retry_base = 0.001, retry_cap = 0.005, max_retries = 0,
  }
  for k, v in pairs(opts or {}) do o[k] = v end
  return assert(leadconnector.new(o))
end

function lch.suite(set, sandbox_opts, client)
  local busted = require "busted" -- its block functions (lazy_setup, ...) are globals only in spec files
  local sb, c
  busted.lazy_setup(function()
    sb = require("helpers").start_sandbox(sandbox_opts or { rate_limit = false })
    if type(client) == "function" then c = client(sb) else c = lch.client(sb, client) end
    set(sb, c)
  end)
  busted.lazy_teardown(function()
    if c then c:close() end
    if sb then sb:stop() end
  end)
  busted.before_each(function() sb:reset() end)
end

function lch.find_in(v, needle, path, seen)
  path = path or "err"
  seen = seen or {}
  local t = type(v)
  if t == "string" then
    if v:find(needle, 1, true) then return path end
    return nil
  end
  if t ~= "table" or seen[v] then return nil end
  seen[v] = true
  for k, x in pairs(v) do
    local p = lch.find_in(k, needle, path .. "[key]", seen)
    if p then return p end
    p = lch.find_in(x, needle, path .. "." .. tostring(k), seen)
    if p then return p end
  end
  local mt = getmetatable(v)
  if type(mt) == "table" then return lch.find_in(mt, needle, path .. "<metatable>", seen) end
  return nil
end

local my_pid = require("helpers").my_pid

-- Inodes of the sockets this process holds open.
local function my_socket_inodes()
  local p = assert(io.popen("find /proc/" .. my_pid() .. "/fd -lname 'socket:*' -printf '%l\\n' 2>/dev/null"))
  local out = p:read("*a")
  p:close()
  local set = {}
  for inode in out:gmatch("socket:%[(%d+)%]") do set[inode] = true end
  return set
end

function lch.connections_to(port)
  local mine = my_socket_inodes()
  local want = (":%04X"):format(port)
  local set = {}
  for _, file in ipairs { "/proc/net/tcp", "/proc/net/tcp6" } do
    local f = io.open(file, "rb")
    if f then
      for line in f:lines() do
        -- sl local_address rem_address st ... uid timeout inode
        local rem, st, inode = line:match("^%s*%d+:%s+%x+:%x+%s+(%x+:%x+)%s+(%x+)%s+%S+%s+%S+%s+%S+%s+%d+%s+%d+%s+(%d+)")
        if rem and rem:sub(-5) == want and st == "01" and mine[inode] then set[inode] = true end
      end
      f:close()
    end
  end
  return set
end

function lch.count(set)
  local n = 0
  for _ in pairs(set) do n = n + 1 end
  return n
end

-- A port nothing listens on right now (for refused-connection tests): the sandbox helpers' free_port.
lch.unused_port = require("helpers").free_port

function lch.api_requests(sb)
  local out = {}
  for _, r in ipairs(sb:requests()) do
    if r.path:sub(1, 10) ~= "/_sandbox/" then out[#out + 1] = r end
  end
  return out
end

-- n429, n: how many of the sandbox's API answers (its own log) were 429, of how many.
function lch.count_429(sb)
  local n, n429 = 0, 0
  for _, r in ipairs(lch.api_requests(sb)) do
    n = n + 1
    if r.status == 429 then n429 = n429 + 1 end
  end
  return n429, n
end

local CLOSING_SERVER = [==[
local socket = require "socket"
local s = assert(socket.bind("127.0.0.1", 0))
s:settimeout(10)
local _, port = s:getsockname()
io.stdout:write(port, "\n")
io.stdout:flush()
for i = 1, tonumber(arg[1]) do
  local c = s:accept()
  if not c then break end
  c:settimeout(5)
  local len = 0
  while true do
    local l = c:receive("*l")
    if not l or l == "" then break end
    local n = l:match("^[Cc]ontent%-[Ll]ength:%s*(%d+)")
    if n then len = tonumber(n) end
  end
  if len > 0 then c:receive(len) end
  local body = '{"conversationId":"conv_c","messageId":"m' .. i .. '"}'
  c:send("HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: " .. #body ..
    "\r\nConnection: keep-alive\r\n\r\n" .. body)
  socket.sleep(0.05)
  c:close()
end
s:close()
]==]

-- The command of the interpreter running the specs (luajit, lua5.1 ... lua5.4), for child processes.
lch.interpreter = (type(jit) == "table") and "luajit" or ("lua" .. _VERSION:match("%d+%.%d+"))

function lch.closing_server(n)
  local file = os.tmpname()
  local f = assert(io.open(file, "wb"))
  f:write(CLOSING_SERVER)
  f:close()
  local p = assert(io.popen(("env -u LD_PRELOAD %s %s %d"):format(lch.interpreter, file, n), "r"))
  local port = tonumber(p:read("*l"))
  os.remove(file) -- already read by the interpreter
  return port, function() return p:close() end
end

return lch

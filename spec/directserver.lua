--[[ spec/directserver.lua -- a scriptable raw HTTP/1.1 server in another process, on 127.0.0.1, for
spec/58-direct_spec.lua (the curl transport's direct engine): every request is logged, and a script says byte for
byte what each one gets back, and what then happens to its connection.

  local ds = require "directserver"
  local srv = ds.start(script)
      script: Lua source of a chunk returning function(req, st) -> actions, and optionally a second function
        on_head(req, st) -> actions, run once a request's head is read, before its body is (req.body is "" then,
        req.seq not set yet), and a third on_accept(conn, st) -> actions, run as a connection is accepted, before
        anything is read from it. It runs in the server's process.
        req: { seq = n (every request), conn = n (its connection, in accept order), n = n (its place on that
               connection), method, target, head (the request's head, as it came), headers (lower-case names),
               body }
        st: a table the script keeps what it likes in, shared by every connection (st.count[method] is kept by
            the server: requests of that method, this one included)
        actions: a string (the bytes to send), or a list of: strings (bytes to send), { sleep = s },
          { trickle = bytes, step = s } (one byte at a time), "close" (close the connection), "rst" (close it with
          a reset), "shutdown" (no more bytes from the server; requests are still read), { mark = name }
          (log().marks[name] counts it: the test can wait until the actions before it are done). After the list, the
          connection waits for its next request unless it was closed.
        Globals for scripts: answer(status_line_rest, body, extra_header_lines) -> "HTTP/1.1 ..." with a JSON
          Content-Type, a Content-Length, keep-alive; default(req, st) -> the usual answer to the four endpoints
          (a send: messageId "m<POSTs so far>"; a message: its id; a base URL path /api/vN is skipped); esc(s) -> s as a JSON string's content.
  srv.port, srv.url
  srv:log()          -> { accepts, closed = connections closed (by either side), requests = { req... }, marks }
  srv:count(method)  -> requests of that method the server read (all if nil)
  srv:wait(pred [, secs])   polls srv:log() until pred(log) is true (raises after secs, default 5)
  srv:stop()
  ds.for_test(script, finally)  in a busted test: started, and stopped when the test ends (ds.track(srv, finally))
  ds.client(url, token [, opts])  a leadconnector client with quick test settings
The log goes over a second, control port: the listening port only ever sees the client under test, so
log().accepts is the number of connections the client made. The server exits by itself after 60 s without a
request or a control call.
]]
local socket = require "socket"
local cjson = require "cjson"

local M = {}

local SERVER = [==[
local socket = require "socket"
local cjson = require "cjson"
local script_file = arg[1]
local host = "127.0.0.1"
local lst = assert(socket.bind(host, 0))
local ctl = assert(socket.bind(host, 0))
lst:settimeout(0)
ctl:settimeout(0)
local _, port = lst:getsockname()
local _, cport = ctl:getsockname()

function esc(s) return (cjson.encode(s):sub(2, -2)) end
function answer(status, body, extra)
  body = body or ""
  return ("HTTP/1.1 %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: keep-alive\r\n%s\r\n%s")
    :format(status, #body, extra or "", body)
end
function default(req, st)
  local target = req.target:gsub("^/api/v%d+", "") -- a base URL's path
  if req.method == "GET" then
    local id = target:match("^/conversations/messages/([^/?]+)$")
    if id then return answer("200 OK", '{"id":"' .. esc(id) .. '","type":1,"body":"b"}') end
    id = target:match("^/conversations/([^/?]+)$")
    if id then return answer("200 OK", '{"id":"' .. esc(id) .. '","contactId":"k","locationId":"l"}') end
  end
  if req.method == "POST" or req.method == "PUT" then
    return answer(req.method == "POST" and "201 Created" or "200 OK",
      ('{"conversationId":"conv_d","messageId":"m%d"}'):format(st.count[req.method]))
  end
  return answer("404 Not Found", '{"statusCode":404,"message":"no such thing"}')
end

local handler, on_head, on_accept = dofile(script_file)
assert(handler, "the script returned no handler")
io.stdout:write(port, " ", cport, "\n")
io.stdout:flush()
local st = { count = {} }
local log = { accepts = 0, closed = 0, requests = {}, marks = { _ = 0 } }
local conns = {} -- co -> { sock, want = "start"|"read"|"sleep", until_t }
local last_activity = socket.gettime()
local nconn, seq = 0, 0

local function wait_read() coroutine.yield("read") end
local function sleep(s) coroutine.yield("sleep", socket.gettime() + s) end

local function readline(c, b)
  while true do
    local nl = b.buf:find("\n", 1, true)
    if nl then
      local line = b.buf:sub(1, nl - 1)
      b.buf = b.buf:sub(nl + 1)
      return line
    end
    wait_read()
    local data, err, partial = c:receive(65536)
    data = data or partial
    if data and #data > 0 then b.buf = b.buf .. data
    elseif err ~= "timeout" then return nil end
  end
end
local function readn(c, b, n)
  while #b.buf < n do
    wait_read()
    local data, err, partial = c:receive(n - #b.buf)
    data = data or partial
    if data and #data > 0 then b.buf = b.buf .. data
    elseif err ~= "timeout" then return nil end
  end
  local out = b.buf:sub(1, n)
  b.buf = b.buf:sub(n + 1)
  return out
end
local function send_all(c, data)
  local i = 1
  while i <= #data do
    local last, err, lastp = c:send(data, i)
    if last then i = last + 1
    elseif err == "timeout" then i = lastp + 1 sleep(0.001)
    else return nil end
  end
  return true
end

local function closed()
  log.closed = log.closed + 1
end

-- Runs a script's actions on connection c: true, or false once c is closed.
local function run(c, actions)
  if actions == nil then return true end
  if type(actions) ~= "table" then actions = { actions } end
  for _, a in ipairs(actions) do
    if type(a) == "string" and a ~= "close" and a ~= "rst" and a ~= "shutdown" then
      if not send_all(c, a) then c:close() closed() return false end
    elseif a == "close" then
      c:close() closed() return false
    elseif a == "rst" then
      c:setoption("linger", { on = true, timeout = 0 })
      c:close() closed() return false
    elseif a == "shutdown" then
      c:shutdown("send")
    elseif type(a) == "table" and a.mark then
      log.marks[a.mark] = (log.marks[a.mark] or 0) + 1
    elseif type(a) == "table" and a.sleep then
      sleep(a.sleep)
    elseif type(a) == "table" and a.trickle then
      for i = 1, #a.trickle do
        if not send_all(c, a.trickle:sub(i, i)) then c:close() closed() return false end
        sleep(a.step or 0.01)
      end
    end
  end
  return true
end

local function serve(c, id)
  c:settimeout(0)
  local b = { buf = "" }
  local n = 0
  if on_accept and not run(c, on_accept(id, st)) then return end
  while true do
    local line = readline(c, b)
    if not line then c:close() closed() return end
    local head = { line }
    local headers = {}
    local len = 0
    while true do
      local h = readline(c, b)
      if not h then c:close() closed() return end
      head[#head + 1] = h
      h = h:gsub("\r$", "")
      if h == "" then break end
      local k, v = h:match("^([^:]+):%s*(.-)%s*$")
      if k then
        k = k:lower()
        headers[k] = headers[k] and (headers[k] .. ", " .. v) or v
      end
      if k == "content-length" then len = tonumber(v) or 0 end
    end
    local method, target = line:match("^(%S+) (%S+)")
    local req = { conn = id, n = n + 1, method = method or "?", target = target or "?",
      head = table.concat(head, "\n"), headers = headers, body = "" }
    if on_head and not run(c, on_head(req, st)) then return end
    if len > 0 then
      req.body = readn(c, b, len)
      if not req.body then c:close() closed() return end
    end
    n = n + 1
    seq = seq + 1
    req.seq = seq
    last_activity = socket.gettime()
    st.count[req.method] = (st.count[req.method] or 0) + 1
    log.requests[#log.requests + 1] = req
    if not run(c, handler(req, st)) then return end
  end
end

local function control(c)
  c:settimeout(2)
  local cmd = c:receive("*l")
  last_activity = socket.gettime()
  if cmd == "log" then
    c:send(cjson.encode(log) .. "\n")
  elseif cmd == "quit" then
    c:send("bye\n")
    c:close()
    os.exit(0)
  end
  c:close()
end

while true do
  local now = socket.gettime()
  if now - last_activity > 60 then break end
  local readers, wake = { lst, ctl }, now + 0.5
  for _, w in pairs(conns) do
    if w.want == "read" then readers[#readers + 1] = w.sock
    elseif w.want == "sleep" then wake = math.min(wake, w.until_t) end
  end
  local ready = socket.select(readers, nil, math.max(0, wake - socket.gettime()))
  local rset = {}
  for _, s in ipairs(ready) do rset[s] = true end
  if rset[ctl] then
    local c = ctl:accept()
    if c then control(c) end
  end
  if rset[lst] then
    local c = lst:accept()
    if c then
      nconn = nconn + 1
      log.accepts = nconn
      last_activity = socket.gettime()
      conns[coroutine.create(serve)] = { sock = c, want = "start", id = nconn }
    end
  end
  now = socket.gettime()
  for co, w in pairs(conns) do
    local go = w.want == "start" or (w.want == "read" and rset[w.sock]) or (w.want == "sleep" and now >= w.until_t)
    if go then
      local ok, want, x
      if w.want == "start" then ok, want, x = coroutine.resume(co, w.sock, w.id)
      else ok, want, x = coroutine.resume(co) end
      if not ok or coroutine.status(co) == "dead" then
        conns[co] = nil
        if not ok then io.stderr:write("directserver: ", tostring(want), "\n") end
      else
        w.want = want
        if want == "sleep" then w.until_t = x end
      end
    end
  end
end
]==]

local Server = {}
Server.__index = Server

local function write_tmp(s)
  local file = os.tmpname()
  local f = assert(io.open(file, "wb"))
  f:write(s)
  f:close()
  return file
end

--- Starts a server running `script` (Lua source: a chunk returning function(req, st) -> actions).
function M.start(script)
  local sfile, hfile = write_tmp(SERVER), write_tmp(script or "return default")
  local interp = (type(jit) == "table") and "luajit" or ("lua" .. _VERSION:match("%d+%.%d+"))
  local p = assert(io.popen(("env -u LD_PRELOAD -u ASAN_OPTIONS %s %s %s"):format(interp, sfile, hfile), "r"))
  local line = p:read("*l") or ""
  local port, cport = line:match("^(%d+) (%d+)$")
  os.remove(sfile)
  assert(port, "directserver did not start")
  return setmetatable({ port = tonumber(port), cport = tonumber(cport), url = "http://127.0.0.1:" .. port, _p = p,
    _hfile = hfile }, Server)
end

local function ctl(self, cmd)
  local c = socket.tcp()
  c:settimeout(5)
  assert(c:connect("127.0.0.1", self.cport))
  c:send(cmd .. "\n")
  local line = c:receive("*l")
  c:close()
  return line
end

function Server:log()
  local line = ctl(self, "log")
  assert(line, "directserver: no log")
  return cjson.decode(line)
end

function Server:count(method)
  local n = 0
  for _, r in ipairs(self:log().requests) do
    if method == nil or r.method == method then n = n + 1 end
  end
  return n
end

function Server:wait(pred, secs)
  local stop = socket.gettime() + (secs or 5)
  while true do
    local l = self:log()
    if pred(l) then return l end
    if socket.gettime() > stop then error("directserver: condition not met in time: " .. cjson.encode(l), 2) end
    socket.sleep(0.005)
  end
end

function Server:stop()
  if self._p then
    pcall(ctl, self, "quit")
    self._p:close()
    self._p = nil
    os.remove(self._hfile)
  end
end

-- For busted tests, handed the test file's `finally` (busted's, which is not a global of modules): a server stopped
-- when the test ends, whatever happens (busted keeps one `finally` per test: the one registered last stops every
-- server of the test). track(srv, finally) does the same for any object with :stop().
local live = {}
function M.track(srv, fin)
  live[#live + 1] = srv
  fin(function()
    for _, s in ipairs(live) do s:stop() end
    live = {}
  end)
  return srv
end
function M.for_test(script, fin) return M.track(M.start(script), fin) end

-- A client for these servers with quick test settings (no rate limit, no retries, a tiny backoff, time limits
-- scaled by lchelpers.scale); opts override any of them.
function M.client(url, token, opts)
  local S = require("lchelpers").scale
  local o = { token = token, base_url = url, rate_limit = false, max_retries = 0, retry_base = 0.001,
    retry_cap = 0.005, timeout = 3 * S, connect_timeout = 2 * S, deadline = 10 * S }
  for k, v in pairs(opts or {}) do o[k] = v end
  return assert(require("leadconnector").new(o))
end

return M

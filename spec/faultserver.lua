--[[ spec/faultserver.lua -- a misbehaving HTTP/1.1 server in another process, for the specs of issue 10
(spec/50-faults_spec.lua, spec/53-regressions_spec.lua, spec/60-nginx_spec.lua, bench/soak).

  local fs = require "faultserver"
  local srv = fs.start(mode, arg [, arg2]) -- srv.port, srv.url; srv:count([method]) -> requests it processed
                                            -- (POSTs by default); srv:last() -> the request target of the
                                            -- last request (control paths aside), as it came; srv:stop()

Modes (every request of every connection gets the mode's answer, except GET /_count, answered promptly):
  "drop_refuse"   answers as "ok", except the first POST (or request of method arg2; "ANY": any method) that
                  arrives on a connection that already carried a request: that one is processed (counted), then
                  the connection is closed with no answer and the listening socket too; the port refuses
                  connections for `arg` ms (default 50), then listens again -- a crash and restart under a warm
                  connection
  "trickle_head"  the status line and headers trickled one byte every `arg` ms (default 250)
  "trickle_body"  prompt headers (Content-Length), then the body one byte every `arg` ms
  "huge_line"     a status line of `arg` bytes (default 200 MB) with no newline, sent as fast as the peer reads
  "huge_header"   a prompt status line, then one header line of `arg` bytes with no newline
  "raw"           `arg` is a file whose bytes are the whole answer (then the connection is closed)
  "ok"            a prompt 201 send answer, kept alive; GET /conversations/messages/ID answers the message ID

The server runs until stop() (or 120 s without any connection). Connections are served concurrently (one
coroutine each), so an idle kept-alive connection never holds up another.
]]
local M = {}

local SERVER = [==[
local socket = require "socket"
local mode, arg1, arg2 = arg[1], arg[2], arg[3]
local host = "127.0.0.1"
local lst = assert(socket.bind(host, 0))
local _, port = lst:getsockname()
lst:settimeout(0)
io.stdout:write(port, "\n")
io.stdout:flush()
local count = 0
local counts = {} -- method -> requests processed (control paths aside)
local last_target = "" -- the request target of the last request (control paths aside), byte for byte
local faulted = false
local refuse_until = nil
local conns = {} -- co -> { sock, want = "read"|"sleep", until }
local last_activity = socket.gettime()

local function wait_read(sock)
  coroutine.yield("read", sock)
end
local function sleep(s)
  coroutine.yield("sleep", socket.gettime() + s)
end

-- reads one line, yielding while nothing is there
local function readline(c, st)
  while true do
    local nl = st.buf:find("\n", 1, true)
    if nl then
      local line = st.buf:sub(1, nl - 1):gsub("\r$", "")
      st.buf = st.buf:sub(nl + 1)
      return line
    end
    wait_read(c)
    local data, err, partial = c:receive(8192)
    data = data or partial
    if data and #data > 0 then st.buf = st.buf .. data
    elseif err == "closed" then return nil end
  end
end
local function readn(c, st, n)
  while #st.buf < n do
    wait_read(c)
    local data, err, partial = c:receive(n - #st.buf)
    data = data or partial
    if data and #data > 0 then st.buf = st.buf .. data
    elseif err == "closed" then return nil end
  end
  local out = st.buf:sub(1, n)
  st.buf = st.buf:sub(n + 1)
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

local SEND_BODY = '{"conversationId":"conv_f","messageId":"m%d"}'
local function ok_answer(body, status)
  return ("HTTP/1.1 %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: keep-alive\r\n\r\n%s")
    :format(status or "201 Created", #body, body)
end

local function serve(c)
  c:settimeout(0)
  local st = { buf = "" }
  local nreq = 0
  while true do
    local line = readline(c, st)
    if not line then break end
    local method, path = line:match("^(%u+) (%S+)")
    local len = 0
    while true do
      local h = readline(c, st)
      if not h then c:close() return end
      if h == "" then break end
      local n = h:match("^[Cc]ontent%-[Ll]ength:%s*(%d+)")
      if n then len = tonumber(n) end
    end
    if len > 0 and not readn(c, st, len) then break end
    nreq = nreq + 1
    last_activity = socket.gettime()
    if path:sub(1, 2) ~= "/_" then
      counts[method] = (counts[method] or 0) + 1
      last_target = path
    end
    if path == "/_last" then
      if not send_all(c, ok_answer(last_target, "200 OK")) then break end
    elseif path:sub(1, 7) == "/_count" then
      local m = path:match("method=(%u+)")
      if not send_all(c, ok_answer(tostring(m and (counts[m] or 0) or count), "200 OK")) then break end
    elseif path == "/_quit" then
      send_all(c, ok_answer("bye", "200 OK"))
      c:close()
      os.exit(0)
    elseif mode == "drop_refuse" and (method == (arg2 or "POST") or arg2 == "ANY") and nreq > 1 and not faulted then
      faulted = true
      count = count + 1 -- processed: the crash comes after the work, before the answer
      c:close()
      lst:close()
      refuse_until = socket.gettime() + (tonumber(arg1) or 50) / 1000
      return
    elseif mode == "trickle_head" or mode == "trickle_body" then
      if method == "POST" then count = count + 1 end
      local body = SEND_BODY:format(count)
      local head = ("HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"):format(#body)
      local step = (tonumber(arg1) or 250) / 1000
      if mode == "trickle_body" then
        if not send_all(c, head) then break end
        head = ""
      end
      local all = head .. body
      local alive = true
      for i = 1, #all do
        if not send_all(c, all:sub(i, i)) then alive = false break end
        sleep(step)
      end
      if not alive then break end
    elseif mode == "huge_line" or mode == "huge_header" then
      local total = tonumber(arg1) or 200 * 1024 * 1024
      local chunk = ("A"):rep(65536)
      if mode == "huge_header" and not send_all(c, "HTTP/1.1 200 OK\r\nX-Huge: ") then break end
      if mode == "huge_line" and not send_all(c, "HTTP/1.1 200 ") then break end
      local sent = 0
      while sent < total do
        local piece = total - sent < #chunk and chunk:sub(1, total - sent) or chunk
        if not send_all(c, piece) then break end
        sent = sent + #piece
      end
      break
    elseif mode == "raw" then
      local f = assert(io.open(arg1, "rb"))
      local data = f:read("*a")
      f:close()
      if method == "POST" then count = count + 1 end
      send_all(c, data)
      break
    else
      if method == "POST" then count = count + 1 end
      local id = method == "GET" and path:match("^/conversations/messages/([%w_%-]+)$")
      local answer = id and ok_answer('{"id":"' .. id .. '","type":"SMS"}', "200 OK") or ok_answer(SEND_BODY:format(count))
      if not send_all(c, answer) then break end
    end
  end
  c:close()
end

while true do
  local now = socket.gettime()
  if refuse_until and now >= refuse_until then
    lst = assert(socket.bind(host, port))
    lst:settimeout(0)
    refuse_until = nil
  end
  if now - last_activity > 120 then break end
  local readers, wake = {}, now + 0.5
  if not refuse_until then readers[1] = lst else wake = math.min(wake, refuse_until) end
  for co, w in pairs(conns) do
    if w.want == "read" then readers[#readers + 1] = w.sock
    elseif w.want == "sleep" then wake = math.min(wake, w.until_t) end
  end
  local ready = socket.select(readers, nil, math.max(0, wake - socket.gettime()))
  local rset = {}
  for _, s in ipairs(ready) do rset[s] = true end
  if not refuse_until and rset[lst] then
    local c = lst:accept()
    if c then
      last_activity = socket.gettime()
      local co = coroutine.create(serve)
      conns[co] = { sock = c, want = "start" }
    end
  end
  now = socket.gettime()
  for co, w in pairs(conns) do
    local go = w.want == "start" or (w.want == "read" and rset[w.sock]) or (w.want == "sleep" and now >= w.until_t)
    if go then
      local ok, want, x = coroutine.resume(co, w.want == "start" and w.sock or nil)
      if not ok or coroutine.status(co) == "dead" then
        conns[co] = nil
        if not ok then io.stderr:write("faultserver: ", tostring(want), "\n") end
      else
        w.want = want
        if want == "sleep" then w.until_t = x end
      end
    end
  end
end
]==]

local socket = require "socket"

local Server = {}
Server.__index = Server

local function request(port, path)
  local c = socket.tcp()
  c:settimeout(5)
  if not c:connect("127.0.0.1", port) then return nil end
  c:send("GET " .. path .. " HTTP/1.1\r\nHost: x\r\n\r\n")
  local status = c:receive("*l")
  local len = 0
  while true do
    local l = c:receive("*l")
    if not l or l == "" then break end
    local n = l:match("^[Cc]ontent%-[Ll]ength:%s*(%d+)")
    if n then len = tonumber(n) end
  end
  local body = len > 0 and c:receive(len) or ""
  c:close()
  return status, body
end

--- Starts the server: returns { port, url, count(), stop() }.
function M.start(mode, arg1, arg2)
  local file = os.tmpname()
  local f = assert(io.open(file, "wb"))
  f:write(SERVER)
  f:close()
  local interp = (type(jit) == "table") and "luajit" or "lua5.4"
  local p = assert(io.popen(("env -u LD_PRELOAD -u ASAN_OPTIONS %s %s %s %s %s"):format(interp, file, mode,
    arg1 and ("'" .. tostring(arg1) .. "'") or "", arg2 and ("'" .. tostring(arg2) .. "'") or ""), "r"))
  local port = tonumber(p:read("*l"))
  os.remove(file)
  assert(port, "faultserver did not start")
  return setmetatable({ port = port, url = "http://127.0.0.1:" .. port, _p = p }, Server)
end

--- How many POSTs (or requests of `method`) the server processed (waits for a refusing server to listen again).
function Server:count(method)
  for _ = 1, 100 do
    local status, body = request(self.port, "/_count" .. (method and ("?method=" .. method) or ""))
    if status then return tonumber(body) end
    socket.sleep(0.02)
  end
  error("faultserver does not answer /_count")
end

--- The request target (path and query) of the last request the server read, byte for byte.
function Server:last()
  local status, body = request(self.port, "/_last")
  assert(status, "faultserver does not answer /_last")
  return body
end

function Server:stop()
  if self._p then
    for _ = 1, 50 do
      if request(self.port, "/_quit") then break end
      socket.sleep(0.02)
    end
    self._p:close()
    self._p = nil
  end
end

return M

-- Row "naive luasocket": the simplest keep-alive client one would write by hand
-- on luasocket + lua-cjson. HTTP/1.1 over one TCP socket, Content-Length (or
-- chunked) framing, cjson.decode of every answer, a fresh connection only when
-- the server closes the old one. No validation, no retries, no userdata.
-- With an https:// BASE_URL (the TLS rows) the socket is wrapped by luasec (Debian's lua-sec): TLS 1.2 or 1.3,
-- the peer's chain verified against the CA file in BENCH_CAINFO, its subjectAltName checked for the host
-- (luasec does not check names itself), one handshake per connection; luasec keeps no session cache, so a new
-- connection is always a full handshake.
--
--   lua5.4 bench/naive.lua BASE_URL TOKEN CALL ID COUNT
--
-- CALL: get_message | send_message | update_message_status | get_conversation.
-- Prints one "BENCH requests=N errors=E seconds=S" line.
local socket = require "socket"
local cjson = require "cjson"

local base, token, call, id, count = arg[1], arg[2], arg[3], arg[4], tonumber(arg[5])
if not (base and token and call and id and count) then
  io.stderr:write("usage: naive.lua BASE_URL TOKEN CALL ID COUNT\n")
  os.exit(2)
end
local scheme, host, port = base:match("^(https?)://([^:/]+):?(%d*)/?$")
if not host then
  io.stderr:write("naive.lua: only http(s)://host[:port] base URLs: ", base, "\n")
  os.exit(2)
end
port = tonumber(port) or (scheme == "https" and 443 or 80)

local tls -- luasec's context, for https
if scheme == "https" then
  local ok, ssl = pcall(require, "ssl")
  if not ok then
    print("BENCH missing=luasec")
    os.exit(3)
  end
  tls = { ssl = ssl, params = { mode = "client", protocol = "any", options = { "all", "no_sslv2", "no_sslv3", "no_tlsv1", "no_tlsv1_1" },
    verify = "peer", cafile = os.getenv("BENCH_CAINFO") } }
end

-- The certificate names the host (an IP address here: its subjectAltName iPAddress entries).
local function names_host(c)
  local cert = c:getpeercertificate()
  local ext = cert and cert:extensions()
  local san = ext and ext["2.5.29.17"]
  for _, list in pairs(san or {}) do
    if type(list) == "table" then
      for _, v in ipairs(list) do
        if v == host then return true end
      end
    end
  end
  return false
end

local conn

local function connect()
  local c = assert(socket.tcp())
  c:setoption("tcp-nodelay", true)
  c:settimeout(30)
  assert(c:connect(host, port))
  if tls then
    c = assert(tls.ssl.wrap(c, tls.params))
    c:settimeout(30)
    assert(c:dohandshake())
    assert(names_host(c), "the certificate does not name " .. host)
  end
  conn = c
end

local function close()
  if conn then conn:close() end
  conn = nil
end

-- Reads one answer; returns status, body, keep (false when the server closes).
local function read_answer()
  local line, err = conn:receive("*l")
  if not line then return nil, err end
  local status = tonumber(line:match("^HTTP/1%.%d (%d%d%d)"))
  if not status then return nil, "bad status line" end
  local length, chunked, keep = nil, false, true
  while true do
    local h = conn:receive("*l")
    if not h then return nil, "closed in headers" end
    if h == "" then break end
    local name, value = h:match("^([^:]+):%s*(.-)%s*$")
    if name then
      name = name:lower()
      if name == "content-length" then
        length = tonumber(value)
      elseif name == "transfer-encoding" and value:lower():find("chunked", 1, true) then
        chunked = true
      elseif name == "connection" and value:lower() == "close" then
        keep = false
      end
    end
  end
  local body
  if chunked then
    local parts = {}
    while true do
      local size = tonumber((conn:receive("*l") or ""):match("^%x+"), 16)
      if not size then return nil, "bad chunk" end
      if size == 0 then
        repeat local t = conn:receive("*l") until t == nil or t == ""
        break
      end
      parts[#parts + 1] = conn:receive(size)
      conn:receive("*l")
    end
    body = table.concat(parts)
  elseif length then
    body = length > 0 and conn:receive(length) or ""
  else
    body = conn:receive("*a")
    keep = false
  end
  return status, body, keep
end

local function request(method, path, payload)
  local head = method .. " " .. path .. " HTTP/1.1\r\nHost: " .. host ..
    "\r\nAuthorization: Bearer " .. token ..
    "\r\nVersion: 2021-04-15\r\nAccept: application/json\r\nUser-Agent: naive-bench/1\r\n"
  local req
  if payload then
    req = head .. "Content-Type: application/json\r\nContent-Length: " .. #payload .. "\r\n\r\n" .. payload
  else
    req = head .. "\r\n"
  end
  for _ = 1, 2 do -- once more on a fresh connection if the kept one was closed
    if not conn then connect() end
    local ok = conn:send(req)
    if ok then
      local status, body, keep = read_answer()
      if status then
        if not keep then close() end
        local okj, decoded = pcall(cjson.decode, body)
        if status >= 200 and status < 300 and okj then return decoded end
        return nil, "HTTP " .. status
      end
    end
    close()
  end
  return nil, "connection failed"
end

local do_call
if call == "get_message" then
  local path = "/conversations/messages/" .. id
  do_call = function() return request("GET", path) end
elseif call == "send_message" then
  local fields = { type = "SMS", contactId = "contact_demo_1", message = "hi" }
  do_call = function() return request("POST", "/conversations/messages", cjson.encode(fields)) end
elseif call == "update_message_status" then
  local path = "/conversations/messages/" .. id .. "/status"
  do_call = function() return request("PUT", path, cjson.encode { status = "read" }) end
elseif call == "get_conversation" then
  local path = "/conversations/" .. id
  do_call = function() return request("GET", path) end
else
  io.stderr:write("naive.lua: unknown CALL ", call, "\n")
  os.exit(2)
end

local errors = 0
local t0 = socket.gettime()
for _ = 1, count do
  local v, err = do_call()
  if not v then
    errors = errors + 1
    if errors == 1 then io.stderr:write("naive ", call, ": first error: ", tostring(err), "\n") end
  end
end
local elapsed = socket.gettime() - t0
close()
print(string.format("BENCH requests=%d errors=%d seconds=%.6f", count, errors, elapsed))

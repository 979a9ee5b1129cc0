--[[ spec/opshelpers.lua -- a scripted HTTP server in another process, for the operation specs (33-, 34-).

  local srv = ops.server(answers)
      Starts a small HTTP/1.1 server on 127.0.0.1 (a separate Lua process, luasocket) that answers the requests
      it gets, in order, with answers[1], answers[2], ... (the last one repeats). An answer is
        { status = 200, body = "...", headers = { ["Content-Type"] = "..." } }  or  { drop = true }
      (drop: read the request, then close the connection without a byte of answer). Every request is recorded.
  srv.port, srv.url
  srv:requests()   the requests so far: { method =, target =, path =, query =, headers = {lower-case}, body = }
  srv:stop()       stops the server (idempotent)
]]
local cjson = require "cjson"
local socket = require "socket"

local ops = {}

local SERVER = [==[
local socket = require "socket"
local cjson = require "cjson"
local answers_file, log_file = arg[1], arg[2]
local f = assert(io.open(answers_file, "rb"))
local answers = cjson.decode(f:read("*a"))
f:close()
local s = assert(socket.bind("127.0.0.1", 0))
local _, port = s:getsockname()
io.stdout:write(port, "\n")
io.stdout:flush()
s:settimeout(30)
local n = 0
while true do
  local c = s:accept()
  if not c then break end
  c:settimeout(5)
  local line = c:receive("*l")
  if line then
    local method, target = line:match("^(%u+) (%S+) HTTP/1%.%d$")
    local headers, len = {}, 0
    while true do
      local l = c:receive("*l")
      if not l or l == "" then break end
      local k, v = l:match("^([^:]+):%s*(.-)%s*$")
      if k then headers[k:lower()] = v end
    end
    len = tonumber(headers["content-length"] or "0") or 0
    local body = len > 0 and c:receive(len) or ""
    if method == "STOP" then c:close() break end
    n = n + 1
    local log = assert(io.open(log_file, "ab"))
    log:write(cjson.encode({ method = method, target = target, headers = headers, body = body }), "\n")
    log:close()
    local a = answers[math.min(n, #answers)]
    if not a.drop then
      local b = a.body or ""
      local h = { "HTTP/1.1 " .. (a.status or 200) .. " X", "Content-Length: " .. #b, "Connection: close" }
      local ct = false
      for k, v in pairs(a.headers or {}) do
        h[#h + 1] = k .. ": " .. v
        if k:lower() == "content-type" then ct = true end
      end
      if not ct then h[#h + 1] = "Content-Type: application/json" end
      c:send(table.concat(h, "\r\n") .. "\r\n\r\n" .. b)
    end
  end
  c:close()
end
s:close()
]==]

local function unescape(s)
  return (s:gsub("+", " "):gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end

local function parse_query(q)
  local out = {}
  if not q then return out end
  for pair in q:gmatch("[^&]+") do
    local k, v = pair:match("^([^=]*)=?(.*)$")
    k, v = unescape(k), unescape(v)
    if out[k] == nil then out[k] = v
    elseif type(out[k]) == "table" then out[k][#out[k] + 1] = v
    else out[k] = { out[k], v } end
  end
  return out
end

function ops.server(answers)
  local dir = os.tmpname()
  local af, lf, sf = dir .. ".answers", dir .. ".log", dir .. ".lua"
  local f = assert(io.open(af, "wb"))
  f:write(cjson.encode(answers))
  f:close()
  f = assert(io.open(sf, "wb"))
  f:write(SERVER)
  f:close()
  io.open(lf, "wb"):close()
  local interp = (type(jit) == "table") and "luajit" or "lua5.4"
  local p = assert(io.popen(("env -u LD_PRELOAD %s %s %s %s"):format(interp, sf, af, lf), "r"))
  local port = tonumber(p:read("*l"))
  assert(port, "the scripted server did not start")
  local srv = { port = port, url = "http://127.0.0.1:" .. port }
  function srv:requests()
    local out = {}
    local lfh = io.open(lf, "rb")
    if not lfh then return out end
    for line in lfh:lines() do
      local r = cjson.decode(line)
      r.path, r.rawquery = r.target:match("^([^?]*)%??(.*)$")
      r.query = parse_query(r.rawquery ~= "" and r.rawquery or nil)
      out[#out + 1] = r
    end
    lfh:close()
    return out
  end
  function srv:stop()
    if self.stopped then return end
    self.stopped = true
    local c = socket.tcp()
    c:settimeout(2)
    if c:connect("127.0.0.1", port) then
      c:send("STOP / HTTP/1.1\r\n\r\n")
      c:close()
    end
    p:close()
    os.remove(af) os.remove(lf) os.remove(sf) os.remove(dir)
  end
  return srv
end

--- The parts of a multipart/form-data body: { { name =, filename =, content_type =, data = }, ... }.
function ops.parse_multipart(body, content_type)
  local boundary = content_type:match("boundary=([^;]+)")
  assert(boundary, "no boundary in " .. content_type)
  local parts = {}
  local delim = "--" .. boundary
  local pos = assert(body:find(delim, 1, true), "no first boundary")
  pos = pos + #delim
  while true do
    if body:sub(pos, pos + 1) == "--" then break end -- the closing delimiter
    assert(body:sub(pos, pos + 1) == "\r\n", "boundary not followed by CRLF")
    pos = pos + 2
    local head_end = assert(body:find("\r\n\r\n", pos, true), "part without a blank line")
    local head = body:sub(pos, head_end - 1)
    local nxt = assert(body:find("\r\n" .. delim, head_end + 4, true), "part not closed")
    local part = { data = body:sub(head_end + 4, nxt - 1) }
    for l in (head .. "\r\n"):gmatch("(.-)\r\n") do
      local k, v = l:match("^([^:]+):%s*(.*)$")
      if k and k:lower() == "content-disposition" then
        part.name = v:match('name="([^"]*)"')
        part.filename = v:match('filename="([^"]*)"')
      elseif k and k:lower() == "content-type" then
        part.content_type = v
      end
    end
    parts[#parts + 1] = part
    pos = nxt + 2 + #delim
  end
  return parts
end

return ops

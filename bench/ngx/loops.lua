-- The two loops bench/ngx/run measures inside one nginx (bench/ngx/nginx.conf): the same calls made COUNT times
-- in a row inside one request, each waiting for its answer, on cosockets with keep-alive.
--   impl=raw: a minimal hand-written cosocket HTTP/1.1 client (what a user would write without the library):
--             one request string built once, status line, headers (Content-Length only), body, setkeepalive.
--             It checks the status and nothing else: no JSON decoding, no objects.
--   impl=rawdec: the raw loop, and every answer also decoded by lua-cjson (`cjson.decode`) and a field of it read
--             (`id`, or `messageId` for the send and the status update): not a target but the floor, the least any
--             client on cosockets that hands back decoded answers must do, the library included.
--   impl=lc:  leadconnector on the ngx transport: validation, JSON, userdata, error objects, rate limiter.
--   impl=session: the library's transport alone (bench/profile ngx): the first call's session:call repeated.
--   impl=finish:  the answer path alone, no I/O (bench/profile ngx): core.finish over the raw request's answer.
-- Answers JSON {requests, errors, seconds, cpu_seconds} (cpu: this worker's user+sys time over the loop).
local cjson = require "cjson"
local leadconnector = require "leadconnector"

local tcp, update_time, now = ngx.socket.tcp, ngx.update_time, ngx.now
local sub, lower, tonumber = string.sub, string.lower, tonumber

local M = {}

-- CPU time of this worker process (os.clock: user + system, microsecond resolution).
local cpu_seconds = os.clock

local function raw_request(base, token, call, id)
  local host, port = base:match("^http://([^:/]+):(%d+)$")
  local method, path, body = "GET", nil, nil
  if call == "get_message" then
    path = "/conversations/messages/" .. id
  elseif call == "send_message" then
    method, path = "POST", "/conversations/messages"
    body = '{"type":"SMS","contactId":"contact_demo_1","message":"hi"}'
  elseif call == "update_message_status" then
    method, path = "PUT", "/conversations/messages/" .. id .. "/status"
    body = '{"status":"read"}'
  elseif call == "get_conversation" then
    path = "/conversations/" .. id
  end
  local req = method .. " " .. path .. " HTTP/1.1\r\nHost: " .. host .. ":" .. port ..
    "\r\nUser-Agent: leadconnector-bench-raw/1 cosocket\r\nAuthorization: Bearer " .. token ..
    "\r\nVersion: 2021-04-15\r\nAccept: application/json\r\n"
  if body then
    req = req .. "Content-Type: application/json\r\nContent-Length: " .. #body .. "\r\n\r\n" .. body
  else
    req = req .. "\r\n"
  end
  return host, tonumber(port), req
end

local function raw_loop(base, token, call, id, n, decode)
  local host, port, req = raw_request(base, token, call, id)
  local field = (call == "get_message" or call == "get_conversation") and "id" or "messageId"
  local opts = { pool = "bench-raw" }
  local errors, failed_in_a_row = 0, 0
  for i = 1, n do
    local ok = false
    local sock = tcp()
    sock:settimeout(10000)
    if sock:connect(host, port, opts) and sock:send(req) then
      local line = sock:receive("*l")
      local status = line and tonumber(sub(line, 10, 12))
      local len
      while line do
        line = sock:receive("*l")
        if line == "" then break end
        if line and lower(sub(line, 1, 15)) == "content-length:" then len = tonumber(sub(line, 16)) end
      end
      local data = line == "" and len and sock:receive(len)
      if data and decode then
        local doc = decode(data)
        if not doc[field] then data = nil end
      end
      if data and status and status >= 200 and status < 300 then
        ok = true
        sock:setkeepalive()
      else
        sock:close()
      end
    else
      sock:close()
    end
    if ok then
      failed_in_a_row = 0
    else
      errors, failed_in_a_row = errors + 1, failed_in_a_row + 1
      if failed_in_a_row >= 20 then return errors + n - i, true end -- the server is gone: stop
    end
  end
  return errors
end

-- One answer of the raw loop's request: its body and Content-Type (for impl=finish).
local function raw_answer(base, token, call, id)
  local host, port, req = raw_request(base, token, call, id)
  local sock = tcp()
  sock:settimeout(10000)
  if not (sock:connect(host, port) and sock:send(req)) then return nil end
  local line = sock:receive("*l")
  local len, ctype
  while line and line ~= "" do
    line = sock:receive("*l")
    local name, value = (line or ""):match("^([^:]+):%s*(.-)%s*$")
    name = name and lower(name)
    if name == "content-length" then len = tonumber(value) end
    if name == "content-type" then ctype = value end
  end
  local body = len and sock:receive(len)
  sock:close()
  return body, ctype
end

-- limiter: nil (the default: one budget per worker, as no leadconnector_limits dict is configured), "none"
-- (rate_limit = false) or "shdict" (the lc_bench_limits dict): the limiter rows of bench/ngx/run.
local function lc_loop(base, token, call, id, n, limiter, session_only)
  local o = { token = token, base_url = base }
  if limiter == "none" then o.rate_limit = false end
  if limiter == "shdict" then o.limiter = require("leadconnector.limiter").shdict("lc_bench_limits") end
  local client = assert(leadconnector.new(o))
  local errors, do_call = 0, nil
  if call == "get_message" then
    do_call = function() local m = client:get_message(id) return m and m.id end
  elseif call == "send_message" then
    do_call = function()
      local r = client:send_message { type = "SMS", contactId = "contact_demo_1", message = "hi" }
      return r and r.messageId
    end
  elseif call == "update_message_status" then
    do_call = function() local r = client:update_message_status(id, { status = "read" }) return r and r.messageId end
  elseif call == "get_conversation" then
    do_call = function() local c = client:get_conversation(id) return c and c.id end
  end
  if session_only then
    -- the transport alone: the session:call of the first client call, repeated with the same arguments (no
    -- validation, no limiter, no retries: what leadconnector.ngx and the C core's answer path cost)
    local session = client._session
    local args
    session.call = function(s, ...)
      args = { n = select("#", ...), ... }
      return getmetatable(s).__index.call(s, ...)
    end
    if not do_call() then return n, true end
    session.call = nil
    local f, unpack = session.call, unpack or table.unpack
    local a1, a2, a3, a4, a5, a6, a7 = unpack(args, 1, 7)
    do_call = function() return (f(session, a1, a2, a3, a4, a5, a6, a7)) end
    if session_only == "finish" then
      -- the answer path alone, no I/O: core.finish (JSON decoding, the result's userdata) over the answer the
      -- raw loop's request gets, as leadconnector.ngx hands it over
      local body, ctype = raw_answer(base, token, call, id)
      if not body then return n, true end
      local finish = require("leadconnector.core").finish
      do_call = function() return (finish(a1, 200, body, nil, nil, token, ctype)) end
    end
  end
  local failed_in_a_row = 0
  for i = 1, n do
    if do_call() then
      failed_in_a_row = 0
    else
      errors, failed_in_a_row = errors + 1, failed_in_a_row + 1
      if failed_in_a_row >= 20 then return errors + n - i, true end -- the server is gone: stop
    end
  end
  assert(client.transport == "ngx", "the library did not pick the ngx transport")
  return errors
end

function M.handler()
  local a = ngx.var
  local impl, call, n = a.arg_impl, a.arg_call, tonumber(a.arg_n) or 1000
  local base, token, id = ngx.unescape_uri(a.arg_base or ""), ngx.unescape_uri(a.arg_token or ""), a.arg_id
  local loop = (impl == "raw" or impl == "rawdec") and raw_loop or
    (impl == "lc" or impl == "session" or impl == "finish") and lc_loop
  if not loop then return ngx.exit(400) end
  local extra -- raw_loop's decode (rawdec only), lc_loop's limiter
  if impl == "rawdec" then extra = cjson.decode elseif loop == lc_loop then extra = a.arg_limiter end
  local cpu0 = cpu_seconds()
  update_time()
  local t0 = now()
  local errors, aborted = loop(base, token, call, id, n, extra, (impl == "session" or impl == "finish") and impl)
  update_time()
  local seconds = now() - t0
  ngx.header["Content-Type"] = "application/json"
  ngx.say(cjson.encode { requests = n, errors = errors, seconds = seconds, cpu_seconds = cpu_seconds() - cpu0,
    aborted = aborted or false })
end

return M

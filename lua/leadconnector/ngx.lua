--- leadconnector.ngx: the library's HTTP transport inside nginx (ngx_http_lua / OpenResty), on cosockets.
--
-- Inside nginx a blocking libcurl call stalls every request of the worker, so there the requests go out on
-- `ngx.socket.tcp()`: connect, TLS (`sslhandshake` with SNI and verification), one HTTP/1.1 request, the answer,
-- and `setkeepalive` into nginx's connection pool. Everything else stays in the C core: the answer is handed to
-- `core.finish`, so results, Message/Conversation userdata and error objects are the very ones the libcurl
-- transport gives.
--
-- A session has the methods of the C core's libcurl session: call, batch, last, rate_limit, close, closed.
-- It holds no socket between calls (each call takes a connection from nginx's pool and puts it back), so one
-- client may be created once per worker and used by every request, even by several at the same time.
--
-- Phases: cosockets work in rewrite, access, content, ngx.timer callbacks and the ssl_* certificate/session
-- phases. Elsewhere a call answers an `invalid` error that says so, except for a client made with the default
-- transport (`auto`), which in the start-up phases (init_by_lua*, init_worker_by_lua*), where blocking stalls no
-- request, makes its calls with libcurl.
--
-- TLS trust comes from nginx: `lua_ssl_trusted_certificate` (and `lua_ssl_verify_depth`); a host name needs a
-- `resolver`. The `ca_file` and `proxy` options of the libcurl transport have no cosocket equivalent and are
-- refused.
-- @module leadconnector.ngx

local core = require "leadconnector.core"

local type, tonumber, tostring, pairs, setmetatable, getmetatable, error = type, tonumber, tostring, pairs,
  setmetatable, getmetatable, error
local sub, find, lower, match, gsub, format, byte, concat = string.sub, string.find, string.lower, string.match,
  string.gsub, string.format, string.byte, table.concat
local floor, min = math.floor, math.min
local now, finish, new_error = core.now, core.finish, core.error

-- nginx's API, localised once (lua-resty-http style). Absent outside nginx: the module still loads there, so
-- plain Lua can require it, and session() says why it cannot work.
local ngx = ngx -- luacheck: ignore 113
local tcp, get_phase, ngx_sleep, ngx_time, parse_http_time, thread_spawn, thread_wait
if type(ngx) == "table" then
  tcp = ngx.socket and ngx.socket.tcp
  get_phase = ngx.get_phase
  ngx_sleep = ngx.sleep
  ngx_time = ngx.time
  parse_http_time = ngx.parse_http_time
  if ngx.thread then thread_spawn, thread_wait = ngx.thread.spawn, ngx.thread.wait end
end

local M = {}

-- Phases in which ngx.socket.tcp (and ngx.sleep) may be used (ngx_http_lua and ngx_stream_lua).
local COSOCKET_PHASES = {
  rewrite = true, server_rewrite = true, access = true, content = true, timer = true,
  ssl_cert = true, ssl_session_fetch = true, ssl_client_hello = true, preread = true,
}
-- Start-up phases: blocking there delays start-up but stalls no request, so the default transport may use
-- libcurl in them.
local BLOCKING_OK_PHASES = { init = true, init_worker = true }

local function phase()
  if not get_phase then return nil end
  return get_phase()
end

--- True when the current nginx phase allows cosockets (rewrite, access, content, timer, ssl_cert, ...).
-- False outside nginx and in init, init_worker, set, log, header_filter, body_filter, balancer, exit_worker.
function M.cosockets_allowed()
  return tcp ~= nil and COSOCKET_PHASES[phase()] == true
end

--- Waits without blocking nginx where it may (ngx.sleep); in the start-up phases with a blocking sleep; in the
-- other phases (log, set, filters), where neither is right, not at all (the call that follows fails anyway).
function M.sleep(seconds)
  local p = phase()
  if COSOCKET_PHASES[p] then return ngx_sleep(seconds < 0.001 and 0.001 or seconds) end -- nginx counts in ms
  if p == nil or BLOCKING_OK_PHASES[p] then return core.sleep(seconds) end
end

local function invalid(field, msg)
  local err = new_error("invalid", msg)
  err.field = field
  err.request_sent = false
  return err
end

local function phase_error(p)
  local err = invalid("transport", format(
    "nginx cosockets are not available in the %s phase: call from rewrite_by_lua*, access_by_lua*, " ..
    "content_by_lua* or an ngx.timer callback (from log_by_lua*, ngx.timer.at(0, fn) defers the call)",
    tostring(p)))
  return err
end

--------------------------------------------------------------------------------------------------------------------
-- The session.

local Session = {}
Session.__index = Session
Session.__name = "leadconnector.Session"

-- Per session, what must not be reachable from the session table itself: the Authorization header line (and, for
-- the libcurl fallback, the settings with the token). Weak keys: it goes away with the session.
local secrets = setmetatable({}, { __mode = "k" })

-- The answer's headers the reader looks at, by lower-case name: the rate-limit field a header fills, or a number
-- for the others.
local H_LENGTH, H_ENCODING, H_CONNECTION, H_RETRY, H_TYPE, H_TRACE = 1, 2, 3, 4, 5, 6
local HEADERS = {
  ["x-ratelimit-max"] = "max",
  ["x-ratelimit-remaining"] = "remaining",
  ["x-ratelimit-interval-milliseconds"] = "interval_ms",
  ["x-ratelimit-limit-daily"] = "daily_limit",
  ["x-ratelimit-daily-remaining"] = "daily_remaining",
  ["content-length"] = H_LENGTH, ["transfer-encoding"] = H_ENCODING, ["connection"] = H_CONNECTION,
  ["retry-after"] = H_RETRY, ["content-type"] = H_TYPE, ["x-trace-id"] = H_TRACE, ["x-request-id"] = H_TRACE,
}
-- ... and as servers spell them (Content-Length, X-RateLimit-Remaining, ...), so that the usual answer's headers are
-- found without a lower() each; any other spelling is looked up lower-cased.
do
  local spelled = {}
  for name, what in pairs(HEADERS) do
    local title = gsub(name, "%f[%w]%l", string.upper) -- Content-Length, X-Ratelimit-Max
    spelled[title] = what
    spelled[(gsub(title, "^X%-Ratelimit%-", "X-RateLimit-"))] = what
    spelled[(gsub(title, "%-Id$", "-ID"))] = what
  end
  for name, what in pairs(spelled) do HEADERS[name] = what end
end
local RL_KEYS = { "max", "remaining", "interval_ms", "daily_limit", "daily_remaining" }

local MAX_HEADER_BYTES = 64 * 1024 -- status line and headers of one answer (LC_MAX_HEADER_BYTES of the C core)
local MAX_STALE_RETRIES = 4        -- pooled connections found closed by the server, tried again on a fresh one

-- A header's number, as the libcurl transport reads it: plain decimals only (no sign, hex, exponent, inf, nan):
-- digits and dots, as tonumber reads them. (A loop over the bytes, not a pattern: LuaJIT compiles it.)
local function plain_number(v)
  local n = #v
  if n == 0 or n >= 40 then return nil end -- as the C core: past 39 characters no header number is plausible
  for k = 1, n do
    local b = byte(v, k)
    if b > 57 or b < 46 or b == 47 then return nil end -- not 0-9 or "."
  end
  local d = tonumber(v)
  if d and d == d and d ~= math.huge then return d end
  return nil
end

-- True when s is one or more digits 0-9.
local function all_digits(s)
  local n = #s
  if n == 0 then return false end
  for k = 1, n do
    local b = byte(s, k)
    if b > 57 or b < 48 then return false end
  end
  return true
end

local function parse_base(url)
  local scheme, rest = match(url, "^(https?)://(.*)$")
  if not scheme then return nil end
  local hostport, prefix = match(rest, "^([^/]*)(.*)$")
  local host, portpart
  if sub(hostport, 1, 1) == "[" then
    host, portpart = match(hostport, "^(%[[^%]]+%])(.*)$")
  else
    host, portpart = match(hostport, "^([^:]*)(.*)$")
  end
  if not host or host == "" then return nil end
  local default_port = scheme == "https" and 443 or 80
  local port = default_port
  if portpart ~= "" then
    port = tonumber(match(portpart, "^:(%d+)$"))
    if not port or port < 1 or port > 65535 then return nil end
  end
  return {
    scheme = scheme,
    tls = scheme == "https",
    host = host,                                   -- as connect() wants it ([v6] keeps its brackets)
    name = (gsub(host, "^%[(.*)%]$", "%1")),       -- for SNI and certificate checks
    port = port,
    host_header = port == default_port and host or (host .. ":" .. port),
    prefix = prefix,
  }
end

-- The request's constant part, per session (and per token): the end of the request line, then Host, User-Agent,
-- Authorization, Accept and Version (the session's).
local function set_head(s, token)
  s.head = s.head0 .. (token and ("Authorization: Bearer " .. token .. "\r\n") or "") .. "Accept: application/json\r\n"
  s.mid = " HTTP/1.1\r\n" .. s.head .. s.version_line
end

local CT_JSON = "Content-Type: application/json\r\nContent-Length: "

--- Creates a session: settings = { base_url, version, user_agent, timeout, connect_timeout, verify, ca_file,
-- proxy, max_response_size, token } (checked by the Lua layer). `auto` is true when the transport was not chosen
-- explicitly: then, in the start-up phases only, calls go through a libcurl session instead.
-- @return session, or nil and an `invalid` error
function M.session(settings, auto)
  if type(settings) ~= "table" then error("leadconnector.ngx.session expects a table of settings", 2) end
  if tcp == nil then
    return nil, invalid("transport",
      "transport \"ngx\" works only inside nginx with ngx_http_lua (OpenResty): ngx.socket.tcp is missing")
  end
  if settings.proxy then
    return nil, invalid("proxy", "option 'proxy' is not supported by the ngx transport (cosockets connect " ..
      "directly); use transport = \"curl\" for a proxy, which blocks the nginx worker during each call")
  end
  if settings.ca_file then
    return nil, invalid("ca_file", "option 'ca_file' is not supported by the ngx transport: nginx verifies " ..
      "TLS with the CA file of its lua_ssl_trusted_certificate directive")
  end
  local token = settings.token
  local ok, err = true, nil
  if token ~= false then -- false: no Authorization header (OAuth token requests)
    if type(token) ~= "string" then return nil, invalid("token", "token must be a string") end
    ok, err = core.check_token(token)
    if not ok then return nil, err end
  end
  local base = parse_base(tostring(settings.base_url))
  if not base then
    return nil, invalid("base_url", "option 'base_url' must be an http(s) URL such as https://services.leadconnectorhq.com")
  end
  local version, ua = settings.version, settings.user_agent
  if type(version) ~= "string" or type(ua) ~= "string" then
    error("leadconnector: session needs base_url, version, user_agent", 2)
  end
  ok, err = core.check_header(ua, "user_agent")
  if not ok then return nil, err end
  local verify = settings.verify ~= false
  local timeout = tonumber(settings.timeout) or 30
  local connect_timeout = tonumber(settings.connect_timeout) or 10
  local max_size = floor(tonumber(settings.max_response_size) or 4 * 1024 * 1024)
  if max_size < 1 then max_size = 1 end

  local pool = base.tls
    and format("leadconnector:https:%s:%d:%s:%s", base.host, base.port, verify and "verify" or "noverify", base.name)
    or format("leadconnector:http:%s:%d", base.host, base.port)

  local self = setmetatable({
    base_url = settings.base_url,
    pool = pool,                -- nginx's connection pool for this host, port and TLS settings
    _base = base,
    _verify = verify,
    _timeout = timeout,
    _connect_timeout = connect_timeout,
    _connect_ms = floor(connect_timeout * 1000) + 1,
    _max_size = max_size,
    _version = version,
    _connect_opts = { pool = pool },
    _closed = false,
    -- this call's answer (last) and everything seen (rate_limit)
    _remaining = nil, _interval_ms = nil, _retry_after = nil,
    _rl = {},
  }, Session)
  local s = {
    -- Host, User-Agent, Authorization, Accept: the same headers as the libcurl transport, in one string.
    token = token or nil,
    head0 = "Host: " .. base.host_header .. "\r\nUser-Agent: " .. ua .. "\r\n",
    pre = " " .. base.prefix, -- between the method and the path
    version_line = "Version: " .. version .. "\r\n",
  }
  set_head(s, token)
  if auto then
    s.curl_settings = {
      base_url = settings.base_url, version = version, user_agent = ua, timeout = timeout,
      connect_timeout = connect_timeout, verify = settings.verify, max_response_size = settings.max_response_size,
      token = token,
    }
  end
  secrets[self] = s
  return self
end

local function check_open(self)
  if getmetatable(self) ~= Session then error("leadconnector: not an ngx session", 3) end
  if self._closed then error("leadconnector: the client is closed", 3) end
end

-- A network or timeout error: no answer came.
local function no_answer(kind, msg, sent)
  local err = new_error(kind, msg)
  err.request_sent = sent
  return err
end

-- The session was closed (by another request of the worker) while this call waited on the network: the call
-- ends with an error, never a raise; what was sent may have arrived, and nothing is retried (invalid).
local function closed_meanwhile(sent)
  local err = new_error("invalid", "the client is closed (by another request while this call was in flight)")
  err.field = "client"
  err.request_sent = sent
  return err
end

local function kind_of(err)
  return err == "timeout" and "timeout" or "network"
end

-- A bounded reader over one cosocket, for one attempt. Two rules, the libcurl transport's:
--  * time: every wait for data gets only what is left of the attempt (stop_at). A receive() restarts nginx's read
--    timer whenever a byte arrives, so one receive("*l") of a trickled line could last for ever; receiveany()
--    returns with whatever has come, and the next wait gets what is left then.
--  * memory: a line is read in pieces and refused as soon as it passes its cap (the headers' 64 KiB in all),
--    never buffered whole first (receive("*l") would keep a 200 MB status line with no newline).
-- r = { sock, stop_at, buf = unread bytes, pos = where they start in buf }
local CHUNK = 16384

-- Waits for more bytes (at most `want`): the string, or nil, kind, message.
local function more(r, want)
  local left = r.stop_at - now()
  if left <= 0 then return nil, "timeout", "timeout" end
  r.sock:settimeout(floor(left * 1000) + 1)
  local data, err = r.sock:receiveany(want < CHUNK and want or CHUNK)
  if not data then return nil, kind_of(err), err end
  return data
end

-- One line without its CR LF, of at most `cap` bytes: the line, or nil, kind, message, nothing-came-at-all.
-- kind "toolong": the line passed the cap.
local function read_line(r, cap)
  local buf, pos = r.buf, r.pos
  local nl = find(buf, "\n", pos, true)
  if nl and nl - pos <= cap + 1 then
    r.pos = nl + 1
    local e = nl - 1
    if byte(buf, e) == 13 then e = e - 1 end
    return sub(buf, pos, e)
  end
  local parts, n, size = nil, 0, #buf - pos + 1
  if size > 0 then parts, n = { sub(buf, pos) }, 1 end
  r.buf, r.pos = "", 1
  while true do
    if size > cap + 1 then return nil, "toolong", "line too long" end
    local data, kind, err = more(r, cap + 2 - size)
    if not data then return nil, kind, err, size == 0 end
    nl = find(data, "\n", 1, true)
    if nl then
      parts = parts or {}
      n = n + 1
      parts[n] = sub(data, 1, nl - 1)
      r.buf, r.pos = data, nl + 1
      if size + nl - 1 > cap + 1 then return nil, "toolong", "line too long" end
      local line = n == 1 and parts[1] or concat(parts, "", 1, n)
      if byte(line, -1) == 13 then line = sub(line, 1, -2) end
      if #line > cap then return nil, "toolong", "line too long" end
      return line
    end
    parts = parts or {}
    n = n + 1
    parts[n] = data
    size = size + #data
  end
end

-- Exactly `len` bytes: the string, or nil, kind, message.
local function read_bytes(r, len)
  local buf, pos = r.buf, r.pos
  local have = #buf - pos + 1
  if have >= len then
    r.pos = pos + len
    return sub(buf, pos, pos + len - 1)
  end
  local parts, n = { sub(buf, pos) }, 1
  r.buf, r.pos = "", 1
  while have < len do
    local data, kind, err = more(r, len - have)
    if not data then return nil, kind, err end
    n = n + 1
    parts[n] = data
    have = have + #data
  end
  return concat(parts, "", 1, n)
end

-- Up to `max` bytes of whatever comes next ("" once the connection closed): the string, or nil, kind, message.
local function read_any(r, max)
  local buf, pos = r.buf, r.pos
  if pos <= #buf then
    r.buf, r.pos = "", 1
    return pos == 1 and buf or sub(buf, pos)
  end
  local data, kind, err = more(r, max)
  if not data then
    if err == "closed" then return "" end
    return nil, kind, err
  end
  return data
end

-- The next line of the answer as a range: s, i, j with the line (without its CR LF) = s:sub(i, j), of at most `cap`
-- bytes as read_line counts them. Where the whole line is in the buffer (the usual case: one receive brings the
-- status line and every header) s is the buffer itself and no string is made for the line; else read_line reads
-- it. Or nil, kind, message, nothing-came-at-all.
local function next_line(r, cap)
  local buf, pos = r.buf, r.pos
  local nl = find(buf, "\n", pos, true)
  if nl and nl - pos <= cap + 1 then -- read_line's own test
    r.pos = nl + 1
    local e = nl - 1
    if byte(buf, e) == 13 then e = e - 1 end
    return buf, pos, e
  end
  local line, kind, err, nothing = read_line(r, cap)
  if not line then return nil, kind, err, nothing end
  return line, 1, #line
end

-- A failure while reading an answer from `where`, as read_answer reports it: nil, kind, message.
local function cut(where, kind, err, what)
  if kind == "toolong" then
    return nil, "network", format("answer has more than %d bytes of headers", MAX_HEADER_BYTES)
  end
  if kind == "timeout" then
    return nil, "timeout", format("answer from %s took longer than the timeout%s", where, what or "")
  end
  return nil, kind, format("answer from %s cut short%s: %s", where, what or "", err)
end

-- Reads one answer (status line, headers, body) from sock, all of it by stop_at. Returns a table describing it
-- (fields that no header set are false), or nil, kind, message (plus `nothing` = true when not one byte of an
-- answer came: a pooled connection the server had closed).
local function read_answer(sock, method, max_size, stop_at, where)
  local r = { sock = sock, stop_at = stop_at, buf = "", pos = 1 }
  -- every field made here at once, so that filling it in never grows the table
  local h = {
    status = 0, body = "", keep = false, capped = false, chunked = false, length = false, close = false,
    keep_alive = false, trace_id = false, retry_after = false, content_type = false, rl = false,
    max = false, remaining = false, interval_ms = false, daily_limit = false, daily_remaining = false,
  }
  local status, http10
  local hbytes = 0
  do -- the first bytes (what read_line would wait for first)
    local data, kind, err = more(r, MAX_HEADER_BYTES + 2)
    if not data then return nil, kind, format("no answer from %s: %s", where, err), true end
    r.buf = data
  end
  -- the ':' of a header: the buffer last searched, and the first ':' at or after the line searched then (huge:
  -- none), so that lines without one never make the search run over the rest of the buffer again
  local cs, cpos = nil, 0
  while true do
    local s, i, j, nothing = next_line(r, MAX_HEADER_BYTES - hbytes)
    if not s then
      if i == "toolong" then return cut(where, "toolong") end
      return nil, i, format("no answer from %s: %s", where, j), hbytes == 0 and nothing
    end
    hbytes = hbytes + (j - i + 1) + 2
    -- "HTTP/1.0 " or "HTTP/1.1 ", exactly three digits, then no digit (as the libcurl transport: "HTTP/1.1 2000" is
    -- no 200, and libcurl refuses HTTP/1.2 to 1.9)
    status = nil
    if j - i >= 11 and sub(s, i, i + 6) == "HTTP/1." and byte(s, i + 8) == 32 then
      local v, d1, d2, d3 = byte(s, i + 7), byte(s, i + 9, i + 11)
      local after = i + 12 <= j and byte(s, i + 12) or 32
      if (v == 48 or v == 49) and d1 >= 48 and d1 <= 57 and d2 >= 48 and d2 <= 57 and d3 >= 48 and d3 <= 57
        and not (after >= 48 and after <= 57) then
        status = (d1 - 48) * 100 + (d2 - 48) * 10 + (d3 - 48)
        http10 = v == 48
      end
    end
    -- a status under 100 (HTTP/1.1 000) is no HTTP status: a broken answer, as libcurl takes it
    if not status or status < 100 then
      return nil, "network", format("malformed answer from %s (not an HTTP/1.x status line)", where)
    end
    if status == 101 then -- no request asks to switch protocols: what follows is no HTTP answer
      return nil, "network", format("answer from %s switches protocols (101), which no request asked for", where)
    end
    -- headers
    while true do
      s, i, j = next_line(r, MAX_HEADER_BYTES - hbytes)
      if not s then return cut(where, i, j, " in its headers") end
      if j < i then break end -- the empty line
      hbytes = hbytes + (j - i + 1) + 2
      if hbytes > MAX_HEADER_BYTES then return cut(where, "toolong") end
      -- Only headers starting with X, R, C or T matter here (X-RateLimit-*, X-Trace-Id, X-Request-Id,
      -- Retry-After, Content-Length, Connection, Transfer-Encoding).
      local c = byte(s, i)
      if c == 88 or c == 120 or c == 82 or c == 114 or c == 67 or c == 99 or c == 84 or c == 116 then
        local colon
        if s == cs and cpos >= i then
          colon = cpos
        else
          colon = find(s, ":", i, true) or math.huge
          cs, cpos = s, colon
        end
        local what
        if colon <= j then
          local name = sub(s, i, colon - 1)
          what = HEADERS[name]
          if what == nil then what = HEADERS[lower(name)] end
        end
        if what then
          local vs, ve = colon + 1, j
          local b = byte(s, vs)
          while vs <= ve and (b == 32 or b == 9) do vs = vs + 1 b = byte(s, vs) end
          b = byte(s, ve)
          while ve >= vs and (b == 32 or b == 9) do ve = ve - 1 b = byte(s, ve) end
          local value = sub(s, vs, ve)
          if type(what) == "string" then -- a rate-limit header
            local d = plain_number(value)
            if d then
              h[what] = d
              h.rl = true
            end
          elseif what == H_LENGTH then
            h.length = all_digits(value) and tonumber(value)
            if not h.length then
              return nil, "network", format("answer from %s has a bad Content-Length", where)
            end
          elseif what == H_ENCODING then
            -- chunked alone: no request asks for gzip or the like, whose bytes would pass for the body
            if lower(value) ~= "chunked" then
              return nil, "network", format("answer from %s has a Transfer-Encoding other than chunked", where)
            end
            h.chunked = true
          elseif what == H_CONNECTION then
            local lv = lower(value)
            if find(lv, "close", 1, true) then h.close = true end
            if find(lv, "keep-alive", 1, true) then h.keep_alive = true end
          elseif what == H_RETRY then
            local d = plain_number(value)
            if d then
              h.retry_after = d
            elseif #value > 0 and #value < 64 and parse_http_time then
              local when = parse_http_time(value)
              if when then
                local left = when - ngx_time()
                h.retry_after = left > 0 and left or 0
              end
            end
          elseif what == H_TYPE then
            h.content_type = #value > 127 and sub(value, 1, 127) or value -- kept for answers returned as bytes
          else -- H_TRACE
            -- whole: core.finish redacts an echoed token before it cuts the id to its length
            h.trace_id = gsub(value, "%c", "?")
          end
        end
      end
    end
    if status >= 200 then break end
    -- 1xx: an interim answer; the real one follows, with headers of its own.
    h.chunked, h.length, h.close, h.keep_alive, h.trace_id, h.retry_after = false, false, false, false, false, false
    h.content_type, h.rl, h.max, h.remaining, h.interval_ms = false, false, false, false, false
    h.daily_limit, h.daily_remaining = false, false
  end
  h.status = status

  -- body
  local keep = not h.close and (not http10 or h.keep_alive == true)
  local body = ""
  if method == "HEAD" or status == 204 or status == 304 then
    body = ""
  elseif h.chunked then
    local parts, n, size = {}, 0, 0
    while true do
      local cs, ci, cj = next_line(r, 1024)
      if not cs then return cut(where, ci == "toolong" and "network" or ci, cj or "malformed chunk") end
      -- at most 16 hex digits (libcurl's limit: past it a size no longer fits in 64 bits), white space before and
      -- after them, then the line's end or an extension (";..."): "0x2" is no size 0 (the C core's h1.c reads the
      -- same)
      local b = byte(cs, ci)
      while ci <= cj and (b == 32 or (b >= 9 and b <= 13)) do ci = ci + 1 b = byte(cs, ci) end
      local ce = ci
      while ce <= cj and ((b >= 48 and b <= 57) or (b >= 97 and b <= 102) or (b >= 65 and b <= 70)) do
        ce = ce + 1
        b = byte(cs, ce)
      end
      local len = ce > ci and ce - ci <= 16 and tonumber(sub(cs, ci, ce - 1), 16)
      if len and len < 0 then len = math.huge end -- 16 hex digits past 2^63 wrap on Lua 5.3+: past any cap
      local after = ce
      while after <= cj and (b == 32 or b == 9) do after = after + 1 b = byte(cs, after) end
      if not len or (after <= cj and b ~= 59) then
        return nil, "network", format("answer from %s has a malformed chunk", where)
      end
      local kind, err
      if len == 0 then
        local tbytes = 0
        repeat -- trailers, within the same cap as the headers
          cs, ci, cj = next_line(r, MAX_HEADER_BYTES - tbytes)
          if not cs then return cut(where, ci, cj) end
          tbytes = tbytes + (cj - ci + 1) + 2
        until cj < ci
        break
      end
      if size + len > max_size then
        h.capped = true
        keep = false
        break
      end
      local data
      data, kind, err = read_bytes(r, len)
      if not data then return cut(where, kind, err) end
      n = n + 1
      parts[n] = data
      size = size + len
      cs, ci, cj = next_line(r, 2)
      if not cs then return cut(where, ci == "toolong" and "network" or ci, cj or "malformed chunk") end
      -- the chunk's data ends with its line's end: anything else there means the sizes were lies
      if cj >= ci then return nil, "network", format("answer from %s has a malformed chunk", where) end
    end
    body = n == 1 and parts[1] or concat(parts)
  elseif h.length then
    if h.length > max_size then
      h.capped = true -- like libcurl's size cap: nothing of it is read
      keep = false
    elseif h.length > 0 then
      local kind, err
      body, kind, err = read_bytes(r, h.length)
      if not body then return cut(where, kind, err) end
    end
  else -- no length: the body runs to the end of the connection
    keep = false
    local parts, n, size = {}, 0, 0
    while true do
      local data, kind, err = read_any(r, min(65536, max_size + 1 - size))
      if not data then return cut(where, kind, err) end
      if data == "" then break end
      if size + #data > max_size then h.capped = true break end
      n = n + 1
      parts[n] = data
      size = size + #data
    end
    body = concat(parts)
  end
  if r.pos <= #r.buf then keep = false end -- bytes past the answer: the connection is not reusable
  h.body = body
  h.keep = keep
  return h
end

-- Records the answer's rate-limit headers: last() reports this call's, rate_limit() everything seen.
local function record(self, ans)
  if ans and ans.rl then
    local all = self._rl
    local v = ans.max
    if v then all.max = v end
    v = ans.remaining
    if v then all.remaining = v end
    v = ans.interval_ms
    if v then all.interval_ms = v end
    v = ans.daily_limit
    if v then all.daily_limit = v end
    v = ans.daily_remaining
    if v then all.daily_remaining = v end
    self._remaining, self._interval_ms = ans.remaining or nil, ans.interval_ms or nil
  else
    self._remaining, self._interval_ms = nil, nil
  end
  self._retry_after = ans and ans.retry_after or nil
end

-- The call through libcurl, for a default-transport client in a start-up phase.
local function curl_call(self, op, method, path, body, version, tmo, ctype)
  local s = secrets[self]
  if not s.curl then
    local cs, err = core.session(s.curl_settings)
    if not cs then return nil, err end
    s.curl = cs
  end
  if s.curl_settings.token ~= (s.token or false) then -- set_token since the libcurl session was made
    local ok, err = s.curl:set_token(s.token or false)
    if not ok then return nil, err end
    s.curl_settings.token = s.token or false
  end
  local value, err, remaining, interval_ms, retry_after = s.curl:call(op, method, path, body, version, tmo, ctype)
  local rl = s.curl:rate_limit()
  local all = self._rl
  for k, v in pairs(rl) do all[k] = v end
  self._remaining, self._interval_ms, self._retry_after = remaining, interval_ms, retry_after
  return value, err
end

-- One HTTP/1.1 request on a cosocket (or through libcurl in a start-up phase): value | nil, err.
local function call(self, op, method, path, body, version, tmo, ctype)
  if getmetatable(self) ~= Session then error("leadconnector: not an ngx session", 3) end
  -- closed by another request during this client call's retry wait: an error for the call, not a raise (calling
  -- a closed client is refused, with a raise, by the client itself)
  if self._closed then return nil, closed_meanwhile(false) end
  local p = phase()
  if not COSOCKET_PHASES[p] then
    if secrets[self].curl_settings and BLOCKING_OK_PHASES[p] then
      return curl_call(self, op, method, path, body, version, tmo, ctype)
    end
    record(self, nil)
    return nil, phase_error(p)
  end
  if type(method) ~= "string" or type(path) ~= "string" then
    error("leadconnector: session:call needs op, method and path", 3)
  end
  local sec = secrets[self] -- close() from another request forgets it: this call keeps what it needs
  local mid = sec.mid -- " HTTP/1.1", then the headers every request has, made once per session
  if version ~= nil and version ~= self._version then
    if #version > 64 or find(version, "[\r\n]") then error("leadconnector: bad version", 3) end
    mid = " HTTP/1.1\r\n" .. sec.head .. "Version: " .. version .. "\r\n"
  end
  local req
  if body then
    local ct = CT_JSON
    if ctype ~= nil then
      if #ctype > 200 or find(ctype, "%c") then -- a multipart body's type, made by the C core: never a header break
        error("leadconnector: bad content type", 3)
      end
      ct = "Content-Type: " .. ctype .. "\r\nContent-Length: "
    end
    req = method .. sec.pre .. path .. mid .. ct .. #body .. "\r\n\r\n" .. body
  else
    if ctype ~= nil and (#ctype > 200 or find(ctype, "%c")) then error("leadconnector: bad content type", 3) end
    req = method .. sec.pre .. path .. mid .. "\r\n"
  end
  if not (tmo and tmo > 0) then tmo = self._timeout end
  local base = self._base
  local stop_at = now() + tmo
  local where = base.host_header

  local stale = 0
  while true do
    local left = stop_at - now()
    if left <= 0 then
      record(self, nil)
      return nil, no_answer("timeout", format("timed out after %g s before connecting to %s", tmo, where), stale > 0)
    end
    local left_ms = floor(left * 1000) + 1
    local sock = tcp()
    sock:settimeouts(min(left_ms, self._connect_ms), left_ms, left_ms)
    local ok, err = sock:connect(base.host, base.port, self._connect_opts)
    if not ok then
      record(self, nil)
      -- after a stale pooled connection took the request (stale > 0), it may have arrived: never "never sent"
      return nil, no_answer(kind_of(err), format("could not connect to %s: %s", where, err), stale > 0)
    end
    local reused = sock:getreusedtimes()
    if base.tls and reused == 0 then
      ok, err = sock:sslhandshake(nil, base.name, self._verify)
      if not ok then
        sock:close()
        record(self, nil)
        return nil, no_answer(kind_of(err), format("TLS handshake with %s failed: %s", where, err), stale > 0)
      end
    end
    if reused == 0 then -- the connect (and handshake) took some of the time
      left_ms = floor((stop_at - now()) * 1000) + 1
      if left_ms < 1 then left_ms = 1 end
      sock:settimeouts(left_ms, left_ms, left_ms)
    end
    local sent
    sent, err = sock:send(req)
    local ans, kind, msg, nothing
    if sent then
      ans, kind, msg, nothing = read_answer(sock, method, self._max_size, stop_at, where)
    else
      kind, msg, nothing = kind_of(err), format("could not send the request to %s: %s", where, err), true
    end
    if self._closed then
      sock:close()
      record(self, nil)
      return nil, closed_meanwhile(sent and true or stale > 0)
    end
    if ans then
      if ans.keep then sock:setkeepalive() else sock:close() end
      record(self, ans)
      if ans.capped and ans.status < 300 then
        local e = new_error("decode", format("answer is larger than max_response_size (%d bytes)", self._max_size))
        e.status = ans.status
        e.request_sent = true
        return nil, e
      end
      -- the token, so that an error answer echoing it never puts it into err.message or err.body
      return finish(op, ans.status, ans.body, ans.retry_after or nil, ans.trace_id or nil, sec.token,
        ans.content_type or nil)
    end
    sock:close()
    -- A pooled connection the server had already closed: try a fresh one, as libcurl does, but never for a POST
    -- (a send is not idempotent: it fails, marked request_sent, and the Lua layer decides).
    if not (nothing and kind == "network" and reused > 0 and method ~= "POST" and stale < MAX_STALE_RETRIES) then
      record(self, nil)
      return nil, no_answer(kind, msg, true)
    end
    stale = stale + 1
  end
end

--- session:call(op, method, path, body|nil, version|nil, timeout_s|nil, content_type|nil)
--   -> value | nil, err; then remaining, interval_ms, retry_after of this answer (nil where absent), as the C
--   core's session returns them
-- op: one of the C core's answer kinds (core.finish): "send", "status", "message", "table", "bytes", ...
function Session:call(op, method, path, body, version, tmo, ctype)
  local value, err = call(self, op, method, path, body, version, tmo, ctype)
  return value, err, self._remaining, self._interval_ms, self._retry_after
end

--- session:set_token(token | false) -> true | nil, err: the token of the calls that follow (an OAuth access token
-- changes after a refresh); false sends no Authorization header. A call already under way keeps its own.
function Session:set_token(token)
  check_open(self)
  local s = secrets[self]
  if token == (s.token or false) then return true end
  if token ~= false then
    if type(token) ~= "string" then return nil, invalid("token", "token must be a string") end
    local ok, err = core.check_token(token)
    if not ok then return nil, err end
  end
  s.token = token or nil
  set_head(s, token)
  return true
end

--- session:batch(requests, concurrency) -> values, errors, remaining, interval_ms
-- (remaining: the smallest X-RateLimit-Remaining of the answers, which finish in any order)
-- requests[i] = { op, method, path, body|false, version|false, timeout|false }; up to `concurrency` in flight at
-- once, each on its own cosocket in an ngx.thread. values[i] or errors[i] is set for each i.
function Session:batch(requests, concurrency)
  check_open(self)
  if type(requests) ~= "table" then error("leadconnector: batch expects a list of requests", 2) end
  local n = #requests
  local values, errors = {}, {}
  local rem_min, interval_ms
  local function run(i)
    local r = requests[i]
    if type(r) ~= "table" then error(format("leadconnector: batch request %d is not a table", i), 0) end
    if self._closed then -- closed by another request while the batch ran: the rest fail, unsent
      values[i], errors[i] = nil, closed_meanwhile(false)
      return
    end
    values[i], errors[i] = call(self, r[1], r[2], r[3], r[4] or nil, r[5] or nil, r[6] or nil)
    -- this call's answer (nothing yields between its record() and here)
    local rem = self._remaining
    if rem and (not rem_min or rem < rem_min) then rem_min = rem end
    interval_ms = self._interval_ms or interval_ms
  end
  concurrency = tonumber(concurrency) or 8
  concurrency = concurrency >= 256 and 256 or concurrency >= 1 and floor(concurrency) or 1 -- NaN: 1
  if concurrency > n then concurrency = n end
  if concurrency <= 1 or not thread_spawn or not M.cosockets_allowed() then
    for i = 1, n do run(i) end
    return values, errors, rem_min, interval_ms
  end
  local next_i = 1
  local function worker()
    while next_i <= n do
      local i = next_i
      next_i = i + 1
      run(i)
    end
  end
  local threads = {}
  for k = 1, concurrency do threads[k] = thread_spawn(worker) end
  local failure
  for k = 1, concurrency do
    local ok, err = thread_wait(threads[k])
    if not ok and not failure then failure = err end
  end
  if failure then error(failure, 0) end
  return values, errors, rem_min, interval_ms
end

--- session:last() -> remaining, interval_ms, retry_after of the last call's answer (nil where absent).
function Session:last()
  return self._remaining, self._interval_ms, self._retry_after
end

--- session:rate_limit() -> { max, remaining, interval_ms, daily_limit, daily_remaining }: what answers said.
function Session:rate_limit()
  local t, all = {}, self._rl
  for i = 1, #RL_KEYS do
    local k = RL_KEYS[i]
    t[k] = all[k]
  end
  return t
end

--- Closes the session: later calls raise. Pooled connections stay in nginx's pool (shared by every session to the
-- same host) until lua_socket_keepalive_timeout. Idempotent.
function Session:close()
  if self._closed then return end
  self._closed = true
  local s = secrets[self]
  if s then
    if s.curl then s.curl:close() end
    secrets[self] = nil
  end
end

function Session:closed()
  return self._closed
end

function Session:__tostring()
  return format("leadconnector.Session (%s, ngx)", self._closed and "closed" or self.base_url)
end

M.Session = Session
M._parse_base = parse_base
M._read_answer = read_answer -- for fuzz/fuzz_reader.c (with a stand-in socket)
return M

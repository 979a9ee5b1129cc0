--[[ spec/helpers.lua -- start and drive the LeadConnector sandbox from busted specs.

Works under `lua5.4 /usr/bin/busted` and `luajit /usr/bin/busted` (needs only luasocket and cjson).
This interface is stable; other specs build on it.

  local helpers = require "helpers"

  local sb = helpers.start_sandbox(opts)
      Starts bin/leadconnector-sandbox on a free port, waits until it answers, and returns a sandbox
      object. opts (all optional):
        rate_limit = N | false      burst limit per location (false: no 429 at all); default: the
                                    sandbox's own, 100 per 10 s
        rate_interval_ms = MS, daily_limit = N, max_messages = N
        tokens = { "tok", "tok2@loc_other", ... }   accepted tokens (default: { "sandbox-token" })
        state = FILE                keep the data in FILE across restarts
        port = N                    fixed port (default: 0, a free one)
        args = { ... }              more command-line arguments
        timeout = S                 seconds to wait for it to start (default 20)
      It raises (with the sandbox's own log) if the sandbox does not start. The sandbox also stops by
      itself when this Lua process exits, so a crashed test run leaves no server behind.

  sb.url, sb.token, sb.port, sb.pid           base URL, first token, port, pid of the launcher
  sb:reset()                                  POST /_sandbox/reset (seed data back, faults/log/limits cleared)
  sb:fault(spec)                              POST /_sandbox/faults; spec as in sandbox/README.md
                                              (a table, or a list of them); returns the registered faults
  sb:clear_faults()                           DELETE /_sandbox/faults
  sb:config(t)                                POST /_sandbox/config {rate_limit=N|false, rate_interval_ms=, daily_limit=}
  sb:requests()                               GET /_sandbox/requests: decoded list, oldest first
  sb:clear_requests()                         DELETE /_sandbox/requests
  sb:messages(contact_id)                     GET /_sandbox/messages?contactId=...: decoded list (all if nil)
  sb:inbound(t)                               POST /_sandbox/inbound: inject a message (conversation created if
                                              needed; recording/transcription for calls); returns
                                              {conversationId, messageId, contactId, emailMessageId?}
  sb:recording(message_id, bytes, content_type)   PUT /_sandbox/messages/{id}/recording (raw bytes)
  sb:transcription(message_id, sentences)     PUT /_sandbox/messages/{id}/transcription
                                              (sb:config{messages_shape = "flat"|"nested"} picks get_messages' shape)
  sb:request(method, path, body, headers, opts) -> status, body, headers, raw_body
      One raw HTTP/1.1 request over luasocket (Connection: close). Sends by default
      Authorization: Bearer <sb.token>, Version: 2021-04-15, Accept: application/json, and
      Content-Type: application/json when there is a body. headers (any case) override those; a
      header set to false is left out. body: a table (encoded with cjson -- an empty table goes out
      as {}) or a string (sent as is). The answer's body comes back decoded when it is JSON, else as
      the raw string; headers has lower-case names. When no answer came (e.g. a "drop" fault)
      it returns nil, error message. opts.timeout: seconds (default 10).
  sb:stop()                                   SIGTERM, waits for the exit (SIGKILL after 10 s); idempotent

  helpers.sandbox_suite(set, opts, config)    inside a describe block: one sandbox (start_sandbox(opts)) for the
                                              block, handed to set(sb); stopped after it; before each test
                                              sb:reset(), then sb:config(config) when config is given
  helpers.free_port()                         a TCP port free on 127.0.0.1 right now
  helpers.CLEAN_ENV                           "env -u LD_PRELOAD -u ASAN_OPTIONS ...": put it before a
                                              command run with io.popen/os.execute so that the test
                                              process's sanitizer settings do not reach it
  helpers.sandbox_bin()                       absolute path of bin/leadconnector-sandbox
  helpers.alive(pid)                          true while process pid exists and is not a zombie
  helpers.read_file(path) / helpers.write_file(path, s) / helpers.sh(cmd) / helpers.my_pid()
                                              small file and process helpers shared by the specs
]]

local socket = require "socket"
local cjson = require "cjson"

local helpers = {}

-- Sanitizer settings of the test process (scripts/test.sh asan) must not reach bash and nginx.
helpers.CLEAN_ENV = "env -u LD_PRELOAD -u ASAN_OPTIONS -u LSAN_OPTIONS -u UBSAN_OPTIONS"

local function shell_quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

local function read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return s
end
helpers.read_file = read_file

local function write_file(path, s)
  local f = assert(io.open(path, "wb"))
  f:write(s)
  f:close()
end
helpers.write_file = write_file

local function repo_root()
  local src = debug.getinfo(1, "S").source:gsub("^@", "")
  local dir = src:match("^(.*)/spec/[^/]*$") or (src:match("^spec/") and ".") or "."
  if dir:sub(1, 1) ~= "/" then
    local pwd = os.getenv("PWD")
    if not pwd then
      local p = io.popen("pwd")
      pwd = p:read("*l")
      p:close()
    end
    dir = (dir == "." or dir == "") and pwd or (pwd .. "/" .. dir)
  end
  return dir
end

function helpers.sandbox_bin()
  return os.getenv("LEADCONNECTOR_SANDBOX_BIN") or (repo_root() .. "/bin/leadconnector-sandbox")
end

local function my_pid()
  local s = read_file("/proc/self/stat")
  return s and tonumber(s:match("^(%d+)"))
end
helpers.my_pid = my_pid

function helpers.alive(pid)
  local s = read_file("/proc/" .. tostring(pid) .. "/stat")
  if not s then return false end
  local state = s:match("^%d+ %b() (%a)")
  return state ~= nil and state ~= "Z"
end

function helpers.free_port()
  local s = assert(socket.bind("127.0.0.1", 0))
  local _, port = s:getsockname()
  s:close()
  return tonumber(port)
end

local function sh(cmd)
  local p = assert(io.popen(cmd))
  local out = p:read("*a")
  p:close()
  return out
end
helpers.sh = sh

---------------------------------------------------------------------------------------------------
-- raw HTTP
local function http(host, port, method, path, body, headers, timeout)
  local names = {}   -- lower name -> name as given
  local values = {}
  local function set(k, v)
    local lk = k:lower()
    if names[lk] then values[names[lk]] = nil end
    if v == false or v == nil then
      names[lk] = nil
    else
      names[lk] = k
      values[k] = tostring(v)
    end
  end
  if body ~= nil then
    if type(body) == "table" then body = cjson.encode(body) end
    body = tostring(body)
  end
  for k, v in pairs(headers) do set(k, v) end
  set("Host", host .. ":" .. port)
  set("Connection", "close")
  if body ~= nil then set("Content-Length", #body) end

  local lines = { method .. " " .. path .. " HTTP/1.1" }
  local keys = {}
  for k in pairs(values) do keys[#keys + 1] = k end
  table.sort(keys)
  for _, k in ipairs(keys) do lines[#lines + 1] = k .. ": " .. values[k] end
  local req = table.concat(lines, "\r\n") .. "\r\n\r\n" .. (body or "")

  local c = socket.tcp()
  c:settimeout(timeout or 10)
  local ok, err = c:connect(host, port)
  if not ok then c:close() return nil, "connect: " .. tostring(err) end
  ok, err = c:send(req)
  if not ok then c:close() return nil, "send: " .. tostring(err) end
  local status_line, rerr = c:receive("*l")
  if not status_line then c:close() return nil, tostring(rerr) end
  local status = tonumber(status_line:match("^HTTP/%d%.%d (%d%d%d)"))
  if not status then c:close() return nil, "bad status line: " .. status_line end
  local h = {}
  while true do
    local line, lerr = c:receive("*l")
    if not line then c:close() return nil, "headers: " .. tostring(lerr) end
    if line == "" then break end
    local k, v = line:match("^([^:]+):%s*(.-)%s*$")
    if k then
      k = k:lower()
      h[k] = h[k] and (h[k] .. ", " .. v) or v
    end
  end
  local raw
  if method == "HEAD" or status == 204 or status == 304 then
    raw = ""
  elseif h["transfer-encoding"] and h["transfer-encoding"]:lower():find("chunked") then
    local parts = {}
    while true do
      local size_line = c:receive("*l")
      local size = size_line and tonumber(size_line:match("^%x+"), 16)
      if not size then c:close() return nil, "bad chunked body" end
      if size == 0 then break end
      parts[#parts + 1] = c:receive(size)
      c:receive("*l")
    end
    raw = table.concat(parts)
  elseif h["content-length"] then
    local n = tonumber(h["content-length"])
    raw = (n and n > 0) and c:receive(n) or ""
    if raw == nil then c:close() return nil, "body shorter than Content-Length" end
  else
    local data, _, partial = c:receive("*a")
    raw = data or partial or ""
  end
  c:close()
  local decoded = raw
  local ct = h["content-type"] or ""
  if raw ~= "" and ct:find("json", 1, true) then
    local dok, v = pcall(cjson.decode, raw)
    if dok then decoded = v end
  end
  return status, decoded, h, raw
end

---------------------------------------------------------------------------------------------------
local Sandbox = {}
Sandbox.__index = Sandbox

function Sandbox:request(method, path, body, headers, opts)
  local hs = {
    Authorization = "Bearer " .. self.token,
    Version = "2021-04-15",
    Accept = "application/json",
  }
  if body ~= nil then hs["Content-Type"] = "application/json" end
  local merged = {}
  for k, v in pairs(hs) do merged[k] = v end
  -- caller's headers win, whatever their case
  for k, v in pairs(headers or {}) do
    for mk in pairs(merged) do
      if mk:lower() == k:lower() then merged[mk] = nil end
    end
    merged[k] = v
  end
  return http(self.host, self.port, method, path, body, merged, opts and opts.timeout)
end

-- A control call; raises unless it answered 2xx.
function Sandbox:control(method, path, body)
  local status, decoded, _, raw = http(self.host, self.port, method, path, body,
    body ~= nil and { ["Content-Type"] = "application/json" } or {}, 10)
  if not status or status < 200 or status > 299 then
    error(("sandbox %s %s failed: %s %s"):format(method, path, tostring(status), tostring(raw or decoded)), 2)
  end
  return decoded
end

function Sandbox:reset() return self:control("POST", "/_sandbox/reset") end
function Sandbox:fault(spec) return self:control("POST", "/_sandbox/faults", spec).faults end
function Sandbox:clear_faults() return self:control("DELETE", "/_sandbox/faults") end
function Sandbox:config(t) return self:control("POST", "/_sandbox/config", t or {}) end
function Sandbox:requests() return self:control("GET", "/_sandbox/requests") end
function Sandbox:clear_requests() return self:control("DELETE", "/_sandbox/requests") end

local function urlencode(s)
  return (tostring(s):gsub("[^%w%-%._~]", function(ch) return ("%%%02X"):format(ch:byte()) end))
end

function Sandbox:inbound(t) return self:control("POST", "/_sandbox/inbound", t) end

function Sandbox:recording(message_id, bytes, content_type)
  local path = "/_sandbox/messages/" .. urlencode(message_id) .. "/recording"
  local status, decoded, _, raw = http(self.host, self.port, "PUT", path, bytes,
    { ["Content-Type"] = content_type or "audio/x-wav" }, 10)
  if status ~= 200 then error(("sandbox PUT %s failed: %s %s"):format(path, tostring(status), tostring(raw)), 2) end
  return decoded
end

function Sandbox:transcription(message_id, sentences)
  return self:control("PUT", "/_sandbox/messages/" .. urlencode(message_id) .. "/transcription", sentences)
end

function Sandbox:messages(contact_id)
  local path = "/_sandbox/messages"
  if contact_id then path = path .. "?contactId=" .. urlencode(contact_id) end
  return self:control("GET", path)
end

-- The sandbox's own nginx error log (for diagnostics), or nil once stopped.
function Sandbox:log()
  return read_file(self.prefix .. "/error.log")
end

local function wait_gone(pid, seconds)
  local deadline = socket.gettime() + seconds
  while helpers.alive(pid) do
    if socket.gettime() > deadline then return false end
    socket.sleep(0.02)
  end
  return true
end

function Sandbox:stop()
  if self.stopped then return true end
  self.stopped = true
  local nginx_pid = tonumber((read_file(self.prefix .. "/nginx.pid") or ""):match("%d+"))
  os.execute("kill -TERM " .. self.pid .. " 2>/dev/null")
  if not wait_gone(self.pid, 10) then
    os.execute("kill -KILL " .. self.pid .. " 2>/dev/null")
    wait_gone(self.pid, 2)
  end
  -- if the launcher was killed hard, its nginx may still be there
  if nginx_pid and helpers.alive(nginx_pid) then
    os.execute("kill -TERM " .. nginx_pid .. " 2>/dev/null")
    if not wait_gone(nginx_pid, 5) then os.execute("kill -KILL " .. nginx_pid .. " 2>/dev/null") end
  end
  os.execute("rm -rf " .. shell_quote(self.prefix)) -- normally already removed by the launcher
  return true
end

function helpers.start_sandbox(opts)
  opts = opts or {}
  local prefix = sh("mktemp -d \"${TMPDIR:-/tmp}/lcsb-spec.XXXXXX\""):gsub("%s+$", "")
  assert(prefix ~= "", "mktemp -d failed")
  -- The launcher's stdout/stderr go to files beside the prefix, unlinked as soon as it has started
  -- (or failed), so that nothing is left in /tmp even if this process dies.
  local out_file, err_file = prefix .. ".out", prefix .. ".err"
  local args = { "--port", tostring(opts.port or 0), "--prefix", prefix, "--remove-prefix" }
  local function add(...) for _, a in ipairs({ ... }) do args[#args + 1] = tostring(a) end end
  if opts.host then add("--host", opts.host) end
  for _, t in ipairs(opts.tokens or {}) do add("--token", t) end
  if opts.state then add("--state", opts.state) end
  if opts.rate_limit == false then
    add("--no-rate-limit")
  elseif opts.rate_limit then
    add("--rate-limit", opts.rate_limit)
  end
  if opts.rate_interval_ms then add("--rate-interval-ms", opts.rate_interval_ms) end
  if opts.daily_limit then add("--daily-limit", opts.daily_limit) end
  if opts.max_messages then add("--max-messages", opts.max_messages) end
  local me = my_pid()
  if me then add("--exit-with", me) end
  for _, a in ipairs(opts.args or {}) do add(a) end

  local quoted = {}
  for i, a in ipairs(args) do quoted[i] = shell_quote(a) end
  local cmd = ("%s %s %s >%s 2>%s </dev/null & echo $!")
    :format(helpers.CLEAN_ENV, shell_quote(helpers.sandbox_bin()), table.concat(quoted, " "), shell_quote(out_file), shell_quote(err_file))
  local pid = tonumber(sh(cmd):match("%d+"))
  assert(pid, "could not start " .. helpers.sandbox_bin())

  local sb = setmetatable({ pid = pid, prefix = prefix, out_file = out_file, err_file = err_file }, Sandbox)
  local deadline = socket.gettime() + (opts.timeout or 20)
  while true do
    local out = read_file(out_file) or ""
    local url = out:match("LEADCONNECTOR_SANDBOX_URL=(%S+)\n")
    local token = out:match("LEADCONNECTOR_SANDBOX_TOKEN=(%S+)\n")
    if url and token then
      sb.url, sb.token = url, token
      sb.host, sb.port = url:match("^http://(.-):(%d+)$")
      sb.host = sb.host:gsub("^%[(.*)%]$", "%1")
      sb.port = tonumber(sb.port)
      os.remove(out_file)
      os.remove(err_file)
      break
    end
    if not helpers.alive(pid) or socket.gettime() > deadline then
      local why = (read_file(err_file) or "") .. (read_file(prefix .. "/error.log") or "")
      sb:stop()
      os.remove(out_file)
      os.remove(err_file)
      error("the sandbox did not start:\n" .. why, 2)
    end
    socket.sleep(0.02)
  end
  return sb
end

function helpers.sandbox_suite(set, opts, config)
  local busted = require "busted" -- its block functions (lazy_setup, ...) are globals only in spec files
  local sb
  busted.lazy_setup(function()
    sb = helpers.start_sandbox(opts)
    set(sb)
  end)
  busted.lazy_teardown(function()
    if sb then sb:stop() end
  end)
  busted.before_each(function()
    sb:reset()
    if config then sb:config(config) end
  end)
end

return helpers

-- bench/profile_ngx.lua (`bench/profile ngx [CALL ...]`): instructions per call on the cosocket transport, counted
-- by valgrind's callgrind inside nginx -- the nginx rows of bench/ngx/run, exact and repeatable whatever else the
-- machine is doing. CALL: get_message update_message_status send_message get_conversation (default: get_message
-- update_message_status).
--
-- For each call, five loops of bench/ngx/loops.lua, each adding one layer to the one before:
--   raw      the raw cosocket loop (the baseline: status line, headers, body, setkeepalive; no decoding)
--   finish   the answer path alone, no I/O: core.finish (lua-cjson + the result's userdata) over the raw
--            loop's answer
--   session  the transport alone: the first call's session:call repeated (leadconnector.ngx + core.finish)
--   lcnolim  the library with rate_limit = false (the Lua layer: validation, path, deadline, retry bookkeeping)
--   lc       the library as it comes (the default per-worker limiter)
-- The table's last column says what each row adds to the one before. Each loop runs in its own nginx
-- (bench/ngx/nginx.conf with `master_process off`: one process, LuaJIT's JIT on, as in production) under
-- `valgrind --tool=callgrind --smc-check=all-non-file` (LuaJIT writes machine code: without it valgrind would run
-- stale translations), twice: one request /loop with BASE calls, then one with BASE + N calls; instructions per
-- call = (Ir(BASE + N) - Ir(BASE)) / N, so nginx's start-up, the JIT's first traces and the first connection drop
-- out. Then, for the session and lc rows, the same split by shared object (nginx, ngx_http_lua_module, LuaJIT's
-- interpreter and runtime, the JIT's machine code -- callgrind's "???" --, libc, lua-cjson, the library's core.so)
-- beside the raw loop's, and the functions with the most instructions of their own (all of them in
-- bench/out/profile-ngx-*.txt, the callgrind files beside them; Debian's libluajit has no symbols, so most of its
-- functions are addresses). User space only: the kernel's share of a call (syscalls, loopback TCP; the same
-- sendto, recvfrom and epoll_wait per call for the raw loop and the library) is not in it, though it is in
-- bench/ngx/run's CPU column.
--
-- The sandbox (not under valgrind) is reset before every run, so every run meets the same store. nginx is never
-- probed with a request before the measured one (that would add a varying number of requests to the count): the
-- driver waits for the port to be listening in /proc/net/tcp. Repeated runs agree within about 1,500
-- instructions per call (the JIT's choices vary a little).
--
-- Knobs: BENCH_PROFILE_REQUESTS (N, default 2000), BENCH_PROFILE_BASE (default 1000: by then the JIT has settled),
-- BENCH_SANDBOX, BENCH_PROFILE_ONLY (comma-separated rows: raw, finish, session, lcnolim, lc),
-- LEADCONNECTOR_NGINX_MODULES (default /usr/lib/nginx/modules).
package.path = "bench/?.lua;" .. package.path
local lib = require "lib"
local socket = require "socket"

local env, log, capture, sh, q = lib.env, lib.log, lib.capture, lib.sh, lib.quote
local OUT = lib.OUT
local N = tonumber(env("BENCH_PROFILE_REQUESTS", "2000"))
local BASE = tonumber(env("BENCH_PROFILE_BASE", "1000"))
local SANDBOX = env("BENCH_SANDBOX",
  "bin/leadconnector-sandbox --port 0 --no-rate-limit --rate-limit 1000000 --rate-interval-ms 1000")
local MODULES = env("LEADCONNECTOR_NGINX_MODULES", "/usr/lib/nginx/modules")
local TOP = 20
local ONLY -- BENCH_PROFILE_ONLY=raw,finish,session,lcnolim,lc: only those rows
if env("BENCH_PROFILE_ONLY", "") ~= "" then
  ONLY = {}
  for w in env("BENCH_PROFILE_ONLY", ""):gmatch("[^,%s]+") do ONLY[w] = true end
end

local calls = {}
for _, a in ipairs(arg) do calls[#calls + 1] = a end
if #calls == 0 then calls = { "get_message", "update_message_status" } end
for _, c in ipairs(calls) do
  if not (c == "get_message" or c == "update_message_status" or c == "send_message" or c == "get_conversation") then
    io.stderr:write("bench/profile ngx: unknown call ", c, "\n")
    os.exit(2)
  end
end

local function fail(msg)
  io.stderr:write("bench/profile ngx: ", msg, "\n")
  lib.stop_server()
  os.exit(1)
end

if not sh("command -v valgrind >/dev/null 2>&1") then fail("needs valgrind (apt-get install valgrind)") end
if not (sh("command -v nginx >/dev/null 2>&1") and lib.exists(MODULES .. "/ngx_http_lua_module.so")) then
  fail("needs nginx with the Lua module (apt-get install nginx libnginx-mod-http-lua)")
end
if not lib.exists("build/luajit/leadconnector/core.so") then
  fail("the C core for LuaJIT is not built: make luajit")
end

local REPO = capture("pwd"):gsub("%s+$", "")
local prefix = capture("mktemp -d \"${TMPDIR:-/tmp}/lc-profile-ngx.XXXXXX\""):gsub("%s+$", "")
sh("mkdir -p " .. q(prefix .. "/tmp"))
local ctx = {}
local current -- the nginx under valgrind now running: { pid = }

local function alive(pid)
  local s = lib.read_file("/proc/" .. pid .. "/stat")
  return s ~= nil and s:match("^%d+ %b() (%a)") ~= "Z"
end

local function stop_nginx(sig)
  if not current then return end
  local pid = current.pid
  sh("kill -" .. (sig or "QUIT") .. " " .. pid .. " 2>/dev/null")
  for _ = 1, 1200 do -- callgrind writes its file as the process exits: up to a minute
    if not alive(pid) then break end
    socket.sleep(0.05)
  end
  if alive(pid) then sh("kill -KILL " .. pid .. " 2>/dev/null") end
  current = nil
end

local function cleanup()
  stop_nginx("TERM")
  lib.stop_server()
  if prefix then sh("rm -rf " .. q(prefix)) prefix = nil end
end

local function free_port()
  local s = assert(socket.bind("127.0.0.1", 0))
  local _, port = s:getsockname()
  s:close()
  return tonumber(port)
end

-- True once 127.0.0.1:port is in LISTEN state (no connection made: nginx must see only the measured request).
local function listening(port)
  local want = string.format(":%04X ", port)
  local t = lib.read_file("/proc/net/tcp") or ""
  for line in t:gmatch("[^\n]+") do
    local loc, st = line:match("^%s*%d+:%s+(%x+:%x+)%s+%x+:%x+%s+(%x+)")
    if loc and st == "0A" and (loc .. " "):find(want, 1, true) and loc:sub(1, 8) == "0100007F" then return true end
  end
  return false
end

local function http_get(port, path)
  local c = socket.tcp()
  c:settimeout(3600)
  local ok, err = c:connect("127.0.0.1", port)
  if not ok then c:close() return nil, err end
  c:send("GET " .. path .. " HTTP/1.1\r\nHost: profile\r\nConnection: close\r\n\r\n")
  local data, _, partial = c:receive("*a")
  c:close()
  data = data or partial or ""
  local status = tonumber(data:match("^HTTP/1%.%d (%d+)"))
  local head_end = data:find("\r\n\r\n", 1, true)
  local body = head_end and data:sub(head_end + 4) or ""
  if data:sub(1, head_end or 0):lower():find("transfer%-encoding: chunked") then
    local parts, pos = {}, 1
    while true do
      local hex, after = body:match("^(%x+)[^\r\n]*\r\n()", pos)
      local size = hex and tonumber(hex, 16)
      if not size or size == 0 then break end
      parts[#parts + 1] = body:sub(after, after + size - 1)
      pos = after + size + 2
    end
    body = table.concat(parts)
  end
  return status, body
end

local function urlencode(s)
  return (tostring(s):gsub("[^%w%-%._~]", function(ch) return ("%%%02X"):format(ch:byte()) end))
end

local function reset_sandbox()
  local http = require "socket.http"
  local _, code = http.request { url = ctx.url .. "/_sandbox/reset", method = "POST",
    headers = { ["content-length"] = "0" } }
  return code == 200
end

-- Total instructions of one nginx that served one /loop request of n calls; or nil and why.
local function count(row, n)
  reset_sandbox()
  local port = free_port()
  local conf = assert(lib.read_file("bench/ngx/nginx.conf"))
  local vars = { MODULES = MODULES, USER = capture("id -u"):match("^0%s") and "user root;" or "", PREFIX = prefix,
    REPO = REPO, PORT = port }
  conf = conf:gsub("@([%u_]+)@", function(k) return tostring(assert(vars[k], k)) end)
  local replaced
  conf, replaced = conf:gsub("\nmaster_process on;", "\nmaster_process off;")
  assert(replaced == 1, "bench/ngx/nginx.conf: no `master_process on;` line to turn off")
  local f = assert(io.open(prefix .. "/nginx.conf", "wb"))
  f:write(conf)
  f:close()
  local file = string.format("%s/callgrind.ngx-%s.%d.out", OUT, row.id, n)
  os.remove(file)
  local cmd = ("valgrind --tool=callgrind --smc-check=all-non-file --callgrind-out-file=%s " ..
    "nginx -p %s -c %s/nginx.conf -e %s/error.log >>%s/profile-ngx.log 2>&1 </dev/null & echo $!")
    :format(q(file), q(prefix), q(prefix), q(prefix), OUT)
  local pid = tonumber(capture(cmd):match("%d+"))
  if not pid then return nil, "could not start nginx under valgrind" end
  current = { pid = pid }
  local up = false
  for _ = 1, 1200 do
    if listening(port) then up = true break end
    if not alive(pid) then break end
    socket.sleep(0.05)
  end
  if not up then
    stop_nginx("TERM")
    return nil, "nginx did not start under valgrind: see " .. OUT .. "/profile-ngx.log and " .. prefix .. "/error.log"
  end
  local id = row.call == "get_conversation" and "conv_demo_1" or "msg_demo_1"
  local status, body = http_get(port, ("/loop?impl=%s&call=%s&n=%d&id=%s&base=%s&token=%s&limiter=%s")
    :format(row.impl, row.call, n, id, urlencode(ctx.url), urlencode(ctx.token), row.limiter or ""))
  stop_nginx("QUIT")
  if status ~= 200 then
    return nil, ("loop answered HTTP %s: %s (see %s/error.log)"):format(tostring(status), tostring(body), prefix)
  end
  local cjson = require "cjson"
  local okd, r = pcall(cjson.decode, body)
  if not okd or type(r) ~= "table" then return nil, "loop answered no JSON: " .. tostring(body) end
  if r.errors > 0 then log("bench/profile ngx: %s: %d of %d calls failed", row.label, r.errors, n) end
  local text
  for _ = 1, 200 do -- the file is complete once its totals line is there
    text = lib.read_file(file) or ""
    if text:match("\ntotals:%s*%d+") or text:match("\nsummary:%s*%d+") then break end
    socket.sleep(0.05)
  end
  local total = tonumber(text:match("\nsummary:%s*(%d+)") or text:match("\ntotals:%s*(%d+)"))
  if not total then return nil, "no totals in " .. file end
  return total, file
end

-- Instructions of their own per shared object, from one callgrind file (and the annotation).
local function by_object(file)
  return lib.callgrind_objects(file, function(name)
    if name == "libluajit-5.1" then return "libluajit-5.1 (interpreter, runtime)" end
    if name == "???" then return "??? (JIT-compiled traces)" end -- machine code LuaJIT wrote: no object
  end)
end

local function rows_for(call)
  return {
    { id = "raw_" .. call, call = call, impl = "raw", label = "raw cosocket loop: " .. call },
    { id = "finish_" .. call, call = call, impl = "finish", limiter = "none", lc = true,
      label = "answer path alone (core.finish, no I/O): " .. call },
    { id = "session_" .. call, call = call, impl = "session", limiter = "none", lc = true, base = "raw_" .. call,
      label = "transport alone (session:call): " .. call },
    { id = "lcnolim_" .. call, call = call, impl = "lc", limiter = "none", lc = true, base = "raw_" .. call,
      label = "leadconnector, rate_limit = false: " .. call },
    { id = "lc_" .. call, call = call, impl = "lc", lc = true, base = "raw_" .. call,
      label = "leadconnector on cosockets: " .. call },
  }
end

local function main()
  local ok, err = lib.start_server(SANDBOX, "")
  if not ok then return nil, "sandbox: " .. err end
  ctx.url, ctx.token = lib.server.url, lib.server.token
  os.remove(OUT .. "/profile-ngx.log")
  local lines = { { "row", "instructions / call", "ratio to the raw loop", "what this row adds" } }
  local per_object, splits, annotations = {}, {}, {}
  for _, call in ipairs(calls) do
    local per = {}
    for _, row in ipairs(rows_for(call)) do
      if ONLY and not ONLY[row.id:match("^(%a+)_")] then goto next_row end
      log("bench/profile ngx: %s (%d and %d calls, nginx under callgrind)", row.label, BASE, BASE + N)
      local a, file1 = count(row, BASE)
      local b, file
      if a then b, file = count(row, BASE + N) end
      if not (a and b) then
        lines[#lines + 1] = { row.label, "n/a (" .. ((not a and file1) or file) .. ")", "", "" }
      else
        local small, big = by_object(file1), nil
        local ann
        big, ann = by_object(file)
        local objs = {}
        for name, v in pairs(big) do objs[name] = (v - (small[name] or 0)) / N end
        per_object[row.id] = objs
        per[row.id] = (b - a) / N
        local base = row.base and per[row.base]
        local share = ""
        if row.impl == "finish" then
          share = "JSON decoding and the result (C core, lua-cjson)"
        elseif row.impl == "session" and base then
          share = string.format("transport: %+.0f over the raw loop", per[row.id] - base)
          if per["finish_" .. call] then
            share = share .. string.format(" (%+.0f without the answer path)", per[row.id] - per[row.base] -
              per["finish_" .. call])
          end
        elseif row.id == "lcnolim_" .. call and per["session_" .. call] then
          share = string.format("Lua layer: %+.0f over the transport", per[row.id] - per["session_" .. call])
        elseif row.id == "lc_" .. call and per["lcnolim_" .. call] then
          share = string.format("limiter: %+.0f over rate_limit = false", per[row.id] - per["lcnolim_" .. call])
        end
        lines[#lines + 1] = { row.label, string.format("%.0f", per[row.id]),
          base and string.format("%.2f", per[row.id] / base) or row.impl == "raw" and "1.00" or "", share }
        if (row.impl == "session" or row.id == "lc_" .. call) and per_object[row.base] then
          splits[#splits + 1] = row
        end
        if row.lc then
          local full = capture("callgrind_annotate --inclusive=no --auto=no " .. q(file) .. " 2>/dev/null")
          local f = io.open(OUT .. "/profile-ngx-" .. row.id .. ".txt", "w")
          if f then f:write(full) f:close() end
          annotations[#annotations + 1] = { row = row, text = ann }
        end
      end
      ::next_row::
    end
  end

  io.write(string.format("\nInstructions per call inside nginx (callgrind, one worker, LuaJIT with its JIT; " ..
    "%d calls beyond the first %d, %s)\n\n", N, BASE, os.date("!%Y-%m-%d")), lib.md_table(lines), "\n")
  for _, row in ipairs(splits) do
    lib.write_split("Where the instructions go, per call, " .. row.label .. " vs " .. row.base ..
      " (by shared object, own instructions):", row.base, row.id, per_object[row.base], per_object[row.id])
  end
  for _, a in ipairs(annotations) do
    lib.write_top(("Top %d functions by own instructions, %s (whole run of %d calls; all of it in " ..
      "bench/out/profile-ngx-%s.txt):"):format(TOP, a.row.label, BASE + N, a.row.id), a.text, TOP)
  end
  return true
end

local ok, res, err = xpcall(main, debug.traceback)
cleanup()
if not ok then
  io.stderr:write("bench/profile ngx: crashed: ", tostring(res), "\n")
  os.exit(1)
elseif not res then
  io.stderr:write("bench/profile ngx: ", tostring(err), "\n")
  os.exit(1)
end

-- Helpers shared by bench/bench.lua (the table) and bench/profile.lua
-- (instruction counts): shell plumbing, medians, building the C programs,
-- and the sandbox's life cycle. Loaded with package.path "bench/?.lua".
local socket = require "socket"

local M = {}

M.OUT = "bench/out"
-- Several runs may share bench/out (people working in one tree): each run's
-- server files carry its id. bench/run passes its shell's pid.
M.RUN_ID = os.getenv("BENCH_RUN_ID") or tostring(os.time())

function M.env(name, default)
  local v = os.getenv(name)
  if v == nil or v == "" then return default end
  return v
end

function M.log(...)
  io.stderr:write(string.format(...), "\n")
  io.stderr:flush()
end

function M.quote(s)
  s = tostring(s)
  if s:match("^[%w%./:_=-]+$") then return s end
  return "'" .. s:gsub("'", "'\\''") .. "'"
end

function M.argv_string(argv)
  local parts = {}
  for i, a in ipairs(argv) do parts[i] = M.quote(a) end
  return table.concat(parts, " ")
end

function M.exists(path)
  local f = io.open(path, "r")
  if f then f:close() return true end
  return false
end

function M.read_file(path)
  local f = io.open(path, "r")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

function M.sh(cmd) -- true when the command exited 0
  local ok = os.execute(cmd)
  return ok == true or ok == 0
end

function M.capture(cmd)
  local p = assert(io.popen(cmd, "r"))
  local s = p:read("a")
  local ok = p:close()
  return s, ok
end

function M.median(list)
  if #list == 0 then return nil end
  local t = {}
  for i, v in ipairs(list) do t[i] = v end
  table.sort(t)
  local m = (#t + 1) // 2
  if #t % 2 == 1 then return t[m] end
  return (t[m] + t[m + 1]) / 2
end

-- Builds bench/out/measure, raw_easy and raw_multi. Returns true, or nil and why.
function M.build(cc)
  local OUT = M.OUT
  M.sh("mkdir -p " .. OUT)
  local curl_flags = M.capture("pkg-config --cflags --libs libcurl 2>/dev/null"):gsub("%s+$", "")
  if curl_flags == "" then
    return nil, "pkg-config libcurl found nothing (install libcurl4-openssl-dev)"
  end
  local builds = {
    { "measure", cc .. " -O2 -Wall -Wextra -o " .. OUT .. "/measure bench/measure.c" },
    { "raw_easy", cc .. " -O2 -Wall -Wextra -o " .. OUT .. "/raw_easy bench/raw_easy.c " .. curl_flags },
    { "raw_multi", cc .. " -O2 -Wall -Wextra -o " .. OUT .. "/raw_multi bench/raw_multi.c " .. curl_flags },
    { "raw_connect_only", cc .. " -O2 -Wall -Wextra -o " .. OUT .. "/raw_connect_only bench/raw_connect_only.c " ..
      curl_flags },
  }
  -- The "+ cjson.decode" floor rows embed Lua 5.4 (the interpreter the library rows run on); without its
  -- headers they print n/a.
  local lua_flags = M.capture("pkg-config --cflags --libs lua5.4 2>/dev/null"):gsub("%s+$", "")
  if lua_flags ~= "" then
    for _, name in ipairs { "raw_easy", "raw_multi" } do
      builds[#builds + 1] = { name .. "_decode", cc .. " -O2 -Wall -Wextra -DBENCH_DECODE -o " .. OUT .. "/" .. name ..
        "_decode bench/" .. name .. ".c " .. curl_flags .. " " .. lua_flags }
    end
  end
  for _, b in ipairs(builds) do
    -- Built under a temporary name and renamed, so that a run going on beside
    -- this one never executes a half-written binary.
    local logfile = OUT .. "/build-" .. b[1] .. ".log"
    local tmp = OUT .. "/" .. b[1] .. ".tmp." .. M.RUN_ID
    local cmd = b[2]:gsub("%-o " .. OUT .. "/" .. b[1] .. " ", "-o " .. tmp .. " ", 1)
    local ok = M.sh(cmd .. " 2>" .. logfile) and M.sh("mv -f " .. tmp .. " " .. OUT .. "/" .. b[1])
    os.remove(tmp)
    local text = M.read_file(logfile) or ""
    if text ~= "" then io.stderr:write(text) end
    if not ok then return nil, "building " .. b[1] .. " failed: see " .. logfile end
  end
  return true
end

---------------------------------------------------------------------------
-- The server: bin/leadconnector-sandbox (or BENCH_SANDBOX) on an ephemeral
-- loopback port, in the background, its pid in bench/out/server.RUN_ID.pid
-- (which bench/run uses to stop it after an interrupt). When the sandbox has
-- --exit-with, it is also told to stop when bench/run's shell exits.
---------------------------------------------------------------------------
local server = {}
M.server = server

local function alive(pid)
  return M.sh("kill -0 " .. pid .. " 2>/dev/null")
end

-- prefix: put before the command (e.g. "taskset -c 0 "). Returns true (and
-- fills server.url, server.token, server.pid), or nil and why.
function M.start_server(cmdline, prefix)
  local base = M.OUT .. "/server." .. M.RUN_ID
  server.files = { out = base .. ".out", log = base .. ".log", pid = base .. ".pid" }
  os.remove(server.files.out)
  local watch = os.getenv("BENCH_RUN_ID")
  if watch and watch:match("^%d+$") and cmdline:match("^%S*leadconnector%-sandbox") then
    local help = M.capture(cmdline:match("^%S+") .. " --help 2>&1")
    if help:find("--exit-with", 1, true) then cmdline = cmdline .. " --exit-with " .. watch end
  end
  local cmd = string.format("%s%s >%s 2>%s </dev/null & echo $! >%s",
    prefix or "", cmdline, server.files.out, server.files.log, server.files.pid)
  if not M.sh(cmd) then return nil, "could not start: " .. cmdline end
  server.pid = (M.read_file(server.files.pid) or ""):match("%d+")
  if not server.pid then return nil, "no pid for the server" end
  local deadline = socket.gettime() + 30
  while socket.gettime() < deadline do
    local out = M.read_file(server.files.out) or ""
    local url = out:match("LEADCONNECTOR_SANDBOX_URL=(%S+)")
    local token = out:match("LEADCONNECTOR_SANDBOX_TOKEN=(%S+)")
    if url and token then
      server.url, server.token = url, token
      return true
    end
    if not alive(server.pid) then
      return nil, "the server exited before printing its URL and token: see " .. server.files.log
    end
    socket.sleep(0.05)
  end
  return nil, "the server printed no URL and token within 30 s: see " .. server.files.log
end

function M.server_alive()
  return server.pid ~= nil and alive(server.pid)
end

function M.stop_server()
  if not server.pid then return end
  local pid = server.pid
  server.pid = nil
  os.remove(server.files.pid)
  os.remove(server.files.out)
  M.sh("kill -TERM " .. pid .. " 2>/dev/null")
  for _ = 1, 100 do
    if not alive(pid) then return end
    socket.sleep(0.05)
  end
  M.log("bench: the server did not stop on SIGTERM within 5 s; sending SIGKILL")
  M.sh("kill -KILL " .. pid .. " 2>/dev/null")
end

-- The sandbox's own reset (POST /_sandbox/reset, which re-seeds it), so a run
-- meets the same small store rather than one grown by every message sent
-- before it; then one message, whose id and conversation id the run reads and
-- updates. Sets ctx.reset (whether the reset worked), ctx.msg, ctx.conv.
-- Returns true, or nil and why.
function M.fresh_state(ctx)
  local http = require "socket.http"
  local ltn12 = require "ltn12"
  local cjson = require "cjson"
  local _, code = http.request { url = ctx.url .. "/_sandbox/reset", method = "POST",
    headers = { ["content-length"] = "0" } }
  ctx.reset = code == 200
  local body = cjson.encode { type = "SMS", contactId = "contact_demo_1", message = "bench setup" }
  local out = {}
  local _, scode = http.request {
    url = ctx.url .. "/conversations/messages", method = "POST",
    source = ltn12.source.string(body), sink = ltn12.sink.table(out),
    headers = { authorization = "Bearer " .. ctx.token, version = "2021-04-15",
      ["content-type"] = "application/json", ["content-length"] = tostring(#body) },
  }
  local ok, sent = pcall(cjson.decode, table.concat(out))
  if scode ~= 201 and scode ~= 200 or not ok or type(sent) ~= "table" or not sent.messageId then
    return nil, "could not send the first message (HTTP " .. tostring(scode) .. ")"
  end
  ctx.msg, ctx.conv = sent.messageId, sent.conversationId
  -- 99 more messages in that conversation (the sandbox's /_sandbox/inbound), for the paging rows
  ctx.paging, ctx.paging_reason = true, nil
  for i = 1, 99 do
    local ib = cjson.encode { contactId = "contact_demo_1", message = "bench page filler " .. i }
    local _, icode = http.request {
      url = ctx.url .. "/_sandbox/inbound", method = "POST", source = ltn12.source.string(ib),
      headers = { ["content-type"] = "application/json", ["content-length"] = tostring(#ib) },
    }
    if icode ~= 201 and icode ~= 200 then
      ctx.paging, ctx.paging_reason = false, "the sandbox has no /_sandbox/inbound (HTTP " .. tostring(icode) .. ")"
      break
    end
  end
  return true
end

---------------------------------------------------------------------------
-- Reporting for bench/profile and bench/profile ngx (callgrind files).
---------------------------------------------------------------------------

-- Instructions of their own per shared object in one callgrind file, and the annotation text. rename(name): a
-- clearer name for an object (the interpreter's, say), or nil to keep the name.
function M.callgrind_objects(file, rename)
  local ann = M.capture("callgrind_annotate --show=Ir --inclusive=no --threshold=100 --auto=no " .. M.quote(file) ..
    " 2>/dev/null")
  local objs = {}
  for line in ann:gmatch("[^\n]+") do
    local n, obj = line:match("^%s*([%d,]+) %(.-%)%s+.-%[(.-)%]%s*$")
    if n then
      local name = obj:match("([^/]+/core%.so)$") or obj:match("([^/]+)$") or obj
      name = name:gsub("%.so[%.%d]*$", "")
      name = rename and rename(name) or name
      objs[name] = (objs[name] or 0) + tonumber((n:gsub(",", "")))
    end
  end
  return objs, ann
end

-- lines[1] the header, then the rows (lists of strings): a Markdown table, columns padded to their widest cell.
function M.md_table(lines)
  local function len(c) return utf8.len(c) or #c end
  local widths = {}
  for _, l in ipairs(lines) do
    for i, c in ipairs(l) do widths[i] = math.max(widths[i] or 0, len(c)) end
  end
  local out = {}
  for k, l in ipairs(lines) do
    local cells = {}
    for i, c in ipairs(l) do cells[i] = c .. string.rep(" ", widths[i] - len(c)) end
    out[#out + 1] = "| " .. table.concat(cells, " | ") .. " |"
    if k == 1 then
      local sep = {}
      for i = 1, #l do sep[i] = string.rep("-", widths[i]) end
      out[#out + 1] = "| " .. table.concat(sep, " | ") .. " |"
    end
  end
  return table.concat(out, "\n")
end

-- Writes one row's instructions per shared object beside its baseline's (per request), largest difference first.
-- heading: the line above the table; base_id, id: the two columns' names; raw, lc: { object = instructions }.
function M.write_split(heading, base_id, id, raw, lc)
  local names, seen = {}, {}
  for name in pairs(lc) do names[#names + 1] = name seen[name] = true end
  for name in pairs(raw) do if not seen[name] then names[#names + 1] = name end end
  table.sort(names, function(x, y)
    local dx, dy = (lc[x] or 0) - (raw[x] or 0), (lc[y] or 0) - (raw[y] or 0)
    if dx ~= dy then return dx > dy end
    return x < y
  end)
  io.write("\n", heading, "\n\n")
  local w0 = 28
  for _, name in ipairs(names) do w0 = math.max(w0, #name) end
  local w1, w2 = math.max(12, #base_id), math.max(12, #id)
  local fmt = "| %-" .. w0 .. "s | %" .. w1 .. "s | %" .. w2 .. "s | %12s |\n"
  local function num(v, signed)
    v = math.floor(v + 0.5)
    if v == 0 then return "0" end
    return string.format(signed and "%+d" or "%d", v)
  end
  io.write(string.format(fmt, "object", base_id, id, "difference"))
  io.write(string.format("| %s | %s | %s | %s |\n", string.rep("-", w0), string.rep("-", w1), string.rep("-", w2),
    string.rep("-", 12)))
  local tl, tr = 0, 0
  for _, name in ipairs(names) do
    local l, r = lc[name] or 0, raw[name] or 0
    tl, tr = tl + l, tr + r
    if math.abs(l) >= 50 or math.abs(r) >= 50 then
      io.write(string.format(fmt, name, num(r), num(l), num(l - r, true)))
    end
  end
  io.write(string.format(fmt, "total", num(tr), num(tl), num(tl - tr, true)))
end

-- Writes the heading, then the first n functions of a callgrind_annotate text (the lines after its "Ir" header).
function M.write_top(heading, text, n)
  io.write("\n", heading, "\n")
  local k, started = 0, false
  for line in text:gmatch("[^\n]+") do
    if started then
      if line:match("^%s*[%d,]+") then
        io.write("  ", (line:gsub("%s+$", "")), "\n")
        k = k + 1
        if k >= n then break end
      end
    elseif line:match("^Ir%s") then
      started = true
    end
  end
end

return M

-- The benchmark driver behind `bench/run` (and so `make bench`). Run from the
-- repository root. It builds the raw libcurl baselines and the measuring
-- wrapper into bench/out/, starts its own sandbox on loopback, runs every row
-- REPEATS times (each run a separate client process, rows interleaved), stops
-- the server and prints one table of medians, then the targets of issue 5 as
-- PASS/FAIL lines. See bench/README.md for the method.
--
-- Exit status: 0 when every row that could run ran (targets missed or rows
-- n/a included); 1 when something broke (a build, the server, a client that
-- crashed or got no answer right).
local socket = require "socket"
package.path = "bench/?.lua;" .. package.path
local lib = require "lib"
local tls = require "tls"

local env, log, quote, argv_string = lib.env, lib.log, lib.quote, lib.argv_string
local exists, read_file, sh, capture, median = lib.exists, lib.read_file, lib.sh, lib.capture, lib.median

local QUICK = env("BENCH_QUICK", "0") ~= "0"
local N = tonumber(env("BENCH_REQUESTS", QUICK and "2000" or "20000"))
local REPEATS = tonumber(env("BENCH_REPEATS", QUICK and "3" or "5"))
local NODE_N = tonumber(env("BENCH_NODE_REQUESTS", tostring(N)))
local RSS_N = tonumber(env("BENCH_RSS_REQUESTS", QUICK and "10000" or "100000"))
local STARTUP_SAMPLES = tonumber(env("BENCH_STARTUP_SAMPLES", QUICK and "10" or "30"))
local CONCURRENCY = 16
local BATCH_SIZE = 1000
local OUT = lib.OUT
local SANDBOX = env("BENCH_SANDBOX", "bin/leadconnector-sandbox --port 0 --no-rate-limit --rate-limit 1000000 --rate-interval-ms 1000")
local CC = env("CC", "cc")
-- CPU pinning (see README): "split" puts the server on CPU 0 and the client on
-- CPU 1; "same" puts both on CPU 0; "off" leaves it to the scheduler.
local PIN = env("BENCH_PIN", "split")
local LUA = env("BENCH_LUA", "lua5.4")
-- BENCH_ROWS: a Lua pattern; only the rows whose id matches run (and none of the runs after the table)
local ONLY = env("BENCH_ROWS", "")

local broken = {} -- what went wrong, for the exit status
local ctx = {}    -- the server's URL and token, the ids of this run, what can run

local pin_server, pin_client = "", ""

local function setup_pinning()
  if PIN == "off" or PIN == "0" then return "off (BENCH_PIN=off)" end
  if not sh("command -v taskset >/dev/null 2>&1") then return "off (no taskset)" end
  if PIN == "same" then
    pin_server, pin_client = "taskset -c 0 ", "taskset -c 0 "
    return "server and client both on CPU 0"
  end
  local ncpu = tonumber((capture("nproc 2>/dev/null"))) or 1
  if ncpu < 2 then return "off (one CPU)" end
  pin_server, pin_client = "taskset -c 0 ", "taskset -c 1 "
  return "server on CPU 0, client on CPU 1"
end

local function fresh_state() return lib.fresh_state(ctx) end

---------------------------------------------------------------------------
-- Running one client under bench/out/measure.
---------------------------------------------------------------------------
local function run_client(argv)
  local cmd = pin_client .. OUT .. "/measure " .. argv_string(argv) .. " 2>>" .. OUT .. "/clients.log"
  local out = capture(cmd)
  local r = { out = out }
  local b = out:match("BENCH ([^\n]*)")
  if b then
    r.requests = tonumber(b:match("requests=(%d+)"))
    r.errors = tonumber(b:match("errors=(%d+)"))
    r.seconds = tonumber(b:match("seconds=([%d.]+)"))
    r.missing = b:match("missing=(%S+)")
  end
  r.startup_ms = tonumber(out:match("STARTUP ms=([%d.]+)"))
  local m = out:match("MEASURE ([^\n]*)")
  if m then
    r.exit = tonumber(m:match("exit=(%d+)"))
    r.cpu = tonumber(m:match("user=([%d.]+)")) + tonumber(m:match("sys=([%d.]+)"))
    r.rss_kb = tonumber(m:match("maxrss_kb=(%d+)"))
    r.wall = tonumber(m:match("wall=([%d.]+)"))
    r.timeout = m:match("timeout=1") ~= nil
  end
  return r
end

---------------------------------------------------------------------------
-- The rows. To add one, append a table: id, label, base (the id of the raw
-- row its ratios are taken against), needs (a check returning true or
-- false plus a reason), argv(ctx, n) giving the client's command line, and
-- optionally n (its request count). The client prints
-- "BENCH requests=N errors=E seconds=S".
---------------------------------------------------------------------------
local rows = {}
local function row(t)
  t.runs = {}
  rows[#rows + 1] = t
  return t
end

local CALLS = { "get_message", "send_message", "update_message_status", "get_conversation" }
local function id_for(call)
  return call == "get_conversation" and ctx.conv or ctx.msg
end

local function need_library()
  return ctx.library, ctx.library_reason
end
local function need_node()
  return ctx.node, ctx.node_reason
end

for _, call in ipairs(CALLS) do
  row {
    id = "raw_" .. call, label = "raw libcurl easy: " .. call, base = "raw_" .. call,
    argv = function(c, n) return { OUT .. "/raw_easy", c.url, c.token, call, id_for(call), n } end,
  }
end
row {
  id = "raw_multi", label = "raw libcurl multi x" .. CONCURRENCY .. ": get_message", base = "raw_multi",
  argv = function(c, n) return { OUT .. "/raw_multi", c.url, c.token, c.msg, n, CONCURRENCY } end,
}
local function need_decode_build(name)
  return function()
    if exists(OUT .. "/" .. name) then return true end
    return false, "no Lua 5.4 headers to build it"
  end
end
for _, call in ipairs(CALLS) do
  row {
    id = "rawdec_" .. call, label = "raw libcurl easy + cjson.decode: " .. call, base = "raw_" .. call,
    needs = need_decode_build("raw_easy_decode"),
    argv = function(c, n) return { OUT .. "/raw_easy_decode", c.url, c.token, call, id_for(call), n } end,
  }
end
row {
  id = "rawdec_multi", label = "raw libcurl multi x" .. CONCURRENCY .. " + cjson.decode: get_message",
  base = "raw_multi", needs = need_decode_build("raw_multi_decode"),
  argv = function(c, n) return { OUT .. "/raw_multi_decode", c.url, c.token, c.msg, n, CONCURRENCY } end,
}
for _, call in ipairs(CALLS) do
  row {
    id = "lc_" .. call, label = "leadconnector (Lua 5.4): " .. call, base = "raw_" .. call,
    needs = need_library,
    argv = function(c, n) return { LUA, "bench/lc_seq.lua", c.url, c.token, call, id_for(call), n } end,
  }
end
row {
  id = "lc_batch", label = "leadconnector batch x" .. CONCURRENCY .. ": get_message", base = "raw_multi",
  needs = need_library,
  argv = function(c, n)
    return { LUA, "bench/lc_batch.lua", c.url, c.token, c.msg, n, CONCURRENCY, BATCH_SIZE }
  end,
}
-- The rate-limit backends (issue 15): get_message through each; ratios against the same loop without a limiter.
for _, b in ipairs { "none", "process", "redis" } do
  row {
    id = "lim_" .. b, label = "limiter " .. b .. ": get_message", base = "lim_none",
    needs = b == "redis" and function()
      if not need_library() then return need_library() end
      if sh("command -v redis-server >/dev/null 2>&1") then return true end
      return false, "no redis-server"
    end or need_library,
    argv = function(c, n) return { LUA, "bench/lim_cost.lua", c.url, c.token, c.msg, n, b } end,
  }
end
for _, call in ipairs(CALLS) do
  row {
    id = "naive_" .. call, label = "naive luasocket+cjson: " .. call, base = "raw_" .. call,
    argv = function(c, n) return { LUA, "bench/naive.lua", c.url, c.token, call, id_for(call), n } end,
  }
end
-- Paging: get_messages (a page of 20 Message userdata) and each_message over 5 pages of 20, against the raw
-- libcurl loop making the same requests (and, for the page, decoding the same answers with cjson). They need a
-- conversation of 100 messages, which lib.fresh_state injects where the sandbox can (ctx.paging).
local function need_paging()
  if not ctx.paging then return false, ctx.paging_reason or "the sandbox cannot hold 100 messages in one conversation" end
  return true
end
local function need_paging_library()
  if not ctx.library then return false, ctx.library_reason end
  return need_paging()
end
for _, call in ipairs { "get_messages", "each_message" } do
  row {
    id = "raw_" .. call, label = "raw libcurl easy: " .. call .. (call == "each_message" and " (5 pages)" or " (20)"),
    base = "raw_" .. call, needs = need_paging,
    argv = function(c, n) return { OUT .. "/raw_easy", c.url, c.token, call, c.conv, n } end,
  }
end
row {
  id = "rawdec_get_messages", label = "raw libcurl easy + cjson.decode: get_messages (20)", base = "raw_get_messages",
  needs = function()
    local ok, why = need_decode_build("raw_easy_decode")()
    if not ok then return ok, why end
    return need_paging()
  end,
  argv = function(c, n) return { OUT .. "/raw_easy_decode", c.url, c.token, "get_messages", c.conv, n } end,
}
for _, call in ipairs { "get_messages", "each_message" } do
  row {
    id = "lc_" .. call, label = "leadconnector (Lua 5.4): " .. call .. (call == "each_message" and " (5 pages)" or " (20)"),
    base = "raw_" .. call, needs = need_paging_library,
    argv = function(c, n) return { LUA, "bench/lc_seq.lua", c.url, c.token, call, c.conv, n } end,
  }
end
row {
  id = "node", label = "node SDK: get_message", base = "raw_get_message", needs = need_node, n = NODE_N,
  argv = function(c, n)
    local argv = { "node", "bench/node/sdk.js", c.url, c.token, c.msg, n }
    if c.node_version then argv[#argv + 1] = c.node_version end
    return argv
  end,
}

-- The TLS rows (issue 16): get_message over HTTPS through bench/tls.lua's nginx front, every client verifying its
-- openssl-made certificate; ratios against the raw libcurl loop over TLS; handshakes counted by the server.
local function need_tls() return ctx.tls, ctx.tls_reason end
local function with_ca(argv) return { "env", "BENCH_CAINFO=" .. ctx.tls_ca, table.unpack(argv) } end
row {
  id = "tls_raw", label = "TLS raw libcurl easy: get_message", base = "tls_raw", tls = true, needs = need_tls,
  argv = function(c, n) return with_ca { OUT .. "/raw_easy", c.tls_url, c.token, "get_message", c.tls_msg, n } end,
}
row {
  id = "tls_lc", label = "TLS leadconnector (Lua 5.4): get_message", base = "tls_raw", tls = true,
  needs = function()
    if not need_library() then return need_library() end
    return need_tls()
  end,
  argv = function(c, n) return with_ca { LUA, "bench/lc_seq.lua", c.tls_url, c.token, "get_message", c.tls_msg, n } end,
}
row {
  id = "tls_naive", label = "TLS naive luasocket+luasec: get_message", base = "tls_raw", tls = true, needs = need_tls,
  argv = function(c, n) return with_ca { LUA, "bench/naive.lua", c.tls_url, c.token, "get_message", c.tls_msg, n } end,
}
-- Not a client (bench/raw_connect_only.c): libcurl connects (TLS verified, sessions cached) and nothing more; each
-- request is written and its answer read by hand over curl_easy_send/curl_easy_recv. The floor of the library's
-- direct engine, which works the same way and adds the reader's rules, the time limits, the checks and the limiter.
row {
  id = "tls_co", label = "TLS libcurl connect-only + HTTP by hand: get_message", base = "tls_raw", tls = true,
  needs = need_tls, note = "not a client: libcurl connects, the HTTP/1.1 is by hand (no checks, caps or limits)",
  argv = function(c, n) return with_ca { OUT .. "/raw_connect_only", c.tls_url, c.token, "get_message", c.tls_msg, n } end,
}
row {
  id = "tls_node", label = "TLS node SDK: get_message", base = "tls_raw", tls = true, n = NODE_N,
  needs = function()
    if not need_node() then return need_node() end
    return need_tls()
  end,
  argv = function(c, n)
    local argv = { "env", "NODE_EXTRA_CA_CERTS=" .. c.tls_ca, "node", "bench/node/sdk.js", c.tls_url, c.token, c.tls_msg, n }
    if c.node_version then argv[#argv + 1] = c.node_version end
    return argv
  end,
}
require("wh_rows").add(row, { OUT = OUT, LUA = LUA, CC = CC, need_library = need_library, need_node = need_node })

local by_id = {}
for _, r in ipairs(rows) do by_id[r.id] = r end

---------------------------------------------------------------------------
-- What can run: the library (built by `make`), the Node SDK (npm ci).
---------------------------------------------------------------------------
local function check_library()
  if not (exists("lua/leadconnector/init.lua") and exists("build/lua5.4/leadconnector/core.so")) then
    return false, "library not built"
  end
  local out, ok = capture(LUA .. " -e 'local lc = require \"leadconnector\"; " ..
    "assert(lc.new { token = \"probe\", base_url = \"http://127.0.0.1:9\" })' 2>&1")
  if not ok then
    broken[#broken + 1] = "the library is built but does not load: " .. out:gsub("\n.*", "")
    return false, "library fails to load"
  end
  return true
end

local function node_sdk_version()
  local lock = read_file("bench/node/package-lock.json") or ""
  return lock:match('"node_modules/@gohighlevel/api%-client":%s*{%s*"version":%s*"([^"]+)"')
end

local function check_node()
  if not sh("command -v node >/dev/null 2>&1") then return false, "node not installed" end
  if not exists("bench/node/node_modules/@gohighlevel/api-client/package.json") then
    if not sh("command -v npm >/dev/null 2>&1") then return false, "npm not installed" end
    log("bench: installing the Node SDK (npm ci in bench/node)")
    if not sh("cd bench/node && npm ci --no-audit --no-fund --loglevel=error >../out/npm.log 2>&1") then
      return false, "npm ci failed: see bench/out/npm.log"
    end
  end
  return true
end

-- The SDK sends `Version: 2023-02-21`. If the server refuses it, the SDK's
-- per-call options carry the contract's version instead (noted in the table).
local function probe_node()
  local r = run_client { "node", "bench/node/sdk.js", ctx.url, ctx.token, ctx.msg, 1 }
  if r.exit == 0 and r.errors == 0 then return true end
  r = run_client { "node", "bench/node/sdk.js", ctx.url, ctx.token, ctx.msg, 1, "2021-04-15" }
  if r.exit == 0 and r.errors == 0 then
    ctx.node_version = "2021-04-15"
    ctx.node_note = "server refused the SDK's Version 2023-02-21; sent 2021-04-15 per call"
    return true
  end
  return false, "the SDK got no answer right: see " .. OUT .. "/clients.log"
end

---------------------------------------------------------------------------
-- Measuring.
---------------------------------------------------------------------------
local function run_row(r, rep)
  local n = r.n or N
  local fresh, ferr = fresh_state()
  if not fresh then
    r.failed = ferr
    broken[#broken + 1] = r.label .. ": " .. ferr
    return
  end
  local mark = r.tls and tls.mark()
  local res = run_client(r.argv(ctx, n))
  if mark then res.tls = tls.handshakes(mark) end
  if res.missing then
    r.na = "n/a (" .. res.missing .. " missing)"
    log("  %-48s %s", r.label, r.na)
    return
  end
  if res.exit ~= 0 or not res.seconds then
    r.failed = string.format("client failed (%s): see %s/clients.log",
      res.timeout and "killed after BENCH_CLIENT_TIMEOUT" or "exit " .. tostring(res.exit), OUT)
    if not lib.server_alive() then r.failed = r.failed .. "; the server has died" end
    broken[#broken + 1] = r.label .. ": " .. r.failed
    log("  %-48s %s", r.label, r.failed)
    return
  end
  if res.errors >= res.requests then
    r.failed = "every request failed: see " .. OUT .. "/clients.log"
    broken[#broken + 1] = r.label .. ": " .. r.failed
    log("  %-48s %s", r.label, r.failed)
    return
  end
  res.rps = res.requests / res.seconds
  res.cpu_per_1000 = res.cpu / res.requests * 1e6 -- ms per 1000 requests
  res.rep = rep
  r.runs[#r.runs + 1] = res
  local f = io.open(OUT .. "/runs.tsv", "a")
  if f then
    f:write(table.concat({ rep, r.id, res.requests, res.errors, res.seconds, res.cpu, res.rss_kb, res.wall }, "\t"), "\n")
    f:close()
  end
  log("  %-48s %9.0f req/s %8.1f CPU ms/1000 %6.1f MB%s%s", r.label, res.rps, res.cpu_per_1000,
    res.rss_kb / 1024, res.errors > 0 and ("  " .. res.errors .. " errors") or "",
    res.tls and string.format("  %d TLS handshakes (%d resumed) for %d requests", res.tls.handshakes,
      res.tls.resumed, res.tls.requests) or "")
end

local function summarize(r)
  if #r.runs == 0 then return end
  local rps, cpu, rss, errors = {}, {}, {}, 0
  for i, x in ipairs(r.runs) do
    rps[i], cpu[i], rss[i] = x.rps, x.cpu_per_1000, x.rss_kb / 1024
    errors = errors + x.errors
  end
  r.rps, r.cpu, r.rss, r.errors = median(rps), median(cpu), median(rss), errors
  -- TLS rows: handshakes (full and resumed) per 1,000 requests the server logged, over all runs
  local hs, resumed, logged = 0, 0, 0
  for _, x in ipairs(r.runs) do
    if x.tls then hs, resumed, logged = hs + x.tls.handshakes, resumed + x.tls.resumed, logged + x.tls.requests end
  end
  if logged > 0 then
    r.tls = { per_1000 = hs / logged * 1000, full_per_1000 = (hs - resumed) / logged * 1000,
      protocol = r.runs[#r.runs].tls.protocol }
  end
end

-- The median over runs of (row / base) for one field, each row run paired
-- with the base run of the same repeat: the ratios the table and targets use.
local function ratio_median(r, base, field)
  if not (r and base) then return nil end
  local by_rep = {}
  for _, x in ipairs(base.runs) do by_rep[x.rep] = x end
  local ratios = {}
  for _, x in ipairs(r.runs) do
    local b = by_rep[x.rep]
    if b and b[field] and b[field] > 0 then ratios[#ratios + 1] = x[field] / b[field] end
  end
  return median(ratios)
end

-- BENCH_ONLY=id,id,...: run just those rows (e.g. BENCH_ONLY=raw_get_messages,lc_get_messages).
-- (A table of its own: ONLY is BENCH_ROWS's pattern, and the two must not shadow each other.)
local ONLY_IDS
if env("BENCH_ONLY", "") ~= "" then
  ONLY_IDS = {}
  for id in env("BENCH_ONLY", ""):gmatch("[^,%s]+") do ONLY_IDS[id] = true end
end

local function runnable(r)
  if ONLY_IDS and not ONLY_IDS[r.id] then r.na = "n/a (not in BENCH_ONLY)" return false end
  if r.na or r.failed then return false end
  if r.needs then
    local ok, why = r.needs()
    if not ok then
      r.na = "n/a (" .. why .. ")"
      return false
    end
  end
  return true
end

local function measure_startup()
  local st = { samples = {}, rss = {} }
  for _ = 1, STARTUP_SAMPLES do
    local res = run_client { LUA, "bench/startup.lua", ctx.url, ctx.token }
    if res.exit ~= 0 or not res.startup_ms then
      st.failed = "start-up run failed: see " .. OUT .. "/clients.log"
      broken[#broken + 1] = st.failed
      return st
    end
    st.samples[#st.samples + 1] = res.startup_ms
    st.rss[#st.rss + 1] = res.rss_kb / 1024
  end
  st.ms, st.rss_mb = median(st.samples), median(st.rss)
  -- The whole process as well (interpreter start, require, new, exit), for context.
  if sh("command -v hyperfine >/dev/null 2>&1") then
    local cmd = string.format(
      pin_client .. "hyperfine -N --style none --warmup 3 --runs %d --export-json %s/hyperfine.json %s >/dev/null 2>>%s/clients.log",
      STARTUP_SAMPLES, OUT, quote(argv_string { LUA, "bench/startup.lua", ctx.url, ctx.token }), OUT)
    if sh(cmd) then
      local j = read_file(OUT .. "/hyperfine.json") or ""
      local m = tonumber(j:match('"median":%s*([%d.eE+-]+)'))
      if m then st.process_ms = m * 1000 end
    end
  end
  return st
end

---------------------------------------------------------------------------
-- Output.
---------------------------------------------------------------------------
local function fmt(v, pattern)
  if v == nil then return "-" end
  return string.format(pattern, v)
end

local function print_table(startup, rss_run)
  local head = { "row", "requests/s", "CPU ms / 1000 req", "peak RSS MB",
    "ratio to raw libcurl (req/s)", "ratio CPU", "notes" }
  local lines = {}
  for _, r in ipairs(rows) do
    local base = by_id[r.base]
    local notes = {}
    local line
    if r.na or r.failed or not r.rps then
      line = { r.label, r.na or "FAILED", "", "", "", "", r.failed or "" }
    else
      local ratio, cpu_ratio
      ratio = ratio_median(r, base, "rps")
      cpu_ratio = ratio_median(r, base, "cpu_per_1000")
      if r.note then
        notes[#notes + 1] = r.note
      elseif r.base == r.id then
        notes[#notes + 1] = r.id == "raw_get_message" and "the baseline"
          or r.id == "raw_multi" and "baseline for the concurrent rows" or "baseline for its call"
      elseif r.base == "raw_multi" then
        notes[#notes + 1] = "ratios vs raw multi"
      elseif r.base == "lim_none" then
        notes[#notes + 1] = "ratios vs the same loop without a limiter"
      elseif r.base ~= "raw_get_message" and r.base ~= "tls_raw" then
        notes[#notes + 1] = "ratios vs raw easy " .. r.base:gsub("^raw_", "")
      end
      if r.tls then
        notes[#notes + 1] = string.format("%s: %.2f handshakes / 1000 req (%.2f full, the rest resumed)",
          r.tls.protocol or "TLS", r.tls.per_1000, r.tls.full_per_1000)
      end
      if r.base == "tls_raw" and r.id ~= r.base then notes[#notes + 1] = "ratios vs raw libcurl over TLS" end
      if r.errors > 0 then notes[#notes + 1] = r.errors .. " errors over all runs" end
      if r.n and r.n ~= N then notes[#notes + 1] = r.n .. " requests per run" end
      if r.id == "node" then
        notes[#notes + 1] = "@gohighlevel/api-client " .. (node_sdk_version() or "?")
        if ctx.node_note then notes[#notes + 1] = ctx.node_note end
      end
      line = { r.label, fmt(r.rps, "%.0f"), fmt(r.cpu, "%.1f"), fmt(r.rss, "%.1f"),
        fmt(ratio, "%.2f"), fmt(cpu_ratio, "%.2f"), table.concat(notes, "; ") }
    end
    lines[#lines + 1] = line
  end
  -- require + new
  if startup.ms then
    local note = string.format("start-up %.2f ms: require + new, median of %d processes",
      startup.ms, #startup.samples)
    if startup.process_ms then
      note = note .. string.format("; whole process %.1f ms (hyperfine)", startup.process_ms)
    end
    lines[#lines + 1] = { "leadconnector require + new", "", "", fmt(startup.rss_mb, "%.1f"), "", "", note }
  else
    lines[#lines + 1] = { "leadconnector require + new", startup.na or "FAILED", "", "", "", "",
      startup.failed or "" }
  end

  local widths = {}
  for i, h in ipairs(head) do widths[i] = #h end
  for _, l in ipairs(lines) do
    for i, c in ipairs(l) do widths[i] = math.max(widths[i], utf8.len(c) or #c) end
  end
  local function render(cells, numeric)
    local out = {}
    for i, c in ipairs(cells) do
      local pad = string.rep(" ", widths[i] - (utf8.len(c) or #c))
      if numeric and i > 1 and i < #cells and c:match("^[%d.]+$") then
        out[i] = pad .. c
      else
        out[i] = c .. pad
      end
    end
    return "| " .. table.concat(out, " | ") .. " |"
  end
  local text = {}
  text[#text + 1] = render(head)
  local sep = {}
  for i = 1, #head do
    sep[i] = string.rep("-", widths[i] - 1) .. ((i > 1 and i < #head) and ":" or "-")
  end
  text[#text + 1] = "| " .. table.concat(sep, " | ") .. " |"
  for _, l in ipairs(lines) do text[#text + 1] = render(l, true) end
  return table.concat(text, "\n")
end

local function targets(startup, rss_run)
  local out = {}
  local function check(ok, text)
    if ok == nil then
      out[#out + 1] = "n/a   " .. text
    else
      out[#out + 1] = (ok and "PASS  " or "FAIL  ") .. text
    end
  end
  local function ready(r) return r and r.rps and not r.na and not r.failed end

  -- One ratio target: row rid against row bid on `field`, met when pass(x); the line reads "label: x (row vs base)",
  -- x written with xfmt, the two rows' own figures with vsfmt.
  local function ratio_target(rid, bid, field, pass, label, xfmt, vsfmt)
    local r, b = by_id[rid], by_id[bid]
    if ready(r) and ready(b) then
      local x = ratio_median(r, b, field)
      local v = field == "rps" and "rps" or "cpu"
      check(pass(x), string.format("%s: " .. xfmt .. " (" .. vsfmt .. ")", label, x, r[v], b[v]))
    else
      check(nil, label .. ": " .. ((r.na or r.failed) or (b.na or b.failed) or "no data"))
    end
  end
  local function at_least(n) return function(x) return x >= n end end
  for _, call in ipairs(CALLS) do
    ratio_target("lc_" .. call, "raw_" .. call, "rps", at_least(0.85),
      "sequential " .. call .. " >= 0.85x raw easy req/s", "%.3fx", "%.0f vs %.0f")
  end
  ratio_target("lc_batch", "raw_multi", "rps", at_least(0.85),
    ("concurrent batch x%d >= 0.85x raw multi req/s"):format(CONCURRENCY), "%.3fx", "%.0f vs %.0f")
  ratio_target("lc_get_message", "node", "rps", at_least(8),
    "sequential get_message >= 8x the Node SDK's req/s", "%.1fx", "%.0f vs %.0f")
  for _, call in ipairs(CALLS) do
    ratio_target("lc_" .. call, "raw_" .. call, "cpu_per_1000", function(x) return x <= 1.2 end,
      "CPU per request, " .. call .. " <= 1.2x raw easy", "%.3fx", "%.1f vs %.1f ms/1000")
  end
  -- issue 16: against the floor (the raw loops that also decode every answer), and over TLS
  for _, call in ipairs(CALLS) do
    ratio_target("lc_" .. call, "rawdec_" .. call, "rps", at_least(0.95),
      "issue 16: sequential " .. call .. " >= 0.95x raw easy + cjson.decode req/s", "%.3fx", "%.0f vs %.0f")
    ratio_target("lc_" .. call, "rawdec_" .. call, "cpu_per_1000", function(x) return x <= 1.1 end,
      "issue 16: CPU per request, " .. call .. " <= 1.1x raw easy + cjson.decode", "%.3fx", "%.1f vs %.1f ms/1000")
  end
  ratio_target("lc_batch", "rawdec_multi", "rps", at_least(0.9),
    "issue 16: batch >= 0.9x raw multi + cjson.decode req/s", "%.3fx", "%.0f vs %.0f")
  ratio_target("tls_lc", "tls_raw", "rps", at_least(0.95),
    "issue 16: over TLS, get_message >= 0.95x raw libcurl over TLS req/s", "%.3fx", "%.0f vs %.0f")
  ratio_target("tls_lc", "tls_naive", "rps", function(x) return x > 1 end,
    "issue 16: over TLS, get_message ahead of luasocket+luasec req/s", "%.3fx", "%.0f vs %.0f")
  require("wh_rows").targets(ratio_target, at_least)
  if rss_run and rss_run.rss_kb then
    local mb = rss_run.rss_kb / 1024
    check(mb <= 16, string.format("peak RSS <= 16 MB over %d get_message requests: %.1f MB%s", rss_run.requests, mb,
      rss_run.requests < 100000 and " (quick run: fewer than 100k requests)" or ""))
  else
    check(nil, "peak RSS <= 16 MB over 100k requests: " .. ((rss_run and rss_run.reason) or "no data"))
  end
  if startup.ms then
    check(startup.ms < 20, string.format("require + new < 20 ms: %.2f ms (median of %d processes)",
      startup.ms, #startup.samples))
    check(startup.ms < 10, string.format("issue 16: require + new < 10 ms: %.2f ms", startup.ms))
  else
    check(nil, "require + new < 20 ms: " .. (startup.na or startup.failed or "no data"))
  end
  -- Not targets: how far the library is from the floor of the "+ cjson.decode" rows, the least any Lua client
  -- that returns decoded answers does, and what decoding alone costs the raw loops.
  local function floor_line(id, fid, what)
    local r, f = by_id[id], by_id[fid]
    if ready(r) and ready(f) then
      out[#out + 1] = string.format("floor %s: %.3fx the req/s, %.3fx the CPU per request of %s", what,
        ratio_median(r, f, "rps"), ratio_median(r, f, "cpu_per_1000"), f.label)
    end
  end
  floor_line("rawdec_get_message", "raw_get_message", "raw easy + cjson.decode vs raw easy")
  floor_line("lc_get_message", "rawdec_get_message", "leadconnector get_message vs raw easy + cjson.decode")
  floor_line("rawdec_multi", "raw_multi", "raw multi + cjson.decode vs raw multi")
  floor_line("lc_batch", "rawdec_multi", "leadconnector batch vs raw multi + cjson.decode")
  floor_line("tls_lc", "tls_co", "leadconnector over TLS (direct engine) vs libcurl connect-only + HTTP by hand")
  return table.concat(out, "\n")
end

---------------------------------------------------------------------------
-- Main.
---------------------------------------------------------------------------
local function main()
  local built, berr = lib.build(CC)
  if not built then
    broken[#broken + 1] = berr
    return
  end
  os.remove(OUT .. "/clients.log")
  os.remove(OUT .. "/runs.tsv")

  ctx.library, ctx.library_reason = check_library()
  ctx.node, ctx.node_reason = check_node()
  ctx.pinning = setup_pinning()
  log("bench: CPU pinning: %s", ctx.pinning)
  -- Anything else busy on the machine skews every row; say so in the header.
  ctx.load = tonumber(((read_file("/proc/loadavg") or ""):match("^(%S+)")))
  if ctx.load and ctx.load > 0.5 then
    log("bench: warning: load average %.2f before the run: other work is competing for the CPUs", ctx.load)
  end

  local ok, err = lib.start_server(SANDBOX, pin_server)
  if not ok then
    broken[#broken + 1] = "server: " .. err
    return
  end
  ctx.url, ctx.token = lib.server.url, lib.server.token
  log("bench: server %s (pid %s)", ctx.url, lib.server.pid)

  local fresh, ferr = fresh_state()
  if not fresh then
    broken[#broken + 1] = "setup: " .. ferr
    return
  end
  if ctx.node then ctx.node, ctx.node_reason = probe_node() end
  local want_tls = ONLY == ""
  for _, id in ipairs { "tls_raw", "tls_lc", "tls_naive", "tls_co", "tls_node" } do want_tls = want_tls or id:find(ONLY) ~= nil end
  if want_tls then
    -- the front answers this message itself, whatever the sandbox holds after each row's reset (bench/tls.lua)
    ctx.tls_msg = ctx.msg
    ctx.tls, ctx.tls_reason = tls.start(ctx.url, pin_server,
      { path = "/conversations/messages/" .. ctx.tls_msg, token = ctx.token })
    if ctx.tls then
      ctx.tls_url, ctx.tls_ca = tls.state.url, tls.state.ca
      log("bench: TLS front %s (certificate %s)", ctx.tls_url, ctx.tls_ca)
    else
      broken[#broken + 1] = "TLS front: " .. tostring(ctx.tls_reason)
    end
  else
    ctx.tls, ctx.tls_reason = false, "BENCH_ROWS"
  end

  log("bench: %d requests per run (Node SDK %d), %d runs per row, rows interleaved", N, NODE_N, REPEATS)
  -- Warm-up, not recorded: the server's first connections and caches.
  run_client { OUT .. "/raw_easy", ctx.url, ctx.token, "get_message", ctx.msg, math.min(N, 2000) }

  local t0 = socket.gettime()
  -- Run order: rows grouped with their baseline (the raw loop making the same
  -- call), so a row and its baseline run seconds apart under the same
  -- conditions; the order inside each group flips on every other run (ABBA).
  local groups, group_of = {}, {}
  for _, r in ipairs(rows) do
    local g = group_of[r.base]
    if not g then
      g = {}
      group_of[r.base] = g
      groups[#groups + 1] = g
    end
    if r.id == r.base then table.insert(g, 1, r) else g[#g + 1] = r end
  end
  if ONLY ~= "" then
    for _, r in ipairs(rows) do
      if not r.id:find(ONLY) then r.na = "not run (BENCH_ROWS)" end
    end
  end
  for rep = 1, REPEATS do
    log("bench: run %d of %d", rep, REPEATS)
    for _, g in ipairs(groups) do
      for k = 1, #g do
        local r = g[rep % 2 == 1 and k or #g + 1 - k]
        if runnable(r) and (ONLY == "" or r.id:find(ONLY)) then run_row(r, rep) end
      end
    end
  end
  for _, r in ipairs(rows) do summarize(r) end

  -- Peak RSS over a long run: one process, get_message RSS_N times.
  local rss_run
  if ONLY ~= "" then
    rss_run = { reason = "BENCH_ROWS" }
  elseif runnable(by_id.lc_get_message) then
    log("bench: peak RSS run, %d get_message requests in one process", RSS_N)
    assert(fresh_state())
    rss_run = run_client { LUA, "bench/lc_seq.lua", ctx.url, ctx.token, "get_message", ctx.msg, RSS_N }
    if rss_run.exit ~= 0 or not rss_run.requests then
      broken[#broken + 1] = "peak RSS run failed: see " .. OUT .. "/clients.log"
      rss_run = { reason = "run failed" }
    end
  else
    rss_run = { reason = by_id.lc_get_message.na or by_id.lc_get_message.failed }
  end

  local startup
  if ctx.library and ONLY == "" then
    log("bench: require + new, %d fresh processes", STARTUP_SAMPLES)
    startup = measure_startup()
  else
    startup = { na = "n/a (" .. (ONLY ~= "" and "BENCH_ROWS" or ctx.library_reason) .. ")" }
  end
  tls.stop()
  lib.stop_server()
  log("bench: measured in %.0f s", socket.gettime() - t0)

  -- the libcurl the rows loaded (LD_LIBRARY_PATH=build/curl8 runs them all on libcurl 8: scripts/curl8.sh)
  local ok_core, core = pcall(require, "leadconnector.core")
  local curl_v = ok_core and core.curl_version() or "?"
  local header = string.format(
    "leadconnector bench, %s, %s, %s CPUs, load average %s before the run, libcurl %s;\n" ..
    "%d requests per run, median of %d runs per row; pinning: %s; server state %s",
    os.date("!%Y-%m-%d %H:%M UTC"), (capture("uname -srm"):gsub("%s+$", "")),
    (capture("nproc"):gsub("%s+$", "")), ctx.load and string.format("%.2f", ctx.load) or "?", curl_v,
    N, REPEATS, ctx.pinning, ctx.reset and "reset before every run" or "NOT reset (no /_sandbox/reset)")
  local text = header .. "\n\n" .. print_table(startup, rss_run) .. "\n\nTargets (issue 5, then issue 16):\n" ..
    targets(startup, rss_run) .. "\n"
  io.write("\n", text)
  local f = io.open(OUT .. "/results.md", "w")
  if f then f:write(text) f:close() end
end

local ok, err = xpcall(main, debug.traceback)
tls.stop()
lib.stop_server()
if not ok then broken[#broken + 1] = "bench crashed: " .. tostring(err) end
if #broken > 0 then
  io.stderr:write("\nbench: something broke:\n")
  for _, b in ipairs(broken) do io.stderr:write("  ", b, "\n") end
  os.exit(1)
end
os.exit(0)

-- bench/profile: what each client costs in instructions per request, counted
-- by valgrind's callgrind — exact and repeatable, whatever else the machine is
-- doing (the timing table is not). Not part of `make bench`; run it when a CPU
-- target is missed to see what costs what.
--
--   lua5.4 bench/profile.lua [CALL ...]      (CALL: get_message send_message
--                                             update_message_status get_conversation,
--                                             or tls: get_message over HTTPS, bench/tls.lua;
--                                             default get_message)
--
-- For each call, each client (raw libcurl easy loop, leadconnector, naive
-- luasocket; for get_message also raw multi x16 and client:batch x16) runs
-- twice under callgrind against the sandbox, with BASE and BASE + N requests;
-- instructions per request = (Ir(BASE + N) - Ir(BASE)) / N, so start-up and
-- the first connection drop out. Prints a table; for each leadconnector row,
-- the same split by shared object (libcurl, libc, the Lua VM, lua-cjson, the
-- library's core.so, ...) beside its raw loop's, which says what the extra
-- instructions are spent on; and the functions with the most instructions of
-- their own (callgrind_annotate; all of them in bench/out/profile-*.txt, the
-- raw callgrind files beside them). Callgrind counts user-space instructions
-- only: the kernel's share of a request (syscalls, loopback TCP) is not in it.
--
-- Instructions are not time. The same runs simulate the caches and the branch
-- predictor (--cache-sim=yes --branch-sim=yes), and the first table gives,
-- per request, the L1 instruction-cache misses, the L1 data-cache misses and
-- the mispredicted branches: what makes one client's instructions slower than
-- another's. A client with a larger working set (more code, more heap touched
-- per request) pays for it there, not in the instruction count.
--
-- Knobs: BENCH_PROFILE_REQUESTS (N, default 2000), BENCH_SANDBOX, BENCH_LUA, CC.
-- Run from the repository root with LUA_PATH/LUA_CPATH as bench/run sets them
-- (bench/profile does).
package.path = "bench/?.lua;" .. package.path
if arg[1] == "ngx" then -- `bench/profile ngx [CALL ...]`: the cosocket transport inside nginx (bench/profile_ngx.lua)
  table.remove(arg, 1)
  dofile("bench/profile_ngx.lua")
  os.exit(0)
end
local lib = require "lib"

local env, log, argv_string, capture, sh = lib.env, lib.log, lib.argv_string, lib.capture, lib.sh
local OUT = lib.OUT
local N = tonumber(lib.env("BENCH_PROFILE_REQUESTS", "2000"))
local BASE = 200
local LUA = env("BENCH_LUA", "lua5.4")
local SANDBOX = env("BENCH_SANDBOX", "bin/leadconnector-sandbox --port 0 --no-rate-limit --rate-limit 1000000 --rate-interval-ms 1000")
local TOP = 15

local calls = {}
for _, a in ipairs(arg) do calls[#calls + 1] = a end
if #calls == 0 then calls = { "get_message" } end

if not sh("command -v valgrind >/dev/null 2>&1") then
  io.stderr:write("bench/profile: needs valgrind (apt-get install valgrind)\n")
  os.exit(1)
end
local library = lib.exists("lua/leadconnector/init.lua") and lib.exists("build/lua5.4/leadconnector/core.so")

local ctx = {}

local function id_for(call)
  return call == "get_conversation" and ctx.conv or ctx.msg
end

local function rows_for(call)
  if call == "tls" then -- get_message over bench/tls.lua's HTTPS front, every client verifying the certificate
    local function ca(argv) return argv end -- BENCH_CAINFO is set around valgrind (count(), row.tls)
    return {
      { id = "tls_raw", tls = true, label = "TLS raw libcurl easy: get_message",
        argv = function(n) return ca { OUT .. "/raw_easy", ctx.tls_url, ctx.token, "get_message", ctx.msg, n } end },
      { id = "tls_lc", tls = true, label = "TLS leadconnector (Lua 5.4): get_message", lc = true, base = "tls_raw",
        argv = function(n) return ca { LUA, "bench/lc_seq.lua", ctx.tls_url, ctx.token, "get_message", ctx.msg, n } end },
      { id = "tls_naive", tls = true, label = "TLS naive luasocket+luasec: get_message", lc = true, base = "tls_raw",
        argv = function(n) return ca { LUA, "bench/naive.lua", ctx.tls_url, ctx.token, "get_message", ctx.msg, n } end },
    }
  end
  local rows = {
    { id = "raw_" .. call, label = "raw libcurl easy: " .. call,
      argv = function(n) return { OUT .. "/raw_easy", ctx.url, ctx.token, call, id_for(call), n } end },
    { id = "lc_" .. call, label = "leadconnector (Lua 5.4): " .. call, lc = true, base = "raw_" .. call,
      argv = function(n) return { LUA, "bench/lc_seq.lua", ctx.url, ctx.token, call, id_for(call), n } end },
    { id = "rawdec_" .. call, label = "raw libcurl easy + cjson.decode: " .. call, base = "raw_" .. call,
      argv = function(n) return { OUT .. "/raw_easy_decode", ctx.url, ctx.token, call, id_for(call), n } end },
    { id = "naive_" .. call, label = "naive luasocket+cjson: " .. call, base = "raw_" .. call,
      argv = function(n) return { LUA, "bench/naive.lua", ctx.url, ctx.token, call, id_for(call), n } end },
  }
  if call == "get_message" then
    rows[#rows + 1] = { id = "raw_multi", label = "raw libcurl multi x16: get_message",
      argv = function(n) return { OUT .. "/raw_multi", ctx.url, ctx.token, ctx.msg, n, 16 } end }
    rows[#rows + 1] = { id = "lc_batch", label = "leadconnector batch x16: get_message", lc = true,
      base = "raw_multi",
      argv = function(n) return { LUA, "bench/lc_batch.lua", ctx.url, ctx.token, ctx.msg, n, 16, 1000 } end }
  end
  return rows
end

-- Instructions of their own per shared object, from one callgrind file (and the annotation).
local function by_object(file)
  return lib.callgrind_objects(file, function(name)
    if name == "lua5.4" or name == "luajit" then return name .. " (VM: the Lua code)" end
  end)
end

-- The totals of one callgrind file: { Ir = ..., I1mr = ..., D1mr = ..., ... } by event name.
local function totals(text)
  local names = text:match("\nevents:%s*([^\n]+)")
  local nums = text:match("\nsummary:%s*([^\n]+)") or text:match("\ntotals:%s*([^\n]+)")
  if not (names and nums) then return nil end
  local ev, list = {}, {}
  for v in nums:gmatch("%d+") do list[#list + 1] = tonumber(v) end
  local i = 0
  for name in names:gmatch("%S+") do i = i + 1 ev[name] = list[i] or 0 end
  return ev.Ir and ev or nil
end

-- Total instructions (Ir) of one client run under callgrind, then its file and every event's total (the cache
-- and branch simulation's too); or nil and why.
local function count(row, n)
  assert(lib.fresh_state(ctx))
  local file = string.format("%s/callgrind.%s.%d.out", OUT, row.id, n)
  local cmd = (row.tls and "env BENCH_CAINFO=" .. lib.quote(ctx.tls_ca) .. " " or "") .. "valgrind --tool=callgrind --cache-sim=yes --branch-sim=yes --callgrind-out-file=" .. file .. " " ..
    argv_string(row.argv(n)) .. " >" .. OUT .. "/profile-client.out 2>>" .. OUT .. "/profile.log"
  if not sh(cmd) then return nil, "client failed under valgrind: see " .. OUT .. "/profile.log" end
  local out = lib.read_file(OUT .. "/profile-client.out") or ""
  if out:match("missing=") then return nil, "client:batch missing" end
  local errors = tonumber(out:match("errors=(%d+)"))
  if errors and errors > 0 then log("bench/profile: %s: %d errors", row.label, errors) end
  local text = lib.read_file(file) or ""
  local ev = totals(text)
  if not ev then return nil, "no totals in " .. file end
  return ev.Ir, file, ev
end

local function main()
  local built, berr = lib.build(env("CC", "cc"))
  if not built then return nil, berr end
  local ok, err = lib.start_server(SANDBOX, "")
  if not ok then return nil, "server: " .. err end
  ctx.url, ctx.token = lib.server.url, lib.server.token
  os.remove(OUT .. "/profile.log")
  for _, call in ipairs(calls) do
    if call == "tls" then
      local tls = require "tls"
      local up, terr = tls.start(ctx.url, "")
      if not up then return nil, "TLS front: " .. tostring(terr) end
      ctx.tls_url, ctx.tls_ca, ctx.tls_stop = tls.state.url, tls.state.ca, tls.stop
    end
  end

  local lines = { { "row", "instructions / request", "ratio to its raw loop", "L1i misses / req",
    "L1d misses / req", "mispredicted branches / req" } }
  local annotations, splits = {}, {}
  local per_object = {} -- row id -> object -> instructions per request
  for _, call in ipairs(calls) do
    local per = {}
    for _, row in ipairs(rows_for(call)) do
      if row.lc and not library then
        lines[#lines + 1] = { row.label, "n/a (library not built)", "", "", "", "" }
      else
        log("bench/profile: %s (%d and %d requests under callgrind)", row.label, BASE, BASE + N)
        local a, file1, ev1 = count(row, BASE)
        local b, file, ev = count(row, BASE + N)
        if not (a and b) then
          lines[#lines + 1] = { row.label, "n/a (" .. ((not a and file1) or file) .. ")", "", "", "", "" }
        else
          local small = by_object(file1)
          local big = by_object(file)
          local objs = {}
          for name, v in pairs(big) do objs[name] = (v - (small[name] or 0)) / N end
          per_object[row.id] = objs
          if row.lc and per_object[row.base] then
            splits[#splits + 1] = { row = row, base = row.base, label = row.label }
          end
          per[row.id] = (b - a) / N
          local base = row.base and per[row.base]
          local function per_req(...)
            local d = 0
            for _, name in ipairs { ... } do d = d + (ev[name] or 0) - (ev1[name] or 0) end
            d = d / N
            return string.format("%.0f", (d > -0.5 and d < 0.5) and 0 or d) -- no "-0" from a rounding below zero
          end
          lines[#lines + 1] = { row.label, string.format("%.0f", per[row.id]),
            base and string.format("%.2f", per[row.id] / base) or "1.00",
            per_req("I1mr"), per_req("D1mr", "D1mw"), per_req("Bcm", "Bim") }
          if row.lc then
            local ann = capture("callgrind_annotate --show=Ir --inclusive=no --auto=no " .. file .. " 2>/dev/null")
            local f = io.open(OUT .. "/profile-" .. row.id .. ".txt", "w")
            if f then f:write(ann) f:close() end
            annotations[#annotations + 1] = { row = row, text = ann }
          end
        end
      end
    end
  end
  if ctx.tls_stop then ctx.tls_stop() end
  lib.stop_server()

  io.write(string.format("\nInstructions per request (callgrind, %d requests beyond the first %d, %s; the misses " ..
    "and mispredictions simulated by callgrind on the same runs)\n\n", N, BASE, os.date("!%Y-%m-%d")),
    lib.md_table(lines), "\n")
  for _, sp in ipairs(splits) do
    lib.write_split("Where the instructions go, per request, " .. sp.label .. " vs " .. sp.base ..
      " (by shared object, own instructions):", sp.base, sp.row.id, per_object[sp.base], per_object[sp.row.id])
  end
  for _, a in ipairs(annotations) do
    lib.write_top(("Top %d functions by own instructions, %s (whole run; all of it in bench/out/profile-%s.txt):")
      :format(TOP, a.row.label, a.row.id), a.text, TOP)
  end
  return true
end

local ok, res, err = xpcall(main, debug.traceback)
if ctx.tls_stop then ctx.tls_stop() end
lib.stop_server()
if not ok then
  io.stderr:write("bench/profile: crashed: ", tostring(res), "\n")
  os.exit(1)
elseif not res then
  io.stderr:write("bench/profile: ", tostring(err), "\n")
  os.exit(1)
end

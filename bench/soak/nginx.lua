--[[ bench/soak/nginx.lua -- the soak's nginx phase (issue 10): one nginx worker (spec/nginx/nginx.conf, the
ngx transport on cosockets) calls misbehaving upstreams (spec/faultserver.lua) over and over: headers and a body
trickled past the timeout, a 200 MB status line and a 200 MB header line with no newline, a status of 000,
150 KB of headers, then a healthy server. The worker's RSS (VmRSS after a full collection) must stay flat.

  lua5.4 bench/soak/nginx.lua [rounds]       (run it through bench/soak/run; needs make luajit)

FLAT: worker RSS at the end minus after warm-up (the first 10 % of the rounds) < 2 MiB, its peak (VmHWM) under
64 MiB, the same worker pid throughout, and every call's outcome the expected one. Exits 1 otherwise.
]]
package.path = "./spec/?.lua;./lua/?.lua;./lua/?/init.lua;" .. package.path
local fs = require "faultserver"
local ns = require "nginx.server"
local helpers = require "helpers"

local ROUNDS = tonumber(arg[1]) or 100
local body = '{"conversationId":"c","messageId":"m1"}'
local function raw(data)
  local name = os.tmpname()
  helpers.write_file(name, data)
  return name
end
local files = {
  zero = raw("HTTP/1.1 000 Zero\r\nContent-Length: 2\r\n\r\n{}"),
  big = raw("HTTP/1.1 201 Created\r\nX-Big: " .. ("b"):rep(150 * 1024) .. "\r\nContent-Length: " .. #body ..
    "\r\n\r\n" .. body),
}
-- name, server, client timeout, expected kind (true: success)
local UPSTREAMS = {
  { "trickled headers", fs.start("trickle_head", 5), 0.1, "timeout" },
  { "trickled body", fs.start("trickle_body", 5), 0.1, "timeout" },
  { "200 MB status line", fs.start("huge_line", 200 * 1024 * 1024), 5, "network" },
  { "200 MB header line", fs.start("huge_header", 200 * 1024 * 1024), 5, "network" },
  { "HTTP/1.1 000", fs.start("raw", files.zero), 2, "network" },
  { "150 KB of headers", fs.start("raw", files.big), 2, "network" },
  { "healthy", fs.start("ok"), 2, true },
}
local nx = ns.start { url = UPSTREAMS[#UPSTREAMS][2].url, token = "soak-token" }

local failures = 0
local function round()
  for _, u in ipairs(UPSTREAMS) do
    local out = nx:json("POST", "/call", {
      client = { base_url = u[2].url, token = "soak-token", timeout = u[3], deadline = u[3] * 2, max_retries = 0,
        rate_limit = false },
      calls = { { "send_message", { type = "SMS", contactId = "c_soak", message = "soak" } } } })
    local r = out.results[1]
    local ok = (u[4] == true and r.ok) or (u[4] ~= true and not r.ok and r.kind == u[4])
    if not ok then
      failures = failures + 1
      if failures <= 5 then io.stderr:write(("soak nginx: %s gave %s %s\n"):format(u[1], tostring(r.kind), tostring(r.message))) end
    end
  end
end
local function sample() return nx:json("GET", "/t10_rss?gc=1") end

local t0 = os.time()
local first = sample()
local warm
print(("nginx phase: %d rounds over %d upstreams, worker %d"):format(ROUNDS, #UPSTREAMS, first.pid))
print(("%8s %10s %10s"):format("round", "RSS KiB", "peak KiB"))
print(("%8d %10d %10d"):format(0, first.rss, first.hwm))
local last = first
for i = 1, ROUNDS do
  round()
  if i == math.max(1, ROUNDS // 10) then warm = sample() print(("%8d %10d %10d  (after warm-up)"):format(i, warm.rss, warm.hwm)) end
  if i % math.max(1, ROUNDS // 10) == 0 then
    last = sample()
    print(("%8d %10d %10d"):format(i, last.rss, last.hwm))
  end
end
nx:stop()
for _, u in ipairs(UPSTREAMS) do u[2]:stop() end
for _, f in pairs(files) do os.remove(f) end

local grew = last.rss - warm.rss
local pass = grew < 2048 and last.hwm < 64 * 1024 and last.pid == first.pid and failures == 0
print(("nginx: RSS after warm-up %d -> end %d KiB (%+d KiB), peak %d KiB, %d unexpected outcomes, %d s: %s")
  :format(warm.rss, last.rss, grew, last.hwm, failures, os.time() - t0, pass and "PASS" or "FAIL"))
os.exit(pass and 0 or 1)

-- Row "leadconnector batch": get_message COUNT times through
-- client:batch(calls, { concurrency = CONCURRENCY }), BATCH calls per batch.
--
--   lua5.4 bench/lc_batch.lua BASE_URL TOKEN MESSAGE_ID COUNT CONCURRENCY BATCH
--
-- Each batch's list of calls is built afresh, as a caller would, and every
-- item's result is checked. Exits 3 with "BENCH missing=client:batch" when the
-- library has no client:batch yet.
-- Prints one "BENCH requests=N errors=E seconds=S" line.
local gettime = require("socket.core").gettime
local leadconnector = require "leadconnector"

local base, token, id = arg[1], arg[2], arg[3]
local count, conc, size = tonumber(arg[4]), tonumber(arg[5]), tonumber(arg[6])
if not (base and token and id and count and conc and size) then
  io.stderr:write("usage: lc_batch.lua BASE_URL TOKEN MESSAGE_ID COUNT CONCURRENCY BATCH\n")
  os.exit(2)
end

-- BENCH_ENGINE=libcurl: the batch on libcurl's multi interface instead of the direct engine (the comparison before
-- 2026-12-08)
local client = assert(leadconnector.new { token = token, base_url = base, engine = os.getenv("BENCH_ENGINE") })
if type(client.batch) ~= "function" then
  print("BENCH missing=client:batch")
  os.exit(3)
end

local errors, done = 0, 0
local opts = { concurrency = conc }
local t0 = gettime()
while done < count do
  local n = math.min(size, count - done)
  local calls = {}
  for i = 1, n do calls[i] = { "get_message", id } end
  local results, err = client:batch(calls, opts)
  if not results then
    errors = errors + n
    if errors == n then io.stderr:write("lc_batch: batch failed: ", tostring(err), "\n") end
  else
    for i = 1, n do
      local r = results[i]
      if not (r and r.value and r.value.id) then
        errors = errors + 1
        if errors == 1 then io.stderr:write("lc_batch: first error: ", tostring(r and r.err), "\n") end
      end
    end
  end
  done = done + n
end
local elapsed = gettime() - t0
print(string.format("BENCH requests=%d errors=%d seconds=%.6f", count, errors, elapsed))

-- Row "require + new": one fresh process per sample. Measures, with luasocket's
-- gettime (gettimeofday, microseconds; loaded before the clock starts), the time of
--   local leadconnector = require "leadconnector"
--   local client = leadconnector.new { token = ..., base_url = ... }
-- and prints "STARTUP ms=M". No request is made.
local gettime = require("socket.core").gettime
local t0 = gettime()
local leadconnector = require "leadconnector"
local client = leadconnector.new { token = arg[2] or "bench-token", base_url = arg[1] or "http://127.0.0.1:9" }
local t1 = gettime()
assert(client, "leadconnector.new failed")
print(string.format("STARTUP ms=%.3f", (t1 - t0) * 1000))

-- spec/limiter/proc.lua URL TOKEN N REDIS_PORT: a plain Lua process sending N get_message calls one after another
-- through limiter.redis (the budget of spec/limiter/app.lua's nginx backend "redis"); prints "RESULT ok n".
local url, token, n, port = arg[1], arg[2], tonumber(arg[3]), tonumber(arg[4])
local leadconnector = require "leadconnector"
local limiter = require "leadconnector.limiter"
local c = assert(leadconnector.new { token = token, base_url = url, max_retries = 0, deadline = 90,
  limiter = limiter.redis { port = port, key = "spec55", timeout_ms = 200 } })
local ok, bad = 0, {}
for _ = 1, n do
  local v, err = c:get_message("msg_demo_1")
  if v then ok = ok + 1 else bad[#bad + 1] = tostring(err) end
end
io.stdout:write("RESULT ", ok, " ", n, "\n", table.concat(bad, "\n"), "\n")

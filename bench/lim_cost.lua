-- Rows "limiter": what each rate-limit backend costs per call. One client, get_message COUNT times in a row (as
-- bench/lc_seq.lua), with the limiter given:
--
--   lua5.4 bench/lim_cost.lua BASE_URL TOKEN ID COUNT BACKEND      BACKEND: none | process | redis
--
-- none: rate_limit = false (the row the others are compared with); process: leadconnector.limiter.process();
-- redis: leadconnector.limiter.redis against a redis-server this script starts on a free 127.0.0.1 port (and
-- stops). The shared-dict backend runs inside nginx only: bench/ngx/run measures it (see bench/README.md).
-- With MICRO=1 the loop calls the limiter alone (acquire + done, no HTTP): run under callgrind
-- (bench/profile.lua's method) it gives the instructions per call of the backend itself.
-- Prints one "BENCH requests=N errors=E seconds=S" line.
local gettime = require("socket.core").gettime
local leadconnector = require "leadconnector"
local limiter = require "leadconnector.limiter"
local core = require "leadconnector.core"

local base, token, id, count, backend = arg[1], arg[2], arg[3], tonumber(arg[4]), arg[5]
if not (base and token and id and count and backend) then
  io.stderr:write("usage: lim_cost.lua BASE_URL TOKEN ID COUNT none|process|redis\n")
  os.exit(2)
end

local redis_pid, redis_dir
local function start_redis()
  local s = require "socket"
  local srv = assert(s.bind("127.0.0.1", 0))
  local _, port = srv:getsockname()
  port = tonumber(port)
  srv:close()
  redis_dir = os.tmpname()
  os.remove(redis_dir)
  assert(os.execute("mkdir -p " .. redis_dir))
  local p = io.popen(("redis-server --port %d --bind 127.0.0.1 --save '' --appendonly no --dir %s " ..
    ">/dev/null 2>&1 & echo $!"):format(port, redis_dir))
  redis_pid = p:read("*l")
  p:close()
  local redis = require "leadconnector.redis"
  for _ = 1, 200 do
    local r = redis.connect { port = port, timeout = 0.1 }
    if r and r:call("PING") == "PONG" then r:close() return port end
    core.sleep(0.02)
  end
  error("redis-server did not start")
end

local opts = { token = token, base_url = base }
if backend == "none" then
  opts.rate_limit = false
elseif backend == "process" then
  opts.limiter = limiter.process()
elseif backend == "redis" then
  opts.limiter = limiter.redis { port = start_redis(), timeout_ms = 1000 }
else
  error("unknown backend " .. backend)
end
local client = assert(leadconnector.new(opts))

local errors = 0
local t0
if os.getenv("MICRO") == "1" then
  local h = client._limiter or error("MICRO needs a limiter")
  local sleep = core.sleep
  -- what the bench's sandbox answers say (1,000,000 per second): a session stand-in for the Max it reports, so that
  -- no acquire waits and the loop counts the limiter's own work
  local session = { rate_limit = function() return { max = 1000000 } end }
  t0 = gettime()
  for _ = 1, count do
    local ta, n = h:acquire(math.huge, sleep, 30)
    if not ta then errors = errors + 1 else h:done(n, ta, nil, 999999, 1000, nil, session) end
  end
else
  t0 = gettime()
  for _ = 1, count do
    local m = client:get_message(id)
    if not (m and m.id) then errors = errors + 1 end
  end
end
local seconds = gettime() - t0
client:close()
if redis_pid then
  os.execute("kill " .. redis_pid .. " 2>/dev/null")
  os.execute("rm -rf " .. redis_dir)
end
io.stdout:write(("BENCH requests=%d errors=%d seconds=%.6f\n"):format(count, errors, seconds))

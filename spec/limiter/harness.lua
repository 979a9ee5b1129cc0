--[[ spec/limiter/harness.lua -- the real parts of spec/55-limiter_shared_spec.lua: nginx (spec/limiter/nginx.conf
filled in, several workers), redis-server on a free port, plain Lua processes, concurrent HTTP requests (curl).

  h.redis(port?)           starts redis-server on 127.0.0.1 (a free port); returns { port, stop(), kill(), cli(...) }
  h.nginx(sb, opts)        opts.workers, opts.redis_port; returns { port, stop() }
  h.get_all(port, paths)   GETs every path at once (one curl process each, so one connection each); decoded answers
  h.processes(sb, list)    starts plain Lua processes (proc.lua) with { n, redis_port }; returns wait() -> results
]]
local helpers = require "helpers"
local cjson = require "cjson"
local socket = require "socket"
local redis = require "leadconnector.redis"
local ns = require "nginx.server"
local sh, read_file = helpers.sh, helpers.read_file

local h = {}

local REPO = sh("pwd"):gsub("%s+$", "")
local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end
local function tmpdir(tag)
  local d = sh(("mktemp -d \"${TMPDIR:-/tmp}/%s.XXXXXX\""):format(tag)):gsub("%s+$", "")
  assert(d ~= "")
  return d
end
local CLEAN = "env -u LD_PRELOAD -u ASAN_OPTIONS -u LSAN_OPTIONS -u UBSAN_OPTIONS "

function h.redis(port)
  port = port or helpers.free_port()
  local dir = tmpdir("lc-redis-spec")
  local self = { port = port, dir = dir }
  function self.start()
    -- --exit-with for redis: a watcher stops it when this process dies
    local script = ("redis-server --port %d --bind 127.0.0.1 --save '' --appendonly no --dir %s " ..
      ">%s/redis.log 2>&1 & r=$!; echo $r >%s/pid; while kill -0 %d 2>/dev/null && kill -0 $r 2>/dev/null; do " ..
      "sleep 0.3; done; kill -KILL $r 2>/dev/null"):format(port, q(dir), q(dir), q(dir), helpers.my_pid())
    os.execute(CLEAN .. "sh -c " .. q(script) .. " >/dev/null 2>&1 </dev/null &")
    local deadline = socket.gettime() + 10
    while true do
      local r = redis.connect { port = port, timeout = 0.2 }
      if r and r:call("PING") == "PONG" then r:close() break end
      assert(socket.gettime() < deadline, "redis-server did not start: " .. (read_file(dir .. "/redis.log") or ""))
      socket.sleep(0.05)
    end
    self.pid = tonumber((read_file(dir .. "/pid") or ""):match("%d+"))
  end
  function self.kill()
    if self.pid then os.execute("kill -KILL " .. self.pid .. " 2>/dev/null") end
    local deadline = socket.gettime() + 5
    while self.pid and helpers.alive(self.pid) and socket.gettime() < deadline do socket.sleep(0.02) end
    self.pid = nil
  end
  function self.cli(...)
    local r = assert(redis.connect { port = port, timeout = 1 })
    local v, err = r:call(...)
    r:close()
    return v, err
  end
  function self.stop()
    self.kill()
    os.execute("rm -rf " .. q(dir))
  end
  self.start()
  return self
end

-- nginx from spec/limiter/nginx.conf (started by spec/nginx/server.lua's launch): .port, .prefix, read_log(), stop().
function h.nginx(sb, opts)
  local nx = ns.launch {
    name = "lc-nginx-lim", conf = assert(read_file(REPO .. "/spec/limiter/nginx.conf")),
    vars = { WORKERS = opts.workers or 4, SANDBOX_URL = sb.url, TOKEN = sb.token, REDIS_PORT = opts.redis_port or 0 },
    ready = function(self) return (ns.http(self.port, "GET", "/health", nil, nil, 1)) == 200 end,
  }
  return { port = nx.port, prefix = nx.prefix, read_log = function() return nx:log() end,
    stop = function() nx:stop() end }
end

-- Starts every GET at once; returns a function that waits for them and gives the decoded answers.
function h.start_all(port, paths)
  local dir = tmpdir("lc-curl")
  for i, p in ipairs(paths) do
    os.execute(("curl -s -m 120 -o %s/%d.json %s >/dev/null 2>&1 </dev/null &"):format(
      q(dir), i, q(("http://127.0.0.1:%d%s"):format(port, p))))
  end
  return function()
    local out = {}
    local deadline = socket.gettime() + 150
    for i = 1, #paths do
      while true do
        local s = read_file(("%s/%d.json"):format(dir, i))
        local ok, v = pcall(cjson.decode, s or "")
        if ok and type(v) == "table" then out[i] = v break end
        if socket.gettime() > deadline then out[i] = { error = "no answer: " .. tostring(s) } break end
        socket.sleep(0.05)
      end
    end
    os.execute("rm -rf " .. q(dir))
    return out
  end
end

function h.get_all(port, paths) return h.start_all(port, paths)() end

-- Plain Lua processes (the interpreter running this spec), each sending n calls through limiter.redis.
function h.processes(sb, list)
  local interp = (type(jit) == "table") and "luajit" or "lua5.4"
  local cpath = (type(jit) == "table") and "./build/luajit/?.so;;" or "./build/lua5.4/?.so;;"
  local files = {}
  for i, p in ipairs(list) do
    local f = os.tmpname()
    files[i] = f
    os.execute(("%s LUA_PATH=%s LUA_CPATH=%s %s spec/limiter/proc.lua %s %s %d %d >%s 2>&1 </dev/null &"):format(
      CLEAN, q("./lua/?.lua;./lua/?/init.lua;;"), q(cpath), interp, q(sb.url), q(sb.token), p.n, p.redis_port, q(f)))
  end
  return function()
    local out = {}
    local deadline = socket.gettime() + 150
    for i, f in ipairs(files) do
      while true do
        local s = read_file(f) or ""
        local ok, n = s:match("RESULT (%d+) (%d+)")
        if ok then out[i] = { ok = tonumber(ok), n = tonumber(n), text = s } break end
        if socket.gettime() > deadline then out[i] = { ok = 0, text = s } break end
        socket.sleep(0.05)
      end
      os.remove(f)
    end
    return out
  end
end

return h

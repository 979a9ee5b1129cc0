-- Issue 15: one rate-limit budget across nginx workers and machines. Real parts only: an nginx with 4 workers on
-- one reuseport listener, two nginx instances and three plain Lua processes on one real redis-server (started here
-- on a free port), the sandbox with an exact sliding window of 20 per 2 s (the strictest server there is). Every
-- test counts the sandbox's own 429 answers.
--
-- Tagged slow (nginx, redis-server and other processes: the ASan and valgrind runs of this process add nothing) and
-- lua54only where nginx's own LuaJIT does the work.
local helpers = require "helpers"
local lch = require "lchelpers"
local core = require "leadconnector.core"
local h = require "limiter.harness"

local S = lch.scale
local LIM, WIN = 20, 2 -- per 2 s

local count_429 = lch.count_429

local function paths(k, n, backend, threads)
  local out = {}
  for i = 1, k do
    out[i] = ("/burst?n=%d&backend=%s&id=%d%s"):format(n, backend, i, threads and ("&threads=" .. threads) or "")
  end
  return out
end

local function totals(answers)
  local ok, pids, kinds = 0, {}, {}
  for _, a in ipairs(answers) do
    ok = ok + (a.ok or 0)
    if a.pid then pids[a.pid] = true end
    for k, v in pairs(a.kinds or {}) do kinds[#kinds + 1] = k .. " x" .. v end
  end
  return ok, lch.count(pids), table.concat(kinds, ", ")
end

describe("one budget across nginx workers (lua_shared_dict) #slow #lua54only #nginx", function()
  local sb, nx
  lazy_setup(function()
    sb = helpers.start_sandbox { rate_limit = LIM, rate_interval_ms = WIN * 1000, args = { "--rate-window", "sliding" } }
    nx = h.nginx(sb, { workers = 4 })
  end)
  lazy_teardown(function()
    if nx then nx.stop() end
    if sb then sb:stop() end
  end)
  before_each(function() sb:reset() end)

  it("120 concurrent calls for one token over 4 workers: no 429, and at least half the limit's throughput", function()
    local t0 = core.now()
    local answers = h.get_all(nx.port, paths(12, 10, "shdict"))
    local took = core.now() - t0
    local ok, workers, kinds = totals(answers)
    local n429, n = count_429(sb)
    assert.equals(0, n429, "429 answers: " .. kinds)
    assert.equals(120, ok, kinds)
    assert.equals(120, n)
    assert.is_true(workers >= 2, "the calls ran in " .. workers .. " worker(s) only")
    -- 120 at 20 per 2 s: the first 20 at once, then 10/s, about 10 s; half the throughput is 20 s
    assert.is_true(took >= (120 - LIM) / (LIM / WIN) * 0.9, ("took %.1f s: faster than the limit"):format(took))
    assert.is_true(took <= 2 * (120 - LIM) / (LIM / WIN) * S + 2, ("took %.1f s"):format(took))
  end)

  it("a shared dict too small for the budget: the reduced local budget, said once in the log, no 429", function()
    local t0 = core.now()
    local answers = h.get_all(nx.port, { "/burst?n=12&threads=4&backend=tiny" })
    local took = core.now() - t0
    local ok, _, kinds = totals(answers)
    assert.equals(0, (count_429(sb)), kinds)
    assert.equals(12, ok, kinds)
    local log = nx.read_log()
    local _, said = log:gsub("the shared store failed", "")
    assert.equals(1, said, log:sub(-2000))
    -- a quarter of 20 per 2 s in this worker: 12 calls need two windows of waiting
    assert.is_true(took >= 2 * WIN * 0.9, ("took %.1f s: not the reduced budget"):format(took))
  end)

  it("8 concurrent light threads sharing one worker's client (one budget per Lua state): no 429 (was 75)", function()
    local answers = h.get_all(nx.port, { "/burst?n=64&threads=8&backend=process" })
    local ok, _, kinds = totals(answers)
    assert.equals(0, (count_429(sb)), kinds)
    assert.equals(64, ok, kinds)
  end)
end)

describe("one budget across machines (Redis) #slow #lua54only #nginx", function()
  local sb, rd, nx1, nx2
  lazy_setup(function()
    sb = helpers.start_sandbox { rate_limit = LIM, rate_interval_ms = WIN * 1000, args = { "--rate-window", "sliding" } }
    rd = h.redis()
    nx1 = h.nginx(sb, { workers = 2, redis_port = rd.port })
    nx2 = h.nginx(sb, { workers = 2, redis_port = rd.port })
  end)
  lazy_teardown(function()
    if nx1 then nx1.stop() end
    if nx2 then nx2.stop() end
    if rd then rd.stop() end
    if sb then sb:stop() end
  end)
  before_each(function() sb:reset() end)

  it("2 nginx instances and 3 plain Lua processes on one redis-server: no 429", function()
    local t0 = core.now()
    local w1 = h.start_all(nx1.port, paths(4, 8, "redis"))
    local w2 = h.start_all(nx2.port, paths(4, 8, "redis"))
    local wp = h.processes(sb, { { n = 12, redis_port = rd.port }, { n = 12, redis_port = rd.port },
      { n = 12, redis_port = rd.port } })
    local a1, a2, procs = w1(), w2(), wp()
    local took = core.now() - t0
    local ok1, _, k1 = totals(a1)
    local ok2, _, k2 = totals(a2)
    local okp, ptext = 0, ""
    for _, p in ipairs(procs) do
      okp = okp + p.ok
      ptext = ptext .. p.text
    end
    local n429, n = count_429(sb)
    assert.equals(0, n429, k1 .. " / " .. k2 .. "\n" .. ptext .. (nx1.read_log() .. nx2.read_log()):sub(-3000))
    for _, p in ipairs(procs) do assert.equals(12, p.ok, p.text) end
    assert.equals(32, ok1, k1)
    assert.equals(32, ok2, k2)
    assert.equals(36, okp)
    assert.equals(100, n)
    assert.is_true(took >= (100 - LIM) / (LIM / WIN) * 0.9, ("took %.1f s: faster than the limit"):format(took))
    local keys = rd.cli("KEYS", "{lc:limit:spec55}:*")
    assert.is_true(#keys > 0, "nothing in Redis")
  end)
end)

-- Inside a describe: the strict sandbox, a redis-server and one plain-Lua client on it, made by
-- client_opts(redis port) (the client's options); torn down after the describe. Returns { sb, rd, c }.
local function redis_client_suite(client_opts)
  local s = {}
  lazy_setup(function()
    s.sb = helpers.start_sandbox { rate_limit = LIM, rate_interval_ms = WIN * 1000, args = { "--rate-window", "sliding" } }
    s.rd = h.redis()
    s.c = lch.client(s.sb, client_opts(s.rd.port))
  end)
  lazy_teardown(function()
    if s.c then s.c:close() end
    if s.rd then s.rd.stop() end
    if s.sb then s.sb:stop() end
  end)
  return s
end

describe("a Redis outage: a reduced local budget, then the shared one again #slow", function()
  local limiter = require "leadconnector.limiter"
  local logged = {}
  local seq_key = "{lc:limit:spec55-outage}:q"
  local s = redis_client_suite(function(port)
    return { max_retries = 0, deadline = 30, limiter = limiter.redis { port = port, key = "spec55-outage",
      timeout_ms = 50, fallback_share = 0.25, probe_interval = 0.2, log = function(m) logged[#logged + 1] = m end } }
  end)

  -- Calls for `seconds`; how many went out.
  local function send_for(seconds)
    local n, t_end = 0, core.now() + seconds
    while core.now() < t_end do
      local v, err = s.c:get_message("msg_demo_1", { deadline = math.max(0.05, t_end - core.now()) })
      if v then n = n + 1 else assert.equals("rate_limited", err.kind, tostring(err)) end
    end
    return n
  end

  it("paused (CLIENT PAUSE), killed and restarted, its scripts flushed: never unthrottled, never a 429", function()
    local sb, rd, c = s.sb, s.rd, s.c
    -- healthy: the shared budget, in Redis
    assert(c:get_message("msg_demo_1"))
    local q0 = tonumber(rd.cli("GET", seq_key))
    assert.is_true(q0 >= 1)
    core.sleep(WIN + 0.1) -- an empty window
    sb:reset()

    -- paused: every command times out after 50 ms; the local budget is a quarter of 20 per 2 s
    assert.equals("OK", rd.cli("CLIENT", "PAUSE", "2500", "ALL"))
    local during = send_for(WIN * 0.95)
    assert.is_true(during >= 1, "nothing went out while Redis was paused")
    assert.is_true(during <= LIM / 4 + 1, during .. " calls in one window on the reduced budget")
    assert.equals(1, #logged, table.concat(logged, "\n"))
    assert.truthy(logged[1]:find("local budget", 1, true), logged[1])

    -- back: the shared budget again (the number counter moves in Redis)
    core.sleep(1)
    assert(c:get_message("msg_demo_1"))
    assert(c:get_message("msg_demo_1"))
    assert.is_true(tonumber(rd.cli("GET", seq_key)) > q0, "the limiter did not come back to Redis")
    assert.truthy(logged[#logged]:find("again", 1, true), table.concat(logged, "\n"))

    -- killed: the reduced budget again, then restarted on the same port (empty): shared again
    core.sleep(WIN + 0.1)
    rd.kill()
    local while_dead = send_for(WIN * 0.95)
    assert.is_true(while_dead >= 1 and while_dead <= LIM / 4 + 1, while_dead .. " calls while Redis was down")
    rd.start()
    core.sleep(0.5)
    assert(c:get_message("msg_demo_1"))
    assert(c:get_message("msg_demo_1"))
    assert.is_true((tonumber(rd.cli("GET", seq_key)) or 0) >= 1, "not back on the restarted Redis")

    -- SCRIPT FLUSH: NOSCRIPT, then EVAL, without a fallback
    local nlog = #logged
    assert.equals("OK", rd.cli("SCRIPT", "FLUSH"))
    local q1 = tonumber(rd.cli("GET", seq_key))
    assert(c:get_message("msg_demo_1"))
    assert.equals(q1 + 1, tonumber(rd.cli("GET", seq_key)))
    assert.equals(nlog, #logged, table.concat(logged, "\n"))

    assert.equals(0, (count_429(sb)))
  end)
end)

describe("a batch on Redis: one script call to take a round's numbers and one for its answers #slow", function()
  local limiter = require "leadconnector.limiter"
  local s = redis_client_suite(function(port) return { limiter = limiter.redis { port = port, key = "spec55-batch" } } end)

  local function script_calls()
    local n = 0
    for name, calls in tostring(s.rd.cli("INFO", "commandstats")):gmatch("cmdstat_(%w+):calls=(%d+)") do
      if name == "evalsha" or name == "eval" then n = n + tonumber(calls) end
    end
    return n
  end

  it("8 calls in one round of 8: two round trips to Redis, not nine; the shared budget still exact", function()
    local sb, rd, c = s.sb, s.rd, s.c
    assert(c:get_message("msg_demo_1")) -- the script loaded, the session's figures seen
    assert.equals("OK", rd.cli("CONFIG", "RESETSTAT"))
    local calls = {}
    for i = 1, 8 do calls[i] = { "get_message", "msg_demo_1" } end
    local res = c:batch(calls, { concurrency = 8 })
    for i = 1, 8 do assert.truthy(res[i].value, tostring(res[i].err)) end
    assert.equals(2, script_calls())
    -- the budget has 20 - 9 left in this window: 11 more go at once, and a 21st must wait for the window
    local t0 = core.now()
    local more = {}
    for i = 1, 11 do more[i] = { "get_message", "msg_demo_1" } end
    res = c:batch(more, { concurrency = 11 })
    for i = 1, 11 do assert.truthy(res[i].value, tostring(res[i].err)) end
    assert.is_true(core.now() - t0 < 1, "the round waited: its numbers were not free")
    local v, err = c:get_message("msg_demo_1", { deadline = 0.5 })
    assert.is_nil(v)
    assert.equals("rate_limited", err.kind, tostring(err))
    assert.is_false(err.request_sent)
    local n429, n = count_429(sb)
    assert.equals(0, n429)
    assert.equals(20, n)
  end)
end)

-- Hostile servers and hostile callers against what issues 10, 11 and 15 landed: each test here failed on the code
-- before its fix (see the commit that added it). Servers run in other processes on 127.0.0.1.
local redis = require "leadconnector.redis"
local core = require "leadconnector.core"
local lch = require "lchelpers"

-- A fake Redis in another process: accepts one connection, reads the first command, then misbehaves as `mode`
-- says, and closes. Returns its port and a function that waits for it to end.
local FAKE_REDIS = [==[
local socket = require "socket"
local mode, secs = arg[1], tonumber(arg[2]) or 3
local lst = assert(socket.bind("127.0.0.1", 0))
local _, port = lst:getsockname()
io.stdout:write(port, "\n") io.stdout:flush()
lst:settimeout(30)
local c = lst:accept()
if not c then os.exit(0) end
c:settimeout(30)
c:receive(1)                          -- a command began
c:settimeout(0.05) c:receive(65536) c:settimeout(30)
if mode == "trickle" then             -- a bulk reply, one byte every 50 ms, for `secs` seconds
  c:send("$100000\r\n")
  for _ = 1, secs * 20 do if not c:send("x") then break end socket.sleep(0.05) end
elseif mode == "hugebulk" then        -- a 1 GB bulk announced, 200 MB of it sent
  c:send("$1000000000\r\n")
  local chunk = string.rep("x", 65536)
  for _ = 1, 3200 do if not c:send(chunk) then break end end
elseif mode == "hugearray" then       -- an array of 2e9 items announced, 3 million sent
  c:send("*2000000000\r\n")
  local chunk = string.rep(":1\r\n", 10000)
  for _ = 1, 300 do if not c:send(chunk) then break end end
elseif mode == "garbage" then
  c:send("?what is this\r\n")
  socket.sleep(1)
end
c:close()
]==]

local function fake_redis(mode, secs)
  local file = os.tmpname()
  local f = assert(io.open(file, "wb"))
  f:write(FAKE_REDIS)
  f:close()
  local interp = (type(jit) == "table") and "luajit" or "lua5.4"
  local p = assert(io.popen(("env -u LD_PRELOAD -u ASAN_OPTIONS %s %s %s %d"):format(interp, file, mode, secs or 3), "r"))
  local port = tonumber(p:read("*l"))
  os.remove(file)
  assert(port, "fake redis did not start")
  return port, function() p:close() end
end

local function peak_kb()
  local f = io.open("/proc/self/status")
  if not f then return 0 end
  local s = f:read("*a")
  f:close()
  return tonumber(s:match("VmHWM:%s*(%d+)")) or 0
end

describe("a hostile Redis against leadconnector.redis (plain Lua, hiredis) #redis", function()
  it("a reply trickled byte by byte is bounded by the timeout as a whole, not per read", function()
    local tmo = 0.2 * lch.scale
    local port, wait = fake_redis("trickle", math.ceil(tmo + 3))
    local r = assert(redis.connect { port = port, timeout = tmo })
    local t0 = core.now()
    local v, err = r:call("GET", "k")
    local took = core.now() - t0
    wait()
    assert.is_nil(v)
    assert.truthy(err:find("^timeout"), err)
    assert.is_true(took < tmo + 0.5 * lch.scale, ("took %.2f s with timeout %.2f"):format(took, tmo))
    r:close()
  end)

  it("a huge bulk length: refused at the reply cap, the process's memory bounded", function()
    local port, wait = fake_redis("hugebulk")
    local r = assert(redis.connect { port = port, timeout = 5 * lch.scale })
    local before = peak_kb()
    local v, err = r:call("GET", "k")
    local grew = peak_kb() - before
    wait()
    assert.is_nil(v)
    assert.truthy(err:find("^network: the Redis reply exceeds"), err)
    -- (under ASan or valgrind the allocator's own bookkeeping makes the peak meaningless; the cap's error is not)
    if lch.scale == 1 then assert.is_true(grew < 100 * 1024, ("peak memory grew by %d kB"):format(grew)) end
    -- the connection is closed for good; the next call connects again (and here finds nobody)
    local v2, err2 = r:call("PING")
    assert.is_nil(v2)
    assert.truthy(err2:find("^network"), err2)
  end)

  it("a huge array length: refused at once, no million objects built", function()
    local port, wait = fake_redis("hugearray")
    local r = assert(redis.connect { port = port, timeout = 5 * lch.scale })
    local before = peak_kb()
    local v, err = r:call("LRANGE", "k", 0, -1)
    local grew = peak_kb() - before
    wait()
    assert.is_nil(v)
    assert.truthy(err:find("^network: the Redis reply exceeds"), err)
    -- (under ASan or valgrind the allocator's own bookkeeping makes the peak meaningless; the cap's error is not)
    if lch.scale == 1 then assert.is_true(grew < 100 * 1024, ("peak memory grew by %d kB"):format(grew)) end
  end)

  it("a reply that is not RESP: a network error, no crash", function()
    local port, wait = fake_redis("garbage")
    local r = assert(redis.connect { port = port, timeout = 1 * lch.scale })
    local v, err = r:call("GET", "k")
    wait()
    assert.is_nil(v)
    assert.truthy(err:find("^network: .*[Pp]rotocol error"), err)
  end)
end)

describe("leadconnector.redis misused: both clients refuse the same calls, nothing reaches Redis #redis #nginx #slow", function()
  local h = require "limiter.harness"
  local app = require "limiter.app"
  local rd, ngx_srv
  lazy_setup(function()
    rd = h.redis()
    ngx_srv = h.nginx({ url = "http://127.0.0.1:1", token = "unused" }, { workers = 1, redis_port = rd.port })
  end)
  lazy_teardown(function()
    if ngx_srv then ngx_srv.stop() end
    if rd then rd.stop() end
  end)

  it("inside nginx too, a reply trickled byte by byte is bounded by the timeout as a whole", function()
    local tmo = 0.2 * lch.scale
    local port, wait = fake_redis("trickle", math.ceil(tmo + 3))
    local got = h.get_all(ngx_srv.port, { ("/redis_get?port=%d&timeout=%g"):format(port, tmo) })[1]
    wait()
    assert.is_false(got.ok)
    assert.truthy(tostring(got.err):find("^timeout"), got.err)
    assert.is_true(got.seconds < tmo + 0.5 * lch.scale, ("took %.2f s with timeout %.2f"):format(got.seconds, tmo))
  end)

  it("non-string arguments, nil in the middle, a command named like a lua-resty-redis method", function()
    local want = {
      nil_middle = "raised", table_arg = "raised", bool_arg = "raised", number_cmd = "raised",
      close_cmd = "nil: ERR", read_reply_cmd = "nil: ERR", after = { 0, 0, 0, "PONG" },
    }
    local got = h.get_all(ngx_srv.port, { "/redis_misuse" })[1]
    assert.same(want, got)
    local r = assert(redis.connect { port = rd.port, timeout = 1 * lch.scale })
    assert.same(want, app.redis_misuse_cases(r))
    r:close()
  end)
end)

-- Answers that break HTTP's framing, from a server in another process, on both transports: the same outcome.
describe("malformed answers, both transports agree #nginx #lua54only", function()
  local helpers = require "helpers"
  local fs = require "faultserver"
  local t = require "nginx.t"
  local ns = require "nginx.server"
  local sb, nx
  lazy_setup(function()
    sb = helpers.start_sandbox { rate_limit = false }
    nx = ns.start(sb)
  end)
  lazy_teardown(function()
    if nx then nx:stop() end
    if sb then sb:stop() end
  end)
  local BODY = '{"id":"m1","conversationId":"c1","contactId":"k1","body":"x"}'
  local CASES = {
    { "a four-digit status (2000 is no 200)", "HTTP/1.1 2000 OK\r\nContent-Length: " .. #BODY .. "\r\n\r\n" .. BODY },
    { "a 2011 to a send is no 201", "HTTP/1.1 2011 Created\r\nContent-Length: 2\r\n\r\n{}" },
    -- libcurl 8 took the first two as a 200 and a 201 (spec 57 run against bookworm-backports' libcurl 8.14): the
    -- library checks the status line itself since, on every libcurl
    { "a status under 100", "HTTP/1.1 099 Low\r\nContent-Length: " .. #BODY .. "\r\n\r\n" .. BODY },
    { "two spaces before the status", "HTTP/1.1  200 OK\r\nContent-Length: " .. #BODY .. "\r\n\r\n" .. BODY },
    { "a two-digit status", "HTTP/1.1 20\r\nContent-Length: " .. #BODY .. "\r\n\r\n" .. BODY },
    { "an HTTP/2 status line over HTTP/1.1's framing", "HTTP/2 200\r\nContent-Length: " .. #BODY .. "\r\n\r\n" ..
      BODY },
    -- found by a hostile review on 2026-12-07: both libcurls read a status line in lower case as a 200, whatever its
    -- code; libcurl 7.88 took libcurl's own form of an HTTP/2 status line from an HTTP/1.1 server over plain http
    { "a status line in lower case (a 404 read as a 200)", "http/1.1 404 Not Found\r\nContent-Length: " .. #BODY ..
      "\r\n\r\n" .. BODY },
    { "a status line in mixed case", "Http/1.1 200 OK\r\nContent-Length: " .. #BODY .. "\r\n\r\n" .. BODY },
    { "libcurl's own HTTP/2 status line, from an HTTP/1.1 server over plain http", "HTTP/2 200 \r\nContent-Length: " ..
      #BODY .. "\r\n\r\n" .. BODY },
    { "HTTP/1.2 (libcurl refuses 1.2 to 1.9)", "HTTP/1.2 200 OK\r\nContent-Length: " .. #BODY .. "\r\n\r\n" ..
      BODY },
    { "a connection closed in the middle of the headers (libcurl took it as an empty 200)",
      "HTTP/1.1 200 OK\r\nX-RateLimit-Remaining: 5\r\nContent-Le" },
    { "a chunk size of 17 hex digits", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000000\r\n" ..
      BODY .. "\r\n0\r\n\r\n" },
    -- libcurl read these as lengths (the number's sign or what follows it ignored); the cosocket reader never did
    { "a Content-Length with a plus sign (+N)", "HTTP/1.1 200 OK\r\nContent-Length: +" .. #BODY .. "\r\n\r\n" .. BODY },
    { "a Content-Length with junk after its digits", "HTTP/1.1 200 OK\r\nContent-Length: " .. #BODY .. "abc\r\n\r\n" ..
      BODY },
    { "a Content-Length of two numbers", "HTTP/1.1 200 OK\r\nContent-Length: " .. #BODY .. " " .. #BODY .. "\r\n\r\n" ..
      BODY },
  }
  -- The raw `answer`, from a server in another process, to the calls of `spec` (its client without a base URL) on
  -- each transport in turn: by transport, the first call's outcome and the POSTs the server counted.
  local function both_ways(answer, spec)
    local file = os.tmpname()
    local f = assert(io.open(file, "wb"))
    f:write(answer)
    f:close()
    local got = {}
    for _, where in ipairs { "libcurl", "cosockets" } do
      local srv = fs.start("raw", file)
      spec.client.base_url = srv.url
      local out = where == "libcurl" and t.run(spec) or nx:json("POST", "/call", spec)
      got[where] = { r = out.results[1], posts = srv:count("POST") }
      srv:stop()
    end
    os.remove(file)
    return got
  end
  local function get_spec(opts)
    local client = { token = "tok", rate_limit = false, max_retries = 0, timeout = 2 * lch.scale,
      deadline = 4 * lch.scale }
    for k, v in pairs(opts or {}) do client[k] = v end
    return { client = client, calls = { { "get_message", "m1" } } }
  end

  it("a Retry-After or X-RateLimit-* of 400 digits is no number on either transport (it was inf on cosockets)",
    function()
      local huge = ("9"):rep(400)
      local got = both_ways("HTTP/1.1 429 Too Many Requests\r\nRetry-After: " .. huge .. "\r\nX-RateLimit-Remaining: " ..
        huge .. "\r\nX-RateLimit-Interval-Milliseconds: 1\r\nContent-Length: 2\r\n\r\n{}", get_spec())
      for where, g in pairs(got) do
        assert.equals("rate_limited", g.r.kind, where)
        assert.is_nil(g.r.retry_after, where)
        assert.is_true(g.r.seconds < 2 * lch.scale, where) -- no hour-long wait either
      end
    end)

  -- Only an answer's first line is its status line: a header, or a chunked body's trailer, that starts "HTTP/" is a
  -- header like any other (the libcurl transport checked every such line as a status line for an hour).
  for _, c in ipairs {
    { "a header named HTTP/x", "HTTP/1.1 200 OK\r\nHTTP/x: y\r\nContent-Length: " .. #BODY .. "\r\n\r\n" .. BODY },
    { "a trailer named HTTP/x", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" ..
      string.format("%x", #BODY) .. "\r\n" .. BODY .. "\r\n0\r\nHTTP/x: y\r\n\r\n" },
    { "a 100 Continue, then the answer", "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: " ..
      #BODY .. "\r\n\r\n" .. BODY },
  } do
    it(c[1] .. ": the answer, on libcurl and on cosockets", function()
      for where, g in pairs(both_ways(c[2], get_spec())) do
        assert.is_true(g.r.ok, where .. ": " .. tostring(g.r.message))
      end
    end)
  end

  it("a send answered with a malformed status: sent once, request_sent, and no claim that no answer came", function()
    for _, line in ipairs { "HTTP/1.1 2011 Created", "http/1.1 201 Created", "HTTP/1.2 201 Created" } do
      local spec = get_spec { max_retries = 3, retry_base = 0.01, retry_cap = 0.02 }
      spec.calls = { { "send_message", { type = "SMS", contactId = "c1", message = "x" } } }
      local got = both_ways(line .. '\r\nContent-Length: 40\r\n\r\n{"conversationId":"c1","messageId":"m1"}', spec)
      for where, g in pairs(got) do
        local what = where .. ", " .. line .. ": " .. tostring(g.r.message)
        assert.is_false(g.r.ok, what)
        assert.equals("network", g.r.kind, what)
        assert.is_true(g.r.request_sent, what)
        assert.equals(1, g.posts, what)
        -- libcurl 7.88 fails such an answer as an unsupported protocol, which the library took for a request that
        -- never left and described as a connection closed before any answer
        assert.is_nil(g.r.message:find("before any answer", 1, true), what)
      end
    end
  end)

  for _, c in ipairs(CASES) do
    it(c[1] .. ": network, no status, on libcurl and on cosockets", function()
      for where, g in pairs(both_ways(c[2], get_spec())) do
        assert.is_false(g.r.ok, where)
        assert.equals("network", g.r.kind, where .. ": " .. tostring(g.r.message))
        assert.is_nil(g.r.status, where)
      end
    end)
  end
end)

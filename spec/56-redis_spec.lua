-- leadconnector.redis in plain Lua (the C core on hiredis) against a real redis-server started on a free port:
-- how replies become Lua values, errors, a bounded wait when Redis does not answer, reconnecting, EVALSHA/EVAL.
-- (Inside nginx the same API runs on lua-resty-redis: spec/55's Redis tests use it from nginx workers.)
local redis = require "leadconnector.redis"
local core = require "leadconnector.core"
local lch = require "lchelpers"
local h = require "limiter.harness"

describe("leadconnector.redis #redis", function()
  local rd
  lazy_setup(function() rd = h.redis() end)
  lazy_teardown(function() if rd then rd.stop() end end)

  it("turns each kind of reply into a Lua value", function()
    local r = assert(redis.connect { port = rd.port, timeout = 0.5 })
    assert.equals("OK", r:call("SET", "k1", "v1", "PX", "5000"))
    assert.equals(false, r:call("SET", "k1", "other", "NX")) -- nil reply: false, never nil
    assert.equals("v1", r:call("GET", "k1"))
    assert.equals(false, r:call("GET", "no-such-key"))
    assert.equals(7, r:call("INCRBY", "n1", 7))
    assert.same({ "a", "b" }, (function() r:call("RPUSH", "l1", "a", "b") return r:call("LRANGE", "l1", 0, -1) end)())
    local v, err = r:call("INCR", "k1")
    assert.is_nil(v)
    assert.truthy(err:find("^ERR"), err)
    assert.equals("PONG", r:call("PING")) -- an error reply leaves the connection usable
    local t = r:call("TIME")
    assert.equals(2, #t)
    r:close()
    r:close() -- idempotent
  end)

  it("script(): EVALSHA, and EVAL when Redis no longer has the script", function()
    local r = assert(redis.connect { port = rd.port, timeout = 0.5 })
    local src = "return {KEYS[1], ARGV[1], redis.call('INCR', KEYS[1])}"
    local v = assert(r:script(src, { "s1" }, { "x" }))
    assert.same({ "s1", "x", 1 }, v)
    assert.equals("OK", r:call("SCRIPT", "FLUSH"))
    v = assert(r:script(src, { "s1" }, { "y" }))
    assert.same({ "s1", "y", 2 }, v)
    assert.equals(core.sha1_hex(src), redis.sha1_hex(src))
    assert.same({ 1 }, r:call("SCRIPT", "EXISTS", core.sha1_hex(src)))
    r:close()
  end)

  it("a Redis that does not answer: timeout within the limit, then the next call connects again", function()
    local r = assert(redis.connect { port = rd.port, timeout = 0.1 })
    assert.equals("OK", rd.cli("CLIENT", "PAUSE", "700", "ALL"))
    local t0 = core.now()
    local v, err = r:call("GET", "k1")
    local took = core.now() - t0
    assert.is_nil(v)
    assert.truthy(err:find("^timeout"), err)
    assert.is_true(took < 0.5 * lch.scale, ("took %.2f s"):format(took))
    core.sleep(0.8)
    assert.equals("PONG", r:call("PING"))
    r:close()
  end)

  it("refused: a network error naming the address; a wrong password never appears in an error", function()
    local port = lch.unused_port()
    local r, err = redis.connect { port = port, timeout = 0.2 }
    assert.is_nil(r)
    assert.truthy(err:find("^network"), err)
    assert.truthy(err:find(tostring(port), 1, true), err)
    local r2, err2 = redis.connect { port = rd.port, timeout = 0.2, password = "s3cr3t-pw-xyz" }
    assert.is_nil(r2)
    assert.is_string(err2)
    assert.is_nil(err2:find("s3cr3t", 1, true), err2)
  end)

  it("refuses misuse with a clear error", function()
    assert.has_error(function() redis.connect { port = 0 } end)
    assert.has_error(function() redis.connect { port = 6379, timeout = -1 } end)
    local r = assert(redis.connect { port = rd.port, timeout = 0.5 })
    assert.has_error(function() r:call("SET", "k", {}) end)
    r:close()
  end)
end)

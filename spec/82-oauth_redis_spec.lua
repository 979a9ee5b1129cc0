-- OAuth with redis_store (leadconnector.redis) against a real redis-server started on a free port: several
-- processes at the moment of expiry make one refresh; the lock expires with a dead holder and is released only by
-- its owner; with Redis down every call fails with a clear error and no refresh is ever tried.
local helpers = require "helpers"
local lch = require "lchelpers"
local oauth = require "leadconnector.oauth"
local leadconnector = require "leadconnector"
local core = require "leadconnector.core"
local socket = require "socket"
local harness = require "limiter.harness"
local oh = require "oauthhelpers"

local stats = oh.stats

describe("oauth redis_store", function()
  local sb, redis
  lazy_setup(function()
    sb = helpers.start_sandbox { rate_limit = false }
    redis = harness.redis()
  end)
  lazy_teardown(function()
    if redis then redis.stop() end
    if sb then sb:stop() end
  end)
  before_each(function() sb:reset() end)

  local function new_app(store, o)
    local t = { client_id = "sandbox-client", client_secret = "sandbox-secret", base_url = sb.url, store = store }
    for k, v in pairs(o or {}) do t[k] = v end
    return assert(oauth.app(t))
  end

  it("get/set, and a SET NX PX lock: one holder, released only by its owner, expiring with a dead holder", function()
    local s = oauth.redis_store { port = redis.port, prefix = "t1:" }
    assert.is_nil(s:get("k"))
    assert.is_true(s:set("k", "v"))
    assert.equals("v", s:get("k"))
    local a = assert(s:lock("k", 0.3))
    assert.is_false(s:lock("k", 0.3))
    assert.is_true(s:unlock("k", "not-the-owner"))
    assert.is_false(s:lock("k", 0.3))
    assert.is_true(s:unlock("k", a))
    assert.is_string(s:lock("k", 0.3))
    socket.sleep(0.4)
    assert.is_string(s:lock("k", 0.3))
  end)

  it("several processes (think: machines) at the moment of expiry: exactly one refresh, every call succeeds", function()
    local prefix = "t2:"
    local app = new_app(oauth.redis_store { port = redis.port, prefix = prefix })
    local code = sb:control("POST", "/_sandbox/oauth/code", { locationId = "loc_sandbox" }).code
    local tok = assert(app:exchange_code(code, "https://app.example/cb"))
    local rec = assert(app:token("loc_sandbox"))
    rec.expires_at = core.time() - 1
    assert(app:save(rec))
    local start = core.time() + 1.5 * lch.scale
    local total, outputs = oh.burst(sb.url, "oauth.redis_store { port = tonumber(arg[3]), prefix = arg[4] }",
      { redis.port, prefix }, start)
    for _, out in ipairs(outputs) do assert.is_nil(out:match("ERR"), out) end
    assert.equals(24, total)
    local s = stats(sb, tok.refresh_token)
    assert.equals(1, s.refreshes)
    assert.equals(1, s.uses)
  end)

  it("Redis down: a clear error on every call, and no refresh storm (no token request at all)", function()
    local port = helpers.free_port() -- nothing listens there
    local app = new_app(oauth.redis_store { port = port, timeout = 0.2 })
    local c = assert(leadconnector.new { auth = app:token_source("loc_sandbox"), base_url = sb.url, max_retries = 3,
      rate_limit = false })
    for _ = 1, 10 do
      local v, err = c:get_conversation("conv_demo_1")
      assert.is_nil(v)
      assert.is_true(err.kind == "network" or err.kind == "timeout", tostring(err))
      assert.is_true(err.store)
      assert.truthy(err.message:find("token store", 1, true))
      assert.is_false(err.request_sent)
    end
    assert.equals(0, stats(sb).token_requests)
    assert.equals(0, #lch.api_requests(sb))
  end)

  it("Redis going down during a refresh wait: the waiters get the store's error, not a refresh of their own", function()
    local r2 = harness.redis()
    local store = oauth.redis_store { port = r2.port, timeout = 0.2 }
    local app = new_app(store, { lock_ttl = 5, timeout = 2 })
    local code = sb:control("POST", "/_sandbox/oauth/code", { locationId = "loc_sandbox" }).code
    local tok = assert(app:exchange_code(code, "https://app.example/cb"))
    local rec = assert(app:token("loc_sandbox"))
    rec.expires_at = core.time() - 1
    assert(app:save(rec))
    assert(store:lock("loc_sandbox", 5)) -- someone else is refreshing
    r2.stop()
    local v, err = app:token_source("loc_sandbox"):token()
    assert.is_nil(v)
    assert.is_true(err.store)
    assert.equals(0, stats(sb, tok.refresh_token).uses)
  end)
end)

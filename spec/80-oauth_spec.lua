-- OAuth (leadconnector.oauth) against the sandbox's /oauth endpoints: codes, rotating single-use refresh tokens,
-- single-flight refreshes across clients and processes, the 401 rule, stores, and secrets kept out of errors.
local helpers = require "helpers"
local lch = require "lchelpers"
local leadconnector = require "leadconnector"
local oauth = require "leadconnector.oauth"
local core = require "leadconnector.core"
local socket = require "socket"
local floor = math.floor
local oh = require "oauthhelpers"

local SECRET = "sandbox-secret"
local LOC = "loc_sandbox"

local function new_app(sb, o)
  local t = { client_id = "sandbox-client", client_secret = SECRET, base_url = sb.url, timeout = 5 * lch.scale }
  for k, v in pairs(o or {}) do t[k] = v end
  return assert(oauth.app(t))
end

local function code_for(sb, body) return sb:control("POST", "/_sandbox/oauth/code", body or { locationId = LOC }).code end

local function install(sb, app, loc)
  return assert(app:exchange_code(code_for(sb, { locationId = loc or LOC }), "https://app.example/cb"))
end

local stats = oh.stats

-- Marks the stored token of key as expired (its refresh token stays the live one).
local function expire(app, key)
  local rec = assert(app:token(key))
  rec.expires_at = core.time() - 1
  assert(app:save(rec))
  return rec
end

local function client_for(sb, app, key, o)
  local t = { auth = app:token_source(key or LOC), base_url = sb.url, max_retries = 0, rate_limit = false,
    timeout = 5 * lch.scale }
  for k, v in pairs(o or {}) do t[k] = v end
  return assert(leadconnector.new(t))
end

local function tmpdir()
  local p = io.popen("mktemp -d \"${TMPDIR:-/tmp}/lc-oauth.XXXXXX\"")
  local d = p:read("*l")
  p:close()
  return d
end

local lua_child = oh.lua_child

describe("oauth", function()
  local sb
  lch.suite(function(s) sb = s end, { rate_limit = false }, function() return nil end)

  it("exchanges a code, stores the pair under the location, and a client with auth uses it", function()
    local app = new_app(sb)
    local tok = install(sb, app)
    assert.equals(LOC, tok.locationId)
    assert.equals("Location", tok.userType)
    assert.truthy(tok.expires_at > core.time() + 80000)
    local stored = assert(app:token(LOC))
    assert.equals(tok.access_token, stored.access_token)
    local c = client_for(sb, app)
    local conv = assert(c:get_conversation("conv_demo_1"))
    assert.equals("conv_demo_1", conv.id)
    assert.equals(0, stats(sb).refreshes)
    -- a code is single-use
    local again, err = app:exchange_code("sbcode_nope", "https://app.example/cb")
    assert.is_nil(again)
    assert.equals("auth", err.kind)
    assert.equals(400, err.status)
  end)

  it("builds the authorization page's URL", function()
    local app = new_app(sb)
    local url = app:authorize_url { redirect_uri = "https://app.example/cb?x=1", scope = { "conversations.readonly",
      "conversations/message.write" }, state = "s 1" }
    assert.equals("https://marketplace.gohighlevel.com/v2/oauth/chooselocation?response_type=code" ..
      "&redirect_uri=https%3A%2F%2Fapp.example%2Fcb%3Fx%3D1&client_id=sandbox-client" ..
      "&scope=conversations.readonly%20conversations%2Fmessage.write&state=s%201", url)
  end)

  it("refreshes ahead of expiry (the leeway), once, and retires the refresh token used", function()
    sb:control("POST", "/_sandbox/oauth/config", { expires_in = 2 })
    local app = new_app(sb, { leeway = 1 })
    local tok = install(sb, app)
    local c = client_for(sb, app)
    assert(c:get_conversation("conv_demo_1"))
    assert.equals(0, stats(sb).refreshes)
    socket.sleep(1.1) -- past expires_at - leeway, before expiry: the call does not wait for a 401
    assert(c:get_conversation("conv_demo_1"))
    local s = stats(sb, tok.refresh_token)
    assert.equals(1, s.refreshes)
    assert.equals(1, s.uses)
    local now_tok = assert(app:token(LOC))
    assert.are_not.equal(tok.refresh_token, now_tok.refresh_token)
    assert(c:get_conversation("conv_demo_1"))
    assert.equals(1, stats(sb).refreshes)
    -- every API request carried a token the sandbox issued: none was refused
    for _, r in ipairs(lch.api_requests(sb)) do assert.equals(200, r.status) end
  end)

  it("many clients (coroutines) of one store at the moment of expiry: exactly one refresh, every call succeeds", function()
    local app = new_app(sb)
    local tok = install(sb, app)
    expire(app, LOC)
    local clients, cos = {}, {}
    for i = 1, 12 do clients[i] = client_for(sb, app) end
    local ok_calls = 0
    for i = 1, 12 do
      cos[i] = coroutine.create(function()
        for _ = 1, 3 do
          if clients[i]:get_conversation("conv_demo_1") then ok_calls = ok_calls + 1 end
          coroutine.yield()
        end
      end)
    end
    for _ = 1, 3 do for i = 1, 12 do assert(coroutine.resume(cos[i])) end end
    assert.equals(36, ok_calls)
    local s = stats(sb, tok.refresh_token)
    assert.equals(1, s.refreshes)
    assert.equals(1, s.uses)
  end)

  it("several processes sharing a file_store at the moment of expiry: exactly one refresh, every call succeeds", function()
    local dir = tmpdir()
    local app = new_app(sb, { store = oauth.file_store(dir) })
    local tok = install(sb, app)
    expire(app, LOC)
    local start = core.time() + 1.5 * lch.scale
    local total, outputs = oh.burst(sb.url, "oauth.file_store(arg[3])", { dir }, start)
    for _, out in ipairs(outputs) do assert.is_nil(out:match("ERR"), out) end
    assert.equals(24, total)
    local s = stats(sb, tok.refresh_token)
    assert.equals(1, s.refreshes)
    assert.equals(1, s.uses)
    -- files are private and no temp file is left behind
    local p = io.popen("stat -c '%a %n' " .. dir .. "/*")
    local listing = p:read("*a")
    p:close()
    for mode, name in listing:gmatch("(%d+) (%S+)") do
      assert.equals("600", mode, name)
      assert.is_nil(name:find(".tmp.", 1, true), name)
    end
    os.execute("rm -rf " .. dir)
  end)

  it("survives a crash between getting a new pair and storing it: no second refresh while the lock lives, " ..
     "then a clear auth error, never a loop", function()
    local dir = tmpdir()
    local app = new_app(sb, { store = oauth.file_store(dir), lock_ttl = 2 * lch.scale, timeout = 0.9 * lch.scale })
    local tok = install(sb, app)
    expire(app, LOC)
    local script = [[
local oauth, lc = require "leadconnector.oauth", require "leadconnector"
local fs = oauth.file_store(arg[1])
-- the process dies right after the refresh answered, before the new pair is stored
local store = setmetatable({ set = function() os.exit(3) end }, { __index = fs })
local app = assert(oauth.app { client_id = "sandbox-client", client_secret = "sandbox-secret", base_url = arg[2],
  store = store, lock_ttl = tonumber(arg[3]), timeout = tonumber(arg[3]) / 2.2 })
app:token_source("loc_sandbox"):token()
io.write("NOT REACHED\n")
]]
    local p, file = lua_child(script, { dir, sb.url, tostring(2 * lch.scale) })
    local out = p:read("*a")
    p:close()
    os.remove(file)
    assert.is_nil(out:find("NOT REACHED", 1, true))
    local crashed_at = core.time()
    assert.equals(1, stats(sb, tok.refresh_token).uses) -- the crashed process spent the refresh token
    -- another process now finds the lock held: it waits instead of refreshing with the retired token
    local src = app:token_source(LOC)
    local t0 = core.time()
    local v, err = src:token()
    assert.is_nil(v)
    assert.equals("auth", err.kind)
    assert.is_true(err.refused)
    assert.truthy(err.message:find("install", 1, true))
    assert.is_true(core.time() - crashed_at >= 1.5 * lch.scale or core.time() - t0 >= 1.5)
    local s = stats(sb, tok.refresh_token)
    assert.equals(2, s.uses) -- one try after the lock expired, refused
    -- the dead refresh token is remembered: later calls fail at once, with no request at all
    local c = client_for(sb, app)
    local conv, err2 = c:get_conversation("conv_demo_1")
    assert.is_nil(conv)
    assert.equals("auth", err2.kind)
    assert.equals(s.token_requests, stats(sb).token_requests)
    for _, r in ipairs(lch.api_requests(sb)) do assert.equals("/oauth/token", r.path) end
    -- a new install brings it back
    install(sb, app)
    assert(c:get_conversation("conv_demo_1"))
    os.execute("rm -rf " .. dir)
  end)

  it("a 401 once: one refresh, the call retried once and answered (a send is delivered once)", function()
    local app = new_app(sb)
    local tok = install(sb, app)
    local c = client_for(sb, app)
    sb:fault { method = "POST", path = "/conversations/messages", status = 401, count = 1,
      body = { statusCode = 401, message = "Invalid token: access token is invalid", error = "Unauthorized" } }
    local sent = assert(c:send_message { type = "SMS", contactId = "contact_oauth_1", message = "hi" })
    assert.truthy(sent.messageId)
    assert.equals(1, #sb:messages("contact_oauth_1"))
    local s = stats(sb, tok.refresh_token)
    assert.equals(1, s.refreshes)
    assert.equals(1, s.uses)
  end)

  it("a 401 always: one refresh, then the caller's auth error, no loop", function()
    local app = new_app(sb)
    install(sb, app)
    local c = client_for(sb, app, LOC, { max_retries = 5 })
    sb:fault { method = "GET", path_pattern = "^/conversations/", status = 401, count = -1 }
    local conv, err = c:get_conversation("conv_demo_1")
    assert.is_nil(conv)
    assert.equals("auth", err.kind)
    assert.equals(401, err.status)
    assert.equals(2, err.attempts)
    assert.equals(1, stats(sb).refreshes)
    local n = 0
    for _, r in ipairs(lch.api_requests(sb)) do if r.path:find("^/conversations/") then n = n + 1 end end
    assert.equals(2, n)
    -- the next call: its own single refresh at most, never more
    assert.is_nil(c:get_conversation("conv_demo_1"))
    assert.equals(2, stats(sb).refreshes)
  end)

  it("after a 401, does not refresh when the stored token is no longer the failing one", function()
    local app = new_app(sb)
    local tok = install(sb, app)
    local other = new_app(sb, { store = app.store }) -- another worker sharing the store
    local fresh = assert(other:token_source(LOC):refresh(tok.access_token))
    assert.equals(1, stats(sb).refreshes)
    local got = assert(app:token_source(LOC):refresh(tok.access_token)) -- the old one failed for us
    assert.equals(fresh, got)
    assert.equals(1, stats(sb).refreshes)
  end)

  it("agency tokens: a location token from the company's, minted again when it expires; installed locations", function()
    local app = new_app(sb, { app_id = "app_1" })
    local code = code_for(sb, { userType = "Company", companyId = "comp_1", locations = { "loc_a", "loc_b" } })
    local agency = assert(app:exchange_code(code, "https://app.example/cb", "Company"))
    assert.equals("Company", agency.userType)
    assert.equals("comp_1", agency.companyId)
    local inst = assert(app:installed_locations { companyId = "comp_1", limit = 10 })
    assert.equals(2, inst.count)
    assert.equals("loc_a", inst.locations[1]._id)
    local lt = assert(app:location_token("comp_1", "loc_a"))
    assert.equals("loc_a", lt.locationId)
    assert.is_nil(lt.refresh_token)
    local c = client_for(sb, app, "loc_a")
    assert(c:get_conversation("conv_demo_1") or true) -- loc_a has no seed data: any answer but 401 will do
    local _, err = c:get_conversation("conv_demo_1")
    assert.is_true(err == nil or err.kind == "not_found")
    expire(app, "loc_a")
    local _, err2 = c:get_conversation("conv_demo_1")
    assert.is_true(err2 == nil or err2.kind == "not_found")
    assert.equals(2, stats(sb).location_tokens)
    assert.equals(0, stats(sb).refreshes)
  end)

  it("keeps the client secret, access and refresh tokens out of errors and tostrings", function()
    local app = new_app(sb)
    local tok = install(sb, app)
    local rt, at = tok.refresh_token, tok.access_token
    expire(app, LOC)
    -- a proxy page echoing the whole form
    sb:fault { method = "POST", path = "/oauth/token", status = 502, count = 1,
      body = "<html>upstream saw client_secret=" .. SECRET .. "&refresh_token=" .. rt .. "</html>",
      headers = { ["Content-Type"] = "text/html" } }
    local _, err2 = app:token_source(LOC):token()
    assert.equals("server", err2.kind)
    assert.is_nil(lch.find_in(err2, SECRET))
    assert.is_nil(lch.find_in(err2, rt))
    sb:fault { method = "POST", path = "/oauth/token", status = 400, count = 1, body = {
      statusCode = 400, message = "bad refresh_token " .. rt .. " for client secret " .. SECRET .. " / " .. at } }
    local v, err = app:token_source(LOC):token()
    assert.is_nil(v)
    assert.equals("auth", err.kind)
    for _, secret in ipairs { SECRET, rt, at } do
      assert.is_nil(lch.find_in(err, secret))
      assert.is_nil(tostring(err):find(secret, 1, true))
      for _, obj in ipairs { app, app:token_source(LOC), app:token(LOC) } do
        assert.is_nil(tostring(obj):find(secret, 1, true))
      end
      assert.is_nil(lch.find_in(app, secret)) -- the app table does not hold the client secret
    end
    assert.truthy(err.message:find("[REDACTED]", 1, true))
  end)

  it("a refresh refused by the API marks the token dead: later calls fail at once, with no request", function()
    local app = new_app(sb)
    local tok = install(sb, app)
    sb:control("POST", "/_sandbox/oauth/revoke", { refresh_token = tok.refresh_token })
    expire(app, LOC)
    local c = client_for(sb, app)
    local _, err = c:get_conversation("conv_demo_1")
    assert.equals("auth", err.kind)
    local n = stats(sb).token_requests
    for _ = 1, 5 do
      local _, e = c:get_conversation("conv_demo_1")
      assert.equals("auth", e.kind)
      assert.is_true(e.refused)
    end
    assert.equals(n, stats(sb).token_requests)
  end)

  it("session:set_token changes the token of later calls; false sends no Authorization header at all", function()
    local s = assert(core.session { base_url = sb.url, version = "2021-04-15", user_agent = "t", token = false })
    local v, err = s:call("conversation", "GET", "/conversations/conv_demo_1")
    assert.is_nil(v)
    assert.equals(401, err.status)
    assert.is_true(s:set_token(sb.token))
    assert(s:call("conversation", "GET", "/conversations/conv_demo_1"))
    local ok, e2 = s:set_token("bad\ntoken")
    assert.is_nil(ok)
    assert.equals("invalid", e2.kind)
    assert(s:call("conversation", "GET", "/conversations/conv_demo_1")) -- the refused token changed nothing
    assert.is_true(s:set_token(false))
    assert.equals(401, select(2, s:call("conversation", "GET", "/conversations/conv_demo_1")).status)
    s:close()
    local reqs = lch.api_requests(sb)
    assert.equals(4, #reqs)
    assert.is_nil(reqs[1].headers.authorization)
    assert.equals("Bearer [redacted]", reqs[2].headers.authorization)
    assert.is_nil(reqs[4].headers.authorization)
  end)

  it("a form POST goes out form-urlencoded, the call's content type only", function()
    local app = new_app(sb)
    install(sb, app)
    local reqs = lch.api_requests(sb)
    assert.equals("/oauth/token", reqs[1].path)
    assert.equals("application/x-www-form-urlencoded", reqs[1].headers["content-type"])
    assert.truthy(reqs[1].raw_body:find("grant_type=authorization_code", 1, true))
    assert.is_nil(reqs[1].headers.authorization)
    local c = client_for(sb, app)
    assert(c:send_message { type = "SMS", contactId = "contact_oauth_2", message = "x" })
    reqs = lch.api_requests(sb)
    assert.equals("application/json", reqs[#reqs].headers["content-type"])
  end)

  it("a batch with auth: one refresh when due, every call answered", function()
    local app = new_app(sb)
    local tok = install(sb, app)
    expire(app, LOC)
    local c = client_for(sb, app)
    local calls = {}
    for i = 1, 6 do calls[i] = { "get_conversation", "conv_demo_1" } end
    local res = c:batch(calls, { concurrency = 3 })
    for i = 1, 6 do assert.truthy(res[i].value, tostring(res[i].err)) end
    assert.equals(1, stats(sb, tok.refresh_token).uses)
  end)

  it("a batch whose access token is revoked mid-way: exactly one refresh, every call succeeds, sends stored once", function()
    local app = new_app(sb)
    local tok = install(sb, app)
    local c = client_for(sb, app)
    -- each send slow, one at a time; a watcher in another process revokes the token once the sandbox has answered
    -- 3 sends, so the revoke lands while the batch's single round is under way whatever the machine's speed
    -- (a fixed sleep missed the round under ASan). LD_PRELOAD is dropped: the watcher's curl needs no sanitizer.
    sb:fault { method = "POST", path = "/conversations/messages", count = -1, delay_ms = floor(100 * lch.scale) }
    os.execute(("(env -u LD_PRELOAD sh -c 'i=0; while [ $i -lt 600 ]; do " ..
      "n=$(curl -s %s/_sandbox/requests | grep -o \"\\\"path\\\":\\\"/conversations/messages\\\"\" | wc -l); " ..
      "[ \"$n\" -ge 3 ] && break; i=$((i+1)); sleep 0.02; done; " ..
      "curl -s -o /dev/null -X POST -H \"Content-Type: application/json\" -d \"{\\\"access_token\\\":\\\"%s\\\"}\" " ..
      "%s/_sandbox/oauth/revoke') >/dev/null 2>&1 &"):format(sb.url, tok.access_token, sb.url))
    local calls = {}
    for i = 1, 10 do calls[i] = { "send_message", { type = "SMS", contactId = "contact_ob_" .. i, message = "m" .. i } } end
    local res = c:batch(calls, { concurrency = 1 })
    for i = 1, 10 do
      assert.truthy(res[i].value, tostring(res[i].err))
      assert.equals(1, #sb:messages("contact_ob_" .. i), "contact_ob_" .. i)
    end
    local ok_first, n401, n = false, 0, 0
    for _, r in ipairs(lch.api_requests(sb)) do
      if r.path == "/conversations/messages" then
        n = n + 1
        if r.status == 401 then n401 = n401 + 1 elseif n401 == 0 then ok_first = true end
      end
    end
    assert.is_true(ok_first, "some sends answered before the revoke")
    assert.is_true(n401 >= 1, "some sends refused after the revoke")
    assert.equals(10 + n401, n) -- each refused send retried once, no more
    local s = stats(sb, tok.refresh_token)
    assert.equals(1, s.refreshes)
    assert.equals(1, s.uses)
  end)

  it("a batch under a 401 always: one refresh, every call the caller's auth error, no loop", function()
    local app = new_app(sb)
    install(sb, app)
    local c = client_for(sb, app, LOC, { max_retries = 5 })
    sb:fault { method = "GET", path_pattern = "^/conversations/", status = 401, count = -1 }
    local calls = {}
    for i = 1, 4 do calls[i] = { "get_conversation", "conv_demo_1" } end
    local res = c:batch(calls, { concurrency = 2 })
    for i = 1, 4 do
      local err = res[i].err
      assert.is_nil(res[i].value)
      assert.equals("auth", err.kind)
      assert.equals(401, err.status)
      assert.equals(2, err.attempts)
    end
    assert.equals(1, stats(sb).refreshes)
    local n = 0
    for _, r in ipairs(lch.api_requests(sb)) do if r.path:find("^/conversations/") then n = n + 1 end end
    assert.equals(8, n)
  end)

  it("a batch whose refresh fails after a 401: one try, each call its own error", function()
    local app = new_app(sb)
    local tok = install(sb, app)
    local c = client_for(sb, app)
    sb:control("POST", "/_sandbox/oauth/revoke", { access_token = tok.access_token, refresh_token = tok.refresh_token })
    local calls = {}
    for i = 1, 3 do calls[i] = { "get_conversation", "conv_demo_1" } end
    local res = c:batch(calls, { concurrency = 3 })
    for i = 1, 3 do
      assert.equals("auth", res[i].err.kind)
      assert.is_true(res[i].err.refused)
      assert.equals("/conversations/conv_demo_1", res[i].err.path)
    end
    assert.are_not.equal(res[1].err, res[2].err)
    assert.equals(1, stats(sb, tok.refresh_token).uses)
  end)

  it("a record cached by one app does not hide another's refresh after a 401", function()
    local app = new_app(sb)
    local tok = install(sb, app)
    local c = client_for(sb, app)
    assert(c:get_conversation("conv_demo_1")) -- tok is now cached
    local other = new_app(sb, { store = app.store })
    assert(other:token_source(LOC):refresh(tok.access_token))
    sb:control("POST", "/_sandbox/oauth/revoke", { access_token = tok.access_token }) -- the old one stops working
    assert(c:get_conversation("conv_demo_1")) -- 401, the stored token differs: retried with it, no refresh
    assert.equals(1, stats(sb).refreshes)
  end)

  it("a refusal of the client's credentials is not remembered: fixed, the stored pair works again", function()
    local bad = new_app(sb, { client_secret = "wrong-secret" })
    local good = new_app(sb, { store = bad.store })
    local tok = install(sb, good)
    expire(good, LOC)
    local _, err = bad:token_source(LOC):token()
    assert.equals("auth", err.kind)
    assert.equals(401, err.status)
    assert.is_nil(lch.find_in(err, "wrong-secret"))
    assert(good:token_source(LOC):token())
    assert.equals(1, stats(sb, tok.refresh_token).uses)
    assert.equals(1, stats(sb).refreshes)
  end)

  it("refuses bad options and a client with both token and auth", function()
    local _, err = oauth.app { client_id = "x" }
    assert.equals("invalid", err.kind)
    assert.equals("client_secret", err.field)
    local _, err2 = oauth.app { client_id = "x", client_secret = "y", stor = {} }
    assert.equals("invalid", err2.kind)
    local _, err2b = oauth.app { client_id = "x", client_secret = "y", timeout = 10, lock_ttl = 15 }
    assert.equals("lock_ttl", err2b.field)
    local app = new_app(sb)
    local _, err3 = leadconnector.new { token = "t", auth = app:token_source(LOC) }
    assert.equals("invalid", err3.kind)
    local _, err4 = leadconnector.new { auth = {} }
    assert.equals("invalid", err4.kind)
    -- no token stored yet: a clear auth error, nothing sent
    local c = client_for(sb, app, "loc_unknown")
    local _, err5 = c:get_conversation("conv_demo_1")
    assert.equals("auth", err5.kind)
    assert.equals(0, #lch.api_requests(sb))
  end)
end)

describe("oauth stores", function()
  for _, name in ipairs { "memory", "file" } do
    it(name .. "_store: get/set, a lock only one holder gets, released only by its owner, expiring by itself", function()
      local dir = name == "file" and tmpdir()
      local s = name == "file" and oauth.file_store(dir) or oauth.memory_store()
      assert.is_nil(s:get("k"))
      assert.is_true(s:set("k", "v1"))
      assert.equals("v1", s:get("k"))
      local a = s:lock("k", 0.3)
      assert.is_string(a)
      assert.is_false(s:lock("k", 0.3))
      s:unlock("k", "someone-else")
      assert.is_false(s:lock("k", 0.3))
      s:unlock("k", a)
      local b = assert(s:lock("k", 0.3))
      socket.sleep(0.4)
      local c = s:lock("k", 0.3) -- b's holder "died": its lock expired
      assert.is_string(c)
      assert.are_not.equal(b, c)
      if dir then os.execute("rm -rf " .. dir) end
    end)
  end

  it("file_store reports a directory it cannot use", function()
    local s = oauth.file_store("/nonexistent/dir/for/tokens")
    local ok, err = s:set("k", "v")
    assert.is_nil(ok)
    assert.truthy(err:find("/nonexistent/dir/for/tokens", 1, true))
    local app = assert(oauth.app { client_id = "a", client_secret = "b", store = s })
    local _, e = app:save { access_token = "x", locationId = "L", expires_in = 10 }
    assert.equals("network", e.kind)
    assert.is_true(e.store)
  end)
end)

describe("the sandbox's /oauth endpoints", function()
  local sb
  lazy_setup(function()
    sb = helpers.start_sandbox { rate_limit = false, args = { "--oauth-expires", "120", "--oauth-client", "c2:s2" } }
  end)
  lazy_teardown(function() if sb then sb:stop() end end)

  local FORM = { ["Content-Type"] = "application/x-www-form-urlencoded", Authorization = false }
  local function token(body) return sb:request("POST", "/oauth/token", body, FORM) end

  it("answers the grants, refuses a reused refresh token and code, and says what is missing", function()
    local code = sb:control("POST", "/_sandbox/oauth/code", { locationId = "loc_x", client_id = "c2" }).code
    local st, b = token("client_id=c2&client_secret=s2&grant_type=authorization_code&code=" .. code)
    assert.equals(200, st)
    assert.equals(120, b.expires_in)
    assert.equals("loc_x", b.locationId)
    assert.equals("Bearer", b.token_type)
    local st2, b2 = token("client_id=c2&client_secret=s2&grant_type=authorization_code&code=" .. code)
    assert.equals(400, st2)
    assert.equals("invalid_grant", b2.error)
    local st3, b3 = token("client_id=c2&client_secret=s2&grant_type=refresh_token&refresh_token=" .. b.refresh_token)
    assert.equals(200, st3)
    assert.are_not.equal(b.refresh_token, b3.refresh_token)
    local st4, b4 = token("client_id=c2&client_secret=s2&grant_type=refresh_token&refresh_token=" .. b.refresh_token)
    assert.equals(400, st4)
    assert.equals("Invalid grant: refresh token is invalid or was already used", b4.message)
    assert.equals(2, sb:control("GET", "/_sandbox/oauth/stats?refresh_token=" .. b.refresh_token).uses)
    local st5, b5 = token("client_id=c2&client_secret=wrong&grant_type=refresh_token&refresh_token=" .. b3.refresh_token)
    assert.equals(401, st5)
    assert.equals("Unauthorized", b5.error)
    local st6, b6 = token("grant_type=refresh_token")
    assert.equals(422, st6)
    assert.same({ "client_id should not be empty", "client_secret should not be empty" }, b6.message)
    -- the API accepts the new access token (and only tokens the sandbox issued, or its static ones)
    local st7 = sb:request("GET", "/conversations/conv_demo_1", nil, { Authorization = "Bearer " .. b3.access_token })
    assert.equals(404, st7) -- a valid token for loc_x, which has no such conversation
    local st8 = sb:request("GET", "/conversations/conv_demo_1", nil, { Authorization = "Bearer sbat_forged" })
    assert.equals(401, st8)
  end)

  it("locationToken and installedLocations want a Company token", function()
    local st = sb:request("POST", "/oauth/locationToken", "companyId=c&locationId=l",
      { ["Content-Type"] = "application/x-www-form-urlencoded", Version = "2021-07-28" })
    assert.equals(401, st) -- the static token is a location's
    local code = sb:control("POST", "/_sandbox/oauth/code", { userType = "Company", companyId = "co", client_id = "c2",
      locations = { "l1" } }).code
    local _, b = token("client_id=c2&client_secret=s2&grant_type=authorization_code&user_type=Company&code=" .. code)
    assert.equals("Company", b.userType)
    local h = { ["Content-Type"] = "application/x-www-form-urlencoded", Version = "2021-07-28",
      Authorization = "Bearer " .. b.access_token }
    local st2, b2 = sb:request("POST", "/oauth/locationToken", "companyId=co&locationId=l1", h)
    assert.equals(200, st2)
    assert.equals("l1", b2.locationId)
    assert.is_nil(b2.refresh_token)
    local st3, b3 = sb:request("GET", "/oauth/installedLocations?companyId=co&appId=a", nil, h)
    assert.equals(200, st3)
    assert.equals(1, b3.count)
    assert.equals("l1", b3.locations[1]._id)
    local st4 = sb:request("POST", "/oauth/locationToken", "companyId=other&locationId=l1", h)
    assert.equals(400, st4)
  end)
end)

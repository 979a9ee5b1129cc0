--- leadconnector: a client for the LeadConnector (HighLevel) Conversations API.
--
-- The C core (`leadconnector.core`) validates, writes and decodes JSON, makes the Message and Conversation
-- userdata and the error objects, and talks HTTP with libcurl. This layer picks the transport, and owns what
-- spans several attempts: retries with backoff, the per-call deadline, and the rate limiter shared by every
-- client of one token.
--
--     local leadconnector = require "leadconnector"
--     local client = assert(leadconnector.new { token = os.getenv "LEADCONNECTOR_TOKEN" })
--     local sent, err = client:send_message { type = "SMS", contactId = "c1", message = "Hello" }
--
-- Every call returns its result, or `nil, err` (an error object, see README "Errors"). Only a misuse of the
-- library itself (a method called with `.` instead of `:`, a non-table where a table is required) raises.
-- @module leadconnector

local core = require "leadconnector.core"
local limiter = require "leadconnector.limiter"

local type, pairs, tostring, setmetatable, getmetatable, error, select = type, pairs, tostring, setmetatable,
  getmetatable, error, select
local floor, min, random = math.floor, math.min, math.random
local now = core.now

local M = {
  _VERSION = core.version,
  DEFAULT_BASE_URL = "https://services.leadconnectorhq.com",
  DEFAULT_VERSION = "2021-04-15",
}

-- The most calls a batch has in flight at once (libcurl's pool and the ngx threads): a bigger concurrency is this.
local MAX_CONCURRENCY = 256

local DEFAULTS = {
  timeout = 30,              -- seconds, one attempt
  connect_timeout = 10,      -- seconds
  deadline = 60,             -- seconds, one call across all its attempts and waits
  max_retries = 2,
  retry_base = 0.25,         -- seconds: first backoff window (full jitter)
  retry_cap = 8,             -- seconds: largest backoff window
  max_response_size = 4 * 1024 * 1024,
  rate_limit = true,         -- wait for the next window instead of sending into a 429
}

-- Option name -> Lua type. Anything else is refused, so a typo never silently does nothing.
local OPTIONS = {
  token = "string", base_url = "string", version = "string", timeout = "number", connect_timeout = "number",
  deadline = "number", max_retries = "number", retry_base = "number", retry_cap = "number", user_agent = "string",
  ca_file = "string", verify = "boolean", proxy = "string", max_response_size = "number", rate_limit = "boolean",
  transport = "string", engine = "string", limiter = "table", auth = "table",
}

local CALL_OPTIONS = {
  version = "string", allow_unknown = "boolean", timeout = "number", deadline = "number", max_retries = "number",
}

-- Time limits: 0 would mean "wait forever" to libcurl, so they must be positive.
local POSITIVE = { timeout = true, connect_timeout = true, deadline = true }

local operations = require "leadconnector.operations"
local invalid = operations.invalid -- an "invalid" error naming the field, nothing sent

local function check_options(opts, allowed, what)
  for k, v in pairs(opts) do
    local want = allowed[k]
    if type(k) ~= "string" or not want then
      return nil, invalid(tostring(k), ("unknown %s '%s'"):format(what, tostring(k)))
    end
    if type(v) ~= want then
      return nil, invalid(k, ("%s '%s' must be a %s, got %s"):format(what, k, want, type(v)))
    end
    if want == "number" and (v ~= v or v < 0 or v == math.huge) then
      return nil, invalid(k, ("%s '%s' must be a finite number >= 0"):format(what, k))
    end
    if POSITIVE[k] and v <= 0 then -- libcurl reads a 0 time limit as "no limit"
      return nil, invalid(k, ("%s '%s' must be greater than 0"):format(what, k))
    end
  end
  return true
end

local function check_version(v, field)
  if not v:match("^%d%d%d%d%-%d%d%-%d%d$") then
    return nil, invalid(field, ("%s must look like 2021-04-15"):format(field))
  end
  return true
end

--------------------------------------------------------------------------------------------------------------------
-- Transports. Each has call(op, method, path, body, version, timeout) -> value | nil, err, then the answer's
-- remaining, interval_ms, retry_after (nil where absent); last() (those three again);
-- rate_limit(); close(). "curl" is the C core's libcurl session; "ngx" uses nginx cosockets (leadconnector.ngx).

local function in_nginx()
  return type(ngx) == "table" and type(ngx.get_phase) == "function" -- luacheck: ignore 113
end

local function user_agent(extra)
  local lua_v = (type(jit) == "table" and jit.version) or _VERSION -- luacheck: ignore 113
  local ua = ("leadconnector-lua/%s (%s; libcurl/%s)"):format(core.version, lua_v, (core.curl_version()))
  if extra then ua = extra .. " " .. ua end
  return ua
end

--------------------------------------------------------------------------------------------------------------------
-- The client.

local Client = {}
Client.__index = Client
Client.__name = "leadconnector.Client"

local function check_client(self, method)
  if getmetatable(self) ~= Client then
    error(("leadconnector: call it as client:%s(...), on a client made by leadconnector.new"):format(method), 3)
  end
end

--- Creates a client.
-- @tparam table opts `token` (required), `base_url`, `version`, `timeout`, `connect_timeout`, `deadline`,
-- `max_retries`, `retry_base`, `retry_cap`, `user_agent`, `ca_file`, `verify`, `proxy`, `max_response_size`,
-- `rate_limit`, `transport` ("curl" or "ngx"), `engine` ("direct" or "libcurl", for transport "curl").
-- @return client, or nil and an error of kind "invalid"
function M.new(opts)
  if type(opts) ~= "table" then
    error("leadconnector.new expects a table of options, got " .. type(opts), 2)
  end
  local ok, err = check_options(opts, OPTIONS, "option")
  if not ok then return nil, err end
  local auth = opts.auth -- an OAuth token source (leadconnector.oauth): a token per call instead of `token`
  if auth then
    if opts.token ~= nil then return nil, invalid("auth", "give option 'token' or option 'auth', not both") end
    if type(auth.token) ~= "function" or type(auth.refresh) ~= "function" or type(auth.key) ~= "string" then
      return nil, invalid("auth", "option 'auth' must be a token source (app:token_source(locationId))")
    end
  else
    if opts.token == nil then return nil, invalid("token", "option 'token' is required") end
    ok, err = core.check_token(opts.token)
    if not ok then return nil, err end
  end

  local base_url = opts.base_url or M.DEFAULT_BASE_URL
  if not base_url:match("^https?://[%w%.%-%[%]:]+/?$") and not base_url:match("^https?://[%w%.%-%[%]:]+/[%w%-%._~/]*$") then
    return nil, invalid("base_url", "option 'base_url' must be an http(s) URL such as https://services.leadconnectorhq.com")
  end
  base_url = base_url:gsub("/+$", "")
  local version = opts.version or M.DEFAULT_VERSION
  ok, err = check_version(version, "version")
  if not ok then return nil, err end
  if opts.user_agent then
    ok, err = core.check_header(opts.user_agent, "user_agent")
    if not ok then return nil, err end
  end
  for _, k in ipairs { "ca_file", "proxy" } do
    if opts[k] then
      ok, err = core.check_header(opts[k], k)
      if not ok then return nil, err end
    end
  end

  -- Inside nginx the default is "ngx", in every phase: the session uses cosockets where nginx allows them,
  -- libcurl in the start-up phases (init_by_lua*, init_worker_by_lua*), and elsewhere answers a clear error rather
  -- than block the worker. A client made in init_by_lua* thus stays non-blocking in the requests that use it.
  local transport = opts.transport
  local auto = transport == nil
  if auto then transport = in_nginx() and "ngx" or "curl" end
  if transport ~= "curl" and transport ~= "ngx" then
    return nil, invalid("transport", "option 'transport' must be \"curl\" or \"ngx\"")
  end
  -- How the curl transport speaks HTTP in single calls: "direct" (the default: libcurl connects, the C core writes
  -- the request and reads the answer) or "libcurl" (libcurl's own HTTP engine, which also takes HTTP/2). Batches,
  -- uploads and proxies always use libcurl's.
  if opts.engine ~= nil then
    if opts.engine ~= "direct" and opts.engine ~= "libcurl" then
      return nil, invalid("engine", "option 'engine' must be \"direct\" or \"libcurl\"")
    end
    if transport ~= "curl" then
      return nil, invalid("engine", "option 'engine' applies to transport \"curl\" only")
    end
  end

  if opts.limiter ~= nil and not limiter.is_backend(opts.limiter) then
    return nil, invalid("limiter", "option 'limiter' must be made by leadconnector.limiter.process(), .shdict(name) " ..
      "or .redis(opts)")
  end

  local settings = {
    base_url = base_url, version = version, user_agent = user_agent(opts.user_agent),
    timeout = opts.timeout or DEFAULTS.timeout, connect_timeout = opts.connect_timeout or DEFAULTS.connect_timeout,
    verify = opts.verify ~= false, ca_file = opts.ca_file, proxy = opts.proxy,
    max_response_size = opts.max_response_size or DEFAULTS.max_response_size,
    token = opts.token or false, engine = opts.engine,
  }
  local session
  if transport == "ngx" then
    session, err = require("leadconnector.ngx").session(settings, auto)
  else
    session, err = core.session(settings)
  end
  settings.token = nil
  if not session then return nil, err end

  local self = setmetatable({
    base_url = base_url,
    version = version,
    transport = transport,
    timeout = settings.timeout,
    deadline = opts.deadline or DEFAULTS.deadline,
    max_retries = floor(opts.max_retries or DEFAULTS.max_retries),
    retry_base = opts.retry_base or DEFAULTS.retry_base,
    retry_cap = opts.retry_cap or DEFAULTS.retry_cap,
    rate_limiting = opts.rate_limit ~= false,
    _session = session,
    -- the budget: per app and location, shared by every client of the token (see leadconnector.limiter); an
    -- OAuth source's belongs to its location, whatever its token of the moment
    _limiter = opts.rate_limit ~= false and (opts.limiter or limiter.default()):bind(base_url,
      auth and ("\1oauth\0" .. auth.key) or opts.token) or nil,
    _auth = auth,
    _sleep = transport == "ngx" and require("leadconnector.ngx").sleep or core.sleep,
  }, Client)
  return self
end

-- Which failures are worth another attempt. A POST (not idempotent: every POST of the catalogue has retry class
-- "send") is retried only when the API said 429 or when the request provably never left this machine: after a
-- timeout or a 5xx the message may already be queued.
local function retryable(method, err)
  local kind = err.kind
  if kind == "rate_limited" then return true end
  local once = method == "POST"
  if kind == "network" or kind == "timeout" then
    if once then return err.request_sent == false end
    return true
  end
  if kind == "server" and not once then
    local s = err.status
    return s == 502 or s == 503 or s == 504
  end
  return false
end

-- `sent`: an earlier attempt of the call may have reached the server. Then the call's request did leave this
-- machine, whatever the last attempt says (a retry refused at connect): request_sent is never false.
local function finish_error(err, method, path, attempts, sent)
  err.method, err.path, err.attempts = method, path, attempts
  if sent and err.request_sent == false then err.request_sent = true end
  return nil, err
end

-- The 401 rule, for single calls and batches alike: after a 401 with token `used` (and none before for this call),
-- refresh once per failing token (none when another worker stored a new one already: the source's refresh returns
-- the stored one), then the call once more, sends too: the API refused the request. A second 401 is the caller's.
-- Returns true (retry now), false (the rule does not apply: the error stands or the usual retries decide), or
-- nil + the refresh's error. `memo` (a batch round's table, all of whose calls went with the one token `used`):
-- the refresh is asked once for all of them.
local function reauth(auth, err, used, reauthed, memo)
  if not (auth and err.status == 401 and not reauthed) then return false end
  if memo and memo.done then return memo.again, memo.err end
  local tok, aerr = auth:refresh(used)
  local again = tok and true or nil
  if memo then memo.done, memo.again, memo.err = true, again, aerr end
  return again, aerr
end

function Client:_call(op, method, path, body, copts, ctype)
  local session, lim = self._session, self._limiter
  local version, timeout, deadline, max_retries = self.version, self.timeout, self.deadline, self.max_retries
  if copts then
    version = copts.version or version
    timeout = copts.timeout or timeout
    deadline = copts.deadline or deadline
    max_retries = copts.max_retries and floor(copts.max_retries) or max_retries
  end
  local t = now()
  local stop_at = t + deadline
  local attempts = 0
  local sent = false -- an attempt so far may have reached the server
  local auth, used, reauthed = self._auth, nil, false
  while true do
    local ta, ticket
    if lim then -- the limiter waits (if the budget allows it before the deadline), then counts this attempt
      ta, ticket = lim:acquire(stop_at, self._sleep, timeout)
      if not ta then
        local err = core.error("rate_limited",
          ("rate limit budget spent: the next window opens in %.1f s, past this call's deadline"):format(ticket))
        err.retry_after = ticket
        err.request_sent = sent -- an earlier attempt of this call may have reached the server
        return finish_error(err, method, path, attempts)
      end
      t = now()
    end
    local left = stop_at - t
    if left <= 0 then
      if lim then lim:cancel(ticket) end
      local err = core.error("timeout", ("deadline of %g s passed"):format(deadline))
      err.request_sent = sent
      return finish_error(err, method, path, attempts)
    end
    if auth then -- the token of this attempt, refreshed first when due (it may wait for another's refresh)
      local aerr
      used, aerr = auth:token()
      if used then
        local ok, serr = session:set_token(used)
        if not ok then used, aerr = nil, serr end
      end
      if not used then
        if lim then lim:cancel(ticket) end
        aerr.request_sent = sent
        return finish_error(aerr, method, path, attempts)
      end
    end
    attempts = attempts + 1
    -- call() also returns what this answer said of the rate limit: remaining, interval_ms, retry_after.
    local value, err, remaining, interval_ms, retry_after =
      session:call(op, method, path, body, version, timeout < left and timeout or left, ctype)
    if lim then lim:done(ticket, ta, err and err.status, remaining, interval_ms, retry_after, session) end
    if value ~= nil then return value end
    t = now()
    local delay
    local again, aerr = reauth(auth, err, used, reauthed)
    if again ~= false then -- the 401 rule (reauth)
      reauthed, sent = true, true
      if not again then return finish_error(aerr, method, path, attempts, sent) end
      delay = 0
    elseif attempts > max_retries or not retryable(method, err) then
      return finish_error(err, method, path, attempts, sent)
    else
      if err.request_sent ~= false then sent = true end
    end
    if delay then -- the 401 retry: at once
    elseif err.retry_after then
      delay = min(err.retry_after, 3600)
    elseif err.kind == "rate_limited" and remaining == 0 and interval_ms then
      delay = min(interval_ms / 1000, 3600)
    else
      local window = min(self.retry_cap, self.retry_base * 2 ^ (attempts - 1))
      delay = random() * window
    end
    if t + delay >= stop_at then return finish_error(err, method, path, attempts, sent) end
    if delay > 0 then
      self._sleep(delay)
      t = now() -- the next attempt's share of the deadline starts after the wait
    end
  end
end

local function call_options(copts)
  if copts == nil then return nil end
  if type(copts) ~= "table" then error("leadconnector: call options must be a table, got " .. type(copts), 3) end
  local ok, err = check_options(copts, CALL_OPTIONS, "call option")
  if not ok then return nil, err end
  if copts.version then
    ok, err = check_version(copts.version, "version")
    if not ok then return nil, err end
  end
  return copts
end

-- The API's methods (send_message, get_message, ... every operation of the catalogue), the paging iterators and
-- the upload: generated from lua/leadconnector/catalogue.lua by leadconnector.operations.
local prepare_entry = operations.install(Client, {
  call_options = call_options, finish_error = finish_error,
})

--------------------------------------------------------------------------------------------------------------------
-- Batches: many calls at once from one Lua thread.

local BATCH_OPTIONS = {
  concurrency = "number", version = "string", timeout = "number", deadline = "number", max_retries = "number",
}

-- Turns one batch entry into a request tuple for the session: { op, method, path, body|false, version|false,
-- timeout|false }, or nil + error (the entry's own validation error; nothing is sent for it). The entry is prepared
-- by the same declaration as the method (leadconnector.operations).
local function prepare(call, bopts)
  local op, method, path, body, copts = prepare_entry(call)
  if not op then return nil, method end
  local version = (copts and copts.version) or bopts.version or false
  -- [6] is each attempt's time limit, set per round (the call's own, cut to what its deadline leaves); [7] the
  -- call's own limit, when it or the batch gives one (else the client's)
  local timeout = (copts and copts.timeout) or bopts.timeout or false
  -- [8], [9]: the call's own max_retries and deadline (seconds from the batch's start), when it gives them
  local retries = copts and copts.max_retries and floor(copts.max_retries) or false
  return { op, method, path, body or false, version, false, timeout, retries, (copts and copts.deadline) or false }
end

--- Runs many calls at once: `calls[i] = { method_name, args... }` with the method's own arguments, e.g.
-- `{ "get_message", id }`, `{ "send_message", fields [, opts] }`, `{ "get_messages", conversationId, query }`
-- (every method of the catalogue but the upload; the iterators are not methods of a batch).
-- Up to `opts.concurrency` (default 8) are in flight together, each on a connection of its own (the direct engine's;
-- libcurl's multi interface with engine = "libcurl"; cosockets in nginx). Each call follows the same retry rules as on its own, and the rate limiter.
-- @return a list in the order of `calls`: `results[i] = { value = ... }` or `{ err = ... }`
function Client:batch(calls, opts)
  check_client(self, "batch")
  if type(calls) ~= "table" then error("leadconnector: batch expects a list of calls, got " .. type(calls), 2) end
  local bopts = {}
  if opts ~= nil then
    if type(opts) ~= "table" then error("leadconnector: batch options must be a table", 2) end
    local ok, err = check_options(opts, BATCH_OPTIONS, "batch option")
    if not ok then error("leadconnector: " .. err.message, 2) end
    bopts = opts
  end
  local concurrency = bopts.concurrency or 8
  -- (check_options refused NaN, inf and negatives) clamped before any cast: 1e300 or 2^63 means "as many as
  -- allowed", never an integer-representation error
  concurrency = concurrency < 1 and 1 or concurrency > MAX_CONCURRENCY and MAX_CONCURRENCY or floor(concurrency)
  local max_retries = bopts.max_retries and floor(bopts.max_retries) or self.max_retries
  local t0 = now()
  local stop_at = t0 + (bopts.deadline or self.deadline)
  local session, lim = self._session, self._limiter
  -- Per call i: results[i] once it has one; attempts[i]; stop_of[i], when its deadline (its own, or the batch's,
  -- whichever comes first) passes. pending/where: the requests still to send and the calls they belong to.
  local results, pending, where, attempts, stop_of = {}, {}, {}, {}, {}
  local sent = {} -- sent[i]: an attempt of call i so far may have reached the server (see finish_error)
  local reauthed = {} -- reauthed[i]: call i had its 401 retry (reauth)
  local np = 0
  for i = 1, #calls do
    local c = calls[i]
    if type(c) ~= "table" then error(("leadconnector: batch call %d must be a table"):format(i), 2) end
    local req, err = prepare(c, bopts)
    if req then
      np = np + 1
      pending[np], where[np] = req, i
      attempts[i] = 0
      stop_of[i] = req[9] and min(stop_at, t0 + req[9]) or stop_at
    else
      results[i] = { err = err }
    end
  end

  local function fail(req, i, err)
    err.method, err.path, err.attempts = req[2], req[3], attempts[i]
    if sent[i] and err.request_sent == false then err.request_sent = true end
    results[i] = { err = err }
  end
  -- Fails, with err_of(i), the pending calls whose deadline comes by `when`; keeps the others pending. The usual
  -- round has none due: one pass to see that, and the lists stay as they are.
  local function drop_before(when, err_of)
    local due = false
    for k = 1, #pending do
      if stop_of[where[k]] <= when then due = true break end
    end
    if not due then return end
    local keep, keep_at = {}, {}
    for k = 1, #pending do
      local i = where[k]
      if stop_of[i] <= when then
        fail(pending[k], i, err_of(i))
      else
        keep[#keep + 1], keep_at[#keep_at + 1] = pending[k], i
      end
    end
    pending, where = keep, keep_at
  end

  while #pending > 0 do
    local used -- this round's token
    if self._auth then
      local tok, aerr = self._auth:token()
      used = tok
      if tok then tok, aerr = session:set_token(tok) end
      if not tok then
        drop_before(math.huge, function(i) local e = core.error(aerr.kind, aerr.message) e.request_sent = sent[i] == true return e end)
        break
      end
    end
    local t = now()
    drop_before(t, function(i) -- deadline passed
      local e = core.error("timeout", "deadline passed")
      e.request_sent = sent[i] == true
      return e
    end)
    if #pending == 0 then break end
    -- The budget: as many numbers as may go now (at least one, waited for as long as the earliest deadline
    -- allows; calls whose deadline passes before then end now, unsent, as a single call would).
    local ta, tickets
    while lim and #pending > 0 do
      local earliest = stop_of[where[1]]
      for k = 2, #pending do
        local s = stop_of[where[k]]
        if s < earliest then earliest = s end
      end
      tickets = { lim:acquire(earliest, self._sleep, self.timeout, #pending) }
      ta = tickets[1]
      if ta then break end
      local w = tickets[2]
      drop_before(now() + w, function(i)
        local e = core.error("rate_limited",
          ("rate limit budget spent: the next window opens in %.1f s, past this call's deadline"):format(w))
        e.retry_after, e.request_sent = w, sent[i] == true
        return e
      end)
    end
    if #pending == 0 then break end
    t = now()
    local round, round_at = pending, where
    local n_round = lim and #tickets - 1 or #pending
    if n_round < #pending then
      round, round_at = {}, {}
      local rest, rest_at = {}, {}
      for k = 1, #pending do
        if k <= n_round then round[#round + 1], round_at[#round_at + 1] = pending[k], where[k]
        else rest[#rest + 1], rest_at[#rest_at + 1] = pending[k], where[k] end
      end
      pending, where = rest, rest_at
    else
      pending, where = {}, {}
    end
    for k = 1, #round do
      local req, i = round[k], round_at[k]
      local left = stop_of[i] - t
      local tmo = req[7] or self.timeout
      req[6] = tmo < left and tmo or left
      attempts[i] = attempts[i] + 1
    end
    local values, errors, remaining, interval_ms
    if session.batch then
      values, errors, remaining, interval_ms = session:batch(round, concurrency)
    else -- a transport without its own batch: one after another
      values, errors = {}, {}
      for k = 1, #round do
        local r = round[k]
        local rem, int
        values[k], errors[k], rem, int = session:call(r[1], r[2], r[3], r[4] or nil, r[5] or nil, r[6] or nil)
        if rem and (not remaining or rem < remaining) then remaining = rem end
        interval_ms = int or interval_ms
      end
    end
    t = now()
    if lim then
      -- Each answer ends its number's window, all in one limiter operation for the round (one EVALSHA on Redis).
      -- The smallest Remaining of the round (they finish in any order) goes with its first number, the earliest.
      local list = {}
      for k = 1, #round do
        local e = errors[k]
        local j = 3 * k
        list[j - 2], list[j - 1], list[j] = tickets[k + 1], e and e.status or false, e and e.retry_after or false
      end
      lim:done_round(ta, list, remaining, interval_ms, session)
    end
    local delay = 0
    local memo = {} -- the 401 rule's answer for this round's token, asked once (reauth)
    for k = 1, #round do
      local req, i, v = round[k], round_at[k], values[k]
      if v ~= nil then
        results[i] = { value = v }
      else
        local err = errors[k]
        local again, aerr = reauth(self._auth, err, used, reauthed[i], memo)
        if again ~= false then -- the 401 rule
          reauthed[i], sent[i] = true, true
          if again then -- retried in the next round, at once, with the stored token
            pending[#pending + 1], where[#where + 1] = req, i
          else -- each call its own copy of the refresh's error
            local e = {}
            for key, x in pairs(aerr) do e[key] = x end
            err = setmetatable(e, getmetatable(aerr))
          end
        elseif attempts[i] <= (req[8] or max_retries) and retryable(req[2], err) then
          local d = err.retry_after or random() * min(self.retry_cap, self.retry_base * 2 ^ (attempts[i] - 1))
          if t + d < stop_of[i] then -- else the error stands: a retry would start past the call's deadline
            pending[#pending + 1], where[#where + 1] = req, i
            if d > delay then delay = d end
          end
        end
        fail(req, i, err)
        if err.request_sent ~= false then sent[i] = true end
      end
    end
    if #pending > 0 and delay > 0 then self._sleep(delay) end
  end
  return results
end

--- What the client knows of its rate limits: the last X-RateLimit-* values seen, and `wait`, the seconds the
-- limiter would hold the next request back (0 when it may go now).
function Client:rate_limit()
  check_client(self, "rate_limit")
  local rl = self._session:rate_limit()
  rl.wait = self._limiter and self._limiter:wait() or 0
  return rl
end

--- Closes the client's connection. Idempotent; a closed client raises on use.
function Client:close()
  check_client(self, "close")
  self._session:close()
end

Client.__close = function(self) self._session:close() end

function Client:__tostring()
  return ("leadconnector.Client (%s, %s)"):format(self.base_url, self.transport)
end

--- True when v is an error object made by this library.
M.is_error = core.is_error
--- "Message", "Conversation" or nil.
M.typeof = core.typeof

return M

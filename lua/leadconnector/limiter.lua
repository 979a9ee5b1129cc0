--- leadconnector.limiter: one rate-limit budget per app and location, in one Lua state, in every worker of one
-- nginx, or on every machine.
--
--     local limiter = require "leadconnector.limiter"
--     leadconnector.new { token = ..., limiter = limiter.process() }            -- the default outside nginx
--     leadconnector.new { token = ..., limiter = limiter.shdict("leadconnector_limits") } -- every nginx worker
--     leadconnector.new { token = ..., limiter = limiter.redis { host = "127.0.0.1", port = 6379 } } -- every machine
--
-- The algorithm (one source, run on a Lua table, on a lua_shared_dict, and inside Redis as a script; on PUC Lua the
-- process store also runs its per-call operations in C, line for line, held to this source by spec 54): a
-- reserve-then-check sliding-window log of this app's own sends. Every send takes the next number n of one
-- counter (an atomic incr) and may go only when send n - B has ended its window: B = Max (X-RateLimit-Max) less the
-- sends of other senders, and a send "ends its window" Interval (X-RateLimit-Interval-Milliseconds) after its
-- answer came (an in-flight send never ends). That makes any Interval hold at most B of our sends as the server
-- counts them, however many workers and machines take numbers, and with no lock: on a shared dict only incr (with
-- init), add and the owner's own writes to its slot; in Redis one EVALSHA per acquire, on Redis's clock (TIME).
-- Each answer's X-RateLimit-Remaining corrects B downwards when the server has counted more than our own sends
-- (other senders spend the same budget); Retry-After blocks every sender; a window that has passed gives back the
-- full Max. Before any answer has said the limits, one request goes alone to learn them (if its answer says
-- nothing, the documented 100 per 10 s apply). Every server-given wait is capped (1 hour) or refused as
-- implausible. The daily budget (X-RateLimit-Daily-Remaining) blocks the token when spent, probing once a minute.
--
-- When the shared store fails (Redis down, paused, a full dict), sends go on against a local budget of
-- `fallback_share` (default 1/4) of Max, never unthrottled; the first failure is logged once; every
-- `probe_interval` seconds the store is tried again, and its budget is used again as soon as it answers.
-- @module leadconnector.limiter

local core = require "leadconnector.core"

local type, tonumber, tostring, setmetatable, getmetatable, pcall, error, pairs = type, tonumber, tostring,
  setmetatable, getmetatable, pcall, error, pairs
local floor, min, format = math.floor, math.min, string.format
local unpack = table.unpack or unpack -- luacheck: ignore 113
local now = core.now

local M = {
  DEFAULT_MAX = 100,          -- the documented burst: 100 requests ...
  DEFAULT_INTERVAL = 10,      -- ... per 10 s
  MAX_WAIT = 3600,            -- no server-given wait is honoured longer than an hour
}

local ngx = ngx -- luacheck: ignore 113
local in_nginx = type(ngx) == "table" and type(ngx.get_phase) == "function"

--------------------------------------------------------------------------------------------------------------------
-- The algorithm, as one chunk of Lua 5.1 source: loaded here over a table or a shared dict, and sent to Redis
-- as the body of its script. It gets a store S: S.now(), S.get(k) (number or nil), S.mget(k1, ..., k5) (up to
-- five keys, nil ones skipped: their values, nil where absent), S.set(k, v, ttl_s), S.add(k, v, ttl_s) (true, or
-- false when k exists), S.incr(k, n) (new value, from 0), and S.prefix (prepended to every key; nil: none).
-- A sequential call makes 8 store calls (now, mget, incr, add and one get to acquire; now, mget, set when done),
-- and done 2 or 3 more when the answer's Remaining says the window is in use (the first slot whose window may not
-- have ended is read, and moved past when it has; and when our sends in the window were last counted in full).
-- Slot values: > 0 the time its window ends; < 0 in flight, -(the time it ends at the latest, should its sender
-- die); 0 cancelled (never sent).

local ALGO = [==[
local S = ...
local A = {}
local floor, min, max = math.floor, math.min, math.max
local unpack = table.unpack or unpack
local SLACK = 0.05       -- a server that rounds to whole ms refuses a send made exactly at the window's end
local PROBE_TTL = 30     -- a lost probe (its sender died) frees the learning after this
local DAILY_PROBE = 60   -- with the daily budget spent, one send a minute asks whether a new day began
local MAX_WAIT = 3600
local MAX_SCAN = 1000
local DOCUMENTED_MAX = 100 -- an answer that says nothing of the limits: the documented 100 per 10 s
local OVER = 0.001       -- the time to live that ends a key at once
-- Keys: P .. name (a shared dict, Redis), or the bare name or number (a Lua table: P is nil). Inlined as
-- `P and P .. k or k` where a call is made per send: each Lua function call costs about as much as the work.
local P = S.prefix
local function key(k) return P and P .. k or k end
local KQ, KM, KW, KF, KB, KP, KD = key("q"), key("m"), key("w"), key("f"), key("b"), key("p"), key("d")
-- KL: the lowest number whose window may not have ended (every one below it has, or never went): what
-- done's count of our own sends in the window starts from, so that it is not made again over every slot.
local KL = key("l")
-- KS: when done last made that count in full (it is made twice a window at least, whatever the bound says).
local KS = key("s")

-- The slot of send n may be taken by send n + B when its window has ended: the wait until then (0 = now).
-- f: the sends of other senders in the window (KF), as read with the limits.
local function gate(t, n, m, w, f)
  local b = m - (f or 0)
  if b < 1 then b = 1 end
  local k = n - b
  if k < 1 then return 0 end
  local kk = P and P .. k or k
  local v = S.get(kk)
  if v == nil then
    -- expired, or its owner has not written it yet: claim it as ended; if the owner was first, read it again
    if S.add(kk, 0, w + 1) then return 0 end
    v = S.get(kk) or 0
  end
  if v == 0 then return 0 end
  if v > 0 then return v > t and v - t or 0 end
  v = -v
  if v <= t then return 0 end        -- its sender died in flight; its window has ended at the latest now
  return min(w, v - t)               -- still in flight: it ends at least w after now, look again then
end

-- Number n will not be sent (its deadline comes first, or it is not in this round). Its slot takes the value
-- of the slot its gate waited for, so that n + B still waits for that one: without it, numbers given back in a
-- row would open the gate for sends while the earlier ones still count.
local function give_back(t, n, m, w, f)
  local b = m - (f or 0)
  if b < 1 then b = 1 end
  local v = n - b >= 1 and S.get(key(n - b)) or 0
  local left = (v > 0 and v) or (v < 0 and -v) or t
  S.set(key(n), v, max(left - t, 0) + w + 1)
end

-- acquire(n, count, tmo): n == 0 takes new numbers (up to count, as many as may go now, at least one);
-- n > 0 looks again at a number taken before. Returns wait, t, n1, n2, ...: wait == 0 when they may all go now,
-- else the seconds until n1 may (n1 stays taken: its owner must look again or cancel); t is the store's clock.
-- Max and the interval (m, w: nil m before any answer said them), the block, the daily count and the others'
-- sends are read at once (one MGET in Redis).
function A.acquire(n, count, tmo)
  local t = S.now()
  local m, w, b, d, f = S.mget(KM, KW, KB, KD, KF)
  w = (w or 10000) / 1000
  local bw = b and b > t and min(b - t, MAX_WAIT) or 0
  local pend = -(t + tmo + w + SLACK)
  local ttl = tmo + w + 2
  if n > 0 then
    local g = bw > 0 and bw or gate(t, n, m or 1, w, f)
    S.set(P and P .. n or n, pend, ttl) -- still ours, in flight from now at the latest
    return g, t, n
  end
  if bw > 0 then return bw, t end
  if not m then
    -- nothing learned yet: one request goes alone to learn the limits, the others wait for its answer
    if not S.add(KP, 1, PROBE_TTL) then return 0.02, t end
    count = 1
    m = 1
  end
  if d and d <= 0 then
    S.set(KB, t + DAILY_PROBE, DAILY_PROBE + 1)
    S.set(KD, 1, DAILY_PROBE + 1)     -- the probe a minute from now may go
    return DAILY_PROBE, t
  end
  if count == 1 then -- the loop below for one number, without its list (a sequential call's case)
    local k = S.incr(KQ, 1)
    if not S.add(P and P .. k or k, pend, ttl) then
      k = S.incr(KQ, 1)              -- a gate claimed this number as ended: take the next one
      S.set(P and P .. k or k, pend, ttl)
    end
    local g = gate(t, k, m, w, f)
    if d then S.incr(KD, -1) end
    return g, t, k
  end
  local out = { 0, t }
  for i = 1, count do
    local k = S.incr(KQ, 1)
    if not S.add(P and P .. k or k, pend, ttl) then
      k = S.incr(KQ, 1)
      S.set(P and P .. k or k, pend, ttl)
    end
    local g = gate(t, k, m, w, f)
    if g > 0 and i > 1 then
      give_back(t, k, m, w, f)       -- not this round
      break
    end
    out[#out + 1] = k
    if g > 0 then out[1] = g break end
  end
  if d then S.incr(KD, -(#out - 2)) end
  return unpack(out)
end

-- cancel(n): send n will not go (its deadline came first).
function A.cancel(n)
  local t = S.now()
  local m, w, f = S.mget(KM, KW, KF)
  give_back(t, n, m or 1, (w or 10000) / 1000, f)
end

-- done(n, ta, status, remaining, interval_ms, retry_after, max, daily_remaining): the answer to send n (sent at
-- ta on this store's clock; ta <= 0: unknown) came. Each argument from the answer may be -1 (absent).
function A.done(n, ta, status, rem, int_ms, ra, mx, dr)
  local t = S.now()
  local m, w, f, q, l = S.mget(KM, KW, KF, KQ, KL)
  w = (w or 10000) / 1000
  local learning = not m
  if int_ms > 0 and int_ms ~= w * 1000 then
    w = int_ms / 1000
    S.set(KW, int_ms, 86400)
  end
  S.set(P and P .. n or n, t + w + SLACK, w + 1)
  if mx > 0 then
    if mx ~= m then S.set(KM, mx, 86400) end
    m = mx
  elseif not m then
    if status ~= 429 then S.set(KM, DOCUMENTED_MAX, 86400) m = DOCUMENTED_MAX end -- the answer said nothing
  end
  if learning then S.set(KP, 0, OVER) end -- the probe is over (if it taught nothing, the next send probes)
  q = q or n
  if dr >= 0 then S.set(KD, dr - (q - n), 86400) end
  if status == 429 then
    local until_t = t + min(ra >= 0 and ra or ((rem == 0 and w) or 1), MAX_WAIT)
    local b = S.get(KB)
    if not b or until_t > b then S.set(KB, until_t, min(until_t - t, MAX_WAIT) + 1) end
  end
  if rem >= 0 and m then
    -- More counted by the server than our own sends could explain: others spend the same budget.
    local used = m - rem
    f = f or 0
    if used > f + (q - n + 1) then
      local lo = max(1, n - m + 1, q - MAX_SCAN)
      local since = ta > 0 and ta or (t - w)
      -- Our sends that can be in the window are at most the numbers from the first whose window has not ended:
      -- when those and the others' known sends explain `used`, nothing new is learned, and the count is not made
      -- (a sender alone on its budget would otherwise read every slot of the window on every answer). The first
      -- such number moves up as windows end: about one slot read per answer. Exact for sends made one after
      -- another. With sends in flight together the bound can be high: windows end out of order, and a send that
      -- hangs (or whose sender died) holds it where it is. So the count is still made in full twice a window at
      -- least, and others' sends go unseen for half a window at the most (a 429 still stops every sender). A bound
      -- too low (a number above n, after answers out of order) only makes the count be made.
      local k0 = l and l > lo and l or lo
      while k0 < n do
        local v = S.get(P and P .. k0 or k0)
        if v == nil or v == 0 or (v > 0 and v <= since) then k0 = k0 + 1 else break end
      end
      if k0 > (l or 0) then S.set(KL, k0, 86400) end
      if used <= f + (q - k0 + 1) then
        local last = S.get(KS)
        if last and t - last < w / 2 then return 0 end
      end
      S.set(KS, t, w / 2 + 1)
      local own = 0
      for k = lo, q do
        local v = S.get(key(k))
        if v and (v < 0 or v > since) then own = own + 1 end
      end
      local foreign = used - own
      if foreign > f then S.set(KF, min(foreign, m), w + SLACK) end
    end
  end
  return 0
end

-- done_round(a): the answers of one batch round, all sent at a[1] (ta): a = { ta, rem, int_ms, max, daily_remaining,
-- n1, status1, retry_after1, n2, status2, retry_after2, ... }. The same as done for each number in turn, the round's
-- Remaining and the session's figures going with the first (the round's earliest number): one store operation for
-- the round, so one EVALSHA in Redis instead of one per answer.
-- After the first, an answer that is no 429, once Max is known and the interval stored is the one it says, comes
-- down to done's one write: its slot's window ends Interval from now. Those are written with one clock reading and
-- one read of the limits for the round (the answers all came before it); any other goes through done itself.
function A.done_round(a)
  local ta, rem, int_ms, mx, dr = a[1], a[2], a[3], a[4], a[5]
  A.done(a[6], ta, a[7], rem, int_ms, a[8], mx, dr)
  local t, m, w
  for i = 9, #a, 3 do
    if not t then
      t = S.now()
      m, w = S.mget(KM, KW)
      w = (w or 10000) / 1000
    end
    local status = a[i + 1]
    if m and status ~= 429 and not (int_ms > 0 and int_ms ~= w * 1000) then
      local n = a[i]
      S.set(P and P .. n or n, t + w + SLACK, w + 1)
    else
      A.done(a[i], ta, status, -1, int_ms, a[i + 2], -1, -1)
      t = nil -- read again after done's writes
    end
  end
  return 0
end

-- wait(): how long a new send would wait now (for client:rate_limit()).
function A.wait()
  local t = S.now()
  local m, w, b, q, f = S.mget(KM, KW, KB, KQ, KF)
  if b and b > t then return min(b - t, MAX_WAIT) end
  if not m then return 0 end
  return gate(t, (q or 0) + 1, m, (w or 10000) / 1000, f)
end

-- The constants, for the C core's writing of acquire and done over its own store (csrc/lstore.c, S.tune).
A.CONSTANTS = { SLACK, MAX_WAIT, MAX_SCAN, DOCUMENTED_MAX, OVER }
return A
]==]

local load_chunk = loadstring or load -- luacheck: ignore 113 (Lua 5.1's load takes a function)

-- The algorithm over a local store: the ops table, or raises on a store failure (caught by the handle). The C
-- core's store also runs a call's acquire and done itself (S.acquire1, S.done1, S.done_round1: csrc/lstore.c),
-- given this source's constants.
local algo_chunk -- ALGO compiled once (0.6 ms); each call of it makes one algorithm's own closures over its store
local function algorithm(store)
  if not algo_chunk then algo_chunk = assert(load_chunk(ALGO, "=leadconnector.limiter")) end
  local A = algo_chunk(store)
  if store.tune then store.tune(unpack(A.CONSTANTS)) end
  return A
end

--------------------------------------------------------------------------------------------------------------------
-- Stores.

-- One Lua state: named keys (q, m, w, ...) with an expiry each, and the numbered slots in a ring that grows with
-- the slots still in their windows (nothing swept). Two writings of this one store, chosen by the interpreter:
-- on PUC Lua the C core's (csrc/lstore.c: a Lua table cost twice the instructions per call); on LuaJIT this Lua
-- one, which the JIT compiles, where calls into a C function through the Lua API stop its traces (measured inside
-- nginx: the limiter's share of a get_message 2,700 instructions on this store, 7,000 on the C one).
-- Every operation of the algorithm starts with S.now(): the time read there serves the whole operation.
-- clock: a function giving the time (default core.now's clock; the tests give their own).
local function lua_store(clock)
  local now = clock or now
  local vals, exps = {}, {}
  local R, rk, rv, re
  local function ring(size) -- filled, so that the three lists are arrays (a place is free when rk is false)
    local k, v, e = {}, {}, {}
    for i = 1, size do k[i], v[i], e[i] = false, 0, 0 end
    return k, v, e
  end
  R = 64
  rk, rv, re = ring(R)
  local cur = now()
  local S = {}
  function S.now() cur = now() return cur end
  local function grow() -- twice the places, the live slots moved over
    local ok_, ov, oe, old = rk, rv, re, R
    R = R * 2
    rk, rv, re = ring(R)
    for i = 1, old do
      local k = ok_[i]
      if k and oe[i] > cur then
        local j = k % R + 1
        rk[j], rv[j], re[j] = k, ov[i], oe[i]
      end
    end
  end
  function S.get(k)
    if type(k) == "number" then
      if k < 1 then return nil end
      local i = k % R + 1
      if rk[i] == k and re[i] > cur then return rv[i] end
      return nil
    end
    local e = exps[k]
    if e ~= nil and e > cur then return vals[k] end
    return nil
  end
  -- named keys only: the lookups written out, one call for up to five (an expired one reads as absent)
  function S.mget(a, b, c, d, e)
    local ea, eb, ec, ed, ee = exps[a], exps[b], c and exps[c], d and exps[d], e and exps[e]
    return ea and ea > cur and vals[a] or nil, eb and eb > cur and vals[b] or nil,
      ec and ec > cur and vals[c] or nil, ed and ed > cur and vals[d] or nil, ee and ee > cur and vals[e] or nil
  end
  -- set and add, written out (each is on a sequential call's path)
  function S.set(k, v, ttl)
    if type(k) ~= "number" then
      vals[k], exps[k] = v, cur + ttl
      return true
    end
    local i = k % R + 1
    local ki = rk[i]
    while ki and ki ~= k and re[i] > cur do -- another live slot here: a ring twice the size
      grow()
      i = k % R + 1
      ki = rk[i]
    end
    rk[i], rv[i], re[i] = k, v, cur + ttl
    return true
  end
  function S.add(k, v, ttl)
    if type(k) ~= "number" then
      local e = exps[k]
      if e ~= nil and e > cur then return false end
      vals[k], exps[k] = v, cur + ttl
      return true
    end
    local i = k % R + 1
    local ki = rk[i]
    while ki and ki ~= k and re[i] > cur do
      grow()
      i = k % R + 1
      ki = rk[i]
    end
    if ki == k and re[i] > cur then return false end
    rk[i], rv[i], re[i] = k, v, cur + ttl
    return true
  end
  function S.ring_size() return R end -- the places of the ring (for the tests: memory follows the live slots)
  function S.incr(k, n)
    local e = exps[k]
    if e == nil or e <= cur then
      vals[k], exps[k] = n, math.huge
      return n
    end
    local v = vals[k] + n
    vals[k] = v
    return v
  end
  return S
end

local function c_store(clock) return core.limit_store(clock) end
local table_store = jit and lua_store or c_store -- luacheck: ignore 113 (jit: LuaJIT's module)

-- One nginx: a lua_shared_dict. Only atomic operations: incr, add, and set of the caller's own slot; none that
-- evicts (safe_add, safe_set), so a full dict is a failure of the store, never a forgotten send.
local function shdict_store(dict, prefix)
  local update_time, ngx_now = ngx.update_time, ngx.now
  local S = { prefix = prefix }
  function S.now() update_time() return ngx_now() end
  local function get(k)
    local v, err = dict:get(k)
    if v == nil and err then error("shared dict: " .. tostring(err), 0) end
    return v
  end
  S.get = get
  function S.mget(a, b, c, d, e)
    return get(a), get(b), c and get(c), d and get(d), e and get(e)
  end
  -- safe_set / safe_add: a full dict fails (and the limiter falls back to its local budget, logged) rather than
  -- evicting another send's slot, which would make the gate forget a send that still counts
  function S.set(k, v, ttl)
    local ok, err = dict:safe_set(k, v, ttl)
    if not ok then error("shared dict: " .. tostring(err), 0) end
    return true
  end
  function S.add(k, v, ttl)
    local ok, err = dict:safe_add(k, v, ttl)
    if ok then return true end
    if err == "exists" then return false end
    error("shared dict: " .. tostring(err), 0)
  end
  -- incr of an existing number changes it in place; a missing one is first made by safe_add (an incr with init
  -- could evict slots of sends that still count to make room)
  function S.incr(k, n)
    local v, err = dict:incr(k, n)
    if not v and err == "not found" then
      local ok, aerr = dict:safe_add(k, 0)
      if not ok and aerr ~= "exists" then error("shared dict: " .. tostring(aerr), 0) end
      v, err = dict:incr(k, n)
    end
    if not v then error("shared dict: " .. tostring(err), 0) end
    return v
  end
  return S
end

-- The script Redis runs: the same algorithm over redis.call, on Redis's clock. KEYS[1] is the key prefix (one
-- hash tag, so every key of one budget lives on one cluster slot); ARGV[1] the operation, then its arguments.
local REDIS_PRELUDE = [==[
local P = KEYS[1]
local S = { prefix = P }
function S.now() local t = redis.call('TIME') return tonumber(t[1]) + tonumber(t[2]) / 1e6 end
function S.get(k) local v = redis.call('GET', k) if v then return tonumber(v) end return nil end
function S.mget(...)
  local ks = { ... }
  local n = select('#', ...)
  while n > 0 and ks[n] == nil do n = n - 1 end
  local vs = redis.call('MGET', unpack(ks, 1, n))
  local out = {}
  for i = 1, n do out[i] = vs[i] and tonumber(vs[i]) or nil end
  return unpack(out, 1, 5)
end
local function ms(ttl) return math.max(1, math.floor(ttl * 1000)) end
local function str(v) return string.format('%.17g', v) end
function S.set(k, v, ttl) redis.call('SET', k, str(v), 'PX', ms(ttl)) return true end
function S.add(k, v, ttl) return redis.call('SET', k, str(v), 'NX', 'PX', ms(ttl)) ~= false end
function S.incr(k, n) return redis.call('INCRBY', k, n) end
local A = (function(...)
]==]
local REDIS_ENTRY = [==[
end)(S)
local op = ARGV[1]
local a = {}
for i = 2, #ARGV do a[i - 1] = tonumber(ARGV[i]) end
local r
if op == 'acquire' then r = { A.acquire(a[1], a[2], a[3]) }
elseif op == 'done' then r = { A.done(a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8]) }
elseif op == 'done_round' then r = { A.done_round(a) }
elseif op == 'cancel' then A.cancel(a[1]) r = { 0 }
elseif op == 'wait' then r = { A.wait() }
else return redis.error_reply('leadconnector limiter: unknown operation') end
-- Redis turns Lua numbers into integers: the waits go back as strings
for i = 1, #r do r[i] = string.format('%.17g', r[i]) end
return r
]==]
local REDIS_SCRIPT = REDIS_PRELUDE .. ALGO .. REDIS_ENTRY

--------------------------------------------------------------------------------------------------------------------
-- Logging: nginx's error log inside nginx, stderr elsewhere; a backend may be given its own `log` function.

local function default_log(msg)
  if in_nginx and ngx.log then
    ngx.log(ngx.WARN, msg)
  else
    io.stderr:write("leadconnector: ", msg, "\n")
  end
end

--------------------------------------------------------------------------------------------------------------------
-- A handle: one budget (one key), as a client uses it.
--
--   h:acquire(stop_at, sleep, tmo, count) -> ta, n1, n2, ... (the numbers that may go now, taken at ta) |
--                                            nil, wait (the wait would pass stop_at; nothing is held)
--   h:done(n, ta, status, remaining, interval_ms, retry_after, session)
--   h:wait() -> seconds a new send would wait now

local Handle = {}
Handle.__index = Handle

-- Plausible values from an answer; anything else is treated as absent (issue 10 item 5: no server-given number
-- may block a token for longer than the server could mean).
local MAX_WAIT_MS = M.MAX_WAIT * 1000
local function sane_max(m) return m and m >= 1 and m <= 1e6 and floor(m) or nil end
local function sane_wait(s) if s and s >= 0 then return min(s, M.MAX_WAIT) end return nil end
-- Remaining counts requests: a fraction ("2.5") would make the others' sends, and so the slot numbers the gate
-- reads, fractions (the C store refuses those: the call would raise). Called only for one (r % 1 ~= 0).
local function sane_remaining(r) if r >= 0 then return floor(r) end return nil end

-- Runs op on the backend's store; on a failure switches to the local fallback budget (logged once).
local function run(self, op, ...)
  local b = self.backend
  if b.failed_at then
    local t = now()
    if t < b.probe_at then return nil end
    b.probe_at = t + b.probe_interval -- one probe per interval
  end
  local res = { pcall(b.exec, b, self, op, ...) }
  if res[1] then
    if b.failed_at then
      b.failed_at = nil
      b.log(format("limiter %s: the shared store answers again; back to the shared budget", b.name))
    end
    return unpack(res, 2)
  end
  if not b.failed_at then
    b.failed_at = now()
    b.probe_at = b.failed_at + b.probe_interval
    if not b.logged then
      b.logged = true
      b.log(format("limiter %s: the shared store failed (%s); sending on a local budget of %g of the limit " ..
        "until it answers again (this is said once)", b.name, tostring(res[2]), b.share))
    end
  end
  return nil
end

-- The local budget while the shared store fails: the same algorithm on a table, with Max cut to share.
local function fallback(self)
  local f = self.fb
  if not f then
    local st = table_store()
    f = algorithm(st)
    self.fb, self.fb_store = f, st
  end
  local m = self.max_seen or M.DEFAULT_MAX
  local cut = floor(m * self.backend.share)
  if cut < 1 then cut = 1 end
  self.fb_store.set("m", cut, 86400)
  if self.interval_seen then self.fb_store.set("w", self.interval_seen, 86400) end
  return f
end

-- Runs op on the shared store, or on the fallback when use_fb (or when the store fails now). Returns
-- used_fallback, then op's results.
local function call_op(self, use_fb, op, ...)
  if not use_fb then
    local r = { run(self, op, ...) }
    if r[1] ~= nil then return false, unpack(r) end
  end
  return true, fallback(self)[op](...)
end

--- Takes `count` (default 1) send numbers that may go now, waiting (with sleep) as long as stop_at allows.
-- Returns ta (the store's clock when they were taken), then the tickets (negative: taken on the fallback budget);
-- or nil and the wait that would have passed stop_at (then nothing is held).
function Handle:acquire(stop_at, sleep, tmo, count)
  local algo = self.algo
  if algo then -- one Lua state: nothing can fail, no need for the store's bookkeeping
    count = count or 1
    if count == 1 then
      -- the C store's own writing of acquire(0, 1, tmo); nothing when the algorithm's rarer branches are due
      local a1, wait, ta, n = self.acquire1
      if a1 then wait, ta, n = a1(tmo) end
      if wait == nil then wait, ta, n = algo.acquire(0, 1, tmo) end
      while wait > 0 do
        if now() + wait > stop_at then
          if n then algo.cancel(n) end
          return nil, wait
        end
        sleep(wait)
        wait, ta, n = algo.acquire(n or 0, 1, tmo)
      end
      return ta, n
    end
    -- a batch round: wait, ta, n1, n2, ...; while it must wait, only n1 is held, and looked at again alone
    local a1, r = self.acquire1
    if a1 then r = { a1(tmo, count) } end
    if not (r and r[1]) then r = { algo.acquire(0, count, tmo) } end
    while r[1] > 0 do
      local wait, n = r[1], r[3]
      if now() + wait > stop_at then
        if n then algo.cancel(n) end
        return nil, wait
      end
      sleep(wait)
      r = { algo.acquire(n or 0, n and 1 or count, tmo) }
    end
    return unpack(r, 2)
  end
  local n, fb = 0, false
  while true do
    local r = { call_op(self, n ~= 0 and fb, "acquire", n, n ~= 0 and 1 or (count or 1), tmo) }
    local used_fb, wait = r[1], r[2]
    if n ~= 0 and used_fb ~= fb then
      n, wait = 0, 0 -- the number was taken on the store that just failed: take a new one on the fallback
    elseif wait <= 0 and r[4] then
      if used_fb then
        for i = 4, #r do r[i] = -r[i] end
      end
      return unpack(r, 3)
    else
      n, fb = r[4] or 0, used_fb
    end
    if wait > 0 then
      if now() + wait > stop_at then
        if n ~= 0 then call_op(self, fb, "cancel", n) end
        return nil, wait
      end
      sleep(wait)
    end
  end
end

-- What `count` new answers (one of them a 429 when saw_429) tell the store besides their statuses: Max and the
-- daily count from the session (read on the first answer, after a 429 or Remaining 0, and every 32nd answer),
-- and the interval when plausible; -1 for each one not told.
local function answer_figures(self, count, saw_429, remaining, interval_ms, session)
  local mx, dr, int = -1, -1, -1
  local k = self.answers
  self.answers = k + count
  -- (k % 32 + count >= 32: a multiple of 32 lies in k + 1 .. k + count)
  if session and (not self.max_seen or saw_429 or remaining == 0 or k % 32 + count >= 32) then
    local rl = session:rate_limit()
    mx, dr = sane_max(rl.max) or -1, rl.daily_remaining or -1
    if mx > 0 then self.max_seen = mx end
  end
  if interval_ms and interval_ms > 0 and interval_ms <= MAX_WAIT_MS then
    int = interval_ms
    self.interval_seen = int
  end
  return mx, dr, int
end

--- The answer to ticket n (taken at ta) came: status is the HTTP status of an error answer (nil for a success
-- or when no answer came), then what its headers said (nil where absent). session: for Max and the daily count.
function Handle:done(n, ta, status, remaining, interval_ms, retry_after, session)
  if remaining and remaining % 1 ~= 0 then remaining = sane_remaining(remaining) end
  local mx, dr, int = answer_figures(self, 1, status == 429, remaining, interval_ms, session)
  local ra = retry_after and sane_wait(retry_after) or -1
  local algo = self.algo
  if algo then
    local st, rem, d1 = status or (remaining and 200) or 0, remaining or -1, self.done1
    if not (d1 and d1(n, ta, st, rem, int, ra, mx, dr)) then algo.done(n, ta, st, rem, int, ra, mx, dr) end
    return
  end
  local fb = n < 0
  if fb then mx = -1 end -- the fallback keeps its reduced Max
  call_op(self, fb, "done", fb and -n or n, ta, status or (remaining and 200) or 0, remaining or -1, int, ra, mx, dr)
end

--- The answers of one batch round came (tickets taken together at ta): list = { n1, status1, retry_after1, ... },
-- status false/nil for a success or when no answer came, retry_after false/nil where absent; remaining and
-- interval_ms what the round's answers said (the smallest Remaining), session as for done. The same as done for
-- each, in order (Remaining and the session's figures with the first), in one store operation. A round holds at
-- most the batch's 256 calls: 5 + 3 x 256 script arguments, far inside what Redis's Lua can unpack (8,000).
function Handle:done_round(ta, list, remaining, interval_ms, session)
  if remaining and remaining % 1 ~= 0 then remaining = sane_remaining(remaining) end
  local count = #list / 3
  if count == 0 then return end
  local saw_429 = false
  for i = 2, #list, 3 do if list[i] == 429 then saw_429 = true break end end
  local mx, dr, int = answer_figures(self, count, saw_429, remaining, interval_ms, session)
  local r1 = self.done_round1 -- the C store's own writing; nothing when a 429 is in the round
  if r1 and r1(ta, list, remaining or -1, int, mx, dr) then return end
  local fb = list[1] < 0
  if fb then mx = -1 end -- the fallback keeps its reduced Max
  local a = { ta, remaining or -1, int, mx, dr }
  local j = 5
  for i = 1, #list, 3 do
    local n, status, ra = list[i], list[i + 1], list[i + 2]
    a[j + 1] = fb and -n or n
    a[j + 2] = status or (i == 1 and remaining and 200) or 0
    a[j + 3] = ra and sane_wait(ra) or -1
    j = j + 3
  end
  if self.algo then
    self.algo.done_round(a)
  else
    call_op(self, fb, "done_round", a)
  end
end

function Handle:cancel(n)
  if self.algo then return self.algo.cancel(n) end
  local fb = n < 0
  call_op(self, fb, "cancel", fb and -n or n)
end

function Handle:wait()
  if self.algo then return self.algo.wait() end
  local _, w = call_op(self, false, "wait")
  return w or 0
end

--------------------------------------------------------------------------------------------------------------------
-- Backends. Each has bind(base_url, token) -> handle, and exec(handle, op, ...) running op on its store.

local Backend = {}
Backend.__index = Backend

local function new_backend(name, opts, exec)
  opts = opts or {}
  if type(opts) ~= "table" then error("leadconnector.limiter: options must be a table", 3) end
  local share = opts.fallback_share or 0.25
  if type(share) ~= "number" or not (share > 0 and share <= 1) then
    error("leadconnector.limiter: fallback_share must be a number in (0, 1]", 3)
  end
  local probe = opts.probe_interval or 1
  if type(probe) ~= "number" or not (probe > 0 and probe < 86400) then
    error("leadconnector.limiter: probe_interval must be a number of seconds > 0", 3)
  end
  if opts.key ~= nil and (type(opts.key) ~= "string" or opts.key == "") then
    error("leadconnector.limiter: key must be a non-empty string", 3)
  end
  if opts.log ~= nil and type(opts.log) ~= "function" then error("leadconnector.limiter: log must be a function", 3) end
  return setmetatable({
    name = name, exec = exec, share = share, probe_interval = probe, key = opts.key, log = opts.log or default_log,
    handles = setmetatable({}, { __mode = "v" }),
  }, Backend)
end

-- The budget's key: the one given, or one per API host and token (hashed: the token is never stored).
local function budget_key(self, base_url, token)
  return self.key or core.sha1_hex(base_url .. "\0" .. token):sub(1, 24)
end

function Backend:bind(base_url, token)
  local key = budget_key(self, base_url, token)
  local h = self.handles[key]
  if not h then
    h = setmetatable({ backend = self, key = key, answers = 0 }, Handle)
    if self.setup then self.setup(h) end
    self.handles[key] = h
  end
  return h
end

--- One Lua state (the default outside nginx): every client of one token in this state shares one budget.
function M.process(opts)
  local b = new_backend("process", opts, function(_, h, op, ...) return h.algo[op](...) end)
  b.setup = function(h)
    local st = table_store()
    h.algo = algorithm(st)
    h.acquire1, h.done1, h.done_round1 = st.acquire1, st.done1, st.done_round1 -- the C store's alone
  end
  return b
end

--- Every worker of one nginx: a lua_shared_dict (`lua_shared_dict leadconnector_limits 1m;` holds thousands of
-- budgets).
function M.shdict(name, opts)
  if type(name) ~= "string" then error("leadconnector.limiter.shdict expects the name of a lua_shared_dict", 2) end
  local dict = in_nginx and ngx.shared and ngx.shared[name]
  if not dict then
    error(("leadconnector.limiter.shdict: no lua_shared_dict %s (add `lua_shared_dict %s 1m;` to nginx's http " ..
      "block)"):format(name, name), 2)
  end
  local b = new_backend("shdict:" .. name, opts, function(_, h, op, ...) return h.shared[op](...) end)
  b.setup = function(h) h.shared = algorithm(shdict_store(dict, "lc:" .. h.key .. ":")) end
  return b
end

--- Every machine: Redis. opts: host, port, password, db (as leadconnector.redis.connect), timeout_ms (default
-- 100: the store's time limit for connect and each reply), prefix (default "lc:limit:"), and the common
-- fallback_share, probe_interval, key, log.
function M.redis(opts)
  if type(opts) ~= "table" then error("leadconnector.limiter.redis expects a table of options", 2) end
  local tmo_ms = opts.timeout_ms or 100
  if type(tmo_ms) ~= "number" or not (tmo_ms >= 1 and tmo_ms <= 60000) then
    error("leadconnector.limiter.redis: timeout_ms must be a number of milliseconds, 1..60000", 2)
  end
  local prefix = opts.prefix or "lc:limit:"
  if type(prefix) ~= "string" then error("leadconnector.limiter.redis: prefix must be a string", 2) end
  local copts = { host = opts.host, port = opts.port, password = opts.password, db = opts.db, timeout = tmo_ms / 1000 }
  local redis = require "leadconnector.redis"
  local conn -- plain Lua: one connection kept open; in nginx one from the pool per operation
  local function exec(_, h, op, ...)
    local args = { op, ... }
    if op == "done_round" then args = { op, unpack(args[2]) } end -- its one argument, a list, as ARGV
    for i = 2, #args do args[i] = format("%.17g", args[i]) end
    local c, err
    local pooled = in_nginx and require("leadconnector.ngx").cosockets_allowed()
    if pooled then
      c, err = redis.connect(copts)
    else
      if not conn then conn, err = redis.connect(copts) end
      c = conn
    end
    if not c then error(err, 0) end
    local v
    v, err = c:script(REDIS_SCRIPT, { h.redis_key }, args)
    if pooled then c:close() end
    if v == nil then
      if not pooled and err and (err:find("^timeout") or err:find("^network")) then conn = nil end
      error(err, 0)
    end
    for i = 1, #v do v[i] = tonumber(v[i]) end
    return unpack(v)
  end
  local b = new_backend("redis", opts, exec)
  b.setup = function(h) h.redis_key = "{" .. prefix .. h.key .. "}:" end
  return b
end

local process_default
--- The backend a client gets without a `limiter` option: inside nginx the shared dict leadconnector_limits when
-- nginx.conf has one, else one per Lua state.
function M.default()
  if in_nginx and ngx.shared and ngx.shared.leadconnector_limits then
    if not M._shdict_default then M._shdict_default = M.shdict("leadconnector_limits") end
    return M._shdict_default
  end
  if not process_default then process_default = M.process() end
  return process_default
end

function M.is_backend(v) return getmetatable(v) == Backend end

M._ALGO, M._REDIS_SCRIPT, M._table_store, M._stores = ALGO, REDIS_SCRIPT, table_store, { lua = lua_store, c = c_store }
return M

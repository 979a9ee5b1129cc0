-- The sandbox's OAuth 2.0 endpoints (API.md §6, reference/oauth.openapi.json):
--   POST /oauth/token              grant_type authorization_code | refresh_token, form-urlencoded
--   POST /oauth/locationToken      a location's token from a Company (agency) token
--   GET  /oauth/installedLocations where the app is installed, for a Company token
-- Refresh tokens are single-use and rotating: each refresh answers a new pair and retires the token used; a
-- retired, unknown or revoked one is refused. Access tokens expire after expires_in seconds (--oauth-expires,
-- or POST /_sandbox/oauth/config). Everything lives in the lua_shared_dict lcsb_oauth, so every nginx worker sees
-- the same tokens, and the claim of a refresh token is one atomic incr (two workers racing with one refresh
-- token: exactly one wins).
--
-- Error answers (the vendor spec names only BadRequestDTO / UnauthorizedDTO / UnprocessableDTO; the words are
-- ours, plausible and stable):
--   422 {"statusCode":422,"message":["client_id should not be empty", ...],"error":"Unprocessable Entity"}
--   401 {"statusCode":401,"message":"Invalid client credentials","error":"Unauthorized"}
--   400 {"statusCode":400,"message":"Invalid grant: refresh token is invalid or was already used","error":"invalid_grant"}
--   400 {"statusCode":400,"message":"Invalid grant: authorization code is invalid or was already used","error":"invalid_grant"}
--   400 {"statusCode":400,"message":"Unsupported grant_type ...","error":"unsupported_grant_type"}
--   401 (locationToken, installedLocations) the API's usual "Invalid token: access token is invalid"
--
-- Control endpoints (loopback only, like the others):
--   POST /_sandbox/oauth/code    {locationId?, companyId?, userType? ("Location"|"Company"), redirect_uri?,
--                                 client_id?, locations? (a Company's installed locations)} -> {code}
--   GET  /_sandbox/oauth/stats[?refresh_token=T] -> {token_requests, refreshes, refused, location_tokens,
--                                 codes, uses (times T was presented for a refresh; with the query only)}
--   POST /_sandbox/oauth/config  {expires_in = S} (seconds, > 0) -> the config
--   POST /_sandbox/oauth/revoke  {access_token = T} | {refresh_token = T} -> {revoked = true|false}
local json = require "lcsandbox.json"

local ngx = ngx
local type, pairs, ipairs, tostring, tonumber, next = type, pairs, ipairs, tostring, tonumber, next
local find, lower, format = string.find, string.lower, string.format

local M = {}

local clients = { ["sandbox-client"] = "sandbox-secret" }
local default_expires = 86399
local SCOPE = "conversations.readonly conversations.write conversations/message.readonly conversations/message.write"

-- The shared dict (every worker), or a table with the same few methods when the config has none.
local function table_dict()
  local t = {}
  return {
    get = function(_, k) return t[k] end,
    set = function(_, k, v) t[k] = v return true end,
    add = function(_, k, v) if t[k] ~= nil then return false, "exists" end t[k] = v return true end,
    delete = function(_, k) t[k] = nil end,
    incr = function(_, k, n, init) t[k] = (t[k] or init or 0) + n return t[k] end,
    flush_all = function() t = {} end,
  }
end
local D

local function dict()
  if not D then D = (ngx.shared and ngx.shared.lcsb_oauth) or table_dict() end
  return D
end

function M.init()
  local cl = os.getenv("LCSB_OAUTH_CLIENTS")
  if cl and cl ~= "" then
    clients = {}
    for line in cl:gmatch("[^\n]+") do
      local id, secret = line:match("^([^\t]+)\t(.+)$")
      if id then clients[id] = secret end
    end
  end
  local e = tonumber(os.getenv("LCSB_OAUTH_EXPIRES") or "")
  if e and e > 0 then default_expires = e end
end

local function expires_in() return dict():get("cfg:expires_in") or default_expires end

function M.reset() dict():flush_all() end

local function new_secret(prefix)
  local n = dict():incr("seq", 1, 0)
  return prefix .. ngx.md5(format("%s:%d:%s:%s", tostring(n), ngx.worker.pid(), tostring(ngx.now()),
    tostring(math.random()))) .. format("%x", n)
end

local function count(name) dict():incr("n:" .. name, 1, 0) end

local function put(key, t, ttl) return dict():set(key, json.encode(t), ttl or 0) end
local function take(key)
  local v = dict():get(key)
  return v and json.decode(v)
end

local function answer(status, t) return status, json.encode(t) end
local function unprocessable(msgs)
  return answer(422, { statusCode = 422, message = msgs, error = "Unprocessable Entity" })
end
local function bad_grant(what)
  count("refused")
  return answer(400, { statusCode = 400, error = "invalid_grant",
    message = "Invalid grant: " .. what .. " is invalid or was already used" })
end
local UNAUTHORIZED = { statusCode = 401, message = "Invalid token: access token is invalid", error = "Unauthorized" }

-- Issues an access token (and a refresh token unless `no_refresh`) for grant g = {loc, company, userType, client}.
local function issue(g, no_refresh)
  local life = expires_in()
  local at = new_secret("sbat_")
  put("at:" .. at, { loc = g.loc, company = g.company, userType = g.userType, exp = ngx.now() + life },
    life + 3600)
  local out = {
    access_token = at, token_type = "Bearer", expires_in = life, scope = SCOPE, userType = g.userType,
    companyId = g.company, userId = "user_sandbox",
  }
  if g.userType ~= "Company" then out.locationId = g.loc end
  if g.userType == "Company" then out.approvedLocations = json.array(take("inst:" .. tostring(g.company))) end
  if not no_refresh then
    local rt = new_secret("sbrt_")
    put("rt:" .. rt, { loc = g.loc, company = g.company, userType = g.userType, client = g.client })
    out.refresh_token = rt
  end
  return out
end

--- The location an access token the sandbox issued stands for (nil when unknown or expired), and its record.
function M.location_of(tok)
  local t = take("at:" .. tok)
  if not t or t.exp <= ngx.now() then return nil end
  return t.loc or t.company, t
end

local function form(hs, body)
  local ct = hs["content-type"]
  if type(ct) ~= "string" or not find(lower(ct), "^%s*application/x%-www%-form%-urlencoded") then return {} end
  local args = ngx.decode_args(body or "", 100) or {}
  for k, v in pairs(args) do
    if type(v) == "table" then args[k] = v[1] end
    if v == true then args[k] = "" end
  end
  return args
end

local function token_endpoint(f)
  count("token_requests")
  local missing = {}
  for _, k in ipairs { "client_id", "client_secret", "grant_type" } do
    if type(f[k]) ~= "string" or f[k] == "" then missing[#missing + 1] = k .. " should not be empty" end
  end
  if #missing > 0 then return unprocessable(missing) end
  if clients[f.client_id] == nil or clients[f.client_id] ~= f.client_secret then
    return answer(401, { statusCode = 401, message = "Invalid client credentials", error = "Unauthorized" })
  end
  if f.grant_type == "authorization_code" then
    if type(f.code) ~= "string" or f.code == "" then return unprocessable({ "code should not be empty" }) end
    local c = take("code:" .. f.code)
    -- single use: whoever deletes it first wins (a second exchange of the same code is refused)
    if not c or c.client ~= f.client_id or not dict():add("codeused:" .. f.code, true) then
      return bad_grant("authorization code")
    end
    if c.redirect_uri and c.redirect_uri ~= f.redirect_uri then
      return answer(400, { statusCode = 400, error = "invalid_grant", message = "redirect_uri does not match" })
    end
    dict():delete("code:" .. f.code)
    return answer(200, issue(c))
  elseif f.grant_type == "refresh_token" then
    if type(f.refresh_token) ~= "string" or f.refresh_token == "" then
      return unprocessable({ "refresh_token should not be empty" })
    end
    local rt = f.refresh_token
    -- Every presentation is counted; the first one claims the token (atomic across workers), later ones are
    -- refused, as the API refuses a reused refresh token.
    local uses = dict():incr("uses:" .. rt, 1, 0)
    local g = take("rt:" .. rt)
    if not g or g.revoked or g.client ~= f.client_id or uses ~= 1 then return bad_grant("refresh token") end
    count("refreshes")
    return answer(200, issue(g))
  end
  return answer(400, { statusCode = 400, error = "unsupported_grant_type",
    message = "Unsupported grant_type " .. tostring(f.grant_type) .. ": use authorization_code or refresh_token" })
end

local function company_token(hs)
  local auth = hs["authorization"]
  local tok = type(auth) == "string" and auth:match("^[Bb][Ee][Aa][Rr][Ee][Rr]%s+(%S+)%s*$")
  if not tok then return nil end
  local _, t = M.location_of(tok)
  if not t or t.userType ~= "Company" then return nil end
  return t
end

local function version_ok(hs)
  local v = hs["version"]
  return type(v) == "string" and find(v, "^%d%d%d%d%-%d%d%-%d%d$") ~= nil
end

--- Handles /oauth/*: status, body text (the caller logs and sends it, faults apply as to any API path).
function M.process(method, path, hs, read_body, e)
  if path == "/oauth/token" and method == "POST" then
    local body = read_body()
    e.raw_body = body
    return token_endpoint(form(hs, body))
  elseif path == "/oauth/locationToken" and method == "POST" then
    local body = read_body()
    e.raw_body = body
    local t = company_token(hs)
    if not t then return answer(401, UNAUTHORIZED) end
    if not version_ok(hs) then return answer(400, { statusCode = 400, message = "Version header was not found" }) end
    local f = form(hs, body)
    local missing = {}
    for _, k in ipairs { "companyId", "locationId" } do
      if type(f[k]) ~= "string" or f[k] == "" then missing[#missing + 1] = k .. " should not be empty" end
    end
    if #missing > 0 then return unprocessable(missing) end
    if f.companyId ~= t.company then
      return answer(400, { statusCode = 400, message = "companyId does not match the token's company" })
    end
    count("location_tokens")
    local out = issue({ loc = f.locationId, company = t.company, userType = "Location" }, true)
    out.userType, out.companyId = nil, nil
    return answer(200, out)
  elseif path == "/oauth/installedLocations" and method == "GET" then
    local t = company_token(hs)
    if not t then return answer(401, UNAUTHORIZED) end
    if not version_ok(hs) then return answer(400, { statusCode = 400, message = "Version header was not found" }) end
    local args = ngx.req.get_uri_args()
    local missing = {}
    for _, k in ipairs { "companyId", "appId" } do
      if type(args[k]) ~= "string" or args[k] == "" then missing[#missing + 1] = k .. " should not be empty" end
    end
    if #missing > 0 then return unprocessable(missing) end
    if args.companyId ~= t.company then
      return answer(400, { statusCode = 400, message = "companyId does not match the token's company" })
    end
    local locs = {}
    for i, id in ipairs(take("inst:" .. t.company) or {}) do
      locs[i] = { _id = id, name = "Location " .. id, address = "1 Sandbox Street", isInstalled = true }
    end
    local skip, limit = tonumber(args.skip) or 0, tonumber(args.limit) or 20
    local page = {}
    for i = skip + 1, math.min(#locs, skip + limit) do page[#page + 1] = locs[i] end
    return answer(200, { locations = json.array(page), count = #locs, installToFutureLocations = false })
  end
  return answer(404, { statusCode = 404, message = "Cannot " .. method .. " " .. path, error = "Not Found" })
end

--------------------------------------------------------------------------------------------------------------------
-- control endpoints: installed by app.lua into its table, answered with its ok/bad helpers.

function M.control(control, ok, bad, body)
  control["POST /_sandbox/oauth/code"] = function()
    local b, err = body()
    if not b then return bad(400, err) end
    local user_type = b.userType or "Location"
    if user_type ~= "Location" and user_type ~= "Company" then return bad(400, "userType must be Location or Company") end
    local client = b.client_id or next(clients)
    if not clients[client] then return bad(400, "unknown client_id") end
    local company = b.companyId or "comp_sandbox"
    local loc = user_type == "Location" and (b.locationId or "loc_sandbox") or nil
    local inst = take("inst:" .. company) or {}
    local have = {}
    for _, id in ipairs(inst) do have[id] = true end
    for _, id in ipairs(loc and { loc } or (type(b.locations) == "table" and b.locations or {})) do
      if not have[id] then inst[#inst + 1] = id have[id] = true end
    end
    put("inst:" .. company, inst)
    local code = new_secret("sbcode_")
    put("code:" .. code, { loc = loc, company = company, userType = user_type, client = client,
      redirect_uri = b.redirect_uri }, 600)
    count("codes")
    return ok(201, { code = code })
  end
  control["GET /_sandbox/oauth/stats"] = function()
    local d = dict()
    local out = {
      token_requests = d:get("n:token_requests") or 0, refreshes = d:get("n:refreshes") or 0,
      refused = d:get("n:refused") or 0, location_tokens = d:get("n:location_tokens") or 0,
      codes = d:get("n:codes") or 0, expires_in = expires_in(),
    }
    local rt = ngx.req.get_uri_args().refresh_token
    if type(rt) == "string" then out.uses = d:get("uses:" .. rt) or 0 end
    return ok(200, out)
  end
  control["POST /_sandbox/oauth/config"] = function()
    local b, err = body()
    if not b then return bad(400, err) end
    if b.expires_in ~= nil then
      if type(b.expires_in) ~= "number" or not (b.expires_in > 0) then return bad(400, "expires_in must be a number > 0") end
      dict():set("cfg:expires_in", b.expires_in)
    end
    return ok(200, { expires_in = expires_in() })
  end
  control["POST /_sandbox/oauth/revoke"] = function()
    local b, err = body()
    if not b then return bad(400, err) end
    local done = false
    if type(b.access_token) == "string" and dict():get("at:" .. b.access_token) then
      dict():delete("at:" .. b.access_token)
      done = true
    end
    if type(b.refresh_token) == "string" then
      local g = take("rt:" .. b.refresh_token)
      if g then
        g.revoked = true
        put("rt:" .. b.refresh_token, g)
        done = true
      end
    end
    return ok(200, { revoked = done })
  end
end

return M

-- Faults on demand: the next N API requests matching a method and path get a chosen misbehaviour.
-- Registered with POST /_sandbox/faults (see sandbox/README.md); matched in order of registration.
local json = require "lcsandbox.json"

local M = {}
local list = {}
local next_id = 1

M.ACTIONS = { drop = true, malformed = true, html502 = true, empty201 = true }

local function bad(msg) return nil, msg end

-- Checks and normalizes one fault spec. Returns the fault or nil, message.
function M.parse(t)
  if type(t) ~= "table" or t[1] ~= nil then return bad("a fault must be a JSON object") end
  local f = { count = 1 }
  if t.method ~= nil then
    if type(t.method) ~= "string" or t.method == "" then return bad("method must be a string") end
    f.method = t.method:upper()
  end
  if t.path ~= nil then
    if type(t.path) ~= "string" or t.path:sub(1, 1) ~= "/" then return bad("path must be a string starting with /") end
    f.path = t.path
  end
  if t.path_pattern ~= nil then
    if type(t.path_pattern) ~= "string" then return bad("path_pattern must be a string (a Lua pattern)") end
    local ok, err = pcall(string.find, "/", t.path_pattern)
    if not ok then return bad("path_pattern is not a valid Lua pattern: " .. tostring(err)) end
    f.path_pattern = t.path_pattern
  end
  if f.path and f.path_pattern then return bad("give path or path_pattern, not both") end
  if t.count ~= nil then
    if type(t.count) ~= "number" or t.count % 1 ~= 0 or (t.count < 1 and t.count ~= -1) then
      return bad("count must be a whole number >= 1, or -1 for every matching request")
    end
    f.count = t.count
  end
  if t.status ~= nil then
    if type(t.status) ~= "number" or t.status % 1 ~= 0 or t.status < 200 or t.status > 599 then
      return bad("status must be a whole number from 200 to 599")
    end
    f.status = t.status
  end
  if t.action ~= nil then
    if not M.ACTIONS[t.action] then return bad("action must be one of: drop, malformed, html502, empty201") end
    f.action = t.action
  end
  if t.body ~= nil and t.body ~= json.null then
    if type(t.body) == "string" then
      f.body = t.body
    elseif type(t.body) == "table" then
      f.body = json.encode(t.body)
      f.body_is_json = true
    else
      return bad("body must be a string or a JSON value")
    end
  end
  if t.content_type ~= nil then
    if type(t.content_type) ~= "string" then return bad("content_type must be a string") end
    f.content_type = t.content_type
  end
  if t.headers ~= nil then
    if type(t.headers) ~= "table" or t.headers[1] ~= nil then return bad("headers must be an object") end
    f.headers = {}
    for k, v in pairs(t.headers) do
      if type(v) ~= "string" and type(v) ~= "number" then return bad("header values must be strings or numbers") end
      if type(k) ~= "string" or k:find("[^%w%-_]") then return bad("bad header name") end
      f.headers[k] = tostring(v)
    end
  end
  if t.delay_ms ~= nil then
    if type(t.delay_ms) ~= "number" or t.delay_ms < 0 or t.delay_ms > 600000 then
      return bad("delay_ms must be a number from 0 to 600000")
    end
    f.delay_ms = t.delay_ms
  end
  if t.after ~= nil then
    if type(t.after) ~= "boolean" then return bad("after must be a boolean") end
    f.after = t.after
  end
  if f.action == "drop" and f.status then return bad("action drop sends no answer: do not give a status") end
  if (f.action == "drop" or f.action == "html502") and f.body then
    return bad("action " .. f.action .. " takes no body")
  end
  if not (f.status or f.action or f.delay_ms) then
    return bad("a fault needs status, action or delay_ms")
  end
  return f
end

function M.add(f)
  f.id = next_id
  next_id = next_id + 1
  f.remaining = f.count
  list[#list + 1] = f
  return f
end

function M.clear()
  local n = #list
  list = {}
  return n
end

function M.list() return list end

-- The first registered fault matching method and path, with one use taken from it; or nil.
function M.take(method, path)
  if list[1] == nil then return nil end
  for i = 1, #list do
    local f = list[i]
    if (not f.method or f.method == method)
        and (not f.path or f.path == path)
        and (not f.path_pattern or path:find(f.path_pattern)) then
      if f.remaining ~= -1 then
        f.remaining = f.remaining - 1
        if f.remaining <= 0 then table.remove(list, i) end
      end
      return f
    end
  end
  return nil
end

-- The public view of a fault (for GET/POST /_sandbox/faults answers).
function M.describe(f)
  return {
    id = f.id, method = f.method, path = f.path, path_pattern = f.path_pattern, count = f.count,
    remaining = f.remaining, status = f.status, action = f.action, delay_ms = f.delay_ms,
    after = f.after or false, headers = f.headers, body = f.body, content_type = f.content_type,
  }
end

return M

-- JSON for the sandbox: lua-cjson with two fixes Debian's cjson 2.1.0 lacks.
--   * empty arrays: cjson encodes every empty table as {}. Fields the API types as arrays
--     (attachments, messageIds...) use json.empty_array(), which encodes as [].
--   * a private cjson instance, so settings here never leak into other code in the same VM.
local cjson = require "cjson"

local M = {}
local C = cjson.new()
M.null = C.null

-- A sentinel string that stands for "[]" until the final text is produced.
local SENTINEL = "\1lcsandbox-empty-array\1"
local SENTINEL_Q = C.encode(SENTINEL) -- as it appears in encoded text, quotes and escapes included
local SENTINEL_P = SENTINEL_Q:gsub("%p", "%%%0") -- the same, as a Lua pattern
local find, gsub = string.find, string.gsub

function M.empty_array() return SENTINEL end

-- An array field's value for storage: empty tables become the sentinel.
function M.array(t)
  if t == nil or next(t) == nil then return SENTINEL end
  return t
end

function M.encode(v)
  local s = C.encode(v)
  -- cjson writes "\/" for every "/"; the API writes "/". Every \/ in cjson output is that escape
  -- (a literal slash never appears unescaped), so undoing it is safe.
  if find(s, "\\/", 1, true) then s = gsub(s, "\\/", "/") end
  if find(s, SENTINEL_Q, 1, true) then
    s = gsub(s, SENTINEL_P, "[]")
  end
  return s
end

-- Returns value, or nil and an error message. Never raises.
function M.decode(s)
  local ok, v = pcall(C.decode, s)
  if ok then return v end
  return nil, (tostring(v):gsub("^.-:%d+: ", ""))
end

-- True if t decodes from a JSON array (all keys 1..n). Empty tables count as both.
function M.is_array(t)
  if type(t) ~= "table" then return false end
  local n = #t
  local count = 0
  for _ in pairs(t) do
    count = count + 1
    if count > n then return false end
  end
  return count == n
end

return M

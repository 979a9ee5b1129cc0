-- Validates a decoded JSON body against a schema of lcsandbox.rules, answering the way the API's
-- class-validator pipe does: a list of messages such as "type must be one of the following values: ...".
-- Unknown properties are ignored (the API ignores them too); JSON null counts as absent.
local rules = require "lcsandbox.rules"
local json = require "lcsandbox.json"

local M = {}
local null = json.null
local schemas = rules.schemas
local concat, type, ipairs, pairs = table.concat, type, ipairs, pairs

local enum_text = {}
local function one_of(enum)
  local s = enum_text[enum]
  if not s then
    s = concat(enum, ", ")
    enum_text[enum] = s
  end
  return s
end

local function is_object(v)
  if type(v) ~= "table" then return false end
  -- An empty table may be {} or []; take it as an object. A non-empty array is not an object.
  return v[1] == nil
end

-- ISO 8601 date-time, e.g. 2024-03-27T18:13:49.000Z or 2024-03-27T18:13:49+02:00
local function is_datetime(s)
  return s:match("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.?%d*Z$") ~= nil
      or s:match("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.?%d*[+-]%d%d:?%d%d$") ~= nil
end

local function in_enum(enum, v)
  for _, e in ipairs(enum) do
    if e == v then return true end
  end
  return false
end

-- Characters, as class-validator counts them (UTF-8 continuation bytes do not count).
local function utf8_len(s)
  local _, cont = s:gsub("[\128-\191]", "")
  return #s - cont
end

local check_schema

-- Checks one present (non-null) value; appends messages to errs. name is the dotted path.
local function check_value(rule, v, name, errs)
  if rule.any_of then
    for _, alt in ipairs(rule.any_of) do
      local sub = {}
      check_value(alt, v, name, sub)
      if #sub == 0 then return true end
    end
    if rule.message then errs[#errs + 1] = rule.message:gsub("^[%w_]+", name, 1) end
    return false
  end
  local t = rule.type
  if t == "string" then
    if type(v) ~= "string" then
      if rule.enum then
        errs[#errs + 1] = name .. " must be one of the following values: " .. one_of(rule.enum)
      end
      errs[#errs + 1] = name .. " must be a string"
      return false
    end
    if rule.enum then
      local ok = false
      if rule.list then
        ok = true
        for item in (v .. rule.list):gmatch("(.-)" .. rule.list) do
          if not in_enum(rule.enum, item) then ok = false break end
        end
      else
        ok = in_enum(rule.enum, v)
      end
      if not ok then
        errs[#errs + 1] = name .. " must be one of the following values: " .. one_of(rule.enum)
        return false
      end
    end
    if rule.not_empty and v == "" then
      errs[#errs + 1] = name .. " should not be empty"
      return false
    end
    if rule.format == "date-time" and not is_datetime(v) then
      errs[#errs + 1] = name .. " must be a valid ISO 8601 date string"
      return false
    end
    if rule.max_length and utf8_len(v) > rule.max_length then
      errs[#errs + 1] = name .. " must be shorter than or equal to " .. rule.max_length .. " characters"
      return false
    end
  elseif t == "number" then
    if type(v) ~= "number" or v ~= v or v == math.huge or v == -math.huge then
      errs[#errs + 1] = name .. " must be a number conforming to the specified constraints"
      return false
    end
    if rule.minimum and v < rule.minimum then
      errs[#errs + 1] = name .. " must not be less than " .. rule.minimum
      return false
    end
    if rule.maximum and v > rule.maximum then
      errs[#errs + 1] = name .. " must not be greater than " .. rule.maximum
      return false
    end
  elseif t == "boolean" then
    if type(v) ~= "boolean" then
      errs[#errs + 1] = name .. " must be a boolean value"
      return false
    end
  elseif t == "object" then
    if not is_object(v) then
      errs[#errs + 1] = name .. " must be an object"
      return false
    end
    if rule.schema then
      local n = #errs
      check_schema(schemas[rule.schema], v, name .. ".", errs)
      return #errs == n
    end
  elseif t == "array" then
    if type(v) ~= "table" or not json.is_array(v) then
      errs[#errs + 1] = name .. " must be an array"
      return false
    end
    local items = rule.items
    if items then
      for _, item in ipairs(v) do
        local sub = {}
        if item == null or not check_value(items, item, name, sub) then
          if items.message then
            errs[#errs + 1] = items.message:format(name)
          elseif items.type == "string" then
            errs[#errs + 1] = "each value in " .. name .. " must be a string"
          else
            for _, m in ipairs(sub) do errs[#errs + 1] = m end
          end
          return false
        end
      end
    end
  end
  return true
end

function check_schema(s, body, prefix, errs)
  local required = {}
  for _, r in ipairs(s.required) do required[r] = true end
  for _, p in ipairs(s.properties) do
    local name, rule = p[1], p[2]
    local v = body[name]
    if v == nil or v == null then
      if required[name] then
        if rule.enum then
          errs[#errs + 1] = prefix .. name .. " must be one of the following values: " .. one_of(rule.enum)
        elseif rule.type == "string" then
          errs[#errs + 1] = prefix .. name .. " must be a string"
        end
        errs[#errs + 1] = prefix .. name .. " should not be empty"
      end
    else
      check_value(rule, v, prefix .. name, errs)
    end
  end
end

-- Returns nil when body is valid, else the list of messages.
function M.check(schema_name, body)
  local s = assert(schemas[schema_name], "no such schema")
  local errs = {}
  check_schema(s, body, "", errs)
  if #errs > 0 then return errs end
  return nil
end

-- Query parameters (a table as ngx.req.get_uri_args gives it: strings, `true` for a name without
-- a value, a list for a repeated name) against rules.queries[operation_id]. Returns the parameters
-- with numbers converted, or nil and the list of messages. Unknown parameters are ignored.
function M.check_query(operation_id, args)
  local s = assert(rules.queries[operation_id], "no such query schema")
  local q = {}
  for k, v in pairs(args) do
    if v == true then v = "" end
    q[k] = v
  end
  for _, p in ipairs(s.properties) do
    local name, rule = p[1], p[2]
    local v = q[name]
    if rule.type == "number" and type(v) == "string" and v:match("%S") then
      q[name] = tonumber(v) or v
    elseif v == "" and rule.type ~= "string" then
      q[name] = nil
    end
  end
  local errs = {}
  check_schema(s, q, "", errs)
  if #errs > 0 then return nil, errs end
  return q
end

return M

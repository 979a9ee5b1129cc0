#!/usr/bin/env lua5.4
-- Generates lua/leadconnector/catalogue.lua (the operation catalogue, format in CATALOGUE.md / README) from the
-- vendor's OpenAPI file and scripts/catalogue_overrides.lua.
--
--   lua5.4 scripts/catalogue.lua [REFERENCE_DIR] > lua/leadconnector/catalogue.lua      (make catalogue)
--
-- REFERENCE_DIR defaults to ../shared/reference. Needs lua-cjson. The output is deterministic: the same inputs give
-- the same bytes, so spec/25-catalogue_spec.lua can compare the committed file with a fresh generation.
local cjson = require "cjson"

local dir = arg and arg[1] or "../shared/reference"
local script_dir = (arg and arg[0] or ""):match("^(.*)/[^/]*$") or "."

local function read_json(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return cjson.decode(s)
end

local spec = read_json(dir .. "/conversations.openapi.json")
local common = read_json(dir .. "/common-schemas.openapi.json")
local overrides = dofile(script_dir .. "/catalogue_overrides.lua")

local function resolve(ref)
  local file, frag = ref:match("^([^#]*)#(.*)$")
  local doc = (file == "" or not file) and spec or common
  local node = doc
  for part in frag:gmatch("[^/]+") do
    node = node[part]
    if node == nil then error("unresolved $ref " .. ref) end
  end
  return node
end

local function deref(s)
  local guard = 0
  while type(s) == "table" and (s["$ref"] or (s.allOf and #s.allOf == 1 and not s.type)) do
    s = s["$ref"] and resolve(s["$ref"]) or s.allOf[1]
    guard = guard + 1
    if guard > 20 then error("$ref loop") end
  end
  return s
end

local function one_line(s)
  if type(s) ~= "string" then return nil end
  s = s:gsub("%s+", " "):gsub("^ ", ""):gsub(" $", "")
  if #s > 160 then s = s:sub(1, 157) .. "..." end
  return s
end

local function is_id_name(name) return name == "id" or (name and name:match("Id$") ~= nil) end

local convert

local function convert_object(s)
  s = deref(s)
  local req = {}
  for _, r in ipairs(s.required or {}) do req[r] = true end
  local names = {}
  for k in pairs(s.properties or {}) do names[#names + 1] = k end
  -- The spec's property order is lost by cjson; alphabetical keeps the output stable.
  table.sort(names)
  local fields = {}
  for _, k in ipairs(names) do
    local f = convert(s.properties[k], k)
    f.required = req[k] or nil
    fields[#fields + 1] = f
  end
  return fields
end

-- One OpenAPI schema -> a field of CATALOGUE.md's format (without `name` for array items).
function convert(s, name)
  local raw = s
  s = deref(s)
  local f = { name = name, description = one_line(raw.description or s.description) }
  local t = s.type
  if s.enum and (t == nil or t == "string") then
    f.type, f.enum = "enum", s.enum
  elseif t == "string" then
    f.type = is_id_name(name) and "id" or "string"
    f.max_length = s.maxLength
  elseif t == "number" or t == "integer" or t == "boolean" then
    f.type = t
  elseif t == "array" then
    f.type = "array"
    f.items = convert(s.items or {}, nil)
    f.items.description = nil
  elseif t == "object" or s.properties then
    f.type = "object"
    if s.properties then f.fields = convert_object(s) end -- without properties: any table
  else
    f.type = "any"
  end
  return f
end

local VERBS = { "get", "post", "put", "delete" }
local by_id = {}
for path, item in pairs(spec.paths) do
  for _, verb in ipairs(VERBS) do
    local o = item[verb]
    if o then by_id[o.operationId] = { path = path, method = verb:upper(), o = o } end
  end
end

local ops = {}
for _, ov in ipairs(overrides.operations) do
  local found = by_id[ov.id] or error("override names an operationId the spec lacks: " .. ov.id)
  local o = found.o
  by_id[ov.id] = nil
  local op = { name = ov.name, method = found.method, path = found.path, operation_id = ov.id,
    summary = one_line(o.summary), tags = o.tags }
  local path_params, query = {}, {}
  for _, p in ipairs(o.parameters or {}) do
    if p["in"] == "path" then
      path_params[p.name] = true
    elseif p["in"] == "query" then
      local f = convert(p.schema or {}, p.name)
      f.required = p.required or nil
      f.description = one_line(p.description) or f.description
      query[#query + 1] = f
    end
  end
  for _, n in ipairs(ov.path_params or {}) do path_params[n] = true end
  -- positional arguments: the template's parameters in path order, unless the override gives API.md's order
  local order = ov.args
  if not order then
    order = {}
    for n in found.path:gmatch("{([^}]+)}") do order[#order + 1] = n end
  end
  op.args = {}
  for _, n in ipairs(order) do
    local where = path_params[n] and "path" or "query"
    if where == "path" and not found.path:find("{" .. n .. "}", 1, true) then error(ov.id .. ": no {" .. n .. "}") end
    op.args[#op.args + 1] = { name = n, ["in"] = where, type = "id" }
    if where == "query" then
      for i, q in ipairs(query) do if q.name == n then table.remove(query, i) break end end
    end
  end
  for n in found.path:gmatch("{([^}]+)}") do
    local listed = false
    for _, a in ipairs(op.args) do listed = listed or a.name == n end
    if not listed then error(ov.id .. ": path parameter " .. n .. " is not an argument") end
  end
  if #query > 0 then op.query = query end
  local rb = o.requestBody and o.requestBody.content
  if rb and rb["application/json"] then
    op.content = "json"
    op.body = convert_object(rb["application/json"].schema)
  elseif rb and rb["multipart/form-data"] then
    op.content = "multipart"
    op.body = convert_object(rb["multipart/form-data"].schema)
  end
  if ov.body then op.body = ov.body end
  if ov.query then op.query = ov.query end
  op.answer = ov.answer
  op.objects = ov.objects
  op.files = ov.files
  op.retry = op.method == "POST" and "send" or "read"
  op.batch = op.content ~= "multipart"
  if ov.patch then ov.patch(op) end
  ops[#ops + 1] = op
end
local left = {}
for id in pairs(by_id) do left[#left + 1] = id end
if #left > 0 then table.sort(left) error("operations without an entry in the overrides: " .. table.concat(left, ", ")) end

-- Serialiser: plain Lua data, keys in a fixed order, loadable on Lua 5.1-5.4 and LuaJIT.
local ORDER = { "name", "method", "path", "operation_id", "summary", "args", "query", "body", "content", "files",
  "answer", "objects", "retry", "batch", "tags", "op", "cursor", "param", "more", "items", "from", "total",
  "type", "in", "required", "enum", "comma_list", "fields", "max_length", "description", "field", "max_files", "max_file_size" }
local RANK = {}
for i, k in ipairs(ORDER) do RANK[k] = i end

local function ser(v, indent, out)
  local t = type(v)
  if t == "string" then out[#out + 1] = ("%q"):format(v):gsub("\\\n", "\\n")
  elseif t == "number" then out[#out + 1] = (math.type and math.type(v) == "integer" or v == math.floor(v)) and
    ("%d"):format(v) or tostring(v)
  elseif t == "boolean" then out[#out + 1] = tostring(v)
  elseif t == "table" then
    local pad = ("  "):rep(indent + 1)
    if #v > 0 then
      local simple = true
      for _, x in ipairs(v) do simple = simple and type(x) ~= "table" end
      if simple then
        out[#out + 1] = "{ "
        for i, x in ipairs(v) do if i > 1 then out[#out + 1] = ", " end ser(x, indent, out) end
        out[#out + 1] = " }"
        return
      end
      out[#out + 1] = "{\n"
      for _, x in ipairs(v) do out[#out + 1] = pad ser(x, indent + 1, out) out[#out + 1] = ",\n" end
      out[#out + 1] = ("  "):rep(indent) .. "}"
      return
    end
    local keys = {}
    for k in pairs(v) do keys[#keys + 1] = k end
    table.sort(keys, function(a, b)
      local ra, rb2 = RANK[a] or 1000, RANK[b] or 1000
      if ra ~= rb2 then return ra < rb2 end
      return a < b
    end)
    if #keys == 0 then out[#out + 1] = "{}" return end
    out[#out + 1] = "{\n"
    for _, k in ipairs(keys) do
      out[#out + 1] = pad
      out[#out + 1] = k:match("^[%a_][%w_]*$") and k ~= "in" and k or ("[%q]"):format(k)
      out[#out + 1] = " = "
      ser(v[k], indent + 1, out)
      out[#out + 1] = ",\n"
    end
    out[#out + 1] = ("  "):rep(indent) .. "}"
  else error("cannot serialise " .. t) end
end

local out = { "-- GENERATED by scripts/catalogue.lua from the vendor's conversations.openapi.json and\n",
  "-- scripts/catalogue_overrides.lua (make catalogue). Do not edit by hand: change the overrides and regenerate.\n",
  "-- The operations of API.md §4, in its order; the format is described in README \"The operation catalogue\".\n",
  "return " }
-- answer_arrays: the property names that are arrays wherever the vendor's schemas have them (in either file).
-- lua-cjson decodes `[]` and `{}` to the same empty table; the command line prints an empty table under one of
-- these names as `[]` (a name that is an array in one schema and something else in another is left out).
local function array_names()
  local kinds = {}
  local seen = {}
  local function walk(x)
    if type(x) ~= "table" or seen[x] then return end
    seen[x] = true
    if type(x.properties) == "table" then
      for k, v in pairs(x.properties) do
        if type(v) == "table" then
          local t = v.type or (v["$ref"] and "ref") or "other"
          kinds[k] = kinds[k] or {}
          kinds[k][t] = true
        end
      end
    end
    for _, v in pairs(x) do walk(v) end
  end
  walk(spec)
  walk(common)
  local names = {}
  for k, ts in pairs(kinds) do
    local n = 0
    for _ in pairs(ts) do n = n + 1 end
    if ts.array and n == 1 then names[#names + 1] = k end
  end
  table.sort(names)
  return names
end

ser({ version = 1, operations = ops, iterators = overrides.iterators, answer_arrays = array_names() }, 0, out)
out[#out + 1] = "\n"
io.write(table.concat(out))

-- The sandbox's routing table, derived from the library's operation catalogue
-- (lua/leadconnector/catalogue.lua: method + path template per operation `name`; see the library's
-- README). No ngx here, so specs can load it too.
--
-- Templates are split into segments and put in one tree. A request path is walked segment by
-- segment; a segment that is a literal of some template at that place (`messages`, `search`,
-- `export`, ...) only ever matches that literal, never a {parameter}: GET /conversations/messages
-- is an unknown route, not the conversation "messages". One trailing slash is ignored on both sides
-- (the catalogue's create_conversation is POST /conversations/). Parameter values are
-- percent-decoded per segment, and an empty one matches nothing.
local M = {}

local sub, gmatch = string.sub, string.gmatch

local function segments(path)
  if #path > 1 and sub(path, -1) == "/" then path = sub(path, 1, -2) end
  local out = {}
  for s in gmatch(sub(path, 2) .. "/", "([^/]*)/") do out[#out + 1] = s end
  return out
end

local function new_node() return { lit = {}, param = nil, pname = nil, ops = {} } end

-- Builds a router from a catalogue ({ operations = { {name, method, path}, ... } }).
function M.build(catalogue)
  local root = new_node()
  local by_name = {}
  for _, op in ipairs(catalogue.operations) do
    local node = root
    local names = {}
    for _, seg in ipairs(segments(op.path)) do
      local pname = seg:match("^{(.+)}$")
      if pname then
        if not node.param then node.param = new_node() end
        node = node.param
        names[#names + 1] = pname
      else
        if not node.lit[seg] then node.lit[seg] = new_node() end
        node = node.lit[seg]
      end
    end
    assert(not node.ops[op.method], "two operations for " .. op.method .. " " .. op.path)
    node.ops[op.method] = { name = op.name, params = names, op = op }
    by_name[op.name] = op
  end
  return { root = root, by_name = by_name }
end

-- Returns the operation's name, its path parameters by name and in order; or nil.
-- unescape decodes one segment (ngx.unescape_uri in nginx).
function M.match(router, method, path, unescape)
  local node = router.root
  local values = {}
  for _, seg in ipairs(segments(path)) do
    local nxt = node.lit[seg]
    if not nxt then
      nxt = node.param
      if not nxt or seg == "" then return nil end
      values[#values + 1] = unescape and unescape(seg) or seg
    end
    node = nxt
  end
  local e = node.ops[method]
  if not e then return nil end
  local params = {}
  for i, n in ipairs(e.params) do params[n] = values[i] end
  return e.name, params, values
end

-- The routing table from the library's catalogue (found on lua_package_path: the launcher puts the
-- library's lua/ directory there).
function M.default()
  local catalogue = require "leadconnector.catalogue"
  return M.build(catalogue)
end

M._segments = segments
return M

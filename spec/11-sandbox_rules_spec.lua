-- Cross-checks the sandbox's hand-written validation rules (sandbox/lua/lcsandbox/rules.lua) and
-- enums (store.lua) against the vendor's OpenAPI file, which lives beside the repository in
-- ../shared/reference/conversations.openapi.json (or LEADCONNECTOR_OPENAPI). Without that file the
-- cross-check is reported as pending (not as passed).
local cjson = require "cjson"
local rules = require "lcsandbox.rules"
local store = require "lcsandbox.store"
local read = require("helpers").read_file

local SPEC_PATH = os.getenv("LEADCONNECTOR_OPENAPI") or "../shared/reference/conversations.openapi.json"
local text = read(SPEC_PATH)

local function set_of(list)
  local s = {}
  for _, v in ipairs(list or {}) do s[v] = true end
  return s
end

local function sorted_keys(t)
  local out = {}
  for k in pairs(t) do out[#out + 1] = k end
  table.sort(out)
  return out
end

if not text then
  describe("sandbox rules vs the vendor OpenAPI spec", function()
    pending("SKIPPED: " .. SPEC_PATH .. " not found; the rule tables were not cross-checked")
  end)
  return
end

local spec = cjson.decode(text)
local schemas = spec.components.schemas

-- The $ref name of a property (direct, or through allOf), or nil.
local function ref_of(p)
  local ref = p["$ref"] or (p.allOf and p.allOf[1] and p.allOf[1]["$ref"])
  return ref and ref:match("([^/]+)$")
end

local function spec_type(p)
  if p.type then return p.type end
  if ref_of(p) then return "object" end
  return nil
end

-- Compares one schema of the spec with the rules' one of the same name; returns a list of problems.
local function compare(name, problems, seen)
  seen = seen or {}
  if seen[name] then return problems end
  seen[name] = true
  local s, r = schemas[name], rules.schemas[name]
  if not s then problems[#problems + 1] = name .. ": not in the spec" return problems end
  if not r then problems[#problems + 1] = name .. ": no rules for it" return problems end
  local dev = rules.deviations[name] or {}
  local dev_types, dev_enums, dev_items = dev.types or {}, dev.enums or {}, dev.item_types or {}

  for _, prop in ipairs(sorted_keys(s.properties)) do
    local p, rule = s.properties[prop], r.by_name[prop]
    local where = name .. "." .. prop
    if not rule then
      problems[#problems + 1] = where .. ": in the spec, missing from the rules"
    else
      local st = spec_type(p)
      if dev_types[prop] then
        if rule.type ~= dev_types[prop] then
          problems[#problems + 1] = where .. ": deviation says " .. dev_types[prop] .. ", rule has " .. tostring(rule.type)
        end
        if st == dev_types[prop] and not dev_items[prop] then
          problems[#problems + 1] = where .. ": the spec now says " .. st .. " too; drop the deviation"
        end
      elseif st ~= rule.type then
        problems[#problems + 1] = where .. ": spec type " .. tostring(st) .. ", rule type " .. tostring(rule.type)
      end
      if p.enum then
        if not rule.enum then
          problems[#problems + 1] = where .. ": the spec has an enum, the rule none"
        else
          local a, b = table.concat(p.enum, ","), table.concat(rule.enum, ",")
          if a ~= b then problems[#problems + 1] = where .. ": enum differs: spec " .. a .. " / rule " .. b end
        end
      elseif rule.enum and not dev_enums[prop] then
        problems[#problems + 1] = where .. ": the rule has an enum the spec does not"
      end
      if p.maxLength ~= rule.max_length then
        problems[#problems + 1] = where .. ": maxLength " .. tostring(p.maxLength) .. ", rule " .. tostring(rule.max_length)
      end
      if p.format and p.format ~= rule.format then
        problems[#problems + 1] = where .. ": format " .. p.format .. " not checked by the rule"
      end
      if st == "array" then
        local it = p.items and p.items.type
        if dev_items[prop] then
          if not (rule.items and rule.items.any_of) then
            problems[#problems + 1] = where .. ": deviation on items, but the rule has no alternatives"
          end
        elseif not rule.items or rule.items.type ~= it then
          problems[#problems + 1] = where .. ": items " .. tostring(it) .. " vs rule " ..
            tostring(rule.items and rule.items.type)
        end
      end
      local ref = ref_of(p)
      if ref then
        if rule.schema ~= ref then
          problems[#problems + 1] = where .. ": spec refers to " .. ref .. ", rule to " .. tostring(rule.schema)
        else
          compare(ref, problems, seen)
        end
      end
    end
  end
  for _, pr in ipairs(r.properties) do
    if not s.properties[pr[1]] then
      problems[#problems + 1] = name .. "." .. pr[1] .. ": in the rules, not in the spec"
    end
  end

  local want = set_of(s.required)
  local relaxed = dev.required_relaxed or {}
  for k in pairs(relaxed) do
    if not want[k] then problems[#problems + 1] = name .. ": " .. k .. " relaxed but not required by the spec" end
    want[k] = nil
  end
  local have = set_of(r.required)
  for _, k in ipairs(sorted_keys(want)) do
    if not have[k] then problems[#problems + 1] = name .. ": " .. k .. " required by the spec, not by the rules" end
  end
  for _, k in ipairs(sorted_keys(have)) do
    if not want[k] then problems[#problems + 1] = name .. ": " .. k .. " required by the rules, not by the spec" end
  end
  return problems
end

-- The handlers the sandbox routes to (lcsandbox.operations; ngx is only used when they run).
local operations = require "lcsandbox.operations"
local catalogue = require "leadconnector.catalogue"

-- The spec's operation for a catalogue entry.
local function spec_op(op)
  local path = op.path
  local item = spec.paths[path]
  return item and item[op.method:lower()]
end

local function body_ref_of(sop)
  local content = sop.requestBody and sop.requestBody.content
  if not content then return nil end
  local media = content["application/json"] or content["multipart/form-data"]
  return media and media.schema["$ref"] and media.schema["$ref"]:match("([^/]+)$")
end

-- Compares a query schema of the rules with the spec operation's query parameters.
local function compare_query(sop, r, problems)
  local where = sop.operationId
  local seen = {}
  local required = set_of(r.required)
  for _, prm in ipairs(sop.parameters or {}) do
    if prm["in"] == "query" then
      seen[prm.name] = true
      local rule = r.by_name[prm.name]
      local s = prm.schema or {}
      if not rule then
        problems[#problems + 1] = where .. "." .. prm.name .. ": in the spec, missing from the rules"
      else
        if s.type ~= rule.type then
          problems[#problems + 1] = where .. "." .. prm.name .. ": spec type " .. tostring(s.type) .. ", rule " .. tostring(rule.type)
        end
        if (s.enum and table.concat(s.enum, ",")) ~= (rule.enum and table.concat(rule.enum, ",")) then
          problems[#problems + 1] = where .. "." .. prm.name .. ": enum differs"
        end
        if s.minimum ~= rule.minimum or s.maximum ~= rule.maximum then
          problems[#problems + 1] = where .. "." .. prm.name .. ": minimum/maximum differ"
        end
        if (prm.required == true) ~= (required[prm.name] == true) then
          problems[#problems + 1] = where .. "." .. prm.name .. ": required differs"
        end
      end
    end
  end
  for _, pr in ipairs(r.properties) do
    if not seen[pr[1]] then problems[#problems + 1] = where .. "." .. pr[1] .. ": in the rules, not in the spec" end
  end
end

describe("sandbox operations vs the vendor OpenAPI spec and the catalogue", function()
  it("route every operation of the spec, and each to a handler", function()
    local in_spec = {}
    for path, item in pairs(spec.paths) do
      for method, op in pairs(item) do
        if type(op) == "table" and op.operationId then in_spec[op.operationId] = method:upper() .. " " .. path end
      end
    end
    local n = 0
    for _, op in ipairs(catalogue.operations) do
      n = n + 1
      assert.is_table(operations.handlers[op.name], "no sandbox handler for " .. op.name)
      local sop = spec_op(op)
      assert.is_table(sop, op.name .. ": " .. op.method .. " " .. op.path .. " is not in the spec")
      in_spec[sop.operationId] = nil
    end
    assert.equals(29, n)
    assert.same({}, in_spec)
  end)

  it("validate each body against the schema the spec's endpoint takes, property by property", function()
    local problems = {}
    for _, op in ipairs(catalogue.operations) do
      local h, sop = operations.handlers[op.name], spec_op(op)
      local ref = body_ref_of(sop)
      local used = h.body
      if op.name == "upload_attachments" then used = "UploadFilesDto" end -- multipart: its fields
      if ref ~= (used or nil) then
        problems[#problems + 1] = op.name .. ": spec body " .. tostring(ref) .. ", handler " .. tostring(used)
      elseif ref then
        compare(ref, problems)
      end
    end
    assert.same({}, problems)
  end)

  it("validate each query against the spec's query parameters", function()
    local problems = {}
    for _, op in ipairs(catalogue.operations) do
      local h, sop = operations.handlers[op.name], spec_op(op)
      local has_query = false
      for _, prm in ipairs(sop.parameters or {}) do
        if prm["in"] == "query" then has_query = true end
      end
      if has_query ~= (h.query ~= nil) then
        problems[#problems + 1] = op.name .. ": query parameters in the spec " .. tostring(has_query) .. ", handler " .. tostring(h.query)
      elseif h.query then
        if h.query ~= sop.operationId then problems[#problems + 1] = op.name .. ": query schema " .. h.query .. " for " .. sop.operationId end
        compare_query(sop, rules.queries[h.query], problems)
      end
    end
    assert.same({}, problems)
  end)
end)

describe("sandbox rules vs the vendor OpenAPI spec (" .. SPEC_PATH .. ")", function()
  for _, name in ipairs({ "SendMessageBodyDto", "UpdateMessageStatusDto", "ProcessMessageBodyDto" }) do
    it("match " .. name .. " property by property", function()
      local problems = compare(name, {})
      assert.same({}, problems)
    end)
  end

  it("use the schemas the spec's endpoints take", function()
    local function body_ref(path, method)
      local op = spec.paths[path][method]
      return op.requestBody.content["application/json"].schema["$ref"]:match("([^/]+)$")
    end
    assert.equals("SendMessageBodyDto", body_ref("/conversations/messages", "post"))
    assert.equals("UpdateMessageStatusDto", body_ref("/conversations/messages/{messageId}/status", "put"))
    assert.equals("ProcessMessageBodyDto", body_ref("/conversations/messages/inbound", "post"))
  end)

  it("accept every Version the spec lists", function()
    local accepted = set_of(rules.VERSIONS)
    local n = 0
    for _, item in pairs(spec.paths) do
      for _, op in pairs(item) do
        for _, prm in ipairs(type(op) == "table" and op.parameters or {}) do
          if prm.name == "Version" and prm["in"] == "header" then
            for _, v in ipairs(prm.schema.enum or {}) do
              n = n + 1
              assert.is_true(accepted[v], "Version " .. v .. " not accepted")
            end
          end
        end
      end
    end
    assert.is_true(n > 0)
  end)

  it("know every messageType of the spec, and no other", function()
    local enum = schemas.GetMessageResponseDto.properties.messageType.enum
    local ours = {}
    for _, t in ipairs(store.MESSAGE_TYPES) do ours[#ours + 1] = t end
    table.sort(ours)
    local theirs = { (table.unpack or unpack)(enum) }
    table.sort(theirs)
    assert.same(theirs, ours)
    for ch, mt in pairs(store.CHANNEL_MESSAGE_TYPE) do
      assert.truthy(set_of(enum)[mt], ch .. " -> " .. mt)
    end
  end)

  it("answer with message and conversation fields the spec knows", function()
    local msg = schemas.GetMessageResponseDto
    local statuses = set_of(msg.properties.status.enum)
    for _, s in ipairs(rules.SEND_STATUSES) do assert.truthy(statuses[s], s) end
    for _, r in ipairs(msg.required) do
      assert.not_nil(store.get_message(store.DEFAULT_LOCATION, "msg_demo_1")[r], "seed message lacks " .. r)
    end
    local conv = schemas.GetConversationByIdResponse
    local c = store.get_conversation(store.DEFAULT_LOCATION, "conv_demo_3")
    for prop in pairs(conv.properties) do assert.not_nil(c[prop], "seed conversation lacks " .. prop) end
  end)
end)

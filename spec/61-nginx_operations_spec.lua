--[[ spec/61-nginx_operations_spec.lua -- every operation of the catalogue over real HTTP against the sandbox inside
a real nginx (two workers, the ngx transport on cosockets), each result compared with what the libcurl transport
gives for the same calls in this plain-Lua process (issue 12 item 6). The operation list comes from
lua/leadconnector/catalogue.lua: an operation without a case here fails the spec. Also the three iterators across
page boundaries and one client:batch holding every batch-able operation, on cosockets.

nginx runs spec/nginx/ops.conf, its Lua is spec/nginx/ops_t.lua (the same run() is used here in plain Lua).
Tagged lua54only, nginx and slow like spec/60 (nginx brings its own LuaJIT; ASan/valgrind of this process add nothing).
]]
local helpers = require "helpers"
local socket_http = require "socket.http"
local ltn12 = require "ltn12"
local ns = require "nginx.server"
local ops_t = require "nginx.ops_t"
local catalogue = require "leadconnector.catalogue"

local LOC = "loc_sandbox"
local LATER = os.time() + 3600
local function ref(i, path) return { ["$ref"] = i, path = path } end

-- The calls, in order; ref(i, ...) names call i's result. Each catalogue operation must appear at least once.
-- complete_upload's ids are filled in per run (after initiate_upload and the PUT of the bytes).
local function sequence(upload)
  return {
    { "get_conversation", "conv_demo_1" },                                                    -- 1
    { "search_conversations", { locationId = LOC, limit = 5 } },                              -- 2
    { "create_conversation", { locationId = LOC, contactId = "contact_ops_new" } },           -- 3
    { "update_conversation", ref(3, "conversation.id"), { locationId = LOC, starred = true } }, -- 4
    { "get_messages", "conv_demo_1", { limit = 5 } },                                         -- 5
    { "get_message", "msg_demo_1" },                                                          -- 6
    { "send_message", { type = "SMS", contactId = "contact_ops_sms", message = "hello ops" } }, -- 7
    { "send_message", { type = "SMS", contactId = "contact_ops_later", message = "later",
      scheduledTimestamp = LATER } },                                                         -- 8
    { "cancel_scheduled_message", ref(8, "messageId") },                                      -- 9
    { "add_inbound_message", { type = "SMS", conversationId = "conv_demo_1", contactId = "contact_demo_1",
      conversationProviderId = "provider_sandbox", message = "from the provider" } },         -- 10
    { "add_outbound_call", { type = "Call", conversationId = "conv_demo_1",
      conversationProviderId = "provider_sandbox",
      call = { to = "+15550001", from = "+15550002", status = "completed" } } },              -- 11
    { "send_review_reply", { conversationId = "conv_demo_1", locationId = LOC, message = "Thanks!" } }, -- 12
    { "update_message_status", "msg_demo_2", { status = "read" } },                           -- 13
    { "add_message_attachments", ref(7, "messageId"), { attachments = { "https://example.com/a.png" } } }, -- 14
    { "export_messages", { locationId = LOC, limit = 10 } },                                  -- 15
    { "send_message", { type = "Email", contactId = "contact_demo_2", subject = "Hello", html = "<p>Hi</p>",
      emailTo = "ada@example.com" } },                                                        -- 16
    { "get_email", ref(16, "emailMessageId") },                                               -- 17
    { "send_message", { type = "Email", contactId = "contact_demo_2", subject = "Later", html = "<p>x</p>",
      scheduledTimestamp = LATER } },                                                         -- 18
    { "cancel_scheduled_email", ref(18, "emailMessageId") },                                  -- 19
    { "upload_attachments", { conversationId = "conv_demo_1", contactId = "contact_demo_1", locationId = LOC },
      { { name = "a.txt", content = "hello\r\nworld", content_type = "text/plain" },
        { name = "b.bin", content = "\0\1\255" } } },                                         -- 20
    { "complete_upload", { uploadId = upload.uploadId, filePath = upload.filePath, locationId = LOC,
      conversationId = "conv_demo_1", filename = "clip.mp4" } },                              -- 21
    { "get_message_recording", LOC, "msg_demo_6" },                                           -- 22
    { "get_message_transcription", LOC, "msg_demo_6" },                                       -- 23
    { "download_message_transcription", LOC, "msg_demo_6" },                                  -- 24
    { "live_chat_typing", { locationId = LOC, isTyping = true, visitorId = "v1", conversationId = "conv_demo_1" } }, -- 25
    { "create_custom_subtype", LOC, { name = "Newsletter", channel = "email", language = "en" } }, -- 26
    { "update_custom_subtype", ref(26, "customSubtype.id"), LOC, { description = "monthly" } }, -- 27
    { "get_custom_subtypes", LOC },                                                           -- 28
    { "change_subscription", { locationId = LOC, contactId = "contact_demo_1", email = "ada@example.com",
      subscription_action = { type = "default", subtype_name = "One on One", subtype_status = "unsubscribed" } } }, -- 29
    { "get_unsubscription_status", { locationId = LOC, contactId = "contact_demo_1" } },     -- 30
    { "delete_conversation", ref(3, "conversation.id") },                                     -- 31
  }
end
local INITIATE = { "initiate_upload", { locationId = LOC, conversationId = "conv_demo_1", filename = "clip.mp4",
  contentType = "video/mp4", fileSize = 11, channel = "SMS" } }

-- What may differ between two runs of the same calls: ids, dates and times the sandbox makes at creation, and the
-- URLs and paths that hold them.
local function volatile(k)
  k = tostring(k):lower()
  return k:find("id$") or k:find("ids$") or k:find("date") or k:find("time") or k:find("at$") or k:find("url")
    or k:find("path") or k == "nextcursor" or k == "uploadedfiles" or k == "sort"
end
local function normal(v, key)
  if type(v) ~= "table" then
    if key and volatile(key) and (type(v) == "string" or type(v) == "number") then return "<" .. type(v) .. ">" end
    return v
  end
  local out = {}
  for k, x in pairs(v) do
    if key and volatile(key) and type(x) ~= "table" then out[k] = "<" .. type(x) .. ">" else out[k] = normal(x, k) end
  end
  return out
end
-- The shape of a value: its keys (recursively) and the types there.
local function shape(v)
  if type(v) ~= "table" then return type(v) end
  local out = {}
  for k, x in pairs(v) do out[tostring(type(k) == "number" and 1 or k)] = shape(x) end
  return out
end

local function pattern(template)
  return "^" .. template:gsub("[%-%.]", "%%%0"):gsub("{[^}]+}", "[^/]+") .. "$"
end
local OPS = {}
for _, op in ipairs(catalogue.operations) do OPS[op.name] = op end

describe("every operation inside nginx (2 workers, cosockets) equals libcurl #lua54only #nginx #slow", function()
  local sb, nx

  lazy_setup(function()
    sb = helpers.start_sandbox { rate_limit = false }
    nx = ns.start(sb, "spec/nginx/ops.conf")
  end)
  lazy_teardown(function()
    if nx then nx:stop() end
    if sb then sb:stop() end
  end)

  local function in_ngx(spec)
    local r = nx:json("POST", "/ops", spec)
    assert.are.equal("ngx", r.transport)
    return r
  end
  local function plain(spec)
    local r = ops_t.run(spec, { token = sb.token, base_url = sb.url, retry_base = 0.01, retry_cap = 0.05 })
    assert.are.equal("curl", r.transport)
    return r
  end
  local function api_requests()
    local out = {}
    for _, r in ipairs(sb:requests()) do
      if r.path:sub(1, 10) ~= "/_sandbox/" then out[#out + 1] = r end
    end
    return out
  end

  -- initiate_upload, the PUT of the bytes (from here), then the whole sequence; returns results and requests.
  local function run_all(runner)
    sb:reset()
    local init = runner { calls = { INITIATE } }.results[1]
    assert.is_true(init.ok, tostring(init.tostring))
    local _, code = socket_http.request { url = init.fields.uploadUrl, method = "PUT",
      source = ltn12.source.string("hello video"), headers = { ["content-length"] = "11" } }
    assert.is_true(code == 200 or code == 201 or code == 204, tostring(code))
    sb:clear_requests()
    local calls = sequence(init.fields)
    local r = runner { calls = calls }
    return { init = init, calls = calls, results = r.results, requests = api_requests(),
      sms_stored = #sb:messages("contact_ops_sms") }
  end

  it("each catalogue operation over cosockets gives what libcurl gives, each sent exactly once", function()
    local a = run_all(in_ngx)
    local b = run_all(plain)
    -- every operation of the catalogue has a case (a new operation without one fails here)
    local covered = { initiate_upload = true }
    for _, c in ipairs(a.calls) do covered[c[1]] = true end
    for _, op in ipairs(catalogue.operations) do
      assert.is_true(covered[op.name] == true, "no nginx test case for the operation " .. op.name)
    end
    assert.same(shape(b.init.fields), shape(a.init.fields), "initiate_upload")
    assert.equals(#a.calls, #a.results)
    for i, c in ipairs(a.calls) do
      local x, y = a.results[i], b.results[i]
      local what = ("#%d %s"):format(i, c[1])
      assert.is_true(x.ok, what .. " in nginx: " .. tostring(x.tostring))
      assert.is_true(y.ok, what .. " on libcurl: " .. tostring(y.tostring))
      assert.are.equal(y.typeof, x.typeof, what .. ": typeof")
      assert.are.equal(y.lua_type, x.lua_type, what .. ": Lua type")
      if OPS[c[1]].method == "POST" and c[1] ~= "change_subscription" then
        -- a send or a creation: the same shape
        assert.are.same(shape(y.fields), shape(x.fields), what .. ": shape")
      else
        assert.are.same(normal(y.fields), normal(x.fields), what .. ": fields")
      end
    end
    -- raw bytes intact over cosockets
    assert.are.equal(b.results[22].fields.body, a.results[22].fields.body)
    assert.are.equal("audio/x-wav", a.results[22].fields.content_type)
    -- each call reached the sandbox exactly once, in order, with its operation's method and path
    assert.equals(#a.calls, #a.requests)
    for i, c in ipairs(a.calls) do
      local op, req = OPS[c[1]], a.requests[i]
      assert.are.equal(op.method, req.method, ("#%d %s"):format(i, c[1]))
      assert.truthy(req.path:gsub("%?.*", ""):find(pattern(op.path)), ("#%d %s: %s"):format(i, c[1], req.path))
    end
    assert.equals(1, a.sms_stored)
    assert.equals(1, b.sms_stored)
    -- two workers serve
    local master = assert(tonumber((helpers.read_file(nx.prefix .. "/nginx.pid") or ""):match("%d+")))
    local workers = 0
    for pid in helpers.sh("ls /proc"):gmatch("%d+") do
      local stat = helpers.read_file("/proc/" .. pid .. "/stat") or ""
      if tonumber(stat:match("^%d+ %b() %a (%d+)")) == master then workers = workers + 1 end
    end
    assert.equals(2, workers, "nginx's worker processes")
  end)

  -- Seeds the data the iterators walk: 24 messages in one new conversation. Returns its id.
  local function seed_pages()
    sb:reset()
    local first = sb:inbound { contactId = "contact_iter", message = "filler 000" }
    for i = 1, 23 do sb:inbound { contactId = "contact_iter", message = ("filler %03d"):format(i) } end
    sb:clear_requests()
    return first.conversationId
  end
  local function iter_spec(conv)
    return { calls = {
      { "iter", "each_message", conv, { limit = 10 } },
      { "iter", "each_conversation", { locationId = LOC, limit = 3 } },
      { "iter", "each_exported_message", { locationId = LOC, limit = 10 } },
    } }
  end

  it("the three iterators cross page boundaries on cosockets as on libcurl", function()
    local a = in_ngx(iter_spec(seed_pages()))
    local a_pages = #api_requests()
    local b = plain(iter_spec(seed_pages()))
    local b_pages = #api_requests()
    for i, name in ipairs { "each_message", "each_conversation", "each_exported_message" } do
      local x, y = a.results[i].iter, b.results[i].iter
      assert.is_true(#x > (i == 2 and 3 or 10), name .. " crosses a page: " .. #x)
      assert.equals(#y, #x, name)
      if name == "each_exported_message" then
        -- the export's order among messages made in the same millisecond follows their (random) ids: compare
        -- as sets
        local function by_body(p, q) return p.fields.body < q.fields.body end
        table.sort(x, by_body)
        table.sort(y, by_body)
      end
      local seen = {}
      for k = 1, #x do
        assert.is_true(x[k].ok, name .. " item " .. k .. ": " .. tostring(x[k].tostring))
        assert.are.equal(y[k].typeof, x[k].typeof, name)
        assert.are.same(normal(y[k].fields), normal(x[k].fields), name .. " item " .. k)
        local id = x[k].id or x[k].fields.id
        assert.is_nil(seen[id], name .. ": an item twice")
        seen[id] = true
      end
    end
    assert.equals(24, #a.results[1].iter)
    assert.equals(b_pages, a_pages)
    assert.equals(3 + math.ceil(#a.results[2].iter / 3) + math.ceil(#a.results[3].iter / 10), a_pages)
  end)

  it("one client:batch with every batch-able operation on cosockets", function()
    local function spec(upload)
      local calls = {
        { "create_conversation", { locationId = LOC, contactId = "contact_batch_new" } },            -- 1
        { "send_message", { type = "SMS", contactId = "contact_batch_later", message = "later",
          scheduledTimestamp = LATER } },                                                            -- 2
        { "send_message", { type = "Email", contactId = "contact_demo_2", subject = "Later", html = "<p>x</p>",
          scheduledTimestamp = LATER } },                                                            -- 3
        { "create_custom_subtype", LOC, { name = "Batch", channel = "sms", language = "en" } },      -- 4
        { "send_message", { type = "Email", contactId = "contact_demo_2", subject = "Now", html = "<p>y</p>" } }, -- 5
      }
      local by = {}
      for _, c in ipairs(sequence(upload)) do by[c[1]] = by[c[1]] or c end
      local entries = {}
      for _, op in ipairs(catalogue.operations) do
        if op.batch then
          local c = by[op.name] or (op.name == "initiate_upload" and INITIATE)
          assert.truthy(c, "no batch case for " .. op.name)
          c = { table.unpack(c) }
          if op.name == "update_conversation" then c[2] = "conv_demo_2"
          elseif op.name == "delete_conversation" then c[2] = ref(1, "conversation.id")
          elseif op.name == "cancel_scheduled_message" then c[2] = ref(2, "messageId")
          elseif op.name == "cancel_scheduled_email" then c[2] = ref(3, "emailMessageId")
          elseif op.name == "update_custom_subtype" then c[2] = ref(4, "customSubtype.id")
          elseif op.name == "get_email" then c[2] = ref(5, "emailMessageId")
          elseif op.name == "add_message_attachments" then c[2] = "msg_demo_1"
          elseif op.name == "send_message" then c[2] = { type = "SMS", contactId = "contact_batch_sms", message = "b" }
          end
          entries[#entries + 1] = c
        end
      end
      calls[#calls + 1] = { "batch", entries, { concurrency = 4 } }
      return { calls = calls }, entries
    end
    local function run(runner)
      sb:reset()
      local init = runner { calls = { INITIATE } }.results[1]
      assert.is_true(init.ok)
      local _, code = socket_http.request { url = init.fields.uploadUrl, method = "PUT",
        source = ltn12.source.string("hello video"), headers = { ["content-length"] = "11" } }
      assert.is_true(code == 200 or code == 201 or code == 204)
      local s, entries = spec(init.fields)
      sb:clear_requests()
      local r = runner(s)
      return r.results[#s.calls].batch, entries, #api_requests() - (#s.calls - 1)
    end
    local a, entries, a_sent = run(in_ngx)
    local b, _, b_sent = run(plain)
    local n = 0
    for _, op in ipairs(catalogue.operations) do if op.batch then n = n + 1 end end
    assert.equals(n, #entries)
    assert.equals(n, #a)
    assert.equals(n, a_sent, "each batch entry sent exactly once")
    assert.equals(n, b_sent)
    for i, c in ipairs(entries) do
      assert.is_true(a[i].ok, c[1] .. " in nginx: " .. tostring(a[i].tostring))
      assert.is_true(b[i].ok, c[1] .. " on libcurl: " .. tostring(b[i].tostring))
      assert.are.equal(b[i].typeof, a[i].typeof, c[1])
      assert.are.same(shape(b[i].fields), shape(a[i].fields), c[1])
    end
  end)
end)

--[[ spec/90-cli_spec.lua -- the `leadconnector` command (bin/leadconnector, API.md §8), run as a user runs it:
a child process of the interpreter under test, the token and base URL in its environment, against the sandbox.
Checks what reaches stdout, stderr and the exit status, and what reached the sandbox.
]]
local helpers = require "helpers"
local lch = require "lchelpers"
local cjson = require "cjson"
local sh, read_file, write_file = helpers.sh, helpers.read_file, helpers.write_file

local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

local CLI = "bin/leadconnector"
local has_catalogue, catalogue = pcall(require, "leadconnector.catalogue")
local has_webhook = pcall(require, "leadconnector.webhook")

-- Runs the command; returns exit status, stdout, stderr. env: a table of variables (false: unset).
local function run(args, env, stdin)
  local tmp = os.tmpname()
  local vars = { LUA_PATH = package.path, LUA_CPATH = package.cpath }
  for k, v in pairs(env or {}) do vars[k] = v end
  local parts = { "env -u LEADCONNECTOR_TOKEN -u LEADCONNECTOR_BASE_URL" }
  for k, v in pairs(vars) do if v then parts[#parts + 1] = k .. "=" .. q(v) end end
  local cmd = table.concat(parts, " ") .. " " .. lch.interpreter .. " " .. CLI
  if type(args) == "string" then cmd = cmd .. " " .. args
  else for _, a in ipairs(args) do cmd = cmd .. " " .. q(a) end end
  if stdin then
    write_file(tmp .. ".in", stdin)
    cmd = cmd .. " <" .. q(tmp .. ".in")
  end
  local rc = tonumber(sh(cmd .. " >" .. q(tmp .. ".out") .. " 2>" .. q(tmp .. ".err") .. "; echo $?"):match("%d+"))
  local out, err = read_file(tmp .. ".out") or "", read_file(tmp .. ".err") or ""
  os.remove(tmp); os.remove(tmp .. ".out"); os.remove(tmp .. ".err"); os.remove(tmp .. ".in")
  return rc, out, err
end

-- Tests of what the catalogue adds (typed fields, argument counts, --help per field) are pending without it.
local function needs_catalogue()
  if has_catalogue then return false end
  pending("needs leadconnector.catalogue (issue 12)")
  return true
end

local function lines(s)
  local r = {}
  for l in s:gmatch("([^\n]*)\n") do r[#r + 1] = l end
  return r
end

describe("the leadconnector command", function()
  local sb, env
  lch.suite(function(s)
    sb = s
    env = { LEADCONNECTOR_TOKEN = sb.token, LEADCONNECTOR_BASE_URL = sb.url }
  end)

  describe("calls", function()
    it("get-message prints the message as one line of JSON and exits 0", function()
      local rc, out, err = run({ "get-message", "msg_demo_1" }, env)
      assert.equal(0, rc)
      assert.equal("", err)
      assert.equal(1, #lines(out))
      local m = cjson.decode(out)
      assert.equal("msg_demo_1", m.id)
      assert.equal("conv_demo_1", m.conversationId)
      assert.is_string(m.body)
    end)

    it("send-message sends the fields given as flags; _ and - both name the method", function()
      for _, name in ipairs({ "send-message", "send_message" }) do
        local rc, out, err = run({ name, "--type", "SMS", "--contactId", "contact_cli", "--message", "hi " .. name }, env)
        assert.equal(0, rc, err)
        local sent = cjson.decode(out)
        assert.is_string(sent.messageId)
        local m = cjson.decode((select(2, run({ "get-message", sent.messageId }, env))))
        assert.equal("hi " .. name, m.body)
        assert.equal("contact_cli", m.contactId)
      end
      local sends = 0
      for _, r in ipairs(lch.api_requests(sb)) do if r.method == "POST" then sends = sends + 1 end end
      assert.equal(2, sends) -- one request per command, nothing sent twice
    end)

    it("types fields by the catalogue: repeated flags make an array, numbers and booleans are JSON's", function()
      if needs_catalogue() then return end
      local rc, out, err = run({ "send-message", "--type", "SMS", "--contactId", "c1", "--message", "x",
        "--attachments", "https://example.com/a.png", "--attachments", "https://example.com/b.png",
        "--scheduledTimestamp", "1893456000", "--usesNativeSchedulingAi=false" }, env)
      assert.equal(0, rc, err)
      assert.is_string(cjson.decode(out).messageId)
      local body
      for _, r in ipairs(lch.api_requests(sb)) do if r.method == "POST" then body = r.body end end
      assert.same({ "https://example.com/a.png", "https://example.com/b.png" }, body.attachments)
      assert.equal(1893456000, body.scheduledTimestamp)
      assert.equal(false, body.usesNativeSchedulingAi)
    end)

    it("positional arguments and fields together: update-message-status ID --status read", function()
      local rc, out, err = run({ "update-message-status", "msg_demo_1", "--status", "read" }, env)
      assert.equal(0, rc, err)
      assert.equal("msg_demo_1", cjson.decode(out).messageId)
      assert.equal("read", cjson.decode((select(2, run({ "get-message", "msg_demo_1" }, env)))).status)
    end)

    it("--json gives the fields as one object, flags override it", function()
      local rc, out, err = run({ "send-message", "--json", '{"type":"SMS","contactId":"c_json","message":"from json"}',
        "--message", "from the flag" }, env)
      assert.equal(0, rc, err)
      local m = cjson.decode((select(2, run({ "get-message", cjson.decode(out).messageId }, env))))
      assert.equal("from the flag", m.body)
      assert.equal("c_json", m.contactId)
    end)

    it("--pretty prints the same answer indented", function()
      local _, one = run({ "get-message", "msg_demo_1" }, env)
      local rc, pretty = run({ "get-message", "msg_demo_1", "--pretty" }, env)
      assert.equal(0, rc)
      assert.is_true(#lines(pretty) > 5)
      assert.truthy(pretty:find('\n  "id": "msg_demo_1"', 1, true))
      assert.same(cjson.decode(one), cjson.decode(pretty))
    end)

    it("empty arrays print as [] (attachments, a search that finds nothing), empty objects as {}", function()
      if needs_catalogue() then return end
      local rc, out, err = run({ "get-message", "msg_demo_1" }, env)
      assert.equal(0, rc, err)
      assert.truthy(out:find('"attachments":[]', 1, true), out)
      assert.truthy(out:find('"meta":{}', 1, true), out)
      rc, out, err = run({ "search-conversations", "--locationId", "loc_sandbox", "--contactId", "contact_nobody" }, env)
      assert.equal(0, rc, err)
      assert.truthy(out:find('"conversations":[]', 1, true), out)
      rc, out, err = run({ "search-conversations", "--locationId", "loc_sandbox", "--contactId", "contact_nobody",
        "--pretty" }, env)
      assert.equal(0, rc, err)
      assert.truthy(out:find('"conversations": []', 1, true), out)
    end)

    it("get-conversation prints the conversation", function()
      local rc, out = run({ "get-conversation", "conv_demo_1" }, env)
      assert.equal(0, rc)
      assert.equal("conv_demo_1", cjson.decode(out).id)
    end)
  end)

  describe("iterators", function()
    it("each-message streams one JSON line per message of every page", function()
      if needs_catalogue() then return end
      -- three messages to one contact: one conversation
      local conv
      for i = 1, 3 do
        local _, out = run({ "send-message", "--type", "SMS", "--contactId", "c_iter", "--message", "m" .. i }, env)
        conv = cjson.decode(out).conversationId
      end
      local rc, out, err = run({ "each-message", conv, "--limit", "2" }, env)
      assert.equal(0, rc, err)
      local ls = lines(out)
      assert.equal(3, #ls)
      local bodies = {}
      for _, l in ipairs(ls) do
        local m = cjson.decode(l)
        assert.equal(conv, m.conversationId)
        bodies[m.body] = true
      end
      assert.same({ m1 = true, m2 = true, m3 = true }, bodies)
    end)

    it("an iterator that fails: the error on stderr, exit 1", function()
      if needs_catalogue() then return end
      local rc, out, err = run({ "each-message", "no_such_conversation" }, env)
      assert.equal(1, rc)
      assert.equal("", out)
      assert.truthy(err:find("not_found", 1, true), err)
    end)
  end)

  describe("errors", function()
    it("an API error: its one-line tostring on stderr, nothing on stdout, exit 1", function()
      local rc, out, err = run({ "get-message", "no_such_message" }, env)
      assert.equal(1, rc)
      assert.equal("", out)
      assert.equal(1, #lines(err))
      assert.truthy(err:find("not_found", 1, true))
      assert.truthy(err:find("404", 1, true))
    end)

    it("no answer at all (refused connection): a network error, exit 1", function()
      local rc, out, err = run({ "get-message", "msg_demo_1" },
        { LEADCONNECTOR_TOKEN = sb.token, LEADCONNECTOR_BASE_URL = "http://127.0.0.1:" .. lch.unused_port() })
      assert.equal(1, rc)
      assert.equal("", out)
      assert.truthy(err:find("network", 1, true))
    end)

    it("input the library refuses is an error of kind invalid, exit 1, nothing sent", function()
      local rc, _, err = run({ "send-message", "--type", "Pigeon", "--contactId", "c1", "--message", "x" }, env)
      assert.equal(1, rc)
      assert.truthy(err:find("invalid", 1, true))
      assert.truthy(err:find("type", 1, true))
      assert.same({}, lch.api_requests(sb))
    end)

    it("a wrong token: exit 1, and the token is in neither stdout nor stderr", function()
      local secret = "wrong-secret-token-5b1f"
      local rc, out, err = run({ "get-message", "msg_demo_1" },
        { LEADCONNECTOR_TOKEN = secret, LEADCONNECTOR_BASE_URL = sb.url })
      assert.equal(1, rc)
      assert.truthy(err:find("auth", 1, true))
      assert.falsy((out .. err):find(secret, 1, true))
    end)
  end)

  describe("misuse exits 2 and sends nothing", function()
    local cases = { -- name, arguments, what stderr says, needs the catalogue
      { "an unknown method", { "send-pigeon" }, "unknown method" },
      { "a missing argument", { "get-message" }, "needs ID", true },
      { "too many arguments", { "get-message", "a", "b" }, "takes 1 argument", true },
      { "an unknown field", { "send-message", "--type", "SMS", "--contactId", "c", "--bogus", "1" }, "no field --bogus", true },
      { "a missing required field", { "send-message", "--type", "SMS" }, "needs --contactId", true },
      { "a flag without its value", { "send-message", "--type" }, "needs a value" },
      { "--json that is not an object", { "send-message", "--json", "[1," }, "--json needs a JSON object" },
      { "a number field given a word", { "send-message", "--type", "SMS", "--contactId", "c",
        "--scheduledTimestamp", "soon" }, "needs a number", true },
      { "no method at all", {}, "Usage" },
    }
    for _, c in ipairs(cases) do
      it(c[1], function()
        if c[4] and needs_catalogue() then return end
        local rc, out, err = run(c[2], env)
        assert.equal(2, rc, err)
        assert.truthy((err .. out):find(c[3], 1, true), err)
        assert.same({}, lch.api_requests(sb))
      end)
    end

    it("a call the library refuses as misuse (it raises): exit 2, one line on stderr, no Lua traceback", function()
      -- without the catalogue the arguments are not counted first: the library's raise reached the user as a
      -- traceback with exit 1, and a client method that is no API call (close) printed "nil"
      for _, args in ipairs({ { "get-message", "a", "b" }, { "close" }, { "batch" } }) do
        local rc, out, err = run(args, env)
        assert.equal(2, rc, err)
        assert.equal("", out)
        assert.equal(1, #lines(err), err)
        assert.falsy(err:find("traceback", 1, true), err)
        assert.falsy(err:find("^nil"), err)
      end
      assert.same({}, lch.api_requests(sb))
    end)

    it("no LEADCONNECTOR_TOKEN: says so, exit 2", function()
      local rc, _, err = run({ "get-message", "msg_demo_1" }, { LEADCONNECTOR_BASE_URL = sb.url })
      assert.equal(2, rc)
      assert.truthy(err:find("LEADCONNECTOR_TOKEN", 1, true))
      assert.same({}, lch.api_requests(sb))
    end)

    it("a --token argument is refused, its value never repeated, nothing sent", function()
      for _, args in ipairs({ { "get-message", "msg_demo_1", "--token", "argv-secret-77" },
                               { "--token=argv-secret-77", "get-message", "msg_demo_1" } }) do
        local rc, out, err = run(args, env)
        assert.equal(2, rc)
        assert.truthy(err:find("LEADCONNECTOR_TOKEN", 1, true))
        assert.falsy((out .. err):find("argv-secret-77", 1, true))
      end
      assert.same({}, lch.api_requests(sb))
    end)
  end)

  describe("--help", function()
    it("lists every method of the catalogue with its arguments and fields", function()
      local rc, out = run({ "--help" }, {})
      assert.equal(0, rc)
      assert.truthy(out:find("LEADCONNECTOR_TOKEN", 1, true))
      if not has_catalogue then
        assert.truthy(out:find("catalogue", 1, true)) -- says why it cannot list them
      end
      if needs_catalogue() then return end
      for _, op in ipairs(catalogue.operations) do
        local line = out:match("\n  (" .. op.name:gsub("_", "%%-") .. "[^\n]*)")
        assert.truthy(line, op.name)
        for _, a in ipairs(op.args or {}) do assert.truthy(line:find(a.name:upper(), 1, true), op.name .. " " .. a.name) end
        for _, f in ipairs(op.body or op.query or {}) do
          assert.truthy(out:find("--" .. f.name, 1, true), op.name .. " --" .. f.name)
        end
      end
      for _, it_ in ipairs(catalogue.iterators or {}) do
        assert.truthy(out:find("\n  " .. it_.name:gsub("_", "-"), 1, true), it_.name)
      end
    end)

    it("METHOD --help describes each field: type, required, enum values", function()
      local rc, out = run({ "send-message", "--help" }, {})
      assert.equal(0, rc)
      if needs_catalogue() then return end
      assert.truthy(out:find("Usage: leadconnector send-message", 1, true))
      assert.truthy(out:find("--type%s+[^\n]*SMS|[^\n]*required"))
      assert.truthy(out:find("--attachments%s+array"))
    end)
  end)

  describe("webhook-verify", function()
    it(has_webhook and "checks a saved delivery: a good signature prints the event, a changed byte exits 1"
        or "says it is unavailable without leadconnector.webhook, exit 1", function()
      local dir = sh("mktemp -d"):gsub("%s+$", "")
      local body = '{"type":"InboundMessage","locationId":"loc1","messageId":"m1","body":"hi"}'
      if not has_webhook then
        write_file(dir .. "/delivery", "Content-Type: application/json\n\n" .. body)
        local rc, out, err = run({ "webhook-verify", dir .. "/delivery" }, {})
        assert.equal(1, rc)
        assert.equal("", out)
        assert.truthy(err:find("unavailable", 1, true))
        sh("rm -rf " .. q(dir))
        return
      end
      sh(("openssl genpkey -algorithm ed25519 -out %s/k.pem 2>/dev/null && openssl pkey -in %s/k.pem -pubout -out %s/pub.pem")
        :format(dir, dir, dir))
      write_file(dir .. "/body", body)
      local sig = sh(("openssl pkeyutl -sign -inkey %s/k.pem -rawin -in %s/body | base64 -w0"):format(dir, dir))
      assert.truthy(#sig > 40)
      write_file(dir .. "/delivery", "POST /hook HTTP/1.1\r\nContent-Type: application/json\r\nX-GHL-Signature: " ..
        sig .. "\r\n\r\n" .. body)
      local rc, out, err = run({ "webhook-verify", dir .. "/delivery", "--public-key", dir .. "/pub.pem",
        "--tolerance", "false" }, {})
      assert.equal(0, rc, err)
      assert.equal("InboundMessage", cjson.decode(out).type)
      write_file(dir .. "/delivery", "X-GHL-Signature: " .. sig .. "\n\n" .. body:gsub("hi", "ho"))
      rc, out = run({ "webhook-verify", dir .. "/delivery", "--public-key", dir .. "/pub.pem", "--tolerance", "false" }, {})
      assert.equal(1, rc)
      assert.equal("", out)
      sh("rm -rf " .. q(dir))
    end)
  end)

  describe("installed", function()
    it("make install puts a leadconnector that runs by its path, on this interpreter, with no LUA_PATH", function()
      local dir = sh("mktemp -d"):gsub("%s+$", "")
      local which = lch.interpreter == "luajit" and "LUA_INCDIR=/usr/include/luajit-2.1 LUA=luajit"
        or ("LUA_VERSION=" .. lch.interpreter:match("%d+%.%d+"))
      local log = sh(("%s make -s install %s PREFIX=%s 2>&1; echo rc=$?"):format(helpers.CLEAN_ENV, which, q(dir)))
      assert.truthy(log:find("rc=0", 1, true), log)
      local cli = dir .. "/bin/leadconnector"
      local shebang = (read_file(cli) or ""):match("^#![^\n]*")
      assert.truthy(shebang and shebang:find(lch.interpreter, 1, true), shebang)
      local out = sh(("env -u LUA_PATH -u LUA_CPATH -u LUA_PATH_5_4 -u LUA_CPATH_5_4 LEADCONNECTOR_TOKEN=%s " ..
        "LEADCONNECTOR_BASE_URL=%s %s get-conversation conv_demo_1 2>&1; echo rc=$?"):format(q(sb.token), q(sb.url), q(cli)))
      assert.truthy(out:find('"id":"conv_demo_1"', 1, true), out)
      assert.truthy(out:find("rc=0", 1, true), out)
      assert.is_truthy(read_file(dir .. "/bin/leadconnector-sandbox"))
      sh("rm -rf " .. q(dir))
    end)
  end)
end)

-- examples/quickstart.lua -- send an SMS, read it back, mark it read, read the conversation.
--
-- `make demo` runs this against a local sandbox it starts for you. By hand:
--
--   bin/leadconnector-sandbox &                       # prints LEADCONNECTOR_SANDBOX_URL / _TOKEN
--   export LEADCONNECTOR_SANDBOX_URL=http://127.0.0.1:PORT LEADCONNECTOR_SANDBOX_TOKEN=sandbox-token
--   LUA_PATH="./lua/?.lua;./lua/?/init.lua;;" LUA_CPATH="./build/lua5.4/?.so;;" lua5.4 examples/quickstart.lua
--
-- Against the real API instead: set LEADCONNECTOR_TOKEN (a Private Integration Token or OAuth access
-- token) and LEADCONNECTOR_CONTACT_ID (a contact of that sub-account -- this sends it a real SMS);
-- LEADCONNECTOR_BASE_URL overrides the API's address.
-- Exits 0 when every step worked, 1 otherwise.
local leadconnector = require "leadconnector"

local function getenv(name)
  local v = os.getenv(name)
  if v == nil or v == "" then return nil end
  return v
end

local function fail(step, err)
  io.stderr:write(("quickstart: %s failed: %s\n"):format(step, tostring(err)))
  os.exit(1)
end

local opts
local target
if getenv("LEADCONNECTOR_TOKEN") then
  opts = { token = getenv("LEADCONNECTOR_TOKEN"), base_url = getenv("LEADCONNECTOR_BASE_URL") }
  target = "the LeadConnector API at " .. (opts.base_url or leadconnector.DEFAULT_BASE_URL or "its default address")
elseif getenv("LEADCONNECTOR_SANDBOX_URL") then
  opts = { token = getenv("LEADCONNECTOR_SANDBOX_TOKEN") or "sandbox-token", base_url = getenv("LEADCONNECTOR_SANDBOX_URL") }
  target = "the sandbox at " .. opts.base_url
else
  io.stderr:write("quickstart: set LEADCONNECTOR_TOKEN (real API), or start bin/leadconnector-sandbox and set\n" ..
    "LEADCONNECTOR_SANDBOX_URL and LEADCONNECTOR_SANDBOX_TOKEN from what it prints (or just run `make demo`).\n")
  os.exit(1)
end

-- The sandbox's seeded demo contact (see sandbox/README.md), unless one is given.
local contact = getenv("LEADCONNECTOR_CONTACT_ID")
if not contact then
  if getenv("LEADCONNECTOR_TOKEN") then
    io.stderr:write("quickstart: with LEADCONNECTOR_TOKEN, set LEADCONNECTOR_CONTACT_ID to a contact to message\n")
    os.exit(1)
  end
  contact = "contact_demo_1"
end

print(("Talking to %s, contact %s"):format(target, contact))

local function step(n, label, text)
  local head = n and (n .. ". " .. label .. ":") or ""
  print(("%-26s %s"):format(head, text))
end

local client, err = leadconnector.new(opts)
if not client then fail("creating the client", err) end

-- 1. send an SMS
local sent
sent, err = client:send_message {
  type = "SMS",
  contactId = contact,
  message = "Hello from leadconnector-lua's quickstart!",
}
if not sent then fail("send_message", err) end
step(1, "sent an SMS", ("message %s in conversation %s (status %s)")
  :format(sent.messageId, sent.conversationId, tostring(sent.status)))

-- 2. read it back
local msg
msg, err = client:get_message(sent.messageId)
if not msg then fail("get_message", err) end
step(2, "read it back", ("%q, %s, status %s, added %s")
  :format(msg.body, msg.direction, msg.status, tostring(msg.dateAdded)))
step(nil, "", tostring(msg))

-- 3. mark it read
local updated
updated, err = client:update_message_status(msg.id, { status = "read" })
if not updated then fail("update_message_status", err) end
msg, err = client:get_message(sent.messageId)
if not msg then fail("get_message (after the update)", err) end
step(3, "marked it read", "status is now " .. tostring(msg.status))

-- 4. read the conversation
local conv
conv, err = client:get_conversation(msg.conversationId)
if not conv then fail("get_conversation", err) end
step(4, "read the conversation", ("%s: %d unread inbound, type %s")
  :format(conv.id, conv.unreadCount, tostring(conv.type)))
step(nil, "", tostring(conv))

-- and what an error looks like: an id that does not exist
local missing, nf = client:get_message("no-such-message")
if missing then fail("get_message of an unknown id", "it answered a message") end
step(5, "an unknown id gives", tostring(nf))

if msg.status ~= "read" then fail("checking the status", "expected read, got " .. tostring(msg.status)) end
print("Done: every step worked.")

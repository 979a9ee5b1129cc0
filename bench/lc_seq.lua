-- Rows "leadconnector (Lua 5.4)": one client, one method, called COUNT times in
-- a row, each call waiting for its answer (the library reuses its connection).
--
--   lua5.4 bench/lc_seq.lua BASE_URL TOKEN CALL ID COUNT
--
-- CALL: get_message | send_message | update_message_status | get_conversation | get_messages | each_message
-- (ID: the conversation for the last two; each_message counts pages, 5 per pass over 100 messages).
-- Every result is checked the way a caller would (one field read from it).
-- Prints one "BENCH requests=N errors=E seconds=S" line.
-- luasocket is loaded for its clock only (socket.gettime).
local gettime = require("socket.core").gettime
local leadconnector = require "leadconnector"

local base, token, call, id, count = arg[1], arg[2], arg[3], arg[4], tonumber(arg[5])
if not (base and token and call and id and count) then
  io.stderr:write("usage: lc_seq.lua BASE_URL TOKEN CALL ID COUNT\n")
  os.exit(2)
end

-- BENCH_CAINFO (the TLS rows): the CA file the server's certificate is verified against.
-- BENCH_ENGINE=libcurl: single calls on libcurl's HTTP engine instead of the direct one (the comparison before 2026-12-07)
local client = assert(leadconnector.new { token = token, base_url = base, ca_file = os.getenv("BENCH_CAINFO"),
  engine = os.getenv("BENCH_ENGINE") })

local do_call
if call == "get_message" then
  do_call = function()
    local m, err = client:get_message(id)
    return m and m.id, err
  end
elseif call == "send_message" then
  do_call = function()
    local sent, err = client:send_message { type = "SMS", contactId = "contact_demo_1", message = "hi" }
    return sent and sent.messageId, err
  end
elseif call == "update_message_status" then
  do_call = function()
    local r, err = client:update_message_status(id, { status = "read" })
    return r and r.messageId, err
  end
elseif call == "get_conversation" then
  do_call = function()
    local c, err = client:get_conversation(id)
    return c and c.id, err
  end
elseif call == "get_messages" then
  -- a page of 20 Message userdata (ID is the conversation)
  do_call = function()
    local page, err = client:get_messages(id, { limit = 20 })
    return page and page.messages[20] and page.messages[20].id, err
  end
elseif call == "each_message" then
  -- COUNT pages: each_message over 5 pages of 20, again and again (ID is the conversation)
  do_call = function()
    local n, last = 0, nil
    for msg, err in client:each_message(id, { limit = 20 }) do
      if not msg then return nil, err end
      n = n + 1
      last = msg.id
      if n == 100 then break end
    end
    return n == 100 and last, "each_message saw " .. n .. " messages"
  end
  count = math.floor(count / 5)
else
  io.stderr:write("lc_seq.lua: unknown CALL ", call, "\n")
  os.exit(2)
end

local errors = 0
local t0 = gettime()
for _ = 1, count do
  local ok, err = do_call()
  if not ok then
    errors = errors + 1
    if errors == 1 then io.stderr:write("lc_seq ", call, ": first error: ", tostring(err), "\n") end
  end
end
local elapsed = gettime() - t0
local requests = call == "each_message" and count * 5 or count -- each_message: 5 pages per call
print(string.format("BENCH requests=%d errors=%d seconds=%.6f", requests, call == "each_message" and errors * 5 or errors, elapsed))

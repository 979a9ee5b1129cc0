-- Rows "leadconnector (Lua 5.4)": one client, one method, called COUNT times in
-- a row, each call waiting for its answer (the library reuses its connection).
--
--   lua5.4 bench/lc_seq.lua BASE_URL TOKEN CALL ID COUNT
--
-- CALL: get_message | send_message | update_message_status | get_conversation.
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
local client = assert(leadconnector.new { token = token, base_url = base, ca_file = os.getenv("BENCH_CAINFO") })

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
print(string.format("BENCH requests=%d errors=%d seconds=%.6f", count, errors, elapsed))

-- Row "leadconnector webhook.verify": the library's whole check of one delivery, COUNT times: header lookup,
-- the cached key, strict base64, Ed25519 over the raw bytes (the C core, OpenSSL), then the body decoded into an
-- Event and one field read, as a handler would.
--
--   lua5.4 bench/wh_verify.lua PUBLIC_KEY_PEM_FILE BODY_FILE SIGNATURE_B64 COUNT
--
-- The timestamp window is off (the body's timestamp is fixed); no seen store (it would refuse every repeat).
-- Prints one "BENCH requests=N errors=E seconds=S" line.
local gettime = require("socket.core").gettime
local webhook = require "leadconnector.webhook"

local function read(p)
  local f = assert(io.open(p, "rb"))
  local s = f:read("*a")
  f:close()
  return s
end
local pem, body, sig, count = read(arg[1]), read(arg[2]), arg[3], tonumber(arg[4])
local headers = { ["content-type"] = "application/json", ["x-ghl-signature"] = sig, ["user-agent"] = "bench" }
local opts = { public_key = pem, tolerance = false }

local errors = 0
local t0 = gettime()
for _ = 1, count do
  local ev = webhook.verify(body, headers, opts)
  if not (ev and ev.messageId) then errors = errors + 1 end
end
local secs = gettime() - t0
io.write(("BENCH requests=%d errors=%d seconds=%.6f\n"):format(count, errors, secs))

-- The webhook rows of `make bench` (issue 13): verifications per second of webhook.verify against a C loop of
-- OpenSSL's EVP verify on the same body, and against the Node SDK's own webhook check. bench.lua adds them with
-- require("wh_rows").add(row, env); their set-up (a fresh Ed25519 key and a signature, made with openssl, and the
-- C loop built) happens once, the first time a row is about to run.
local lib = require "lib"

local M = {}

-- A typical InboundMessage delivery, compact, in the key order JSON.stringify keeps (so the Node SDK, which
-- re-serialises, can verify it at all).
local BODY = '{"type":"InboundMessage","appId":"65f0aa0bench","locationId":"l1Bench000000000000","attachments":[],' ..
  '"body":"Yes please, is Friday at 10 possible? Thanks, Ada","contactId":"contactBench0000000","contentType":' ..
  '"text/plain","conversationId":"convBench00000000000","dateAdded":"2026-01-01T00:00:00.000Z","direction":' ..
  '"inbound","messageType":"SMS","messageId":"msgBench000000000000","status":"delivered","timestamp":' ..
  '"2026-01-01T00:00:00.000Z","webhookId":"whBench0000000000000"}'

function M.add(row, env)
  local OUT, LUA, CC = env.OUT, env.LUA, env.CC
  local files = { key = OUT .. "/wh.key", pub = OUT .. "/wh.pub", body = OUT .. "/wh.body" }
  local state
  local function setup()
    if state ~= nil then return state, M.why end
    state = false
    local f = assert(io.open(files.body, "wb"))
    f:write(BODY)
    f:close()
    local q = lib.quote
    if not lib.sh(("openssl genpkey -algorithm ed25519 -out %s 2>/dev/null && openssl pkey -in %s -pubout -out %s")
      :format(q(files.key), q(files.key), q(files.pub))) then
      M.why = "openssl genpkey failed"
      return false, M.why
    end
    M.sig = (lib.capture(("openssl pkeyutl -sign -inkey %s -rawin -in %s | base64 -w0"):format(q(files.key),
      q(files.body))):gsub("%s+", ""))
    local flags = lib.capture("pkg-config --cflags --libs libcrypto 2>/dev/null"):gsub("%s+$", "")
    if not lib.sh(("%s -O2 -Wall -Wextra -o %s/wh_evp bench/wh_evp.c %s 2>%s/build-wh_evp.log")
      :format(CC, OUT, flags ~= "" and flags or "-lcrypto", OUT)) then
      M.why = "building bench/wh_evp.c failed: see " .. OUT .. "/build-wh_evp.log"
      return false, M.why
    end
    state = true
    return true
  end
  local function needs(extra)
    return function()
      local ok, why = setup()
      if not ok then return false, why end
      if extra then return extra() end
      return true
    end
  end
  local function args(c) return files.pub, files.body, M.sig end
  row { id = "wh_evp", label = "webhook: C loop of OpenSSL EVP_DigestVerify", base = "wh_evp", needs = needs(),
    note = "the baseline of the webhook rows (verifications/s)",
    argv = function(c, n) local p, b, s = args(c) return { OUT .. "/wh_evp", p, b, s, n } end }
  row { id = "wh_lua", label = "webhook: leadconnector webhook.verify (Lua 5.4)", base = "wh_evp",
    needs = needs(env.need_library), note = "ratios vs the C EVP loop",
    argv = function(c, n) local p, b, s = args(c) return { LUA, "bench/wh_verify.lua", p, b, s, n } end }
  row { id = "wh_node", label = "webhook: node SDK WebhookManager check", base = "wh_evp",
    needs = needs(env.need_node), note = "ratios vs the C EVP loop; verifies JSON.stringify(req.body)",
    argv = function(c, n) local p, b, s = args(c) return { "node", "bench/node/webhook.js", p, b, s, n } end }
end

-- The target lines: ratio_target(rid, bid, field, pass, label, xfmt, vsfmt) and at_least from bench.lua.
function M.targets(ratio_target, at_least)
  ratio_target("wh_lua", "wh_evp", "rps", at_least(0.9),
    "webhook.verify >= 0.9x a C loop of EVP verify (verifications/s)", "%.3fx", "%.0f vs %.0f")
  ratio_target("wh_lua", "wh_node", "rps", at_least(1),
    "webhook.verify vs the Node SDK's webhook check (verifications/s)", "%.1fx", "%.0f vs %.0f")
end

return M

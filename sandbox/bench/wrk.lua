-- wrk script for measuring the sandbox. Start the sandbox without rate limits, then e.g.
--   wrk -t1 -c16 -d5s -s sandbox/bench/wrk.lua http://127.0.0.1:PORT -- get    # GET a seeded message
--   wrk -t1 -c16 -d5s -s sandbox/bench/wrk.lua http://127.0.0.1:PORT -- send   # POST an SMS
--   wrk -t1 -c16 -d5s -s sandbox/bench/wrk.lua http://127.0.0.1:PORT -- mix    # alternate both
-- The token is LEADCONNECTOR_SANDBOX_TOKEN from the environment, or sandbox-token.
local token = os.getenv("LEADCONNECTOR_SANDBOX_TOKEN") or "sandbox-token"
local mode = "get"
local n = 0

local common = {
  ["Authorization"] = "Bearer " .. token,
  ["Version"] = "2021-04-15",
  ["Accept"] = "application/json",
}
local send_headers = { ["Content-Type"] = "application/json" }
for k, v in pairs(common) do send_headers[k] = v end

local get_req, send_req

function init(args)
  mode = args[1] or "get"
  get_req = wrk.format("GET", "/conversations/messages/msg_demo_1", common)
  send_req = wrk.format("POST", "/conversations/messages", send_headers,
    '{"type":"SMS","contactId":"contact_bench","message":"Hello from wrk"}')
end

function request()
  n = n + 1
  if mode == "send" or (mode == "mix" and n % 2 == 0) then return send_req end
  return get_req
end

local bad = 0
function response(status, headers, body)
  if status ~= 200 and status ~= 201 then
    bad = bad + 1
    if bad <= 3 then io.stderr:write("unexpected status ", status, ": ", body or "", "\n") end
  end
end

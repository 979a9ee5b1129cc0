-- provider.carrier: a stand-in SMS carrier, so the example runs without one. POST /send {to, text, callback}
-- answers {id, status}: "failed" (code 30003, unreachable) when the text contains "[fail]", else "delivered" --
-- and then, like a phone answering, POSTs {id, from, text, in_reply_to} to `callback` a moment later.
local cjson = require "cjson.safe"
local http = require "provider.http"
local ngx = ngx

local M = {}
local seq = 0

function M.send()
  ngx.req.read_body()
  local req = cjson.decode(ngx.req.get_body_data() or "")
  if type(req) ~= "table" or type(req.to) ~= "string" or type(req.text) ~= "string" then
    ngx.status = 400
    return ngx.say('{"error":"to and text are required"}')
  end
  seq = seq + 1
  local id = ("carrier-%d-%d"):format(ngx.worker.pid(), seq)
  local failed = req.text:find("[fail]", 1, true) ~= nil
  ngx.header["Content-Type"] = "application/json"
  ngx.say(cjson.encode(failed and { id = id, status = "failed", code = "30003", error = "Unreachable destination" }
    or { id = id, status = "delivered" }))
  if not failed and type(req.callback) == "string" then
    ngx.timer.at(0.05, function(premature)
      if premature then return end
      local reply = { id = id .. "-r", from = req.to, text = "Re: " .. req.text, in_reply_to = id }
      for attempt = 1, 5 do -- a carrier retries its callback too
        local status = http.post(req.callback, reply)
        if status == 200 then return end
        ngx.sleep(0.1 * attempt)
      end
      ngx.log(ngx.ERR, "carrier: the provider did not take reply ", reply.id)
    end)
  end
end

return M

-- provider.http: one JSON POST over an nginx cosocket (never blocks the worker). Enough for the example's
-- carrier calls; a real provider would use its carrier's SDK or lua-resty-http.
local cjson = require "cjson.safe"
local ngx = ngx

local M = {}

-- post(url, table) -> status, decoded body (or raw text) | nil, err. HTTP/1.0: the answer ends with the connection.
function M.post(url, t, timeout_ms)
  local host, port, path = url:match("^http://([^/:]+):?(%d*)(.*)$")
  if not host then return nil, "only http:// URLs: " .. tostring(url) end
  local body = cjson.encode(t)
  local sock = ngx.socket.tcp()
  sock:settimeout(timeout_ms or 5000)
  local ok, err = sock:connect(host, tonumber(port) or 80)
  if not ok then return nil, "connect " .. url .. ": " .. tostring(err) end
  ok, err = sock:send(("POST %s HTTP/1.0\r\nHost: %s\r\nConnection: close\r\nContent-Type: application/json\r\n" ..
    "Content-Length: %d\r\n\r\n%s"):format(path ~= "" and path or "/", host, #body, body))
  if not ok then sock:close() return nil, "send: " .. tostring(err) end
  local data, rerr, partial = sock:receive("*a")
  sock:close()
  data = data or partial
  local status = tonumber((data or ""):match("^HTTP/1%.%d (%d%d%d)"))
  if not status then return nil, "no HTTP answer: " .. tostring(rerr) end
  local text = data:match("\r\n\r\n(.*)$") or ""
  return status, cjson.decode(text) or text
end

return M

--[[ spec/nginx/describe.lua -- one call's outcome as plain JSON-able data, the same way in nginx and in plain Lua,
so spec/60-nginx_spec.lua can compare what the ngx transport gives with what the libcurl transport gives.

  describe(value, err) -> { ok = true, typeof = "Message"|"Conversation"|nil, tostring = ..., fields = {...} }
                        | { ok = false, kind, status, message, request_sent, method, path, attempts, retry_after,
                            trace_id, field, body_type, tostring, is_error }
]]
local leadconnector = require "leadconnector"

local function plain(v, depth)
  depth = depth or 0
  if type(v) ~= "table" or depth > 20 then
    if type(v) == "userdata" or type(v) == "function" then return tostring(type(v)) end
    return v
  end
  local t = {}
  for k, x in pairs(v) do t[tostring(k)] = plain(x, depth + 1) end
  return t
end

return function(value, err)
  if value ~= nil then
    local kind = leadconnector.typeof(value)
    local d = { ok = true, typeof = kind, lua_type = type(value) }
    if kind then
      d.tostring = tostring(value)
      d.fields = plain(value:to_table())
      d.id = value.id
    else
      d.fields = plain(value)
    end
    return d
  end
  return {
    ok = false, is_error = leadconnector.is_error(err), kind = err.kind, status = err.status,
    message = err.message, request_sent = err.request_sent, method = err.method, path = err.path,
    attempts = err.attempts, retry_after = err.retry_after, trace_id = err.trace_id, field = err.field,
    body_type = type(err.body), tostring = tostring(err),
  }
end

--[[ spec/oauthhelpers.lua -- what the OAuth specs (80-, 82-) share.

  oh.stats(sb [, refresh_token])  -> the sandbox's /oauth stats (token_requests, or refreshes/uses of one token)
  oh.lua_child(script, args)       -> pipe, file: script run by the interpreter under test (this run's package paths),
                                      stdout and stderr on the pipe; remove file when done
  oh.burst(url, store, args, start) -> total, outputs: 6 processes, each with an app on the store made by the Lua
                                      expression `store` (it sees args as arg[3], arg[4], ...), wait until `start`
                                      (core.time()) then make 4 calls through app:token_source("loc_sandbox");
                                      total = calls that succeeded, outputs = each process's text ("ERR ..." lines
                                      for failures)
]]
local helpers = require "helpers"
local lch = require "lchelpers"

local oh = {}

function oh.stats(sb, rt)
  return sb:control("GET", "/_sandbox/oauth/stats" .. (rt and ("?refresh_token=" .. rt) or ""))
end

function oh.lua_child(script, args)
  local file = os.tmpname()
  helpers.write_file(file, script)
  local prelude = ("package.path=%q package.cpath=%q"):format(package.path, package.cpath)
  local cmd = ("%s -e %q %s %s 2>&1"):format(lch.interpreter, prelude, file, table.concat(args, " "))
  return io.popen(cmd, "r"), file
end

local BURST = [[
local oauth, lc, core = require "leadconnector.oauth", require "leadconnector", require "leadconnector.core"
local url, start = arg[1], tonumber(arg[2])
local app = assert(oauth.app { client_id = "sandbox-client", client_secret = "sandbox-secret", base_url = url,
  store = %s })
local c = assert(lc.new { auth = app:token_source("loc_sandbox"), base_url = url, max_retries = 0, rate_limit = false })
while core.time() < start do core.sleep(0.001) end
local n = 0
for _ = 1, 4 do
  local v, err = c:get_conversation("conv_demo_1")
  if v then n = n + 1 else io.write("ERR ", tostring(err), "\n") end
end
io.write("OK ", n, "\n")
]]

function oh.burst(url, store, args, start)
  local argv = { url, ("%.3f"):format(start) }
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  local procs = {}
  for i = 1, 6 do procs[i] = { oh.lua_child(BURST:format(store), argv) } end
  local total, outputs = 0, {}
  for i = 1, 6 do
    local out = procs[i][1]:read("*a")
    procs[i][1]:close()
    os.remove(procs[i][2])
    outputs[i] = out
    total = total + (tonumber(out:match("OK (%d+)")) or 0)
  end
  return total, outputs
end

return oh

rockspec_format = "3.0"
package = "leadconnector"
version = "scm-1"
source = {
  url = "git+https://example.invalid/leadconnector.git",
}
description = {
  summary = "LeadConnector (HighLevel) Conversations API client with a C core (libcurl, lua-cjson)",
  detailed = [[
Send SMS, email, WhatsApp, chat and social messages, read messages and conversations, and report delivery
status through the LeadConnector Conversations API. Validation, JSON and HTTP run in C; retries, deadlines and
rate limits are handled for you; inside nginx/OpenResty it runs on cosockets. Comes with the `leadconnector`
command and `leadconnector-sandbox`, a local twin of the API.
]],
  license = "MIT",
  labels = { "http", "api", "sms", "openresty" },
}
dependencies = {
  "lua >= 5.1, < 5.5",
  "lua-cjson >= 2.1.0",
}
-- libcurl, libcrypto and hiredis are found by the Makefile through pkg-config (Debian keeps curl.h in a multiarch
-- directory that LuaRocks' own header probe does not search):
--   apt-get install libcurl4-openssl-dev libssl-dev libhiredis-dev pkg-config
-- Only variables LuaRocks defines are passed: the Makefile reads which Lua (5.1-5.4 or LuaJIT) the build is for
-- from the headers in LUA_INCDIR and builds into build/<that Lua>/, so each version installed from one clone gets
-- its own core. For LuaJIT/OpenResty: luarocks --lua-version=5.1 make ... LUA_INCDIR=/usr/include/luajit-2.1
build = {
  type = "make",
  makefile = "Makefile",
  build_target = "all",
  install_target = "install-lib",
  build_variables = {
    CFLAGS = "$(CFLAGS)",
    LIBFLAG = "$(LIBFLAG)",
    LUA_INCDIR = "$(LUA_INCDIR)",
    LUA = "$(LUA)",
  },
  install_variables = {
    INST_LIBDIR = "$(LIBDIR)",
    INST_LUADIR = "$(LUADIR)",
    LUA_INCDIR = "$(LUA_INCDIR)",
    LUA = "$(LUA)",
  },
  install = {
    bin = {
      ["leadconnector"] = "bin/leadconnector",
      ["leadconnector-sandbox"] = "bin/leadconnector-sandbox",
    },
  },
}

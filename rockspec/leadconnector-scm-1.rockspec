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
rate limits are handled for you; inside nginx/OpenResty it runs on cosockets.
]],
  license = "MIT",
  labels = { "http", "api", "sms", "openresty" },
}
dependencies = {
  "lua >= 5.1, < 5.5",
  "lua-cjson >= 2.1.0",
}
-- libcurl is found by the Makefile through pkg-config (Debian keeps curl.h in a multiarch directory that
-- LuaRocks' own header probe does not search): apt-get install libcurl4-openssl-dev pkg-config.
build = {
  type = "make",
  makefile = "Makefile",
  build_target = "all",
  install_target = "install",
  build_variables = {
    CFLAGS = "$(CFLAGS)",
    LIBFLAG = "$(LIBFLAG)",
    LUA_INCDIR = "$(LUA_INCDIR)",
    LUA_VERSION = "$(LUA_VERSION)",
  },
  install_variables = {
    INST_LIBDIR = "$(LIBDIR)",
    INST_LUADIR = "$(LUADIR)",
    LUA_VERSION = "$(LUA_VERSION)",
  },
}

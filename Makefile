# leadconnector - build, test, install.
#
#   make                 C core for Lua 5.4 into build/lua5.4/
#   make luajit          C core for LuaJIT 2.1 (OpenResty) into build/luajit/
#   make LUA_VERSION=5.3 C core for Lua 5.3 into build/lua5.3/ (5.1, 5.2, 5.3, 5.4); `make lua5.3` is the same
#   make LUA_INCDIR=DIR  C core for the Lua whose headers are in DIR (what LuaRocks does), into build/<abi>/
#   make check           install Debian packages if missing, fuzz briefly, run every test on Lua 5.4, LuaJIT, ASan+UBSan
#                        and valgrind, the non-nginx tests on Lua 5.1-5.3, and the LuaRocks install check
#                        (the README's test command)
#   make demo            install packages if missing, build, start the sandbox, run examples/quickstart.lua
#   make install         the core, the Lua modules, the sandbox's Lua files and the `leadconnector` and
#                        `leadconnector-sandbox` commands, for the Lua chosen as above (install-luajit: for LuaJIT)
#   make valgrind / asan / bench / fuzz
#
# Which Lua a build is for is read from the headers in LUA_INCDIR (luajit.h present: LuaJIT; else LUA_VERSION_NUM
# of lua.h), so each version and ABI gets a build directory of its own, build/lua5.1 ... build/lua5.4, build/luajit,
# whoever sets LUA_INCDIR: two versions built from one clone never share an object.
# Honours LUA_INCDIR, LUA_VERSION, LUA, CFLAGS, LIBFLAG, DESTDIR, PREFIX, INST_LIBDIR, INST_LUADIR, INST_BINDIR.
# Never links -llua: the host provides Lua.

LUA_VERSION  ?= 5.4
LUA_INCDIR   ?= /usr/include/lua$(LUA_VERSION)
LUAJIT       ?= luajit
LUAJIT_INCDIR ?= /usr/include/luajit-2.1
CC           ?= cc
CFLAGS       ?= -O2 -g
LIBFLAG      ?= -shared
PKG_CONFIG   ?= pkg-config
# The C libraries of the core, all found through pkg-config: libcurl (HTTP), libcrypto (webhook signatures),
# hiredis (the Redis client of the shared limiter and the OAuth store).
DEP_PKGS     ?= libcurl libcrypto hiredis
CURL_CFLAGS  ?= $(shell $(PKG_CONFIG) --cflags $(DEP_PKGS) 2>/dev/null)
CURL_LIBS    ?= $(shell $(PKG_CONFIG) --libs $(DEP_PKGS) 2>/dev/null || echo -lcurl -lcrypto -lhiredis)
WERROR       ?= -Werror

# The ABI of the headers in LUA_INCDIR: luajit, or lua5.N from LUA_VERSION_NUM (50N).
LUA_ABI := $(shell if [ -f '$(LUA_INCDIR)/luajit.h' ]; then echo luajit; \
  else n=$$(sed -n 's/^\#define[[:space:]]*LUA_VERSION_NUM[[:space:]]*\([0-9][0-9]*\).*/\1/p' '$(LUA_INCDIR)/lua.h' 2>/dev/null); \
  [ -n "$$n" ] && echo lua$$((n / 100)).$$((n % 100)); fi)
ifeq ($(LUA_ABI),)
LUA_ABI := no-lua-headers
endif
# The Lua version of that ABI (LuaJIT is a Lua 5.1): where modules go, which interpreter runs the commands.
ABI_VERSION  := $(if $(filter luajit,$(LUA_ABI)),5.1,$(LUA_ABI:lua%=%))
ifeq ($(LUA_ABI),luajit)
LUA          ?= $(LUAJIT)
else
LUA          ?= lua$(ABI_VERSION)
endif
PREFIX       ?= /usr/local
INST_LIBDIR  ?= $(PREFIX)/lib/lua/$(ABI_VERSION)
INST_LUADIR  ?= $(PREFIX)/share/lua/$(ABI_VERSION)
INST_BINDIR  ?= $(PREFIX)/bin

# Always on, whatever CFLAGS the caller brings.
LC_CFLAGS = -std=c99 -D_POSIX_C_SOURCE=200809L -fPIC -fvisibility=hidden -Wall -Wextra $(WERROR)

# Every C file of csrc/ is part of the core (one file per concern).
SRC  = $(sort $(wildcard csrc/*.c))
HDRS = $(wildcard csrc/*.h)
LUA_SRC = $(wildcard lua/leadconnector/*.lua lua/leadconnector/*/*.lua)

BUILD ?= build
SO    = $(BUILD)/$(LUA_ABI)/leadconnector/core.so
# The Lua versions the suite runs on besides 5.4 and LuaJIT.
OTHER_LUAS = lua5.1 lua5.2 lua5.3

.PHONY: catalogue all luajit $(OTHER_LUAS) lua5.4 deps check test demo install install-lib install-bin install-luajit \
	uninstall clean valgrind asan bench fuzz symbols install-check

all: $(SO)

# One core per ABI, each in its own directory: the same rule with the other headers.
luajit:
	@$(MAKE) --no-print-directory all LUA_INCDIR=$(LUAJIT_INCDIR) LUA=$(LUAJIT)
$(OTHER_LUAS) lua5.4:
	@$(MAKE) --no-print-directory all LUA_VERSION=$(@:lua%=%) LUA_INCDIR=/usr/include/$@ LUA=$@

$(SO): $(SRC) $(HDRS)
	@[ "$(LUA_ABI)" != no-lua-headers ] || { echo "no Lua headers in LUA_INCDIR=$(LUA_INCDIR) (lua.h with \
	LUA_VERSION_NUM): install liblua$(LUA_VERSION)-dev (scripts/deps.sh), or set LUA_INCDIR" >&2; exit 1; }
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LC_CFLAGS) -I$(LUA_INCDIR) $(CURL_CFLAGS) $(LIBFLAG) -o $@ $(SRC) $(CURL_LIBS)

# What the shared objects export: exactly luaopen_leadconnector_core (every per-version build there is).
symbols: all luajit
	@for so in $(wildcard $(foreach a,$(OTHER_LUAS) lua5.4 luajit,$(BUILD)/$(a)/leadconnector/core.so)); do \
	  syms=$$(nm -D --defined-only $$so | awk '$$2 ~ /^[TDBRW]$$/ {print $$3}' | grep -v '^_' | sort | tr '\n' ' '); \
	  echo "$$so exports: $$syms"; \
	  [ "$$syms" = "luaopen_leadconnector_core " ] || { echo "unexpected exports in $$so"; exit 1; }; \
	done

deps:
	@scripts/deps.sh

# The operation catalogue (lua/leadconnector/catalogue.lua) from the vendor's OpenAPI file and the overrides;
# committed, so a build needs neither. REFERENCE defaults to ../shared/reference.
REFERENCE ?= ../shared/reference
CATALOGUE_LUA ?= lua5.4
catalogue:
	$(CATALOGUE_LUA) scripts/catalogue.lua $(REFERENCE) > lua/leadconnector/catalogue.lua.tmp
	mv lua/leadconnector/catalogue.lua.tmp lua/leadconnector/catalogue.lua

# Everything CI runs: the fuzzers' corpus replayed and each fuzzed briefly, then the whole suite on Lua 5.4, LuaJIT,
# an ASan+UBSan build and under valgrind, the suite without the nginx and 5.4-only specs on Lua 5.1, 5.2 and 5.3,
# the Lua 5.4 suite again with the core loading libcurl 8 (Debian's backports build, scripts/curl8.sh),
# and scripts/install-check.sh (LuaRocks installs from a clean clone, one tree per Lua). The last line is the
# runner's "N passed, N failed, N skipped", the install check counted in it.
check: deps
	@$(MAKE) -s fuzz-ci
	@scripts/test.sh lua54 luajit asan valgrind lua51 lua52 lua53 curl8 install

test:
	@scripts/test.sh lua54 luajit

install-check:
	@scripts/test.sh install

demo: deps all
	@scripts/demo.sh

# LuaRocks runs install-lib (it installs the commands itself, from build.install.bin); make install does both.
install: install-lib install-bin

install-luajit:
	@$(MAKE) --no-print-directory install LUA_INCDIR=$(LUAJIT_INCDIR) LUA=$(LUAJIT)

install-lib: $(SO)
	install -d $(DESTDIR)$(INST_LIBDIR)/leadconnector $(DESTDIR)$(INST_LUADIR)/leadconnector
	install -m 0755 $(SO) $(DESTDIR)$(INST_LIBDIR)/leadconnector/core.so
	cd lua && for f in $$(find leadconnector -name '*.lua'); do \
	  install -d $(DESTDIR)$(INST_LUADIR)/$$(dirname $$f); install -m 0644 $$f $(DESTDIR)$(INST_LUADIR)/$$f; done
	cd sandbox/lua && for f in $$(find lcsandbox -name '*.lua'); do \
	  d=$(DESTDIR)$(INST_LUADIR)/leadconnector/sandbox/$$(dirname $$f); \
	  install -d $$d; install -m 0644 $$f $$d/; done

# The command runs on the interpreter it was installed for and finds the modules where they were installed.
LUA_BIN = $(or $(shell command -v $(LUA) 2>/dev/null),/usr/bin/env $(LUA))
install-bin:
	install -d $(DESTDIR)$(INST_BINDIR)
	sed -e '1s|^#!.*|#!$(LUA_BIN)|' \
	  -e 's|^local INSTALLED = nil .*|local INSTALLED = { lua = "$(INST_LUADIR)", lib = "$(INST_LIBDIR)" }|' \
	  bin/leadconnector > $(DESTDIR)$(INST_BINDIR)/leadconnector.tmp
	chmod 0755 $(DESTDIR)$(INST_BINDIR)/leadconnector.tmp
	mv -f $(DESTDIR)$(INST_BINDIR)/leadconnector.tmp $(DESTDIR)$(INST_BINDIR)/leadconnector
	install -m 0755 bin/leadconnector-sandbox $(DESTDIR)$(INST_BINDIR)/leadconnector-sandbox

uninstall:
	rm -rf $(DESTDIR)$(INST_LIBDIR)/leadconnector $(DESTDIR)$(INST_LUADIR)/leadconnector
	rm -f $(DESTDIR)$(INST_BINDIR)/leadconnector $(DESTDIR)$(INST_BINDIR)/leadconnector-sandbox

valgrind: all
	@scripts/test.sh valgrind

asan:
	@scripts/test.sh asan

bench: all luajit
	@scripts/deps.sh bench
	@bench/run

# libFuzzer harnesses of the C core (fuzz/): each for FUZZ_SECONDS (default 60); fuzz-ci replays the committed
# corpus (crash regressions included) and runs each for FUZZ_CI_SECONDS (default 10). Needs clang 14 + libFuzzer.
.PHONY: fuzz-ci
FUZZ_SECONDS ?= 60
FUZZ_CI_SECONDS ?= 10
fuzz:
	@FUZZ_SECONDS=$(FUZZ_SECONDS) fuzz/run.sh fuzz

fuzz-ci:
	@FUZZ_CI_SECONDS=$(FUZZ_CI_SECONDS) fuzz/run.sh ci

clean:
	rm -rf $(BUILD)

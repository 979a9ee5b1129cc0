# leadconnector - build, test, install.
#
#   make                 C core for Lua 5.4 into build/lua5.4/
#   make luajit          C core for LuaJIT 2.1 (OpenResty) into build/luajit/
#   make check           install Debian packages if missing, fuzz briefly, run every test on Lua 5.4, LuaJIT, ASan+UBSan
#                        and valgrind (the README's test command)
#   make demo            install packages if missing, build, start the sandbox, run examples/quickstart.lua
#   make install         into $(DESTDIR)$(INST_LIBDIR) and $(DESTDIR)$(INST_LUADIR) (LuaRocks passes these)
#   make valgrind / asan / bench / fuzz
#
# Honours LUA_INCDIR, CFLAGS, LIBFLAG, DESTDIR, INST_LIBDIR, INST_LUADIR. Never links -llua: the host provides Lua.

LUA_VERSION  ?= 5.4
LUA          ?= lua$(LUA_VERSION)
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
PREFIX       ?= /usr/local
INST_LIBDIR  ?= $(PREFIX)/lib/lua/$(LUA_VERSION)
INST_LUADIR  ?= $(PREFIX)/share/lua/$(LUA_VERSION)
INST_BINDIR  ?= $(PREFIX)/bin

# Always on, whatever CFLAGS the caller brings.
LC_CFLAGS = -std=c99 -D_POSIX_C_SOURCE=200809L -fPIC -fvisibility=hidden -Wall -Wextra $(WERROR)

# Every C file of csrc/ is part of the core (one file per concern).
SRC  = $(sort $(wildcard csrc/*.c))
HDRS = $(wildcard csrc/*.h)
LUA_SRC = $(wildcard lua/leadconnector/*.lua lua/leadconnector/*/*.lua)

BUILD ?= build
SO54  = $(BUILD)/lua$(LUA_VERSION)/leadconnector/core.so
SOJIT = $(BUILD)/luajit/leadconnector/core.so

.PHONY: catalogue all luajit deps check test test-lua54 test-luajit demo install uninstall clean valgrind asan bench fuzz symbols

all: $(SO54)

luajit: $(SOJIT)

$(SO54): $(SRC) $(HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LC_CFLAGS) -I$(LUA_INCDIR) $(CURL_CFLAGS) $(LIBFLAG) -o $@ $(SRC) $(CURL_LIBS)

$(SOJIT): $(SRC) $(HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LC_CFLAGS) -I$(LUAJIT_INCDIR) $(CURL_CFLAGS) $(LIBFLAG) -o $@ $(SRC) $(CURL_LIBS)

# What the shared objects export: exactly luaopen_leadconnector_core.
symbols: $(SO54) $(SOJIT)
	@for so in $^; do \
	  syms=$$(nm -D --defined-only $$so | awk '$$2 ~ /^[TDBRW]$$/ {print $$3}' | grep -v '^_' | sort | tr '\n' ' '); \
	  echo "$$so exports: $$syms"; \
	  [ "$$syms" = "luaopen_leadconnector_core " ] || { echo "unexpected exports in $$so"; exit 1; }; \
	done

deps:
	@scripts/deps.sh

# The operation catalogue (lua/leadconnector/catalogue.lua) from the vendor's OpenAPI file and the overrides;
# committed, so a build needs neither. REFERENCE defaults to ../shared/reference.
REFERENCE ?= ../shared/reference
catalogue:
	$(LUA) scripts/catalogue.lua $(REFERENCE) > lua/leadconnector/catalogue.lua.tmp
	mv lua/leadconnector/catalogue.lua.tmp lua/leadconnector/catalogue.lua

# Everything CI runs: the fuzzers' corpus replayed and each fuzzed briefly, then the whole suite on Lua 5.4, LuaJIT,
# an ASan+UBSan build and under valgrind. The last line is the runner's "N passed, N failed, N skipped".
check: deps
	@$(MAKE) -s fuzz-ci
	@scripts/test.sh lua54 luajit asan valgrind

test:
	@scripts/test.sh lua54 luajit

demo: deps all
	@scripts/demo.sh

install: $(SO54)
	install -d $(DESTDIR)$(INST_LIBDIR)/leadconnector $(DESTDIR)$(INST_LUADIR)/leadconnector
	install -m 0755 $(SO54) $(DESTDIR)$(INST_LIBDIR)/leadconnector/core.so
	cd lua && for f in $$(find leadconnector -name '*.lua'); do \
	  install -d $(DESTDIR)$(INST_LUADIR)/$$(dirname $$f); install -m 0644 $$f $(DESTDIR)$(INST_LUADIR)/$$f; done

uninstall:
	rm -rf $(DESTDIR)$(INST_LIBDIR)/leadconnector $(DESTDIR)$(INST_LUADIR)/leadconnector

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

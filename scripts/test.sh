#!/usr/bin/env bash
# Runs the whole test suite: every spec on Lua 5.4 and on LuaJIT (OpenResty's), each against its own build of the
# C core, over real HTTP on 127.0.0.1 (the specs start the sandbox and nginx themselves).
#   scripts/test.sh [lua54] [luajit] [asan] [valgrind] [lua51] [lua52] [lua53] [curl8] [install]
#   (default: lua54 luajit asan)
#   lua54/luajit: the suite on that interpreter; asan: Lua 5.4 against an ASan+UBSan build of the core (any report
#   fails); valgrind: Lua 5.4 under memcheck (any error or definite leak fails); lua51/lua52/lua53: the suite on
#   that Lua without the tests tagged #lua54only or #nginx; curl8: Lua 5.4 with the core loading libcurl 8 (Debian's
#   backports build, scripts/curl8.sh) instead of the system's 7.88; install: scripts/install-check.sh (LuaRocks installs
#   from a clean clone, one tree per Lua, each making one call against an installed sandbox).
# Tags: #lua54only runs on Lua 5.4 only (5.4 features, or once is enough: a test that drives nginx, Prism);
# #nginx runs the library inside nginx (nginx brings its own LuaJIT); #slow is left out under ASan and valgrind.
# Ends with one line "N passed, N failed, N skipped" summed over every run; exits non-zero if anything failed.
set -uo pipefail
cd "$(dirname "$0")/.."

passed=0 failed=0 skipped=0 broken=0
failures=$(mktemp)   # "label: spec @ line: test name" of every failed or errored test, repeated before the summary
trap 'rm -f "$failures"' EXIT
# SPECS: the spec files or directories to run (default: all of spec/), e.g. SPECS=spec/90-cli_spec.lua
read -r -a SPECS_LIST <<<"${SPECS:-spec}"
LPATH="./lua/?.lua;./lua/?/init.lua;./spec/?.lua;./sandbox/lua/?.lua"

run_busted() { # label, then the command that runs busted (its output is parsed for the summary)
  local label="$1"; shift
  local out; out=$(mktemp)
  echo "== $label"
  "$@" 2>&1 | tee "$out"
  local rc=${PIPESTATUS[0]}
  local line; line=$(sed 's/\x1b\[[0-9;]*m//g' "$out" | grep -E '^[0-9]+ success(es)? / [0-9]+ failures? / [0-9]+ errors? / [0-9]+ pending' | tail -1)
  if [ -z "$line" ]; then
    echo "!! $label: busted printed no summary (exit $rc)"; broken=$((broken + 1))
  else
    set -- $line
    passed=$((passed + $1)); failed=$((failed + $4 + $7)); skipped=$((skipped + ${10}))
    # busted prints "Failure -> spec/x_spec.lua @ 12" (or "Error -> ..."), the test's full name on the next line, then
    # the message: the first 6 lines of it go with the name, so a CI log's tail says why as well as what.
    sed 's/\x1b\[[0-9;]*m//g' "$out" | awk -v l="$label" \
      '/^(Failure|Error) (->|→) /{ loc=$0; sub(/^[A-Za-z]+ (->|→) /, "", loc); getline name; print l ": " loc ": " name; n=6; next }
       n > 0 && /^$/ { n=0; next }
       n > 0 { print "    " substr($0, 1, 300); n-- }' >>"$failures"
    [ "$rc" -eq 0 ] || [ $(($4 + $7)) -gt 0 ] || { echo "!! $label: busted exited $rc"; broken=$((broken + 1)); }
  fi
  rm -f "$out"
}

make -s all luajit || { echo "0 passed, 1 failed"; exit 1; }
for m in "$@"; do   # the other Lua versions' cores, only when asked for
  case "$m" in lua5[123]) make -s "lua5.${m#lua5}" || { echo "0 passed, 1 failed"; exit 1; } ;; esac
done
make -s symbols || { echo "0 passed, 1 failed"; exit 1; }

run_lua54() {
  run_busted "Lua 5.4" lua5.4 /usr/bin/busted -o plainTerminal --lpath="$LPATH" --cpath="./build/lua5.4/?.so" "${SPECS_LIST[@]}"
}
run_luajit() {
  run_busted "LuaJIT" luajit /usr/bin/busted -o plainTerminal --lpath="$LPATH" --cpath="./build/luajit/?.so" \
    --exclude-tags=lua54only "${SPECS_LIST[@]}"
}
run_other() { # lua51 | lua52 | lua53
  local v="5.${1#lua5}"
  run_busted "Lua $v" "lua$v" /usr/bin/busted -o plainTerminal --lpath="$LPATH" --cpath="./build/lua$v/?.so" \
    --exclude-tags=lua54only,nginx "${SPECS_LIST[@]}"
}
# curl8: the Lua 5.4 suite with the core loading libcurl 8 (scripts/curl8.sh: Debian's backports build, unpacked
# into build/curl8) instead of the system's 7.88: the same core, the same tests, the other libcurl.
run_curl8() {
  local dir v
  dir=$(scripts/curl8.sh) || { echo "!! curl8: could not get libcurl 8 (scripts/curl8.sh)"; broken=$((broken + 1)); return; }
  v=$(LD_LIBRARY_PATH="$dir" lua5.4 -e 'package.cpath = "./build/lua5.4/?.so;" .. package.cpath
    print((require("leadconnector.core").curl_version()))') || v="none"
  case "$v" in
    8.*) ;;
    *) echo "!! curl8: the core loaded libcurl $v from $dir, not libcurl 8"; broken=$((broken + 1)); return ;;
  esac
  run_busted "Lua 5.4 on libcurl $v" env LD_LIBRARY_PATH="$(pwd)/$dir" lua5.4 /usr/bin/busted -o plainTerminal \
    --lpath="$LPATH" --cpath="./build/lua5.4/?.so" "${SPECS_LIST[@]}"
}
run_lua51() { run_other lua51; }
run_lua52() { run_other lua52; }
run_lua53() { run_other lua53; }
run_install() { # its last line is "install-check: N passed, N failed"
  local out; out=$(mktemp)
  echo "== LuaRocks install check"
  scripts/install-check.sh 2>&1 | tee "$out"
  local rc=${PIPESTATUS[0]}
  local line; line=$(grep -E '^install-check: [0-9]+ passed, [0-9]+ failed$' "$out" | tail -1)
  if [ -z "$line" ]; then
    echo "!! install check printed no summary (exit $rc)"; broken=$((broken + 1))
  else
    set -- $line
    passed=$((passed + $2)); failed=$((failed + $4))
    [ "$rc" -eq 0 ] || [ "$4" -gt 0 ] || { echo "!! install check exited $rc"; broken=$((broken + 1)); }
  fi
  rm -f "$out"
}
run_valgrind() {
  LEADCONNECTOR_UNDER_VALGRIND=1 run_busted "Lua 5.4 under valgrind" valgrind -q --leak-check=full \
    --show-leak-kinds=definite --errors-for-leak-kinds=definite --error-exitcode=99 \
    --suppressions=scripts/valgrind.supp \
    lua5.4 /usr/bin/busted -o plainTerminal --lpath="$LPATH" --cpath="./build/lua5.4/?.so" --exclude-tags=slow "${SPECS_LIST[@]}"
}
run_asan() {
  mkdir -p build/asan/leadconnector
  cc -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined,float-cast-overflow -fno-sanitize-recover=undefined,float-cast-overflow \
    -std=c99 -D_POSIX_C_SOURCE=200809L -fPIC -Wall -Wextra -Werror -I/usr/include/lua5.4 \
    $(pkg-config --cflags libcurl libcrypto hiredis) -shared -o build/asan/leadconnector/core.so csrc/*.c \
    $(pkg-config --libs libcurl libcrypto hiredis) \
    || { echo "!! ASan build failed"; broken=$((broken + 1)); return; }
  LEADCONNECTOR_UNDER_ASAN=1 ASAN_OPTIONS="detect_leaks=1:exitcode=98" \
    UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1" \
    LSAN_OPTIONS="suppressions=$(pwd)/scripts/lsan.supp:print_suppressions=0" \
    run_busted "Lua 5.4 with ASan+UBSan" env LD_PRELOAD="$(cc -print-file-name=libasan.so):$(cc -print-file-name=libubsan.so)" \
    lua5.4 /usr/bin/busted -o plainTerminal --lpath="$LPATH" --cpath="./build/asan/?.so" --exclude-tags=slow "${SPECS_LIST[@]}"
}

modes=("$@")
[ ${#modes[@]} -gt 0 ] || modes=(lua54 luajit asan)
for m in "${modes[@]}"; do
  case "$m" in
    lua54|luajit|asan|valgrind|lua51|lua52|lua53|curl8|install) "run_$m" ;;
    *) echo "usage: $0 [lua54] [luajit] [asan] [valgrind] [lua51] [lua52] [lua53] [curl8] [install]   (default: lua54 luajit asan)"; exit 2 ;;
  esac
done

# No cleanup by name here: every sandbox a spec starts is given --exit-with and goes with its busted process.

[ "$broken" -gt 0 ] && failed=$((failed + broken))
if [ -s "$failures" ]; then
  echo "== failed tests"
  cat "$failures"
fi
echo "${passed} passed, ${failed} failed, ${skipped} skipped"
[ "$failed" -eq 0 ]

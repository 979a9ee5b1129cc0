#!/usr/bin/env bash
# The install a user does, checked: a clean clone of this repository (its committed HEAD), then `luarocks make
# --deps-mode=none` (LuaRocks' server is not needed: Debian's lua-cjson serves) for Lua 5.4, 5.3, LuaJIT, 5.2, 5.1
# and 5.4 again, one after another from that ONE clone, each into a tree of its own. Then the clone is removed and
# each tree must stand alone: its interpreter loads the tree's own core and makes one call against the sandbox,
# and the tree's `leadconnector` command makes one too. The sandbox is the `leadconnector-sandbox` that the first
# tree installed, started from that tree.
# Prints "ok - ..." / "not ok - ..." per check and ends with "install-check: N passed, N failed".
#   scripts/install-check.sh [--keep]     (--keep: leave the temporary directory for a look)
set -uo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
keep=0; [ "${1:-}" = "--keep" ] && keep=1

passed=0 failed=0
ok() { echo "ok - $*"; passed=$((passed + 1)); }
not_ok() { echo "not ok - $*"; failed=$((failed + 1)); }
finish() { echo "install-check: ${passed} passed, ${failed} failed"; [ "$failed" -eq 0 ]; exit; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/lc-install-check.XXXXXX") || { not_ok "mktemp"; finish; }
sb_pid=""
cleanup() {
  if [ -n "$sb_pid" ]; then kill -TERM "$sb_pid" 2>/dev/null; wait "$sb_pid" 2>/dev/null; fi
  [ "$keep" = 1 ] && echo "install-check: left $tmp" || rm -rf "$tmp"
}
trap cleanup EXIT

command -v luarocks >/dev/null || { not_ok "luarocks is installed (scripts/deps.sh)"; finish; }
if git -C "$repo" rev-parse --git-dir >/dev/null 2>&1; then
  [ -z "$(git -C "$repo" status --porcelain --untracked-files=no 2>/dev/null)" ] \
    || echo "install-check: note: uncommitted changes are not part of the clone; this checks HEAD"
  git clone -q "$repo" "$tmp/src" 2>"$tmp/clone.log" && ok "git clone of $(git -C "$repo" rev-parse --short HEAD)" \
    || { not_ok "git clone: $(cat "$tmp/clone.log")"; finish; }
else # not a git checkout (an unpacked archive): a copy without build products
  mkdir -p "$tmp/src" && tar -C "$repo" --exclude=./build --exclude=./spec/prism/node_modules -cf - . \
    | tar -C "$tmp/src" -xf - && ok "copy of the source tree (no git checkout)" || { not_ok "copy of the source tree"; finish; }
fi
rockspec=$(ls "$tmp"/src/rockspec/*.rockspec | head -1)

# LuaJIT is LuaRocks' Lua 5.1 with LuaJIT's headers; the config makes its command wrappers run luajit.
cat >"$tmp/luajit-config.lua" <<'EOF'
lua_interpreter = "luajit"
variables = { LUA_BINDIR = "/usr/bin" }
EOF

# name  --lua-version  interpreter  extra arguments
installs=(
  "lua5.4 5.4 lua5.4"
  "lua5.3 5.3 lua5.3"
  "luajit 5.1 luajit LUA_INCDIR=/usr/include/luajit-2.1"
  "lua5.2 5.2 lua5.2"
  "lua5.1 5.1 lua5.1"
  "lua5.4-again 5.4 lua5.4"
)
built=()
for line in "${installs[@]}"; do
  set -- $line
  name=$1 ver=$2 interp=$3; shift 3
  tree="$tmp/tree-$name"
  envs=()
  [ "$interp" = luajit ] && envs=(LUAROCKS_CONFIG="$tmp/luajit-config.lua")
  if (cd "$tmp/src" && env "${envs[@]}" luarocks --lua-version="$ver" --tree "$tree" make --deps-mode=none \
        "$rockspec" "$@") >"$tmp/$name.log" 2>&1; then
    ok "luarocks make for $name into its own tree"
    built+=("$name $ver $interp")
  else
    not_ok "luarocks make for $name:"; sed 's/^/    /' "$tmp/$name.log" | tail -20
  fi
done
rm -rf "$tmp/src"   # from here on, only the trees

# The sandbox, from the first tree that has it.
sb_out="$tmp/sandbox.out"
for b in "${built[@]}"; do
  set -- $b
  [ -x "$tmp/tree-$1/bin/leadconnector-sandbox" ] || continue
  "$tmp/tree-$1/bin/leadconnector-sandbox" --exit-with $$ --no-rate-limit >"$sb_out" 2>"$tmp/sandbox.err" &
  sb_pid=$!
  for _ in $(seq 1 300); do grep -q '^LEADCONNECTOR_SANDBOX_TOKEN=' "$sb_out" && break; kill -0 "$sb_pid" 2>/dev/null || break; sleep 0.1; done
  url=$(sed -n 's/^LEADCONNECTOR_SANDBOX_URL=//p' "$sb_out") token=$(sed -n 's/^LEADCONNECTOR_SANDBOX_TOKEN=//p' "$sb_out")
  if [ -n "$url" ] && [ -n "$token" ]; then ok "leadconnector-sandbox starts from the $1 tree ($url)"
  else not_ok "leadconnector-sandbox from the $1 tree: $(tail -5 "$tmp/sandbox.err")"; finish; fi
  break
done
[ -n "$sb_pid" ] || { not_ok "no tree has a leadconnector-sandbox"; finish; }

for b in "${built[@]}"; do
  set -- $b
  name=$1 ver=$2 interp=$3 tree="$tmp/tree-$1"
  # The interpreter loads this tree's core (not another version's) and makes one call.
  res=$(env -u LUA_INIT LUA_PATH="$tree/share/lua/$ver/?.lua;$tree/share/lua/$ver/?/init.lua;;" \
    LUA_CPATH="$tree/lib/lua/$ver/?.so;;" LC_URL="$url" LC_TOKEN="$token" "$interp" -e '
      local where = "?"
      for t in package.cpath:gmatch("[^;]+") do
        local f = t:gsub("%?", "leadconnector/core")
        local h = io.open(f, "rb")
        if h then h:close(); where = f; break end
      end
      local lc = require "leadconnector"
      local c = assert(lc.new { token = os.getenv "LC_TOKEN", base_url = os.getenv "LC_URL", max_retries = 0 })
      local m, err = c:get_message("msg_demo_1")
      io.write(m and ("ok " .. m.id) or ("err " .. tostring(err)), " ", where)' 2>&1)
  case "$res" in
    "ok msg_demo_1 $tree/"*) ok "$name: $interp loads the tree's core and calls get_message" ;;
    *) not_ok "$name: $interp with the tree's modules: $res" ;;
  esac
  # The tree's command, run the way a user runs it: its path, the token in the environment.
  res=$(env -u LUA_PATH -u LUA_CPATH -u LUA_INIT LEADCONNECTOR_TOKEN="$token" LEADCONNECTOR_BASE_URL="$url" \
    "$tree/bin/leadconnector" get-message msg_demo_1 2>&1)
  rc=$?
  if [ $rc -eq 0 ] && [[ $res == '{'*'"id":"msg_demo_1"'*'}' ]]; then
    ok "$name: the tree's leadconnector get-message prints the message as JSON"
  else
    not_ok "$name: the tree's leadconnector get-message (exit $rc): $res"
  fi
done
finish

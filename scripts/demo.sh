#!/usr/bin/env bash
# make demo: runs examples/quickstart.lua end to end.
# With LEADCONNECTOR_TOKEN set it talks to the real API (LEADCONNECTOR_BASE_URL, LEADCONNECTOR_CONTACT_ID apply);
# without, it starts the bundled sandbox on a free loopback port, runs against it, and stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
export LUA_PATH="./lua/?.lua;./lua/?/init.lua;;"
export LUA_CPATH="./build/lua5.4/?.so;;"

if [ -n "${LEADCONNECTOR_TOKEN:-}" ]; then
  echo "demo: using the real API (LEADCONNECTOR_TOKEN is set)"
  exec lua5.4 examples/quickstart.lua
fi

log=$(mktemp)
bin/leadconnector-sandbox --port 0 >"$log" 2>&1 &
pid=$!
cleanup() { kill -TERM "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -f "$log"; }
trap cleanup EXIT INT TERM
for _ in $(seq 1 100); do
  grep -q '^LEADCONNECTOR_SANDBOX_TOKEN=' "$log" && break
  kill -0 "$pid" 2>/dev/null || { cat "$log"; echo "demo: the sandbox did not start"; exit 1; }
  sleep 0.1
done
export LEADCONNECTOR_SANDBOX_URL="$(sed -n 's/^LEADCONNECTOR_SANDBOX_URL=//p' "$log")"
export LEADCONNECTOR_SANDBOX_TOKEN="$(sed -n 's/^LEADCONNECTOR_SANDBOX_TOKEN=//p' "$log")"
[ -n "$LEADCONNECTOR_SANDBOX_URL" ] || { cat "$log"; echo "demo: no sandbox URL"; exit 1; }
echo "demo: sandbox at $LEADCONNECTOR_SANDBOX_URL"
lua5.4 examples/quickstart.lua

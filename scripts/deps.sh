#!/usr/bin/env bash
# Installs the Debian packages the project needs (`deps.sh` for tests and demo, `deps.sh bench` for make bench), only when some are missing (so it is quick to re-run).
# Root uses apt-get directly; anyone else needs sudo.
set -euo pipefail
PKGS=(
  # curl: the specs' helper processes use the curl command (spec/80's watcher, spec/limiter/harness.lua's
  # concurrent requests); a fresh Debian has libcurl's -dev package from below but not the command
  build-essential pkg-config git curl
  lua5.4 liblua5.4-dev luajit2 libluajit2-5.1-dev
  lua5.1 liblua5.1-0-dev lua5.2 liblua5.2-dev lua5.3 liblua5.3-dev
  libcurl4-openssl-dev libssl-dev libhiredis-dev ca-certificates
  lua-cjson lua-busted lua-socket lua-sec luarocks
  nginx libnginx-mod-http-lua lua-resty-core lua-nginx-redis redis-server
  valgrind clang libclang-rt-14-dev openssl
)
# `deps.sh bench` adds what only the benchmark needs (node for the vendor's SDK, wrk, hyperfine).
if [ "${1:-}" = "bench" ]; then
  PKGS+=(wrk hyperfine)
fi
# node runs Stoplight Prism, the third-party mock server of spec/70-conformance_spec.lua.
command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || PKGS+=(nodejs npm)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "deps: installing ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Prism, pinned by spec/prism/package-lock.json (npm registry).
cd "$(dirname "$0")/.."
if [ ! -x spec/prism/node_modules/.bin/prism ]; then
  echo "deps: installing Stoplight Prism (spec/prism) from the npm registry"
  (cd spec/prism && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error >/dev/null)
fi

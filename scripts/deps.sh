#!/usr/bin/env bash
# Installs the Debian packages the project needs (`deps.sh` for tests and demo, `deps.sh bench` for make bench), only when some are missing (so it is quick to re-run).
# Root uses apt-get directly; anyone else needs sudo.
set -euo pipefail
PKGS=(
  build-essential pkg-config
  lua5.4 liblua5.4-dev luajit2 libluajit2-5.1-dev
  libcurl4-openssl-dev ca-certificates
  lua-cjson lua-busted lua-socket luarocks
  nginx libnginx-mod-http-lua lua-resty-core
  valgrind clang libclang-rt-14-dev
)
# `deps.sh bench` adds what only the benchmark needs (node for the vendor's SDK, wrk, hyperfine).
if [ "${1:-}" = "bench" ]; then
  PKGS+=(wrk hyperfine)
  command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || PKGS+=(nodejs npm)
fi
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "deps: installing ${missing[*]}"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null

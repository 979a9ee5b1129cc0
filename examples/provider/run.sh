#!/usr/bin/env bash
# examples/provider/run.sh - starts the example provider in the foreground (Ctrl-C stops it).
#   LEADCONNECTOR_TOKEN=... PROVIDER_ID=... [LEADCONNECTOR_BASE_URL=...] [WEBHOOK_PUBLIC_KEY_FILE=...] \
#     examples/provider/run.sh [PORT [CARRIER_PORT]]
# With the sandbox:  bin/leadconnector-sandbox --provider-url prov_demo=http://127.0.0.1:8480/deliver
#   then: curl -s $URL/_sandbox/webhooks/keys | jq -r .ed25519 >/tmp/sb.pem and run this with
#   WEBHOOK_PUBLIC_KEY_FILE=/tmp/sb.pem PROVIDER_ID=prov_demo LEADCONNECTOR_BASE_URL=$URL LEADCONNECTOR_TOKEN=sandbox-token
set -eu
here=$(cd "$(dirname "$0")" && pwd)
lc=${LC_ROOT:-$(cd "$here/../.." && pwd)}
port=${1:-8480} carrier_port=${2:-8481}
prefix=$(mktemp -d "${TMPDIR:-/tmp}/lc-provider.XXXXXX")
trap 'rm -rf "$prefix"' EXIT
mkdir -p "$prefix/tmp"
user=""; [ "$(id -u)" = 0 ] && user="user root;"
sed -e "s|@MODULES@|${LEADCONNECTOR_NGINX_MODULES:-/usr/lib/nginx/modules}|g" -e "s|@USER@|$user|" \
    -e "s|@PREFIX@|$prefix|g" -e "s|@LC@|$lc|g" -e "s|@EXAMPLE@|$here|g" -e "s|@PORT@|$port|g" \
    -e "s|@CARRIER_PORT@|$carrier_port|g" "$here/nginx.conf" >"$prefix/nginx.conf"
export CARRIER_URL=${CARRIER_URL:-http://127.0.0.1:$carrier_port/send}
export PROVIDER_URL=${PROVIDER_URL:-http://127.0.0.1:$port}
echo "provider: Delivery URL http://127.0.0.1:$port/deliver, carrier on $carrier_port" >&2
nginx -p "$prefix" -c "$prefix/nginx.conf" -e "$prefix/error.log"

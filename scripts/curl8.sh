#!/usr/bin/env bash
# Puts libcurl 8 next to the build, for `scripts/test.sh curl8`: Debian's own build of libcurl4 from
# <codename>-backports (8.14 on bookworm in December 2026), unpacked into build/curl8/ and never installed, so the
# system keeps its libcurl (7.88 on Debian 12). The core is built against 7.88's headers and loads either: libcurl
# keeps its ABI (soname 4). Prints the directory to put in LD_LIBRARY_PATH; exits non-zero (saying why) when the
# package cannot be had. Quick when it is there already.
#
# Why: libcurl's behaviour moves between versions (libcurl 8 reads "HTTP/1.1 2000 OK" as a 200, 7.88 refuses it),
# and users on Debian 13, Ubuntu 24.04, Fedora or macOS run libcurl 8. The suite on both catches what one misses.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=build/curl8
if [ -e "$dest/libcurl.so.4" ]; then
  echo "$dest"
  exit 0
fi
# shellcheck disable=SC1091
. /etc/os-release
codename=${VERSION_CODENAME:?no VERSION_CODENAME in /etc/os-release}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/lists/partial" "$tmp/archives/partial" "$tmp/cache"
echo "deb http://deb.debian.org/debian ${codename}-backports main" >"$tmp/sources.list"
# apt's own state stays untouched: a private source list, package lists and download cache, all in $tmp
APT=(-qq -o Dir::Etc::sourcelist="$tmp/sources.list" -o Dir::Etc::sourceparts=- -o Dir::State::Lists="$tmp/lists"
  -o Dir::Cache="$tmp/cache" -o Dir::Cache::archives="$tmp/archives" -o APT::Sandbox::User=root)
apt-get "${APT[@]}" update >"$tmp/log" 2>&1 || { cat "$tmp/log" >&2; echo "curl8: apt-get update of ${codename}-backports failed" >&2; exit 1; }
(cd "$tmp" && apt-get "${APT[@]}" download "libcurl4/${codename}-backports") >>"$tmp/log" 2>&1 ||
  { cat "$tmp/log" >&2; echo "curl8: no libcurl4 in ${codename}-backports" >&2; exit 1; }
dpkg-deb -x "$tmp"/libcurl4_*.deb "$tmp/x"
mkdir -p "$dest.tmp"
cp -P "$tmp"/x/usr/lib/*/libcurl.so.4* "$dest.tmp/"
rm -rf "$dest"
mv "$dest.tmp" "$dest"
echo "$dest"

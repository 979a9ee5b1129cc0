#!/usr/bin/env bash
# fuzz/run.sh - builds and runs the libFuzzer harnesses of the C core.
#
#   fuzz/run.sh build               build every harness into build/fuzz/
#   fuzz/run.sh fuzz [names...]     run each for FUZZ_SECONDS (default 60)     <- make fuzz
#   fuzz/run.sh ci [names...]       replay the committed corpus (crash regressions included), then fuzz each for
#                                   FUZZ_CI_SECONDS (default 10)                <- make fuzz-ci
#   fuzz/run.sh replay [names...]   only replay the committed corpus (every input once)
#
# Harnesses: finish headers path_id build reader webhook h1 (fuzz/fuzz_<name>.c; reader: the cosocket transport's Lua answer reader;
# h1: the direct engine's C answer reader, csrc/h1.c, which needs no Lua). Each binary embeds Lua 5.4 and the core's C files
# (-fsanitize=fuzzer,address,undefined; any sanitizer report, Lua error or broken invariant is a crash).
# The committed seed corpus is fuzz/corpus/<name>/ and is only read; what the fuzzer discovers goes to
# fuzz/out/corpus/<name>/ (ignored by git). A crash leaves fuzz/out/crash-<name>-*; once fixed, copy it into
# fuzz/corpus/<name>/ as regress-<what> so every later run replays it.
# Prints one line per harness: name, seconds, executions, exec/s, corpus size, result. Exits non-zero on a crash.
set -uo pipefail
cd "$(dirname "$0")/.."

CLANG=${CLANG:-clang-14}
command -v "$CLANG" >/dev/null 2>&1 || CLANG=clang
ALL=(finish headers path_id build reader webhook h1)
OUT=fuzz/out
BIN=build/fuzz
CFLAGS_FUZZ=(-g -O1 -fno-omit-frame-pointer -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined
  -std=c99 -D_POSIX_C_SOURCE=200809L -Wall -Wextra -Werror -Icsrc -I/usr/include/lua5.4)
read -r -a CURL_CFLAGS <<<"$(pkg-config --cflags libcurl libcrypto hiredis 2>/dev/null)"
read -r -a CURL_LIBS <<<"$(pkg-config --libs libcurl libcrypto hiredis 2>/dev/null || echo -lcurl -lcrypto -lhiredis)"

build_one() {
  local name=$1 srcs=()
  local s
  for s in csrc/*.c; do
    # the headers harness includes http.c itself, to reach its static libcurl callbacks
    [ "$name" = headers ] && [ "$s" = csrc/http.c ] && continue
    srcs+=("$s")
  done
  mkdir -p "$BIN"
  if [ "$BIN/fuzz_$name" -nt "fuzz/fuzz_$name.c" ] && [ "$BIN/fuzz_$name" -nt fuzz/common.h ] \
    && [ -z "$(find csrc -newer "$BIN/fuzz_$name" -print -quit)" ]; then
    return 0
  fi
  echo "build $BIN/fuzz_$name"
  "$CLANG" "${CFLAGS_FUZZ[@]}" "${CURL_CFLAGS[@]}" -o "$BIN/fuzz_$name" "fuzz/fuzz_$name.c" "${srcs[@]}" \
    -llua5.4 "${CURL_LIBS[@]}" -lm
}

# run_one name seconds -> prints the summary line; returns non-zero on a crash
run_one() {
  local name=$1 secs=$2 log rc execs rate units
  mkdir -p "$OUT/corpus/$name" "$OUT/log"
  log="$OUT/log/$name.log"
  local dict=()
  [ -f "fuzz/$name.dict" ] && dict=(-dict="fuzz/$name.dict")
  # -rss_limit_mb: the core must stay small whatever it reads; -max_len: answers and tables of a few KiB.
  ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:allocator_may_return_null=0" \
  UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1" \
    "$BIN/fuzz_$name" -max_total_time="$secs" -max_len=8192 -rss_limit_mb=1024 -timeout=10 \
    -print_final_stats=1 -artifact_prefix="$OUT/crash-$name-" "${dict[@]}" \
    "$OUT/corpus/$name" "fuzz/corpus/$name" >"$log" 2>&1
  rc=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  units=$(find "$OUT/corpus/$name" "fuzz/corpus/$name" -type f | wc -l)
  if [ "$rc" -eq 0 ]; then
    printf '%-8s %6ss %12s execs %8s exec/s %6s inputs  ok\n' "$name" "$secs" "${execs:-?}" "${rate:-?}" "$units"
  else
    printf '%-8s %6ss %12s execs %8s exec/s %6s inputs  CRASH (exit %s), see %s\n' "$name" "$secs" \
      "${execs:-?}" "${rate:-?}" "$units" "$rc" "$log"
    grep -E 'ERROR: |runtime error|invariant failed|Lua error|Test unit written' "$log" | head -8 | sed 's/^/    /'
  fi
  return "$rc"
}

# replay_one name -> runs every committed input once (seeds and regress-* files)
replay_one() {
  local name=$1 files
  mapfile -t files < <(find "fuzz/corpus/$name" -type f | sort)
  [ "${#files[@]}" -gt 0 ] || { echo "$name: no committed corpus in fuzz/corpus/$name"; return 1; }
  mkdir -p "$OUT/log"
  if ASAN_OPTIONS="detect_leaks=1" UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1" \
    "$BIN/fuzz_$name" -runs=1 "${files[@]}" >"$OUT/log/$name.replay.log" 2>&1; then
    printf '%-8s replayed %d committed inputs  ok\n' "$name" "${#files[@]}"
  else
    printf '%-8s replay FAILED, see %s\n' "$name" "$OUT/log/$name.replay.log"
    grep -E 'ERROR: |runtime error|invariant failed|Lua error|Running: ' "$OUT/log/$name.replay.log" | tail -6 | sed 's/^/    /'
    return 1
  fi
}

mode=${1:-fuzz}
[ $# -gt 0 ] && shift
names=("$@")
[ ${#names[@]} -gt 0 ] || names=("${ALL[@]}")
for n in "${names[@]}"; do
  [ -f "fuzz/fuzz_$n.c" ] || { echo "no harness fuzz/fuzz_$n.c"; exit 2; }
  build_one "$n" || { echo "build of $n failed"; exit 1; }
done

bad=0
case "$mode" in
  build) ;;
  replay) for n in "${names[@]}"; do replay_one "$n" || bad=1; done ;;
  fuzz) for n in "${names[@]}"; do run_one "$n" "${FUZZ_SECONDS:-60}" || bad=1; done ;;
  ci)
    for n in "${names[@]}"; do replay_one "$n" || bad=1; done
    for n in "${names[@]}"; do run_one "$n" "${FUZZ_CI_SECONDS:-10}" || bad=1; done ;;
  *) echo "usage: $0 build|fuzz|ci|replay [harness...]"; exit 2 ;;
esac
if [ "$mode" != build ]; then [ "$bad" -eq 0 ] && echo "fuzz: all harnesses clean" || echo "fuzz: FAILED"; fi
exit "$bad"

#!/usr/bin/env bash
# Builds the libFuzzer targets with clang into build-fuzz/ (every library
# instrumented: -fsanitize=fuzzer-no-link,address,undefined) and runs each
# target for a while on its seed corpus and crash regressions
# (tests/fuzz/README.md).
#
#   scripts/fuzz.sh                  smoke run: every target for $FUZZ_SMOKE_SECONDS (7) s
#   scripts/fuzz.sh --long [SECONDS] every target for SECONDS (default 300) s
#   scripts/fuzz.sh --target NAME    only fuzz_NAME (combine with --long)
#
# Prints one line per target: seconds, executions, executions per second,
# corpus entries. New interesting inputs go to build-fuzz/fuzz-corpus/<target>/
# (the checked-in corpus is never written); a crash leaves its input in
# build-fuzz/fuzz-artifacts/<target>/ and fails the run. Keep a crash as a
# regression: fix it, then copy the input to tests/fuzz/regressions/<name>/.
# Without clang++ it says so and exits 0 (the gcc replay drivers still run
# in ctest). JOBS (default nproc) bounds the build.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${FUZZ_SMOKE_SECONDS:-7}
only=""
while [ $# -gt 0 ]; do
  case "$1" in
    --long)
      seconds=300
      if [ $# -gt 1 ] && [[ "$2" =~ ^[0-9]+$ ]]; then
        seconds=$2
        shift
      fi
      ;;
    --target)
      only="fuzz_${2:?--target needs a name}"
      shift
      ;;
    *)
      echo "usage: scripts/fuzz.sh [--long [SECONDS]] [--target NAME]" >&2
      exit 2
      ;;
  esac
  shift
done

if ! command -v clang++ >/dev/null 2>&1; then
  echo "fuzz: clang++ not installed; skipping the libFuzzer run (scripts/install-deps.sh installs it)"
  exit 0
fi

JOBS=${JOBS:-$(nproc)}
flags="-fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
launcher=()
command -v ccache >/dev/null 2>&1 && launcher=(-DCMAKE_C_COMPILER_LAUNCHER=ccache -DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
echo "== build (build-fuzz/, clang libFuzzer + ASan + UBSan)"
CC=clang CXX=clang++ cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_C_FLAGS="$flags" -DCMAKE_CXX_FLAGS="$flags" -DTIPD_BUILD_BENCHMARKS=OFF \
  "${launcher[@]}" >/dev/null
cmake --build build-fuzz -j "$JOBS" --target fuzz_all

targets=$(cat build-fuzz/tests/fuzz/targets.txt)
[ -n "$only" ] && targets=$only
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

echo "== fuzz: ${seconds}s per target"
printf '%-22s %8s %12s %10s %8s\n' target seconds execs "execs/s" corpus
failed=()
for t in $targets; do
  name=${t#fuzz_}
  scratch=build-fuzz/fuzz-corpus/$name
  artifacts=build-fuzz/fuzz-artifacts/$name/
  log=build-fuzz/fuzz-logs/$name.log
  mkdir -p "$scratch" "$artifacts" "$(dirname "$log")"
  extra=()
  # The Host frees on its io thread, so libFuzzer's per-input leak check
  # fires on nearly every input and costs 10x; its leaks are checked at exit
  # in the ASan ctest pass (fuzz_envelope_smoke) instead.
  [ "$name" = envelope ] && extra=(-detect_leaks=0)
  status=0
  "build-fuzz/tests/fuzz/$t" -max_total_time="$seconds" -print_final_stats=1 -timeout=60 "${extra[@]}" \
    -artifact_prefix="$artifacts" "$scratch" "tests/fuzz/corpus/$name" \
    "tests/fuzz/regressions/$name" >"$log" 2>&1 || status=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  entries=$(find "$scratch" "tests/fuzz/corpus/$name" -type f | wc -l)
  printf '%-22s %8s %12s %10s %8s\n' "$t" "$seconds" "${execs:-?}" "${rate:-?}" "$entries"
  if [ $status -ne 0 ]; then
    failed+=("$t")
    echo "fuzz: $t FAILED (exit $status); log $log, input in $artifacts" >&2
    grep -E "fuzz invariant broken|ERROR: |SUMMARY" "$log" | head -5 >&2 || true
  fi
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: crashes in ${failed[*]}" >&2
  exit 1
fi
echo "== fuzz: no crash"

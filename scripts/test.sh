#!/usr/bin/env bash
# Installs dependencies, builds tipd, and runs every test: first a normal
# build (warnings are errors), then again under AddressSanitizer and
# UndefinedBehaviorSanitizer; last, a libFuzzer smoke run of every fuzz target
# (scripts/fuzz.sh, if clang is installed). Usage: scripts/test.sh [--no-sanitize]
set -euo pipefail
cd "$(dirname "$0")/.."

JOBS=${JOBS:-$(nproc)}
sanitize=1
[ "${1:-}" = "--no-sanitize" ] && sanitize=0

scripts/install-deps.sh

echo "== format check"
scripts/format.sh --check

echo "== build (build/)"
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTIPD_WERROR=ON >/dev/null
cmake --build build -j "$JOBS"
echo "== tests (build/)"
ctest --test-dir build --output-on-failure -j "$JOBS"

if [ $sanitize -eq 1 ]; then
  echo "== build (build-asan/, ASan+UBSan)"
  cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=Debug -DTIPD_WERROR=ON -DTIPD_SANITIZE=ON \
    -DTIPD_BUILD_BENCHMARKS=OFF >/dev/null
  cmake --build build-asan -j "$JOBS"
  echo "== tests (build-asan/, ASan+UBSan)"
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    ctest --test-dir build-asan --output-on-failure -j "$JOBS"
fi
# libFuzzer smoke run (about a minute; skipped without clang): tests/fuzz/README.md.
JOBS=$JOBS scripts/fuzz.sh
echo "== all tests passed"

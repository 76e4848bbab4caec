#!/usr/bin/env bash
# Installs dependencies, builds tipd, and runs every test: first a normal
# build (warnings are errors), then again under AddressSanitizer and
# UndefinedBehaviorSanitizer, then the threaded parts under ThreadSanitizer;
# last, a libFuzzer smoke run of every fuzz target (scripts/fuzz.sh, if clang
# is installed). Usage: scripts/test.sh [--no-sanitize]
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
if [ $sanitize -eq 1 ]; then
  # ThreadSanitizer over the threaded parts only: the group committer, the
  # RPC server and HTTP client, the event log, the node in one process, and
  # real nodes (tipd built with TSan) in the hostile-client tests.
  # halt_on_error: a race in a child tipd kills it, which fails its test.
  echo "== build (build-tsan/, ThreadSanitizer: threaded parts)"
  cmake -S . -B build-tsan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTIPD_WERROR=ON \
    -DTIPD_SANITIZE=thread -DTIPD_BUILD_BENCHMARKS=OFF >/dev/null
  cmake --build build-tsan -j "$JOBS" --target tipd tipd_storage_tests tipd_rpc_tests \
    tipd_events_tests tipd_http_client_tests tipd_context_tests tipd_hostile_api_tests
  echo "== tests (build-tsan/, ThreadSanitizer)"
  tsan_suites='GroupCommitTest|RpcServerTest|RpcStreamLimitTest|EventLogTest|EventRoutesTest'
  tsan_suites+='|HttpClientTest|NodeContextTest|HostileApiTest'
  TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1:suppressions=$PWD/scripts/tsan.supp" \
    ctest --test-dir build-tsan \
    --output-on-failure -j "$JOBS" -R "^($tsan_suites)\."
fi
# libFuzzer smoke run (about a minute; skipped without clang): tests/fuzz/README.md.
JOBS=$JOBS scripts/fuzz.sh
echo "== all tests passed"

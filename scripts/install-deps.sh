#!/usr/bin/env bash
# Installs every Debian 12 package that tipd's build and tests need, if it is
# missing. Idempotent: when everything is present it changes nothing.
set -euo pipefail

PACKAGES=(
  g++ cmake ninja-build pkg-config git
  libsecp256k1-dev libssl-dev libleveldb-dev
  # The tipd binary's allocator (CMake TIPD_JEMALLOC, docs/performance.md).
  libjemalloc-dev
  libprotobuf-dev protobuf-compiler
  libboost-dev libboost-system-dev
  libspdlog-dev libfmt-dev libcli11-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  clang-format curl procps
  # The webhook TLS test makes its CA and server certificate with the CLI.
  openssl
  # libFuzzer targets (scripts/fuzz.sh): clang and its sanitizer/fuzzer runtimes.
  clang libclang-rt-dev
  # The dashboard's browser test (dashboard/test/browser_test.mjs): headless Chromium.
  chromium
  # The API contract checks and the TypeScript client (tests/contract,
  # clients/typescript): node >= 20.19 with its own npm (NodeSource's
  # `nodejs` package ships npm; Debian's `npm` package conflicts with it).
  nodejs
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

# npm packages of the contract checks, the TypeScript client and the
# dashboard's browser test (the vendored chart library's source and
# puppeteer-core), from their committed lockfiles; skipped when node_modules
# already matches the lockfile. Node.js itself comes with the machine (its
# own nodejs package ships npm; Debian's npm package would conflict with it).
npm_ci() {
  local dir
  for dir in tests/contract clients/typescript dashboard; do
    if [ -f "$dir/node_modules/.tipd-lock" ] && cmp -s "$dir/package-lock.json" "$dir/node_modules/.tipd-lock"; then
      continue
    fi
    if ! command -v npm >/dev/null; then
      echo "install-deps: npm not found (node >= 20.19 with npm is needed for $dir)" >&2
      exit 1
    fi
    echo "install-deps: npm ci in $dir"
    (cd "$dir" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
    cp "$dir/package-lock.json" "$dir/node_modules/.tipd-lock"
  done
}
cd "$(dirname "$0")/.."

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#PACKAGES[@]} packages present"
  npm_ci
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  SUDO="sudo"
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
npm_ci
echo "install-deps: done"

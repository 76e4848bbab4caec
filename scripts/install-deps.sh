#!/usr/bin/env bash
# Installs every Debian 12 package that tipd's build and tests need, if it is
# missing. Idempotent: when everything is present it changes nothing.
set -euo pipefail

PACKAGES=(
  g++ cmake ninja-build pkg-config git
  libsecp256k1-dev libssl-dev libleveldb-dev
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
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

# The dashboard's npm packages (the vendored chart library's source and
# puppeteer-core), exactly as dashboard/package-lock.json pins them. Node.js
# itself comes with the machine (its own nodejs package ships npm; Debian's
# npm package would conflict with it). Skipped when node_modules already
# matches the lock file.
install_dashboard_npm() {
  local dir lock stamp
  dir="$(cd "$(dirname "$0")/.." && pwd)/dashboard"
  lock="$dir/package-lock.json"
  stamp="$dir/node_modules/.tipd-lock"
  if ! command -v npm >/dev/null 2>&1; then
    echo "install-deps: npm not found: install Node.js (20 or newer) for the dashboard's tests" >&2
    return 1
  fi
  if [ -f "$stamp" ] && cmp -s "$lock" "$stamp"; then
    echo "install-deps: dashboard npm packages present"
    return 0
  fi
  echo "install-deps: npm ci in dashboard/"
  (cd "$dir" && npm ci --ignore-scripts --no-audit --no-fund)
  cp "$lock" "$stamp"
}

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#PACKAGES[@]} packages present"
  install_dashboard_npm
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
echo "install-deps: done"
install_dashboard_npm

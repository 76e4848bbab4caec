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
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#PACKAGES[@]} packages present"
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

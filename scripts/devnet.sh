#!/usr/bin/env bash
# Installs dependencies, builds only what a devnet needs (tipd and tipctl),
# and starts a local network: a ledger and 3 nodes with channels, streaming
# demo tips (docs/devnet.md). Extra arguments go to `tipd devnet`, e.g.
#   scripts/devnet.sh --nodes 5 --tips-per-second 50
# Ctrl-C stops it; running it again brings the same network back from devnet/.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j 2 --target tipd tipctl
exec build/node/tipd devnet --nodes 3 --dir devnet --stream "$@"

#!/usr/bin/env bash
# The contract's checks, as ctest runs them (tests/contract/CMakeLists.txt):
#   run.sh lint        redocly lint of docs/openapi.json (redocly.yaml)
#   run.sh examples    every ```json example of docs/api.md against its schema (ajv)
#   run.sh proto       every schema named like a proto message has its fields and types
#   run.sh selftest    node --test: the checkers refuse what they must
#   run.sh generated   clients/typescript/src/schema.d.ts is what the spec generates
#   run.sh client-e2e  tsc, then the client's end-to-end test against a real
#                      devnet (TIPD_BIN = the tipd binary to run)
# The npm packages come from `npm ci` (scripts/install-deps.sh); nothing here
# reaches the network.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
contract="$root/tests/contract"
client="$root/clients/typescript"

need() {
  if [ ! -d "$1/node_modules" ]; then
    echo "run.sh: $1/node_modules is missing: run scripts/install-deps.sh (npm ci)" >&2
    exit 1
  fi
}

case "${1:-}" in
  lint)
    need "$contract"
    cd "$contract"
    # Redocly's own banners and update checks stay off (no network).
    REDOCLY_TELEMETRY=off REDOCLY_SUPPRESS_UPDATE_NOTICE=true NO_UPDATE_NOTIFIER=1 \
      node_modules/.bin/redocly lint --config redocly.yaml --format=stylish ../../docs/openapi.json
    ;;
  examples)
    need "$contract"
    node "$contract/check_examples.mjs"
    ;;
  proto)
    node "$contract/check_proto.mjs"
    ;;
  selftest)
    need "$contract"
    cd "$contract"
    node --test contract.test.mjs
    ;;
  generated)
    need "$client"
    node "$client/scripts/check-generated.mjs"
    ;;
  client-e2e)
    need "$client"
    need "$contract"
    cd "$client"
    rm -rf dist
    node_modules/.bin/tsc -p tsconfig.json
    node --test dist/test/*.test.js
    ;;
  *)
    echo "usage: run.sh lint|examples|proto|selftest|generated|client-e2e" >&2
    exit 2
    ;;
esac

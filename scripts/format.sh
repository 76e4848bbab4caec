#!/usr/bin/env bash
# Applies .clang-format to every C++ file we own; with --check, fails and lists
# the files that are not formatted instead of changing them.
set -euo pipefail
cd "$(dirname "$0")/.."
files=$(git ls-files '*.h' '*.cc' | grep -v '^build' || true)
[ -z "$files" ] && exit 0
if [ "${1:-}" = "--check" ]; then
  bad=()
  for f in $files; do
    if ! clang-format --dry-run --Werror "$f" >/dev/null 2>&1; then bad+=("$f"); fi
  done
  if [ ${#bad[@]} -gt 0 ]; then
    echo "format: not formatted (run scripts/format.sh): ${bad[*]}" >&2
    exit 1
  fi
  echo "format: $(echo "$files" | wc -l) files clean"
else
  clang-format -i $files
fi

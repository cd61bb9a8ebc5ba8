#!/usr/bin/env bash
# Runs every tests/nix/test-*.sh; exits non-zero if any check failed.
# Last line: "N passed, N failed" (", N skipped" when some were skipped).
set -u
dir=$(cd "$(dirname "$0")" && pwd)
export RESULTS=$(mktemp)
trap 'rm -f "$RESULTS"' EXIT
status=0
for t in "$dir"/test-*.sh; do
  [ -n "${ONLY:-}" ] && [[ "$t" != *"$ONLY"* ]] && continue
  echo "# $(basename "$t")"
  if ! bash "$t"; then
    # A script that dies outside a check counts as one failure.
    echo "fail $(basename "$t") exited non-zero" >> "$RESULTS"
    echo "not ok - $(basename "$t") exited non-zero"
  fi
done
passed=$(grep -c '^pass ' "$RESULTS")
failed=$(grep -c '^fail ' "$RESULTS")
skipped=$(grep -c '^skip ' "$RESULTS")
[ "$failed" -eq 0 ] || status=1
if [ "$skipped" -gt 0 ]; then echo "$passed passed, $failed failed, $skipped skipped"
else echo "$passed passed, $failed failed"; fi
exit $status

#!/usr/bin/env bash
# Every .nix file of the repository parses.
source "$(dirname "$0")/lib.sh"
cd "$REPO"
while IFS= read -r f; do
  check "parses: $f" nix-instantiate --parse "$f"
done < <(find . -name '*.nix' -not -path './target/*' -not -path './.git/*' | sort)

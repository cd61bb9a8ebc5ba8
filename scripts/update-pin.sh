#!/usr/bin/env bash
# Pins nixpkgs and regenerates the family catalogues: what the weekly
# update-nixpkgs workflow does, as one command for a maintainer.
#
#   bash scripts/update-pin.sh                      # this machine's system
#   bash scripts/update-pin.sh x86_64-linux aarch64-linux   # with builders for both
#
# Creates flake.lock on the first run (moves it forward later) and writes
# nix/family/<system>.json from `nix build .#family-catalogue`, which
# realises the package sets once. Needs Nix with flakes and network access
# to nixpkgs; commit the result.
set -euo pipefail
cd "$(dirname "$0")/.."
nix flake update nixpkgs
systems=("$@")
[ ${#systems[@]} -gt 0 ] || systems=("$(nix eval --impure --raw --expr builtins.currentSystem)")
mkdir -p nix/family
for system in "${systems[@]}"; do
  out=$(nix build ".#packages.$system.family-catalogue" --no-link --print-out-paths)
  install -m 0644 "$out" "nix/family/$system.json"
  echo "update-pin: nix/family/$system.json ($(jq -r '.nixLayerFamily | keys | length' "nix/family/$system.json") sets)" >&2
done
echo "update-pin: now commit flake.lock and nix/family/" >&2

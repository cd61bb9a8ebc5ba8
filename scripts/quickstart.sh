#!/usr/bin/env bash
# Quick start: install what is needed, build nix-layer, realise a small
# closure with Nix (a static busybox and a script that uses it), build a
# layered image of it, load it into Docker (or Podman) and run it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The quick start's closure comes from tests/e2e/fixtures.nix, whose builder
# is the host's /bin/sh: it builds with the sandbox off. (Images built
# through the flake's library work with the sandbox on: tests/nix.)
export NIX_CONFIG="substituters =
sandbox = false"
cargo build --release --locked -p nix-layer
out=target/quickstart
mkdir -p "$out"
app=$(nix-build tests/e2e/fixtures.nix -A app -o "$out/app" --option build-users-group '')
printf '{"Cmd": ["%s/bin/app"]}\n' "$app" > "$out/config.json"
target/release/nix-layer build --closure $(nix-store -qR "$app") \
  --name nix-layer-quickstart:latest --config "$out/config.json" -o "$out/image.tar"
if docker info >/dev/null 2>&1; then engine=docker; else
  engine=podman; export CONTAINERS_CONF="$PWD/scripts/containers.conf"; fi
$engine load -i "$out/image.tar"
$engine run --rm --network none nix-layer-quickstart:latest

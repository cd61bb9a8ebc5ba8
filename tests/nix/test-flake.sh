#!/usr/bin/env bash
# flake.nix's outputs evaluated with a fake nixpkgs input (no nixpkgs here):
# attribute structure, package sets, lib, images, templates, systems.
source "$(dirname "$0")/lib.sh"
cd "$TESTS_DIR"
json=$(nix-instantiate --eval --strict --json flake-outputs.nix 2>&1) || { fail "flake outputs evaluate" "$json"; exit 0; }
pass "flake outputs evaluate"
while IFS=$'\t' read -r name verdict; do
  if [ "$verdict" = true ]; then pass "flake: $name"; else fail "flake: $name" "$verdict"; fi
done < <(printf '%s' "$json" | python3 -c 'import json,sys
for k,v in json.load(sys.stdin).items(): print(k, "true" if v is True else v, sep="\t")')

# The flake's checks (tests/nix/checks.nix) with stand-in packages: every
# check instantiates, and the `eval` check (argument cases) passes.
checks_json=$(nix-instantiate --eval --strict --json -E '
let
  stub = n: derivation { name = n; system = "x86_64-linux"; builder = "/bin/sh"; args = [ "-c" "echo > $out" ]; };
  image = import ../../nix/image.nix { nixLayer = stub "nix-layer"; system = "x86_64-linux"; };
  fx = import ./fixtures/packages.nix { };
  lib = image // import ../../nix/builders.nix { inherit image; inherit (fx) deps; };
  pkgs = { runCommand = n: e: s: stub n; hello = fx.hello; bashInteractive = fx.bash; coreutils = fx.coreutils; nix-layer = stub "nix-layer"; };
  drvs = builtins.mapAttrs (n: v: v.drvPath) (import ./checks.nix { inherit pkgs lib; system = "x86_64-linux"; flake = null; });
in builtins.deepSeq drvs (builtins.attrNames drvs)' 2>&1)
expect='["devcontainer-image","eval","nix-layer","oci-image","runtime-image","stream-image"]'
if [ "$checks_json" = "$expect" ]; then pass "flake checks instantiate, eval check passes"; else fail "flake checks instantiate, eval check passes" "$checks_json"; fi

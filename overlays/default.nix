# The infrastructure's overlay: every package set and image is built from
# nixpkgs with these applied. Each file is an overlay of its own; they are
# applied in this order, each seeing the result of the ones before.
final: prev:
let
  apply =
    overlays: builtins.foldl' (acc: overlay: acc // overlay final (prev // acc)) { } overlays;
in
apply [
  (import ./cve-patches.nix)
  (import ./license-fixes.nix)
  (import ./custom-builds.nix)
]

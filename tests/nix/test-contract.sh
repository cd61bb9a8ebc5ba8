#!/usr/bin/env bash
# The Nix library and the binary agree: nix/contract.json is what the binary
# prints; every key, default and limit the Nix side applies is accepted or
# refused by the binary alike (the binary runs in `nix-build` mode on the
# structured attrs the Nix side makes); another contract version is refused.
# (A missing tag is computed at evaluation, as dockerTools does: not a default.)
source "$(dirname "$0")/lib.sh"
cd "$TESTS_DIR"

# The release build, or (NIX_LAYER_BIN) another build of the same sources,
# e.g. test-build.sh's static one.
bin="${NIX_LAYER_BIN:-$REPO/target/release/nix-layer}"
[ -x "$bin" ] || { fail "contract: target/release/nix-layer exists" "cargo build --release -p nix-layer"; exit 0; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

if "$bin" contract --json | cmp -s - "$REPO/nix/contract.json"; then
  pass "contract: nix/contract.json is what the binary prints"
else
  fail "contract: nix/contract.json is what the binary prints" "regenerate: nix-layer contract --json > nix/contract.json"
fi

LIB='(import ../../nix/image.nix {
  nixLayer = derivation { name = "nix-layer-stub"; system = "x86_64-linux"; builder = "/bin/sh"; args = [ "-c" "echo > $out" ]; };
  system = "x86_64-linux"; })'
C='(builtins.fromJSON (builtins.readFile ../../nix/contract.json))'

# The settings the Nix side sends are exactly the contract's image and
# internal arguments, and unset ones carry the contract's defaults.
eval_is "contract: Nix sends exactly the contract's image and internal keys" \
  "let s = ($LIB.buildLayeredImage { name = \"x\"; }).drvAttrs.nixLayer; in
   builtins.attrNames s == builtins.filter (n: $C.arguments.\${n}.scope != \"wrapper\") (builtins.attrNames $C.arguments)" true
eval_is "contract: Nix applies the contract's defaults" \
  "let
     s = ($LIB.buildLayeredImage { name = \"x\"; }).drvAttrs.nixLayer;
     a = $C.arguments;
     wire = { topLayer = { entries = [ ]; rules = [ ]; }; family = { }; };
     differ = builtins.filter (n: a.\${n} ? default && (wire.\${n} or a.\${n}.default) != s.\${n})
       (builtins.filter (n: a.\${n}.scope != \"wrapper\" && n != \"storeDir\" && n != \"tag\") (builtins.attrNames a));
   in [ differ s.compression s.architecture s.contractVersion ]" \
  '[[],"none","amd64",1]'
eval_is "contract: the OCI default compression is the contract's" \
  "($LIB.buildLayeredImageOCI { name = \"x\"; }).drvAttrs.nixLayer.compression == $C.arguments.compression.defaultByFormat.oci" true

# nix_attrs 'NIX ARGS' FILE: the structured attrs Nix would hand the builder.
nix_attrs() {
  nix-instantiate --eval --strict --json -E "let d = ($LIB.buildLayeredImage ({ name = \"x\"; } // $1)).drvAttrs; in
    { outputs.out = \"$work/out\"; graph = [ ]; nixLayer = d.nixLayer; }" >"$2" 2>"$2.err"
}
binary_accepts() { rm -rf "$work/out"; "$bin" nix-build "$1" >"$1.log" 2>&1; }

# Each case: Nix arguments, and whether both sides must accept them.
while IFS=$'\t' read -r args verdict; do
  name="contract: Nix and the binary both $verdict $args"
  if nix_attrs "$args" "$work/attrs.json"; then nix_ok=yes; else nix_ok=no; fi
  if [ $nix_ok = no ]; then
    # Nix refused: give the binary the same value on top of valid settings.
    nix_attrs '{ }' "$work/attrs.json"
    key=$(printf '%s' "$args" | sed -E 's/^\{ *([A-Za-z.]+) *=.*/\1/')
    value=$(nix-instantiate --eval --strict --json -E "let a = $args; in a.${key%%.*}")
    jq --argjson v "$value" ".nixLayer.${key%%.*} = \$v" "$work/attrs.json" >"$work/patched.json"
    mv "$work/patched.json" "$work/attrs.json"
  fi
  if binary_accepts "$work/attrs.json"; then bin_ok=yes; else bin_ok=no; fi
  want=$([ "$verdict" = accept ] && echo yes || echo no)
  if [ $nix_ok = "$want" ] && [ $bin_ok = "$want" ]; then pass "$name"
  else fail "$name" "nix: $nix_ok, binary: $bin_ok" "$(cat "$work/attrs.json.err" "$work/attrs.json.log" 2>/dev/null | grep -m2 error)"; fi
done <<'EOF'
{ maxLayers = 125; }	accept
{ maxLayers = 126; }	refuse
{ maxLayers = 2; }	accept
{ maxLayers = 1; }	refuse
{ config.Healthcheck = { Test = [ "CMD" "true" ]; Interval = 1000000000; }; }	accept
{ config.Shell = [ "/bin/sh" "-c" ]; }	accept
{ config.Colour = "red"; }	refuse
{ format = "oci"; }	accept
{ format = "oci-archive"; compression = "zstd"; }	accept
{ format = "tarball"; }	refuse
{ compression = "xz"; }	refuse
{ strategy = "auto"; }	accept
{ strategy = "shared"; }	accept
{ strategy = "random"; }	refuse
{ uid = 1000; gid = 100; uname = "app"; gname = "users"; }	accept
{ config = null; }	accept
{ config = { ArgsEscaped = true; Cmd = [ "/bin/sh" ]; }; }	accept
{ created = "1700000000"; mtime = "now"; }	accept
{ created = "2024-01-01"; }	refuse
EOF

# Another contract version is refused with a clear message.
nix_attrs '{ }' "$work/attrs.json"
jq '.nixLayer.contractVersion = 999' "$work/attrs.json" >"$work/v999.json"
if ! binary_accepts "$work/v999.json" && grep -q "contract version 999, but this nix-layer speaks version 1" "$work/v999.json.log"; then
  pass "contract: the binary refuses another contract version, saying which"
else
  fail "contract: the binary refuses another contract version, saying which" "$(cat "$work/v999.json.log")"
fi

#!/usr/bin/env bash
# The image library's argument handling, by evaluation with a stand-in
# nix-layer: defaults, the computed tag, passthru, and clear errors.
source "$(dirname "$0")/lib.sh"
cd "$TESTS_DIR"
LIB='(import ../../nix/image.nix {
  nixLayer = derivation { name = "nix-layer-stub"; system = "x86_64-linux"; builder = "/bin/sh"; args = [ "-c" "echo > $out" ]; };
  system = "x86_64-linux"; })'
CASES="(import ./eval-cases.nix { image = $LIB; })"

while IFS= read -r name; do
  eval_is "args: $name" "let c = $CASES.ok.\"$name\"; in c.expr == c.expect" true
done < <(nix-instantiate --eval --strict --json -E "builtins.attrNames $CASES.ok" | python3 -c 'import json,sys; print("\n".join(json.load(sys.stdin)))')

while IFS=$'\t' read -r name msg; do
  eval_fails "args error: $name" "let c = $CASES; in (c.build (builtins.elemAt c.bad.\"$name\" 0)).drvPath" "$msg"
done < <(nix-instantiate --eval --strict --json -E "builtins.mapAttrs (n: v: builtins.elemAt v 1) $CASES.bad" | python3 -c 'import json,sys
for k,v in json.load(sys.stdin).items(): print(k, v, sep="\t")')

# Builders: unknown arguments are errors, as for a function's formals.
FX='(import ./fixtures/packages.nix { })'
B="(import ../../nix/builders.nix { image = $LIB; deps = $FX.deps; })"
eval_fails "mkRuntime rejects an unknown argument" "($B.mkRuntime { packages = [ ]; colour = 1; }).drvPath" "unexpected argument 'colour'"
eval_is "mkRuntime passes annotations to the manifest settings" \
  "($B.mkRuntime { packages = [ ]; annotations.\"org.opencontainers.image.source\" = \"https://x\"; }).drvAttrs.nixLayer.annotations" \
  '{"org.opencontainers.image.source":"https://x"}'
for b in mkRuntime mkDevContainer; do
  eval_fails "$b refuses a private key given as a Nix path (it would be copied into the store)" \
    "($B.$b { packages = [ ]; sign.key = ./cosign.key; }).drvPath" "is a Nix path, which would copy the private key"
  eval_is "$b passes sign to copyToRegistry's image, not to the image derivation" \
    "let s = $B.$b { packages = [ ]; sign.key = \"/run/secrets/k\"; }; p = $B.$b { packages = [ ]; }; in [ (s.drvPath == p.drvPath) (builtins.functionArgs $B.$b ? sign) ]" \
    '[true,true]'
done
eval_fails "mkUser refuses uid 0" "$B.mkUser { name = \"x\"; uid = 0; }" "would be root"
eval_is "mkRuntime defaults: tag latest, maxLayers 50, shared, numeric user" \
  "let i = $B.mkRuntime { packages = [ ]; }; a = i.drvAttrs.nixLayer; in [ i.imageTag a.maxLayers a.strategy a.config.User a.config.WorkingDir ]" \
  '["latest",50,"shared","1000:1000","/app"]'
eval_is "mkDevContainer defaults: vscode, nix DB, maxLayers 100, shared" \
  "let i = $B.mkDevContainer { packages = [ ]; }; a = i.drvAttrs.nixLayer; in [ i.imageName i.imageTag a.config.User a.includeNixDB a.maxLayers a.strategy ]" \
  '["devcontainer","latest","vscode",true,100,"shared"]'
eval_is "mkDevContainer: extraConfig Env merges by name" \
  "let a = ($B.mkDevContainer { packages = [ ]; extraConfig.Env = [ \"FOO=1\" \"USER=other\" ]; }).drvAttrs.nixLayer; in builtins.filter (e: builtins.match \"(FOO|USER)=.*\" e != null) a.config.Env" \
  '["USER=other","FOO=1"]'
eval_is "mkDevContainer: the sudo package is not merged into contents (setuid copy instead)" \
  "let a = ($B.mkDevContainer { packages = [ $FX.sudo $FX.hello ]; }).drvAttrs.nixLayer; in [ (builtins.length a.contents) (builtins.any (e: e.path == \"/usr/bin/sudo\" && e.mode == \"4755\") a.topLayer.entries) ]" \
  '[2,true]'
eval_is "mkRuntime: no setuid entry, no sudo, no nix" \
  "let a = ($B.mkRuntime { packages = [ $FX.hello ]; }).drvAttrs.nixLayer; in [ (builtins.any (e: builtins.match \"[4-7]...\" (e.mode or \"0\") != null) a.topLayer.entries) (builtins.any (e: builtins.match \"/(etc/sudoers|nix).*\" e.path != null) a.topLayer.entries) a.includeNixDB ]" \
  '[false,false,false]'
eval_is "topLayer arguments override builder files by path" \
  "let a = ($B.mkRuntime { packages = [ ]; topLayer.entries = [ { path = \"/etc/os-release\"; type = \"text\"; text = \"ID=mine\n\"; mode = \"0644\"; } ]; }).drvAttrs.nixLayer; in builtins.filter (t: t != null) (map (e: if e.path == \"/etc/os-release\" then e.text else null) a.topLayer.entries)" \
  '["ID=mine\n"]'
eval_is "mkUser: each extra group gets its own gid (wheel is 10)" \
  "let g = builtins.head (builtins.filter (e: e.path == \"/etc/group\") ($B.mkUser { name = \"u\"; groups = [ \"wheel\" \"docker\" \"audio\" ]; }).entries); in g.text" \
  '"root:x:0:\nwheel:x:10:u\nu:x:1000:\ndocker:x:101:u\naudio:x:102:u\nnogroup:x:65534:\n"'
eval_is "mkUser: extra gids skip the user's own gid" \
  "let g = builtins.head (builtins.filter (e: e.path == \"/etc/group\") ($B.mkUser { name = \"u\"; gid = 101; groups = [ \"a\" \"b\" ]; }).entries); in g.text" \
  '"root:x:0:\nwheel:x:10:\nu:x:101:\na:x:102:u\nb:x:103:u\nnogroup:x:65534:\n"'
eval_is "mkDevContainer: a PAM service for each of shadow's account tools" \
  "let a = ($B.mkDevContainer { packages = [ ]; }).drvAttrs.nixLayer; in builtins.length (builtins.filter (e: builtins.match \"/etc/pam.d/(useradd|usermod|userdel|groupadd|groupmod|groupdel|chsh|chfn|chpasswd|newusers|passwd|chage|chgpasswd|groupmems)\" e.path != null) a.topLayer.entries)" \
  '14'

# Visible formals: builtins.functionArgs lists every argument each function
# takes (nix repl, documentation tools and wrappers read it), and no more.
# The builders' list is the one their unknown-argument error gives; the image
# functions' is the contract's user arguments plus dockerTools' no-op ones.
for b in mkRuntime mkDevContainer; do
  taken=$(cd "$TESTS_DIR" && nix_json "($B.$b { packages = [ ]; colour = 1; }).drvPath" | grep -o "it takes .*" | grep -oE "'[A-Za-z]+'" | tr -d "'" | sort | tr '\n' ' ')
  eval_is "$b: builtins.functionArgs lists every argument it takes" \
    "let f = builtins.functionArgs $B.$b; in [ (builtins.concatStringsSep \" \" (builtins.attrNames f) + \" \") f.packages ]" \
    "[\"$taken\",false]"
done
for f in buildLayeredImage streamLayeredImage buildLayeredImageOCI; do
  eval_is "$f: builtins.functionArgs is the contract's user arguments and dockerTools' no-op ones" \
    "let c = builtins.fromJSON (builtins.readFile ../../nix/contract.json); user = builtins.filter (n: c.arguments.\${n}.scope != \"internal\") (builtins.attrNames c.arguments); f = builtins.functionArgs $LIB.$f; in [ (builtins.attrNames f == builtins.sort builtins.lessThan (user ++ [ \"compressor\" \"extraCommands\" \"fakeRootCommands\" \"enableFakechroot\" \"layeringPipeline\" \"debug\" ])) f.name ]" \
    '[true,false]'
done

# TZDIR only when tzdata is in the image (then its zoneinfo in the store).
for b in mkRuntime mkDevContainer; do
  eval_is "$b: no TZDIR without tzdata, the package's zoneinfo with it" \
    "let tz = p: builtins.filter (e: builtins.match \"TZDIR=.*\" e != null) ($B.$b { packages = p; }).drvAttrs.nixLayer.config.Env; in [ (tz [ $FX.hello ]) (tz [ $FX.tzdata ] == [ \"TZDIR=\${$FX.tzdata}/share/zoneinfo\" ]) ]" \
    '[[],true]'
done
eval_is "the uid-sync step: metadata entrypoint and .bashrc with sudo, neither without" \
  "let f = sudo: let a = ($B.mkDevContainer { packages = [ ]; inherit sudo; }).drvAttrs.nixLayer; in [ ((builtins.head (builtins.fromJSON a.config.Labels.\"devcontainer.metadata\")).entrypoint or null) (builtins.any (e: e.path == \"/usr/local/libexec/nix-layer/reown-nix\" && e.mode == \"0755\") a.topLayer.entries) (builtins.any (e: e.path == \"/home/vscode/.bashrc\" && builtins.match \".*reown-nix.*\" e.text != null) a.topLayer.entries) ]; in f true ++ f false" \
  '["/usr/local/libexec/nix-layer/reown-nix",true,true,null,false,false]'

# One profile of the benchmark corpus as Nix store paths, without nixpkgs:
# every Debian package (or dependency cycle of packages) of the profile's
# closure is one builtins.derivation whose references are its Depends.
#
#   nix-build corpus.nix --argstr spec OUT/spec.json --argstr profile xl \
#     --argstr update "libssl3 openssl libssl-dev" --argstr tag upd1
#
# `update`: Debian packages built as a new version (name suffix +TAG, their
# shared objects changed); every path that depends on them changes with
# them, as in Nix.
{ spec, profile, update ? "", tag ? "upd1" }:
let
  s = builtins.fromJSON (builtins.readFile spec);
  updated = builtins.filter (p: builtins.isString p && p != "") (builtins.split " " update);
  isUpdated = n: builtins.any (m: builtins.elem m updated) n.members;
  mk = key: n:
    let new = isUpdated n; in
    builtins.derivation {
      name = n.name + (if new then "+" + tag else "");
      system = builtins.currentSystem;
      builder = "/bin/sh";
      args = [ "-e" ./package.sh ];
      PATH = "/usr/bin:/bin";
      debPackages = builtins.concatStringsSep " " n.members;
      debVersion = n.version;
      fileList = /. + n.list;
      depends = map (d: pkgs.${d}) n.deps;
      update = if new then tag else "";
    };
  pkgs = builtins.mapAttrs mk s.nodes;
in
builtins.derivation {
  name = profile + "-env";
  system = builtins.currentSystem;
  builder = "/bin/sh";
  args = [ "-e" ./profile.sh ];
  PATH = "/usr/bin:/bin";
  roots = map (r: pkgs.${r}) s.profiles.${profile};
}

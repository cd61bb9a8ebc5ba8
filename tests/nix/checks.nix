# The flake's `checks` (run by `nix flake check` on a machine with nixpkgs):
# the argument cases evaluated against the real library, and small images
# built by nix-layer from real nixpkgs packages.
{
  pkgs,
  lib,
  system,
  flake,
}:
let
  cases = import ./eval-cases.nix { image = lib; };
  failedOk = builtins.filter (n: cases.ok.${n}.expr != cases.ok.${n}.expect) (builtins.attrNames cases.ok);
  failedBad = builtins.filter (
    n: (builtins.tryEval (builtins.deepSeq (cases.build (builtins.elemAt cases.bad.${n} 0)).drvPath true)).success
  ) (builtins.attrNames cases.bad);
  report = builtins.toJSON { inherit failedOk failedBad; };
in
{
  nix-layer = pkgs.nix-layer;

  eval =
    if failedOk == [ ] && failedBad == [ ] then
      pkgs.runCommand "nix-layer-eval-checks" {
        passed = builtins.toJSON (builtins.attrNames cases.ok ++ builtins.attrNames cases.bad);
      } ''printf '%s\n' "$passed" > "$out"'' 
    else
      throw "nix-layer eval checks failed: ${report}";

  runtime-image = lib.mkRuntime {
    name = "check/runtime";
    packages = [ pkgs.hello ];
    extraConfig.Cmd = [ "${pkgs.hello}/bin/hello" ];
  };

  devcontainer-image = lib.mkDevContainer {
    name = "check/devcontainer";
    packages = [ pkgs.bashInteractive pkgs.coreutils pkgs.hello ];
  };

  stream-image = lib.streamLayeredImage {
    name = "check/stream";
    contents = [ pkgs.hello ];
    config.Cmd = [ "/bin/hello" ];
  };

  oci-image = lib.buildLayeredImageOCI {
    name = "check/oci";
    contents = [ pkgs.hello ];
    compression = "zstd";
  };
}

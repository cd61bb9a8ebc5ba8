# nix/package.nix, called as nixpkgs' callPackage would call it, with the
# rustPlatform shim. The store paths come from run.sh (storePath gives them
# their context, so the sandbox holds them and nothing else of the host's
# store).
{
  tools,
  toolchain,
  vendor,
  gccExecPrefix,
}:
let
  inputs = {
    tools = builtins.storePath tools;
    toolchain = builtins.storePath toolchain;
    vendor = builtins.storePath vendor;
    inherit gccExecPrefix;
  };
in
{
  package = import ../../nix/package.nix {
    lib = import ./lib.nix;
    rustPlatform = import ./rust-platform.nix inputs;
  };

  # What a build of the package sees, from inside the same sandbox with the
  # same PATH: its user, HOME, /usr, the network and the tools on PATH.
  probe = derivation {
    name = "package-sandbox-probe";
    system = builtins.currentSystem;
    builder = "${inputs.tools}/bin/bash";
    PATH = "${inputs.tools}/bin:${inputs.toolchain}/bin";
    GCC_EXEC_PREFIX = gccExecPrefix;
    nonce = toString builtins.currentTime;
    args = [
      "-c"
      ''
        set -u
        {
          echo "uid=$(id -u) user=$(id -un) group=$(id -gn)"
          # The host uid behind the sandbox's uid 1000: a build user's.
          echo "host-uid=$(gawk '$1 == 1000 { print $2 }' /proc/self/uid_map)"
          echo "HOME=$HOME"
          echo "usr-bin=$(test -e /usr/bin && echo present || echo absent)"
          echo "bin-sh=$(test -x /bin/sh && echo present || echo absent)"
          echo "network=$(tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | grep -vx lo | tr '\n' ' ')"
          echo "flock=$(command -v flock || echo none)"
          echo "cc=$(cc -dumpmachine)"
          echo "cargo=$(cargo --version)"
        } > $out
      ''
    ];
  };
}

# rustPlatform without nixpkgs: buildRustPackage's interface and its phases
# (unpack, cargoSetupHook, cargoBuildHook, cargoCheckHook, cargoInstallHook),
# run by the real cargo and rustc in the real Nix sandbox.
#   tools     store path: stdenv's tools and C compiler, bin/ only
#   toolchain store path: cargo, rustc and the target's std
#   vendor    store path: `cargo vendor` of Cargo.lock, with that Cargo.lock
#   gccExecPrefix  where the host gcc copied into `tools` finds cc1, collect2
#             and its plugins (what nixpkgs' cc-wrapper does with -B flags)
{
  tools,
  toolchain,
  vendor,
  gccExecPrefix,
  system ? builtins.currentSystem,
}:
let
  # nixpkgs' rust.toRustTargetSpec for the Linux systems CI runs on.
  rustTarget =
    {
      x86_64-linux = "x86_64-unknown-linux-gnu";
      aarch64-linux = "aarch64-unknown-linux-gnu";
    }
    .${system} or (throw "rust-platform shim: no Rust target for ${system}");
  # What this shim implements; anything else is refused rather than ignored,
  # so a new attribute in nix/package.nix cannot pass unbuilt.
  known = [
    "pname"
    "version"
    "src"
    "cargoLock"
    "cargoBuildFlags"
    "cargoTestFlags"
    "checkFlags"
    "doCheck"
    "nativeBuildInputs"
    "nativeCheckInputs"
    "meta"
  ];
  bins = ps: builtins.concatStringsSep ":" (map (p: "${p}/bin") ps);
in
{
  buildRustPackage =
    args@{
      pname,
      version,
      src,
      cargoLock,
      cargoBuildFlags ? [ ],
      cargoTestFlags ? [ ],
      checkFlags ? [ ],
      doCheck ? true,
      nativeBuildInputs ? [ ],
      nativeCheckInputs ? [ ],
      meta ? { },
    }:
    let
      unknown = builtins.filter (n: !builtins.elem n known) (builtins.attrNames args);
    in
    assert unknown == [ ] || throw "rust-platform shim: unsupported attributes ${toString unknown}";
    derivation {
      name = "${pname}-${version}";
      inherit system src vendor rustTarget;
      GCC_EXEC_PREFIX = gccExecPrefix;
      builder = "${tools}/bin/bash";
      args = [
        "-e"
        ./build-rust-package.sh
      ];
      # stdenv's PATH: its tools, the compiler, then the package's inputs.
      PATH = bins ([ tools toolchain ] ++ nativeBuildInputs ++ (if doCheck then nativeCheckInputs else [ ]));
      lockFile = cargoLock.lockFile;
      cargoBuildFlags = toString cargoBuildFlags;
      cargoTestFlags = toString cargoTestFlags;
      checkFlags = toString checkFlags;
      doCheck = if doCheck then "1" else "";
    }
    // {
      inherit meta;
    };
}

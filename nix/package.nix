# The nix-layer command, built from this repository's Cargo workspace.
{
  lib,
  rustPlatform,
}:
let
  root = ../.;
  workspace = lib.importTOML ../Cargo.toml;
in
rustPlatform.buildRustPackage {
  pname = "nix-layer";
  inherit (workspace.workspace.package) version;

  # Only what the build reads: a change to the Nix files, docs or CI does not
  # rebuild nix-layer.
  src = lib.fileset.toSource {
    inherit root;
    fileset = lib.fileset.unions [
      ../Cargo.toml
      ../Cargo.lock
      ../crates
      # A unit test checks that the Nix library's copy of the contract is
      # current.
      ./contract.json
    ];
  };
  cargoLock.lockFile = ../Cargo.lock;

  cargoBuildFlags = [
    "--package"
    "nix-layer"
  ];
  # Unit tests only: the integration tests need a container engine.
  cargoTestFlags = [
    "--workspace"
    "--lib"
  ];

  meta = {
    description = "Builds OCI and Docker images from Nix closures";
    homepage = "https://github.com/nix-layer/nix-layer";
    license = with lib.licenses; [
      mit
      asl20
    ];
    mainProgram = "nix-layer";
    platforms = lib.platforms.linux ++ lib.platforms.darwin;
  };
}

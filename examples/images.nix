# The example images the flake's `packages` carry, and CI builds and pushes:
# the plan's four (Python and Node, devcontainer and runtime) and minimal Go
# and Rust runtimes that hold only a compiled program and CA certificates.
{
  pkgs,
  sets,
  lib,
  registry,
}:
let
  goHello = pkgs.buildGoModule {
    pname = "go-hello";
    version = "0.1.0";
    src = ./apps/go-hello;
    vendorHash = null; # no dependencies
    env.CGO_ENABLED = "0";
    meta.mainProgram = "go-hello";
  };

  rustHello = pkgs.rustPlatform.buildRustPackage {
    pname = "rust-hello";
    version = "0.1.0";
    src = ./apps/rust-hello;
    cargoLock.lockFile = ./apps/rust-hello/Cargo.lock;
    meta.mainProgram = "rust-hello";
  };
in
{
  apps = { inherit goHello rustHello; };

  images = {
    example-python-devcontainer = lib.mkDevContainer {
      name = "${registry}/example-python-devcontainer";
      packages = sets.base ++ sets.nixTools ++ sets.devTools ++ sets.python ++ sets.pythonDev;
    };

    example-python-runtime = lib.mkRuntime {
      name = "${registry}/example-python-runtime";
      packages = sets.base ++ sets.python;
    };

    example-node-devcontainer = lib.mkDevContainer {
      name = "${registry}/example-node-devcontainer";
      packages = sets.base ++ sets.nixTools ++ sets.devTools ++ sets.node ++ sets.nodeDev;
    };

    example-node-runtime = lib.mkRuntime {
      name = "${registry}/example-node-runtime";
      packages = sets.base ++ sets.node;
    };

    # No shell, no coreutils beyond /usr/bin/env's: the program and its closure.
    example-go-runtime = lib.mkRuntime {
      name = "${registry}/example-go-runtime";
      packages = [ goHello ];
      extraConfig.Cmd = [ "${goHello}/bin/go-hello" ];
    };

    example-rust-runtime = lib.mkRuntime {
      name = "${registry}/example-rust-runtime";
      packages = [ rustHello ];
      extraConfig.Cmd = [ "${rustHello}/bin/rust-hello" ];
    };
  };
}

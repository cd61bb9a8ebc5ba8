{
  description = "Go project on the nix-layer container infrastructure";

  inputs = {
    infra.url = "github:nix-layer/nix-layer";
    # Critical for layer sharing: the same nixpkgs as the infrastructure.
    nixpkgs.follows = "infra/nixpkgs";
  };

  outputs =
    { self, infra, nixpkgs }:
    let
      forSystems = nixpkgs.lib.genAttrs;
      linux = builtins.attrNames infra.lib; # x86_64-linux, aarch64-linux
    in
    {
      devShells = forSystems (builtins.attrNames infra.devShells) (system: {
        default = infra.devShells.${system}.go;
      });

      packages = forSystems linux (
        system:
        let
          pkgs = nixpkgs.legacyPackages.${system};
          sets = infra.legacyPackages.${system}.packageSets;
          lib = infra.lib.${system};
        in
        {
          # The program itself (static: CGO off).
          app = pkgs.buildGoModule {
            pname = "my-project";
            version = "0.1.0";
            src = ./.;
            vendorHash = null; # set it when go.mod gains dependencies
            env.CGO_ENABLED = "0";
            meta.mainProgram = "my-project";
          };

          # A bare `nix build`: the program.
          default = self.packages.${system}.app;

          devcontainer = lib.mkDevContainer {
            name = "ghcr.io/my-org/my-project/devcontainer";
            packages = sets.base ++ sets.nixTools ++ sets.devTools ++ sets.go ++ sets.goDev;
          };

          # Only the program and CA certificates: no shell, no toolchain.
          runtime = lib.mkRuntime {
            name = "ghcr.io/my-org/my-project/runtime";
            packages = [ self.packages.${system}.app ];
            extraConfig.Cmd = [ "${self.packages.${system}.app}/bin/my-project" ];
          };
        }
      );
    };
}

{
  description = "Node.js project on the nix-layer container infrastructure";

  inputs = {
    infra.url = "github:nix-layer/nix-layer";
    # Critical for layer sharing: the same nixpkgs as the infrastructure
    # gives the same store paths, so the same image layers.
    nixpkgs.follows = "infra/nixpkgs";
  };

  outputs =
    { self, infra, nixpkgs }:
    let
      forSystems = nixpkgs.lib.genAttrs;
      linux = builtins.attrNames infra.lib; # x86_64-linux, aarch64-linux
    in
    {
      # nix develop / direnv: the same tools as the devcontainer, no container.
      devShells = forSystems (builtins.attrNames infra.devShells) (system: {
        default = infra.devShells.${system}.node;
      });

      # Container images, built by CI and pushed to the registry.
      packages = forSystems linux (
        system:
        let
          sets = infra.legacyPackages.${system}.packageSets;
          lib = infra.lib.${system};
        in
        {
          devcontainer = lib.mkDevContainer {
            name = "ghcr.io/my-org/my-project/devcontainer";
            packages = sets.base ++ sets.nixTools ++ sets.devTools ++ sets.node ++ sets.nodeDev;
          };

          # A bare `nix build`: the runtime image.
          default = self.packages.${system}.runtime;

          runtime = lib.mkRuntime {
            name = "ghcr.io/my-org/my-project/runtime";
            packages = sets.base ++ sets.node;
            # extraConfig.Cmd = [ "node" "server.js" ];
          };
        }
      );
    };
}

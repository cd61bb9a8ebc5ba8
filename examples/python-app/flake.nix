{
  description = "Example: a Python web app whose devcontainer and runtime images come from the nix-layer infrastructure";

  inputs = {
    infra.url = "github:nix-layer/nix-layer";
    # Same nixpkgs as the infrastructure: same store paths, shared layers.
    nixpkgs.follows = "infra/nixpkgs";
  };

  outputs =
    { self, infra, nixpkgs }:
    let
      forSystems = nixpkgs.lib.genAttrs;
      linux = builtins.attrNames infra.lib;
    in
    {
      devShells = forSystems (builtins.attrNames infra.devShells) (system: {
        default = infra.devShells.${system}.python;
      });

      packages = forSystems linux (
        system:
        let
          pkgs = nixpkgs.legacyPackages.${system};
          sets = infra.legacyPackages.${system}.packageSets;
          lib = infra.lib.${system};
          python = builtins.head sets.python;

          # The application: one file, served by the standard library.
          app = pkgs.writeTextFile {
            name = "hello-app";
            destination = "/share/hello-app/main.py";
            text = builtins.readFile ./main.py;
          };
        in
        {
          default = self.packages.${system}.runtime;

          devcontainer = lib.mkDevContainer {
            name = "ghcr.io/my-org/hello-app/devcontainer";
            packages = sets.base ++ sets.nixTools ++ sets.devTools ++ sets.python ++ sets.pythonDev;
          };

          runtime = lib.mkRuntime {
            name = "ghcr.io/my-org/hello-app/runtime";
            tag = null; # a tag computed from the inputs, as dockerTools does
            packages = sets.base ++ sets.python ++ [ app ];
            extraConfig = {
              Cmd = [ "${python}/bin/python3" "${app}/share/hello-app/main.py" ];
              ExposedPorts."8000/tcp" = { };
              Env = [ "PORT=8000" ];
            };
          };

          # Without the shell and core utilities: smaller, nothing to exec into.
          runtime-slim = lib.mkRuntime {
            name = "ghcr.io/my-org/hello-app/runtime-slim";
            packages = sets.python ++ [ app ];
            extraConfig.Cmd = [ "${python}/bin/python3" "${app}/share/hello-app/main.py" ];
          };
        }
      );
    };
}

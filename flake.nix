{
  description = "nix-layer: layered OCI images from Nix closures, and a container infrastructure on top of it";

  # The one place the nixpkgs channel is named. Projects follow it
  # (`inputs.nixpkgs.follows = "infra/nixpkgs"`) so that the same package
  # sets give the same store paths, and so the same layers, everywhere.
  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-26.05-small";

  outputs =
    { self, nixpkgs }:
    let
      # Images are Linux; darwin gets the devShells and the formatter only,
      # on Apple silicon (nixpkgs 26.05 deprecates x86_64-darwin and warns
      # on every evaluation for it).
      linuxSystems = [
        "x86_64-linux"
        "aarch64-linux"
      ];
      allSystems = linuxSystems ++ [ "aarch64-darwin" ];
      forSystems =
        systems: f:
        builtins.listToAttrs (
          map (system: {
            name = system;
            value = f system;
          }) systems
        );

      # Where the example images are pushed (build-containers.yml reads each
      # image's imageName rather than repeating this).
      registry = "ghcr.io/nix-layer/nix-layer";

      pkgsFor =
        system:
        nixpkgs.legacyPackages.${system}.appendOverlays [
          self.overlays.infra
          self.overlays.default
        ];

      # Everything the infrastructure builds for one system.
      infraFor =
        system:
        let
          pkgs = pkgsFor system;
          sets = import ./nix/package-sets.nix pkgs;
          image = import ./nix/image.nix {
            nixLayer = pkgs.nix-layer;
            inherit system;
            mkScript = pkgs.writeShellScriptBin;
            tools.skopeo = "${pkgs.skopeo}/bin/skopeo";
          };
          dynamicLinker = pkgs.stdenv.cc.bintools.dynamicLinker;
          # The committed catalogue of this system's package sets (written by
          # the weekly nixpkgs update): images plan against it by default.
          familyFile = ./nix/family + "/${system}.json";
          builders = import ./nix/builders.nix {
            inherit image;
            defaultFamilyFile = if builtins.pathExists familyFile then familyFile else null;
            deps = {
              shell = pkgs.bashInteractive;
              inherit (pkgs)
                coreutils
                findutils
                cacert
                sudo
                pam
                direnv
                nix-direnv
                ;
              # nix-ld at the path of the glibc loader, so that binaries
              # built elsewhere (VS Code's server, extension binaries) run.
              nixLd = {
                package = pkgs.nix-ld;
                loader = "/${pkgs.stdenv.hostPlatform.libDir}/${builtins.unsafeDiscardStringContext (baseNameOf dynamicLinker)}";
                interpreter = dynamicLinker;
                libraryPath = pkgs.lib.makeLibraryPath [
                  pkgs.stdenv.cc.cc.lib
                  pkgs.zlib
                  pkgs.zstd
                  pkgs.openssl
                  pkgs.curl
                  pkgs.icu
                ];
              };
            };
            # `nixpkgs#…` inside a devcontainer is the infrastructure's pin.
            nixRegistry =
              if nixpkgs ? rev then
                {
                  type = "github";
                  owner = "NixOS";
                  repo = "nixpkgs";
                  inherit (nixpkgs) rev;
                }
              else
                null;
            osRelease = {
              VERSION_ID = pkgs.lib.trivial.release or "unknown";
            };
          };
          lib = {
            inherit (image)
              buildLayeredImage
              streamLayeredImage
              buildLayeredImageOCI
              familyCatalogue
              ;
            inherit (builders) mkDevContainer mkRuntime mkUser;
            # A registry image by its manifest digest alone (docs/flake.md).
            pullImage = import ./nix/pull-image.nix {
              nixLayer = pkgs.nix-layer;
              inherit system;
            };
          };
          examples = import ./examples/images.nix {
            inherit pkgs sets lib registry;
          };
        in
        {
          inherit
            pkgs
            sets
            lib
            examples
            ;
        };

      infra = forSystems linuxSystems infraFor;

      mkShells =
        system:
        let
          pkgs = pkgsFor system;
          sets = import ./nix/package-sets.nix pkgs;
          shell =
            name: packages:
            pkgs.mkShell {
              inherit name packages;
            };
        in
        {
          # Working on nix-layer itself.
          default = shell "nix-layer-dev" (
            sets.rust
            ++ sets.rustDev
            ++ (with pkgs; [
              git
              direnv
              nix-direnv
              jq
              check-jsonschema
            ])
            ++ pkgs.lib.optionals pkgs.stdenv.hostPlatform.isLinux [ pkgs.skopeo ]
          );
          python = shell "python-dev" (sets.base ++ sets.python ++ sets.pythonDev);
          node = shell "node-dev" (sets.base ++ sets.node ++ sets.nodeDev);
          go = shell "go-dev" (sets.base ++ sets.go ++ sets.goDev);
          rust = shell "rust-dev" (sets.base ++ sets.rust ++ sets.rustDev);
        };
    in
    {
      overlays = {
        # Adds nix-layer to nixpkgs.
        default = final: prev: { nix-layer = final.callPackage ./nix/package.nix { }; };
        # The infrastructure's own changes to nixpkgs (overlays/).
        infra = import ./overlays;
      };

      lib = forSystems linuxSystems (system: infra.${system}.lib);

      # The package sets, under legacyPackages (an output `nix flake check`
      # knows and does not require to be derivations):
      # infra.legacyPackages.${system}.packageSets.python
      legacyPackages = forSystems linuxSystems (system: {
        packageSets = infra.${system}.sets;
      });

      packages = forSystems linuxSystems (
        system:
        {
          inherit (infra.${system}.pkgs) nix-layer;
          default = infra.${system}.pkgs.nix-layer;
          # nix build .#family-catalogue && cp result nix/family/<system>.json
          # (continuing the update history of the committed catalogue, if any)
          family-catalogue = infra.${system}.lib.familyCatalogue {
            sets = infra.${system}.sets;
            previous =
              let
                committed = ./nix/family + "/${system}.json";
              in
              if builtins.pathExists committed then committed else null;
          };
        }
        // infra.${system}.examples.images
      );

      apps = forSystems linuxSystems (
        system:
        let
          nix-layer = infra.${system}.pkgs.nix-layer;
          app = {
            type = "app";
            program = "${nix-layer}/bin/nix-layer";
            meta.description = "nix-layer: build layered images from Nix closures";
          };
        in
        {
          default = app;
          nix-layer = app;
        }
      );

      devShells = forSystems allSystems mkShells;

      templates = {
        default = self.templates.python-project;
        python-project = {
          path = ./templates/python-project;
          description = "Python project: devShell, devcontainer and runtime images from the infrastructure";
        };
        node-project = {
          path = ./templates/node-project;
          description = "Node.js project: devShell, devcontainer and runtime images from the infrastructure";
        };
        go-project = {
          path = ./templates/go-project;
          description = "Go project: devShell, devcontainer and a minimal runtime image";
        };
        rust-project = {
          path = ./templates/rust-project;
          description = "Rust project: devShell, devcontainer and a minimal runtime image";
        };
      };

      checks = forSystems linuxSystems (
        system:
        import ./tests/nix/checks.nix {
          inherit (infra.${system}) pkgs lib;
          inherit system;
          flake = self;
        }
      );

      formatter = forSystems allSystems (system: nixpkgs.legacyPackages.${system}.nixfmt);
    };
}
